"""What happens to an SMS reply: it is kept, and a keyword reply (``TD``, ``退订`` …) suppresses marketing SMS to
that phone, with a confirmation sent back where the keyword has one.

The reply, its keyword and the suppression are written in one transaction; a reply the vendor reports twice
(same vendor id) is recognised and changes nothing. The confirmation goes out after the commit, through the
account the reply came in on, and its outcome is written on the reply: a confirmation that fails never undoes
the unsubscribe. A phone in national form is read under ``CLARION_DEFAULT_REGION`` like any other; one that is
not a phone number at all is kept with what the vendor sent, and suppresses nothing."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.channels import base
from clarion.domain import errors, ids, model, phones, replies
from clarion.store import policies as store_policies
from clarion.store import replies as store_replies
from clarion.store.db import Database

log = logging.getLogger(__name__)
SOURCE = "sms_reply"


@dataclass(slots=True)
class Taken:
    accepted: int = 0
    duplicates: int = 0
    unsubscribed: int = 0
    #: (reply id, phone, confirmation text) to send once the write has committed
    confirmations: list[tuple[int, str, str]] = field(default_factory=list)


async def take(db: Database, provider_name: str, taken: list[base.Reply], now: datetime | None = None) -> Taken:
    """Record ``taken`` (one callback's replies) and apply their keywords, in one transaction."""
    now = now or datetime.now(UTC)

    async def job(conn: AsyncConnection) -> Taken:
        table = await store_replies.load_keywords(conn)
        tally = Taken()
        for reply in taken:
            try:
                phone = phones.normalize(reply.phone)
            except ValueError:
                phone = None
            keyword = replies.match(table, reply.text, [reply.to, reply.sign]) if phone is not None else None
            row: dict[str, Any] = {
                "vendor_id": reply.vendor_id[:200],
                "phone": (phone or reply.phone)[:32],
                "text": reply.text[:2000],
                "to": (reply.to or None) and reply.to[:64],
                "sign": (reply.sign or None) and reply.sign[:64],
                "keyword": keyword.word if keyword else None,
                "action": "unsubscribed" if keyword else None,
                "received_at": now,
            }
            reply_id = await store_replies.record(conn, provider_name, row)
            if reply_id is None:
                tally.duplicates += 1
                continue
            if keyword is not None and phone is not None:
                suppression, _ = await store_policies.add_suppression(
                    conn,
                    user_id=None,
                    address=phone,
                    channel=model.Channel.SMS,
                    category=model.Category.MARKETING,
                    reason=f"replied {reply.text.strip()[:40]!r} via {provider_name}",
                    source=SOURCE,
                    now=now,
                )
                await store_replies.suppressed(conn, reply_id, suppression.id)
            tally.accepted += 1
            if keyword is not None:
                tally.unsubscribed += 1
                if keyword.confirmation and phone is not None:
                    tally.confirmations.append((reply_id, phone, keyword.confirmation))
        return tally

    return await db.write(job)


async def confirm(db: Database, provider: Any, confirmations: list[tuple[int, str, str]]) -> None:
    """Send each confirmation through ``provider`` and write how it went on its reply."""
    for reply_id, phone, text in confirmations:
        probe_id = "reply_" + ids.new_id()
        outgoing = model.Outgoing(probe_id, probe_id, "sms_reply", model.Channel.SMS, phone, {"text": text})
        try:
            [result] = await provider.send([outgoing])
            error = result.error
        except Exception as exc:  # a confirmation is best effort: the unsubscribe stands
            error = exc
        reason = None
        if error is not None:
            reason = error.reason if isinstance(error, errors.SendError) else repr(error)
            log.warning("SMS reply %s: the confirmation to %s failed: %s", reply_id, phone, reason)

        async def job(conn: AsyncConnection, reply_id: int = reply_id, reason: str | None = reason) -> None:
            await store_replies.confirmed(conn, reply_id, "failed" if reason else "sent", reason)

        await db.write(job)
