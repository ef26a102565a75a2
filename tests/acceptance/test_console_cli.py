"""``clarion operator …``: create (password prompted or from stdin), list and disable console operators; and the
first start's ``admin`` with a random password, shown once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clarion import bootstrap, cli, cli_operators
from clarion.console import operators
from clarion.settings import Settings

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CLARION_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("CLARION_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("CLARION_SECRET_KEY", "cli-secret")
    assert runner.invoke(cli.app, ["migrate"]).exit_code == 0
    return Settings()


def _authenticate(settings: Settings, name: str, password: str) -> operators.Operator | None:
    async def check() -> operators.Operator | None:
        services = bootstrap.build(settings)
        try:
            return await operators.Operators(services.db).authenticate(name, password)
        finally:
            await services.close()

    return asyncio.run(check())


def test_create_list_and_disable_an_operator(env: Settings) -> None:
    made = runner.invoke(
        cli.app, ["operator", "create", "sue", "--role", "support", "--password-stdin"], input="a long password\n"
    )
    assert made.exit_code == 0, made.output
    prompted = runner.invoke(cli.app, ["operator", "create", "ed", "--role", "editor"], input="pw-0123456789\n" * 2)
    assert prompted.exit_code == 0, prompted.output
    listed = [json.loads(line) for line in runner.invoke(cli.app, ["operator", "list"]).stdout.splitlines()]
    assert [(o["name"], o["role"], o["disabled"]) for o in listed] == [
        ("ed", "editor", False),
        ("sue", "support", False),
    ]
    assert _authenticate(env, "sue", "a long password") is not None

    assert runner.invoke(cli.app, ["operator", "disable", "sue"]).exit_code == 0
    assert _authenticate(env, "sue", "a long password") is None
    assert runner.invoke(cli.app, ["operator", "disable", "nobody"]).exit_code == 1


def test_bad_input_is_refused_naming_what(env: Settings) -> None:
    role = runner.invoke(
        cli.app, ["operator", "create", "x", "--role", "root", "--password-stdin"], input="pw-0123456789\n"
    )
    assert role.exit_code == 2 and "--role" in role.output
    short = runner.invoke(cli.app, ["operator", "create", "x", "--role", "admin", "--password-stdin"], input="short\n")
    assert short.exit_code == 2 and "password" in short.output
    runner.invoke(cli.app, ["operator", "create", "x", "--role", "admin", "--password-stdin"], input="pw-0123456789\n")
    again = runner.invoke(
        cli.app, ["operator", "create", "x", "--role", "admin", "--password-stdin"], input="pw-0123456789\n"
    )
    assert again.exit_code == 2 and "exists" in again.output


def test_the_first_start_makes_an_admin_and_shows_its_password_once(
    env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_operators.announce_first_admin(env)
    first = capsys.readouterr().err
    password = first.split("the password ")[1].split(" ")[0]
    assert _authenticate(env, "admin", password) is not None
    cli_operators.announce_first_admin(env)
    assert password not in capsys.readouterr().err
