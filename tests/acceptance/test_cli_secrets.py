"""``clarion secrets rotate``: every provider account re-sealed under the new secret key in one transaction, run
as an operator would against a real SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from clarion import cli, sealing
from clarion.channels import registry
from clarion.store import tables as t
from clarion.store.db import Database

runner = CliRunner()
OLD, NEW = "the-old-secret-key", "the-new-secret-key"
SMTP = {"host": "smtp.example.com", "port": 25, "password": "s3cret-rotate-1a2b", "sender": "no@x.io"}
VENDOR = {"url": "https://sms.example.com/send?api_key=key-rotate-3c4d", "headers": {"X-Api-Key": "hdr-rotate-5e6f"}}
SECRETS = (b"s3cret-rotate-1a2b", b"key-rotate-3c4d", b"hdr-rotate-5e6f")


@pytest.fixture
def db_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "rotate.db"
    monkeypatch.setenv("CLARION_DATABASE_URL", f"sqlite+aiosqlite:///{path}")
    monkeypatch.setenv("CLARION_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("CLARION_SECRET_KEY", NEW)
    monkeypatch.delenv("CLARION_OLD_SECRET_KEY", raising=False)
    assert runner.invoke(cli.app, ["migrate"]).exit_code == 0
    return path


def url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def _write(path: Path, rows: dict[str, tuple[str, dict[str, Any]]]) -> None:
    db = Database(url(path))
    now = datetime.now(UTC)

    async def job(conn: Any) -> None:
        for name, (kind, config) in rows.items():
            channel = "email" if kind == "smtp" else "sms"
            await conn.execute(
                t.providers.insert().values(
                    name=name, channel=channel, kind=kind, config=config, enabled=True, created_at=now, updated_at=now
                )
            )

    try:
        await db.write(job)
    finally:
        await db.close()


async def _read(path: Path) -> dict[str, dict[str, Any]]:
    db = Database(url(path))
    try:
        async with db.read() as conn:
            return {r.name: r.config for r in (await conn.execute(sa.select(t.providers))).all()}
    finally:
        await db.close()


def _wal(path: Path) -> bytes:
    wal = Path(f"{path}-wal")
    return wal.read_bytes() if wal.exists() else b""


def stored(path: Path) -> dict[str, dict[str, Any]]:
    return asyncio.run(_read(path))


def test_rotate_reseals_every_account_under_the_new_key(db_file: Path, tmp_path: Path) -> None:
    old = sealing.Sealer(OLD)
    rows = {
        "mail": ("smtp", registry.seal("mail", "smtp", SMTP, old)),
        "vendor": ("sms_http", VENDOR),  # stored before sealing existed: in clear
    }
    gone = {**VENDOR, "body": {"pad": "x" * 200_000, "key": "s3cret-deleted-7a8b"}}  # spills onto pages of its own
    asyncio.run(_write(db_file, {**rows, "gone": ("sms_http", gone)}))
    # an account deleted before sealing existed, by a SQLite built without secure_delete: its bytes stay behind
    with contextlib.closing(sqlite3.connect(db_file)) as conn:
        conn.execute("PRAGMA secure_delete = OFF")
        conn.execute("DELETE FROM providers WHERE name = 'gone'")
        conn.commit()
    assert b"s3cret-deleted-7a8b" in db_file.read_bytes() + _wal(db_file)
    (tmp_path / "old_key").write_text(OLD + "\n")

    result = runner.invoke(cli.app, ["secrets", "rotate", "--old-key-file", str(tmp_path / "old_key")])
    assert result.exit_code == 0, result.output
    assert "1 re-sealed, 1 sealed" in result.output

    new = sealing.Sealer(NEW)
    after = stored(db_file)
    assert registry.unseal("mail", after["mail"], new) == SMTP
    assert registry.unseal("vendor", after["vendor"], new) == VENDOR
    with pytest.raises(sealing.Unreadable):
        registry.unseal("mail", after["mail"], old)
    left = db_file.read_bytes() + _wal(db_file)  # the file is compacted: nothing in clear is left on free pages
    assert [s for s in (*SECRETS, b"s3cret-deleted-7a8b") if s in left] == []

    again = runner.invoke(cli.app, ["secrets", "rotate", "--old-key-file", str(tmp_path / "old_key")])
    assert again.exit_code == 0 and "0 re-sealed, 0 sealed (were in clear), 2 already" in again.output
    assert stored(db_file) == after


def test_an_account_neither_key_opens_stops_the_rotation_with_nothing_changed(db_file: Path, tmp_path: Path) -> None:
    rows = {
        "a-mail": ("smtp", registry.seal("a-mail", "smtp", SMTP, sealing.Sealer(OLD))),
        "b-mail": ("smtp", registry.seal("b-mail", "smtp", SMTP, sealing.Sealer("a-third-key"))),
    }
    asyncio.run(_write(db_file, rows))
    before = stored(db_file)
    (tmp_path / "old_key").write_text(OLD)

    result = runner.invoke(cli.app, ["secrets", "rotate", "--old-key-file", str(tmp_path / "old_key")])
    assert result.exit_code == 1
    assert "nothing was changed" in result.output and "'b-mail'" in result.output
    assert stored(db_file) == before


def test_the_old_key_file_must_be_readable(db_file: Path, tmp_path: Path) -> None:
    missing = runner.invoke(cli.app, ["secrets", "rotate", "--old-key-file", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "--old-key-file" in missing.output
