"""Campaign benchmark: one campaign to ``--users`` generated users (default 1,000,000) on the embedded default —
SQLite, the file provider, every policy on — from ``start`` to the last delivery handed to the provider.

Prints one JSON line: the seconds from start to the last delivery sent and when the fan-out finished; the
rates of both; ``timeline`` (every second: [seconds, audience users processed, deliveries sent]); peak RSS;
and, for the bound, a bare ``sqlite3`` executemany of one row per user (median of 3) and the ratio R of the two
(start → last sent over the bare write, measured in the same run, so that the machine's speed cancels out).

``--urgent-every 0.25`` also sends a verification code (an ``urgent`` template) through the API every 0.25 s,
first 20 on the idle server and then throughout the fan-out, and reports each code's accepted → handed to the
provider latency (p50, p99, max) idle and during the fan-out, and the API's answer time.

Setup (not timed): users are inserted straight into SQLite; policies get the configuration of
``bench/triggered.py --policies on`` (two caps, a 1,000-word block list, a 100-word mask list, 1,000 address
suppressions); the template is a ``notification`` (so the quiet-hours policy runs but the night does not defer
it). The audience comes from a stand-in for ``clarion.segments`` returning the generated ids (the fan-out is
what is measured). API, runner and ``--workers`` delivery workers run in this one process, as ``clarion serve``.

``--postgres ADMIN_URL`` runs the same on a fresh PostgreSQL database created on that server (and dropped after)
with the counters in Redis (``--redis-url``), the deployment for several processes; users are then inserted
through SQLAlchemy in chunks.

Run: ``.venv/bin/python bench/campaign.py`` (``--users 100000`` for a quick look;
``--postgres postgresql://postgres@127.0.0.1:5432/test`` for PostgreSQL + Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.store import migrate
from clarion.store import tables as t
from population import bench_settings, configure_policies, generate_users, put, put_notification, user

KEY = "clk_bench_campaign_key"
# The users were imported a while before the campaign (an import in the last seconds is re-read once by the
# segment index's poll; that is the import's cost, not the campaign's).
IMPORTED_AGO = timedelta(hours=1)


async def configure(api: httpx.AsyncClient) -> None:
    await configure_policies(api)
    text = "【Clarion】{name}, spring offers in ${user.city} this week"
    await put_notification(api, "spring", "Spring", text)
    await put(api, "/v1/campaigns/spring", {"template": "spring", "audience": {"segment": "everyone"}})
    login = {
        "name": "Login code",
        "category": "verification",
        "priority": "urgent",
        "channels": {"sms": {"text": "【Clarion】Your code is {code}"}},
    }
    await put(api, "/v1/templates/login", login)


async def urgent_sends(api: httpx.AsyncClient, every: float, stop: asyncio.Event, offset: int) -> list[float]:
    """A verification code to a different user every ``every`` seconds until ``stop``; returns the seconds each
    took to be accepted (202)."""
    accepted: list[float] = []
    i = offset
    while not stop.is_set():
        began = time.perf_counter()
        body = {"template": "login", "to": [f"u{i}"], "data": {"code": f"{i % 1_000_000:06d}"}}
        r = await api.post("/v1/messages", json=body)
        assert r.status_code == 202, r.text
        accepted.append(time.perf_counter() - began)
        i += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)
    return accepted


async def urgent_latencies(clarion: bootstrap.Clarion) -> dict[str, list[float]]:
    """Accepted → handed to the provider (seconds) of every verification code sent, before and during the run."""
    d, m = t.deliveries, t.messages
    query = (
        sa.select(m.c.user_id, d.c.created_at, d.c.sent_at)
        .join(m, m.c.id == d.c.message_id)
        .where(m.c.template_key == "login")
    )
    async with clarion.db.read() as conn:
        rows = (await conn.execute(query)).all()
    out: dict[str, list[float]] = {"idle": [], "during": []}
    for user_id, created, sent in rows:
        if sent is not None:
            out["idle" if int(user_id[1:]) >= IDLE_OFFSET else "during"].append((sent - created).total_seconds())
    return out


def quantiles_ms(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"n": len(ordered), "p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1] * 1000, 1)}


IDLE_CODES = 20
IDLE_OFFSET = 10**9  # the idle codes go to users from here on (unknown users fail; see run: they are created)


def bare_sqlite(db: Path, rows: int, *, repeat: int = 3) -> float:
    """rows/s of a bare executemany of message-like rows in one transaction (WAL, synchronous=NORMAL): the median
    of ``repeat`` runs, each into a new file (one run alone varies by half on a shared machine)."""
    data = [(f"{i:032d}", f"u{i}", "queued", '{"a": 1}', "2026-01-01 00:00:00") for i in range(rows)]
    rates = []
    for n in range(repeat):
        path = db.with_name(f"bare{n}.db")
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE m (id TEXT PRIMARY KEY, user_id TEXT, status TEXT, data TEXT, at TEXT)")
        started = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO m VALUES (?, ?, ?, ?, ?)", data)
        conn.commit()
        rates.append(rows / (time.perf_counter() - started))
        conn.close()
        path.unlink()
    return statistics.median(rates)


async def generate_users_sql(clarion: bootstrap.Clarion, n: int) -> None:
    """The same users as ``generate_users``, through SQLAlchemy (for PostgreSQL)."""
    stamped = datetime.now(UTC) - IMPORTED_AGO
    for start in range(0, n, 20_000):
        rows = [user(i, stamped) for i in range(start, min(n, start + 20_000))]

        async def job(conn: Any, rows: list[dict[str, Any]] = rows) -> None:
            await conn.execute(t.users.insert(), rows)

        await clarion.db.write(job)


async def progress(clarion: bootstrap.Clarion) -> tuple[Any, int, int]:
    """(the run's status, processed, audience), deliveries still pending, deliveries sent."""
    d = t.deliveries
    async with clarion.db.read() as conn:
        run_row = (
            await conn.execute(sa.select(t.campaign_runs.c.status, t.campaign_runs.c.processed).limit(1))
        ).first()
        pending = (
            await conn.execute(
                sa.select(sa.func.count()).select_from(d).where(d.c.status.in_(("queued", "sending", "deferred")))
            )
        ).scalar_one()
        sent = (await conn.execute(sa.select(sa.func.count()).select_from(d).where(d.c.status == "sent"))).scalar_one()
    return run_row, pending, sent


async def run(args: argparse.Namespace, tmp: Path, url: str) -> dict[str, Any]:
    settings = bench_settings(
        tmp,
        url,
        KEY,
        redis_url=args.redis_url if args.postgres else None,
        redis_prefix=f"bench{int(time.time())}:",
        workers=args.workers,
        claim_batch=args.claim_batch,
        campaign_batch=args.batch,
    )
    clarion = bootstrap.build(settings)
    clarion.campaigns.poll_interval = 0.05
    ids = [f"u{i}" for i in range(args.users)]

    async def everyone(spec: Any) -> list[str]:
        return ids

    clarion.segments.audience = everyone  # type: ignore[method-assign]
    if args.postgres:
        await generate_users_sql(clarion, args.users)
        await _admin(url, "ANALYZE users")  # what autovacuum does after a big import
    await clarion.start()
    transport = httpx.ASGITransport(app=create_app(clarion=clarion))
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers) as api:
            await configure(api)
            idle_accepts: list[float] = []
            if args.urgent_every:  # the same codes on an idle server first, for comparison
                for i in range(IDLE_CODES):
                    user_id = f"u{IDLE_OFFSET + i}"
                    await put(api, f"/v1/users/{user_id}", {"addresses": {"sms": f"+86137{i:08d}"}})
                stop_idle = asyncio.Event()
                idle = asyncio.create_task(urgent_sends(api, args.urgent_every, stop_idle, IDLE_OFFSET))
                await asyncio.sleep(args.urgent_every * (IDLE_CODES - 0.5))
                stop_idle.set()
                idle_accepts = await idle
                await asyncio.sleep(0.5)
            for action in ("submit", "approve", "start"):
                if action == "approve":
                    await clarion.keys.create("reviewer", ("approver",), key="clk_bench_reviewer")
                    h = {"Authorization": "Bearer clk_bench_reviewer"}
                else:
                    h = headers
                started = time.perf_counter()
                cpu_started = time.process_time()
                r = await api.post(f"/v1/campaigns/spring/{action}", headers=h)
                assert r.status_code == 200, r.text
        timeline: list[list[float]] = []
        fanout_done: float | None = None
        vacuuming = asyncio.create_task(stand_in_autovacuum(args, url)) if args.postgres else None
        stop_urgent = asyncio.Event()
        urgent_client = httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers)
        urgent = (
            asyncio.create_task(urgent_sends(urgent_client, args.urgent_every, stop_urgent, 0))
            if args.urgent_every
            else None
        )
        while True:
            await asyncio.sleep(1.0)
            now = time.perf_counter() - started
            run_row, pending, sent = await progress(clarion)
            processed = run_row[1] if run_row else 0
            timeline.append([round(now, 1), processed, sent])
            if run_row and run_row[0] == "completed" and fanout_done is None:
                fanout_done = now
                stop_urgent.set()
            if run_row and run_row[0] == "completed" and pending == 0:
                break
            if now > args.timeout:
                break
        cpu = time.process_time() - cpu_started
        stop_urgent.set()
        during_accepts = await urgent if urgent is not None else []
        await urgent_client.aclose()
        if vacuuming is not None:
            vacuuming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await vacuuming
        d = t.deliveries
        async with clarion.db.read() as conn:
            last_sent = (await conn.execute(sa.select(sa.func.max(d.c.sent_at), sa.func.min(d.c.created_at)))).first()
            counts = dict((await conn.execute(sa.select(d.c.status, sa.func.count()).group_by(d.c.status))).all())
        codes = await urgent_latencies(clarion)
    finally:
        await clarion.close()
    total = timeline[-1][0] if timeline else 0.0
    return {
        "users": args.users,
        "seconds_to_last_sent": total,
        "seconds_fanout": fanout_done,
        "fanout_users_per_s": round(args.users / fanout_done, 1) if fanout_done else None,
        "end_to_end_deliveries_per_s": round(counts.get("sent", 0) / total, 1) if total else None,
        # the process's CPU time over the same span (both threads: the event loop and the SQLite writer), per
        # audience user: steadier than the wall clock on a shared machine
        "cpu_seconds": round(cpu, 2),
        "cpu_us_per_user": round(cpu / args.users * 1e6, 1),
        "deliveries": counts,
        "database": "postgresql+redis" if args.postgres else "sqlite",
        "vacuum_every_s_when_no_autovacuum": args.vacuum_seconds if args.postgres else None,
        "first_created": str(last_sent[1]),
        "last_sent": str(last_sent[0]),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "workers": args.workers,
        "batch": args.batch,
        "claim_batch": args.claim_batch,
        "timeline": timeline,
        **(
            {
                "urgent_every_s": args.urgent_every,
                # accepted → handed to the provider, of a verification code sent every --urgent-every seconds
                "urgent_sent_ms_idle": quantiles_ms(codes["idle"]),
                "urgent_sent_ms_during_fanout": quantiles_ms(codes["during"]),
                # the POST's answer (202), as its client saw it
                "urgent_accept_ms_idle": quantiles_ms(idle_accepts),
                "urgent_accept_ms_during_fanout": quantiles_ms(during_accepts),
            }
            if args.urgent_every
            else {}
        ),
    }


HOT_TABLES = ("deliveries", "messages", "delivery_events", "campaign_audience", "campaign_runs")


async def stand_in_autovacuum(args: argparse.Namespace, url: str) -> None:
    """When the server runs without autovacuum (a server tuned for test suites), do its job on the tables a
    campaign churns — VACUUM (ANALYZE) every ``--vacuum-seconds`` — as a production server would: without it
    the dead rows every claim and completion leave behind, and plans made without statistics, slow the run down
    without bound."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
    try:
        if await conn.fetchval("SHOW autovacuum") == "on":
            return
        while True:
            await asyncio.sleep(args.vacuum_seconds)
            await conn.execute(f"VACUUM (ANALYZE) {', '.join(HOT_TABLES)}")
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_postgres(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, migrated database on ``admin_url``'s server (its asyncpg URL), dropped afterwards."""
    name = f"{prefix}_{time.time_ns()}"
    asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    url = sa.make_url(admin_url).set(drivername="postgresql+asyncpg", database=name)
    try:
        url_text = url.render_as_string(hide_password=False)
        migrate.upgrade(url_text)
        yield url_text
    finally:
        asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=1, help="delivery workers in the process")
    parser.add_argument("--batch", type=int, default=1000, help="CLARION_CAMPAIGN_BATCH")
    parser.add_argument("--claim-batch", type=int, default=200, help="CLARION_CLAIM_BATCH")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument(
        "--urgent-every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also send a verification code (urgent) this often during the fan-out, and report its latency",
    )
    parser.add_argument("--postgres", metavar="ADMIN_URL", help="run on PostgreSQL (+ Redis counters) instead")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument(
        "--vacuum-seconds", type=float, default=10.0, help="PostgreSQL without autovacuum: VACUUM (ANALYZE) this often"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clarion-campaign-bench-") as tmp:
        if args.postgres:
            with fresh_postgres(args.postgres, "clarion_bench") as url_text:
                result = asyncio.run(run(args, Path(tmp), url_text))
        else:
            migrate.upgrade(f"sqlite+aiosqlite:///{tmp}/clarion.db")
            generate_users(Path(tmp) / "clarion.db", args.users, datetime.now(UTC) - IMPORTED_AGO)
            result = asyncio.run(run(args, Path(tmp), f"sqlite+aiosqlite:///{tmp}/clarion.db"))
            # the ceiling: a bare executemany of as many rows as the run wrote
            result["bare_sqlite_rows_per_s"] = round(bare_sqlite(Path(tmp) / "clarion.db", min(args.users, 1_000_000)))
            # R: start → last sent over the bare write of one row per user, both in this run
            result["ratio_R"] = round(result["seconds_to_last_sent"] * result["bare_sqlite_rows_per_s"] / args.users, 1)
    result["rows_written_per_user"] = (
        "message + delivery (written leased) + 3 events at fan-out; 1 event + 2 delivery updates + 1 message"
        " update at the outcome"
    )
    print(json.dumps(result), file=sys.stdout)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
