"""``clarion operator …``: the console's accounts (``console.operators``). Named ``operator`` rather than the
issue's ``user`` because ``clarion users`` already means the people Clarion notifies.

``clarion operator create NAME --role ROLE`` asks for the password twice (or reads one line with
``--password-stdin``); ``disable`` ends the operator's logins and sessions; ``list`` prints JSON lines."""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from clarion import bootstrap
from clarion.console import operators, roles
from clarion.domain import errors
from clarion.settings import Settings

app = typer.Typer(help="Console operators (accounts that log in at /console).", no_args_is_help=True)
console = Console(stderr=True)
T = TypeVar("T")


def _actor() -> str:
    """Who the audit log names for a change made from the command line: the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"[:128]
    except (OSError, KeyError):
        return "cli"


async def _on(settings: Settings, change: Callable[[operators.Operators], Awaitable[T]]) -> T:
    services = bootstrap.build(settings)
    try:
        return await change(operators.Operators(services.db))
    finally:
        await services.close()


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = typer.prompt("password", hide_input=True)
    if typer.prompt("again", hide_input=True) != first:
        raise typer.BadParameter("the two passwords differ", param_hint="password")
    return str(first)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="the login name")],
    role: Annotated[str, typer.Option(help=f"one of {', '.join(roles.ROLES)}")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")] = False,
) -> None:
    """Create an operator who can log in at /console."""
    if role not in roles.ROLES:
        raise typer.BadParameter(f"one of {', '.join(roles.ROLES)}", param_hint="--role")
    password = _password(password_stdin)
    try:
        made = asyncio.run(_on(Settings(), lambda ops: ops.create(name, role, password, actor=_actor())))
    except errors.InvalidInput as exc:
        console.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(2) from None
    console.print(f"operator {made.name} ({made.role}) created")


@app.command("disable")
def disable(name: Annotated[str, typer.Argument(help="the login name")]) -> None:
    """Refuse the operator's logins and end its sessions (the account stays, for the audit log)."""
    try:
        asyncio.run(_on(Settings(), lambda ops: ops.disable(name, actor=_actor())))
    except errors.NotFound:
        console.print(f"[red]no operator named {name!r}[/]")
        raise typer.Exit(1) from None
    console.print(f"operator {name} disabled")


@app.command("list")
def list_operators() -> None:
    """The operators as JSON lines: name, role, disabled, created_at, last_login_at (never a password)."""
    listed = asyncio.run(_on(Settings(), lambda ops: ops.listed()))
    for op in listed:
        last = op.last_login_at.isoformat() if op.last_login_at else None
        row = {"name": op.name, "role": op.role, "disabled": op.disabled, "created_at": op.created_at.isoformat()}
        typer.echo(json.dumps({**row, "last_login_at": last}))


def announce_first_admin(settings: Settings) -> None:
    """For ``clarion serve``: with no operator at all, create ``admin`` with a random password and print it, this
    once (it is stored only as its hash); with operators, say how to add one."""
    password = asyncio.run(_on(settings, lambda ops: ops.first_admin()))
    if password is not None:
        console.print(
            f"Console: log in at /console as [bold]admin[/] with the password [bold]{password}[/] (shown once)"
        )
    else:
        console.print("Console: log in at /console; add operators with 'clarion operator create NAME --role ROLE'")
