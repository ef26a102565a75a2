"""Coalesced look-ups: concurrent requests that each need a few users share one query.

Under load many send requests are in flight at once, and each needs its recipients' profiles. Asking the
database once per request costs more in statement overhead than the look-up itself; ``UserLoader`` gathers
the ids requested during one turn of the event loop and fetches them with one ``IN`` query. A caller waits
at most that one turn."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from clarion.domain import model
from clarion.store import records
from clarion.store.db import Database


class UserLoader:
    def __init__(self, db: Database, *, max_batch: int = 1000) -> None:
        self.db = db
        self.max_batch = max_batch
        self._pending: dict[str, list[asyncio.Future[model.User | None]]] = {}
        self._scheduled = False

    async def load_many(self, user_ids: Iterable[str]) -> dict[str, model.User]:
        """The profiles of ``user_ids`` that exist (unknown ids are simply absent)."""
        ids = list(dict.fromkeys(user_ids))
        if len(ids) >= self.max_batch:  # a big send is a batch by itself
            return await self._fetch(ids)
        loop = asyncio.get_running_loop()
        futures = []
        for user_id in ids:
            future: asyncio.Future[model.User | None] = loop.create_future()
            self._pending.setdefault(user_id, []).append(future)
            futures.append(future)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(lambda: asyncio.ensure_future(self._flush()))
        found = await asyncio.gather(*futures)
        return {user.user_id: user for user in found if user is not None}

    async def _fetch(self, ids: list[str]) -> dict[str, model.User]:
        async with self.db.read() as conn:
            return await records.users_by_id(conn, ids)

    async def _flush(self) -> None:
        pending, self._pending, self._scheduled = self._pending, {}, False
        try:
            users = await self._fetch(list(pending))
        except Exception as exc:
            for futures in pending.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        for user_id, futures in pending.items():
            for future in futures:
                if not future.done():
                    future.set_result(users.get(user_id))
