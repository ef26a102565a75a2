"""The one seam to the database: engines, read connections, and the group-committing writer.

Every write in a process goes through ``Database.write``: one writer task drains the jobs waiting, runs them
in one transaction (``BEGIN IMMEDIATE`` on SQLite) and commits once — group commit. A caller's ``await``
returns only after its job is committed, so an API answer is never ahead of the disk. Urgent jobs (the urgent
lane's sends, claims and outcomes) are taken before the others waiting, in groups of their own (on PostgreSQL
they do not wait for the writer at all: each runs in its own transaction at once). If a grouped
transaction fails, its jobs are re-run one by one so that one bad job fails alone. Concurrent ``Inserts``
are merged into one ``executemany`` per table.

What an urgent write waits for is the transaction in flight, so while urgent writes are arriving the others
keep theirs short: two ``heavy`` jobs (a campaign batch, a batch's outcomes) never share one. And bulk work on
the event loop (a campaign's composing, a batch's sending) pauses at its ``give_way`` while urgent work is in
progress (``urgent_work``: an urgent send from its template's lookup to its hand-off), leaving the loop — and
on SQLite the interpreter, to the writer thread — to it.

SQLite is embedded: a query on a warm page cache takes microseconds, far less than handing it to a driver
thread and back. So on SQLite, reads run synchronously on the event loop's thread, and each write group runs
in one hop on a dedicated writer thread (which keeps a waiting lock off the loop) — except a small group of
inserts (a quiet moment's one or two send requests), which runs on the loop's thread when the write lock is free
at once. Job code is the same on both databases: it awaits ``conn.execute``; on SQLite that await completes
without suspending (``InlineConnection``), which is what lets either thread drive a group's jobs to completion.
SQLite mode is for one process; several processes share PostgreSQL.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import create_async_engine

from clarion.store import rollups
from clarion.store import tables as t
from clarion.store.driver import Conn, InlineConnection, ListStatement, executemany, fetch, insert_of

__all__ = ["Conn", "Database", "InlineConnection", "Inserts", "ListStatement", "executemany", "fetch", "insert_of"]

log = logging.getLogger(__name__)
T = TypeVar("T")
Job = Callable[[Any], Awaitable[Any]]
_Queued = tuple[Job, "asyncio.Future[Any]", bool]  # a job waiting for the writer, its future, whether heavy
_IDLE_READERS = 4  # SQLite read connections kept open between reads
BUSY_TIMEOUT_MS = 10_000  # how long a SQLite write waits for another process's write lock
_INLINE_ROWS = 64  # a group of inserts this small is written on the event loop's thread (see _transaction)
GIVE_WAY_MAX = 0.1  # seconds bulk work waits at most for urgent work (see Database.give_way)
#: urgent writes arrived in the last this many seconds: bulk work keeps its transactions short (``heavy`` jobs
#: alone; a campaign's batches smaller), for an urgent write waits for the transaction in flight
URGENT_SECONDS = 10.0


def _small_inserts(jobs: list[Job]) -> bool:
    rows = 0
    for job in jobs:
        if not isinstance(job, Inserts):
            return False
        rows += sum(len(table_rows) for table_rows in job.rows.values())
    return rows <= _INLINE_ROWS


class Inserts:
    """A write that is only inserts; see the module docstring on merging."""

    __slots__ = ("rows",)

    def __init__(self, rows: dict[sa.Table, list[dict[str, Any]]]) -> None:
        self.rows = rows

    async def __call__(self, conn: Conn) -> None:
        for table, rows in self.rows.items():
            if not rows:
                continue
            if table is t.delivery_events:  # events of the deliveries inserted with them: new, so ``fresh``
                messages, deliveries = self.rows.get(t.messages, ()), self.rows.get(t.deliveries, ())
                await rollups.append(conn, rows, messages=messages, deliveries=deliveries, fresh=True)
            else:
                await executemany(conn, insert_of(table), rows)


async def _run_merged(conn: Conn, jobs: list[Job]) -> list[Any]:
    """A group's jobs in one transaction: merged inserts first, then the other jobs in arrival order."""
    merged: dict[sa.Table, list[dict[str, Any]]] = {}
    for job in jobs:
        if isinstance(job, Inserts):
            for table, rows in job.rows.items():
                merged.setdefault(table, []).extend(rows)
    if merged:
        await Inserts(merged)(conn)
    return [None if isinstance(job, Inserts) else await job(conn) for job in jobs]


def _committed(sync: sa.Connection, transaction: sa.RootTransaction, jobs: list[Job]) -> list[Any]:
    """``jobs`` run in the begun ``transaction`` on ``sync``, committed (rolled back if one raises)."""
    with transaction:
        return _drive(_run_merged(InlineConnection(sync), jobs))


def _drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (it only awaits ``InlineConnection``) to its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a SQLite write job awaited something other than the database")


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _sqlite_engine(url: sa.URL, *, immediate: bool) -> sa.Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url.set(drivername="sqlite+pysqlite"),
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        connect_args={"check_same_thread": False},
        poolclass=sa.pool.QueuePool,
        pool_size=1 if immediate else 4,
        max_overflow=0 if immediate else 8,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            f"busy_timeout={BUSY_TIMEOUT_MS}",
            "temp_store=MEMORY",
            "cache_size=-65536",
        ):
            dbapi_conn.execute(f"PRAGMA {pragma}")

    if immediate:  # readers stay in autocommit: each SELECT sees one consistent snapshot, and costs no BEGIN

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.connection.driver_connection.execute("BEGIN IMMEDIATE")  # straight to the driver: a hot path

    return engine


class Database:
    def __init__(self, url: str, *, batch_max: int = 256) -> None:
        self.url = url
        parsed = sa.make_url(url)
        self.dialect = parsed.get_backend_name()
        self._batch_max = batch_max
        # jobs waiting for the writer: urgent ones (an urgent lane's accept, claim and outcomes) go first, in a
        # group of their own, so they wait at most for the transaction in flight, never behind a fan-out's backlog
        self._waiting: collections.deque[_Queued] = collections.deque()
        self._urgent: collections.deque[_Queued] = collections.deque()
        self.urgent_at = float("-inf")  # when (monotonic seconds) the last urgent write was asked for
        self._ready: asyncio.Event | None = None
        self._writer_task: asyncio.Task[None] | None = None
        # urgent work in progress (an urgent send's accept, an urgent write): bulk work gives way (``give_way``)
        self._urgent_work = 0
        self._urgent_done: asyncio.Event | None = None
        if self.dialect == "sqlite":
            self._sqlite_writer = _sqlite_engine(parsed, immediate=True)
            self._sqlite_reader = _sqlite_engine(parsed, immediate=False)
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clarion-sqlite-writer")
            self._writer_connection: sa.Connection | None = None
            self._idle_readers: list[sa.Connection] = []
        else:
            self._engine = create_async_engine(
                url, json_serializer=_json_dumps, json_deserializer=orjson.loads, pool_size=10, max_overflow=10
            )

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    # -- reads -------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Any]:
        """A connection for reading (``await conn.execute(...)``); see the module docstring for SQLite."""
        if self.is_sqlite:
            # Read connections are kept between reads (a pool checkout and a new Connection cost more than most
            # look-ups); a read leaves nothing open behind it, as a pool's reset on return would.
            idle = self._idle_readers
            sync = idle.pop() if idle else self._sqlite_reader.connect()
            try:
                yield InlineConnection(sync)
            finally:
                if sync.in_transaction():
                    sync.rollback()
                if len(idle) < _IDLE_READERS and not (sync.closed or sync.invalidated):
                    idle.append(sync)
                else:
                    sync.close()
        else:
            async with self._engine.connect() as conn:
                yield conn

    # -- urgent work first --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def urgent_work(self) -> Iterator[None]:
        """Mark urgent work in progress on this process (an urgent send from its template's lookup to its
        hand-off; every urgent write): bulk work waits for it at its next ``give_way``."""
        if not self._urgent_work:
            self._urgent_done = asyncio.Event()
        self._urgent_work += 1
        try:
            yield
        finally:
            self._urgent_work -= 1
            if not self._urgent_work and self._urgent_done is not None:
                self._urgent_done.set()

    def urgent_lately(self) -> bool:
        """Whether an urgent write was asked for in the last ``URGENT_SECONDS``: codes are arriving, so bulk
        writes are kept short."""
        return time.monotonic() - self.urgent_at < URGENT_SECONDS

    async def give_way(self, *, bulk: bool = True) -> None:
        """Where work pauses between slices: the loop's other work gets a turn, and while urgent work is in
        progress ``bulk`` work (a campaign's composing, a batch's sending) waits for it to end (at most
        ``GIVE_WAY_MAX``), leaving it the loop — and on SQLite the interpreter to the writer thread, whose
        transaction in flight is what an urgent write waits for. Not ``bulk`` (an urgent send's own slices): a
        turn of the loop only."""
        await asyncio.sleep(0)
        done = self._urgent_done
        if bulk and self._urgent_work and done is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), GIVE_WAY_MAX)

    # -- writes ------------------------------------------------------------------------------------------

    async def write(self, job: Callable[[Any], Awaitable[T]], *, urgent: bool = False, heavy: bool = False) -> T:
        """Run ``job(conn)`` inside a write transaction shared with concurrent jobs; return once committed.
        ``urgent`` jobs are written before any other job waiting, grouped only with each other — on SQLite, whose
        one writer they wait for; on PostgreSQL each runs at once in a transaction of its own, beside the group
        in flight. ``heavy``: a job of hundreds of rows (a campaign batch, a batch's outcomes); while urgent writes
        are arriving (``URGENT_SECONDS``) no two share a transaction, which would keep an urgent write waiting
        for both."""
        if urgent:
            self.urgent_at = time.monotonic()
            with self.urgent_work():
                return await self._write(job, urgent=True, heavy=False)
        return await self._write(job, urgent=False, heavy=heavy)

    async def _write(self, job: Callable[[Any], Awaitable[T]], *, urgent: bool, heavy: bool) -> T:
        if urgent and not self.is_sqlite:
            async with self._engine.begin() as conn:
                return await job(conn)
        if self._writer_task is None or self._writer_task.done():
            self._ready = asyncio.Event()
            self._writer_task = asyncio.create_task(self._writer(), name="clarion-db-writer")
        assert self._ready is not None
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._waiting).append((job, future, heavy))  # unbounded: never waits
        self._ready.set()
        return await future

    async def _writer(self) -> None:
        assert self._ready is not None
        ready = self._ready
        while True:
            queue = self._urgent or self._waiting
            if not queue:
                ready.clear()
                await ready.wait()
                continue
            group = [queue.popleft()]
            heavy = group[0][2]
            alone = self.urgent_lately()  # heavy jobs one per transaction
            while len(group) < self._batch_max and queue:
                if alone and heavy and queue[0][2]:
                    break
                heavy = heavy or queue[0][2]
                group.append(queue.popleft())
            group = [entry for entry in group if not entry[1].cancelled()]
            if not group:
                continue
            outcomes = await _grouped([job for job, _, _ in group], self._transaction)
            for (_, fut, _), (ok, value) in zip(group, outcomes, strict=True):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)

    async def _transaction(self, jobs: list[Job]) -> list[Any]:
        """Run ``jobs`` in one write transaction and commit. On SQLite a small group of inserts runs right here on
        the event loop's thread when the write lock is free; anything else runs whole on the writer thread."""
        if self.is_sqlite:
            if _small_inserts(jobs):
                done = self._sqlite_inline(jobs)
                if done is not None:
                    return done
            return await asyncio.get_running_loop().run_in_executor(self._thread, self._sqlite_transaction, jobs)
        async with self._engine.begin() as conn:
            return await _run_merged(conn, jobs)

    def _writer_sync(self) -> sa.Connection:
        # one connection for every write transaction, on either thread (they never overlap: the writer task
        # awaits each): no pool checkout per transaction
        sync = self._writer_connection
        if sync is None or sync.closed or sync.invalidated:
            sync = self._writer_connection = self._sqlite_writer.connect()
        return sync

    def _sqlite_transaction(self, jobs: list[Job]) -> list[Any]:
        sync = self._writer_sync()
        return _committed(sync, sync.begin(), jobs)

    def _sqlite_inline(self, jobs: list[Job]) -> list[Any] | None:
        """``jobs`` in one transaction on the calling thread — a one-request group costs less than its hop to the
        writer thread and back — if the write lock is free at once; None when another process holds it (the
        writer thread then waits for it, off the event loop)."""
        sync = self._writer_connection
        if sync is None or sync.closed or sync.invalidated:
            return None  # (re)connecting may wait for the lock: the writer thread does it
        driver = cast(sqlite3.Connection, sync.connection.driver_connection)
        driver.execute("PRAGMA busy_timeout=0")
        try:
            try:
                transaction = sync.begin()
            except (sqlite3.OperationalError, sa.exc.OperationalError) as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    return None
                raise
            return _committed(sync, transaction, jobs)
        finally:
            driver.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    def _sqlite_release(self) -> None:
        if self._writer_connection is not None:
            self._writer_connection.close()
            self._writer_connection = None

    async def close(self) -> None:
        if self._writer_task is not None:
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
            self._writer_task = None
        if self.is_sqlite:
            with contextlib.suppress(RuntimeError):  # closed before
                self._thread.submit(self._sqlite_release)
            self._thread.shutdown(wait=True)
            self._sqlite_writer.dispose()
            while self._idle_readers:
                self._idle_readers.pop().close()
            self._sqlite_reader.dispose()
        else:
            await self._engine.dispose()

    # -- dialect differences, kept here ------------------------------------------------------------------

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that supports ``on_conflict_do_nothing`` / ``on_conflict_do_update`` on both dialects."""
        return (sqlite.insert if self.is_sqlite else postgresql.insert)(table)


async def _grouped(jobs: list[Job], transaction: Callable[[list[Job]], Awaitable[list[Any]]]) -> list[tuple[bool, Any]]:
    """Run ``jobs`` as one transaction; if that fails, each alone, so one bad job fails by itself."""
    if len(jobs) > 1:
        try:
            return [(True, r) for r in await transaction(jobs)]
        except Exception:
            log.debug("grouped write failed; re-running its %d jobs one by one", len(jobs))
    outcomes: list[tuple[bool, Any]] = []
    for job in jobs:
        try:
            outcomes.append((True, (await transaction([job]))[0]))
        except Exception as exc:
            outcomes.append((False, exc))
    return outcomes
