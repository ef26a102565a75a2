"""``clarion copy``: AI copy from the command line, on the same use case as ``POST /v1/copy:generate``.

    clarion copy generate --brief brief.json [--n 3] [--save-as KEY] [--department D] [--json] [--as NAME]

The file holds the brief (``{"product", "offer", "campaign", "audience", "channels", …}``) or a whole request
(``{"brief": {…}, "n": 3, "save_as": …}``); the options override the request's fields. The drafts and their
checks are printed as a table (``--json``: the API's answer). Exit status: 0 when every draft is usable (``ok``
or ``repaired``), 3 when some draft is ``refused`` or ``broken``, 2 for bad input or a model that did not
answer (nothing saved)."""

from __future__ import annotations

import asyncio
import getpass
import json
from pathlib import Path
from typing import Annotated, Any

import orjson
import pydantic
import typer
from rich.console import Console
from rich.table import Table

from clarion import bootstrap
from clarion.api.routes import copy as copy_api
from clarion.copywriting import generate as copywriting
from clarion.copywriting import llm
from clarion.domain import approval, errors
from clarion.settings import Settings

app = typer.Typer(help="AI copy: drafts from a brief, checked like any template.", no_args_is_help=True)
console = Console(stderr=True)
USABLE = ("ok", "repaired")


def _request(path: Path, n: int | None, save_as: str | None, department: str | None) -> copy_api.GenerateIn:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise errors.InvalidInput(f"--brief: cannot read {path}: {exc}", details={"field": "brief"}) from None
    if not isinstance(document, dict) or "brief" not in document:
        document = {"brief": document}
    given = {"n": n, "save_as": save_as, "department": department}
    document.update({k: v for k, v in given.items() if v is not None})
    try:
        return copy_api.GenerateIn.model_validate(document)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "brief"
        raise errors.InvalidInput(f"{where}: {first['msg']}", details={"field": where}) from None


def _table(found: dict[str, Any]) -> Table:
    table = Table(title=f"{len(found['drafts'])} draft(s) by {found['model']}", show_lines=True)
    for column in ("draft", "status", "content", "checks"):
        table.add_column(column)
    for d in found["drafts"]:
        content = "\n".join(f"[b]{c}[/] " + " | ".join(body.values()) for c, body in d["channels"].items())
        checks = [f"variables: {', '.join(d['variables']) or '—'}"]
        if d["sms"]:
            checks.append(f"sms: {d['sms']['segments']} segment(s), {d['sms']['characters']} characters")
            checks += [f"  {c['provider']}: {c['per_message']} {c['currency']}" for c in d["sms"]["cost"]]
        if d["push"]:
            checks.append(f"push: title {d['push']['title']['length']}/{d['push']['title']['limit']}, body "
                          f"{d['push']['body']['length']}/{d['push']['body']['limit']}")  # fmt: skip
        for condition in d["conditions"]:
            checks.append(", ".join(f"{b['branch']}: {b['share']:.0%}" for b in condition["branches"] if b["share"]
                                    is not None) or condition["field"])  # fmt: skip
        checks += [f"[yellow]warning[/] {json.dumps(w, ensure_ascii=False)}" for w in d["warnings"]]
        checks += [f"[red]problem[/] {json.dumps(p, ensure_ascii=False)}" for p in d["problems"]]
        colour = "green" if d["status"] in USABLE else "red"
        table.add_row(d["name"], f"[{colour}]{d['status']}[/]", content, "\n".join(checks))
    return table


@app.command("generate")
def generate_command(
    brief: Annotated[Path, typer.Option("--brief", help="the brief (or a whole request) as JSON")],
    n: Annotated[int | None, typer.Option("--n", help="how many drafts, 1-5 (default 2)")] = None,
    save_as: Annotated[str | None, typer.Option("--save-as", help="save them as this template, for review")] = None,
    department: Annotated[str | None, typer.Option(help="whose model configuration and budget")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON answer")] = False,
    as_: Annotated[str | None, typer.Option("--as", help="who acts (default: the login name)")] = None,
) -> None:
    """Drafts for a brief, each checked like a template; ``--save-as`` keeps the usable ones as variants."""
    actor = approval.Actor(as_ or getpass.getuser(), ("admin",))

    async def main() -> dict[str, Any]:
        request = _request(brief, n, save_as, department).to_request()
        services = bootstrap.build(Settings())
        await services.start(workers=0)
        try:
            result = await copywriting.generate(services, request, actor=actor.name, roles=actor.roles)
        finally:
            await services.close()
        return result.to_json()

    try:
        found = asyncio.run(main())
    except (errors.InvalidInput, llm.ModelError) as exc:
        console.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
    else:
        Console().print(_table(found))
        if found["saved"]:
            saved = found["saved"]
            console.print(f"saved {saved['template']}@{saved['version']}: {saved['status']}")
    if any(d["status"] not in USABLE for d in found["drafts"]):
        raise typer.Exit(3)
