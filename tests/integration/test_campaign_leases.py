"""A campaign run's parts leased to a runner process of this host that is gone are released at once, on SQLite and
PostgreSQL: the next runner continues them without waiting for the lease to run out, and nothing else about the
run changes. Parts leased to a runner that runs, or that this host cannot judge, keep their lease."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from clarion import bootstrap, owners
from clarion.store import campaigns as store
from clarion.store import tables as t


async def a_run(clarion: bootstrap.Clarion, key: str, owner: str, *, status: str = "running") -> str:
    """A run of a new campaign ``key`` (one part, 4 of 10 users done), leased to ``owner`` for a minute."""
    now = datetime.now(UTC)
    run_id = f"run-{key}"

    async def job(conn: Any) -> None:
        await store.save(conn, key, {"template": "promo", "audience": {"segment": "s"}}, author="t", now=now)
        await store.update(conn, key, now, status="scheduled", next_run_at=now)
        campaign = await store.get(conn, key)
        await store.create_run(conn, run_id, campaign, audience=10, counts={}, now=now, next_run_at=None)
        await conn.execute(
            t.campaign_runs.update().where(t.campaign_runs.c.id == run_id).values(cursor=4, status=status)
        )
        await conn.execute(
            t.campaign_run_parts.update()
            .where(t.campaign_run_parts.c.run_id == run_id)
            .values(lease_owner=owner, lease_until=now + timedelta(seconds=60), cursor=4)
        )

    await clarion.db.write(job)
    return run_id


def a_process() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def stopped(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait(10)


async def run_row(clarion: bootstrap.Clarion, run_id: str) -> Any:
    async with clarion.db.read() as conn:
        return (await conn.execute(sa.select(t.campaign_runs).where(t.campaign_runs.c.id == run_id))).one()


async def part_row(clarion: bootstrap.Clarion, run_id: str) -> Any:
    async with clarion.db.read() as conn:
        (part,) = await store.parts_of(conn, run_id)
        return part


async def test_the_runs_of_a_killed_runner_are_released_at_once(clarion: bootstrap.Clarion) -> None:
    host = owners.Host()
    process = a_process()
    try:
        dead = host.owner("campaigns", pid=process.pid)
        running = await a_run(clarion, "spring", dead)
        paused = await a_run(clarion, "summer", dead, status="paused")
        alive = await a_run(clarion, "autumn", host.owner("campaigns"))
        elsewhere = await a_run(clarion, "winter", f"another-host:{process.pid}:{dead.split(':')[2]}:campaigns")
        assert await clarion.db.write(lambda conn: store.release_runs(conn, gone=host.gone)) == {}
    finally:
        stopped(process)

    released = await clarion.db.write(lambda conn: store.release_runs(conn, gone=host.gone))
    reason = f"worker {host.hostname}:{process.pid} is not running"
    assert released == {running: reason, paused: reason}
    row, part = await run_row(clarion, running), await part_row(clarion, running)
    assert (row.status, row.cursor, part.cursor, part.lease_owner, part.lease_until) == ("running", 4, 4, None, None)
    assert (await run_row(clarion, paused)).status == "paused"  # an operator's pause stands
    assert (await part_row(clarion, alive)).lease_owner == host.owner("campaigns")
    assert (await part_row(clarion, elsewhere)).lease_owner.startswith("another-host:")

    now = datetime.now(UTC)
    taken = await clarion.db.write(
        lambda conn: store.lease_parts(
            conn, owner="next", now=now, until=now + timedelta(seconds=60), limit=8, is_sqlite=clarion.db.is_sqlite
        )
    )
    assert [(p.run_id, p.cursor) for p in taken] == [(running, 4)]  # continued long before its lease would expire


async def test_a_runner_starting_releases_what_a_dead_one_held(clarion: bootstrap.Clarion) -> None:
    process = a_process()
    run_id = await a_run(clarion, "spring", clarion.campaigns.host.owner("campaigns", pid=process.pid))
    assert await clarion.campaigns.release_gone() == {}
    stopped(process)
    assert list(await clarion.campaigns.release_gone()) == [run_id]
    assert (await part_row(clarion, run_id)).lease_owner is None
