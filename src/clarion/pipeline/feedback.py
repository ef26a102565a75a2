"""The feedback stage: outside signals — a vendor's receipt, a bounce, an inbox read — become delivery statuses.

Every signal goes through ``settle``, the one function that changes a delivery because of one: it is idempotent
on (delivery, event kind, vendor id) — a signal whose kind is already on the delivery's timeline changes
nothing and adds no line — asks ``domain.receipts.judge`` what the signal does, records each change on the
timeline with its reason (the vendor's own words kept), moves the message to its best delivery in the same
transaction, and suppresses the address a hard bounce names (source ``bounce``).

A signal can come before Clarion knows the delivery it is about: the vendor's callback may beat the worker's
record of the send, or name an id no delivery carries. It is kept (``receipts`` table, answered "pending") and
applied by ``apply_pending`` when the outcome naming that id is recorded (``store.outbox.complete`` calls it in
its own transaction). A delivery's pending channel fallback is settled in the same transaction
(``store.fallbacks.on_status``): cancelled when the signal says it reached the user, made due at once when it
says it did not. A signal that comes late — after the fallback already went out — is applied to the original
all the same and changes nothing else; ``Tally.not_reached`` names the deliveries it left known not to have
reached their user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import errors, model, receipts
from clarion.store import fallbacks, history, outbox, rollups
from clarion.store import policies as policy_store
from clarion.store import receipts as store


@dataclass(slots=True)
class Tally:
    """What became of a batch of signals: applied (a status change or a line on the timeline), kept until their
    delivery's outcome is recorded, or ignored (a duplicate, or nothing to say)."""

    accepted: int = 0
    pending: int = 0
    ignored: int = 0
    #: the deliveries these signals made undelivered or bounced: a fallback on another channel may be due
    not_reached: list[str] = field(default_factory=list)
    #: how many addresses hard bounces suppressed (the policy cache must then be refreshed)
    suppressed: int = 0

    def add(self, other: Tally) -> None:
        self.accepted += other.accepted
        self.pending += other.pending
        self.ignored += other.ignored
        self.not_reached += other.not_reached
        self.suppressed += other.suppressed

    def answer(self) -> dict[str, int]:
        return {"accepted": self.accepted, "pending": self.pending, "ignored": self.ignored}


async def receive(
    conn: AsyncConnection, provider: str, signals: Sequence[receipts.Receipt], now: datetime, *, ignored: int = 0
) -> Tally:
    """Apply the receipts ``provider`` sent, each matched by the vendor's id; those no delivery carries yet are
    kept. ``ignored`` counts entries the provider already left out (statuses that mean nothing here)."""
    await store.lock(conn, [(provider, s.provider_message_id) for s in signals])
    found = await store.by_provider_message_id(conn, provider, [s.provider_message_id for s in signals])
    # A receipt that names the delivery itself (an app confirming a push: its id is ``detail["delivery_id"]``)
    # matches this provider's delivery of that id when no delivery carries it as the vendor's id.
    named = [s.provider_message_id for s in signals if s.detail.get("delivery_id") == s.provider_message_id]
    if missing := [pmid for pmid in named if pmid not in found]:
        found |= {id_: [row] for id_, row in (await store.by_id(conn, missing)).items() if row.provider == provider}
    tally = Tally(ignored=ignored)
    pairs = []
    for signal in signals:
        rows = found.get(signal.provider_message_id)
        if not rows:
            if await store.hold(conn, provider, signal, now):
                tally.pending += 1
            else:  # the same receipt is already kept
                tally.ignored += 1
            continue
        pairs += [(row, signal) for row in rows]
    tally.add(await settle(conn, pairs, now, provider=provider))
    return tally


async def apply_pending(conn: AsyncConnection, named: Sequence[tuple[str | None, str | None]], now: datetime) -> Tally:
    """Apply the kept receipts of the (provider, vendor id) pairs an outcome just recorded (see the module's
    docstring); a receipt whose delivery still cannot take it is kept again."""
    tally = Tally()
    taken = await store.take_pending(conn, named)
    by_provider: dict[str, list[receipts.Receipt]] = {}
    for provider, receipt, received_at in taken:
        detail = {**receipt.detail, "received_at": received_at.isoformat()}
        by_provider.setdefault(provider, []).append(
            receipts.Receipt(
                receipt.provider_message_id, receipt.event, receipt.reason, detail, receipt.address, receipt.suppress
            )
        )
    for provider, signals in by_provider.items():
        tally.add(await receive(conn, provider, signals, now))
    return tally


async def read_inbox(conn: AsyncConnection, user_id: str, now: datetime, message_id: str | None = None) -> int:
    """Mark one (or every) unread inbox item of a user read; each one's delivery becomes ``read``. Returns how
    many items were unread."""
    items = await history.mark_read(conn, user_id, now, message_id)
    rows = await store.by_id(conn, [item.delivery_id for item in items])
    pairs = [
        (rows[item.delivery_id], receipts.Receipt(item.message_id, receipts.Event.READ, "read in the inbox"))
        for item in items
        if item.delivery_id in rows
    ]
    await settle(conn, pairs, now)
    return len(items)


#: the channels whose app reports an open (an inbox item is read through the inbox; e-mail has its pixel)
OPENABLE = frozenset({model.Channel.PUSH.value, model.Channel.WECHAT.value})


async def open_delivery(conn: AsyncConnection, delivery_id: str, now: datetime) -> Tally | None:
    """The app reports that the user opened the push (or the WeChat message) of ``delivery_id``: it becomes
    ``read`` — the funnel's ``opened`` — once; a second report changes nothing. None: no such delivery."""
    rows = await store.by_id(conn, [delivery_id])
    row = rows.get(delivery_id)
    if row is None:
        return None
    if row.channel not in OPENABLE:
        raise errors.InvalidInput(
            f"delivery_id: a {row.channel} delivery is not opened in an app ({', '.join(sorted(OPENABLE))} are)",
            details={"field": "delivery_id", "channel": row.channel},
        )
    signal = receipts.Receipt(row.provider_message_id or row.id, receipts.Event.READ, "opened in the app")
    return await settle(conn, [(row, signal)], now)


async def open_email(conn: AsyncConnection, delivery_id: str, now: datetime) -> Tally | None:
    """The open pixel of e-mail delivery ``delivery_id`` was loaded (``clarion.opens``): it becomes ``read`` once.
    None: no such e-mail delivery (deleted since, or the id names another channel's delivery)."""
    row = (await store.by_id(conn, [delivery_id])).get(delivery_id)
    if row is None or row.channel != model.Channel.EMAIL.value:
        return None
    signal = receipts.Receipt(row.provider_message_id or row.id, receipts.Event.READ, "opened: its image was loaded")
    return await settle(conn, [(row, signal)], now)


async def settle(
    conn: AsyncConnection, pairs: Sequence[tuple[Any, receipts.Receipt]], now: datetime, *, provider: str | None = None
) -> Tally:
    """Apply each signal to its delivery row (``store.receipts`` columns), idempotently (see the module's
    docstring); ``provider`` is who sent them (None: Clarion itself, for inbox reads)."""
    tally = Tally()
    if not pairs:
        return tally
    already = await store.seen(conn, [row.id for row, _ in pairs])
    status = {row.id: row.status for row, _ in pairs}
    moves: dict[str, str] = {}
    events: list[dict[str, Any]] = []
    messages: set[str] = set()
    for row, signal in pairs:
        key = (row.id, signal.event.value)
        if key in already:
            tally.ignored += 1
            continue
        judgement = receipts.judge(status[row.id], signal.event)
        if judgement.action == "hold":
            holder = provider or row.provider or ""
            await store.lock(conn, [(holder, signal.provider_message_id)])
            if await store.hold(conn, holder, signal, now):
                tally.pending += 1
            else:
                tally.ignored += 1
            continue
        if judgement.action == "ignore":
            tally.ignored += 1
            continue
        already.add(key)
        tally.accepted += 1
        detail: dict[str, Any] = {"receipt": signal.event.value, **signal.detail}
        if provider:
            detail["provider"] = provider
        detail["provider_message_id"] = signal.provider_message_id
        if judgement.implied:
            detail["implies"] = list(judgement.implied)  # the funnel counts those stages reached too
        if judgement.action == "move" and judgement.status is not None:
            before = status[row.id]
            status[row.id] = moves[row.id] = judgement.status.value
            messages.add(row.message_id)
            if receipts.may_fall_back(before, judgement.status):
                tally.not_reached.append(row.id)
        else:
            detail["status_kept"] = status[row.id]
        reason = _reason(judgement, signal)
        events.append(outbox.event_row(row.message_id, row.id, signal.event.value, reason, now, detail))
        if signal.suppress and signal.event is receipts.Event.BOUNCED:
            tally.suppressed += await _suppress(conn, row, signal, now)
    await store.move(conn, moves, now)
    await fallbacks.on_status(conn, moves, now)  # reached: its pending fallback cancelled; failed: due at once
    await rollups.append(conn, events)
    await outbox.refresh_messages(conn, messages, now)
    return tally


def _reason(judgement: receipts.Judgement, signal: receipts.Receipt) -> str:
    """The timeline's reason: the signal's own words (the vendor's), and what Clarion made of them when that
    is more than the event's name (a step implied, a status kept)."""
    if not signal.reason:
        return judgement.why
    if judgement.why == signal.event.value:
        return signal.reason
    return f"{signal.reason}; {judgement.why}" if judgement.action == "move" else f"{judgement.why}: {signal.reason}"


async def _suppress(conn: AsyncConnection, row: Any, signal: receipts.Receipt, now: datetime) -> int:
    """A hard bounce: nothing more goes to the address on its channel. Returns 1 if the suppression is new."""
    address = signal.address or (row.address if isinstance(row.address, str) else None)
    if not address:
        return 0
    _, created = await policy_store.add_suppression(
        conn,
        user_id=None,
        address=address,
        channel=model.Channel(row.channel),
        category=None,
        reason=f"hard bounce: {signal.reason}" if signal.reason else "hard bounce",
        source="bounce",
        now=now,
    )
    return int(created)
