"""On SQLite the WAL is folded into the database file in the background, not inside commits."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from clarion.store import tables as t
from clarion.store.db import Database, Inserts


async def test_commits_leave_the_wal_to_the_background_checkpoint(sqlite_template: Path, tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    path.write_bytes(sqlite_template.read_bytes())
    db = Database(f"sqlite+aiosqlite:///{path}")
    now = datetime.now(UTC)
    rows = [
        {
            "user_id": f"u{i}",
            "attributes": {"blob": "x" * 500},
            "tags": [],
            "addresses": {},
            "created_at": now,
            "updated_at": now,
        }
        for i in range(2000)
    ]
    try:
        await db.write(Inserts({t.users: rows}))
        size_after_commit = os.path.getsize(path)
        wal = Path(f"{path}-wal")
        assert wal.exists() and wal.stat().st_size > 1_000_000  # the commit went to the WAL only
        for _ in range(40):  # bounded: 4 s
            await asyncio.sleep(0.1)
            if os.path.getsize(path) > size_after_commit + 1_000_000:
                break
        assert os.path.getsize(path) > size_after_commit + 1_000_000  # copied into the database file
        async with db.read() as conn:
            count = (await conn.execute(sa.select(sa.func.count()).select_from(t.users))).scalar()
        assert count == 2000
    finally:
        await db.close()
