"""``clarion``: run the service, migrate, manage API keys, send from the shell. Thin over the same use cases
as the HTTP API."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
import uvicorn
from rich.console import Console

from clarion import (
    apikeys,
    bootstrap,
    cli_campaigns,
    cli_consume,
    cli_copy,
    cli_operators,
    cli_reconcile,
    cli_secrets,
    cli_segments,
    cli_users,
    metrics,
)
from clarion.domain import errors, model
from clarion.pipeline import intake
from clarion.settings import Settings
from clarion.store import migrate as migrations
from clarion.store import rollups

app = typer.Typer(help="Clarion message push platform.", no_args_is_help=True, add_completion=False)
apikey = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(apikey, name="apikey")
app.add_typer(cli_users.app, name="users")
app.add_typer(cli_operators.app, name="operator")
app.add_typer(cli_campaigns.app, name="campaign")
app.add_typer(cli_copy.app, name="copy")
app.add_typer(cli_reconcile.app, name="reconcile")
app.add_typer(cli_segments.app, name="segments")
app.command("consume")(cli_consume.consume)
app.add_typer(cli_secrets.app, name="secrets")
providers_cli = typer.Typer(help="Provider kinds.", no_args_is_help=True)
app.add_typer(providers_cli, name="providers")
analytics_cli = typer.Typer(help="Funnel rollups.", no_args_is_help=True)
app.add_typer(analytics_cli, name="analytics")
console = Console(stderr=True)


@providers_cli.command("reference")
def providers_reference(
    write: Annotated[
        Path | None, typer.Option(help="refresh the generated tables in this file (docs/providers.md)")
    ] = None,
) -> None:
    """Print each provider kind's generated reference (channels, config fields, secrets, defaults, callbacks), or
    refresh the generated tables of a document in place."""
    from clarion.channels import reference, registry

    if write is None:
        typer.echo("\n\n".join(reference.tables(registry.KINDS).values()))
        return
    write.write_text(reference.refresh(write.read_text(), registry.KINDS))


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _with_services(settings: Settings, fn: Any) -> Any:
    services = bootstrap.build(settings)
    try:
        return await fn(services)
    finally:
        await services.close()


@app.command()
def migrate() -> None:
    """Apply database migrations (safe to run repeatedly)."""
    settings = Settings()
    migrations.upgrade(settings.database_url)
    console.print(f"[green]database is up to date[/] ({settings.database_url.split('@')[-1]})")


def _demo_key(settings: Settings) -> str:
    """The embedded default's key: made the first time and kept in the data dir (mode 0600), so that
    ``make run`` can always print a key that works."""
    path = Path(settings.data_dir) / "api_key"
    if path.exists():
        return path.read_text().strip()
    key: str = _run(_with_services(settings, lambda s: s.keys.create("demo")))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(key)
    return key


def _serve(workers: int | None, host: str | None, port: int | None, access_log: bool, log_level: str) -> None:
    from clarion.api.app import create_app

    _logging(log_level)
    settings = Settings()
    migrations.upgrade(settings.database_url)
    host, port = host or settings.host, port or settings.port
    console.print(f"[bold]Clarion[/] on http://{host}:{port}  —  API docs: http://{host}:{port}/docs")
    if settings.api_key is not None:
        console.print("API key: the one in CLARION_API_KEY")
    elif settings.is_sqlite:
        key = _demo_key(settings)
        console.print(f"API key: [bold]{key}[/]  (send it as 'Authorization: Bearer <key>')")
    else:
        console.print("API keys: create one with 'clarion apikey create NAME'")
    cli_operators.announce_first_admin(settings)  # the console's first admin, with a one-time password
    uvicorn.run(
        create_app(settings, workers=workers),
        host=host,
        port=port,
        access_log=access_log,
        log_level=log_level.lower(),
        loop="uvloop",
        http="httptools",
    )


HostOpt = Annotated[str | None, typer.Option(help="listen address (CLARION_HOST)")]
PortOpt = Annotated[int | None, typer.Option(help="listen port (CLARION_PORT)")]
AccessLog = Annotated[bool, typer.Option(help="log every request")]
LogLevel = Annotated[str, typer.Option(help="log level")]


@app.command()
def serve(
    host: HostOpt = None, port: PortOpt = None, access_log: AccessLog = False, log_level: LogLevel = "warning"
) -> None:
    """Run the API and the delivery workers in one process (the embedded default)."""
    _serve(None, host, port, access_log, log_level)


@app.command()
def api(
    host: HostOpt = None, port: PortOpt = None, access_log: AccessLog = False, log_level: LogLevel = "warning"
) -> None:
    """Run the API only; deliveries are sent by separate ``clarion worker`` processes."""
    _serve(0, host, port, access_log, log_level)


@app.command()
def worker(
    workers: Annotated[int, typer.Option(min=1, max=64, help="concurrent dispatch loops")] = 2,
    metrics_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="serve Prometheus /metrics (this process's sends) here")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="the address /metrics listens on")] = "127.0.0.1",
    log_level: LogLevel = "info",
) -> None:
    """Run delivery workers only: claim from the outbox, send, record. Stops gracefully on SIGTERM/SIGINT."""
    _logging(log_level)
    settings = Settings()

    async def main() -> None:
        services = bootstrap.build(settings)
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopped.set)
        if metrics_port is not None:
            metrics.serve(services.metrics, metrics_port, metrics_host)
        await services.start(workers=workers)
        await stopped.wait()
        await services.close()

    _run(main())


def _operator() -> str:
    """Who the audit log names for a key changed from the command line: the operating-system user."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"[:128]
    except (OSError, KeyError):
        return "cli"


@apikey.command("create")
def apikey_create(
    name: Annotated[str, typer.Argument(help="who or what uses the key")],
    role: Annotated[
        list[str] | None,
        typer.Option(help=f"a role of the key, repeatable: {', '.join(apikeys.ROLES)} (default: admin)"),
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option(help="refused from then on: a duration (90d, 12h, 30m, 2w) or an ISO-8601 time (UTC if no zone)"),
    ] = None,
) -> None:
    """Create an API key and print it. It is stored hashed: this is the only time it is shown."""
    from datetime import UTC, datetime

    try:
        roles = apikeys.roles_from(role)
    except errors.InvalidInput as exc:
        raise typer.BadParameter(exc.message, param_hint="--role") from None
    try:
        expires_at = apikeys.expiry_from(expires, datetime.now(UTC)) if expires else None
        if expires_at is not None and expires_at <= datetime.now(UTC):
            raise errors.InvalidInput(f"expiry {expires!r} is not in the future")
    except errors.InvalidInput as exc:
        raise typer.BadParameter(exc.message, param_hint="--expires") from None
    settings = Settings()
    issued = _run(
        _with_services(settings, lambda s: s.keys.issue(name, roles, expires_at=expires_at, actor=_operator()))
    )
    typer.echo(issued.key)


@apikey.command("revoke")
def apikey_revoke(key_id: Annotated[str, typer.Argument(help="the key's id (clarion apikey list)")]) -> None:
    """Revoke an API key: refused from now on, within half a second, by every running Clarion process."""
    try:
        revoked = _run(_with_services(Settings(), lambda s: s.keys.revoke(key_id, actor=_operator())))
    except errors.NotFound:
        console.print(f"[red]no API key with id {key_id!r}[/]")
        raise typer.Exit(1) from None
    state = "was already revoked" if revoked.already else "revoked"
    console.print(f"{revoked.name} ({revoked.prefix}…) {state} at {revoked.revoked_at.isoformat()}")


@analytics_cli.command("rebuild")
def analytics_rebuild() -> None:
    """Recompute the funnel rollups from the timeline, in one transaction (the rollups are kept with every status
    change; this repairs them after a restore or a manual edit of the database)."""

    async def rebuild(services: bootstrap.Clarion) -> int:
        return int(await services.db.write(rollups.rebuild))

    counted = _run(_with_services(Settings(), rebuild))
    console.print(f"[green]funnel rollups rebuilt[/] from {counted} timeline events")


@apikey.command("list")
def apikey_list() -> None:
    """The API keys as JSON lines (never the keys themselves): id, name, prefix, roles, status, times."""
    for key in _run(_with_services(Settings(), lambda s: s.keys.described())):
        typer.echo(json.dumps(key))


@app.command()
def send(
    template: Annotated[str, typer.Argument(help="template key")],
    users: Annotated[list[str], typer.Argument(help="user ids")],
    data: Annotated[str, typer.Option(help="JSON object of template data")] = "{}",
    channel: Annotated[list[str] | None, typer.Option(help="restrict to these channels")] = None,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    dedup_key: Annotated[str | None, typer.Option(help="business key: same key, user and channel sent once")] = None,
) -> None:
    """Send a template to users, exactly as ``POST /v1/messages`` would; prints the messages as JSON."""
    try:
        payload = json.loads(data)
        if not isinstance(payload, dict):
            raise ValueError("not an object")
        channels = [model.Channel(c) for c in channel] if channel else None
    except ValueError as exc:
        raise typer.BadParameter(f"--data/--channel: {exc}") from None
    command = intake.SendCommand(template, users, payload, channels, idempotency_key, dedup_key)
    try:
        accepted = _run(_with_services(Settings(), lambda s: s.intake.send(command)))
    except errors.InvalidInput as exc:
        console.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(2) from None
    typer.echo(orjson.dumps(accepted.response, option=orjson.OPT_INDENT_2).decode())
