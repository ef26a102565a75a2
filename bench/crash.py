"""Crash benchmark: a ``clarion serve`` killed with SIGKILL in the middle of a backlog, then started again.

One run: ``--messages`` deliveries (default 10,000, one SMS each to as many users) are queued through the API
of a ``clarion serve`` without workers, so the backlog is all there (as a campaign's fan-out leaves it); then a
``clarion serve`` with one worker sends it to the file provider and is SIGKILLed once ``--kill-at`` of it is in
the sink file (at a random moment up to ``--jitter`` seconds later), and is started again; the run ends when
every delivery is ``sent`` in the database.

Prints one JSON line: for each run, the deliveries written to the sink more than once (by delivery id), the
seconds from the restart to every delivery sent, and from the restart to the server answering; then the
medians over ``--runs``, with ``duplicates_per_10k`` (extra writes per 10,000 deliveries).

The lease is the deployed default (60 s) unless ``--lease`` says otherwise. ``--postgres ADMIN_URL`` runs on a
fresh PostgreSQL database created on that server (and dropped after) instead of SQLite.

Run: ``.venv/bin/python bench/crash.py`` (``--runs 5``; ``--postgres postgresql://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

KEY = "clk_bench_crash_key"
CLARION = str(Path(sys.executable).parent / "clarion")
RECIPIENTS = 1000  # per send request: the API's limit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One ``clarion serve`` process of the run."""

    def __init__(self, env: dict[str, str], log: Path, *, workers: int) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**env, "CLARION_PORT": str(self.port), "CLARION_WORKERS": str(workers)}
        with log.open("ab") as out:
            self.process = subprocess.Popen([CLARION, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)

    async def ready(self) -> None:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"clarion serve exited with {self.process.returncode}")
                try:
                    if (await client.get(f"{self.base}/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("clarion serve did not become ready")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


async def queue(base: str, messages: int) -> None:
    """``messages`` users with a phone, and one SMS to each, in send requests of RECIPIENTS."""
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as api:
        template = {
            "name": "Code",
            "category": "verification",
            "priority": "high",
            "channels": {"sms": {"text": "{name}, your code is ${data.code}"}},
        }
        response = await api.put("/v1/templates/code", json=template)
        assert response.status_code in (200, 201), response.text
        for start in range(0, messages, 10_000):
            users = [
                {"user_id": f"u{i}", "attributes": {"name": f"User {i}"}, "addresses": {"sms": f"+86138{i:08d}"}}
                for i in range(start, min(messages, start + 10_000))
            ]
            response = await api.post("/v1/users:batch", json=users)
            assert response.status_code == 200 and not response.json()["failed"], response.text
        for start in range(0, messages, RECIPIENTS):
            to = [f"u{i}" for i in range(start, min(messages, start + RECIPIENTS))]
            response = await api.post("/v1/messages", json={"template": "code", "to": to, "data": {"code": "0042"}})
            assert response.status_code == 202, response.text
            assert {m["status"] for m in response.json()["messages"]} == {"queued"}, response.text


def sink_ids(outbox: Path) -> list[str]:
    path = outbox / "sms.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["delivery_id"] for line in path.read_bytes().splitlines() if line]


def sink_lines(outbox: Path) -> int:
    path = outbox / "sms.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


async def count_sent(url: str) -> tuple[int, int]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            d = sa.table("deliveries", sa.column("status"))
            rows = (await conn.execute(sa.select(d.c.status, sa.func.count()).group_by(d.c.status))).all()
    finally:
        await engine.dispose()
    counts = dict(rows)
    return int(counts.get("sent", 0)), int(sum(counts.values()))


async def one_run(args: argparse.Namespace, tmp: Path, url: str) -> dict[str, Any]:
    outbox = tmp / "outbox"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env.update(
        CLARION_DATABASE_URL=url,
        CLARION_DATA_DIR=str(tmp),
        CLARION_OUTBOX_DIR=str(outbox),
        CLARION_API_KEY=KEY,
        CLARION_SECRET_KEY="bench-crash-secret",
    )
    if args.lease is not None:
        env["CLARION_LEASE_SECONDS"] = str(args.lease)
    log = tmp / "serve.log"

    intake = Server(env, log, workers=0)
    try:
        await intake.ready()
        await queue(intake.base, args.messages)
    finally:
        intake.stop()

    worker = Server(env, log, workers=1)
    kill_at = int(args.messages * args.kill_at)
    deadline = time.monotonic() + args.timeout
    while sink_lines(outbox) < kill_at:
        if worker.process.poll() is not None:
            raise RuntimeError(f"clarion serve exited with {worker.process.returncode}; see {log}")
        if time.monotonic() > deadline:
            raise RuntimeError("timed out before the kill")
        await asyncio.sleep(0.002)
    await asyncio.sleep(random.uniform(0, args.jitter))  # any moment of the send → record cycle, not just after a send
    worker.process.send_signal(signal.SIGKILL)
    assert worker.process.wait(10) == -signal.SIGKILL
    at_kill = sink_lines(outbox)
    sent_at_kill, total = await count_sent(url)
    assert total == args.messages, (total, args.messages)

    restarted = time.monotonic()
    again = Server(env, log, workers=1)
    try:
        await again.ready()
        ready = time.monotonic() - restarted
        while (await count_sent(url))[0] < args.messages:
            if again.process.poll() is not None:
                raise RuntimeError(f"clarion serve exited with {again.process.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise RuntimeError("timed out before every delivery was sent")
            await asyncio.sleep(0.05)
        all_sent = time.monotonic() - restarted
    finally:
        again.stop()

    written = Counter(sink_ids(outbox))
    assert len(written) == args.messages, "a delivery never reached the sink"
    extra = sum(n - 1 for n in written.values())
    return {
        "in_sink_at_kill": at_kill,
        "recorded_sent_at_kill": sent_at_kill,
        "duplicates": extra,
        "duplicates_per_10k": round(extra * 10_000 / args.messages, 1),
        "restart_to_ready_s": round(ready, 2),
        "restart_to_all_sent_s": round(all_sent, 2),
    }


async def admin(url: str, sql: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(sql))
    finally:
        await engine.dispose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="clarion-crash-") as tmp:
            if args.postgres:
                admin_url = sa.make_url(args.postgres).set(drivername="postgresql+asyncpg")
                name = f"clarion_crash_{uuid.uuid4().hex[:8]}"
                await admin(admin_url.render_as_string(hide_password=False), f"CREATE DATABASE {name}")
                url = admin_url.set(database=name).render_as_string(hide_password=False)
                try:
                    runs.append(await one_run(args, Path(tmp), url))
                finally:
                    await admin(admin_url.render_as_string(hide_password=False), f"DROP DATABASE {name} WITH (FORCE)")
            else:
                runs.append(await one_run(args, Path(tmp), f"sqlite+aiosqlite:///{tmp}/clarion.db"))
    medians = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    return {
        "database": "postgresql" if args.postgres else "sqlite",
        "messages": args.messages,
        "kill_at": args.kill_at,
        "lease_s": args.lease or 60.0,
        "median": medians,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--kill-at", type=float, default=0.5, help="the share of deliveries in the sink at the kill")
    parser.add_argument("--jitter", type=float, default=0.3, help="the kill comes up to this many seconds later")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--lease", type=float, default=None, help="CLARION_LEASE_SECONDS (default: Clarion's own)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a run may take from the worker's start")
    parser.add_argument("--postgres", metavar="ADMIN_URL", help="run on PostgreSQL instead of SQLite")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
