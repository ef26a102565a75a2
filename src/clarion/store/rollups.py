"""The timeline and the funnel rollups it feeds, written together.

Every status change goes on the timeline (``delivery_events``) through ``append``, which counts the funnel
stages the events stand for (``analytics.funnel.stage_of``) into ``funnel_hourly`` and ``funnel_daily`` in the
same transaction: the rollups are exactly as durable as the timeline, a crash loses both or neither, and
``rebuild`` recomputes them from the timeline alone (``clarion analytics rebuild``).

A stage counts once per delivery (once per message for ``requested``): the first event that reaches it. Stages a
delivery can reach twice (``funnel.REPEATABLE``: deferred again at dispatch, a second link clicked) are looked up
among the delivery's earlier events, one query per batch; new deliveries (``fresh``) skip the look-up.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from clarion.analytics import funnel
from clarion.store import tables as t
from clarion.store.driver import Conn, ListStatement, executemany, fetch, insert_of

CHUNK = 5000
"""Ids per ``IN (…)`` look-up."""

_E, _D, _M, _T = t.delivery_events, t.deliveries, t.messages, t.templates
_KEY = ("bucket", *t.FUNNEL_DIMS, "stage", "policy")
_NARROW_KEY = ("bucket", *t.FUNNEL_NARROW_DIMS, "stage", "policy")
#: each wide rollup's narrow counterpart, which answers what groups and filters by channel and provider alone
NARROW = {t.funnel_hourly: t.funnel_hourly_channels, t.funnel_daily: t.funnel_daily_channels}
TABLES = (*NARROW, *NARROW.values())
#: where each narrow key's parts sit in a wide key
_NARROW_AT = tuple(_KEY.index(k) for k in _NARROW_KEY)
#: the statuses of each repeatable stage
_STATUSES = {stage: [s for s, g in funnel.STAGE_OF_STATUS.items() if g == stage] for stage in funnel.REPEATABLE}

Row = Mapping[str, Any]
Key = tuple[Any, ...]


async def append(
    conn: Conn,
    events: Sequence[dict[str, Any]],
    *,
    messages: Iterable[Row] = (),
    deliveries: Iterable[Row] = (),
    fresh: bool = False,
) -> None:
    """Put ``events`` on the timeline and count them into the rollups, in the caller's transaction.

    ``messages`` and ``deliveries`` are rows already at hand (a batch being written): what they hold is not read
    back. ``fresh``: every delivery named is new in this transaction, so none has earlier events."""
    if not events:
        return
    staged = _staged(events)
    if staged and not fresh:
        staged = await _first_times(conn, staged)
    await executemany(conn, insert_of(_E), list(events))
    if staged:
        await _count(conn, await _dims(conn, staged, messages, deliveries), staged)


def _staged(events: Iterable[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], str, str]]:
    """The events that are a funnel stage, each with its stage and policy; a stage a delivery reaches twice in
    the same batch counted at its first."""
    staged, seen = [], set()
    for event in events:
        found = funnel.stage_of(event)
        if found is None:
            continue
        stage, policy = found
        if stage in funnel.REPEATABLE:
            mark = (event["delivery_id"], stage)
            if mark in seen:
                continue
            seen.add(mark)
        staged.append((event, stage, policy))
        staged.extend((event, implied, "") for implied in funnel.implied_stages(event))
    return staged


# the repeatable stages' earlier events of the deliveries ``ids``
_REACHED = ListStatement(
    lambda in_list: sa.select(_E.c.delivery_id, _E.c.status).where(
        in_list(_E.c.delivery_id, "ids"), _E.c.status.in_(sorted({s for v in _STATUSES.values() for s in v}))
    )
)
_MESSAGE_COLUMNS = (
    _M.c.template_key,
    _M.c.template_version,
    _M.c.variant,
    _M.c.campaign_key,
    _M.c.campaign_run,
    _M.c.category,
    _M.c.department,
)
# a delivery's dimensions and its message's, for the deliveries ``ids``
_DELIVERY_DIMS = ListStatement(
    lambda in_list: (
        sa.select(_D.c.id, _D.c.channel, _D.c.provider, _M.c.id.label("message_id"), *_MESSAGE_COLUMNS)
        .join(_M, _M.c.id == _D.c.message_id)
        .where(in_list(_D.c.id, "ids"))
    )
)
_MESSAGE_DIMS = ListStatement(lambda in_list: sa.select(_M.c.id, *_MESSAGE_COLUMNS).where(in_list(_M.c.id, "ids")))
# the current department of templates whose messages predate ``messages.department``
_DEPARTMENTS = ListStatement(lambda in_list: sa.select(_T.c.key, _T.c.department).where(in_list(_T.c.key, "ids")))

KNOWN_MESSAGES = 100_000
"""Messages whose dimensions this process keeps at hand (``_known``)."""

#: a message's part of a rollup key: template, version, variant, campaign, run, category, department
MessagePart = tuple[str, int, str, str, str, str, str]
_NO_MESSAGE: MessagePart = ("", 0, "", "", "", "", "")


class _Known:
    """The funnel dimensions of the messages this process wrote or looked up lately, so the events that follow
    (a batch's ``sent``, a receipt) need no look-up. A message's dimensions never change once it is written, so
    what is kept is never stale; the oldest are dropped beyond ``KNOWN_MESSAGES``, and a message not kept (one
    another process wrote, or an old one) is read from the database as before. Messages that predate
    ``messages.department`` (filed under their template's current department) are not kept."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: dict[str, MessagePart] = {}

    def keep(self, message_id: str, part: MessagePart) -> None:
        parts = self.parts
        if message_id not in parts:
            if len(parts) >= KNOWN_MESSAGES:
                del parts[next(iter(parts))]
            parts[message_id] = part


_known = _Known()


async def _first_times(
    conn: Conn, staged: list[tuple[Mapping[str, Any], str, str]]
) -> list[tuple[Mapping[str, Any], str, str]]:
    """``staged`` without the repeatable stages its deliveries already reached in earlier events."""
    asked = {e["delivery_id"] for e, stage, _ in staged if stage in funnel.REPEATABLE}
    if not asked:
        return staged
    reached: set[tuple[str, str]] = set()
    for chunk in _chunks(asked):
        for row in await fetch(conn, _REACHED.on(conn), {"ids": chunk}):
            reached.add((row.delivery_id, funnel.STAGE_OF_STATUS[row.status]))
    return [s for s in staged if s[1] not in funnel.REPEATABLE or (s[0]["delivery_id"], s[1]) not in reached]


async def _dims(
    conn: Conn,
    staged: list[tuple[Mapping[str, Any], str, str]],
    messages: Iterable[Row],
    deliveries: Iterable[Row],
) -> dict[str, Key]:
    """The dimensions (``t.FUNNEL_DIMS``, in order) of each event's delivery (or message), by the id the event
    names first: from the rows at hand and the messages this process knows, else one query for the deliveries
    (with their messages) and one for messages named alone."""
    by_delivery: dict[str, Row] = {d["id"]: d for d in deliveries}
    rows: dict[str, Row] = {m["id"]: m for m in messages}
    known = _known.parts
    missing_d = {e["delivery_id"] for e, _, _ in staged if e["delivery_id"] and e["delivery_id"] not in by_delivery}
    for chunk in _chunks(missing_d):
        for row in await fetch(conn, _DELIVERY_DIMS.on(conn), {"ids": chunk}):
            by_delivery[row.id] = row._asdict()
            rows.setdefault(row.message_id, row._asdict())
    # membership tests, not ``- known.keys()``: a set minus a keys view walks the whole view
    missing_m = {m for e, _, _ in staged if (m := e["message_id"]) not in rows and m not in known}
    for chunk in _chunks(missing_m):
        rows.update((row.id, row._asdict()) for row in await fetch(conn, _MESSAGE_DIMS.on(conn), {"ids": chunk}))
    older = {m["template_key"] for m in rows.values() if m.get("department", "") is None}
    departments = await _departments(conn, older) if older else {}
    parts: dict[str, MessagePart] = {}
    for message_id, message in rows.items():
        parts[message_id] = part = _part_of(message, departments)
        if message.get("department", "") is not None:
            _known.keep(message_id, part)
    out: dict[str, Key] = {}
    for event, _, _ in staged:
        delivery_id, message_id = event["delivery_id"], event["message_id"]
        ident = delivery_id or message_id
        if ident in out:
            continue
        part = parts.get(message_id) or known.get(message_id) or _NO_MESSAGE
        delivery = by_delivery.get(delivery_id) if delivery_id else None
        if delivery is None:
            out[ident] = (*part, "", "")
        else:
            out[ident] = (*part, delivery.get("channel") or "", delivery.get("provider") or "")
    return out


def _part_of(message: Row, departments: Mapping[str, str]) -> MessagePart:
    key = message["template_key"]
    department = message.get("department")
    return (
        key,
        message["template_version"] or 0,
        message.get("variant") or "",
        message.get("campaign_key") or "",
        message.get("campaign_run") or "",
        message.get("category") or "",
        departments.get(key, "") if department is None else department,
    )


async def _departments(conn: Conn, keys: set[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for chunk in _chunks(keys):
        out.update((r.key, r.department or "") for r in await fetch(conn, _DEPARTMENTS.on(conn), {"ids": chunk}))
    return out


def _chunks(ids: set[str]) -> Iterable[list[str]]:
    ordered = sorted(ids)
    for i in range(0, len(ordered), CHUNK):
        yield ordered[i : i + CHUNK]


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _day(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


async def _count(conn: Conn, dims: Mapping[str, Key], staged: Iterable[tuple[Mapping[str, Any], str, str]]) -> None:
    """Add the staged events to both rollups: one upsert per distinct key, not per event."""
    hourly: dict[Key, list[float]] = defaultdict(lambda: [0, 0.0])
    for event, stage, policy in staged:
        cell = hourly[(_hour(event["at"]), *dims[event["delivery_id"] or event["message_id"]], stage, policy)]
        cell[0] += 1
        cell[1] += funnel.amount_of(event)
    await add_hourly(conn, hourly)


def _summed(cells: Mapping[Key, list[float]], key: Callable[[Key], Key]) -> dict[Key, list[float]]:
    out: dict[Key, list[float]] = defaultdict(lambda: [0, 0.0])
    for k, (n, revenue) in cells.items():
        cell = out[key(k)]
        cell[0] += n
        cell[1] += revenue
    return out


async def add_hourly(conn: Conn, hourly: Mapping[Key, list[float]]) -> None:
    """Add hourly cells (wide keys) to every rollup: the hourly one, the daily cells they add up to, and both
    narrow counterparts."""
    daily = _summed(hourly, lambda k: (_day(k[0]), *k[1:]))
    for table, cells in ((t.funnel_hourly, hourly), (t.funnel_daily, daily)):
        await add(conn, table, cells)
        await _add(conn, NARROW[table], _summed(cells, lambda k: tuple(k[i] for i in _NARROW_AT)), _NARROW_KEY)


@functools.cache
def _upsert_of(dialect: str, table: sa.Table) -> Any:
    """The rollup's upsert for ``dialect``, built once, so its compiled form is reused."""
    statement = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(table)
    return statement.on_conflict_do_update(
        index_elements=[table.c[k] for k in (_NARROW_KEY if table in NARROW.values() else _KEY)],
        set_={
            "count": table.c["count"] + statement.excluded["count"],
            "revenue": table.c.revenue + statement.excluded.revenue,
        },
    )


async def add(conn: Conn, table: sa.Table, cells: Mapping[Key, list[float]]) -> None:
    """Add counts (and revenue) to a wide rollup's cells, creating the cells that do not exist (``add_hourly``
    keeps the other rollups with it)."""
    await _add(conn, table, cells, _KEY)


async def _add(conn: Conn, table: sa.Table, cells: Mapping[Key, list[float]], names: tuple[str, ...]) -> None:
    # one order for every writer's upserts, so two transactions never lock the same cells the other way round
    rows = [
        {**dict(zip(names, key, strict=True)), "count": int(n), "revenue": r} for key, (n, r) in sorted(cells.items())
    ]
    if rows:
        await executemany(conn, _upsert_of(conn.dialect.name, table), rows)


# -- reading -----------------------------------------------------------------------------------------------------


async def rebuild(conn: Conn, *, batch: int = 20_000) -> int:
    """Recompute both rollups from the timeline: each delivery's (each message's, for ``requested``) first
    event of each stage, counted as ``append`` counts it. Returns how many events were counted."""
    for table in TABLES:
        await conn.execute(table.delete())
    statuses = sorted({*funnel.STAGE_OF_STATUS, "accepted"})
    # a delivery's first event of each status: none earlier on its timeline (on the delivery_id index), so each
    # page costs its own rows, not a pass over the whole timeline; a message's own events come once each
    prior = _E.alias("prior")
    earlier = (
        sa.select(prior.c.id)
        .where(prior.c.delivery_id == _E.c.delivery_id, prior.c.status == _E.c.status, prior.c.id < _E.c.id)
        .exists()
    )
    first = sa.or_(_E.c.delivery_id.is_(None), ~earlier)
    counted, after = 0, 0
    while True:
        query = (
            sa.select(_E.c.id, _E.c.delivery_id, _E.c.message_id, _E.c.status, _E.c.detail, _E.c.at)
            .where(_E.c.status.in_(statuses), _E.c.id > after, first)
            .order_by(_E.c.id)
            .limit(batch)
        )
        rows = [dict(r._mapping) for r in await fetch(conn, query)]
        if not rows:
            return counted
        after = rows[-1]["id"]
        staged = _staged(rows)
        if staged:
            await _count(conn, await _dims(conn, staged, (), ()), staged)
        counted += len(staged)


async def cells(
    conn: Conn,
    *,
    table: sa.Table,
    since: datetime | None,
    until: datetime | None,
    filters: Mapping[str, Any],
    group_by: Sequence[str],
) -> list[Any]:
    """The rollup's sums per group and stage (and policy) over ``[since, until)``; read from its narrow
    counterpart when nothing but channel and provider is grouped or filtered by."""
    columns = {funnel.GROUPS[g] for g in group_by if g not in ("day", "hour")} | set(filters)
    if table in NARROW and columns <= set(t.FUNNEL_NARROW_DIMS):
        table = NARROW[table]
    groups = [table.c[funnel.GROUPS[g]].label(g) for g in group_by]
    query = sa.select(
        *groups,
        table.c.stage,
        table.c.policy,
        sa.func.sum(table.c["count"]).label("n"),
        sa.func.sum(table.c.revenue).label("revenue"),
    )
    if since is not None:
        query = query.where(table.c.bucket >= since)
    if until is not None:
        query = query.where(table.c.bucket < until)
    for column, value in filters.items():
        query = query.where(table.c[column] == value)
    query = query.group_by(*groups, table.c.stage, table.c.policy)
    return list(await fetch(conn, query))


def floor_hour(at: datetime) -> datetime:
    return _hour(at)


def floor_day(at: datetime) -> datetime:
    return _day(at)
