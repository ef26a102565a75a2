"""Re-send (补发): new deliveries of a message, from the content it already rendered, written with the audit entry
that says who asked and why in one transaction.

Each new delivery copies the content and address of the message's latest delivery on its channel (see
``domain.resend``), gets the template's ttl from now, and is judged again as a send would be, but for dedup,
which would swallow it (it is the same content, on purpose): consent, suppressions and quiet hours
(``PolicyStage.before_render``) and the safety valve (the per-user ceiling, counted). A re-send the policies
refuse is recorded as ``filtered`` with their reason, like any send; the answer says so per channel."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from clarion.counters import base as counters
from clarion.domain import errors, ids, model, resend
from clarion.domain.policy import caps, config
from clarion.domain.policy.decision import Candidate, Decision, Drop, placement
from clarion.pipeline.policies import PolicyStage
from clarion.store import audit, outbox
from clarion.store import deliveries as store
from clarion.store.db import Database

S = model.DeliveryStatus


@dataclass(frozen=True, slots=True)
class Command:
    message_id: str
    reason: str
    actor: str
    roles: Sequence[str]
    channels: Sequence[model.Channel] | None = None


async def resend_message(
    db: Database,
    stage: PolicyStage,
    command: Command,
    *,
    now: datetime,
    on_queued: Callable[[int], None] = lambda n: None,
) -> dict[str, Any]:
    """Re-send ``command.message_id``; returns the new deliveries (id, channel, status, reason, ``resend_of``)."""
    async with db.read() as conn:
        message = await store.message_row(conn, command.message_id)
        rows = await store.deliveries_of(conn, command.message_id) if message is not None else []
    if message is None:
        raise errors.NotFound("message", command.message_id)
    category, priority = model.Category(message.category), model.Priority(message.priority)
    resend.require(command.roles, category)
    chosen = resend.sources([resend.Source(r.id, r.channel, r.address, r.content) for r in rows], command.channels)
    user = (await stage.users.load_many([message.user_id])).get(message.user_id)
    if user is None:
        raise errors.Conflict(
            f"user {message.user_id!r} no longer exists: there is nobody to re-send to",
            details={"user_id": message.user_id},
        )
    template = (await stage.catalog.templates([message.template_key])).get(message.template_key)
    if template is None:  # deleted since: the message's own category and priority still say how to judge it
        template = model.Template(message.template_key, message.template_key, category, priority, {})
    preferences = user.preferences or config.NO_PREFERENCES
    candidates = [
        Candidate(message.id, user, template, model.Channel(channel), now, source.address, preferences=preferences)
        for channel, source in chosen.items()
    ]
    decisions = await _judge(stage, candidates)
    ttl = template.ttl_seconds
    new_rows, events, answer = [], [], []
    by = {"by": command.actor}
    for candidate, source, decision in zip(candidates, chosen.values(), decisions, strict=True):
        delivery_id = ids.new_id()
        placed = placement(decision, now)
        status, reason, run_at, detail = placed.status, placed.reason, placed.run_at, placed.detail
        content = source.content if placed.keeps_content else None
        new_rows.append(
            {
                "id": delivery_id,
                "message_id": message.id,
                "user_id": message.user_id,
                "channel": candidate.channel.value,
                "provider": None,  # chosen at dispatch, from the routes and the providers' health then
                "address": source.address,
                "content": content,
                "status": status.value,
                "lane": priority.lane,
                "run_at": run_at,
                "attempts": 0,
                "expires_at": now + timedelta(seconds=ttl) if ttl else None,
                "created_at": now,
                "updated_at": now,
            }
        )
        asked = {"resend_of": source.id, **by, "reason": command.reason}
        events.append(outbox.event_row(message.id, delivery_id, S.ACCEPTED, f"resend: {command.reason}", now, asked))
        events.append(outbox.event_row(message.id, delivery_id, status, reason, now, detail))
        answer.append(
            {"id": delivery_id, "channel": candidate.channel.value, "status": status.value, "reason": reason}
            | {"resend_of": source.id}
        )
    wanted = [c.value for c in command.channels] if command.channels else [r.channel for r in rows]
    skipped = [c for c in dict.fromkeys(wanted) if c not in chosen]  # nothing rendered there to copy

    async def job(conn: Any) -> None:
        await store.add_deliveries(conn, new_rows, events, now)
        await audit.record(
            conn,
            actor=command.actor,
            action="message.resend",
            subject=f"message:{message.id}",
            at=now,
            detail={"reason": command.reason, "deliveries": answer, "skipped": skipped},
        )

    await db.write(job)
    queued = sum(1 for d in answer if d["status"] == S.QUEUED)
    if queued:
        on_queued(queued)
    return {"message_id": message.id, "deliveries": answer, "skipped": skipped}


async def _judge(stage: PolicyStage, candidates: Sequence[Candidate]) -> list[Decision]:
    """Consent, suppressions and quiet hours, then the safety valve alone (no caps, no dedup), counted."""
    screened = await stage.before_render(candidates)
    decisions = list(screened.decisions)
    valve = caps.Limits((), screened.settings)  # no caps: of the counted limits only the valve applies
    counted = [
        (i, entry)
        for i, (candidate, decision) in enumerate(zip(candidates, decisions, strict=True))
        if not isinstance(decision, Drop) and (entry := valve.counted(candidate, screened.zones[i])).limits
    ]
    if counted:
        results = await stage.counters.hit([counters.Hit(entry.limits) for _, entry in counted])
        for (i, entry), result in zip(counted, results, strict=True):
            if not result.allowed:
                decisions[i] = caps.decide(candidates[i], entry, result)
    return decisions
