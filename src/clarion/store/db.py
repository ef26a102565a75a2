"""The one seam to the database: engines, read connections, and the group-committing writer.

Every write in a process goes through ``Database.write``: one writer task drains the jobs waiting, runs them
in one transaction (``BEGIN IMMEDIATE`` on SQLite) and commits once — group commit. A caller's ``await``
returns only after its job is committed, so an API answer is never ahead of the disk. If a grouped
transaction fails, its jobs are re-run one by one so that one bad job fails alone. Concurrent ``Inserts``
are merged into one ``executemany`` per table.

SQLite is embedded: a query on a warm page cache takes microseconds, far less than handing it to a driver
thread and back. So on SQLite, reads run synchronously on the event loop's thread, and each write group runs
in one hop on a dedicated writer thread (which keeps a waiting lock off the loop). Job code is the same on
both databases: it awaits ``conn.execute``; on SQLite that await completes without suspending
(``InlineConnection``), which is what lets the writer thread drive a group's jobs to completion itself.
SQLite mode is for one process; several processes share PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import operator
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

log = logging.getLogger(__name__)
T = TypeVar("T")


class InlineConnection:
    """The part of ``AsyncConnection`` Clarion uses, over a synchronous SQLite connection."""

    __slots__ = ("sync",)

    def __init__(self, sync: sa.Connection) -> None:
        self.sync = sync

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self.sync.execute(statement, parameters)

    @property
    def dialect(self) -> sa.Dialect:
        return self.sync.dialect


Conn = AsyncConnection | InlineConnection
Job = Callable[[Any], Awaitable[Any]]


class Inserts:
    """A write that is only inserts; see the module docstring on merging."""

    __slots__ = ("rows",)

    def __init__(self, rows: dict[sa.Table, list[dict[str, Any]]]) -> None:
        self.rows = rows

    async def __call__(self, conn: Conn) -> None:
        for table, rows in self.rows.items():
            if rows:
                await executemany(conn, insert_of(table), rows)


@functools.cache
def insert_of(table: sa.Table) -> Any:
    """``table.insert()``, the same object each time, so its compiled form is reused."""
    return table.insert()


async def executemany(conn: Conn, statement: Any, rows: list[dict[str, Any]]) -> None:
    """``conn.execute(statement, rows)`` for many rows with the same keys.

    On SQLite the statement is compiled once and the rows go straight to the driver's ``executemany``, each value
    converted by its parameter type's own bind processor — the conversion SQLAlchemy applies, without its per-row
    parameter bookkeeping, which costs more than SQLite's own work on a campaign batch. Timestamps are converted
    once per distinct value (a batch's rows share a handful)."""
    if rows and isinstance(conn, InlineConnection):
        driver = _driver_statement(conn.sync.dialect, statement, tuple(rows[0]))
        if driver is not None:
            driver(conn.sync, rows)
            return
    await conn.execute(statement, rows)


_DriverStatement = Callable[[sa.Connection, list[dict[str, Any]]], None]


@functools.lru_cache(maxsize=256)
def _driver_statement(dialect: sa.Dialect, statement: Any, keys: tuple[str, ...]) -> _DriverStatement | None:
    """The driver-level ``executemany`` for ``statement`` and rows with ``keys``; None when SQLAlchemy must run
    it itself (a Python-side column default to fill in, an expanding ``IN`` parameter)."""
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    names = compiled.positiontup
    if names is None or compiled.insert_prefetch or compiled.update_prefetch:
        return None
    binds = [compiled.binds[name] for name in names]
    if any(b.expanding or b.callable is not None for b in binds):
        return None
    sql = compiled.string
    # per position: the row's key (None for a value bound in the statement itself), its converter, whether it is
    # a timestamp, and the statement's own value
    plan = [
        (
            name if name in keys else None,
            bind.type.dialect_impl(dialect).bind_processor(dialect),
            _is_timestamp(bind.type),
            bind.effective_value,
        )
        for name, bind in zip(names, binds, strict=True)
    ]

    def run(sync: sa.Connection, rows: list[dict[str, Any]]) -> None:
        getters = [_getter(*position) for position in plan]  # fresh per call: the timestamp memos are per batch
        sync.exec_driver_sql(sql, [tuple(get(row) for get in getters) for row in rows])

    return run


def _getter(key: str | None, convert: Any, timestamp: bool, fixed: Any) -> Callable[[dict[str, Any]], Any]:
    """How one parameter's value is taken from a row and converted for the driver."""
    if key is None:
        value = convert(fixed) if convert is not None else fixed
        return lambda row: value
    if convert is None:
        return operator.itemgetter(key)
    if timestamp:
        convert = _memoized(convert)
    return lambda row: convert(row[key])


def _is_timestamp(kind: Any) -> bool:
    return isinstance(kind, sa.DateTime) or isinstance(getattr(kind, "impl", None), sa.DateTime)


def _memoized(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    memo: dict[Any, Any] = {}

    def once(value: Any) -> Any:
        try:
            return memo[value]
        except KeyError:
            memo[value] = converted = convert(value)
            return converted

    return once


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
            "busy_timeout=10000",
            "temp_store=MEMORY",
            "cache_size=-65536",
        ):
            dbapi_conn.execute(f"PRAGMA {pragma}")

    if immediate:  # readers stay in autocommit: each SELECT sees one consistent snapshot, and costs no BEGIN

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Database:
    def __init__(self, url: str, *, batch_max: int = 256) -> None:
        self.url = url
        parsed = sa.make_url(url)
        self.dialect = parsed.get_backend_name()
        self._batch_max = batch_max
        self._queue: asyncio.Queue[tuple[Job, asyncio.Future[Any]]] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        if self.dialect == "sqlite":
            self._sqlite_writer = _sqlite_engine(parsed, immediate=True)
            self._sqlite_reader = _sqlite_engine(parsed, immediate=False)
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clarion-sqlite-writer")
            self._writer_connection: sa.Connection | None = None
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
            with self._sqlite_reader.connect() as sync:
                yield InlineConnection(sync)
        else:
            async with self._engine.connect() as conn:
                yield conn

    # -- writes ------------------------------------------------------------------------------------------

    async def write(self, job: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``job(conn)`` inside a write transaction shared with concurrent jobs; return once committed."""
        if self._writer_task is None or self._writer_task.done():
            self._queue = asyncio.Queue()
            self._writer_task = asyncio.create_task(self._writer(), name="clarion-db-writer")
        assert self._queue is not None
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put((job, future))
        return await future

    async def _writer(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            group = [await queue.get()]
            while len(group) < self._batch_max and not queue.empty():
                group.append(queue.get_nowait())
            group = [(job, fut) for job, fut in group if not fut.cancelled()]
            if not group:
                continue
            outcomes = await _grouped([job for job, _ in group], self._transaction)
            for (_, fut), (ok, value) in zip(group, outcomes, strict=True):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)

    async def _transaction(self, jobs: list[Job]) -> list[Any]:
        """Run ``jobs`` in one write transaction and commit; SQLite's runs whole on the writer thread."""
        if self.is_sqlite:
            return await asyncio.get_running_loop().run_in_executor(self._thread, self._sqlite_transaction, jobs)
        async with self._engine.begin() as conn:
            return await _run_merged(conn, jobs)

    def _sqlite_transaction(self, jobs: list[Job]) -> list[Any]:
        # the writer thread keeps its one connection: no pool checkout per transaction
        sync = self._writer_connection
        if sync is None or sync.closed or sync.invalidated:
            sync = self._writer_connection = self._sqlite_writer.connect()
        with sync.begin():
            return _drive(_run_merged(InlineConnection(sync), jobs))

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
