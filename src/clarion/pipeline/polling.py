"""The receipt poller: vendors that do not call back are asked what became of the deliveries still ``sent``.

A provider kind whose vendor is polled (``channels.base.PollsReceipts``) is asked, every ``interval``, about each
of its enabled accounts' deliveries that are ``sent`` with a vendor id and were sent within ``max_age`` (older
ones the vendor has long forgotten, and asking about them forever would only grow the rounds). The ids go in
pages of the kind's ``poll_batch`` (its class variable; 100 when it declares none). What the vendor answers is
applied by ``pipeline.feedback.receive``, the function the callback route uses, so a polled receipt and a
called-back one are one and the same: idempotent, held when it beats the send's outcome, recorded on the
timeline. An answer about an id the poller did not ask for is dropped (it would otherwise be kept as pending
for a delivery this account never sent). A vendor error is logged and the account is asked again next round;
nothing the vendor does stops the loop.

With several processes only one polls an account at a time: a Redis lock when ``CLARION_REDIS_URL`` is set, a
PostgreSQL session advisory lock otherwise; SQLite is one process, and takes none. A process that finds an
account locked leaves it to the holder for this round.

Each round also forgets the pending receipts (``store.receipts.hold``) older than ``retention``: receipts whose
delivery never became known.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa

from clarion.channels import base, registry
from clarion.domain import receipts
from clarion.pipeline import feedback
from clarion.store import receipts as store
from clarion.store.db import Database

log = logging.getLogger(__name__)

#: the page size of a kind that declares no ``poll_batch``
DEFAULT_BATCH = 100


class Locks(Protocol):
    """Who polls an account: ``hold(name)`` yields True to the one process that may poll it now."""

    def hold(self, name: str) -> contextlib.AbstractAsyncContextManager[bool]: ...


class NoLocks:
    """SQLite: one process polls, nothing to share."""

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[bool]:
        yield True


class RedisLocks:
    """``SET NX PX`` with a token of this holder, released only by it (compare and delete). ``ttl`` bounds how
    long a process that died mid-round keeps others out."""

    _RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

    def __init__(self, client: Any, *, prefix: str, ttl: timedelta) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_ms = max(1, int(ttl.total_seconds() * 1000))

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[bool]:
        key, token = f"{self.prefix}receipt-poll:{name}", secrets.token_hex(16)
        taken = bool(await self.client.set(key, token, nx=True, px=self.ttl_ms))
        try:
            yield taken
        finally:
            if taken:
                await self.client.eval(self._RELEASE, 1, key, token)


class AdvisoryLocks:
    """A PostgreSQL session advisory lock per account, on a connection kept (outside any transaction) for the
    round and unlocked after it; a process that dies loses its connection, and the lock with it. The two-key
    form keeps these locks apart from ``store.receipts.lock``'s one-key locks."""

    _TRY = sa.text("SELECT pg_try_advisory_lock(hashtext('clarion.receipt_poll'), hashtext(:name))")
    _UNLOCK = sa.text("SELECT pg_advisory_unlock(hashtext('clarion.receipt_poll'), hashtext(:name))")

    def __init__(self, db: Database) -> None:
        self.db = db

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[bool]:
        async with self.db.read() as conn:
            taken = bool((await conn.execute(self._TRY, {"name": name})).scalar())
            await conn.commit()  # the lock is the session's: no transaction stays open across the round
            try:
                yield taken
            finally:
                if taken:
                    await conn.execute(self._UNLOCK, {"name": name})
                    await conn.commit()


@dataclass(slots=True)
class Round:
    """What one round did: vendor ids asked about, what their answers did, the accounts whose vendor failed (asked
    again next round) or that another process held, and the pending receipts forgotten."""

    asked: int = 0
    tally: feedback.Tally = field(default_factory=feedback.Tally)
    failed: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    forgotten: int = 0


class ReceiptPoller:
    def __init__(
        self,
        db: Database,
        providers: registry.ProviderRegistry,
        *,
        locks: Locks,
        interval: timedelta,
        max_age: timedelta,
        retention: timedelta,
        clock: Callable[[], datetime],
        on_suppressed: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.providers = providers
        self.locks = locks
        self.interval = interval
        self.max_age = max_age
        self.retention = retention
        #: Clarion's time (bootstrap makes it the dispatcher's, so tests move both at once)
        self.clock = clock
        #: a hard bounce suppressed an address: the policy cache must be refreshed
        self.on_suppressed = on_suppressed

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``interval`` until ``stop`` is set; a round that fails is logged and the next one comes."""
        while not stop.is_set():
            try:
                done = await self.run_once()
                if done.asked or done.forgotten:
                    log.info(
                        "receipt poll: %d asked, %d applied, %d kept, %d pending receipts forgotten",
                        done.asked,
                        done.tally.accepted,
                        done.tally.pending,
                        done.forgotten,
                    )
            except Exception:
                log.exception("receipt poll round failed; the next round tries again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval.total_seconds())

    async def run_once(self) -> Round:
        done = Round()
        async with self.db.read() as conn:
            accounts = await store.pollable_accounts(conn)
        for name, kind in accounts:
            cls = registry.KINDS.get(kind)
            if cls is None or not callable(getattr(cls, "poll_receipts", None)):
                continue
            async with self.locks.hold(name) as mine:
                if not mine:
                    done.busy.append(name)
                    continue
                if not await self._poll(name, done):
                    done.failed.append(name)
        if done.tally.suppressed and self.on_suppressed is not None:
            self.on_suppressed()
        done.forgotten = await self.forget_pending()
        return done

    async def forget_pending(self) -> int:
        before = self.clock() - self.retention
        return await self.db.write(lambda conn: store.forget_pending(conn, before))

    async def _poll(self, name: str, done: Round) -> bool:
        """Ask the vendor of account ``name`` about its deliveries still ``sent``, a page at a time; False when
        the vendor (or the account) failed, leaving the rest of its pages to the next round."""
        try:
            provider = await self.providers.get(name)
        except Exception as exc:  # its secrets unreadable, a config no longer valid …: logged, tried again
            log.warning("receipt poll: account %s cannot be built: %s", name, exc)
            return False
        if not isinstance(provider, base.PollsReceipts):
            return True
        size = max(1, int(getattr(provider, "poll_batch", DEFAULT_BATCH)))
        since, after = self.clock() - self.max_age, ""
        while True:
            async with self.db.read() as conn:
                page = await store.still_sent(conn, name, since=since, after=after, limit=size)
            if not page:
                return True
            after = page[-1][0]
            asked = list(dict.fromkeys(pmid for _, pmid in page))
            done.asked += len(asked)
            try:
                answers = await provider.poll_receipts(asked)
            except Exception as exc:
                log.warning("receipt poll: vendor of %s failed, asked again next round: %s", name, exc)
                return False
            wanted = set(asked)
            mine = [answer for answer in answers if answer.provider_message_id in wanted]
            if len(mine) < len(answers):
                log.info("receipt poll: %s answered %d ids it was not asked about", name, len(answers) - len(mine))
            if mine:
                done.tally.add(await self._apply(name, mine))
            if len(page) < size:
                return True

    async def _apply(self, name: str, answers: list[receipts.Receipt]) -> feedback.Tally:
        now = self.clock()

        async def job(conn: Any) -> feedback.Tally:
            return await feedback.receive(conn, name, answers, now)

        return await self.db.write(job)
