"""The dispatch loop: claim a batch from the outbox → send through providers → record outcomes.

No transaction is held across a network call: the claim commits, providers run, and outcomes are recorded as
the sends complete — a chunk at a time, each chunk's write committing while the next chunk is sent — so a
worker killed mid-batch has handed over at most a couple of chunks it had not yet recorded. A worker stopped
gracefully finishes its batch; a worker killed leaves leases that a worker starting on the same host takes back
at once (its owner names host, pid and process start, see ``clarion.owners``) and that otherwise expire and are
reaped, so each delivery is sent at least once, and always under the same delivery id."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import owners
from clarion.channels.registry import ProviderRegistry
from clarion.domain import retry
from clarion.domain.policy.decision import Drop
from clarion.metrics import Metrics
from clarion.pipeline import dispatch
from clarion.pipeline.dispatch import Recorder
from clarion.store import outbox
from clarion.store.db import Database

log = logging.getLogger(__name__)
#: the deliveries of a batch to judge again (their ids → why each is dropped now)
Recheck = Callable[[list[outbox.Claimed], datetime], Awaitable[dict[str, Drop]]]
WAITED = timedelta(seconds=1)  # claimed this long after it was queued: deferred, retried, or behind a backlog
HANDED_IN_FLIGHT = 2  # batches handed over by their writer (``Dispatcher.take``) being sent at once, at most


class Dispatcher:
    def __init__(
        self,
        db: Database,
        providers: ProviderRegistry,
        metrics: Metrics,
        *,
        retry_policy: retry.RetryPolicy,
        batch_size: int = 200,
        max_batch_size: int | None = None,
        record_chunk: int = dispatch.RECORD_CHUNK,
        lease: timedelta = timedelta(seconds=60),
        poll_interval: float = 0.05,
        linger: float = 0.0,
        recheck: Recheck | None = None,
        host: owners.Host | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.providers = providers
        self.metrics = metrics
        #: route → send → record, for each claimed batch (``pipeline.dispatch``)
        self.stage = dispatch.Stage(
            providers, metrics, retry_policy=retry_policy, clock=clock, record_chunk=record_chunk
        )
        self.batch_size = batch_size
        # A claim that comes back full means a backlog (a campaign): the next claim takes twice as many, up to
        # ``max_batch_size`` — fewer, larger statements per delivery. A claim that is not full goes back to
        # ``batch_size``. Lanes are claimed in order either way, so an urgent message waits at most one batch.
        self.max_batch_size = max_batch_size or batch_size
        self._limit: int | None = None
        self.lease = lease
        self.poll_interval = poll_interval
        # After a claim that took everything due (not full), the next claim waits ``linger`` seconds, so a steady
        # trickle of sends is claimed a few at a time rather than one claim per send; an idle worker woken by a
        # new send claims it at once.
        self.linger = linger
        # Deliveries that waited (deferred to the end of quiet hours, retried, or behind a backlog) are judged again
        # against the user's own wishes before they go: someone who unsubscribed or opted out meanwhile is not
        # sent them.
        self.recheck = recheck
        # This host as /proc shows it: names this process's leases, and tells which leases on this host belong to
        # a process that is gone.
        self.host = host or owners.Host()
        self.wakeup = asyncio.Event()
        self.urgent_wakeup = asyncio.Event()
        #: deliveries the urgent lane's own loop claims at once (it never grows: urgent sends come a few at a time)
        self.urgent_batch_size = min(batch_size, 50)
        self._last_reap = float("-inf")  # the first cycle takes back what a previous process left leased
        # batches handed over by their writer (``take``, ``take_urgent``) and being sent, and the recorders of their
        # outcomes (by urgent); the clock is read through this dispatcher's, which may be replaced
        self._handing = asyncio.Semaphore(HANDED_IN_FLIGHT)
        self._handed: set[asyncio.Future[None]] = set()
        self._handed_recorders = {
            urgent: Recorder(db, owner, lambda: self.clock(), record_chunk, urgent=urgent)
            for urgent, owner in ((False, self.handoff_owner), (True, self.urgent_owner))
        }
        self._urgent_waiting: list[outbox.Claimed] = []  # urgent deliveries handed over, not yet being sent
        self._urgent_sender: asyncio.Future[None] | None = None

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.stage.clock

    @clock.setter
    def clock(self, clock: Callable[[], datetime]) -> None:
        self.stage.clock = clock

    @property
    def retry_policy(self) -> retry.RetryPolicy:
        return self.stage.retry_policy

    @retry_policy.setter
    def retry_policy(self, policy: retry.RetryPolicy) -> None:
        self.stage.retry_policy = policy

    def notify(self, _count: int = 1) -> None:
        """Intake calls this when it queued deliveries, so idle workers wake without waiting a poll."""
        self.wakeup.set()

    def notify_urgent(self) -> None:
        """Intake calls this when it queued deliveries of the urgent lane: its own loop wakes."""
        self.urgent_wakeup.set()

    async def run_once(self, owner: str) -> int:
        """One claim → send → record cycle, recorded when it returns; returns how many deliveries it handled."""
        recorder = Recorder(self.db, owner, self.clock, self.stage.record_chunk)
        handled = await self._cycle(recorder)
        await recorder.drain()
        if recorder.failures:
            raise recorder.failures[0]
        return handled

    async def reap(self, now: datetime) -> int:
        """Put back in the queue what workers that are gone left leased: at once for a process of this host known
        to have stopped, and once the lease has run out for any other."""
        max_attempts = self.retry_policy.max_attempts
        gone = self.host.gone

        async def job(conn: AsyncConnection) -> int:
            reclaimed = await outbox.reclaim_gone(conn, now=now, gone=gone, max_attempts=max_attempts)
            return reclaimed + await outbox.reap_expired(conn, now=now, max_attempts=max_attempts)

        return await self.db.write(job)

    async def _cycle(self, recorder: Recorder, *, urgent: bool = False, probe: bool = False) -> int:
        """Claim a batch and send it, handing its outcomes to ``recorder`` as they come; returns how many
        deliveries were handled (their last outcomes may still be being written). ``urgent``: the urgent lane
        only, a small batch, its writes ahead of others waiting. ``probe``: a blind poll, which mostly finds
        nothing — a read on the claim's index first (``outbox.any_due``), and no claim (no write, no wait for
        the writer) when nothing is due."""
        now = self.clock()
        if not urgent and time.monotonic() - self._last_reap > self.lease.total_seconds() / 4:
            self._last_reap = time.monotonic()
            if reaped := await self.reap(now):
                log.info("worker %s: put %d deliveries left leased back in the queue", recorder.owner, reaped)

        expired: list[outbox.Claimed] = []  # claimed past their ttl: expired by the claim, never sent

        async def claim(conn: AsyncConnection) -> list[outbox.Claimed]:
            expired.clear()
            return await outbox.claim(
                conn,
                owner=recorder.owner,
                now=now,
                lease_until=now + self.lease,
                limit=limit,
                is_sqlite=self.db.is_sqlite,
                expired=expired,
                urgent=urgent,
            )

        limit = self.urgent_batch_size if urgent else self._limit or self.batch_size
        if probe:
            async with self.db.read() as conn:
                if not await outbox.any_due(conn, now, urgent=urgent):
                    if not urgent:
                        self._limit = None  # the backlog is gone
                    return 0
        batch = await self.db.write(claim, urgent=urgent)
        handled = len(batch) + len(expired)
        if not urgent:
            self._limit = min(limit * 2, max(self.batch_size, self.max_batch_size)) if handled >= limit else None
        if batch:
            await self._send_claimed(batch, recorder, now)
        return handled

    async def _send_claimed(self, batch: list[outbox.Claimed], recorder: Recorder, now: datetime) -> None:
        """Send a batch leased to ``recorder.owner``; those that waited are judged again first (``recheck``)."""
        if self.recheck is not None:
            waited = [c for c in batch if now - c.created_at > WAITED]
            drops = await self.recheck(waited, now) if waited else {}
            if drops:
                batch = [c for c in batch if c.id not in drops]
                recorder.add([dispatch.dropped(c, drops[c.id]) for c in waited if c.id in drops])
        await self.stage.send(batch, recorder)

    @property
    def handoff_owner(self) -> str:
        """The lease owner of deliveries handed to this dispatcher by their writer (``take``)."""
        return self.host.owner("handoff")

    async def take(self, batch: list[outbox.Claimed]) -> None:
        """Send ``batch`` — deliveries their writer leased to ``handoff_owner`` in the transaction that wrote
        them (``outbox.lease_new``), now committed — as if this dispatcher had claimed them: routed, rate-limited,
        judged again if they waited, sent, recorded. Returns once the batch is being sent; while
        ``HANDED_IN_FLIGHT`` batches are, it waits, so the writer goes no faster than its batches are sent."""
        await self._handing.acquire()
        sending = asyncio.ensure_future(self._send_handed(batch))
        self._handed.add(sending)
        sending.add_done_callback(self._handed_done)

    @property
    def urgent_owner(self) -> str:
        """The lease owner of urgent deliveries handed to this dispatcher as they are accepted (``take_urgent``)."""
        return self.host.owner("urgent-handoff")

    @property
    def urgent_idle(self) -> bool:
        """No urgent delivery handed over is being sent: one handed over now goes at once. While some are (a
        flood of codes), intake leaves the next to the urgent loop, whose claims take 50 at a time."""
        return self._urgent_sender is None

    def take_urgent(self, batch: list[outbox.Claimed]) -> None:
        """Send ``batch`` — urgent deliveries intake leased to ``urgent_owner`` in the transaction that accepted
        them, now committed — at once, their outcomes written ahead of other waiting writes: a verification code
        does not wait for a claim (a write of its own, behind the transaction in flight) before it is sent. One
        sender takes them: what is handed over while it sends goes together in its next round, so a burst of
        codes is sent in batches, not one provider call each."""
        self._urgent_waiting.extend(batch)
        if self._urgent_sender is None:
            sender = self._urgent_sender = asyncio.ensure_future(self._send_urgent())
            self._handed.add(sender)
            sender.add_done_callback(self._handed.discard)
            sender.add_done_callback(self._logged)

    async def _send_urgent(self) -> None:
        try:
            while self._urgent_waiting:
                batch, self._urgent_waiting = self._urgent_waiting, []
                await self._send_handed(batch, urgent=True)
        finally:
            self._urgent_sender = None

    async def _send_handed(self, batch: list[outbox.Claimed], *, urgent: bool = False) -> None:
        recorder = self._handed_recorders[urgent]
        recorder.failures.clear()  # logged as they happened; their deliveries' leases will be taken back
        now = self.clock()
        late = [c for c in batch if c.expires_at is not None and c.expires_at <= now]
        if late:  # held up past the template's ttl before it could be sent: never sent late
            recorder.add(outbox.expired_outcomes(late))
            batch = [c for c in batch if c not in late]
        if batch:
            await self._send_claimed(batch, recorder, now)

    def _handed_done(self, sending: asyncio.Future[None]) -> None:
        self._handed.discard(sending)
        self._handing.release()
        self._logged(sending)

    @staticmethod
    def _logged(sending: asyncio.Future[None]) -> None:
        if not sending.cancelled() and (exc := sending.exception()) is not None:
            log.error("sending a handed batch failed, its leases will be taken back: %r", exc)

    async def drain_handed(self) -> None:
        """Return once every batch handed over so far is sent and its outcomes written (or failed)."""
        while self._handed:
            await asyncio.wait(set(self._handed))
        for recorder in self._handed_recorders.values():
            await recorder.drain()

    async def run(self, stop: asyncio.Event, *, index: int = 0, urgent: bool = False) -> None:
        """A dispatch loop. ``urgent``: the urgent lane's own loop (one per process, beside the others): it claims
        only urgent deliveries, a few at a time, woken by intake as they are queued, so a verification code is
        not sent after the campaign batch a busy loop is sending; its claims and outcomes are written before the
        fan-out's waiting writes."""
        owner = self.host.owner("urgent" if urgent else str(index))
        name = "urgent worker" if urgent else "worker"
        wakeup = self.urgent_wakeup if urgent else self.wakeup
        log.info("%s %s started", name, owner)
        # Outcomes are written while the next chunk is sent and the next batch claimed (the last chunk's write and
        # the next claim share a group commit); the recorder keeps one write in flight at a time.
        recorder = Recorder(self.db, owner, self.clock, self.stage.record_chunk, urgent=urgent)
        blind = True  # the first cycle, and each after a poll interval that nothing woke, probes before claiming
        while not stop.is_set():
            wakeup.clear()  # before the claim: a send queued during it wakes the wait that follows an empty one
            try:
                handled = await self._cycle(recorder, urgent=urgent, probe=blind)
                recorder.failures.clear()  # logged as they happened; their deliveries' leases will be taken back
            except Exception:
                log.exception("%s %s: cycle failed", name, owner)
                handled = 0
                await asyncio.sleep(1)
            blind = False
            if handled == 0:
                blind = not await self._pause(stop, self.poll_interval, wakeup)
            elif not urgent and self._limit is None and self.linger > 0:  # it took all that was due: let more gather
                await self._pause(stop, self.linger)
        await recorder.drain()  # a graceful stop records the last outcomes
        log.info("%s %s stopped", name, owner)

    @staticmethod
    async def _pause(stop: asyncio.Event, seconds: float, wakeup: asyncio.Event | None = None) -> bool:
        """Wait ``seconds``, or less if ``stop`` (or ``wakeup``) is set; whether one was."""
        waits = {asyncio.ensure_future(stop.wait())}
        if wakeup is not None:
            waits.add(asyncio.ensure_future(wakeup.wait()))
        done, _ = await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for waiting in waits:
            waiting.cancel()
        return bool(done)
