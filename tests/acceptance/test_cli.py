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


def _keys(env: Settings) -> dict[str, dict[str, object]]:
    listed = runner.invoke(cli.app, ["apikey", "list"])
    assert listed.exit_code == 0, listed.output
    return {k["name"]: k for k in map(json.loads, listed.output.splitlines())}


def _verify(env: Settings, key: str) -> object:
    import asyncio

    async def verify() -> object:
        services = bootstrap.build(env)
        try:
            return await services.keys.verify(key)
        finally:
            await services.close()

    return asyncio.run(verify())


def test_apikey_revoke_refuses_the_key_and_keeps_it_listed(env: Settings) -> None:
    key = runner.invoke(cli.app, ["apikey", "create", "ops"]).output.strip()
    assert _verify(env, key) is not None
    ops = _keys(env)["ops"]
    assert (ops["status"], ops["prefix"], ops["revoked_at"]) == ("active", key[:8], None)
    assert "key" not in ops and key not in json.dumps(ops)

    revoked = runner.invoke(cli.app, ["apikey", "revoke", str(ops["id"])])
    assert revoked.exit_code == 0, revoked.output
    assert "ops" in revoked.output and "revoked" in revoked.output
    assert _verify(env, key) is None
    assert _keys(env)["ops"]["status"] == "revoked"

    again = runner.invoke(cli.app, ["apikey", "revoke", str(ops["id"])])
    assert again.exit_code == 0 and "already revoked" in again.output
    unknown = runner.invoke(cli.app, ["apikey", "revoke", "no-such-key"])
    assert unknown.exit_code == 1 and "no-such-key" in unknown.output


def test_apikey_create_with_an_expiry(env: Settings) -> None:
    from datetime import UTC, datetime, timedelta

    before = datetime.now(UTC)
    made = runner.invoke(cli.app, ["apikey", "create", "temp", "--expires", "30d"])
    assert made.exit_code == 0, made.output
    expires = datetime.fromisoformat(str(_keys(env)["temp"]["expires_at"]))
    assert before + timedelta(days=30) <= expires <= datetime.now(UTC) + timedelta(days=30)
    assert _verify(env, made.output.strip()) is not None

    dated = runner.invoke(cli.app, ["apikey", "create", "dated", "--expires", "2999-06-01"])
    assert dated.exit_code == 0, dated.output
    assert _keys(env)["dated"]["expires_at"] == "2999-06-01T00:00:00+00:00"
    for bad in ("soon", "2001-01-01", "0d"):
        refused = runner.invoke(cli.app, ["apikey", "create", "bad", "--expires", bad])
        assert refused.exit_code != 0, bad
        assert "--expires" in refused.output
    assert "bad" not in _keys(env)


def test_apikey_changes_from_the_cli_are_audited(env: Settings) -> None:
    import asyncio

    from clarion.store import audit

    runner.invoke(cli.app, ["apikey", "create", "ops"])
    key_id = str(_keys(env)["ops"]["id"])
    assert runner.invoke(cli.app, ["apikey", "revoke", key_id]).exit_code == 0

    async def entries() -> list[tuple[str, str]]:
        services = bootstrap.build(env)
        try:
            async with services.db.read() as conn:
                rows = await audit.entries(conn, subject=f"api_key:{key_id}")
            return [(r.action, r.actor) for r in rows]
        finally:
            await services.close()

    found = asyncio.run(entries())
    assert [action for action, _ in found] == ["api_key.revoke", "api_key.create"]
    assert all(actor.startswith("cli") for _, actor in found)


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


def test_analytics_rebuild_recounts_the_funnel_from_the_timeline(env: Settings) -> None:
    import asyncio

    import sqlalchemy as sa

    from clarion.store import rollups
    from clarion.store import tables as t

    asyncio.run(_setup(env))
    assert runner.invoke(cli.app, ["send", "hello", "u1", "ghost", "--data", '{"what": "hi"}']).exit_code == 0

    async def cells(wipe: bool) -> list[tuple[str, int]]:
        services = bootstrap.build(env)
        try:
            if wipe:  # rollups lost (a restore from a dump without them): only the timeline is left

                async def job(conn):  # type: ignore[no-untyped-def]
                    for table in rollups.TABLES:
                        await conn.execute(table.delete())

                await services.db.write(job)
            async with services.db.read() as conn:
                query = sa.select(t.funnel_daily.c.stage, t.funnel_daily.c["count"]).order_by(t.funnel_daily.c.stage)
                return [(row.stage, row.count) for row in (await conn.execute(query)).all()]
        finally:
            await services.close()

    kept = asyncio.run(cells(wipe=False))
    assert kept == [("requested", 2)]  # u1's message and the unknown user's, which failed before any delivery
    assert asyncio.run(cells(wipe=True)) == []
    result = runner.invoke(cli.app, ["analytics", "rebuild"])
    assert result.exit_code == 0, result.output
    assert "rebuilt from 2 timeline events" in result.output
    assert asyncio.run(cells(wipe=False)) == kept
