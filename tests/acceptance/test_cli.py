"""The ``clarion`` command line, run as a user would, against a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clarion import bootstrap, cli
from clarion.settings import Settings

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CLARION_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("CLARION_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("CLARION_OUTBOX_DIR", str(tmp_path / "var" / "outbox"))
    monkeypatch.setenv("CLARION_SECRET_KEY", "cli-secret")
    result = runner.invoke(cli.app, ["migrate"])
    assert result.exit_code == 0, result.output
    return Settings()


async def _setup(settings: Settings) -> None:
    services = bootstrap.build(settings)
    try:

        async def job(conn):  # type: ignore[no-untyped-def]
            from datetime import UTC, datetime

            from clarion.store import tables as t

            now = datetime.now(UTC)
            await conn.execute(
                t.users.insert().values(
                    user_id="u1",
                    attributes={"name": "Li"},
                    tags=[],
                    addresses={"sms": "+8613800138000"},
                    created_at=now,
                    updated_at=now,
                )
            )
            await conn.execute(
                t.templates.insert().values(
                    key="hello",
                    name="Hello",
                    category="notification",
                    priority="normal",
                    channels={"sms": {"text": "Hello {name}, {data.what}"}},
                    version=1,
                    created_at=now,
                    updated_at=now,
                )
            )

        await services.db.write(job)
    finally:
        await services.close()


def test_apikey_create_prints_a_key_that_verifies(env: Settings) -> None:
    import asyncio

    result = runner.invoke(cli.app, ["apikey", "create", "ops"])
    assert result.exit_code == 0, result.output
    key = result.output.strip()
    assert key.startswith("clk_") and len(key) > 40

    async def verify() -> tuple[object, object]:
        services = bootstrap.build(env)
        try:
            return await services.keys.verify(key), await services.keys.verify(key + "x")
        finally:
            await services.close()

    good, bad = asyncio.run(verify())
    assert good is not None and good.name == "ops"
    assert bad is None


def test_send_queues_messages_and_reports_unknown_users(env: Settings) -> None:
    import asyncio

    asyncio.run(_setup(env))
    result = runner.invoke(cli.app, ["send", "hello", "u1", "ghost", "--data", '{"what": "welcome"}'])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    statuses = {m["user_id"]: m["status"] for m in answer["messages"]}
    assert statuses == {"u1": "queued", "ghost": "failed"}


def test_send_refuses_bad_data_and_unknown_template(env: Settings) -> None:
    bad = runner.invoke(cli.app, ["send", "hello", "u1", "--data", "[1, 2]"])
    assert bad.exit_code == 2
    missing = runner.invoke(cli.app, ["send", "nope", "u1"])
    assert missing.exit_code == 2
    assert "not found" in missing.output
