"""SQLite's fast path: statements compiled once by SQLAlchemy and run on the ``sqlite3`` connection itself.

On SQLite a statement's own work on a warm page cache takes microseconds, and SQLAlchemy's bookkeeping around
each execution (execution context, parameter processing, result metadata) costs several times that. On the hot
path — each send request's inserts and profile look-up, each claim and completion of a batch — that bookkeeping
was most of the CPU, and the more so the smaller the batches. Here a statement is compiled once per parameter
shape; each value goes through its type's own bind processor and each result column through its type's own
result processor (the conversions SQLAlchemy applies), and the SQL runs on the driver. Errors are raised as
SQLAlchemy raises them (``IntegrityError`` …). On PostgreSQL, and for a statement this path cannot take (a
Python-side column default to fill in, an expanding ``IN``), the same calls go through SQLAlchemy.

A list of keys in a SQLite statement is one JSON parameter read by ``json_each`` (``in_json``), so that the
statement's text does not change with the list's length."""

from __future__ import annotations

import asyncio
import collections
import functools
import operator
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection


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


@functools.cache
def insert_of(table: sa.Table) -> Any:
    """``table.insert()``, the same object each time, so its compiled form is reused."""
    return table.insert()


def in_json(column: Any, name: str) -> Any:
    """``column IN (the values of the JSON list bound as name)`` — SQLite only."""
    values = sa.func.json_each(sa.bindparam(name, type_=sa.JSON)).table_valued("value")
    return column.in_(sa.select(values.c.value).scalar_subquery())


def in_expanding(column: Any, name: str) -> Any:
    """``column IN (the list bound as name)``, its parameters expanded per execution — any database."""
    return column.in_(sa.bindparam(name, expanding=True))


class ListStatement:
    """A statement that takes a list of keys as one parameter: built once with ``in_json`` for SQLite (the SQL does
    not change with the list's length, so the driver path takes it) and once with ``in_expanding`` for the
    others; ``on(conn)`` is the one for ``conn``'s database."""

    __slots__ = ("expanding", "json")

    def __init__(self, build: Callable[[Callable[[Any, str], Any]], Any]) -> None:
        self.json = build(in_json)
        self.expanding = build(in_expanding)

    def on(self, conn: Any) -> Any:
        return self.json if conn.dialect.name == "sqlite" else self.expanding


#: on the event loop (PostgreSQL), one statement carries at most about this many bytes of JSON values: turning
#: rows into the driver's wire format runs on the loop, so 100 messages carrying 600 KB of data each are written
#: in slices with the loop given back between them, each costing milliseconds, not one 60 MB statement
SLICE_JSON_BYTES = 1 << 20


def json_slices(rows: list[dict[str, Any]], limit: int = SLICE_JSON_BYTES) -> list[list[dict[str, Any]]]:
    """``rows`` cut where their JSON values (dicts and lists, each measured once however many rows share it)
    add up to more than ``limit`` bytes; rows with small documents stay one slice."""
    sizes: dict[int, int] = {}
    slices: list[list[dict[str, Any]]] = []
    start, total = 0, 0
    for i, row in enumerate(rows):
        size = 0
        for value in row.values():
            if isinstance(value, (dict, list)) and value:
                known = sizes.get(id(value))
                if known is None:
                    known = sizes[id(value)] = len(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))
                size += known
        if total and total + size > limit:
            slices.append(rows[start:i])
            start, total = i, 0
        total += size
    slices.append(rows[start:])
    return slices


async def executemany(conn: Conn, statement: Any, rows: list[dict[str, Any]]) -> None:
    """``conn.execute(statement, rows)`` for many rows with the same keys. Timestamps are converted once per
    distinct value (a batch's rows share a handful). On the event loop, rows heavy with JSON go in slices
    (``SLICE_JSON_BYTES``), the loop given back between them; the transaction is the same."""
    if rows and isinstance(conn, InlineConnection):
        plan = _plan(conn.sync.dialect, statement, tuple(rows[0]), True)
        if plan is not None:
            plan.executemany(conn.sync, rows)
            return
    if len(rows) < 2:
        await conn.execute(statement, rows)
        return
    slices = json_slices(rows)
    for i, part in enumerate(slices):
        if i:
            await asyncio.sleep(0)
        await conn.execute(statement, part)


async def fetch(conn: Conn, statement: Any, parameters: dict[str, Any] | None = None) -> Sequence[Any]:
    """``(await conn.execute(statement, parameters)).all()``: rows that are tuples with the result columns' keys as
    attributes. Runs one statement: a SELECT, or an INSERT/UPDATE/DELETE with or without RETURNING."""
    values = parameters or {}
    if isinstance(conn, InlineConnection):
        plan = _plan(conn.sync.dialect, statement, tuple(values), False)
        if plan is not None:
            return plan.fetch(conn.sync, values)
    return (await conn.execute(statement, values)).all()


class _Plan:
    __slots__ = ("one", "parameters", "processors", "row", "sql")

    def __init__(
        self,
        sql: str,
        parameters: list[tuple[str | None, Any, bool, Any]],
        processors: list[Any],
        row: Callable[..., Any] | None,
    ) -> None:
        self.sql = sql
        # per position: the caller's key (None for a value bound in the statement itself), its converter,
        # whether it is a timestamp, and the statement's own value
        self.parameters = parameters
        self.one = [_getter(key, convert, False, fixed) for key, convert, _, fixed in parameters]  # no memos
        self.processors = processors
        self.row = row

    def executemany(self, sync: sa.Connection, rows: list[dict[str, Any]]) -> None:
        with _as_sqlalchemy_error(self.sql, sync.dialect):
            _driver(sync).executemany(self.sql, self._arguments(rows))

    def _arguments(self, rows: list[dict[str, Any]]) -> list[Any]:
        keys = [key for key, *_ in self.parameters]
        if None in keys or not keys:  # a value bound in the statement: one getter per parameter
            getters = [_getter(*position) for position in self.parameters]  # fresh per call: per-batch memos
            return [tuple(get(row) for get in getters) for row in rows]
        # every value from the row: taken all at once (in C), then only the typed ones converted
        take = operator.itemgetter(*keys)
        converts = [
            (i, _memoized(convert) if timestamp else convert)
            for i, (_, convert, timestamp, _) in enumerate(self.parameters)
            if convert is not None
        ]
        if len(keys) == 1:
            only = converts[0][1] if converts else None
            return [(only(take(row)),) if only else (take(row),) for row in rows]
        if not converts:
            return [take(row) for row in rows]
        arguments = []
        for row in rows:
            values = list(take(row))
            for i, convert in converts:
                values[i] = convert(values[i])
            arguments.append(values)
        return arguments

    def fetch(self, sync: sa.Connection, values: dict[str, Any]) -> list[Any]:
        with _as_sqlalchemy_error(self.sql, sync.dialect):
            arguments = tuple(get(values) for get in self.one)
            raw = _driver(sync).execute(self.sql, arguments).fetchall()
        if self.row is None:
            return raw
        processors, row = self.processors, self.row
        if not any(processors):
            return [row(*r) for r in raw]
        return [row(*[v if p is None else p(v) for p, v in zip(processors, r, strict=True)]) for r in raw]


@functools.lru_cache(maxsize=512)
def _plan(dialect: sa.Dialect, statement: Any, keys: tuple[str, ...], many: bool) -> _Plan | None:
    """How to run ``statement`` with parameters named ``keys`` on the driver; None when SQLAlchemy must run it."""
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))  # as SQLAlchemy compiles it for them
    names = compiled.positiontup
    if names is None or compiled.insert_prefetch or compiled.update_prefetch or compiled.literal_execute_params:
        return None
    binds = [compiled.binds[name] for name in names]
    if any(b.expanding or b.callable is not None or b.literal_execute for b in binds):
        return None
    if not many and any(b.required and name not in keys for name, b in zip(names, binds, strict=True)):
        return None  # let SQLAlchemy name the missing parameter
    parameters = [
        (
            name if name in keys else None,
            bind.type.dialect_impl(dialect).bind_processor(dialect),
            _is_timestamp(bind.type),
            bind.effective_value,
        )
        for name, bind in zip(names, binds, strict=True)
    ]
    columns = compiled._result_columns  # (key, name, objects, type) of each result column, in order
    row = collections.namedtuple("Row", [c[0] for c in columns], rename=True) if columns else None
    processors = [c[3].dialect_impl(dialect).result_processor(dialect, None) for c in columns]
    return _Plan(compiled.string, parameters, processors, row)


def _driver(sync: sa.Connection) -> sqlite3.Connection:
    return sync.connection.driver_connection  # type: ignore[return-value]


class _as_sqlalchemy_error:
    """Raise errors as SQLAlchemy does: the driver's as its DBAPI error classes (``sqlite3.IntegrityError`` →
    ``sa.exc.IntegrityError`` …), a value's conversion error as ``StatementError``."""

    __slots__ = ("dialect", "sql")

    def __init__(self, sql: str, dialect: sa.Dialect) -> None:
        self.sql = sql
        self.dialect = dialect

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: BaseException | None, _traceback: Any) -> None:
        if isinstance(error, sqlite3.Error):
            raise sa.exc.DBAPIError.instance(self.sql, None, error, sqlite3.Error, dialect=self.dialect) from error
        if isinstance(error, Exception) and not isinstance(error, sa.exc.SQLAlchemyError):
            raise sa.exc.StatementError(str(error), self.sql, None, error) from error


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
        # by fold too: the two readings of a repeated wall time (a clock set back) are equal but an hour apart
        key = (value, value.fold) if value is not None else None
        try:
            return memo[key]
        except KeyError:
            memo[key] = converted = convert(value)
            return converted

    return once
