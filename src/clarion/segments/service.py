"""The segment index inside a running Clarion: built from the store on start, kept up to date with changes."""

from __future__ import annotations

from collections.abc import Sequence

from clarion.store.db import Database


class SegmentService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def start(self) -> None:
        """Build the index from the store."""

    async def close(self) -> None:
        """Stop following changes."""

    async def users_changed(self, user_ids: Sequence[str]) -> None:
        """Users were created, updated (attributes, tags) or deleted through this process: re-read them."""

    async def events_tracked(self) -> None:
        """Behaviour events were recorded through this process: catch up with them."""
