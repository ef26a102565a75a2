"""The SQLite writer: a small group of inserts is written on the event loop's thread, anything else on the writer
thread; a write lock held by another process never blocks the loop; and bulk work gives way to urgent work."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.store import tables as t
from clarion.store.db import GIVE_WAY_MAX, Database, Inserts
from tests.integration.test_db_inserts import sample_rows
from tests.integration.test_driver import fresh


def deliveries(count: int, prefix: str) -> Inserts:
    row = sample_rows()[t.deliveries][0]
    return Inserts({t.deliveries: [{**row, "id": f"{prefix}{i}"} for i in range(count)]})


def hops(db: Database) -> list[Any]:
    """Records each write group handed to the writer thread."""
    handed: list[Any] = []
    submit = db._thread.submit

    def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        handed.append(fn)
        return submit(fn, *args, **kwargs)

    db._thread.submit = counting  # type: ignore[method-assign]
    return handed


def count(path: Any) -> int:
    raw = sqlite3.connect(path)
    try:
        return raw.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    finally:
        raw.close()


class Transactions:
    """Jobs that note, by name, which transaction ran them: ``groups`` lists each transaction's jobs, in commit
    order."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self._connections: list[Any] = []

    def job(self, name: str) -> Any:
        async def run(conn: AsyncConnection) -> str:
            if not self._connections or conn is not self._connections[-1]:
                self._connections.append(conn)
                self.groups.append([])
            self.groups[-1].append(name)
            await conn.execute(t.deliveries.select().limit(1))
            return name

        return run


async def test_small_insert_groups_stay_on_the_loop_and_the_rest_go_to_the_writer_thread(tmp_path) -> None:
    db = await fresh(tmp_path / "w.db")
    handed = hops(db)
    try:
        await db.write(deliveries(1, "first"))  # the writer's connection is opened on its thread
        assert len(handed) == 1
        await db.write(deliveries(3, "small"))
        assert len(handed) == 1 and count(tmp_path / "w.db") == 4
        await db.write(deliveries(65, "big"))  # more rows than a request's
        assert len(handed) == 2 and count(tmp_path / "w.db") == 69

        async def not_only_inserts(conn: AsyncConnection) -> int:
            return len((await conn.execute(t.deliveries.select())).all())

        assert await db.write(not_only_inserts) == 69
        assert len(handed) == 3
    finally:
        await db.close()


async def test_a_write_lock_held_elsewhere_is_waited_for_off_the_loop(tmp_path) -> None:
    path = tmp_path / "locked.db"
    db = await fresh(path, {t.deliveries: deliveries(1, "w").rows[t.deliveries]})  # the writer's connection is open
    handed = hops(db)
    other = sqlite3.connect(path, isolation_level=None)  # another process, say an import in progress
    other.execute("BEGIN IMMEDIATE")
    try:
        writing = asyncio.ensure_future(db.write(deliveries(1, "x")))
        started = time.monotonic()
        for _ in range(30):  # the loop keeps turning while the write waits for the lock
            await asyncio.sleep(0.01)
        assert time.monotonic() - started < 2  # 0.3 s of turns, not the lock's 10 s wait on the loop
        assert not writing.done()
        other.execute("COMMIT")
        await asyncio.wait_for(writing, timeout=5)
        assert len(handed) == 1  # it went to the writer thread, which waited for the lock
        assert count(path) == 2
        await db.write(deliveries(1, "y"))  # and the next small one is back on the loop, waiting for nothing
        assert len(handed) == 1 and count(path) == 3
    finally:
        other.close()
        await db.close()


async def test_the_first_write_waits_for_a_lock_held_elsewhere_instead_of_failing(tmp_path) -> None:
    """Opening the writer's connection while another process writes (the database is in WAL mode already, as
    any database Clarion has opened is): the write waits for the lock on the writer thread."""
    path = tmp_path / "first.db"
    db = await fresh(path)
    async with db.read():  # a read connection puts the file in WAL mode
        pass
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        writing = asyncio.ensure_future(db.write(deliveries(1, "x")))
        await asyncio.sleep(0.3)
        assert not writing.done()
        other.execute("COMMIT")
        await asyncio.wait_for(writing, timeout=5)
        assert count(path) == 1
    finally:
        other.close()
        await db.close()


async def test_an_urgent_write_goes_before_the_writes_waiting_ahead_of_it_in_a_group_of_its_own(tmp_path) -> None:
    db = await fresh(tmp_path / "w.db")
    transactions = Transactions()
    job = transactions.job
    try:
        await db.write(deliveries(1, "first"))
        waiting = [asyncio.ensure_future(db.write(job(f"normal{i}"))) for i in range(5)]
        urgent = asyncio.ensure_future(db.write(job("urgent"), urgent=True))
        assert await asyncio.gather(*waiting, urgent) == [*(f"normal{i}" for i in range(5)), "urgent"]
    finally:
        await db.close()
    assert transactions.groups == [["urgent"], [f"normal{i}" for i in range(5)]]


async def test_on_postgres_an_urgent_write_commits_while_the_group_in_flight_is_still_running(
    pg_database: str,
) -> None:
    db = Database(pg_database)
    order: list[str] = []
    release = asyncio.Event()
    try:

        async def long_fan_out_batch(conn: AsyncConnection) -> None:
            await conn.execute(t.deliveries.select().limit(1))
            await release.wait()  # a batch transaction still being written
            order.append("batch")

        async def urgent_accept(conn: AsyncConnection) -> None:
            await conn.execute(t.deliveries.select().limit(1))
            order.append("urgent")

        batch = asyncio.ensure_future(db.write(long_fan_out_batch))
        await asyncio.sleep(0.05)
        await asyncio.wait_for(db.write(urgent_accept, urgent=True), timeout=5)
        assert order == ["urgent"]  # committed, the batch still open
        release.set()
        await batch
        assert order == ["urgent", "batch"]
    finally:
        release.set()
        await db.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_bulk_work_gives_way_while_urgent_work_is_in_progress_and_resumes_after(
    backend: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    db = await fresh(tmp_path / "w.db") if backend == "sqlite" else Database(request.getfixturevalue("pg_database"))
    order: list[str] = []
    try:

        async def bulk() -> None:  # a campaign composing, slice after slice
            for i in range(3):
                await db.give_way()
                order.append(f"slice{i}")

        async def urgent_accept(conn: AsyncConnection) -> None:
            await conn.execute(t.deliveries.select().limit(1))
            order.append("urgent")

        with db.urgent_work():  # an urgent send between its template's lookup and its write
            composing = asyncio.ensure_future(bulk())
            await asyncio.sleep(0.02)  # far less than GIVE_WAY_MAX
            assert order == []  # the bulk work waits at its first pause
            await db.write(urgent_accept, urgent=True)
        await asyncio.wait_for(composing, timeout=5)
        assert order == ["urgent", "slice0", "slice1", "slice2"]

        # bounded: urgent work that never ends holds bulk work up GIVE_WAY_MAX at each pause, not for ever
        order.clear()
        with db.urgent_work():
            began = time.monotonic()
            await asyncio.wait_for(bulk(), timeout=5)
            waited = time.monotonic() - began
        assert order == ["slice0", "slice1", "slice2"]
        assert 3 * GIVE_WAY_MAX * 0.9 <= waited < 3 * GIVE_WAY_MAX + 1.0  # (a timer may fire a hair early)

        # no urgent work: a pause is one turn of the loop
        began = time.monotonic()
        await bulk()
        assert time.monotonic() - began < GIVE_WAY_MAX
    finally:
        await db.close()


async def test_heavy_jobs_share_no_transaction_while_urgent_writes_are_arriving(tmp_path: Any) -> None:
    db = await fresh(tmp_path / "w.db")
    transactions = Transactions()
    job = transactions.job
    try:

        async def burst(tag: str) -> None:  # four writes asked for at once: they wait for the writer together
            await asyncio.gather(
                db.write(job(f"{tag}-light")),
                db.write(job(f"{tag}-batch"), heavy=True),
                db.write(job(f"{tag}-outcomes"), heavy=True),
                db.write(job(f"{tag}-light2")),
            )

        await burst("quiet")  # no urgent write lately: one group commit for all that waited
        await db.write(job("code"), urgent=True)
        await burst("codes")
    finally:
        await db.close()
    assert transactions.groups == [
        ["quiet-light", "quiet-batch", "quiet-outcomes", "quiet-light2"],  # no urgent write lately: one commit
        ["code"],
        ["codes-light", "codes-batch"],
        ["codes-outcomes", "codes-light2"],  # a light job still joins a heavy one
    ]
