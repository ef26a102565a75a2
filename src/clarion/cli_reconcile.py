"""``clarion reconcile``: reconciliation from the command line, on the same use case as
``POST /v1/reconciliation/{provider}:fetch``.

    clarion reconcile fetch PROVIDER --day YYYY-MM-DD [--json] [--as NAME]

Asks the account's vendor for its statistics of the day (the vendor's day: China time for Aliyun and Tencent,
GMT for Twilio), keeps them (audited as ``statistics.fetch``, actor ``cli:<user>`` or ``--as``) and prints them
beside our deliveries of that day, one line per count (``--json``: the API's answer). Exit status: 0 when every
count compared agrees, 3 when some differ, 2 for an unknown account, a kind without a statistics API, bad input
or a vendor that refused (nothing kept)."""

from __future__ import annotations

import asyncio
import getpass
from datetime import date
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from clarion import bootstrap
from clarion.domain import errors
from clarion.pipeline import reconciling
from clarion.settings import Settings

app = typer.Typer(help="Reconciliation (对账) against the vendors' own counts.", no_args_is_help=True)
console = Console(stderr=True)
#: the rows printed: (label, our field, the vendor's field)
ROWS = (
    ("sent", "sent", "sent"),
    ("delivered", "delivered", "delivered"),
    ("failed", "failed", "failed"),
    ("billed segments", "segments", "billed_segments"),
)


def _actor(given: str | None) -> str:
    if given:
        return given[:128]
    try:
        return f"cli:{getpass.getuser()}"[:128]
    except (OSError, KeyError):
        return "cli"


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise errors.InvalidInput("--day: a day as YYYY-MM-DD", details={"field": "day"}) from None


def _table(provider: str, shown: dict[str, Any]) -> Table:
    ours, theirs = shown["ours"], shown["theirs"]
    differing = {d["field"]: d for d in shown["differences"]}
    title = (
        f"{provider} {shown['day']} (vendor's day, UTC{shown['zone']}): ours from {shown['start']} to {shown['end']}"
    )
    table = Table(title=title)
    for column in ("count", "ours", "vendor", "difference"):
        table.add_column(column)
    for label, mine, vendor in ROWS:
        table.add_row(
            label, str(ours[mine]), _shown(theirs[vendor]), _difference(differing.get(vendor), theirs[vendor])
        )
    cost = ", ".join(f"{amount} {currency}" for currency, amount in ours["cost"].items()) or "—"
    fee = "—" if theirs["fee"] is None else f"{theirs['fee']} {theirs['currency']}"
    table.add_row("fee", cost, fee, _difference(differing.get("fee"), theirs["fee"]))
    return table


def _shown(value: Any) -> str:
    return "not reported" if value is None else str(value)


def _difference(found: dict[str, Any] | None, theirs: Any) -> str:
    if theirs is None:
        return "—"
    if found is None:
        return "[green]agrees[/]"
    return f"[red]{found['difference']:+}[/]"


@app.command("fetch")
def fetch_command(
    provider: Annotated[str, typer.Argument(help="the provider account, e.g. aliyun-a")],
    day: Annotated[str, typer.Option("--day", help="YYYY-MM-DD, the day as the vendor reckons it")],
    as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON answer")] = False,
    as_: Annotated[str | None, typer.Option("--as", help="who the audit log names (default: cli:<user>)")] = None,
) -> None:
    """Fetch the vendor's statistics of the day, keep them, and print them beside ours."""

    async def main() -> dict[str, Any]:
        services = bootstrap.build(Settings())
        await services.start(workers=0)
        try:
            return await reconciling.fetch_statistics(services, provider, _day(day), actor=_actor(as_))
        finally:
            await services.close()

    try:
        shown = asyncio.run(main())
    except errors.InvalidInput as exc:
        console.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
    else:
        Console().print(_table(provider, shown))
        for skipped in shown["not_compared"]:
            console.print(f"not compared: {skipped['field']}: {skipped['reason']}")
    if shown["differences"]:
        raise typer.Exit(3)
