"""Runs due campaigns: freezes each run's audience and fans it out in batches, resumably.

A run starts when its campaign is ``scheduled`` and due: the audience is evaluated once (less the users an
earlier run reached within ``exclude_reached_days``) and frozen into ``campaign_audience`` in send order.
The frozen audience is cut into parts of ``PART_BATCHES`` batches, and each part is advanced a batch at a time
by whichever runner holds its lease, so the campaign loops of several ``clarion worker`` processes fan one run
out together (a run with a rate or an A/B test is one part: its order and pace are one runner's). Each batch's
messages are written in the same transaction as its part's cursor and the run's counts
(``Intake.write_campaign_batch``), so after a crash the next runner continues exactly after the last committed
batch of each part: at once when the dead runner was a process of this host (its lease names host, pid and
process start, see ``clarion.owners``), else once its lease has run out. Pausing stops the run after the batches
in flight; the run's token bucket paces batches to the campaign's rate.

With ``send_time`` "optimal" each composed batch is placed in time before it is written (``_at_best_hours``):
its users' responses are read in one query, and each user's waiting deliveries get ``run_at`` at the start of
the local hour they respond at most (``analytics.send_time``, smoothed toward the pattern of the run's users so
far), within the next 24 hours and the template's ttl, and never in an hour the quiet-hours policy would hold
(judged at queue time only, so it is asked here for each candidate hour). Consent and suppressions are judged
again at dispatch for deliveries that waited; frequency caps counted the message when it was queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from clarion import owners
from clarion.analytics import send_time
from clarion.campaigns import abtest, pacing
from clarion.campaigns import definition as spec
from clarion.domain import errors, ids, model, timewindows
from clarion.domain.policy import config, quiet_hours
from clarion.domain.policy.decision import ALLOW, Candidate
from clarion.pipeline.intake import CampaignBatch, Intake, PreparedBatch, Progress, Tally
from clarion.segments.service import SegmentService
from clarion.store import activity, outbox
from clarion.store import audit as audit_log
from clarion.store import campaigns as store
from clarion.store import tables as t
from clarion.store.db import Database

log = logging.getLogger(__name__)
AUDIENCE_CHUNK = 50_000  # frozen-audience rows per write while a run starts
PART_BATCHES = 20  # batches per part of a run's audience (what one runner leases at a time)
MAX_PARTS = 1_000
# While urgent sends (verification codes) are arriving (``Database.urgent_lately``) batches are at most
# ``urgent_batch`` users: an urgent send's write waits for the transaction in flight, which this keeps short.
RESPONSES_SINCE = timedelta(weeks=4)  # how far back a user's responses tell their hour
SEND_WITHIN = timedelta(hours=24)  # an optimal send goes out within this long of its batch
WAITING = (model.DeliveryStatus.QUEUED.value, model.DeliveryStatus.DEFERRED.value)


class Audiences(Protocol):
    """What campaigns need of ``clarion.segments``: an audience spec's user ids (stable order), its size."""

    async def audience(self, spec: Mapping[str, Any]) -> list[str]: ...

    async def count_audience(self, spec: Mapping[str, Any]) -> int: ...


def empty_counts() -> dict[str, Any]:
    return {"excluded": 0, "skipped": 0, "messages": 0, "queued": 0, "deferred": {}, "filtered": {}, "failed": {}}


def add_tally(counts: Mapping[str, Any], tally: Tally) -> dict[str, Any]:
    out = {**empty_counts(), **counts}
    for name in ("skipped", "messages", "queued"):
        out[name] = int(out.get(name, 0)) + getattr(tally, name)
    for name in ("deferred", "filtered", "failed"):
        merged = dict(out.get(name) or {})
        for reason, n in getattr(tally, name).items():
            merged[reason] = merged.get(reason, 0) + n
        out[name] = merged
    return out


@dataclass(slots=True)
class _Run:
    """What a runner keeps between batches of one run."""

    definition: spec.Definition
    bucket: pacing.Bucket | None
    #: send_time optimal: the responses of the run's users so far, per local hour of the week (the prior)
    responses: npt.NDArray[np.float64] | None = None
    #: ab: when the test cohort's results were last looked at (monotonic seconds)
    last_look: float = float("-inf")


class Handoff(Protocol):
    """Where a runner's written batches are sent from memory (``worker.Dispatcher``): their due deliveries are
    written leased to ``handoff_owner`` (``outbox.lease_new``) and given to ``take`` once committed."""

    @property
    def handoff_owner(self) -> str: ...

    @property
    def lease(self) -> timedelta: ...

    async def take(self, batch: list[outbox.Claimed]) -> None: ...

    async def drain_handed(self) -> None: ...


class CampaignRunner:
    def __init__(
        self,
        db: Database,
        intake: Intake,
        segments: SegmentService,
        *,
        batch_size: int = 1000,
        urgent_batch: int = 250,
        lease: timedelta = timedelta(seconds=60),
        poll_interval: float = 1.0,
        slice_seconds: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        host: owners.Host | None = None,
        ab_look_seconds: float = 30.0,
    ) -> None:
        self.db = db
        self.intake = intake
        self.segments = segments
        self.audiences = cast(Audiences, segments)
        self.batch_size = batch_size
        self.urgent_batch = urgent_batch
        self.lease = lease
        self.poll_interval = poll_interval
        self.slice_seconds = slice_seconds  # how long one run is advanced before the others get a turn
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep
        self.host = host or owners.Host()
        self.ab_look_seconds = ab_look_seconds  # how often a waiting A/B test looks at its cohort's results
        self._runs: dict[str, _Run] = {}
        # A process that sends (``clarion serve``, ``clarion worker``) hands its batches' due deliveries to its own
        # dispatcher instead of leaving them to be claimed back from the outbox (set by ``Clarion.start``).
        self.handoff: Handoff | None = None

    async def run_once(self, owner: str) -> int:
        """Start due runs and advance a part of each running one by a batch or more; returns how many audience
        users it processed (0: nothing to do)."""
        await self.start_due()
        now = self.clock()

        async def lease(conn: Any) -> list[tuple[Any, Any]]:
            parts = await store.lease_parts(
                conn, owner=owner, now=now, until=now + self.lease, limit=8, is_sqlite=self.db.is_sqlite
            )
            return [(await store.run(conn, part.run_id), part) for part in parts]

        processed = 0
        for run, part in await self.db.write(lease):
            processed += await self._advance(owner, run, part)
        return processed

    async def run(self, stop: asyncio.Event) -> None:
        """The scheduler loop of ``clarion serve``/``clarion worker``."""
        owner = self.host.owner("campaigns")
        released_at = float("-inf")
        while not stop.is_set():
            try:
                if self.monotonic() - released_at > self.lease.total_seconds() / 4:
                    released_at = self.monotonic()
                    await self.release_gone()
                processed = await self.run_once(owner)
            except Exception:
                log.exception("campaign runner %s: cycle failed", owner)
                processed = 0
            if processed == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.poll_interval)
        if self.handoff is not None:  # a graceful stop sends what it wrote
            await self.handoff.drain_handed()

    async def release_gone(self) -> dict[str, str]:
        """Release the runs whose runner is a process of this host that has stopped (``store.release_runs``)."""
        gone = self.host.gone
        released = await self.db.write(lambda conn: store.release_runs(conn, gone=gone))
        for run_id, reason in released.items():
            log.info("campaign run %s taken back: %s", run_id, reason)
        async with self.db.read() as conn:
            done = await store.done_unfinished(conn)
        for run_id, key in done:  # its runner stopped between the last batch and finishing it
            await self._finish(run_id, key, "completed")
        return released

    # -- starting a run ------------------------------------------------------------------------------------

    async def start_due(self) -> list[str]:
        """Start a run of every scheduled campaign that is due; returns the runs' ids."""
        now = self.clock()
        async with self.db.read() as conn:
            due = await store.due(conn, now)
        started = []
        for campaign in due:
            run_id = await self._start(campaign, now)
            if run_id is not None:
                started.append(run_id)
        return started

    async def _start(self, campaign: Any, now: datetime) -> str | None:
        definition = spec.Definition.from_json(campaign.definition)
        schedule = definition.schedule
        next_run_at = schedule.next_after(now) if schedule.kind == "cron" else None
        run_id = ids.new_id()
        try:
            template = await self.intake.catalog.template(definition.template)
            if template is None:
                raise errors.NotFound("template", definition.template)
            definition.channels_for(template)
            audience = list(dict.fromkeys(await self.audiences.audience(definition.audience)))
        except errors.InvalidInput as exc:
            if exc.status >= 500:  # a service it needs cannot answer now (the segment holder): the next poll tries
                log.warning("campaign %s not started yet: %s", campaign.key, exc.message)
                return None
            await self._refuse(campaign, run_id, exc, now)
            return None
        counts = empty_counts()
        if definition.ab is not None:  # the test cohort is the head of a random order
            audience = abtest.shuffled(run_id, audience)
        if definition.exclude_reached_days:
            since = now - timedelta(days=definition.exclude_reached_days)
            async with self.db.read() as conn:
                reached = await store.reached_since(conn, campaign.key, since)
            kept = [u for u in audience if u not in reached]
            counts["excluded"] = len(audience) - len(kept)
            audience = kept
        if definition.ab is not None:
            counts["ab"] = abtest.testing(definition.ab.test_size(len(audience)))
        last = max(0, len(audience) - 1) // AUDIENCE_CHUNK * AUDIENCE_CHUNK
        try:
            for start in range(0, last, AUDIENCE_CHUNK):
                chunk = audience[start : start + AUDIENCE_CHUNK]
                await self.db.write(lambda conn, s=start, c=chunk: store.insert_audience(conn, run_id, s, c))  # type: ignore[misc]

            async def create(conn: Any) -> None:
                await store.insert_audience(conn, run_id, last, audience[last:])
                await store.create_run(
                    conn,
                    run_id,
                    campaign,
                    audience=len(audience),
                    counts=counts,
                    now=now,
                    next_run_at=next_run_at,
                    parts=self._parts(len(audience), definition),
                )

            await self.db.write(create)
        except store.Moved:
            await self.db.write(lambda conn: store.delete_audience(conn, run_id))
            return None
        log.info("campaign %s: run %s started for %d users", campaign.key, run_id, len(audience))
        if not audience:
            await self._finish(run_id, campaign.key, "completed")
        return run_id

    def _parts(self, audience: int, definition: spec.Definition) -> list[tuple[int, int]]:
        """The parts a run's audience is cut into: ``PART_BATCHES`` batches each (at most ``MAX_PARTS``), or one
        when the run has a rate or an A/B test."""
        if definition.rate or definition.ab is not None:
            return [(0, audience)]
        size = max(self.batch_size * PART_BATCHES, -(-audience // MAX_PARTS))
        return [(start, min(audience, start + size)) for start in range(0, audience, size)]

    async def _refuse(self, campaign: Any, run_id: str, exc: errors.InvalidInput, now: datetime) -> None:
        """A due campaign that cannot run (its template is gone or not approved, its audience unknown) gets a
        failed run saying why, and is paused for an operator; ``resume`` tries again."""
        log.warning("campaign %s cannot run: %s", campaign.key, exc.message)

        async def job(conn: Any) -> None:
            counts = {**empty_counts(), "error": {"code": exc.code, "message": exc.message}}
            await store.create_run(conn, run_id, campaign, audience=0, counts=counts, now=now, next_run_at=None)
            await store.finish_run(conn, run_id, "failed", now)
            await store.update(conn, campaign.key, now, status="paused", next_run_at=campaign.next_run_at)

        with contextlib.suppress(store.Moved):
            await self.db.write(job)

    # -- advancing a run -----------------------------------------------------------------------------------

    def _state(self, run: Any, definition: spec.Definition) -> _Run:
        state = self._runs.get(run.id)
        if state is None:
            bucket = None
            if definition.rate:
                bucket = pacing.Bucket(definition.rate, clock=self.monotonic, sleep=self.sleep)
            state = self._runs[run.id] = _Run(definition, bucket)
        return state

    async def _advance(self, owner: str, run: Any, part: Any) -> int:
        """Fan out batches of ``part`` of ``run`` for up to ``slice_seconds``; returns how many audience users it
        processed.

        Batches are pipelined: batch N+1 is read and composed while batch N's transaction is being written, and
        N+1 is written only once N has committed (its cursor update expects N's), so the part's cursor still
        moves one committed batch at a time. A batch whose write finds the run moved (paused, cancelled, its
        part taken over) raises ``Moved``: the batch composed behind it is dropped unwritten."""
        if run is None or run.status != "running":
            return 0
        if run.cursor >= run.audience:
            await self._finish(run.id, run.campaign_key, "completed")
            return 0
        async with self.db.read() as conn:
            campaign = await store.get(conn, run.campaign_key)
        if campaign is None:
            await self._finish(run.id, run.campaign_key, "cancelled")
            return 0
        state = self._state(run, spec.Definition.from_json(campaign.definition))
        definition = state.definition
        size = self.batch_size
        if definition.rate:
            size = max(1, min(size, int(definition.rate)))  # a batch is at most a second's worth
        try:
            template = await self.intake.catalog.template(definition.template)
            if template is None:
                raise errors.NotFound("template", definition.template)
            channels = definition.channels_for(template)
        except errors.InvalidInput as exc:
            log.warning("campaign %s run %s stopped: %s", run.campaign_key, run.id, exc.message)
            await self._finish(run.id, run.campaign_key, "failed", error={"code": exc.code, "message": exc.message})
            return 0
        cursor, limit, split = part.cursor, part.stop, run.audience
        if definition.ab is not None:  # one part: the whole audience, the test cohort first
            split = definition.ab.test_size(run.audience)
            ab = dict(run.counts.get("ab") or abtest.testing(split))
            if cursor < split:
                limit = min(limit, split)
            elif "winner" not in ab:
                decided = await self._decide(run, definition.ab, template, ab, state)
                if decided is None:
                    return 0
                ab = decided
            if "winner" in ab:
                template = abtest.winner_only(template, ab["winner"])
            elif len(abtest.competing(template)) < 2:
                error = {"code": "invalid_campaign", "message": "ab: the template needs two variants with weight"}
                await self._finish(run.id, run.campaign_key, "failed", error=error)
                return 0
        writing: asyncio.Future[Any] | None = None
        done = 0
        began = self.monotonic()
        try:
            while cursor < limit and (done == 0 or self.monotonic() - began < self.slice_seconds):
                if self.db.urgent_lately():
                    size = min(size, self.urgent_batch)  # urgent sends are arriving: short transactions ahead of them
                async with self.db.read() as conn:
                    user_ids = await store.audience_slice(conn, run.id, cursor, min(size, limit - cursor))
                if not user_ids:
                    break
                if state.bucket is not None:
                    await state.bucket.take(len(user_ids))
                    async with self.db.read() as conn:  # paused or cancelled while it waited: leave the batch
                        current = await store.run(conn, run.id)
                    if current is None or current.status != "running":
                        break
                batch = CampaignBatch(run.campaign_key, run.id, template, channels, user_ids, definition.data)
                prepared = await self.intake.prepare_campaign_batch(batch)
                if definition.send_time == "optimal":
                    await self._at_best_hours(prepared, template, state)
                if writing is not None:
                    await writing
                    writing = None
                to = cursor + len(user_ids)
                tested = definition.ab is not None and to == split < run.audience
                progress, counted = self._progress(run.id, part.part, owner, cursor, to, len(user_ids), tested)
                writing = asyncio.ensure_future(self._write(prepared, progress, counted))
                cursor = to
                done += len(user_ids)
            if writing is not None:
                await writing
                writing = None
        except store.Moved:
            log.info("campaign run %s moved on under a batch; left to its new owner", run.id)
            return 0
        finally:
            if writing is not None and not writing.done():  # another error: let the batch in flight finish
                with contextlib.suppress(Exception):
                    await writing
        if cursor >= part.stop:  # this part is done: the run is, once every other part is
            async with self.db.read() as conn:
                current = await store.run(conn, run.id)
            if current is not None and current.cursor >= current.audience:
                await self._finish(run.id, run.campaign_key, "completed")
        return done

    async def _write(self, prepared: PreparedBatch, progress: Progress, counted: Progress) -> None:
        """Write a composed batch; with a ``handoff``, its due deliveries are written leased to it and handed to
        it once committed, so they are sent from memory, never claimed back from the outbox (a crash before
        they are recorded leaves leases that are taken back, and they are sent under the same ids)."""
        handoff, handed = self.handoff, []
        if handoff is not None:
            now = self.clock()
            rows = prepared.rows
            handed = outbox.lease_new(
                rows[t.deliveries],
                rows[t.delivery_events],
                owner=handoff.handoff_owner,
                now=now,
                lease_until=now + handoff.lease,
            )
        await self.intake.write_campaign_batch(prepared, progress, counted)
        if handoff is not None and handed:
            await handoff.take(handed)

    async def _at_best_hours(self, prepared: PreparedBatch, template: model.Template, state: _Run) -> None:
        """Move the batch's waiting deliveries to their users' best hours (see the module's docstring), with
        the held fallbacks behind them, and say so on each delivery's first timeline entry."""
        rows = prepared.rows[t.deliveries]
        user_ids = list(dict.fromkeys(r["user_id"] for r in rows if r["status"] in WAITING))
        if not user_ids:
            return
        now = rows[0]["created_at"]
        settings = await self.intake.catalog.policy_settings()
        async with self.db.read() as conn:
            found = await activity.whereabouts(conn, user_ids)
            responses = await activity.responses(conn, user_ids, now - RESPONSES_SINCE)
        within = min(SEND_WITHIN, timedelta(seconds=template.ttl_seconds)) if template.ttl_seconds else SEND_WITHIN
        index = {u: i for i, u in enumerate(user_ids)}
        zones: dict[str, ZoneInfo] = {}
        masks: dict[tuple[str, str | None], npt.NDArray[np.bool_]] = {}
        zone_of, mask_of = np.zeros(len(user_ids), dtype=np.int64), []
        for i, user_id in enumerate(user_ids):
            whereabouts = found.get(user_id) or activity.Whereabouts(None, None)
            zone = timewindows.resolve_zone(whereabouts.timezone, settings.default_timezone)
            zone_of[i] = list(zones).index(zone.key) if zone.key in zones else len(zones)
            zones.setdefault(zone.key, zone)
            preferences = whereabouts.preferences or config.NO_PREFERENCES
            key = (zone.key, preferences.do_not_disturb)
            if key not in masks:
                masks[key] = self._open_hours(template, preferences, settings, zone, now, within)
            mask_of.append(masks[key])
        in_zone = list(zones.values())
        users = np.asarray([index[u] for u, _ in responses], dtype=np.int64)
        epochs = np.asarray([int(at.timestamp()) for _, at in responses], dtype=np.int64)
        profiles = send_time.local_profiles(users, epochs, in_zone, zone_of)
        counts = np.bincount(profiles.hours, weights=profiles.counts, minlength=send_time.HOURS).astype(np.float64)
        state.responses = counts if state.responses is None else state.responses + counts
        prior = send_time.population(state.responses[None, :])
        chosen = send_time.best_send_times(profiles, prior, in_zone, zone_of, now, within, np.asarray(mask_of))
        moved: dict[str, tuple[datetime, timedelta]] = {}  # delivery id → its new run_at, how much later
        for row in rows:
            epoch = int(chosen[index[row["user_id"]]]) if row["status"] in WAITING else -1
            at = datetime.fromtimestamp(epoch, UTC) if epoch >= 0 else None
            if at is not None and at > row["run_at"]:
                moved[row["id"]] = (at, at - row["run_at"])
                row["run_at"] = at
        for event in prepared.rows[t.delivery_events]:
            if event["delivery_id"] in moved:
                run_at = moved[event["delivery_id"]][0].isoformat()
                event["detail"] = {**(event["detail"] or {}), "send_time": "optimal", "run_at": run_at}
        for step in prepared.rows.get(t.fallback_steps, ()):
            if step["original_id"] in moved and step["run_at"] is not None:
                step["run_at"] += moved[step["original_id"]][1]

    @staticmethod
    def _open_hours(
        template: model.Template,
        preferences: config.Preferences,
        settings: config.PolicySettings,
        zone: ZoneInfo,
        now: datetime,
        within: timedelta,
    ) -> npt.NDArray[np.bool_]:
        """The coming hours at which the quiet-hours policy would let this template reach a user with these
        preferences in ``zone``: the policy itself is asked, at each hour's start."""
        if not settings.on(quiet_hours.POLICY):
            return np.ones(send_time.HOURS, dtype=bool)
        user = model.User("", timezone=zone.key, preferences=preferences)
        channel = next(iter(template.channels))

        def is_open(at: datetime) -> bool:
            candidate = Candidate("", user, template, channel, at, preferences=preferences)
            return quiet_hours.decide(candidate, settings, zone) is ALLOW

        return send_time.allowed_hours(zone, now, is_open, within)

    async def _decide(
        self, run: Any, ab: spec.AB, template: model.Template, state: dict[str, Any], kept: _Run
    ) -> dict[str, Any] | None:
        """Look at the test cohort's results (at most every ``ab_look_seconds``); the decision, recorded on the
        run and in the audit log, or None to keep waiting."""
        if self.monotonic() - kept.last_look < self.ab_look_seconds:
            return None
        kept.last_look = self.monotonic()
        now = self.clock()
        async with self.db.read() as conn:
            decided = await abtest.decide(conn, run.id, ab, template, state, now)
        if decided is None:
            return None

        async def job(conn: Any) -> None:
            await store.set_counts(conn, run.id, {**run.counts, "ab": decided})
            detail = {k: decided[k] for k in ("winner", "by", "stated", "arms")}
            await audit_log.record(
                conn,
                actor="clarion:campaigns",
                action="campaign.ab_decided",
                subject=store.subject(run.campaign_key),
                at=now,
                detail={"run": run.id, **detail},
            )

        await self.db.write(job)
        log.info("campaign %s run %s: %s", run.campaign_key, run.id, decided["stated"])
        return decided

    def _progress(
        self, run_id: str, part: int, owner: str, cursor: int, to: int, users: int, tested: bool
    ) -> tuple[Progress, Progress]:
        """A batch's own writes: its part's cursor from ``cursor`` to ``to`` with a renewed lease (first: it
        refuses a batch whose part moved), and the run's processed users and counts (last); ``tested``: the batch
        completes an A/B test cohort, so the test's clock starts."""
        lease_until = self.clock() + self.lease
        is_sqlite = self.db.is_sqlite

        async def progress(conn: Any, tally: Tally) -> None:
            await store.advance_part(conn, run_id, part, owner=owner, cursor=cursor, to=to, lease_until=lease_until)

        async def counted(conn: Any, tally: Tally) -> None:
            def merge(counts: Mapping[str, Any]) -> dict[str, Any]:
                merged = add_tally(counts, tally)
                if tested:
                    merged["ab"] = abtest.sent(merged["ab"], self.clock())
                return merged

            await store.add_progress(conn, run_id, users, merge, is_sqlite=is_sqlite)

        return progress, counted

    async def _finish(self, run_id: str, key: str, status: str, error: dict[str, Any] | None = None) -> None:
        """End a run; its campaign goes back to ``scheduled`` for a cron's next fire, else to ``completed``."""
        now = self.clock()
        self._runs.pop(run_id, None)

        async def job(conn: Any) -> None:
            run = await store.run(conn, run_id)
            if run is None or run.status != "running":
                return
            values: dict[str, Any] = {}
            if error is not None:
                values["counts"] = {**run.counts, "error": error}
            await store.finish_run(conn, run_id, status, now, **values)
            campaign = await store.get(conn, key)
            if campaign is None or campaign.status != "running":
                return
            definition = spec.Definition.from_json(campaign.definition)
            if status == "failed":
                await store.update(conn, key, now, status="paused")
            elif definition.schedule.kind == "cron":
                next_run_at = campaign.next_run_at or definition.schedule.next_after(now)
                await store.update(conn, key, now, status="scheduled", next_run_at=next_run_at)
            else:
                await store.update(conn, key, now, status="completed", next_run_at=None)

        await self.db.write(job)
        log.info("campaign %s: run %s %s", key, run_id, status)
