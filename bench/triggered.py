"""Triggered-send benchmark: ``clarion serve`` on the embedded default (SQLite, file provider) under HTTP load.

Prints one JSON line:
- ``saturated``: single-recipient ``POST /v1/messages`` from ``--clients`` concurrent keep-alive connections
  for ``--seconds``: accepted sends/s and p50/p99 accept latency;
- ``paced``: the same at a fixed ``--rate`` (sends/s, default 1000): p50/p99 accept latency and p50/p99
  accepted→sent latency (from each delivery's ``created_at`` → ``sent_at`` in the database);
- in both, ``server_cpu_us_per_send``: the server process's CPU time (API and delivery) per accepted send;
- ``bare_sqlite_rows_per_s``: the same number of message rows written by a bare ``sqlite3`` executemany in one
  transaction (WAL, synchronous=NORMAL) — the ceiling a Python SQLite writer could reach on this machine.

``--policies`` picks the policy configuration: ``off`` (all seven disabled), ``on`` (all seven on, with two
frequency caps, a 1,000-word block list, a 100-word mask list and 1,000 address suppressions in place), or
``both`` (the default): each run measures ``off`` then ``on`` on fresh servers, and ``on_vs_off`` gives the
ratios of the two, run by run (medians over runs).

``--priority urgent`` makes the code an urgent send (the urgent lane: each accepted send is handed to the
server's dispatcher as it commits, instead of being claimed); the default is ``high``.

Run: ``.venv/bin/python bench/triggered.py`` (or ``make bench``); ``--runs 3`` repeats and reports medians.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

KEY = "clk_bench_key"
# Every send in a server's life has its own code, so no two are duplicates (dedup would filter them).
SEQUENCE = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wait_ready(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"{base}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("clarion serve did not become ready")


async def setup(session: aiohttp.ClientSession, base: str, users: int, priority: str = "high") -> None:
    template = {
        "name": "Code",
        "category": "verification",
        "priority": priority,
        "channels": {"sms": {"text": "{name}, your code is ${data.code}"}},
    }
    async with session.put(f"{base}/v1/templates/code", json=template) as r:
        assert r.status in (200, 201), await r.text()
    sem = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with (
            sem,
            session.put(
                f"{base}/v1/users/u{i}",
                json={"attributes": {"name": f"User {i}"}, "addresses": {"sms": f"+861380013{i % 10000:04d}"}},
            ) as r,
        ):
            assert r.status in (200, 201), await r.text()

    await asyncio.gather(*(one(i) for i in range(users)))


async def load(
    session: aiohttp.ClientSession, base: str, *, clients: int, seconds: float, users: int, rate: float | None
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    counter = 0
    start = time.perf_counter()

    async def client(c: int) -> None:
        nonlocal errors, counter
        while True:
            now = time.perf_counter()
            if now >= deadline:
                return
            i = counter
            counter += 1
            if rate:
                due = start + i / rate
                if due > now:
                    await asyncio.sleep(due - now)
                    if time.perf_counter() >= deadline:
                        return
            body = {"template": "code", "to": f"u{i % users}", "data": {"code": f"{next(SEQUENCE):07d}"}}
            t0 = time.perf_counter()
            try:
                async with session.post(f"{base}/v1/messages", json=body) as r:
                    await r.read()
                    ok = r.status == 202
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    await asyncio.gather(*(client(c) for c in range(clients)))
    elapsed = time.perf_counter() - start
    return {
        "accepted": len(latencies),
        "errors": errors,
        "sends_per_s": round(len(latencies) / elapsed, 1),
        "accept_p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "accept_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }


def sent_latencies(db: Path, since: str) -> tuple[list[float], int]:
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT created_at, sent_at FROM deliveries WHERE created_at >= ? ORDER BY created_at", (since,)
    ).fetchall()
    conn.close()
    parse = datetime.fromisoformat
    done = [(parse(s) - parse(c)).total_seconds() for c, s in rows if s]
    return done, len(rows) - len(done)


def bare_sqlite(rows: int, directory: Path) -> float:
    path = directory / "bare.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE messages (id TEXT PRIMARY KEY, user_id TEXT, template TEXT, status TEXT, "
        "data TEXT, created_at TEXT)"
    )
    data = [
        (f"{i:026d}", f"u{i}", "code", "queued", '{"code": "123456"}', "2026-01-01 00:00:00.000000")
        for i in range(rows)
    ]
    t0 = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)", data)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return rows / elapsed


POLICIES = ("consent", "suppression", "quiet_hours", "dedup", "keywords", "caps", "safety_valve")


async def configure_policies(session: aiohttp.ClientSession, base: str, on: bool) -> None:
    """``on``: every policy enabled and given something to do; ``off``: every policy disabled."""

    async def put(path: str, body: Any) -> None:
        async with session.put(f"{base}{path}", json=body) as r:
            assert r.status in (200, 201), await r.text()

    await put("/v1/policies/settings", {"enabled": dict.fromkeys(POLICIES, on)})
    if not on:
        return
    await put("/v1/policies/caps/sms-day", {"limit": 30, "window": {"unit": "day"}, "channel": "sms"})
    cap = {"limit": 5, "window": {"unit": "day"}, "channel": "sms", "per_department": True}
    await put("/v1/policies/caps/sms-dept-day", cap)
    await put("/v1/keyword-lists/blocked", {"action": "block", "words": [f"blocked{i:04d}" for i in range(1000)]})
    await put("/v1/keyword-lists/masked", {"action": "mask", "words": [f"rival{i:03d}" for i in range(100)]})
    sem = asyncio.Semaphore(16)

    async def suppress(i: int) -> None:
        body = {"address": f"+861390013{i:04d}", "source": "admin"}
        async with sem, session.post(f"{base}/v1/suppressions", json=body) as r:
            assert r.status in (200, 201), await r.text()

    await asyncio.gather(*(suppress(i) for i in range(1000)))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(args: argparse.Namespace, policies: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="clarion-bench-") as tmp:
        tmpdir = Path(tmp)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "CLARION_DATABASE_URL": f"sqlite+aiosqlite:///{tmpdir}/clarion.db",
            "CLARION_DATA_DIR": str(tmpdir),
            "CLARION_OUTBOX_DIR": str(tmpdir / "outbox"),
            "CLARION_API_KEY": KEY,
            "CLARION_PORT": str(port),
        }
        clarion = str(Path(sys.executable).parent / "clarion")
        log = (tmpdir / "serve.log").open("wb")
        server = subprocess.Popen([clarion, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            return asyncio.run(measure(args, base, tmpdir, policies, server.pid))
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()


async def measure(args: argparse.Namespace, base: str, tmpdir: Path, policies: bool, pid: int) -> dict[str, Any]:
    await wait_ready(base)
    headers = {"Authorization": f"Bearer {KEY}"}
    connector = aiohttp.TCPConnector(limit=args.clients)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        await setup(session, base, args.users, args.priority)
        await configure_policies(session, base, policies)
        await load(session, base, clients=args.clients, seconds=1.0, users=args.users, rate=None)  # warm-up
        cpu = cpu_seconds(pid)
        saturated = await load(session, base, clients=args.clients, seconds=args.seconds, users=args.users, rate=None)
        await asyncio.sleep(3)  # let the workers drain the backlog (their CPU is the sends', so it is counted)
        saturated["server_cpu_us_per_send"] = round((cpu_seconds(pid) - cpu) / saturated["accepted"] * 1e6)
        since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        cpu = cpu_seconds(pid)
        paced = await load(session, base, clients=args.clients, seconds=args.seconds, users=args.users, rate=args.rate)
        await asyncio.sleep(2)
        paced["server_cpu_us_per_send"] = round((cpu_seconds(pid) - cpu) / paced["accepted"] * 1e6)
    done, unsent = sent_latencies(tmpdir / "clarion.db", since)
    paced.update(
        sent_p50_ms=round(percentile(done, 0.5) * 1000, 2),
        sent_p99_ms=round(percentile(done, 0.99) * 1000, 2),
        unsent_after_2s=unsent,
    )
    bare = bare_sqlite(saturated["accepted"], tmpdir)
    return {"saturated": saturated, "paced": paced, "bare_sqlite_rows_per_s": round(bare)}


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def walk(items: list[Any]) -> Any:
        if isinstance(items[0], dict):
            return {k: walk([i[k] for i in items]) for k in items[0]}
        return statistics.median(items)

    return walk(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--policies", choices=("off", "on", "both"), default="both")
    parser.add_argument(
        "--priority",
        choices=("urgent", "high", "normal"),
        default="high",
        help="the code template's priority (urgent: the urgent lane, handed to the dispatcher as accepted)",
    )
    args = parser.parse_args()
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.policies]
    runs = [{("on" if mode else "off"): run_once(args, mode) for mode in modes} for _ in range(args.runs)]
    if args.policies == "both":
        for run in runs:
            run["on_vs_off"] = ratios(run["on"], run["off"])
    result: dict[str, Any] = median_of(runs) if len(runs) > 1 else runs[0]
    result.update(
        benchmark="triggered", runs=len(runs), clients=args.clients, seconds=args.seconds, cpus=os.cpu_count()
    )
    print(json.dumps(result))


def ratios(on: dict[str, Any], off: dict[str, Any]) -> dict[str, float]:
    """on / off for the figures the policies' cost shows in, measured in the same run."""
    return {
        "sends_per_s": round(on["saturated"]["sends_per_s"] / off["saturated"]["sends_per_s"], 3),
        "accept_p99_ms": round(on["saturated"]["accept_p99_ms"] / off["saturated"]["accept_p99_ms"], 3),
        "paced_accept_p99_ms": round(on["paced"]["accept_p99_ms"] / off["paced"]["accept_p99_ms"], 3),
    }


if __name__ == "__main__":
    main()
