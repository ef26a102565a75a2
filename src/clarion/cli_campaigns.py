"""``clarion campaign …``: the campaign API from the command line, on the same use cases.

    clarion campaign put spring spring.json          save (a draft) from a JSON file ('-': standard input)
    clarion campaign show spring | list
    clarion campaign estimate spring [--at ISO]
    clarion campaign submit|approve|reject|start|pause|resume|cancel spring [--comment ...] [--as NAME]
    clarion campaign run spring                      run it in this process, with a live progress bar

``--as`` names who acts (an operator with the database's credentials acts as an admin, under that name): the
author of a campaign cannot approve it under the same name."""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from clarion import bootstrap
from clarion.campaigns import definition as spec
from clarion.campaigns import estimate as estimates
from clarion.campaigns import lifecycle, service
from clarion.domain import approval, errors
from clarion.settings import Settings
from clarion.store import campaigns as store

app = typer.Typer(help="Campaigns: save, review, estimate, start and watch.", no_args_is_help=True)
console = Console(stderr=True)
As = Annotated[str | None, typer.Option("--as", help="who acts (default: the login name)")]
Comment = Annotated[str | None, typer.Option(help="a note for the review or the audit log")]
KeyArg = Annotated[str, typer.Argument(help="campaign key")]


def _print(value: Any) -> None:
    typer.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _actor(name: str | None) -> approval.Actor:
    return approval.Actor(name or getpass.getuser(), ("admin",))


def _run(fn: Any) -> Any:
    async def main() -> Any:
        services = bootstrap.build(Settings())
        await services.start(workers=0)
        try:
            return await fn(services)
        finally:
            await services.close()

    try:
        return asyncio.run(main())
    except errors.InvalidInput as exc:
        console.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(2) from None


@app.command()
def put(
    key: KeyArg,
    file: Annotated[str, typer.Argument(help="the definition as JSON ('-': standard input)")],
    as_: As = None,
) -> None:
    """Save a campaign (as PUT /v1/campaigns/{key}); it is a draft until submitted and approved."""
    try:
        body = json.loads(sys.stdin.read() if file == "-" else Path(file).read_text())
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="FILE") from None

    async def go(clarion: bootstrap.Clarion) -> Any:
        await service.save(clarion, key, body, _actor(as_))
        return await service.show(clarion, key)

    _print(_run(go))


@app.command()
def show(key: KeyArg) -> None:
    """The campaign and its latest run's progress (as GET /v1/campaigns/{key})."""
    _print(_run(lambda clarion: service.show(clarion, key)))


@app.command("list")
def list_() -> None:
    _print(_run(lambda clarion: service.page(clarion, limit=1000, after=None)))


@app.command()
def estimate(key: KeyArg, at: Annotated[str | None, typer.Option(help="ISO time with zone")] = None) -> None:
    """The dry run (as POST /v1/campaigns/{key}/estimate): audience, policies, SMS segments, cost."""
    when = datetime.fromisoformat(at) if at else None
    if when is not None and when.tzinfo is None:
        raise typer.BadParameter("needs a time zone", param_hint="--at")

    async def go(clarion: bootstrap.Clarion) -> Any:
        async with clarion.db.read() as conn:
            row = await store.get(conn, key)
        if row is None:
            raise errors.NotFound("campaign", key)
        definition = spec.Definition.from_json(row.definition)
        moment = when or row.next_run_at or definition.schedule.first_due(datetime.now(UTC))
        s = clarion.settings
        return await estimates.estimate(
            clarion,
            key,
            definition,
            at=moment.astimezone(UTC),
            exact_max=s.campaign_estimate_exact,
            sample_size=s.campaign_estimate_sample,
            prices=s.campaign_prices,
            currency=s.campaign_currency,
        )

    _print(_run(go))


def _action(action: str) -> None:
    def command(key: KeyArg, comment: Comment = None, as_: As = None) -> None:
        async def go(clarion: bootstrap.Clarion) -> Any:
            await service.act(clarion, key, action, _actor(as_), comment=comment)
            return await service.show(clarion, key)

        _print(_run(go))

    command.__doc__ = f"{action.capitalize()} the campaign (as POST /v1/campaigns/{{key}}/{action})."
    app.command(action)(command)


for _name in lifecycle.ACTIONS:
    _action(_name)


@app.command("run")
def run_(
    key: KeyArg,
    workers: Annotated[int, typer.Option(min=0, max=64, help="delivery workers in this process too")] = 1,
) -> None:
    """Run the campaign's due run here — fan-out and (with --workers) delivery — with a live progress bar, until
    it has finished and its messages have left the outbox. Start it first (``clarion campaign start``)."""

    async def go(clarion: bootstrap.Clarion) -> Any:
        began = datetime.now(UTC)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(clarion.campaigns.run(stop))]
        tasks += [asyncio.create_task(clarion.dispatcher.run(stop, index=i)) for i in range(workers)]
        try:
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=console,
            ) as bar:
                fanout = bar.add_task("fan-out", total=None, detail="")
                sent = bar.add_task("sent", total=None, detail="")
                while True:
                    shown = await service.show(clarion, key, runs=1)
                    run = shown["run"]
                    if run is not None:
                        filtered = sum(run["filtered"].values())
                        bar.update(fanout, total=run["audience"], completed=run["processed"], detail=run["status"])
                        bar.update(
                            sent,
                            total=run["messages"],
                            completed=run["sent"] + run["failed"] + run["statuses"].get("filtered", 0),
                            detail=f"failed {run['failed']}  filtered {filtered}",
                        )
                    if _finished(shown, began, drained=workers == 0):
                        return shown
                    await asyncio.sleep(0.5)
        finally:
            stop.set()
            clarion.dispatcher.wakeup.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    _print(_run(go))


def _finished(shown: dict[str, Any], began: datetime, *, drained: bool) -> bool:
    """The run this command waited for is over (a cron campaign's next fire is not waited for once a run of it
    finished here) and, when this process delivers, its messages have left the outbox."""
    run = shown["run"]
    if run is None or run["finished_at"] is None:
        return shown["status"] not in ("scheduled", "running", "paused")
    waiting = shown["status"] in ("scheduled", "running") and datetime.fromisoformat(run["finished_at"]) < began
    return not waiting and (drained or run["queued"] == 0)
