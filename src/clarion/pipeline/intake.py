"""Intake: a send request becomes messages and deliveries, written in one transaction before the 202.

plan (recipients, rules) → policy (the stage's decisions) → compose (render per channel, route) → one write.
Nothing is sent from here; the outbox rows this writes are what the workers claim."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import errors, expr, ids, model, render, routing
from clarion.pipeline import policy
from clarion.pipeline.catalog import Catalog
from clarion.store import loader, outbox
from clarion.store import tables as t
from clarion.store.db import Database, Inserts

S = model.DeliveryStatus


@dataclass(frozen=True, slots=True)
class SendCommand:
    template: str
    to: Sequence[str]
    data: Mapping[str, Any] = field(default_factory=dict)
    channels: Sequence[model.Channel] | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class EventCommand:
    name: str
    user_id: str
    data: Mapping[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    response: dict[str, Any]
    replayed: bool = False


@dataclass(slots=True)
class _Plan:
    """Rows for one send request, built in memory and written together."""

    request_id: str
    now: datetime
    messages: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)


def _fingerprint(command: Any) -> str:
    """What a repeated idempotency key is compared by: the whole command, key order in ``data`` aside."""
    fields = {name: getattr(command, name) for name in command.__dataclass_fields__}
    return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Intake:
    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        *,
        policies: policy.PolicyStage | None = None,
        idempotency_window: timedelta = timedelta(hours=24),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_queued: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.db = db
        self.users = loader.UserLoader(db)
        self.catalog = catalog
        self.policies = policies or policy.AllowAll()
        self.idempotency_window = idempotency_window
        self.clock = clock
        self.on_queued = on_queued

    # -- entry points ------------------------------------------------------------------------------------

    async def send(self, command: SendCommand) -> Accepted:
        stored = await self._stored(command.idempotency_key)
        replay = await self._replay(command, stored) if stored else None
        if replay is not None:
            return replay
        template = await self.catalog.template(command.template)
        if template is None:
            raise errors.NotFound("template", command.template)
        channels = _channels_for(template, command.channels)
        recipients = list(dict.fromkeys(command.to))
        users = await self.users.load_many(recipients)
        plan = _Plan(ids.new_id(), self.clock())
        for user_id in recipients:
            await self._plan_message(plan, template, channels, user_id, users.get(user_id), command.data, "api")
        return await self._commit(
            command, "message", plan, {"request_id": plan.request_id}, stale_key=stored is not None
        )

    async def event(self, command: EventCommand) -> Accepted:
        stored = await self._stored(command.idempotency_key)
        replay = await self._replay(command, stored) if stored else None
        if replay is not None:
            return replay
        rules = await self.catalog.rules(command.name)
        user = (await self.users.load_many([command.user_id])).get(command.user_id)
        templates = await self.catalog.templates([r.template for r in rules])
        context = {**render.context_for(user, command.data), "event": {"name": command.name}}
        plan = _Plan(ids.new_id(), self.clock())
        outcomes = []
        for rule in rules:
            outcome: dict[str, Any] = {"rule": rule.key, "template": rule.template}
            template = templates.get(rule.template)
            try:
                matched = rule.condition is None or expr.compile_expression(rule.condition).test(context)
            except errors.ExpressionError as exc:
                outcome.update(matched=False, reason=f"condition_error: {exc}")
                outcomes.append(outcome)
                continue
            outcome["matched"] = matched
            if matched and template is None:
                outcome.update(matched=False, reason="unknown_template")
            elif matched and template is not None:
                channels = [c for c in (rule.channels or template.channels) if c in template.channels]
                await self._plan_message(
                    plan, template, channels, command.user_id, user, command.data, f"rule {rule.key}"
                )
            outcomes.append(outcome)
        extra = {"request_id": plan.request_id, "event": command.name, "rules": outcomes}
        return await self._commit(command, "event", plan, extra, stale_key=stored is not None)

    # -- stages ------------------------------------------------------------------------------------------

    async def _plan_message(
        self,
        plan: _Plan,
        template: model.Template,
        channels: Sequence[model.Channel],
        user_id: str,
        user: model.User | None,
        data: Mapping[str, Any],
        source: str,
    ) -> None:
        now = plan.now
        message_id = ids.new_id()
        message = {
            "id": message_id,
            "request_id": plan.request_id,
            "user_id": user_id,
            "template_key": template.key,
            "template_version": template.version,
            "category": template.category.value,
            "priority": template.priority.value,
            "status": model.MessageStatus.ACCEPTED.value,
            "reason": None,
            "data": dict(data),
            "created_at": now,
            "updated_at": now,
        }
        plan.messages.append(message)
        plan.events.append(
            outbox.event_row(
                message_id, None, "accepted", f"{source}: template {template.key} v{template.version}", now
            )
        )
        answer = {"id": message_id, "user_id": user_id, "template": template.key}
        plan.answers.append(answer)

        def fail(reason: str) -> None:
            message.update(status=model.MessageStatus.FAILED.value, reason=reason)
            plan.events.append(outbox.event_row(message_id, None, S.FAILED, reason, now))
            answer.update(status=model.MessageStatus.FAILED.value, reason=reason)

        if user is None:
            return fail("unknown_user")
        candidates = [policy.Candidate(message_id, user, template, c, now) for c in channels]
        decisions = await self.policies.decide(candidates)
        context = render.context_for(user, data)
        try:
            contents = {
                c: render.render(c, template.channels[c], context)
                for c, d in zip(channels, decisions, strict=True)
                if not isinstance(d, policy.Drop)
            }
        except errors.RenderError as exc:
            return fail(exc.reason)
        providers = await self.catalog.provider_choices()
        statuses = []
        for channel, decision in zip(channels, decisions, strict=True):
            delivery_id = ids.new_id()
            address = user.address_for(channel)
            run_at = now
            if isinstance(decision, policy.Drop):
                status, reason, detail = S.FILTERED, decision.reason, decision.detail or None
            elif address is None:
                status, reason, detail = (
                    S.FILTERED,
                    f"no_address: the user has no {channel.value} address",
                    None,
                )
            elif isinstance(decision, policy.Defer):
                status, reason, detail, run_at = (
                    S.DEFERRED,
                    decision.reason,
                    decision.detail or None,
                    decision.until,
                )
            else:
                status, reason, detail = S.QUEUED, None, None
            statuses.append(status.value)
            plan.deliveries.append(
                {
                    "id": delivery_id,
                    "message_id": message_id,
                    "user_id": user_id,
                    "channel": channel.value,
                    "provider": routing.choose_provider(channel, providers),
                    "address": address,
                    "content": contents.get(channel),
                    "status": status.value,
                    "lane": template.priority.lane,
                    "run_at": run_at,
                    "attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            plan.events.append(outbox.event_row(message_id, delivery_id, status, reason, now, detail))
        overall = model.message_status(statuses)
        message["status"] = overall.value
        answer["status"] = overall.value

    async def _replay(self, command: SendCommand | EventCommand, row: Any = None) -> Accepted | None:
        """The stored answer for a repeated idempotency key (within the window), else None."""
        row = row or await self._stored(command.idempotency_key)
        if row is None or row.created_at < self.clock() - self.idempotency_window:
            return None
        if row.fingerprint != _fingerprint(command):
            raise errors.Conflict(
                "this idempotency_key was used with a different request",
                details={"idempotency_key": command.idempotency_key, "request_id": row.id},
            )
        return Accepted(row.response, replayed=True)

    async def _stored(self, key: str | None) -> Any:
        if not key:
            return None
        async with self.db.read() as conn:
            query = sa.select(t.send_requests).where(t.send_requests.c.idempotency_key == key)
            return (await conn.execute(query)).first()

    async def _commit(
        self, command: Any, kind: str, plan: _Plan, extra: dict[str, Any], *, stale_key: bool
    ) -> Accepted:
        response = {**extra, "messages": plan.answers}
        key = command.idempotency_key
        request = {
            "id": plan.request_id,
            "kind": kind,
            "idempotency_key": key,
            "fingerprint": _fingerprint(command),
            "response": response,
            "created_at": plan.now,
        }
        inserts = Inserts(
            {
                t.send_requests: [request],
                t.messages: plan.messages,
                t.deliveries: plan.deliveries,
                t.delivery_events: plan.events,
            }
        )
        job: Any = inserts
        if key and stale_key:
            # the key's earlier use is past the window: it is free again
            async def job(conn: AsyncConnection) -> None:
                await conn.execute(t.send_requests.delete().where(t.send_requests.c.idempotency_key == key))
                await inserts(conn)

        try:
            await self.db.write(job)
        except IntegrityError:
            # a concurrent request with the same idempotency key won the race: answer as it did
            replay = await self._replay(command)
            if replay is None:
                raise
            return replay
        queued = sum(1 for d in plan.deliveries if d["status"] == S.QUEUED)
        if queued:
            self.on_queued(queued)
        return Accepted(response)


def _channels_for(template: model.Template, requested: Sequence[model.Channel] | None) -> list[model.Channel]:
    if not requested:
        return list(template.channels)
    unknown = [c.value for c in requested if c not in template.channels]
    if unknown:
        raise errors.InvalidInput(
            f"template {template.key!r} has no content for channel(s) {', '.join(unknown)}",
            code="invalid_channels",
            details={
                "field": "channels",
                "unknown": unknown,
                "available": [c.value for c in template.channels],
            },
        )
    return list(dict.fromkeys(requested))
