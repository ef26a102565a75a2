"""SQLite's fast path (store/driver.py) answers as SQLAlchemy does — rows, errors, fallbacks, timestamps — and
``Database.read`` reuses its SQLite connections without leaking one read's state into the next."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from clarion.store import driver, outbox, records
from clarion.store import tables as t
from clarion.store.db import Database, InlineConnection, Inserts, _sqlite_engine, fetch, insert_of
from tests.integration.test_db_inserts import NOW, sample_rows, stored, written

NEW_YORK = ZoneInfo("America/New_York")
SHANGHAI = ZoneInfo("Asia/Shanghai")
DIALECT = sqlite.dialect()
UTC_TYPE = t.UTCDateTime().dialect_impl(DIALECT)  # as SQLAlchemy and the driver path both resolve it
WRITE = UTC_TYPE.bind_processor(DIALECT)
READ = UTC_TYPE.result_processor(DIALECT, None)
SQLA_WRITE = sqlite.DATETIME().bind_processor(DIALECT)
SQLA_READ = sa.TypeDecorator.result_processor(UTC_TYPE, DIALECT, None)  # SQLAlchemy's parser + process_result_value
ALL_USERS = sa.select(t.users).order_by(t.users.c.user_id)


def user(user_id: str, **values: Any) -> dict[str, Any]:
    row = {"attributes": {}, "tags": [], "timezone": None, "locale": None, "addresses": {}, "preferences": None}
    return {"user_id": user_id, **row, "created_at": NOW, "updated_at": NOW, **values}


USERS = [
    user(
        "u1",
        attributes={"city": "杭州", "vip": True, "score": 2.5, "n": None},
        tags=["a", "b"],
        timezone="Asia/Shanghai",
        locale="zh-CN",
        addresses={"sms": "+8613800138000", "push": ["t1", "t2"]},
        preferences={"channels": {"sms": False}},
        updated_at=NOW.astimezone(SHANGHAI) + timedelta(days=1),
    ),
    user("u2"),  # NULLs and empty JSON
    user("u3", tags=["x"], created_at=NOW.replace(microsecond=0), updated_at=datetime(1, 1, 1, tzinfo=UTC)),
    user("u4", attributes={"age": 30}, updated_at=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    user("u5", locale="en-US", updated_at=datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK, fold=1)),
]


async def fresh(path: Path, *rows: dict[sa.Table, list[dict[str, Any]]]) -> Database:
    """A Database on a new SQLite file with Clarion's schema and ``rows`` written."""
    await written(path)
    db = Database(f"sqlite+aiosqlite:///{path}")
    for batch in rows:
        await db.write(Inserts(batch))
    return db


def assert_same_rows(fast: Any, slow: Any) -> None:
    assert fast and type(fast[0]) is not sa.Row  # the driver's rows, not SQLAlchemy's
    assert repr([tuple(r) for r in fast]) == repr([tuple(r) for r in slow])  # values and their types
    for f, s in zip(fast, slow, strict=True):
        assert f._fields == s._fields
        assert all(repr(getattr(f, key)) == repr(getattr(s, key)) for key in s._fields)


async def user_ids(conn: Any) -> list[str]:
    return [row.user_id for row in await fetch(conn, ALL_USERS)]


async def test_fetch_selects_the_rows_sqlalchemy_selects(tmp_path) -> None:
    db = await fresh(tmp_path / "s.db", {t.users: USERS})
    since = sa.select(t.users).where(t.users.c.updated_at >= sa.bindparam("since")).order_by(t.users.c.user_id)
    try:
        async with db.read() as conn:
            for statement, params in [
                (ALL_USERS, {}),
                (records._USER_BY_ID, {"id": "u1"}),
                (since, {"since": NOW.astimezone(NEW_YORK)}),
            ]:
                assert driver._plan(conn.dialect, statement, tuple(params), False) is not None
                fast = await fetch(conn, statement, params)
                assert_same_rows(fast, (await conn.execute(statement, params)).all())
            rows = {row.user_id: row for row in await fetch(conn, ALL_USERS)}
    finally:
        await db.close()
    assert rows["u1"].attributes == {"city": "杭州", "vip": True, "score": 2.5, "n": None}
    assert rows["u2"].preferences is None and rows["u2"].timezone is None and rows["u2"].tags == []
    assert rows["u1"].updated_at == NOW + timedelta(days=1) and rows["u1"].updated_at.tzinfo is UTC
    assert rows["u3"].updated_at == datetime(1, 1, 1, tzinfo=UTC)
    assert rows["u5"].updated_at == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    assert [r.user_id for r in fast] == ["u1", "u2", "u4", "u5"]  # since NOW (in New York time)


async def test_claim_returns_and_changes_what_sqlalchemy_does(tmp_path) -> None:
    deliveries = sample_rows()[t.deliveries]  # d0, d1 due at NOW, d2 a day later; lane 2
    base = deliveries[0]
    deliveries[1]["run_at"] = (NOW - timedelta(minutes=1)).astimezone(SHANGHAI)  # ahead of d0 in lane 2
    deliveries += [
        {**base, "id": "d3", "lane": 0, "status": "deferred", "run_at": NOW - timedelta(hours=1)},
        {**base, "id": "d4", "lane": 1, "status": "sent", "run_at": NOW - timedelta(hours=1)},
        {**base, "id": "d5", "lane": 1, "attempts": 2, "content": {"text": "新"}, "run_at": NOW},
    ]
    params = {"owner": "w1", "now": NOW.astimezone(SHANGHAI), "lease_until": NOW + timedelta(minutes=5), "limit": 3}
    claimed, paths = {}, {}
    for name in ("driver", "sqlalchemy"):

        async def claim(conn: Any, name: str = name) -> Any:
            if name == "driver":
                assert driver._plan(conn.dialect, outbox._CLAIM[True, False], tuple(params), False) is not None
                return await fetch(conn, outbox._CLAIM[True, False], params)
            return (await conn.execute(outbox._CLAIM[True, False], params)).all()

        paths[name] = tmp_path / f"{name}.db"
        db = await fresh(paths[name], {t.deliveries: deliveries})
        try:
            claimed[name] = sorted(await db.write(claim), key=lambda row: row.id)
        finally:
            await db.close()
    assert_same_rows(claimed["driver"], claimed["sqlalchemy"])
    assert [(r.id, r.attempts, r.lane) for r in claimed["driver"]] == [("d1", 1, 2), ("d3", 1, 0), ("d5", 3, 1)]
    after = stored(paths["driver"], [t.deliveries])
    assert after == stored(paths["sqlalchemy"], [t.deliveries])
    sending = [row for row in after["deliveries"] if row[7] == "sending"]
    assert [(row[0], row[10], row[11]) for row in sending] == [
        (i, "2026-03-08 02:04:59.123456", "w1") for i in ("d1", "d3", "d5")
    ]


@pytest.mark.parametrize("ids", [[], ["u3"], ["u1", "u3", "u5", "nobody"], [f"x{i}" for i in range(900)] + ["u2"]])
async def test_in_json_matches_exactly_the_listed_ids(tmp_path, ids: list[str]) -> None:
    db = await fresh(tmp_path / "j.db", {t.users: USERS})
    try:
        async with db.read() as conn:
            assert driver._plan(conn.dialect, records._USERS_BY_ID.json, ("ids",), False) is not None
            fast = sorted(await fetch(conn, records._USERS_BY_ID.json, {"ids": ids}))
            assert [row.user_id for row in fast] == sorted(set(ids) & {u["user_id"] for u in USERS})
            if ids:
                slow = (await conn.execute(records._USERS_BY_ID.expanding, {"ids": ids})).all()
                assert_same_rows(fast, sorted(slow))
    finally:
        await db.close()


async def test_a_constraint_violation_is_sqlalchemys_integrity_error_and_rolls_back(tmp_path) -> None:
    db = await fresh(tmp_path / "c.db", {t.users: USERS[:1]})
    insert = t.users.insert().returning(t.users.c.user_id)
    try:
        with pytest.raises(sa.exc.IntegrityError):  # the path the application takes
            await db.write(lambda conn: fetch(conn, insert, user("u1")))
        engine = _sqlite_engine(sa.make_url(db.url), immediate=True)  # the writer's engine: BEGIN IMMEDIATE
        sync = engine.connect()
        conn = InlineConnection(sync)
        assert driver._plan(sync.dialect, insert, tuple(user("u7")), False) is not None
        assert driver._plan(sync.dialect, insert_of(t.users), tuple(user("u8")), True) is not None
        transaction = sync.begin()
        assert [tuple(r) for r in await fetch(conn, insert, user("u7"))] == [("u7",)]
        with pytest.raises(sa.exc.IntegrityError) as duplicate:
            await fetch(conn, insert, user("u1"))
        assert isinstance(duplicate.value.orig, sqlite3.IntegrityError)
        with pytest.raises(sa.exc.IntegrityError) as twice:
            await driver.executemany(conn, insert_of(t.users), [user("u8"), user("u8")])
        assert isinstance(twice.value.orig, sqlite3.IntegrityError)
        with pytest.raises(sa.exc.IntegrityError):  # NOT NULL
            await driver.executemany(conn, insert_of(t.users), [user("u9", created_at=None)])
        transaction.rollback()
        with sync.begin():  # the connection goes on
            await fetch(conn, insert, user("u6"))
        engine.dispose()
        async with db.read() as reader:
            assert await user_ids(reader) == ["u1", "u6"]  # u7 and the first u8 were rolled back
    finally:
        await db.close()


async def test_statements_the_driver_cannot_take_go_through_sqlalchemy(tmp_path) -> None:
    db = await fresh(tmp_path / "f.db", {t.users: USERS})
    try:
        async with db.read() as conn:
            dialect = conn.dialect
            assert driver._plan(dialect, records._USERS_BY_ID.expanding, ("ids",), False) is None  # expanding IN
            assert driver._plan(dialect, records._USER_BY_ID, (), False) is None  # "id" missing
            assert driver._plan(dialect, records._USER_BY_ID, ("other",), False) is None
            assert driver._plan(dialect, records._USER_BY_ID, ("id",), False) is not None
            params = {"ids": ["u1", "u3", "nobody"]}
            fast = await fetch(conn, records._USERS_BY_ID.expanding, params)
            assert sorted(fast) == sorted((await conn.execute(records._USERS_BY_ID.expanding, params)).all())
            assert sorted(row.user_id for row in fast) == ["u1", "u3"]
            for missing in ({}, {"other": "u1"}):
                with pytest.raises(sa.exc.StatementError) as expected:
                    await conn.execute(records._USER_BY_ID, missing)
                with pytest.raises(type(expected.value)) as raised:
                    await fetch(conn, records._USER_BY_ID, missing)
                assert "A value is required for bind parameter 'id'" in str(raised.value)
                assert str(raised.value) == str(expected.value)
    finally:
        await db.close()


zones = st.one_of(
    st.just(UTC),
    st.sampled_from([NEW_YORK, SHANGHAI, ZoneInfo("Australia/Lord_Howe"), ZoneInfo("Pacific/Kiritimati")]),
    st.timezones(),
    st.builds(timezone, st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23))),
)


@settings(max_examples=500, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30, 23, 59), timezones=zones))
@example(datetime(1, 1, 1, tzinfo=UTC))
@example(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
@example(datetime(2026, 3, 8, 9, 59, 59, tzinfo=SHANGHAI))  # microsecond 0
@example(datetime(2026, 3, 8, 1, 59, 59, 999999, tzinfo=NEW_YORK))  # the last instant before DST
@example(datetime(2026, 3, 8, 2, 30, tzinfo=NEW_YORK))  # a wall time that does not exist
@example(datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK))  # the repeated hour, first time
@example(datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK, fold=1))  # and second
def test_utc_timestamps_are_written_as_sqlalchemy_writes_them_and_read_back(value: datetime) -> None:
    instant = value.astimezone(UTC)
    text = WRITE(value)
    assert text == SQLA_WRITE(instant.replace(tzinfo=None))
    back = READ(text)
    assert back == instant and back.tzinfo is UTC
    assert back == SQLA_READ(text)


def test_a_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^naive datetime given to a UTC column$"):
        WRITE(NOW.replace(tzinfo=None))
    assert WRITE(None) is None and READ(None) is None


def outcome(read: Any, text: str) -> Any:
    try:
        value = read(text)
    except Exception as error:  # the outcome compared is the error itself
        return type(error), str(error)
    return repr(value)


@pytest.mark.parametrize(
    "text",
    ["2026-3-8 1:59:59", "2026-03-08 01:59:59.5", "2026-03-08T01:59:59Z", "2026-03-08", "20260308", "", "soon"],
)
def test_any_stored_text_is_read_as_sqlalchemy_reads_it(text: str) -> None:
    assert outcome(READ, text) == outcome(SQLA_READ, text)


def test_text_with_an_offset_is_read_as_its_utc_instant() -> None:
    back = READ("2026-03-08 09:59:59+08:00")
    assert back == datetime(2026, 3, 8, 1, 59, 59, tzinfo=UTC) and back.tzinfo is UTC
    assert READ("2026-03-07 20:59:59.000001-05:00") == datetime(2026, 3, 8, 1, 59, 59, 1, tzinfo=UTC)


async def test_a_read_that_raised_leaves_its_connection_clean_for_the_next(tmp_path) -> None:
    db = await fresh(tmp_path / "r.db", {t.users: [user("u1")]})
    try:
        with pytest.raises(RuntimeError, match="boom"):
            async with db.read() as conn:
                first = conn.sync
                await conn.execute(sa.text("BEGIN"))  # a snapshot the driver holds until rolled back
                assert await user_ids(conn) == ["u1"]
                raise RuntimeError("boom")
        assert db._idle_readers == [first]
        await db.write(Inserts({t.users: [user("u2")]}))
        async with db.read() as conn:
            assert conn.sync is first
            assert await user_ids(conn) == ["u1", "u2"]
    finally:
        await db.close()


async def test_nested_and_concurrent_reads_keep_at_most_four_idle_connections(tmp_path) -> None:
    db = await fresh(tmp_path / "n.db", {t.users: [user("u1")]})
    opened, peak = 0, 0

    async def nested(depth: int) -> None:
        nonlocal opened, peak
        async with db.read() as conn:
            opened += 1
            peak = max(peak, opened)
            await asyncio.sleep(0)
            assert await user_ids(conn) == ["u1"]
            if depth:
                await nested(depth - 1)
            await asyncio.sleep(0)
            opened -= 1

    try:
        async with db.read() as outer, db.read() as inner:
            assert inner.sync is not outer.sync
            assert await user_ids(inner) == await user_ids(outer) == ["u1"]
        await asyncio.gather(*(nested(1) for _ in range(5)))  # the pool holds 12 at most
        assert peak == 10
        idle = list(db._idle_readers)
        assert len({id(sync) for sync in idle}) == 4 and not any(sync.closed for sync in idle)
        assert db._sqlite_reader.pool.checkedout() == 4  # the other six were closed
    finally:
        await db.close()
    assert db._idle_readers == [] and all(sync.closed for sync in idle)
    assert db._sqlite_reader.pool.checkedout() == 0


async def test_a_batch_keeps_the_fold_of_a_repeated_wall_time(tmp_path) -> None:
    first = datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK)
    rows = sample_rows()[t.deliveries][:2]
    rows[0]["run_at"], rows[1]["run_at"] = first, first.replace(fold=1)
    path = await written(tmp_path / "fold.db", Inserts({t.deliveries: rows}))
    run_at = [row[9] for row in stored(path, [t.deliveries])["deliveries"]]
    assert run_at == ["2026-11-01 05:30:00.000000", "2026-11-01 06:30:00.000000"]


@pytest.mark.parametrize("columns", [["ts"], ["n"], ["n", "s"], ["n", "ts", "doc"]])
def test_executemany_of_few_columns_stores_what_sqlalchemy_stores(tmp_path, columns: list[str]) -> None:
    """One column, columns that need no conversion, and a mix: each shape of row → driver arguments."""
    metadata = sa.MetaData()
    kinds = {"n": sa.Integer, "s": sa.String, "ts": t.UTCDateTime(), "doc": sa.JSON}
    table = sa.Table("few", metadata, *(sa.Column(c, kinds[c]) for c in columns))
    values = {"n": 7, "s": "七", "ts": NOW.astimezone(SHANGHAI), "doc": {"a": [1, None]}}
    rows = [{c: values[c] for c in columns}, {c: None for c in columns}]
    stored_by: dict[str, list[Any]] = {}
    for name, run in (("sqlalchemy", None), ("driver", driver.executemany)):
        engine = sa.create_engine(f"sqlite:///{tmp_path / name}.db")
        metadata.create_all(engine)
        with engine.begin() as conn:
            if run is None:
                conn.execute(table.insert(), rows)
            else:
                coro = run(InlineConnection(conn), insert_of(table), rows)
                with pytest.raises(StopIteration):
                    coro.send(None)
            stored_by[name] = conn.exec_driver_sql("SELECT * FROM few").fetchall()
        engine.dispose()
    assert stored_by["driver"] == stored_by["sqlalchemy"]
    assert len(stored_by["driver"]) == 2
