"""The in-app inbox: a delivery is ``delivered`` once it is stored where the inbox API reads it, and ``read``
when the inbox API marks it read (``pipeline.feedback.read_inbox``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import ClassVar

from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.channels.base import ProviderConfig
from clarion.domain import model
from clarion.store import tables as t
from clarion.store.db import Database


class InboxConfig(ProviderConfig):
    pass


class InboxProvider:
    kind: ClassVar[str] = "inbox"
    channels: ClassVar[frozenset[model.Channel]] = frozenset({model.Channel.INBOX})
    Config = InboxConfig

    def __init__(self, config: InboxConfig, *, name: str, db: Database) -> None:
        self.name = name
        self.db = db

    async def send(self, batch: Sequence[model.Outgoing]) -> list[model.SendResult]:
        now = datetime.now(UTC)
        rows = [
            {
                "message_id": o.message_id,
                "delivery_id": o.delivery_id,
                "user_id": o.user_id,
                "title": o.content.get("title", ""),
                "body": o.content.get("body", ""),
                "url": o.content.get("url"),
                "created_at": now,
            }
            for o in batch
        ]

        async def job(conn: AsyncConnection) -> None:
            # a re-send after a crash finds the item already there: the message id keeps it single
            await conn.execute(self.db.insert(t.inbox_items).on_conflict_do_nothing(), rows)

        await self.db.write(job)
        delivered = model.DeliveryStatus.DELIVERED
        return [model.SendResult(o.delivery_id, provider_message_id=o.message_id, status=delivered) for o in batch]

    async def close(self) -> None:
        return None
