"""``clarion users …``: user data in bulk.

``clarion users import FILE`` streams a CSV or JSON-lines file of any size into the users table, ``--batch``
rows per transaction, each row validated as ``PUT /v1/users/{user_id}`` validates a body (``POST
/v1/users:batch`` is the same write over HTTP).

JSON lines: one ``{"user_id", "attributes", "tags", "timezone", "locale", "addresses"}`` object a line.

CSV (UTF-8, a header row; cells left empty are not given, so merging keeps what is stored):

- ``user_id`` (required); ``timezone``; ``locale``;
- ``tags``: several separated by ``|`` or ``;``;
- an address channel: ``email``, ``sms`` (or ``phone``; E.164), ``push`` (tokens separated by ``|`` or ``;``),
  ``webhook``, ``wechat``, ``wecom``, ``dingtalk``, ``feishu``;
- any other column is an attribute, kept as text: ``01234`` stays a zip code, not a number. A typed header
  says otherwise: ``age:int``, ``score:float``, ``vip:bool`` (true/false, yes/no, 1/0), ``meta:json``.
"""

from __future__ import annotations

import csv
import enum
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from clarion.api.routes import bulk as bulk_api
from clarion.settings import Settings
from clarion.store import bulk

app = typer.Typer(help="Users in bulk.", no_args_is_help=True)
console = Console(stderr=True)

_SPLIT = re.compile(r"[|;]")
_CHANNELS = ("email", "sms", "push", "webhook", "wechat", "wecom", "dingtalk", "feishu")
_TRUE, _FALSE = ("true", "yes", "1", "y"), ("false", "no", "0", "n")


class Format(enum.StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


def _split(value: str) -> list[str]:
    return [part.strip() for part in _SPLIT.split(value) if part.strip()]


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE or lowered in _FALSE:
        return lowered in _TRUE
    raise ValueError("not true/false")


def _json(value: str) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None


_TYPES: dict[str, Callable[[str], Any]] = {"str": str, "int": int, "float": float, "bool": _bool, "json": _json}


@dataclass(frozen=True, slots=True)
class Column:
    """Where a CSV column goes: ``field`` is user_id, timezone, locale, tags, addresses or attributes."""

    field: str
    key: str = ""
    parse: Callable[[str], Any] = str
    kind: str = "str"


def column(header: str) -> Column:
    name = header.strip()
    lowered = name.lower()
    if lowered in ("user_id", "timezone", "locale", "tags"):
        return Column(lowered)
    if lowered in _CHANNELS or lowered == "phone":
        return Column("addresses", "sms" if lowered == "phone" else lowered)
    base, _, kind = name.rpartition(":")
    if base and kind.lower() in _TYPES:
        return Column("attributes", base, _TYPES[kind.lower()], kind.lower())
    return Column("attributes", name)


def csv_item(columns: list[Column], cells: list[str]) -> dict[str, Any]:
    """One CSV row as a batch item; ItemError for a cell that does not parse."""
    if len(cells) > len(columns):
        raise bulk_api.ItemError(f"{len(cells)} cells but {len(columns)} columns")
    item: dict[str, Any] = {}
    for col, raw in zip(columns, cells, strict=False):
        value = raw.strip()
        if not value:
            continue
        if col.field in ("user_id", "timezone", "locale"):
            item[col.field] = value
        elif col.field == "tags":
            item["tags"] = _split(value)
        elif col.field == "addresses":
            item.setdefault("addresses", {})[col.key] = _split(value) if col.key == "push" else value
        else:
            try:
                item.setdefault("attributes", {})[col.key] = col.parse(value)
            except ValueError as exc:
                why = f" ({exc})" if col.kind == "json" else ""
                raise bulk_api.ItemError(f"{col.key}: not {col.kind}: {value!r}{why}") from None
    return item


Row = tuple[int, Any]  # (line number, batch item or ItemError)


def csv_rows(f: IO[str]) -> Iterator[Row]:
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None:
        return
    columns = [column(h) for h in header]
    if not any(c.field == "user_id" for c in columns):
        raise typer.BadParameter("the CSV header has no user_id column", param_hint="FILE")
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue
        try:
            yield reader.line_num, csv_item(columns, cells)
        except bulk_api.ItemError as exc:
            yield reader.line_num, exc


def jsonl_rows(f: IO[str]) -> Iterator[Row]:
    for number, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            yield number, orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield number, bulk_api.ItemError(f"malformed JSON: {exc}")


@dataclass(slots=True)
class Summary:
    rows: int = 0
    created: int = 0
    updated: int = 0
    failed: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


async def import_rows(
    services: Any, rows: Iterator[Row], mode: bulk.Mode, batch: int, keep_errors: int, tick: Callable[[int], None]
) -> Summary:
    """Validate and write ``rows``, ``batch`` valid ones per transaction; the first ``keep_errors`` bad rows
    are kept with their line numbers."""
    summary = Summary()

    async def flush(changes: list[bulk.Profile]) -> None:
        now = datetime.now(UTC)
        done = await services.db.write(lambda conn: bulk.upsert_users(conn, changes, mode, now))
        await services.segments.users_changed([*done.created, *done.updated])
        summary.created += len(done.created)
        summary.updated += len(done.updated)

    changes: list[bulk.Profile] = []
    for line, item in rows:
        summary.rows += 1
        try:
            if isinstance(item, bulk_api.ItemError):
                raise item
            changes.append(bulk_api.parse_profile(item))
        except bulk_api.ItemError as exc:
            summary.failed += 1
            if len(summary.errors) < keep_errors:
                summary.errors.append((line, exc.message))
        if len(changes) >= batch:
            await flush(changes)
            changes = []
            tick(summary.rows)
    if changes:
        await flush(changes)
    tick(summary.rows)
    return summary


@app.command("import")
def import_users(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="a .csv or .jsonl file")],
    format: Annotated[
        Format | None, typer.Option("--format", help="csv or jsonl; default: from the file's extension")
    ] = None,
    mode: Annotated[
        bulk.Mode,
        typer.Option(help="merge: only the columns given change (attributes key by key); replace: like PUT"),
    ] = bulk.Mode.MERGE,
    batch: Annotated[int, typer.Option(min=1, max=bulk_api.MAX_ITEMS, help="users per transaction")] = 5000,
    show_errors: Annotated[int, typer.Option("--errors", min=0, help="how many bad rows to list")] = 20,
) -> None:
    """Create or update users from a CSV or JSON-lines file, streamed; bad rows are listed with their line
    numbers at the end (the good ones are written anyway) and make the exit status 1."""
    from clarion import cli  # cli imports this module: import it when the command runs

    kind = format or (Format.CSV if file.suffix.lower() == ".csv" else Format.JSONL)
    settings = Settings()
    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"importing {file.name}", total=None, rows=0)
        with progress.open(file, "r", encoding="utf-8-sig", newline="", task_id=task) as f:
            rows = csv_rows(f) if kind is Format.CSV else jsonl_rows(f)

            def tick(count: int) -> None:
                progress.update(task, rows=count)

            try:
                summary: Summary = cli._run(
                    cli._with_services(settings, lambda s: import_rows(s, rows, mode, batch, show_errors, tick))
                )
            except UnicodeDecodeError as exc:
                raise typer.BadParameter(f"not UTF-8 text: {exc}", param_hint="FILE") from None
    elapsed = time.perf_counter() - started
    for line, message in summary.errors:
        typer.echo(f"line {line}: {message}")
    if summary.failed > len(summary.errors):
        typer.echo(f"… and {summary.failed - len(summary.errors)} more bad rows")
    typer.echo(
        f"{summary.rows} rows: {summary.created} created, {summary.updated} updated, {summary.failed} failed"
        f" in {elapsed:.1f} s ({summary.rows / max(elapsed, 1e-9):,.0f} rows/s)"
    )
    if summary.failed:
        raise typer.Exit(1)
