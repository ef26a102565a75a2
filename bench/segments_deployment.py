"""Segment index per deployment: memory and start-up of 2 ``clarion api`` + 2 ``clarion worker`` processes over N
users, when each builds its own index (before) and when one ``clarion segments serve`` holds it (after).

Users are written straight into a migrated SQLite file (like ``bench/population.py``) with what the index holds
and ``bench/segments.py`` generates: tags from 60 % down to 0.1 %, a Zipf-skewed ``city`` of 300 values,
``gender``, ``level``, ``age`` and ``spend``. The four processes are started at once, as a deployment restarts
(in the ``after`` layout, once the holder is ready). A process is ready when it answers ``/healthz`` (API, holder)
or logs that its dispatch loops started (worker), which each does only after its index is built. RSS is read
from ``/proc/PID/status`` once every process is ready (``VmRSS``) and at its peak (``VmHWM``).

Prints one JSON line per layout and a summary: per process ``ready_s``, ``rss_mb``, ``peak_mb``; totals; a count
through each API (the same answer either way).

Run: ``.venv/bin/python bench/segments_deployment.py --users 1000000`` (``--layouts after`` starts only the
holder layout; 10^7 users take ~2.5 GB of SQLite and, on 2 loaded cores, 23 min for the ``before`` layout).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from clarion.store import migrate

KEY = "bench-deployment-key"
TAGS = {"app_user": 0.6, "price_sensitive": 0.3, "churn_risk": 0.15, "new_user": 0.1, "vip": 0.05, "beta": 0.001}
CITIES = ["Beijing", "Shanghai", "Shenzhen", "Guangzhou", "Chengdu"] + [f"city_{i:03d}" for i in range(5, 300)]
CITY_WEIGHTS = [1 / (rank + 1) for rank in range(len(CITIES))]
COLUMNS = ("user_id", "attributes", "tags", "timezone", "locale", "addresses", "created_at", "updated_at")
COUNT = {"conditions": {"and": [{"tag": "vip"}, {"attr": "city", "op": "=", "value": "Beijing"}]}}


def generate(db: Path, n: int, *, chunk: int = 100_000) -> None:
    """Users ``u000000000``… in one transaction, stamped a day ago (so no process's first poll re-reads them)."""
    rng = random.Random(17)
    at = (datetime.now(UTC) - timedelta(days=1)).replace(tzinfo=None).isoformat(sep=" ")
    conn = sqlite3.connect(db)
    conn.execute("BEGIN")
    insert = f"INSERT INTO users ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    for start in range(0, n, chunk):
        size = min(n, start + chunk) - start
        cities = rng.choices(CITIES, CITY_WEIGHTS, k=size)
        rows = []
        for offset in range(size):
            attributes: dict[str, Any] = {
                "city": cities[offset],
                "gender": "f" if rng.random() < 0.5 else "m",
                "level": rng.randrange(1, 6),
                "age": rng.randrange(16, 80),
            }
            if rng.random() < 0.7:
                attributes["spend"] = round(rng.random() * 2000, 2)
            tags = [tag for tag, share in TAGS.items() if rng.random() < share]
            rows.append(
                (f"u{start + offset:09d}", json.dumps(attributes), json.dumps(tags), None, "zh-CN", "{}", at, at)
            )
        conn.executemany(insert, rows)
    conn.commit()
    conn.close()


def status_mb(pid: int, field: str) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return round(int(found.group(1)) / 1024, 1) if found else 0.0


class Started:
    """One process of the deployment, started at ``began``, ready when ``ready()`` says so."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path, url: str | None) -> None:
        self.name, self.url, self.log = name, url, log
        self.began = time.monotonic()
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=out)
        self.ready_s: float | None = None

    def poll(self) -> bool:
        if self.ready_s is not None:
            return True
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.log.read_text(errors='replace')[-2000:]}")
        if not self._answers():
            return False
        self.ready_s = round(time.monotonic() - self.began, 2)
        return True

    def _answers(self) -> bool:
        if self.url is None:  # a worker logs "worker <name> started" once its index is built
            return "started" in self.log.read_text(errors="replace")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def figures(self) -> dict[str, Any]:
        pid = self.process.pid
        return {"ready_s": self.ready_s, "rss_mb": status_mb(pid, "VmRSS"), "peak_mb": status_mb(pid, "VmHWM")}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def wait_all(started: list[Started], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(s.poll() for s in started):
        if time.monotonic() > deadline:
            raise RuntimeError("not ready in time: " + ", ".join(s.name for s in started if s.ready_s is None))
        time.sleep(0.2)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def deployment(
    env: dict[str, str], logs: Path, label: str, *, apis: int, workers: int, holder: bool, timeout: float
) -> Iterator[tuple[list[Started], Started | None, float]]:
    """Start the holder (when ``holder``) and then ``apis`` API and ``workers`` worker processes; yield them once
    every one is ready, with the seconds from the first start to the last ready."""
    bin_dir = Path(sys.executable).parent
    began = time.monotonic()
    held: Started | None = None
    started: list[Started] = []
    try:
        env = dict(env)
        if holder:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            command = [sys.executable, "-m", "clarion.cli_segments", "serve", "--host", "127.0.0.1"]
            held = Started(
                "holder",
                [*command, "--port", str(port), "--log-level", "warning"],
                env,
                logs / f"{label}-holder.log",
                url,
            )
            wait_all([held], timeout)
            env["CLARION_SEGMENTS_URL"] = url
        for i in range(apis):
            port = free_port()
            command = [str(bin_dir / "clarion"), "api", "--host", "127.0.0.1", "--port", str(port)]
            started.append(Started(f"api{i}", command, env, logs / f"{label}-api{i}.log", f"http://127.0.0.1:{port}"))
        for i in range(workers):
            command = [str(bin_dir / "clarion"), "worker", "--workers", "1", "--log-level", "info"]
            started.append(Started(f"worker{i}", command, env, logs / f"{label}-worker{i}.log", None))
        wait_all(started, timeout)
        yield started, held, round(time.monotonic() - began, 2)
    finally:
        for s in started:
            s.stop()
        if held is not None:
            held.stop()


def measure(env: dict[str, str], logs: Path, label: str, *, holder: bool, timeout: float) -> dict[str, Any]:
    with deployment(env, logs, label, apis=2, workers=2, holder=holder, timeout=timeout) as (started, held, wall):
        processes = {s.name: s.figures() for s in ([held] if held else []) + started}
        api = next(s for s in started if s.url)
        began = time.monotonic()
        counted = httpx.post(
            f"{api.url}/v1/segments:count", json=COUNT, headers={"Authorization": f"Bearer {KEY}"}, timeout=120
        )
        counted.raise_for_status()
        count_ms = round((time.monotonic() - began) * 1000, 1)
    return {
        "layout": label,
        "processes": processes,
        "total_rss_mb": round(sum(p["rss_mb"] for p in processes.values()), 1),
        "total_peak_mb": round(sum(p["peak_mb"] for p in processes.values()), 1),
        "all_ready_s": wall,
        "slowest_ready_s": max(p["ready_s"] or 0 for p in processes.values()),
        "count": counted.json()["count"],
        "count_ms": count_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000_000)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds a layout may take to be ready")
    parser.add_argument("--keep", type=Path, help="a directory to keep the database and logs in")
    parser.add_argument("--layouts", default="before,after", help="which layouts to start: before, after or both")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="clarion-segdeploy-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / f"users-{args.users}.db"
    url = f"sqlite+aiosqlite:///{db}"
    began = time.monotonic()
    if not db.exists():
        migrate.upgrade(url)
        generate(db, args.users)
    generate_s = round(time.monotonic() - began, 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env |= {
        "CLARION_DATABASE_URL": url,
        "CLARION_SECRET_KEY": "bench-deployment-secret",
        "CLARION_API_KEY": KEY,
        "CLARION_DATA_DIR": str(work / "data"),
        "CLARION_OUTBOX_DIR": str(work / "outbox"),
    }
    results: dict[str, dict[str, Any]] = {}
    for layout in args.layouts.split(","):
        results[layout] = measure(env, work, layout, holder=layout == "after", timeout=args.timeout)
        print(json.dumps(results[layout]), flush=True)
    summary: dict[str, Any] = {"users": args.users, "generate_s": generate_s}
    for layout, figures in results.items():
        summary[f"{layout}_total_rss_mb"] = figures["total_rss_mb"]
        summary[f"{layout}_all_ready_s"] = figures["all_ready_s"]
    if {"before", "after"} <= set(results):
        before, after = results["before"]["processes"], results["after"]["processes"]
        summary["index_mb_per_process"] = round(before["api0"]["rss_mb"] - after["api0"]["rss_mb"], 1)
        summary["same_count"] = results["before"]["count"] == results["after"]["count"]
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
