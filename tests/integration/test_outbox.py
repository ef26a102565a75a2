"""The outbox as a queue, on SQLite and PostgreSQL: lanes, due times, leases, completion and concurrent claims.

Deliveries are queued through ``clarion.intake`` (the API's own path) and sent to the file provider, so
the order in ``sms.jsonl`` is the order the dispatcher handed them over."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from clarion import bootstrap, owners
from clarion.domain import errors, model, retry
from clarion.pipeline import intake
from clarion.store import outbox
from clarion.store import tables as t
from clarion.store.db import Database
from tests.conftest import drain, put_template, record_writes, set_approval, set_policies, sink

S = model.DeliveryStatus
PHONE = "+8613800138000"


# -- helpers -----------------------------------------------------------------------------------------------


async def seed_users(clarion: bootstrap.Clarion, ids: list[str]) -> None:
    now = datetime.now(UTC)
    rows = [
        {
            "user_id": user_id,
            "attributes": {},
            "tags": [],
            "timezone": None,
            "locale": None,
            "addresses": {"sms": PHONE},
            "created_at": now,
            "updated_at": now,
        }
        for user_id in ids
    ]

    async def job(conn: AsyncConnection) -> None:
        await conn.execute(t.users.insert(), rows)

    await clarion.db.write(job)


async def sms_template(api: httpx.AsyncClient, key: str, category: str, priority: str) -> None:
    await put_template(api, key, category=category, priority=priority, channels={"sms": {"text": f"{key} text"}})


async def queue(clarion: bootstrap.Clarion, template: str, users: list[str]) -> list[str]:
    """Queue ``template`` for ``users``; returns the new deliveries' ids in recipient order."""
    accepted = await clarion.intake.send(intake.SendCommand(template, users))
    message_ids = [m["id"] for m in accepted.response["messages"]]
    assert all(m["status"] == "queued" for m in accepted.response["messages"])
    rows = await deliveries(clarion, t.deliveries.c.message_id.in_(message_ids))
    by_message = {r.message_id: r.id for r in rows}
    return [by_message[m] for m in message_ids]


async def deliveries(clarion: bootstrap.Clarion, *where: Any) -> list[Any]:
    async with clarion.db.read() as conn:
        return list((await conn.execute(sa.select(t.deliveries).where(*where).order_by(t.deliveries.c.id))).all())


async def delivery(clarion: bootstrap.Clarion, delivery_id: str) -> Any:
    [row] = await deliveries(clarion, t.deliveries.c.id == delivery_id)
    return row


async def timeline(clarion: bootstrap.Clarion, delivery_id: str) -> list[tuple[str, str | None]]:
    e = t.delivery_events
    async with clarion.db.read() as conn:
        rows = (await conn.execute(sa.select(e).where(e.c.delivery_id == delivery_id).order_by(e.c.id))).all()
    return [(r.status, r.reason) for r in rows]


async def claim(
    clarion: bootstrap.Clarion, owner: str, *, now: datetime, lease: timedelta = timedelta(seconds=60), limit: int = 100
) -> list[outbox.Claimed]:
    async def job(conn: AsyncConnection) -> list[outbox.Claimed]:
        return await outbox.claim(
            conn, owner=owner, now=now, lease_until=now + lease, limit=limit, is_sqlite=clarion.db.is_sqlite
        )

    return await clarion.db.write(job)


async def complete(clarion: bootstrap.Clarion, owner: str, *outcomes: outbox.Outcome) -> int:
    now = datetime.now(UTC)
    return await clarion.db.write(lambda conn: outbox.complete(conn, owner=owner, now=now, outcomes=outcomes))


async def reap(clarion: bootstrap.Clarion, now: datetime) -> int:
    return await clarion.db.write(lambda conn: outbox.reap_expired(conn, now=now))


async def one_queued(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> str:
    await sms_template(api, "note", "notification", "normal")
    await seed_users(clarion, ["u1"])
    [delivery_id] = await queue(clarion, "note", ["u1"])
    return delivery_id


# -- priority lanes ----------------------------------------------------------------------------------------


async def test_claims_grow_while_a_backlog_lasts_and_shrink_when_it_is_gone(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await sms_template(api, "promo", "notification", "low")
    users = [f"b{i:03d}" for i in range(115)]
    await seed_users(clarion, users)
    await queue(clarion, "promo", users[:100])
    clarion.dispatcher.batch_size, clarion.dispatcher.max_batch_size = 10, 40
    handled = [await clarion.dispatcher.run_once("w1") for _ in range(5)]
    assert handled == [10, 20, 40, 30, 0]  # full claims double up to the maximum; a short one ends the run
    await queue(clarion, "promo", users[100:])
    assert await clarion.dispatcher.run_once("w1") == 10  # back to the base size
    assert len(sink(clarion)) == 110


@pytest.mark.parametrize("linger", [0.4, 0.0])
async def test_a_trickle_of_sends_is_claimed_together_after_the_linger(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, linger: float
) -> None:
    """An idle worker claims a new send at once; the sends that follow within ``linger`` share one claim."""
    await sms_template(api, "note", "notification", "normal")
    await seed_users(clarion, ["t0", "t1", "t2", "t3"])
    clarion.dispatcher.linger = linger
    stop = asyncio.Event()
    running = asyncio.create_task(clarion.dispatcher.run(stop))
    try:
        [first] = await queue(clarion, "note", ["t0"])
        for _ in range(100):  # sent long before the linger is over
            if sink(clarion):
                break
            await asyncio.sleep(0.01)
        trickle = []
        for user in ("t1", "t2", "t3"):
            trickle += await queue(clarion, "note", [user])
            await asyncio.sleep(0.05)
        for _ in range(200):
            if len(sink(clarion)) == 4:
                break
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await running
    assert [r["delivery_id"] for r in sink(clarion)][:1] == [first]
    e = t.delivery_events
    async with clarion.db.read() as conn:
        rows = (await conn.execute(sa.select(e.c.delivery_id, e.c.at).where(e.c.status == "sending"))).all()
    claimed_at = {r.delivery_id: r.at for r in rows}
    claims = {claimed_at[d] for d in trickle}
    # with a linger the three are claimed together; without one each is claimed as it comes
    assert len(claims) == (1 if linger else 3)
    assert claimed_at[first] < min(claims)


async def test_urgent_overtakes_a_marketing_backlog_in_the_first_batch(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await set_policies(clarion, send_windows={})  # the backlog is queued at any hour of the test run
    await set_approval(clarion, levels={})
    await sms_template(api, "promo", "marketing", "low")
    await sms_template(api, "digest", "notification", "normal")
    await sms_template(api, "code", "verification", "urgent")
    low_users = [f"m{i:03d}" for i in range(300)]
    normal_users = [f"n{i:02d}" for i in range(20)]
    await seed_users(clarion, [*low_users, *normal_users, "v1"])
    low = await queue(clarion, "promo", low_users)  # the backlog is queued first …
    normal = await queue(clarion, "digest", normal_users)
    [urgent] = await queue(clarion, "code", ["v1"])  # … the verification code last
    lanes = {r.id: r.lane for r in await deliveries(clarion)}
    assert (lanes[urgent], lanes[normal[0]], lanes[low[0]]) == (0, 2, 3)

    clarion.dispatcher.batch_size = 50
    assert await clarion.dispatcher.run_once("w1") == 50

    first_batch = [r["delivery_id"] for r in sink(clarion)]
    assert len(first_batch) == 50
    assert first_batch[0] == urgent
    assert set(first_batch[1:21]) == set(normal)
    assert set(first_batch[21:]) <= set(low)
    assert [s for s, _ in await timeline(clarion, urgent)] == ["queued", "sending", "sent"]
    status = Counter(r.status for r in await deliveries(clarion))
    assert status == {"sent": 50, "queued": 271}

    assert await drain(clarion) == 271
    assert len(sink(clarion)) == 321


async def test_the_urgent_loop_sends_a_code_while_the_others_are_busy_with_a_backlog(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    """The urgent lane's own loop claims only urgent deliveries, woken by intake as the code is accepted."""
    await set_policies(clarion, send_windows={})
    await sms_template(api, "digest", "notification", "normal")
    await sms_template(api, "code", "verification", "urgent")
    users = [f"n{i:03d}" for i in range(120)]
    await seed_users(clarion, [*users, "v1"])
    backlog = await queue(clarion, "digest", users)
    stop = asyncio.Event()
    loop = asyncio.create_task(clarion.dispatcher.run(stop, urgent=True))
    try:
        await asyncio.sleep(0.05)  # idle: it claimed nothing of the backlog
        assert sink(clarion) == []
        await code_sent(api, clarion, "v1")
    finally:
        stop.set()
        await loop
    [handed] = sink(clarion)
    status = Counter(r.status for r in await deliveries(clarion) if r.id in set(backlog))
    assert status == {"queued": 120}  # the backlog is the other loops' to claim
    [claimed] = await claimed_by(clarion, handed["delivery_id"])
    assert claimed["worker"].endswith(":urgent")


async def test_a_poll_that_finds_nothing_due_writes_nothing(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    """A dispatch loop's poll that nothing woke reads the claim's index first: with nothing due it costs no write,
    so it never waits for the writer (nor, for the urgent loop, makes a campaign's composing give way). Woken by a
    code's accept, the urgent loop claims at once."""
    await set_policies(clarion, send_windows={})
    await sms_template(api, "code", "verification", "urgent")
    await seed_users(clarion, ["v1"])
    assert await clarion.dispatcher.run_once("w1") == 0  # the first cycle's reap, out of the way
    writes = record_writes(clarion)
    stop, stop_other = asyncio.Event(), asyncio.Event()
    urgent = asyncio.create_task(clarion.dispatcher.run(stop, urgent=True))
    other = asyncio.create_task(clarion.dispatcher.run(stop_other, index=0))
    try:
        await asyncio.sleep(6 * clarion.dispatcher.poll_interval)  # several polls of each loop
        assert writes == []
        stop_other.set()  # the code is the urgent loop's alone to claim (the others would race it for it)
        await other
        await code_sent(api, clarion, "v1")
    finally:
        stop.set()
        stop_other.set()
        await asyncio.gather(urgent, other)
    assert [options.get("urgent", False) for _, options in writes[:2]] == [True, True]  # the accept, the claim
    [claimed] = await claimed_by(clarion, sink(clarion)[0]["delivery_id"])
    assert claimed["worker"].endswith(":urgent")


async def code_sent(api: httpx.AsyncClient, clarion: bootstrap.Clarion, user_id: str) -> None:
    """Send the urgent ``code`` template to ``user_id`` and wait (at most a second) for the loop running to send it."""
    r = await api.post("/v1/messages", json={"template": "code", "to": [user_id]})
    assert r.status_code == 202, r.text
    for _ in range(200):
        if sink(clarion):
            break
        await asyncio.sleep(0.005)
    [handed] = sink(clarion)
    assert handed["user_id"] == user_id


async def claimed_by(clarion: bootstrap.Clarion, delivery_id: str) -> list[Any]:
    """The ``detail`` of each ``sending`` entry on the timeline of ``delivery_id``: who claimed it."""
    e = t.delivery_events
    async with clarion.db.read() as conn:
        query = sa.select(e.c.detail).where(e.c.delivery_id == delivery_id, e.c.status == "sending")
        return list((await conn.execute(query)).scalars())


# -- due times and leases ----------------------------------------------------------------------------------


async def test_a_delivery_due_later_is_not_claimed(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    delivery_id = await one_queued(api, clarion)
    later = datetime.now(UTC) + timedelta(hours=1)
    await clarion.db.write(
        lambda conn: conn.execute(t.deliveries.update().where(t.deliveries.c.id == delivery_id).values(run_at=later))
    )

    assert await clarion.dispatcher.run_once("w1") == 0
    assert await claim(clarion, "w1", now=later - timedelta(seconds=1)) == []
    row = await delivery(clarion, delivery_id)
    assert (row.status, row.attempts, row.lease_owner) == ("queued", 0, None)

    [claimed] = await claim(clarion, "w1", now=later)
    assert (claimed.id, claimed.attempts) == (delivery_id, 1)


async def test_an_expired_lease_is_reaped_and_sent_again(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    delivery_id = await one_queued(api, clarion)
    now = datetime.now(UTC)
    [claimed] = await claim(clarion, "dead-worker", now=now, lease=timedelta(seconds=30))
    assert claimed.id == delivery_id
    row = await delivery(clarion, delivery_id)
    assert (row.status, row.lease_owner, row.attempts) == ("sending", "dead-worker", 1)

    assert await reap(clarion, now + timedelta(seconds=10)) == 0  # lease still running: left alone
    assert (await delivery(clarion, delivery_id)).status == "sending"
    assert await claim(clarion, "w2", now=now + timedelta(seconds=10)) == []  # a leased row is nobody else's

    later = now + timedelta(seconds=31)
    assert await reap(clarion, later) == 1
    row = await delivery(clarion, delivery_id)
    assert (row.status, row.lease_owner, row.lease_until) == ("queued", None, None)
    status, reason = (await timeline(clarion, delivery_id))[-1]
    assert status == "queued" and reason is not None and reason.startswith("lease_expired")

    clarion.dispatcher.clock = lambda: datetime.now(UTC) + timedelta(seconds=32)  # time has moved on
    assert await drain(clarion) == 1
    row = await delivery(clarion, delivery_id)
    assert (row.status, row.attempts) == ("sent", 2)
    assert [s for s, _ in await timeline(clarion, delivery_id)] == ["queued", "sending", "queued", "sending", "sent"]
    assert [r["delivery_id"] for r in sink(clarion)] == [delivery_id]


async def test_the_dispatcher_reaps_a_dead_workers_leases_itself(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    delivery_id = await one_queued(api, clarion)
    await claim(clarion, "dead-worker", now=datetime.now(UTC), lease=timedelta(seconds=30))
    assert await drain(clarion) == 0  # the lease is still running

    clarion.dispatcher.clock = lambda: datetime.now(UTC) + timedelta(seconds=60)
    clarion.dispatcher._last_reap = float("-inf")  # reaping is throttled to a quarter lease of real time
    assert await drain(clarion) == 1

    row = await delivery(clarion, delivery_id)
    assert (row.status, row.attempts) == ("sent", 2)
    reasons = [r or "" for _, r in await timeline(clarion, delivery_id)]
    assert any(r.startswith("lease_expired") for r in reasons)


async def test_complete_by_a_worker_that_lost_its_lease_changes_nothing(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    delivery_id = await one_queued(api, clarion)
    now = datetime.now(UTC)
    later = now + timedelta(seconds=31)
    [old] = await claim(clarion, "old", now=now, lease=timedelta(seconds=30))
    assert await reap(clarion, later) == 1

    def sent(pmid: str) -> outbox.Outcome:
        return outbox.Outcome(
            delivery_id, old.message_id, S.SENT, reason="accepted", provider="file", provider_message_id=pmid
        )

    # reaped and not yet taken again: the old worker cannot complete it either
    assert await complete(clarion, "old", sent("old-1")) == 0
    assert (await delivery(clarion, delivery_id)).status == "queued"

    [new] = await claim(clarion, "new", now=later)
    assert (new.id, new.attempts) == (delivery_id, 2)

    assert await complete(clarion, "old", sent("old-2")) == 0
    row = await delivery(clarion, delivery_id)
    assert (row.status, row.lease_owner, row.provider_message_id, row.sent_at) == ("sending", "new", None, None)

    assert await complete(clarion, "new", sent("new-1")) == 1
    assert await complete(clarion, "old", sent("old-3")) == 0  # nor after the new owner finished
    row = await delivery(clarion, delivery_id)
    assert (row.status, row.lease_owner, row.provider_message_id) == ("sent", None, "new-1")
    assert [s for s, _ in await timeline(clarion, delivery_id)].count("sent") == 1
    async with clarion.db.read() as conn:
        message_status = (
            await conn.execute(sa.select(t.messages.c.status).where(t.messages.c.id == old.message_id))
        ).scalar_one()
    assert message_status == "sent"


class PausingConnection:
    """Runs ``between`` right after the first statement of a job, as if another process got scheduled there."""

    def __init__(self, conn: AsyncConnection, between: Callable[[], Awaitable[None]]) -> None:
        self.conn = conn
        self.between: Callable[[], Awaitable[None]] | None = between

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        result = await self.conn.execute(statement, parameters)
        if self.between is not None:
            between, self.between = self.between, None
            await between()
        return result

    @property
    def dialect(self) -> Any:
        return self.conn.dialect


async def test_complete_racing_a_reap_and_reclaim_does_not_overwrite_the_new_lease(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    """PostgreSQL runs workers in several processes: while ``complete`` is between its statements, another
    worker tries to reap the expired lease and claim the row. Whoever goes first wins; the other changes
    nothing — the stale worker's outcome never overwrites a newer lease."""
    if clarion.db.is_sqlite:
        pytest.skip("SQLite serialises write transactions (BEGIN IMMEDIATE): the interleaving cannot happen")
    delivery_id = await one_queued(api, clarion)
    now = datetime.now(UTC)
    later = now + timedelta(seconds=31)
    [old] = await claim(clarion, "old", now=now, lease=timedelta(seconds=30))

    engine = create_async_engine(clarion.settings.database_url)
    taken_over: list[int] = []

    async def another_worker_takes_over() -> None:
        async with engine.begin() as conn:
            reaped = await outbox.reap_expired(conn, now=later)
            claimed = await outbox.claim(
                conn, owner="new", now=later, lease_until=later + timedelta(seconds=30), limit=10, is_sqlite=False
            )
            taken_over.append(reaped + len(claimed))

    racer: asyncio.Task[None] | None = None

    async def start_racer() -> None:
        nonlocal racer
        racer = asyncio.create_task(another_worker_takes_over())
        await asyncio.sleep(0.3)  # give it every chance to run into the middle of complete()

    outcome = outbox.Outcome(delivery_id, old.message_id, S.SENT, reason="accepted", provider_message_id="old-1")
    try:
        async with engine.begin() as conn:
            paused = PausingConnection(conn, start_racer)
            recorded = await asyncio.wait_for(
                outbox.complete(paused, owner="old", now=later, outcomes=[outcome]),  # type: ignore[arg-type]
                timeout=10,
            )
        assert racer is not None
        await asyncio.wait_for(racer, timeout=10)
    finally:
        await engine.dispose()

    row = await delivery(clarion, delivery_id)
    if recorded == 1:  # the stale worker completed first: the reaper found nothing to take over
        assert (row.status, row.lease_owner, row.provider_message_id) == ("sent", None, "old-1")
        assert taken_over == [0]
    else:  # the other worker took over first: the stale outcome changed nothing
        assert (row.status, row.lease_owner, row.provider_message_id) == ("sending", "new", None)
        assert taken_over == [2]


async def test_a_worker_on_a_host_with_a_long_name_can_claim(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, request: pytest.FixtureRequest
) -> None:
    """Linux host names may be 64 characters (a Kubernetes pod name is up to 63); the worker's lease owner is
    ``{hostname}:{pid}:{start}:{index}``, so it is longer than the hostname itself."""
    hostname = "clarion-notification-dispatch-worker-production-7f9c8d4b5-x2k4p"  # 63 characters
    assert len(hostname) == 63
    clarion.dispatcher.host = owners.Host(hostname=hostname)
    delivery_id = await one_queued(api, clarion)

    stop = asyncio.Event()
    task = asyncio.create_task(clarion.dispatcher.run(stop))
    try:
        for _ in range(150):  # bounded: 3 s
            if (await delivery(clarion, delivery_id)).status != "queued":
                break
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        clarion.dispatcher.wakeup.set()
        await asyncio.wait_for(task, timeout=5)
    row = await delivery(clarion, delivery_id)
    assert (row.status, row.attempts) == ("sent", 1)
    async with clarion.db.read() as conn:
        detail = (
            await conn.execute(
                sa.select(t.delivery_events.c.detail).where(
                    t.delivery_events.c.delivery_id == delivery_id, t.delivery_events.c.status == "sending"
                )
            )
        ).scalar_one()
    assert detail["worker"].startswith(hostname + ":")
    assert owners.parse(detail["worker"]) is not None  # host, pid and start, so a restart can judge it
    assert len(detail["worker"] + "#completing") <= t.deliveries.c.lease_owner.type.length


# -- workers that are gone ---------------------------------------------------------------------------------


def a_process() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def stopped(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    assert process.wait(10) == -signal.SIGKILL


async def reclaim(clarion: bootstrap.Clarion, host: owners.Host, *, max_attempts: int = 1_000_000) -> int:
    now = datetime.now(UTC)
    return await clarion.db.write(
        lambda conn: outbox.reclaim_gone(conn, now=now, gone=host.gone, max_attempts=max_attempts)
    )


async def test_the_leases_of_a_killed_process_are_taken_back_at_once(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    delivery_id = await one_queued(api, clarion)
    host = owners.Host()
    process = a_process()
    try:
        owner = host.owner("0", pid=process.pid)
        [_] = await claim(clarion, owner, now=datetime.now(UTC), lease=timedelta(seconds=60))
        assert await reclaim(clarion, host) == 0  # it still runs: its lease is its own
        assert (await delivery(clarion, delivery_id)).lease_owner == owner
    finally:
        stopped(process)

    assert await reclaim(clarion, host) == 1  # long before the lease runs out
    row = await delivery(clarion, delivery_id)
    assert (row.status, row.lease_owner, row.lease_until, row.attempts) == ("queued", None, None, 1)
    status, reason = (await timeline(clarion, delivery_id))[-1]
    assert (status, reason) == ("queued", f"lease_reclaimed: worker {host.hostname}:{process.pid} is not running")
    assert await drain(clarion) == 1
    assert (await delivery(clarion, delivery_id)).status == "sent"


async def test_a_pid_now_used_by_another_process_is_told_apart(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    """The pid runs, but the process that holds it started at another time: it is not the lease's owner."""
    delivery_id = await one_queued(api, clarion)
    host = owners.Host()
    process = a_process()
    try:
        real = owners.parse(host.owner("0", pid=process.pid))
        assert real is not None
        machine, ticks = real.start.rsplit(".", 1)
        earlier = owners.Owner(real.host, real.pid, f"{machine}.{int(ticks) - 100}", "0")
        await claim(clarion, str(earlier), now=datetime.now(UTC))
        assert await reclaim(clarion, host) == 1
    finally:
        stopped(process)
    row = await delivery(clarion, delivery_id)
    assert (row.status, row.lease_owner) == ("queued", None)
    _, reason = (await timeline(clarion, delivery_id))[-1]
    assert reason == (
        f"lease_reclaimed: worker {host.hostname}:{process.pid} is not running (its pid now belongs to another process)"
    )


@pytest.mark.parametrize("kind", ["another host", "another boot", "an unknown start", "no start at all"])
async def test_leases_this_host_cannot_judge_wait_for_their_expiry(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, kind: str
) -> None:
    delivery_id = await one_queued(api, clarion)
    host = owners.Host()
    process = a_process()
    real = owners.parse(host.owner("0", pid=process.pid))
    stopped(process)  # its pid runs nothing now: only the owner's host, boot or start is in doubt
    assert real is not None
    _, ns, ticks = real.start.split(".")
    owner = {
        "another host": str(owners.Owner("another-" + real.host, real.pid, real.start, "0")),
        "another boot": str(owners.Owner(real.host, real.pid, f"0123456789ab.{ns}.{ticks}", "0")),
        "an unknown start": str(owners.Owner(real.host, real.pid, "-.-.-", "0")),
        "no start at all": f"{real.host}:{real.pid}:0",  # as an older Clarion named its workers
    }[kind]
    now = datetime.now(UTC)
    await claim(clarion, owner, now=now, lease=timedelta(seconds=30))

    assert await reclaim(clarion, host) == 0
    assert (await delivery(clarion, delivery_id)).lease_owner == owner
    assert await reap(clarion, now + timedelta(seconds=31)) == 1  # its lease expires as before
    assert (await delivery(clarion, delivery_id)).status == "queued"


async def test_a_delivery_that_killed_every_attempt_fails_when_taken_back(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    delivery_id = await one_queued(api, clarion)
    host = owners.Host()
    process = a_process()
    await claim(clarion, host.owner("0", pid=process.pid), now=datetime.now(UTC))
    stopped(process)
    assert await reclaim(clarion, host, max_attempts=1) == 1
    row = await delivery(clarion, delivery_id)
    assert (row.status, row.last_error) == ("failed", "lease_reclaimed: attempts exhausted")
    async with clarion.db.read() as conn:
        message = (await conn.execute(sa.select(t.messages.c.status).where(t.messages.c.id == row.message_id))).scalar()
    assert message == "failed"


async def test_a_starting_worker_sends_what_a_killed_one_left_leased(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    """The worker's first cycle takes back the leases of a dead process of this host, and sends them in it."""
    await sms_template(api, "note", "notification", "normal")
    await seed_users(clarion, ["u1", "u2", "u3"])
    ids = await queue(clarion, "note", ["u1", "u2", "u3"])
    process = a_process()
    await claim(clarion, clarion.dispatcher.host.owner("1", pid=process.pid), now=datetime.now(UTC), limit=2)
    stopped(process)

    assert await clarion.dispatcher.run_once(clarion.dispatcher.host.owner("0")) == 3
    assert {r.status for r in await deliveries(clarion)} == {"sent"}
    assert sorted(line["delivery_id"] for line in sink(clarion)) == sorted(ids)


# -- recording as sends complete ---------------------------------------------------------------------------


async def test_outcomes_are_recorded_a_chunk_at_a_time_while_the_batch_is_sent(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk's outcomes are committed by the time the chunk after next goes to the provider, so a worker
    killed mid-batch has at most two chunks sent and unrecorded (not the whole batch)."""
    everything = await queue_many(api, clarion, 60)
    dispatcher = clarion.dispatcher
    dispatcher.batch_size = dispatcher.max_batch_size = 60
    dispatcher.stage.record_chunk = 10
    send_group = dispatcher.stage._send_group
    unrecorded: list[int] = []  # at each chunk's send: deliveries handed over before it, not yet recorded

    async def observed(name: str, items: list[Any]) -> list[outbox.Outcome]:
        async with clarion.db.read() as conn:
            sent = (await conn.execute(sa.select(sa.func.count()).where(t.deliveries.c.status == "sent"))).scalar()
        unrecorded.append(len(unrecorded) * 10 - sent)
        return await send_group(name, items)

    complete = outbox.complete

    async def slow_complete(conn: Any, **kwargs: Any) -> int:  # a write slower than a chunk's send
        if clarion.db.is_sqlite:
            time.sleep(0.05)  # noqa: ASYNC251 -- SQLite runs write jobs on its writer thread
        else:
            await asyncio.sleep(0.05)
        return await complete(conn, **kwargs)

    monkeypatch.setattr(dispatcher.stage, "_send_group", observed)
    monkeypatch.setattr(outbox, "complete", slow_complete)
    assert await dispatcher.run_once("w1") == 60
    assert len(unrecorded) == 6
    assert max(unrecorded) <= 20, unrecorded
    assert {r.status for r in await deliveries(clarion)} == {"sent"}
    assert sorted(line["delivery_id"] for line in sink(clarion)) == sorted(everything)


# -- concurrent claimers -----------------------------------------------------------------------------------


async def claim_until_empty(write: Any, owner: str, *, is_sqlite: bool, limit: int, hold: float = 0.0) -> list[str]:
    """Claim batches until none is left; ``hold`` keeps each claim's transaction (and row locks) open."""
    got: list[str] = []
    while True:

        async def job(conn: AsyncConnection) -> list[outbox.Claimed]:
            now = datetime.now(UTC)
            batch = await outbox.claim(
                conn, owner=owner, now=now, lease_until=now + timedelta(seconds=60), limit=limit, is_sqlite=is_sqlite
            )
            if hold and batch and not is_sqlite:
                await conn.execute(sa.text("SELECT pg_sleep(:s)"), {"s": hold})
            return batch

        batch = await write(job)
        if not batch:
            return got
        got.extend(c.id for c in batch)
        await asyncio.sleep(0)


async def assert_each_claimed_once(clarion: bootstrap.Clarion, everything: list[str], claims: list[list[str]]) -> None:
    flat = [i for ids in claims for i in ids]
    duplicates = [i for i, n in Counter(flat).items() if n > 1]
    assert duplicates == [], f"{len(duplicates)} deliveries claimed twice"
    assert set(flat) == set(everything)
    assert sum(1 for ids in claims if ids) >= 2, "the claimers did not share the work"
    rows = await deliveries(clarion)
    assert {r.status for r in rows} == {"sending"}
    assert {r.attempts for r in rows} == {1}
    leased_to = {r.id: r.lease_owner for r in rows}
    for index, ids in enumerate(claims):
        assert all(leased_to[i] == f"c{index}" for i in ids)
    e = t.delivery_events
    async with clarion.db.read() as conn:
        sending = (await conn.execute(sa.select(e.c.delivery_id).where(e.c.status == "sending"))).scalars().all()
    assert sorted(sending) == sorted(everything)


async def queue_many(api: httpx.AsyncClient, clarion: bootstrap.Clarion, n: int) -> list[str]:
    await sms_template(api, "bulk", "notification", "normal")
    users = [f"u{i:03d}" for i in range(n)]
    await seed_users(clarion, users)
    return await queue(clarion, "bulk", users)


async def test_concurrent_claims_through_the_shared_writer_are_disjoint(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    everything = await queue_many(api, clarion, 150)
    claims = await asyncio.gather(
        *(claim_until_empty(clarion.db.write, f"c{i}", is_sqlite=clarion.db.is_sqlite, limit=7) for i in range(6))
    )
    await assert_each_claimed_once(clarion, everything, list(claims))


async def test_concurrent_claims_on_separate_connections_are_disjoint(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    """Each claimer has its own Database (engine, pool, writer), as separate worker processes have."""
    everything = await queue_many(api, clarion, 200)
    others = [Database(clarion.settings.database_url) for _ in range(5)]
    try:
        claims = await asyncio.gather(
            *(
                claim_until_empty(db.write, f"c{i}", is_sqlite=db.is_sqlite, limit=9, hold=0.02)
                for i, db in enumerate(others)
            )
        )
    finally:
        for db in others:
            await db.close()
    await assert_each_claimed_once(clarion, everything, list(claims))


async def test_postgres_claim_skips_rows_locked_by_an_open_claim(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    if clarion.db.is_sqlite:
        pytest.skip("SQLite has a single writer: there is no concurrent claim to skip past")
    everything = await queue_many(api, clarion, 30)
    engine = create_async_engine(clarion.settings.database_url)  # two connections of our own
    now = datetime.now(UTC)
    lease = now + timedelta(seconds=60)
    try:
        async with engine.connect() as first, engine.connect() as second:
            await first.begin()
            held = await outbox.claim(first, owner="c0", now=now, lease_until=lease, limit=10, is_sqlite=False)
            assert len(held) == 10
            await second.begin()
            # must not wait for the first transaction: locked rows are skipped, not queued behind
            rest = await asyncio.wait_for(
                outbox.claim(second, owner="c1", now=now, lease_until=lease, limit=100, is_sqlite=False), timeout=5
            )
            await second.commit()
            await first.commit()
    finally:
        await engine.dispose()
    await assert_each_claimed_once(clarion, everything, [[c.id for c in held], [c.id for c in rest]])


# -- retry policy ------------------------------------------------------------------------------------------

POLICY = retry.RetryPolicy(max_attempts=6, base_seconds=2.0, max_seconds=30.0)


def test_permanent_errors_are_never_retried() -> None:
    decision = POLICY.decide(1, errors.PermanentSendError("HTTP 400", code="http_400"))
    assert decision.retry is False


def test_no_retry_once_attempts_are_exhausted() -> None:
    transient = errors.TransientSendError("HTTP 503", code="http_503")
    assert POLICY.decide(5, transient).retry is True
    assert POLICY.decide(6, transient).retry is False
    assert POLICY.decide(7, transient).retry is False


def test_unknown_exceptions_are_retried() -> None:
    assert POLICY.decide(1, RuntimeError("provider bug")).retry is True


@pytest.mark.parametrize("seed", range(5))
def test_delays_grow_with_equal_jitter_and_are_capped(seed: int) -> None:
    rand = random.Random(seed)
    transient = errors.TransientSendError("HTTP 503", code="http_503")
    delays = []
    for attempt in range(1, 6):
        decision = POLICY.decide(attempt, transient, rand)
        nominal = min(30.0, 2.0 * 2 ** (attempt - 1))
        assert decision.retry is True
        assert nominal / 2 <= decision.delay <= nominal
        delays.append(decision.delay)
    # each nominal delay doubles, so even the worst jitter never goes backwards before the cap
    assert delays[0] <= delays[1] <= delays[2] <= delays[3]
    assert delays[4] <= 30.0


def test_retry_after_is_respected_up_to_the_cap() -> None:
    rand = random.Random(1)
    longer = POLICY.decide(1, errors.TransientSendError("429", code="http_429", retry_after=12), rand)
    assert longer.delay == 12
    shorter = POLICY.decide(3, errors.TransientSendError("429", code="http_429", retry_after=0.5), rand)
    assert 4.0 <= shorter.delay <= 8.0  # a short Retry-After does not cut the backoff
    huge = POLICY.decide(1, errors.TransientSendError("429", code="http_429", retry_after=3600), rand)
    assert huge.delay == 30.0
