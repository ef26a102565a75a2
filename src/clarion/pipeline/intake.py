"""Intake: a send request becomes messages and deliveries, written in one transaction before the 202.

plan (recipients, rules) → policy (the stage's decisions) → compose (render per channel, route) → one write.
Nothing is sent from here; the outbox rows this writes are what the workers claim.

Rendering and rule conditions run on the event loop that answers every other request. Each render and each
condition is bounded by its operation budget (``domain.budget``: a few milliseconds at most), and a request with
many messages or rules gives the loop back every ``PAUSE_AFTER`` seconds of such work, so a large or hostile
request slows itself, not the server."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from clarion.domain import errors, expr, ids, model, render, sms, variants
from clarion.domain import fallback as fallback_rules
from clarion.domain.policy import config
from clarion.domain.policy.decision import Candidate, Drop, placement
from clarion.pipeline import fallback
from clarion.pipeline.catalog import Catalog
from clarion.pipeline.policies import PolicyStage, Verdict
from clarion.store import campaigns as campaign_store
from clarion.store import idempotency, outbox
from clarion.store import tables as t
from clarion.store.db import Database, Inserts

S = model.DeliveryStatus
URGENT_LANE = model.Priority.URGENT.lane
PAUSE_AFTER = 0.002  # seconds of rendering or rule evaluation before other requests get the loop back
#: a campaign batch's messages go through the policies and rendering this many at a time, the event loop's other
#: work (an urgent send's request) getting a turn in between: a slice is a few milliseconds of the loop
COMPOSE_SLICE = 100
# An urgent send accepted within this long of a campaign batch's write is handed to the dispatcher as it
# commits (``UrgentHandoff``): it overtakes the backlog without a claim of its own; otherwise the urgent loop's
# claims, a few at a time, cost less per send.
FANOUT_SECONDS = 2.0


#: who hands sends and events to intake, as the timeline's ``accepted`` reason names it: "api" unless the caller
#: says otherwise for the task (the message-queue consumer: "rabbitmq orders.messages (billing)")
SOURCE: contextvars.ContextVar[str] = contextvars.ContextVar("clarion_intake_source", default="api")


@dataclass(frozen=True, slots=True)
class SendCommand:
    template: str
    to: Sequence[str]
    data: Mapping[str, Any] = field(default_factory=dict)
    channels: Sequence[model.Channel] | None = None
    idempotency_key: str | None = None
    dedup_key: str | None = None


@dataclass(frozen=True, slots=True)
class EventCommand:
    name: str
    user_id: str
    data: Mapping[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class CampaignBatch:
    """Part of a campaign run's frozen audience, to be written as one transaction with the run's progress."""

    campaign: str
    run_id: str
    template: model.Template
    channels: Sequence[model.Channel]
    user_ids: Sequence[str]
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Tally:
    """What a campaign batch wrote: messages, and its deliveries by outcome (filtered and deferred by the
    policy that decided; failed messages by reason)."""

    users: int = 0
    skipped: int = 0  # already held a message of the run (a batch re-read after a crash): not sent again
    messages: int = 0
    queued: int = 0
    deferred: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)


#: a campaign batch's own write, run first in the batch's transaction (it moves the run's cursor, or raises)
Progress = Callable[[Any, Tally], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A campaign batch composed in memory: its rows (table → rows) and what they add up to."""

    rows: dict[sa.Table, list[dict[str, Any]]]
    tally: Tally


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
    drafts: list[_Draft] = field(default_factory=list)
    extra: dict[sa.Table, list[dict[str, Any]]] = field(default_factory=dict)  # rows the finishers add
    prefix: str | None = None
    bulk: bool = False  # a campaign batch: its pauses give way to urgent work (``Database.give_way``)


@dataclass(slots=True)
class _Draft:
    """One planned message between planning and composing: its rows so far and its candidate deliveries."""

    message: dict[str, Any]
    answer: dict[str, Any]
    template: model.Template
    channels: Sequence[model.Channel]
    data: Mapping[str, Any]
    user: model.User | None = None
    candidates: list[Candidate] = field(default_factory=list)
    #: the channel fallback steps this message acts on, and the candidates they hold back (rendered and stored,
    #: judged by the policies only when their step fires: ``pipeline.fallback``)
    steps: tuple[fallback_rules.Step, ...] = ()
    held: list[Candidate] = field(default_factory=list)
    held_contents: list[dict[str, Any]] = field(default_factory=list)
    failed: bool = False

    def fail(self, plan: _Plan, reason: str) -> None:
        self.failed = True
        self.message.update(status=model.MessageStatus.FAILED.value, reason=reason)
        plan.events.append(outbox.event_row(self.message["id"], None, S.FAILED, reason, plan.now))
        self.answer.update(status=model.MessageStatus.FAILED.value, reason=reason)


class Finisher(Protocol):
    """Adds what a delivery carries beyond its rendered content (the one-click unsubscribe headers of marketing
    e-mail, short links). It may add rows to the request's transaction through ``rows`` (table → rows), so what
    it creates is written with the delivery or not at all."""

    def __call__(
        self,
        candidate: Candidate,
        delivery_id: str,
        content: dict[str, Any],
        rows: dict[sa.Table, list[dict[str, Any]]],
    ) -> dict[str, Any]: ...


def _fingerprint(command: Any) -> str:
    """What a repeated idempotency key is compared by: the whole command, key order in ``data`` aside."""
    fields = {name: getattr(command, name) for name in command.__dataclass_fields__}
    return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()


class UrgentHandoff(Protocol):
    """Where the urgent deliveries a process accepts are sent from memory (``worker.Dispatcher``): written leased
    to ``urgent_owner`` (``outbox.lease_new``), given to ``take_urgent`` once committed — while a campaign is
    being fanned out (``FANOUT_SECONDS``) and the hand-off is ``urgent_idle``; otherwise, and for a flood of
    codes, the urgent loop's claims take them a few at a time."""

    @property
    def urgent_owner(self) -> str: ...

    @property
    def lease(self) -> timedelta: ...

    @property
    def urgent_idle(self) -> bool: ...

    def take_urgent(self, batch: list[outbox.Claimed]) -> None: ...


class Intake:
    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        *,
        policies: PolicyStage,
        finishers: Sequence[Finisher] = (),
        idempotency_window: timedelta = timedelta(hours=24),
        claim_lease: timedelta = timedelta(seconds=30),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_queued: Callable[[int], None] = lambda n: None,
        on_urgent: Callable[[], None] = lambda: None,
    ) -> None:
        self.db = db
        self.users = policies.users
        self.catalog = catalog
        self.policies = policies
        self.finishers = list(finishers)
        self.idempotency_window = idempotency_window
        self.claim_lease = claim_lease  # how long a key's claim waits for its answer before it may be taken over
        self.clock = clock
        self.on_queued = on_queued
        self.on_urgent = on_urgent  # deliveries of the urgent lane were queued: its own dispatch loop wakes
        # A process that sends hands the urgent deliveries it accepts to its own dispatcher as they commit, instead
        # of leaving them to be claimed (set by ``Clarion.start``)
        self.handoff: UrgentHandoff | None = None
        self.fanout_at = float("-inf")  # when (monotonic seconds) a campaign batch was last written
        self._keys: dict[str, list[Any]] = {}  # idempotency key → [its lock, requests holding or awaiting it]

    # -- entry points ------------------------------------------------------------------------------------

    async def send(
        self, command: SendCommand, *, template: model.Template | None = None, prefix: str | None = None
    ) -> Accepted:
        """Send ``command``; ``template`` sends that exact template (a version under review, for a test send)
        instead of the one the catalog serves for ``command.template``; ``prefix`` (e.g. ``"[TEST] "``) goes in
        front of every rendered subject, title and text."""
        if not command.idempotency_key:  # the common case, kept free of the claim's machinery
            return await self._send(command, template, prefix, ids.new_id())
        async with self._keyed(command.idempotency_key):
            return await self._once(
                command, "message", lambda request_id: self._send(command, template, prefix, request_id)
            )

    async def event(self, command: EventCommand) -> Accepted:
        if not command.idempotency_key:
            return await self._event(command, ids.new_id())
        async with self._keyed(command.idempotency_key):
            return await self._once(command, "event", lambda request_id: self._event(command, request_id))

    @contextlib.asynccontextmanager
    async def _keyed(self, key: str) -> AsyncIterator[None]:
        """Requests with the same idempotency key, one at a time in this process: a retry sent while the first
        is still being composed waits here for its answer, not in a loop polling the database (``_claim``, which
        is what makes the key once-only across processes)."""
        held = self._keys.get(key)
        if held is None:
            held = self._keys[key] = [asyncio.Lock(), 0]
        held[1] += 1
        try:
            async with held[0]:
                yield
        finally:
            held[1] -= 1
            if not held[1]:
                del self._keys[key]

    async def _once(
        self, command: SendCommand | EventCommand, kind: str, run: Callable[[str], Awaitable[Accepted]]
    ) -> Accepted:
        """``run`` the request (given its new id) under a claim on its idempotency key, or replay the key's
        answer. The claim goes when the request is answered or fails; a request whose answer lost to another
        claimant's (it outlived its lease) wrote nothing, and replays that answer."""
        while True:
            claimed = await self._claim(command, kind)
            if isinstance(claimed, Accepted):
                return claimed
            try:
                return await run(ids.new_id())
            except _Answered:
                continue
            finally:
                await idempotency.release(self.db, claimed)

    async def _claim(self, command: SendCommand | EventCommand, kind: str) -> Accepted | str:
        """Claim ``command``'s idempotency key (``store.idempotency``) and return the claim's id, or the stored
        answer of the key's earlier use, waiting (polling) while another process composes it. A claim without an
        answer after ``claim_lease`` is taken over; an answer past the idempotency window frees the key."""
        key = command.idempotency_key
        assert key
        fingerprint = _fingerprint(command)
        give_up = time.monotonic() + 2 * self.claim_lease.total_seconds()
        pause = 0.005
        while True:
            now = self.clock()
            found = await idempotency.find(self.db, key)
            expired = None
            if found.answer is not None:
                if found.answer.created_at >= now - self.idempotency_window:
                    if found.answer.fingerprint != fingerprint:
                        raise errors.Conflict(
                            "this idempotency_key was used with a different request",
                            details={"idempotency_key": key, "request_id": found.answer.id},
                        )
                    return Accepted(found.answer.response, replayed=True)
                expired = found.answer.id
            claim = idempotency.Claim(ids.new_id(), kind, key, fingerprint, now)
            held = found.claim
            if held is None:
                if await idempotency.claim(self.db, claim, expired=expired):
                    return claim.id
            elif held.created_at < now - self.claim_lease:  # its holder died
                if await idempotency.take_over(self.db, held.id, claim, expired=expired):
                    return claim.id
            elif held.fingerprint != fingerprint:
                raise errors.Conflict(
                    "this idempotency_key is in use by a different request", details={"idempotency_key": key}
                )
            elif time.monotonic() > give_up:
                raise errors.Conflict(
                    "a request with this idempotency_key is still being processed; retry later",
                    details={"idempotency_key": key},
                )
            else:
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.1)

    async def _send(
        self, command: SendCommand, template: model.Template | None, prefix: str | None, request_id: str
    ) -> Accepted:
        template = template or await self.catalog.template(command.template)
        if template is None:
            raise errors.NotFound("template", command.template)
        if template.priority is model.Priority.URGENT:  # a campaign's composing and sending give way to it
            with self.db.urgent_work():
                return await self._send_of(command, template, prefix, request_id)
        return await self._send_of(command, template, prefix, request_id)

    async def _send_of(
        self, command: SendCommand, template: model.Template, prefix: str | None, request_id: str
    ) -> Accepted:
        channels = template.channels_for(command.channels)
        recipients = list(dict.fromkeys(command.to))
        users = await self.users.load_many(recipients)
        plan = _Plan(request_id, self.clock(), prefix=prefix)
        for user_id in recipients:
            self._plan_message(
                plan, template, channels, user_id, users.get(user_id), command.data, SOURCE.get(), command.dedup_key
            )
        await self._compose(plan)
        return await self._commit(command, "message", plan, {"request_id": plan.request_id})

    async def _event(self, command: EventCommand, request_id: str) -> Accepted:
        rules = await self.catalog.rules(command.name)
        user = (await self.users.load_many([command.user_id])).get(command.user_id)
        templates = await self.catalog.templates([r.template for r in rules])
        context = {**render.context_for(user, command.data), "event": {"name": command.name}}
        plan = _Plan(request_id, self.clock())
        outcomes = []
        since = time.perf_counter()
        for rule in rules:
            if time.perf_counter() - since > PAUSE_AFTER:
                await asyncio.sleep(0)
                since = time.perf_counter()
            outcome: dict[str, Any] = {"rule": rule.key, "template": rule.template}
            template = templates.get(rule.template)
            try:
                matched = rule.condition is None or expr.compile_expression(rule.condition).test(context)
            except errors.ConditionBudgetExceeded as exc:
                outcome.update(matched=False, reason=exc.reason)
                outcomes.append(outcome)
                continue
            except errors.ExpressionError as exc:
                outcome.update(matched=False, reason=f"condition_error: {exc}")
                outcomes.append(outcome)
                continue
            outcome["matched"] = matched
            if matched and template is None:
                outcome.update(matched=False, reason="unknown_template")
            elif matched and template is not None:
                channels = [c for c in (rule.channels or template.channels) if c in template.channels]
                source = f"rule {rule.key}" if SOURCE.get() == "api" else f"{SOURCE.get()}: rule {rule.key}"
                self._plan_message(plan, template, channels, command.user_id, user, command.data, source)
            outcomes.append(outcome)
        await self._compose(plan)
        extra = {"request_id": plan.request_id, "event": command.name, "rules": outcomes}
        return await self._commit(command, "event", plan, extra)

    async def prepare_campaign_batch(self, batch: CampaignBatch) -> PreparedBatch:
        """Messages for a campaign batch — plan, policies, rendering and routing for all of it at once — built in
        memory; nothing is written (``write_campaign_batch`` does). Users already holding a message of the run are
        skipped, whatever the cursor says."""
        async with self.db.read() as conn:
            held = await campaign_store.holding_message(conn, batch.run_id, batch.user_ids)
        recipients = [u for u in dict.fromkeys(batch.user_ids) if u not in held]
        users = await self.users.load_many(recipients)
        plan = _Plan(batch.run_id, self.clock(), bulk=True)
        source = f"campaign {batch.campaign} run {batch.run_id}"
        since = time.perf_counter()
        for user_id in recipients:
            if time.perf_counter() - since > PAUSE_AFTER:
                await self.db.give_way()
                since = time.perf_counter()
            self._plan_message(
                plan,
                batch.template,
                batch.channels,
                user_id,
                users.get(user_id),
                batch.data,
                source,
                campaign=(batch.campaign, batch.run_id),
            )
        for start in range(0, len(plan.drafts), COMPOSE_SLICE):  # the loop's other work gets a turn in between
            await self._compose(plan, plan.drafts[start : start + COMPOSE_SLICE])
            await self.db.give_way()
        tally = _tally(plan, users=len(batch.user_ids), skipped=len(batch.user_ids) - len(recipients))
        rows = {
            t.messages: plan.messages,
            t.deliveries: plan.deliveries,
            t.delivery_events: plan.events,
            **plan.extra,
        }
        return PreparedBatch(rows, tally)

    async def write_campaign_batch(
        self, prepared: PreparedBatch, progress: Progress, counted: Progress | None = None
    ) -> Tally:
        """A prepared batch's rows written in ONE transaction with ``progress`` (the run's cursor, which may
        refuse the batch, run first) and ``counted`` (the run's counts, run last: a row other runners' batches
        update too, so it is locked only for the end of the transaction), so a crash leaves either the batch
        and its progress or neither. The dispatchers are woken for the deliveries left queued, not for those
        the writer leased to itself (``outbox.lease_new``)."""

        async def job(conn: Any) -> None:
            await progress(conn, prepared.tally)
            await Inserts(prepared.rows)(conn)
            if counted is not None:
                await counted(conn, prepared.tally)

        await self.db.write(job, heavy=True)
        self.fanout_at = time.monotonic()
        if queued := _queued(prepared.rows[t.deliveries]):
            self.on_queued(queued)
        return prepared.tally

    # -- stages ------------------------------------------------------------------------------------------

    def _plan_message(
        self,
        plan: _Plan,
        template: model.Template,
        channels: Sequence[model.Channel],
        user_id: str,
        user: model.User | None,
        data: Mapping[str, Any],
        source: str,
        dedup_key: str | None = None,
        campaign: tuple[str, str] | None = None,
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
            "data": data if type(data) is dict else dict(data),  # one object for all of a request's messages
            "variant": variants.choose(template, user_id),
            "campaign_key": campaign[0] if campaign else None,
            "campaign_run": campaign[1] if campaign else None,
            "department": template.department or "",
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
        draft = _Draft(message, answer, template, channels, data)
        if user is None:
            draft.fail(plan, "unknown_user")
            return
        draft.user = user
        preferences = user.preferences or config.NO_PREFERENCES
        draft.candidates = [
            Candidate(message_id, user, template, c, now, user.address_for(c), dedup_key, preferences) for c in channels
        ]
        plan.drafts.append(draft)

    async def _compose(self, plan: _Plan, drafts: Sequence[_Draft] | None = None) -> None:
        """Policies, rendering and routing for every planned message of the request (or those ``drafts`` of it),
        as one batch."""
        drafts = [d for d in (plan.drafts if drafts is None else drafts) if d.user is not None]
        if not drafts:
            return
        await self._hold_fallbacks(drafts)
        candidates = [c for d in drafts for c in d.candidates]
        if not candidates:
            return
        screened = await self.policies.before_render(candidates)
        contents: list[dict[str, Any] | None] = []
        decisions = iter(screened.decisions)
        since = time.perf_counter()
        for draft in drafts:
            assert draft.user is not None
            mine = [next(decisions) for _ in draft.candidates]
            context = render.context_for(draft.user, draft.data)
            rendered: list[dict[str, Any] | None] = []
            try:
                for c, d in zip(draft.candidates, mine, strict=True):
                    if time.perf_counter() - since > PAUSE_AFTER:  # each render is a few ms at most
                        await self.db.give_way(bulk=plan.bulk)
                        since = time.perf_counter()
                    drop = isinstance(d, Drop)
                    rendered.append(
                        None if drop else render.compose(draft.template, c.channel, context, draft.message["variant"])
                    )
            except errors.RenderError as exc:
                draft.fail(plan, exc.reason)
                rendered = [None] * len(draft.candidates)
            held: list[dict[str, Any]] = []
            if draft.held and not draft.failed:
                try:
                    held = [
                        render.compose(draft.template, c.channel, context, draft.message["variant"]) for c in draft.held
                    ]
                except errors.RenderError as exc:
                    draft.fail(plan, exc.reason)
                    rendered = [None] * len(draft.candidates)
            if plan.prefix:
                rendered = [_prefixed(c, plan.prefix) if c is not None else None for c in rendered]
                held = [_prefixed(c, plan.prefix) for c in held]
            draft.held_contents = held
            contents.extend(rendered)
        verdicts = iter(await self.policies.after_render(screened, contents))
        for draft in drafts:
            judged = [next(verdicts) for _ in draft.candidates]
            if draft.failed:
                continue
            rows = [self._delivery(plan, draft, c, v) for c, v in zip(draft.candidates, judged, strict=True)]
            if draft.steps:
                rows += self._fallbacks(plan, draft, rows)
            overall = model.message_status([r["status"] for r in rows])
            draft.message["status"] = overall.value
            draft.answer["status"] = overall.value

    def _delivery(
        self,
        plan: _Plan,
        draft: _Draft,
        candidate: Candidate,
        verdict: Verdict,
    ) -> dict[str, Any]:
        """One delivery row and its first timeline entry, from the policies' verdict; returns the row. Its
        provider is left empty: the worker chooses it when it sends (``routing``), so the backlog follows the
        routes and the accounts as they are then."""
        now, decision = plan.now, verdict.decision
        placed = placement(decision, now)
        status, reason, run_at, detail = placed.status, placed.reason, placed.run_at, placed.detail
        content = verdict.content if placed.keeps_content else None
        if verdict.masked and placed.keeps_content:
            detail = {**(detail or {}), "masked": verdict.masked}
        delivery_id = ids.new_id()
        if content is not None:
            for finish in self.finishers:
                content = finish(candidate, delivery_id, content, plan.extra)
        segments = None
        if content is not None and candidate.channel is model.Channel.SMS and isinstance(content.get("text"), str):
            segments = sms.count_segments(content["text"]).count
        ttl = candidate.template.ttl_seconds
        row = {
            "id": delivery_id,
            "message_id": candidate.message_id,
            "user_id": candidate.user.user_id,
            "channel": candidate.channel.value,
            "provider": None,
            "address": candidate.address,
            "content": content,
            "status": status.value,
            "lane": candidate.template.priority.lane,
            "run_at": run_at,
            "attempts": 0,
            "lease_owner": None,  # set when its writer sends it itself (``outbox.lease_new``)
            "lease_until": None,
            "segments": segments,
            "expires_at": now + timedelta(seconds=ttl) if ttl else None,
            "fallback_of": None,
            "created_at": now,
            "updated_at": now,
        }
        plan.deliveries.append(row)
        plan.events.append(outbox.event_row(candidate.message_id, delivery_id, status, reason, now, detail))
        return row

    async def _hold_fallbacks(self, drafts: Sequence[_Draft]) -> None:
        """Each message's fallback chain — its template's, else its category's default — narrowed to the
        channels it is sent on; the channels a step falls back *to* are held back from the policies."""
        settings = await self.catalog.policy_settings()
        chains: dict[int, tuple[fallback_rules.Step, ...]] = {}
        for draft in drafts:
            template = draft.template
            chain = chains.get(id(template))
            if chain is None:
                chain = chains[id(template)] = _chain(template, settings)
            steps = fallback_rules.for_send(chain, draft.channels, template.priority) if chain else ()
            if not steps:
                continue
            behind = {s.to for s in steps}
            draft.steps = steps
            draft.held = [c for c in draft.candidates if c.channel in behind]
            draft.candidates = [c for c in draft.candidates if c.channel not in behind]

    def _fallbacks(self, plan: _Plan, draft: _Draft, sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The held deliveries of ``draft`` and their pending steps (``pipeline.fallback.hold``), added to the
        request's rows."""

        def finish(candidate: Candidate, delivery_id: str, content: dict[str, Any]) -> dict[str, Any]:
            for finisher in self.finishers:
                content = finisher(candidate, delivery_id, content, plan.extra)
            return content

        held = list(zip(draft.held, draft.held_contents, strict=True))
        rows, events, steps = fallback.hold(draft.steps, sent, held, now=plan.now, finish=finish)
        plan.deliveries.extend(rows)
        plan.events.extend(events)
        plan.extra.setdefault(t.fallback_steps, []).extend(steps)
        return rows

    async def _commit(self, command: Any, kind: str, plan: _Plan, extra: dict[str, Any]) -> Accepted:
        """The request's rows, its ``send_requests`` row with them, in one transaction. With an idempotency key
        the request holds the key's claim, so the key's unique index refuses this answer only if another claimant
        answered first (``_Answered``)."""
        response = {**extra, "messages": plan.answers}
        key = command.idempotency_key
        request = {
            "id": plan.request_id,
            "kind": kind,
            "idempotency_key": key,
            "claimed_key": None,
            "fingerprint": _fingerprint(command) if key else "",  # compared only when a key comes again
            "response": response,
            "created_at": plan.now,
        }
        inserts = Inserts(
            {
                t.send_requests: [request],
                t.messages: plan.messages,
                t.deliveries: plan.deliveries,
                t.delivery_events: plan.events,
                **plan.extra,
            }
        )
        urgent = any(d["lane"] == URGENT_LANE and d["status"] == S.QUEUED for d in plan.deliveries)
        handoff, handed = self.handoff, []
        if (
            urgent
            and handoff is not None
            and handoff.urgent_idle
            and time.monotonic() < self.fanout_at + FANOUT_SECONDS
        ):
            until = plan.now + handoff.lease
            handed = outbox.lease_new(
                plan.deliveries,
                plan.events,
                owner=handoff.urgent_owner,
                now=plan.now,
                lease_until=until,
                lane=URGENT_LANE,
            )
        try:
            await self.db.write(inserts, urgent=urgent)  # an urgent send's write does not wait behind a fan-out's
        except IntegrityError:
            if key and (await idempotency.find(self.db, key)).answer is not None:
                raise _Answered(key) from None
            raise
        if urgent:
            if handed and handoff is not None:
                handoff.take_urgent(handed)
            else:  # no fan-out to overtake, or the hand-off is busy: the urgent loop claims it
                self.on_urgent()
        if queued := _queued(plan.deliveries):
            self.on_queued(queued)
        return Accepted(response)


def _queued(deliveries: Sequence[Mapping[str, Any]]) -> int:
    """How many of ``deliveries`` wait in the queue for a dispatch loop's claim."""
    return sum(1 for d in deliveries if d["status"] == S.QUEUED)


class _Answered(Exception):
    """The request's idempotency key was answered by another request while this one was composed (its claim
    outlived the lease and was taken over): this one wrote nothing, and replays that answer."""


def _chain(template: model.Template, settings: config.PolicySettings) -> tuple[fallback_rules.Step, ...]:
    """The template's own chain (checked when it was saved), else its category's default from the policy
    settings, of which only the steps on channels the template has content for apply."""
    if template.fallback:
        try:
            return fallback_rules.parse(template.fallback, template.channels)
        except errors.InvalidInput:  # saved before a rule tightened: sent without it rather than not at all
            return ()
    default = settings.fallback.get(template.category, ())
    return tuple(s for s in default if s.source in template.channels and s.to in template.channels)


def _tally(plan: _Plan, *, users: int, skipped: int) -> Tally:
    tally = Tally(users=users, skipped=skipped, messages=len(plan.messages))
    for event in plan.events:
        status = event["status"]
        if event["delivery_id"] is None:
            if status == S.FAILED:
                reason = str(event["reason"]).split(":", 1)[0]
                tally.failed[reason] = tally.failed.get(reason, 0) + 1
        elif status == S.QUEUED:
            tally.queued += 1
        elif status in (S.FILTERED, S.DEFERRED):
            into = tally.filtered if status == S.FILTERED else tally.deferred
            policy = (event["detail"] or {}).get("policy", "unknown")
            into[policy] = into.get(policy, 0) + 1
    return tally


_PREFIXED_FIELDS = ("subject", "title", "text")


def _prefixed(content: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``prefix`` in front of the subject, title and text; an SMS signature (``【Brand】``) stays first."""

    def put(value: str) -> str:
        if value.startswith("【") and "】" in value:
            end = value.index("】") + 1
            return value[:end] + prefix + value[end:]
        return prefix + value

    return {k: put(v) if k in _PREFIXED_FIELDS and isinstance(v, str) else v for k, v in content.items()}
