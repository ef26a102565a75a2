"""SQLite inserts handed straight to the driver store exactly what SQLAlchemy's own insert stores."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from clarion.store import driver
from clarion.store import tables as t
from clarion.store.db import Database, InlineConnection, Inserts

NOW = datetime(2026, 3, 8, 1, 59, 59, 123456, tzinfo=UTC)


def sample_rows() -> dict[sa.Table, list[dict[str, Any]]]:
    shanghai = NOW.astimezone(ZoneInfo("Asia/Shanghai"))
    return {
        t.messages: [
            {
                "id": "m1",
                "request_id": "r1",
                "user_id": "u1",
                "template_key": "spring",
                "template_version": 3,
                "category": "marketing",
                "priority": "normal",
                "status": "accepted",
                "reason": None,
                "data": {"city": "杭州", "items": [1, 2.5, None], "nested": {"ok": True}},
                "variant": None,
                "campaign_key": None,
                "campaign_run": None,
                "created_at": NOW,
                "updated_at": NOW,
            }
        ],
        t.deliveries: [
            {
                "id": f"d{i}",
                "message_id": "m1",
                "user_id": "u1",
                "channel": "sms",
                "provider": None if i == 0 else "file",
                "address": "+8613800138000" if i == 0 else ["tok-a", "tok-b"],
                "content": None if i == 0 else {"text": "【Clarion】hi"},
                "status": "queued",
                "lane": 2,
                "run_at": (NOW, shanghai, NOW.replace(microsecond=0) + timedelta(days=1))[i],
                "attempts": 0,
                "segments": None if i == 0 else 1,
                "created_at": NOW,
                "updated_at": NOW,
            }
            for i in range(3)
        ],
        t.delivery_events: [
            {"message_id": "m1", "delivery_id": None, "status": "accepted", "reason": "api", "detail": None, "at": NOW},
            {
                "message_id": "m1",
                "delivery_id": "d1",
                "status": "queued",
                "reason": None,
                "detail": {"p": 1},
                "at": NOW,
            },
        ],
    }


def stored(path: Path, tables: list[sa.Table]) -> dict[str, list[tuple[Any, ...]]]:
    raw = sqlite3.connect(path)
    try:
        return {table.name: raw.execute(f'SELECT * FROM "{table.name}" ORDER BY 1').fetchall() for table in tables}
    finally:
        raw.close()


async def written(path: Path, *jobs: Any) -> Path:
    """A new SQLite database at ``path`` with Clarion's schema, after ``jobs`` ran as writes, in order."""
    engine = sa.create_engine(f"sqlite:///{path}")
    t.metadata.create_all(engine)
    engine.dispose()
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        for job in jobs:
            await db.write(job)
    finally:
        await db.close()
    return path


async def test_driver_inserts_store_the_same_bytes_as_sqlalchemy(tmp_path) -> None:
    rows = sample_rows()

    async def through_sqlalchemy(conn: Any) -> None:
        for table, table_rows in rows.items():
            await conn.execute(table.insert(), table_rows)

    by_sqlalchemy = await written(tmp_path / "sqlalchemy.db", through_sqlalchemy)
    by_driver = await written(tmp_path / "driver.db", Inserts(rows))
    assert stored(by_driver, list(rows)) == stored(by_sqlalchemy, list(rows))
    assert stored(by_driver, [t.deliveries])["deliveries"][1][9] == "2026-03-08 01:59:59.123456"  # UTC


async def test_a_naive_timestamp_is_still_refused(tmp_path) -> None:
    rows = sample_rows()
    rows[t.messages][0]["created_at"] = NOW.replace(tzinfo=None)
    with pytest.raises(Exception, match="naive datetime"):
        await written(tmp_path / "c.db", Inserts({t.messages: rows[t.messages]}))


def test_a_table_with_a_python_default_left_out_goes_through_sqlalchemy(tmp_path) -> None:
    metadata = sa.MetaData()
    table = sa.Table(
        "with_default", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("v", sa.String, default="x")
    )
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'd.db'}")
    metadata.create_all(engine)
    with engine.begin() as conn:
        assert driver._plan(conn.dialect, table.insert(), ("id",), True) is None
        assert driver._plan(conn.dialect, table.insert(), ("id", "v"), True) is not None

        async def insert() -> None:
            await Inserts({table: [{"id": 1}]})(InlineConnection(conn))

        coro = insert()
        with pytest.raises(StopIteration):
            coro.send(None)
        assert conn.execute(sa.select(table.c.v)).scalar_one() == "x"
    engine.dispose()


async def test_driver_updates_store_the_same_bytes_as_sqlalchemy(tmp_path) -> None:
    """Many-row UPDATEs with parameters of several types and a value bound in the statement itself."""
    d = t.deliveries
    statement = (
        d.update()
        .where(d.c.id == sa.bindparam("b_id"), d.c.status == "queued")
        .values(
            status=sa.bindparam("b_status"),
            content=sa.bindparam("b_content", type_=t.JSON),
            run_at=sa.func.coalesce(sa.bindparam("b_run_at", type_=t.UTCDateTime()), d.c.run_at),
            updated_at=NOW + timedelta(minutes=5),
        )
    )
    later = NOW.astimezone(ZoneInfo("America/New_York")) + timedelta(hours=1)
    changes = [
        {"b_id": "d0", "b_status": "sent", "b_content": {"text": "新"}, "b_run_at": None},
        {"b_id": "d1", "b_status": "failed", "b_content": None, "b_run_at": later},
    ]
    by_sqlalchemy = await written(
        tmp_path / "u-sqlalchemy.db", Inserts(sample_rows()), lambda conn: conn.execute(statement, changes)
    )
    by_driver = await written(
        tmp_path / "u-driver.db", Inserts(sample_rows()), lambda conn: driver.executemany(conn, statement, changes)
    )
    after = stored(by_driver, [t.deliveries])
    assert after == stored(by_sqlalchemy, [t.deliveries])
    assert [row[7] for row in after["deliveries"]] == ["sent", "failed", "queued"]
