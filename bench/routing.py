"""Routing benchmark: what choosing a provider costs, and what a failing provider costs the traffic behind a route.

**failover** — ``clarion serve`` (embedded: SQLite, one worker; ``--database ADMIN_URL`` runs it on a fresh
PostgreSQL database) with two ``sms_http`` accounts, ``a`` and ``b``, on two loopback HTTP vendors served by this
process, behind one route with equal weights. Verification SMS are sent through ``POST /v1/messages`` at
``--rate`` per second for ``--seconds``. Each run measures two scenarios on fresh servers:

* ``healthy``: both vendors answer 200;
* ``degraded``: vendor ``b`` answers every second request with 503 during the middle third of the load.

For each: ``delivered_per_s`` (deliveries ``sent`` / seconds from the first accepted to the last sent), the share
of deliveries that needed a second provider (``attempts`` > 1, or an earlier attempt went to another account),
p50/p99 accepted → sent, failed deliveries, the server's CPU per delivery, and ``b``'s breaker at the end.
``degraded_vs_healthy`` gives the ratios measured in the same run; the target is throughput ≥ 0.8× healthy
and p99 ≤ 2× healthy. The server runs with the deployed defaults (retry schedule, breaker thresholds).

**decision** — the CPU of ``ProviderRegistry.choose`` per delivery, over claimed batches of 200 SMS, with the
registry's accounts and routes cached (as they are between two refreshes); each configuration adds to the one
before:

* ``builtin``: no account and no route (the built-in file provider; ``bench/triggered.py``'s setup);
* ``accounts``: three enabled SMS accounts, no route (they share the traffic equally);
* ``phone_routes``: a route on ``country_code`` + ``signature`` (70/30, with failover) and a catch-all route;
* ``message_routes``: and a route on ``category`` + ``department`` (one query per batch for the messages);
* ``retries``: the same batch as second attempts (a second query per batch, for the providers tried).

``share_of_server_cpu_per_delivery`` sets the costliest configuration against the healthy failover server's CPU
per delivery (the question: does routing cost ≤ 5% of the triggered throughput? compare also with
``bench/triggered.py``'s ``server_cpu_us_per_send``, the file provider's cheaper sends).

``--retry-base`` sets the servers' ``CLARION_RETRY_BASE_SECONDS``: a what-if, to see what the first retry's delay
costs the degraded run.

Prints one JSON line: medians over ``--runs``. Run: ``.venv/bin/python bench/routing.py --runs 3``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import create_async_engine

import triggered
from clarion.channels import registry
from clarion.store import migrate, outbox
from clarion.store import tables as t
from clarion.store.db import Database

KEY = triggered.KEY
CLARION = str(Path(sys.executable).parent / "clarion")
FINAL = ("sent", "failed", "expired")

BATCH = 200


def claimed(now: datetime, attempts: int = 1) -> list[outbox.Claimed]:
    return [
        outbox.Claimed(
            f"d{i}",
            f"m{i}",
            "u",
            "sms",
            "a" if attempts > 1 else None,
            f"+8613800{i:06d}",
            {"text": "【Acme】hi"},
            attempts,
            2,
            now,
        )
        for i in range(BATCH)
    ]


async def per_delivery(providers: registry.ProviderRegistry, batch: list[outbox.Claimed], rounds: int) -> float:
    providers.invalidate()
    await providers.choose(batch)  # loads the accounts and routes once
    started = time.process_time()
    for _ in range(rounds):
        await providers.choose(batch)
    return round((time.process_time() - started) / (rounds * len(batch)) * 1e6, 2)


async def decision_cost(url: str, directory: str, rounds: int) -> dict[str, Any]:
    db = Database(url)
    builtins = [registry.Account("file", None, "file", {"directory": directory})]
    providers = registry.ProviderRegistry(db, builtins, ttl=3600)
    now = datetime.now(UTC)
    stamps = {"created_at": now, "updated_at": now}
    batch = claimed(now)
    out = {"builtin": await per_delivery(providers, batch, rounds)}

    async def accounts(conn: Any) -> None:
        await conn.execute(
            t.providers.insert(),
            [
                {"name": n, "channel": "sms", "kind": "file", "config": {"directory": directory}, "enabled": True}
                | stamps
                for n in ("a", "b", "c")
            ],
        )

    await db.write(accounts)
    out["accounts"] = await per_delivery(providers, batch, rounds)

    def route(key: str, match: dict[str, str], weights: dict[str, int], failover: list[str]) -> dict[str, Any]:
        chosen = [{"name": n, "weight": w} for n, w in weights.items()]
        return {"key": key, "channel": "sms", "match": match, "providers": chosen, "failover": failover}

    async def phone_routes(conn: Any) -> None:
        cn = route("cn", {"country_code": "+86", "signature": "Acme"}, {"a": 70, "b": 30}, ["c"])
        rest = route("rest", {}, {"c": 1}, [])
        await conn.execute(t.routes.insert(), [r | {"enabled": True} | stamps for r in (cn, rest)])

    await db.write(phone_routes)
    out["phone_routes"] = await per_delivery(providers, batch, rounds)

    async def message_routes(conn: Any) -> None:
        template = {"key": "t", "name": "t", "category": "verification", "priority": "normal", "department": "risk"}
        await conn.execute(t.templates.insert().values(**template, channels={}, version=1, **stamps))
        message = {"request_id": "r", "user_id": "u", "template_key": "t", "template_version": 1, "data": {}}
        await conn.execute(
            t.messages.insert(),
            [
                {"id": f"m{i}", "category": "verification", "priority": "normal", "status": "queued"} | message | stamps
                for i in range(BATCH)
            ],
        )
        codes = route("codes", {"category": "verification", "department": "risk"}, {"a": 1, "b": 1}, [])
        await conn.execute(t.routes.insert().values(**codes, enabled=True, **stamps))

    await db.write(message_routes)
    out["message_routes"] = await per_delivery(providers, batch, rounds)
    out["retries"] = await per_delivery(providers, claimed(now, attempts=2), rounds)
    await db.close()
    return out


# -- failover ------------------------------------------------------------------------------------------------


class Vendor:
    """An SMS vendor on loopback: 200 with a message id, or, while ``failing`` is true, 503 for every second
    request."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failing = False
        self.requests = 0
        self.refused = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def send(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests += 1
        if self.failing and self.requests % 2 == 0:
            self.refused += 1
            return web.json_response({"error": "busy"}, status=503)
        return web.json_response({"message_id": f"{self.name}-{self.requests}"})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/send", self.send)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def configure(session: aiohttp.ClientSession, base: str, vendors: list[Vendor], users: int) -> None:
    for vendor in vendors:
        config = {
            "url": f"http://127.0.0.1:{vendor.port}/send",
            "allow_private_networks": True,
            "message_id_path": "message_id",
            "timeout": 5,
        }
        body = {"channel": "sms", "kind": "sms_http", "config": config}
        async with session.put(f"{base}/v1/providers/{vendor.name}", json=body) as r:
            assert r.status in (200, 201), await r.text()
    route = {"channel": "sms", "providers": [{"name": v.name, "weight": 1} for v in vendors]}
    async with session.put(f"{base}/v1/routes/sms", json=route) as r:
        assert r.status in (200, 201), await r.text()
    await triggered.setup(session, base, users)


async def stretch(vendor: Vendor, seconds: float) -> None:
    """``vendor`` fails half its requests during the middle third of the load."""
    await asyncio.sleep(seconds / 3)
    vendor.failing = True
    await asyncio.sleep(seconds / 3)
    vendor.failing = False


async def outcomes(url: str, since: datetime, *, patience: float) -> list[dict[str, Any]]:
    """The deliveries accepted since ``since``, once every one is final (or after ``patience`` seconds), each
    with the providers its earlier attempts went to."""
    d, e = t.deliveries, t.delivery_events
    engine = create_async_engine(url)
    deadline = time.monotonic() + patience
    try:
        while True:
            async with engine.connect() as conn:
                rows = (
                    await conn.execute(
                        sa.select(d.c.id, d.c.status, d.c.provider, d.c.attempts, d.c.created_at, d.c.sent_at).where(
                            d.c.created_at >= since
                        )
                    )
                ).all()
            if all(r.status in FINAL for r in rows) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        async with engine.connect() as conn:
            events = (
                await conn.execute(
                    sa.select(e.c.delivery_id, e.c.detail).where(
                        e.c.status.in_(["queued", "failed"]), e.c.at >= since, e.c.detail.is_not(None)
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    tried: dict[str, set[str]] = {}
    for event in events:
        provider = event.detail.get("provider") if isinstance(event.detail, dict) else None
        if isinstance(provider, str):
            tried.setdefault(event.delivery_id, set()).add(provider)
    return [{**r._asdict(), "tried": tried.get(r.id, set())} for r in rows]


def summary(rows: list[dict[str, Any]], cpu: float) -> dict[str, Any]:
    sent = [r for r in rows if r["status"] == "sent" and r["sent_at"] is not None]
    latencies = [(r["sent_at"] - r["created_at"]).total_seconds() for r in sent]
    first = min(r["created_at"] for r in rows)
    last = max(r["sent_at"] for r in sent)
    second = [r for r in rows if r["attempts"] > 1 or (r["tried"] - {r["provider"]})]
    return {
        "deliveries": len(rows),
        "sent": len(sent),
        "failed": sum(r["status"] == "failed" for r in rows),
        "unfinished": sum(r["status"] not in FINAL for r in rows),
        "delivered_per_s": round(len(sent) / (last - first).total_seconds(), 1),
        "second_provider_share": round(len(second) / len(rows), 4),
        "sent_p50_ms": round(triggered.percentile(latencies, 0.5) * 1000, 1),
        "sent_p99_ms": round(triggered.percentile(latencies, 0.99) * 1000, 1),
        "sent_max_ms": round(max(latencies) * 1000, 1),
        "server_cpu_us_per_delivery": round(cpu / len(rows) * 1e6),
    }


async def ready(base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    """Wait for ``clarion serve`` to answer (a loaded machine may take a while to start it)."""
    deadline = time.monotonic() + 90
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline and server.poll() is None:
            try:
                async with session.get(f"{base}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    tail = (await asyncio.to_thread(log.read_text))[-2000:]
    raise RuntimeError(f"clarion serve did not become ready: {tail}")


def serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([CLARION, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)


async def scenario(args: argparse.Namespace, url: str, tmpdir: Path, *, degraded: bool) -> dict[str, Any]:
    vendors = [Vendor("a"), Vendor("b")]
    for vendor in vendors:
        await vendor.start()
    port = triggered.free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "CLARION_DATABASE_URL": url,
        "CLARION_DATA_DIR": str(tmpdir),
        "CLARION_OUTBOX_DIR": str(tmpdir / "outbox"),
        "CLARION_API_KEY": KEY,
        "CLARION_PORT": str(port),
        "CLARION_WORKERS": "1",
    }
    if args.retry_base is not None:
        env["CLARION_RETRY_BASE_SECONDS"] = str(args.retry_base)
    server = serve(env, tmpdir / "serve.log")
    try:
        await ready(base, server, tmpdir / "serve.log")
        headers = {"Authorization": f"Bearer {KEY}"}
        connector = aiohttp.TCPConnector(limit=args.clients)
        async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
            await configure(session, base, vendors, args.users)
            since = datetime.now(UTC)
            cpu = triggered.cpu_seconds(server.pid)
            failing = asyncio.create_task(stretch(vendors[1], args.seconds)) if degraded else None
            load = await triggered.load(
                session, base, clients=args.clients, seconds=args.seconds, users=args.users, rate=args.rate
            )
            if failing is not None:
                await failing
            rows = await outcomes(url, since, patience=args.drain)
            cpu = triggered.cpu_seconds(server.pid) - cpu
            async with session.get(f"{base}/v1/providers/b/health") as r:
                health = await r.json() if r.status == 200 else {}
        result = summary(rows, cpu)
        result["accept_errors"] = load["errors"]
        result["b_refused"] = vendors[1].refused
        result["b_breaker"] = (health.get("breaker") or {}).get("state") if isinstance(health, dict) else None
        return result
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        for vendor in vendors:
            await vendor.stop()


async def admin(url: str, sql: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(sql))
    finally:
        await engine.dispose()


async def fresh(args: argparse.Namespace, degraded: bool) -> dict[str, Any]:
    """One scenario on a fresh database (SQLite in a temporary directory, or a PostgreSQL database dropped after)."""
    with tempfile.TemporaryDirectory(prefix="clarion-routing-") as tmp:
        if not args.database:
            return await scenario(args, f"sqlite+aiosqlite:///{tmp}/clarion.db", Path(tmp), degraded=degraded)
        admin_url = sa.make_url(args.database).set(drivername="postgresql+asyncpg")
        plain = admin_url.render_as_string(hide_password=False)
        name = f"clarion_routing_{uuid.uuid4().hex[:8]}"
        await admin(plain, f"CREATE DATABASE {name}")
        try:
            url = admin_url.set(database=name).render_as_string(hide_password=False)
            await asyncio.to_thread(migrate.upgrade, url)
            return await scenario(args, url, Path(tmp), degraded=degraded)
        finally:
            await admin(plain, f"DROP DATABASE {name} WITH (FORCE)")


def ratios(degraded: dict[str, Any], healthy: dict[str, Any]) -> dict[str, float]:
    return {
        "delivered_per_s": round(degraded["delivered_per_s"] / healthy["delivered_per_s"], 3),
        "sent_p99_ms": round(degraded["sent_p99_ms"] / healthy["sent_p99_ms"], 3),
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def walk(items: list[Any]) -> Any:
        if isinstance(items[0], dict):
            return {k: walk([i[k] for i in items]) for k in items[0]}
        if all(isinstance(i, int | float) and not isinstance(i, bool) for i in items):
            return statistics.median(items)
        return items

    return walk(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1, help="runs of both scenarios; medians are printed")
    parser.add_argument("--rate", type=float, default=20.0, help="sends per second offered")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the load")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--drain", type=float, default=180.0, help="seconds to wait for every delivery to be final")
    parser.add_argument("--database", metavar="ADMIN_URL", help="run the servers on PostgreSQL instead of SQLite")
    parser.add_argument("--rounds", type=int, default=200, help="batches timed per decision configuration")
    parser.add_argument(
        "--retry-base",
        type=float,
        help="CLARION_RETRY_BASE_SECONDS for the servers (a what-if; default: the deployed 10 s)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="clarion-bench-") as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/clarion.db"
        migrate.upgrade(url)
        decision = asyncio.run(decision_cost(url, tmp, args.rounds))
    runs = []
    for _ in range(args.runs):
        healthy = asyncio.run(fresh(args, degraded=False))
        degraded = asyncio.run(fresh(args, degraded=True))
        runs.append({"healthy": healthy, "degraded": degraded, "degraded_vs_healthy": ratios(degraded, healthy)})
    result: dict[str, Any] = median_of(runs)
    versus = result["degraded_vs_healthy"]
    costliest = max(decision.values())
    result.update(
        benchmark="routing",
        database="postgresql" if args.database else "sqlite",
        runs=len(runs),
        rate=args.rate,
        seconds=args.seconds,
        cpus=os.cpu_count(),
        ratios_by_run=[run["degraded_vs_healthy"] for run in runs],
        retry_base_s=args.retry_base if args.retry_base is not None else "default (10)",
        target_met={"throughput": versus["delivered_per_s"] >= 0.8, "p99": versus["sent_p99_ms"] <= 2.0},
        # a healthy p50 over a second: the server could not keep up with --rate, the figures measure a backlog
        healthy_saturated=result["healthy"]["sent_p50_ms"] > 1000,
        decision={
            "batch": BATCH,
            "us_per_delivery": decision,
            "share_of_server_cpu_per_delivery": round(costliest / result["healthy"]["server_cpu_us_per_delivery"], 4),
        },
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
