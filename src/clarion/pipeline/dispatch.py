"""The dispatch stage: route → send → record, for one claimed batch.

``worker.Dispatcher`` runs the loop (claim, reap, pause); this stage takes what it claimed. Each delivery goes
to the provider its route chooses now (``domain.routing``, applied by ``ProviderRegistry.choose``); a provider's
part of the batch is sent a chunk at a time, and each chunk's outcomes go to the ``Recorder``, which writes
them while the next chunk is sent. Each outcome — sent, delivered, a retry with its delay, expired past the
template's ttl, failed, or waiting for a provider without spending an attempt — carries its reason for the
timeline, and the breakers (``domain.breaker``) see every result.

A provider account with a rate limit (``domain.ratelimit``) is handed only as many of the batch as its token
buckets allow: those whose token comes within ``RATE_HOLD`` wait for it here, the rest go back to the queue at
once, each with ``run_at`` at the moment its token will be there, without spending an attempt (like a delivery
waiting for a provider)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.channels.registry import ProviderRegistry
from clarion.domain import breaker, errors, model, ratelimit, retry
from clarion.domain.policy.decision import Drop
from clarion.metrics import BREAKER_STATES, Metrics
from clarion.store import addresses, outbox
from clarion.store.db import Database

log = logging.getLogger(__name__)
S = model.DeliveryStatus
RECORD_CHUNK = 500  # outcomes sent to a provider and recorded together, at most
HEAVY_OUTCOMES = 50  # outcomes written together that make a heavy write (``Database.write``)
ROUTE_WAIT = timedelta(seconds=10)  # a delivery none of whose route's providers can send is tried again after
MISCONFIGURED_WAIT = timedelta(seconds=1)  # a delivery a misconfigured account refused is routed again after
RATE_HOLD = timedelta(seconds=0.5)  # a delivery whose token comes within this waits for it in the worker


def _observed(result: model.SendResult, at: float, took: float) -> breaker.Outcome:
    """One send's result as the breaker and the health window count it."""
    error = result.error
    if error is None:
        return breaker.Outcome(at, "ok", took)
    reason = error.reason if isinstance(error, errors.SendError) else repr(error)
    if isinstance(error, errors.PermanentSendError):
        return breaker.Outcome(at, "misconfigured" if error.misconfigured else "permanent", took, reason)
    return breaker.Outcome(at, "transient", took, reason)


def dropped(claimed: outbox.Claimed, drop: Drop) -> outbox.Outcome:
    detail = {"policy": drop.policy, **drop.detail, "judged": "at dispatch"}
    return outbox.Outcome(claimed.id, claimed.message_id, S.FILTERED, drop.reason, detail=detail)


class Recorder:
    """A worker's outcomes, recorded as their sends complete rather than once its whole batch is sent.

    One write is in flight at a time (it shares a group commit with whatever else is being written); outcomes
    that come back meanwhile wait, and go together in the next write, queued as soon as the one before commits.
    A sender waits in ``room`` while a chunk's worth is already waiting, so at any moment at most about two
    chunks have been handed to providers and not recorded: what a SIGKILL would have sent twice. A write that
    fails is logged; its deliveries stay leased and are sent again once the lease is taken back."""

    def __init__(
        self, db: Database, owner: str, clock: Callable[[], datetime], chunk: int, *, urgent: bool = False
    ) -> None:
        self.db = db
        self.owner = owner
        self.clock = clock
        self.chunk = chunk
        self.urgent = urgent  # the urgent lane's outcomes: written before other waiting writes
        self.failures: list[BaseException] = []
        self._waiting: list[outbox.Outcome] = []
        self._writing: asyncio.Future[int] | None = None

    def add(self, outcomes: list[outbox.Outcome]) -> None:
        self._waiting.extend(outcomes)
        if self._writing is None and self._waiting:
            self._write()

    def _write(self) -> None:
        outcomes, self._waiting = self._waiting, []
        owner, done = self.owner, self.clock()

        dead = [
            (o.delivery_id, o.detail["dead_addresses"]) for o in outcomes if o.detail and "dead_addresses" in o.detail
        ]

        async def complete(conn: AsyncConnection) -> int:
            if dead:  # the vendor said these are gone for good: the user's next message skips them
                await addresses.remove_dead(conn, dead, done)
            return await outbox.complete(conn, owner=owner, now=done, outcomes=outcomes)

        heavy = len(outcomes) >= HEAVY_OUTCOMES
        self._writing = asyncio.ensure_future(self.db.write(complete, urgent=self.urgent, heavy=heavy))
        self._writing.add_done_callback(self._written)

    def _written(self, write: asyncio.Future[int]) -> None:
        self._writing = None
        if not write.cancelled() and (exc := write.exception()) is not None:
            log.error("worker %s: recording outcomes failed, their leases will be taken back: %r", self.owner, exc)
            self.failures.append(exc)
        if self._waiting:
            self._write()

    async def room(self) -> None:
        """Return once fewer than a chunk's outcomes wait behind the write in flight."""
        while self._writing is not None and len(self._waiting) >= self.chunk:
            await asyncio.wait({self._writing})

    async def drain(self) -> None:
        """Return once every outcome added so far is committed (or its write has failed)."""
        while self._writing is not None:
            await asyncio.wait({self._writing})


class Stage:
    """Route → send → record for claimed batches; ``clock`` and ``retry_policy`` are the dispatcher's."""

    def __init__(
        self,
        providers: ProviderRegistry,
        metrics: Metrics,
        *,
        retry_policy: retry.RetryPolicy,
        clock: Callable[[], datetime],
        record_chunk: int = RECORD_CHUNK,
    ) -> None:
        self.providers = providers
        self.metrics = metrics
        self.retry_policy = retry_policy
        self.clock = clock
        # A batch goes to each provider in chunks of at most ``record_chunk``, each recorded as it comes back.
        self.record_chunk = record_chunk
        self._children: dict[tuple[Any, ...], Any] = {}
        self._routed: dict[str, dict[str, Any]] = {}  # delivery id → its route's choice, for its outcome's timeline
        self._untried: dict[str, int] = {}  # delivery id → providers it could still try at once after a failure

    async def send(self, batch: list[outbox.Claimed], recorder: Recorder) -> None:
        """Send a claimed batch, each delivery through the provider its route chooses now (see ``routing``); one
        with no provider able to send waits ``ROUTE_WAIT``, the reason on its timeline."""
        groups: dict[str, list[tuple[outbox.Claimed, model.Outgoing]]] = defaultdict(list)
        waiting: list[outbox.Outcome] = []
        for claimed, choice in zip(batch, await self.providers.choose(batch), strict=True):
            name = choice.provider
            if name is None:
                reason = f"waiting {ROUTE_WAIT.total_seconds():.0f}s for a provider: {choice.reason}"
                wait = outbox.Outcome(
                    claimed.id, claimed.message_id, S.QUEUED, reason, detail=choice.detail(), attempted=False
                )
                wait.run_at = self.clock() + ROUTE_WAIT
                waiting.append(wait)
                continue
            if choice.route is not None:  # the timeline names the route and what it skipped, not only the provider
                self._routed[claimed.id] = choice.detail()
            if choice.untried:
                self._untried[claimed.id] = choice.untried
            channel = model.Channel(claimed.channel)
            groups[name].append(
                (
                    claimed,
                    model.Outgoing(
                        delivery_id=claimed.id,
                        message_id=claimed.message_id,
                        user_id=claimed.user_id,
                        channel=channel,
                        address=claimed.address,
                        content=claimed.content or {},
                        attempt=claimed.attempts,
                        priority=_PRIORITY_OF_LANE.get(claimed.lane),
                    ),
                )
            )
        if waiting:
            recorder.add(waiting)
        if not groups:
            return
        if len(groups) == 1:
            [(name, items)] = groups.items()
            await self._send_paced(name, items, recorder)
        else:
            await asyncio.gather(*(self._send_paced(name, items, recorder) for name, items in groups.items()))

    async def _send_paced(
        self, name: str, items: list[tuple[outbox.Claimed, model.Outgoing]], recorder: Recorder
    ) -> None:
        """One provider's part of a batch within its rate limit: what the buckets grant goes now; what will
        have its token within ``RATE_HOLD`` waits here for it (a sleep is cheaper and more even than a trip
        through the queue); the rest goes back to the queue at once, each with ``run_at`` at its turn."""
        rate = self.providers.rate(name)
        limits = self.providers.rate_limits
        if limits is None or rate.unlimited:
            await self._send_chunks(name, items, recorder)
            return
        buckets = rate.buckets()
        hold = time.monotonic() + RATE_HOLD.total_seconds()
        while items:
            now = self.clock()
            grant = await limits.take(name, buckets, len(items), now.timestamp())
            go, items = items[: grant.granted], items[grant.granted :]
            if not items:
                await self._send_chunks(name, go, recorder)
                return
            turns = ratelimit.turns(buckets, grant.tokens, len(items))
            left = hold - time.monotonic()
            held = sum(1 for wait in turns if wait <= left)
            if held < len(items):
                recorder.add(self._put_back(name, rate, items[held:], turns[held:], now))
                self._child(self.metrics.rate_limited, name).inc(len(items) - held)
                items = items[:held]
            if go:
                await self._send_chunks(name, go, recorder)
            if items:
                await asyncio.sleep(max(0.0, turns[0] - (self.clock() - now).total_seconds()))

    def _put_back(
        self,
        name: str,
        rate: ratelimit.Rate,
        items: list[tuple[outbox.Claimed, model.Outgoing]],
        turns: list[float],
        now: datetime,
    ) -> list[outbox.Outcome]:
        """``items`` back in the queue until their turns under ``name``'s rate limit, spending no attempt."""
        limit = rate.describe()
        outcomes = []
        for (claimed, _), wait in zip(items, turns, strict=True):
            self._untried.pop(claimed.id, None)
            detail: dict[str, Any] = {**self._routed.pop(claimed.id, {"provider": name}), "rate_limit": limit}
            reason = f"waiting {wait:.2f}s for its turn under the rate limit of {name} ({limit})"
            put_back = outbox.Outcome(claimed.id, claimed.message_id, S.QUEUED, reason, detail=detail, attempted=False)
            put_back.run_at = now + timedelta(seconds=wait)
            outcomes.append(put_back)
        return outcomes

    async def _send_chunks(
        self, name: str, items: list[tuple[outbox.Claimed, model.Outgoing]], recorder: Recorder
    ) -> None:
        """One provider's part of a batch, a chunk at a time, each chunk's outcomes recorded as it returns."""
        size = self.record_chunk
        for start in range(0, len(items), size):
            if start:  # the writer takes the chunk before: it commits while this one is sent
                await recorder.db.give_way(bulk=not recorder.urgent)
                await recorder.room()
            recorder.add(await self._send_group(name, items[start : start + size]))

    async def _send_group(self, name: str, items: list[tuple[outbox.Claimed, model.Outgoing]]) -> list[outbox.Outcome]:
        started = time.perf_counter()
        by_id = {claimed.id: claimed for claimed, _ in items}
        try:
            provider = await self.providers.get(name)
            results = {r.delivery_id: r for r in await provider.send([o for _, o in items])}
        except Exception as exc:  # a provider bug or outage: never lose the batch, retry it
            log.warning("provider %s failed a whole batch: %r", name, exc)
            error = (
                exc
                if isinstance(exc, errors.SendError)
                else errors.TransientSendError(repr(exc), code="provider_error")
            )
            results = {cid: model.SendResult(cid, error=error) for cid in by_id}
        took = time.perf_counter() - started
        self.metrics.send_seconds.labels(name).observe(took)
        now = self.clock()
        outcomes = []
        seen: list[breaker.Outcome] = []
        at = now.timestamp()
        for delivery_id, claimed in by_id.items():
            result = results.get(delivery_id) or model.SendResult(
                delivery_id, error=errors.TransientSendError("provider returned no result", code="no_result")
            )
            outcomes.append(self._outcome(name, claimed, result, now))
            if self.providers.breakers is not None:
                seen.append(_observed(result, at, took))
        if seen and self.providers.breakers is not None:
            kinds: dict[str, int] = {}
            for o in seen:
                kinds[o.kind] = kinds.get(o.kind, 0) + 1
            for kind, count in kinds.items():
                self._child(self.metrics.provider_outcomes, name, kind).inc(count)
            transitions = await self.providers.breakers.record(name, seen)
            if transitions:
                self._transitioned(name, transitions, outcomes)
        return outcomes

    def _transitioned(self, name: str, transitions: list[breaker.Transition], outcomes: list[outbox.Outcome]) -> None:
        """A batch's outcomes moved ``name``'s breaker: a log line, the gauge, and each outcome's timeline entry
        names the transition and its reason (the deliveries that open a breaker are the ones that say so)."""
        moves = [{"from": t.before, "to": t.after, "reason": t.reason} for t in transitions]
        for t in transitions:
            log.warning("provider %s: breaker %s → %s: %s", name, t.before, t.after, t.reason)
            self.metrics.breaker_transitions.labels(name, t.after).inc()
        self.metrics.breaker_state.labels(name).set(BREAKER_STATES[transitions[-1].after])
        for outcome in outcomes:
            outcome.detail = {**(outcome.detail or {}), "breaker": moves}

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once (prometheus' own look-up takes a lock and builds keys)."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _outcome(self, name: str, claimed: outbox.Claimed, result: model.SendResult, now: datetime) -> outbox.Outcome:
        base: dict[str, Any] = {
            "delivery_id": claimed.id,
            "message_id": claimed.message_id,
            "provider": name,
            "detail": self._routed.pop(claimed.id, None) or {"provider": name},  # each attempt names its provider
        }
        untried = self._untried.pop(claimed.id, 0)
        dead = _dead_addresses(claimed, result)
        if dead:  # removed from the user as the outcome is recorded (``Recorder``), named on the timeline
            base["detail"] = {**base["detail"], "dead_addresses": dead}
        if result.error is None:
            self._child(self.metrics.sent, claimed.channel, name).inc()
            latency = self._child(self.metrics.accepted_to_sent, claimed.channel)
            latency.observe((now - claimed.created_at).total_seconds())
            if result.status is S.DELIVERED:  # the send proved it (a webhook's 2xx, an inbox item stored)
                delivered = f"delivered by {name}: no receipt to wait for"
                return outbox.Outcome(
                    **base, status=S.DELIVERED, provider_message_id=result.provider_message_id, reason=delivered
                )
            return outbox.Outcome(
                **base,
                status=S.SENT,
                provider_message_id=result.provider_message_id,
                reason=f"accepted by {name}",
            )
        error = result.error
        reason = error.reason if isinstance(error, errors.SendError) else repr(error)
        if isinstance(error, errors.PermanentSendError) and error.misconfigured and self.providers.breakers is not None:
            # the account is at fault, not the delivery: its breaker opens and the delivery goes elsewhere (or
            # waits) without spending an attempt
            wait = outbox.Outcome(
                **base, status=S.QUEUED, reason=f"{name} is misconfigured, choosing again: {reason}", attempted=False
            )
            wait.run_at = now + MISCONFIGURED_WAIT
            return wait
        remaining = (claimed.expires_at - now).total_seconds() if claimed.expires_at is not None else None
        decision = self.retry_policy.decide(claimed.attempts, error, remaining=remaining)
        if decision.expired:  # the next attempt would be sent late: the template's ttl ends the schedule here
            return outbox.Outcome(
                **base,
                status=S.EXPIRED,
                reason=f"{outbox.TTL_EXPIRED}: a retry in {decision.delay:.1f}s would come after the ttl; "
                f"attempt {claimed.attempts}: {reason}",
            )
        if decision.retry and untried:  # another provider of the route can send now: no reason to wait the backoff
            self._child(self.metrics.retried, claimed.channel, name).inc()
            return outbox.Outcome(
                **base,
                status=S.QUEUED,
                run_at=now,
                reason=f"retry now on another provider after attempt {claimed.attempts}: {reason}",
            )
        if decision.retry:
            self._child(self.metrics.retried, claimed.channel, name).inc()
            return outbox.Outcome(
                **base,
                status=S.QUEUED,
                run_at=now + timedelta(seconds=decision.delay),
                reason=f"retry in {decision.delay:.1f}s after attempt {claimed.attempts}: {reason}",
            )
        self._child(self.metrics.failed, claimed.channel, name).inc()
        kind = "permanent" if isinstance(error, errors.PermanentSendError) else "attempts exhausted"
        return outbox.Outcome(**base, status=S.FAILED, reason=f"{kind}: {reason}")


#: the priority a claimed delivery's lane stands for (what APNs and other vendors are told)
_PRIORITY_OF_LANE = {p.lane: p.value for p in model.Priority}


def _dead_addresses(claimed: outbox.Claimed, result: model.SendResult) -> list[Any]:
    """The addresses of ``claimed`` the vendor declared gone for good: those it named, or (an error saying the
    address is dead, naming none) the whole address."""
    if result.dead_addresses:
        return list(result.dead_addresses)
    error = result.error
    if isinstance(error, errors.PermanentSendError) and error.dead_address and claimed.address is not None:
        return list(claimed.address) if isinstance(claimed.address, list) else [claimed.address]
    return []
