"""The one seam to the database: engines, read transactions, and the group-committing writer.

SQLite has one writer. Rather than let connections queue on its lock (busy waits of whole milliseconds),
every write in a process goes through ``Database.write``: a single writer task drains the jobs waiting,
runs them in one ``BEGIN IMMEDIATE`` transaction and commits once (group commit). A caller's ``await``
returns only after its job is committed, so an API answer is never ahead of the disk. If a grouped
transaction fails, its jobs are re-run one by one so that one bad job fails alone.

PostgreSQL takes the same path (one transaction per group cuts commits), with its own pool for reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

log = logging.getLogger(__name__)
T = TypeVar("T")


class Inserts:
    """A write that is only inserts. Concurrent ``Inserts`` are merged: one ``executemany`` per table for the
    whole group instead of one per job, which is what lets SQLite keep up with many small requests."""

    __slots__ = ("rows",)

    def __init__(self, rows: dict[sa.Table, list[dict[str, Any]]]) -> None:
        self.rows = rows

    async def __call__(self, conn: AsyncConnection) -> None:
        for table, rows in self.rows.items():
            if rows:
                await conn.execute(table.insert(), rows)


Job = Callable[[AsyncConnection], Awaitable[Any]]


async def _run_merged(conn: AsyncConnection, jobs: list[Job]) -> list[Any]:
    """Run a group's jobs in one transaction: merged inserts first (tables in declaration order), then the
    other jobs in arrival order."""
    merged: dict[sa.Table, list[dict[str, Any]]] = {}
    results: list[Any] = []
    for job in jobs:
        if isinstance(job, Inserts):
            for table, rows in job.rows.items():
                merged.setdefault(table, []).extend(rows)
    if merged:
        await Inserts(merged)(conn)
    for job in jobs:
        results.append(None if isinstance(job, Inserts) else await job(conn))
    return results


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _sqlite_engine(url: str, *, immediate: bool, pool_size: int) -> AsyncEngine:
    path = sa.make_url(url).database
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        url,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        pool_size=pool_size,
        max_overflow=0,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.execute("PRAGMA cache_size=-65536")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    def __init__(self, url: str, *, batch_max: int = 256) -> None:
        self.url = url
        self.dialect = sa.make_url(url).get_backend_name()
        if self.dialect == "sqlite":
            self.writer_engine = _sqlite_engine(url, immediate=True, pool_size=1)
            self.reader_engine = _sqlite_engine(url, immediate=False, pool_size=4)
        else:
            self.writer_engine = create_async_engine(
                url,
                json_serializer=_json_dumps,
                json_deserializer=orjson.loads,
                pool_size=10,
                max_overflow=10,
            )
            self.reader_engine = self.writer_engine
        self._batch_max = batch_max
        self._queue: asyncio.Queue[tuple[Job, asyncio.Future[Any]]] | None = None
        self._writer_task: asyncio.Task[None] | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    # -- reads -------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.reader_engine.connect() as conn:
            yield conn

    # -- writes ------------------------------------------------------------------------------------------

    async def write(self, job: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``job`` inside a write transaction shared with concurrent jobs; return once committed."""
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
            try:
                await self._run_group(group)
            except Exception as exc:  # pragma: no cover - the guard of last resort
                log.exception("writer failed")
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)

    async def _run_group(self, group: list[tuple[Job, asyncio.Future[Any]]]) -> None:
        if len(group) > 1:
            try:
                async with self.writer_engine.begin() as conn:
                    results = await _run_merged(conn, [job for job, _ in group])
            except Exception:
                log.debug("grouped write failed; re-running its %d jobs one by one", len(group))
            else:
                for (_, fut), result in zip(group, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
                return
        for job, fut in group:
            try:
                async with self.writer_engine.begin() as conn:
                    result = await job(conn)
            except Exception as exc:
                if not fut.done():
                    fut.set_exception(exc)
            else:
                if not fut.done():
                    fut.set_result(result)

    async def close(self) -> None:
        if self._writer_task is not None:
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
            self._writer_task = None
        await self.writer_engine.dispose()
        if self.reader_engine is not self.writer_engine:
            await self.reader_engine.dispose()

    # -- dialect differences, kept here ------------------------------------------------------------------

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that supports ``on_conflict_do_nothing`` / ``on_conflict_do_update`` on both dialects."""
        return (sqlite.insert if self.is_sqlite else postgresql.insert)(table)
