"""Analytics benchmark: the funnel (``GET /v1/analytics/funnel``) over ``--deliveries`` generated deliveries
(default 10^7) and their timeline, and what keeping the funnel rollups costs the triggered path.

The data (``_analytics_timeline``: 30 days, 50 templates with two variants, four campaigns, five channels, nine
providers, five departments, every stage in plausible proportions) is written the way intake writes a batch —
``db.Inserts``: messages, deliveries, then their events through ``rollups.append``, which counts them into
``funnel_hourly``/``funnel_daily`` in the same transaction — so the rollups are Clarion's own, exact. That
path writes ≈ 2,000–5,000 deliveries/s here; for 10^7, ``--write rollups`` writes only the rollup cells, counted
by the generator from the same generated rows (``Timeline.cells``) and added with ``rollups.add``. The database
is cached under ``--cache`` keyed by the size, the write mode and the generator's version (SQLite: a file;
PostgreSQL: a database on the ``--postgres`` server), so a rerun only queries. ``--check-rebuild N`` generates N
deliveries both ways in scratch databases and checks that ``rollups.rebuild`` over the timeline and
``--write rollups`` give the same cells, counts and revenue as ``append``.

Funnel figures: each query goes through the ASGI app (``create_app`` over ``httpx.ASGITransport``: auth, the
route, ``rollups.cells``, ``funnel.report``, the response model), ``--repeat`` times after one warm-up; median
and p95 in ms, and the rollup rows each reads. The whole-range answer is checked against the generator's own
count of every stage.

Rollup cost: ``bench/triggered.py``'s saturated run (``run_once``), with ``clarion serve`` started through
``_analytics_serve`` — as it is (``on``), or with ``rollups.append`` replaced by a plain insert of the events
(``off``: the timeline is written as before; the funnel staging, the earlier-events and dimension look-ups and
the rollup upserts are skipped). The two alternate within each run (the first of the pair swapped run by run);
medians over ``--triggered-runs``. (``triggered.wait_ready``'s 20 s are stretched to 100 s: a server starting on
the busy shared machine took up to 38 s.)

Prints tables, then one JSON line. Run: ``.venv/bin/python bench/analytics.py --write rollups`` (10^7;
``--deliveries 100000`` for a quick look through the timeline path; ``--postgres
postgresql://postgres@127.0.0.1:5432/test`` to add PostgreSQL, ``--postgres-deliveries`` for its size).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

import _analytics_timeline as timeline
import triggered
from clarion import bootstrap
from clarion.api.app import create_app
from clarion.settings import Settings
from clarion.store import db, migrate, rollups
from clarion.store import tables as t

KEY = "clk_bench_analytics_key"
GENERATOR = 1
"""Bumped when the generated timeline changes, so a cached database of the old one is not reused."""
WEEK = timeline.START + timedelta(days=14)

QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("whole range, no filter", {}),
    ("one template, 30 days", {"template": "t03", "since": timeline.START, "until": timeline.END}),
    ("group_by=day", {"group_by": "day"}),
    ("group_by=channel,provider", {"group_by": "channel,provider"}),
    ("group_by=hour, one week", {"group_by": "hour", "since": WEEK, "until": WEEK + timedelta(days=7)}),
    ("template + variant", {"template": "t03", "variant": "b"}),
]


def percentile(values: list[float], q: float) -> float:
    return triggered.percentile(values, q)


# -- generating ---------------------------------------------------------------------------------------------------


async def generate(clarion: bootstrap.Clarion, n: int, chunk: int, write: str = "timeline") -> Counter[str]:
    """Write ``n`` generated deliveries, one transaction per chunk, the chunks made in other processes while the
    previous ones are written. ``timeline``: messages, deliveries and events through ``db.Inserts`` (the rollups
    counted by ``rollups.append``); ``rollups``: only the cells ``Timeline.cells`` counts, added with
    ``rollups.add``. Returns the generator's count of each stage."""
    tally: Counter[str] = Counter()
    made = timeline.Timeline(n)
    make = made.chunk if write == "timeline" else made.cells
    workers = 1 if write == "timeline" else 2  # the timeline's writer is the bound, not making it
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
        firsts = iter(range(0, n, chunk))
        pending = [loop.run_in_executor(pool, make, first, chunk) for first in itertools.islice(firsts, 2 * workers)]
        while pending:
            made_chunk: Any = await pending.pop(0)
            for first in itertools.islice(firsts, 1):
                pending.append(loop.run_in_executor(pool, make, first, chunk))
            if write == "timeline":
                messages, deliveries, events, counted = made_chunk
                rows = {t.messages: messages, t.deliveries: deliveries, t.delivery_events: events}
                await clarion.db.write(db.Inserts(rows))
            else:
                hourly, counted = made_chunk
                await clarion.db.write(functools.partial(add_cells, hourly))
            tally.update(counted.stages)
            done = tally["requested"]
            if done % (chunk * 25) == 0 or done == n:
                rate = done / (time.perf_counter() - started)
                print(f"  generated {done:,} of {n:,} deliveries ({rate:,.0f}/s)", file=sys.stderr, flush=True)
    return tally


async def add_cells(hourly: dict[tuple[Any, ...], list[float]], conn: Any) -> None:
    """The hourly cells into the rollups, as ``rollups.append`` adds them (the daily and narrow cells too)."""
    await rollups.add_hourly(conn, hourly)


def settings_for(url: str, directory: Path) -> Settings:
    return Settings(
        database_url=url,
        data_dir=str(directory / "var"),
        outbox_dir=str(directory / "var" / "outbox"),
        api_key=KEY,
        secret_key="bench",
        workers=0,
    )


@contextlib.asynccontextmanager
async def services(url: str, directory: Path) -> AsyncIterator[bootstrap.Clarion]:
    clarion = bootstrap.build(settings_for(url, directory))
    try:
        yield clarion
    finally:
        await clarion.close()


def cached_sqlite(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The SQLite database of ``--deliveries`` (generated now unless cached) and what its generation reported."""
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"funnel-g{GENERATOR}-{args.write}-{args.deliveries}.db"
    facts = path.with_suffix(".json")
    if not (path.exists() and facts.exists()):
        scratch = path.with_suffix(".partial.db")
        for stale in cache.glob(scratch.name + "*"):
            stale.unlink()
        url = f"sqlite+aiosqlite:///{scratch}"
        migrate.upgrade(url)
        started = time.perf_counter()
        tally = asyncio.run(_generate_at(url, cache, args))
        generated = {"generation_s": round(time.perf_counter() - started, 1), "stages": dict(tally)}
        with contextlib.closing(sqlite3.connect(scratch)) as conn:  # the whole database in the one file
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        scratch.rename(path)
        facts.write_text(json.dumps(generated))
    url = f"sqlite+aiosqlite:///{path}"
    migrate.upgrade(url)  # a cached file made before a newer migration
    return url, {**json.loads(facts.read_text()), "database_mb": round(path.stat().st_size / 2**20)}


async def _generate_at(url: str, directory: Path, args: argparse.Namespace) -> Counter[str]:
    async with services(url, directory) as clarion:
        tally = await generate(clarion, args.deliveries, args.chunk, args.write)
        if not clarion.db.is_sqlite:
            await admin(url, "ANALYZE")  # what autovacuum does after a bulk load
        return tally


def cached_postgres(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The same on a database of the ``--postgres`` server, renamed from its scratch name once complete; what its
    generation reported is kept in the database's comment."""
    n = args.postgres_deliveries or args.deliveries
    name = f"clarion_bench_funnel_g{GENERATOR}_{args.write}_{n}"
    server = sa.make_url(args.postgres).set(drivername="postgresql+asyncpg")
    url = server.set(database=name).render_as_string(hide_password=False)
    comment = asyncio.run(
        admin_fetch(
            args.postgres, "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1", name
        )
    )
    if not comment:
        scratch = f"{name}_partial"
        asyncio.run(admin(args.postgres, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
        asyncio.run(admin(args.postgres, f'CREATE DATABASE "{scratch}"'))
        scratch_url = server.set(database=scratch).render_as_string(hide_password=False)
        migrate.upgrade(scratch_url)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="clarion-bench-") as tmp:
            tally = asyncio.run(
                _generate_at(scratch_url, Path(tmp), argparse.Namespace(**{**vars(args), "deliveries": n}))
            )
        comment = json.dumps({"generation_s": round(time.perf_counter() - started, 1), "stages": dict(tally)})
        asyncio.run(admin(args.postgres, f'ALTER DATABASE "{scratch}" RENAME TO "{name}"'))
        asyncio.run(admin(args.postgres, f"COMMENT ON DATABASE \"{name}\" IS '{comment}'"))
    migrate.upgrade(url)
    return url, {**json.loads(comment), "deliveries": n}


async def admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_plain(url), timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def admin_fetch(url: str, sql: str, *arguments: Any) -> Any:
    import asyncpg

    conn = await asyncpg.connect(_plain(url), timeout=10)
    try:
        return await conn.fetchval(sql, *arguments)
    finally:
        await conn.close()


def _plain(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# -- querying -----------------------------------------------------------------------------------------------------


async def query_figures(url: str, args: argparse.Namespace, expected: dict[str, int]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="clarion-bench-") as tmp:
        async with services(url, Path(tmp)) as clarion:
            await clarion.keys.create("bench", key=KEY)
            transport = httpx.ASGITransport(app=create_app(clarion=clarion))
            headers = {"Authorization": f"Bearer {KEY}"}
            async with httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers) as api:
                rows = []
                for name, params in QUERIES:
                    query = {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in params.items()}
                    r = await api.get("/v1/analytics/funnel", params=query)
                    assert r.status_code == 200, r.text
                    if not params:
                        check_exact(r.json()["total"]["stages"], expected)
                    times = []
                    for _ in range(args.repeat):
                        started = time.perf_counter()
                        r = await api.get("/v1/analytics/funnel", params=query)
                        times.append((time.perf_counter() - started) * 1000)
                        assert r.status_code == 200, r.text
                    rows.append(
                        {
                            "query": name,
                            "median_ms": round(statistics.median(times), 1),
                            "p95_ms": round(percentile(times, 0.95), 1),
                            "groups": len(r.json()["groups"]),
                            "cells_read": await cells_read(clarion, params),
                        }
                    )
                return rows


def check_exact(stages: dict[str, int], expected: dict[str, int]) -> None:
    """The funnel's totals are the generator's counts, stage by stage: exact, not sampled."""
    wrong = {s: (stages.get(s, 0), n) for s, n in expected.items() if stages.get(s, 0) != n}
    assert not wrong, f"funnel totals differ from the generated timeline (funnel, generated): {wrong}"


async def cells_read(clarion: bootstrap.Clarion, params: dict[str, Any]) -> int:
    """How many rollup rows the query's range and filters select (in the table the route reads)."""
    table = t.funnel_hourly if params.get("group_by") == "hour" else t.funnel_daily
    if not {"template", "variant"} & set(params):  # the narrow rollup answers it
        table = rollups.NARROW[table]
    query = sa.select(sa.func.count()).select_from(table)
    if "since" in params:
        query = query.where(table.c.bucket >= params["since"], table.c.bucket < params["until"])
    for name, column in (("template", "template_key"), ("variant", "variant")):
        if name in params:
            query = query.where(table.c[column] == params[name])
    async with clarion.db.read() as conn:
        return int((await conn.execute(query)).scalar_one())


# -- rebuild equals append ----------------------------------------------------------------------------------------


async def rebuild_matches(n: int, chunk: int) -> dict[str, Any]:
    """Generate ``n`` deliveries in a scratch SQLite database, then recompute the rollups from the timeline alone
    (``rollups.rebuild``, as ``clarion analytics rebuild``); and the same ``n`` with ``--write rollups`` in
    another: both give the same cells, counts and revenue as ``append``."""
    with tempfile.TemporaryDirectory(prefix="clarion-bench-") as tmp:
        found = {}
        for write in ("timeline", "rollups"):
            url = f"sqlite+aiosqlite:///{tmp}/{write}.db"
            await asyncio.to_thread(migrate.upgrade, url)
            async with services(url, Path(tmp)) as clarion:
                await generate(clarion, n, chunk, write)
                found[write] = await rollup_cells(clarion)
                if write == "timeline":
                    counted = await clarion.db.write(rollups.rebuild)
                    found["rebuild"] = await rollup_cells(clarion)
    appended = found["timeline"]
    return {
        "deliveries": n,
        "events_counted": counted,
        "hourly_cells": len(appended[0]),
        "daily_cells": len(appended[1]),
        "rebuild_equals_append": found["rebuild"] == appended,
        "write_rollups_equals_append": found["rollups"] == appended,
    }


async def rollup_cells(clarion: bootstrap.Clarion) -> tuple[set[tuple[Any, ...]], ...]:
    out = []
    for table in rollups.TABLES:
        columns = [c for c in table.c if c.name != "id"]
        async with clarion.db.read() as conn:
            out.append({(*r[:-1], round(r[-1], 6)) for r in (await conn.execute(sa.select(*columns))).all()})
    return tuple(out)


# -- the rollups' cost on triggered sends -------------------------------------------------------------------------

SERVE = Path(__file__).with_name("_analytics_serve.py")


@contextlib.contextmanager
def serve_through_launcher() -> Any:
    """``triggered.run_once`` starts ``clarion serve``; here it starts the same through ``_analytics_serve``."""
    popen = subprocess.Popen

    def launch(command: list[str], **kwargs: Any) -> Any:
        if command[1:] == ["serve"]:
            command = [sys.executable, str(SERVE), "serve"]
        return popen(command, **kwargs)

    subprocess.Popen = launch  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        subprocess.Popen = popen  # type: ignore[misc]


async def patient_wait_ready(base: str, wait_ready: Callable[[str], Any] = triggered.wait_ready) -> None:
    """``triggered.wait_ready`` allows 20 s; a server starting on a busy shared machine may need longer."""
    for attempt in range(5):
        try:
            return await wait_ready(base)
        except RuntimeError:
            if attempt == 4:
                raise


def rollup_cost(args: argparse.Namespace) -> dict[str, Any]:
    load = argparse.Namespace(clients=args.clients, seconds=args.seconds, rate=args.rate, users=args.users)
    runs: list[dict[str, dict[str, Any]]] = []
    triggered.wait_ready = patient_wait_ready
    with serve_through_launcher():
        for i in range(args.triggered_runs):
            run: dict[str, dict[str, Any]] = {}
            for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
                os.environ["CLARION_BENCH_ROLLUPS"] = mode
                result = triggered.run_once(load, args.policies == "on")
                run[mode] = {
                    "sends_per_s": result["saturated"]["sends_per_s"],
                    "cpu_us_per_send": result["saturated"]["server_cpu_us_per_send"],
                    "paced_cpu_us_per_send": result["paced"]["server_cpu_us_per_send"],
                }
                print(f"  triggered run {i + 1}, rollups {mode}: {run[mode]}", file=sys.stderr, flush=True)
            runs.append(run)
    os.environ.pop("CLARION_BENCH_ROLLUPS", None)
    cost = [1 - r["on"]["sends_per_s"] / r["off"]["sends_per_s"] for r in runs]
    # the server's CPU per send at the offered rate: steadier than throughput when the machine is shared
    cpu = [r["on"]["paced_cpu_us_per_send"] / r["off"]["paced_cpu_us_per_send"] - 1 for r in runs]
    return {
        **triggered.median_of(runs),
        "throughput_cost": round(statistics.median(cost), 3),
        "cost_by_run": [round(c, 3) for c in cost],
        "paced_cpu_cost": round(statistics.median(cpu), 3),
        "paced_cpu_cost_by_run": [round(c, 3) for c in cpu],
    }


# -- output -------------------------------------------------------------------------------------------------------


def table(rows: list[list[Any]], head: list[str]) -> str:
    cells = [head, *[[f"{v:,}" if isinstance(v, int) else str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    lines = [
        " | ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True)))
        for row in cells
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=10_000_000)
    parser.add_argument("--chunk", type=int, default=20_000, help="deliveries per transaction while generating")
    parser.add_argument(
        "--write",
        choices=("timeline", "rollups"),
        default="timeline",
        help="timeline: messages, deliveries, events through db.Inserts (rollups.append counts them); "
        "rollups: only the rollup cells, counted by the generator (checked equal by --check-rebuild)",
    )
    parser.add_argument("--cache", default=f"{tempfile.gettempdir()}/clarion-bench-analytics")
    parser.add_argument("--repeat", type=int, default=25, help="timed repetitions of each query")
    parser.add_argument("--postgres", metavar="ADMIN_URL", help="also on PostgreSQL (a database on this server)")
    parser.add_argument("--postgres-deliveries", type=int, help="deliveries on PostgreSQL (default: --deliveries)")
    parser.add_argument("--check-rebuild", type=int, default=20_000, metavar="N", help="0: skip")
    parser.add_argument("--triggered-runs", type=int, default=3, help="0: skip the rollups' cost")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--policies", choices=("off", "on"), default="off")
    args = parser.parse_args()

    result: dict[str, Any] = {
        "benchmark": "analytics",
        "deliveries": args.deliveries,
        "write": args.write,
        "cpus": os.cpu_count(),
    }
    databases: dict[str, Callable[[argparse.Namespace], tuple[str, dict[str, Any]]]] = {"sqlite": cached_sqlite}
    if args.postgres:
        databases["postgresql"] = cached_postgres
    for name, prepare in databases.items():
        url, facts = prepare(args)
        figures = asyncio.run(query_figures(url, args, facts["stages"]))
        result[name] = {**facts, "queries": figures}
        size = facts.get("deliveries", args.deliveries)
        print(f"\nfunnel on {name}, {size:,} deliveries, {args.repeat} repetitions (ASGI app, ms)")
        print(
            table(
                [[f["query"], f["median_ms"], f["p95_ms"], f["groups"], f["cells_read"]] for f in figures],
                ["query", "median", "p95", "groups", "rollup rows"],
            )
        )
    if args.check_rebuild:
        result["rebuild_check"] = check = asyncio.run(rebuild_matches(args.check_rebuild, args.chunk))
        print(f"\non {check['deliveries']:,} generated deliveries, the rollups of append equal those of")
        rebuilt, direct = check["rebuild_equals_append"], check["write_rollups_equals_append"]
        print(f"  rollups.rebuild: {rebuilt}; --write rollups: {direct}")
    if args.triggered_runs:
        result["rollup_cost"] = cost = rollup_cost(args)
        print(f"\ntriggered sends, rollups on vs off (medians of {args.triggered_runs} runs, policies {args.policies})")
        rows = [
            [mode, cost[mode]["sends_per_s"], cost[mode]["cpu_us_per_send"], cost[mode]["paced_cpu_us_per_send"]]
            for mode in ("on", "off")
        ]
        print(table(rows, ["rollups", "sends/s saturated", "CPU µs/send saturated", "CPU µs/send at 1,000/s"]))
        print(f"throughput cost of the rollups: {cost['throughput_cost']:.1%} (by run: {cost['cost_by_run']})")
        print(f"CPU per send at 1,000/s: {cost['paced_cpu_cost']:+.1%} (by run: {cost['paced_cpu_cost_by_run']})")
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
