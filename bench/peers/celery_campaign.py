"""The baseline a Python team would otherwise build, side by side with Clarion in one run.

The same campaign to ``--users`` generated users (default 100,000; ``bench/population.py``'s users) three ways:
- **baseline**: Celery prefork workers (``--workers``, default one per core) on a Redis broker, tasks of
  ``--batch`` (100) users with acks late, profiles read per task from PostgreSQL, suppression + a daily cap + a
  300 s dedup as one pipelined Redis round trip per task, Jinja2 rendering, one delivery row per user written
  with executemany, a JSONL sink (``bench/peers/baseline.py``);
- **Clarion on SQLite**: ``bench/campaign.py --users N`` (every policy on, one process);
- **Clarion on PostgreSQL + Redis**: ``bench/campaign.py --users N --postgres ADMIN_URL``, on the same server.
Each is timed from the start to the last delivery handed to the sink; the ratios are of users/s in this run.

Run: ``make bench-peers`` (installs the ``peers`` extra: Celery and psycopg), or after that
``.venv/bin/python bench/peers/celery_campaign.py --users 100000``. ``--skip-clarion`` times the baseline only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
sys.path.insert(0, str(BENCH))
from population import user  # noqa: E402  (bench/ is not a package)

SCHEMA = """
CREATE TABLE users (user_id text PRIMARY KEY, attributes jsonb NOT NULL, addresses jsonb NOT NULL, timezone text);
CREATE TABLE deliveries (
    id text PRIMARY KEY, campaign text NOT NULL, user_id text NOT NULL, channel text NOT NULL, address text,
    content text, status text NOT NULL, reason text, created_at timestamptz NOT NULL
);
"""


def _libpq(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@contextlib.contextmanager
def database(admin: str) -> Iterator[str]:
    """A fresh database on the server of ``admin`` holding the users, dropped afterwards; its URL."""
    name = f"peers_bench_{int(time.time())}"
    with psycopg.connect(_libpq(admin), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _libpq(admin).rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with psycopg.connect(_libpq(admin), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def load_users(url: str, n: int) -> None:
    stamped = datetime.now(UTC)
    with psycopg.connect(url) as conn:
        conn.execute(SCHEMA)
        with conn.cursor().copy("COPY users (user_id, attributes, addresses, timezone) FROM STDIN") as copy:
            for i in range(n):
                row = user(i, stamped)
                copy.write_row(
                    (row["user_id"], json.dumps(row["attributes"]), json.dumps(row["addresses"]), row["timezone"])
                )
        conn.execute("ANALYZE users")


def prepare_counters(url: str) -> None:
    """The Redis database of the run emptied, with the 1,000 suppressed addresses of the Clarion runs."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.sadd("peers:suppressed", *[f"+861390013{i:04d}" for i in range(1000)])
    client.close()


@contextlib.contextmanager
def workers(env: dict[str, str], count: int, log: Path) -> Iterator[None]:
    command = [sys.executable, "-m", "celery", "-A", "baseline", "worker", "-P", "prefork", "-c", str(count)]
    command += ["--loglevel", "warning", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=HERE, env=env, stdout=out, stderr=out)
    try:
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def baseline(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with database(args.postgres) as url:
        load_users(url, args.users)
        prepare_counters(args.redis_url)
        sink = tmp / "sink"
        sink.mkdir()
        env = {
            **os.environ,
            "PEERS_BROKER": args.redis_url,
            "PEERS_REDIS": args.redis_url,
            "PEERS_DATABASE": url,
            "PEERS_SINK": str(sink),
        }
        os.environ.update(env)  # the app below (the client side) reads the broker from it
        sys.path.insert(0, str(HERE))
        import baseline as tasks

        with workers(env, args.workers, tmp / "celery.log"):
            deadline = time.monotonic() + 60
            while not tasks.app.control.ping(timeout=0.5):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Celery workers did not start: {(tmp / 'celery.log').read_text()}")
            ids = [f"u{i}" for i in range(args.users)]
            with psycopg.connect(url, autocommit=True) as conn:
                started = time.perf_counter()
                for i in range(0, len(ids), args.batch):
                    tasks.send_batch.delay("spring", ids[i : i + args.batch])
                enqueued = time.perf_counter() - started
                while True:
                    (written,) = conn.execute("SELECT count(*) FROM deliveries").fetchone() or (0,)
                    if written >= args.users:
                        break
                    if time.perf_counter() - started > args.timeout:
                        raise RuntimeError(f"only {written} of {args.users} deliveries after {args.timeout} s")
                    time.sleep(0.1)
                seconds = time.perf_counter() - started
                statuses = dict(conn.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall())
        lines = sum(1 for f in sink.iterdir() for _ in f.open())
    return {
        "seconds_to_last_sent": round(seconds, 2),
        "users_per_s": round(args.users / seconds, 1),
        "seconds_to_enqueue": round(enqueued, 2),
        "deliveries": statuses,
        "sink_lines": lines,
        "workers": args.workers,
        "batch": args.batch,
    }


def clarion(args: argparse.Namespace, postgres: bool) -> dict[str, Any]:
    command = [sys.executable, str(BENCH / "campaign.py"), "--users", str(args.users)]
    if postgres:
        command += ["--postgres", args.postgres, "--redis-url", args.clarion_redis_url]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=args.timeout * 4)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    seconds = result["seconds_to_last_sent"]
    return {
        "seconds_to_last_sent": seconds,
        "users_per_s": round(args.users / seconds, 1),
        "deliveries": result["deliveries"],
        "cpu_us_per_user": result["cpu_us_per_user"],
        "peak_rss_mb": result["peak_rss_mb"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Celery prefork processes")
    parser.add_argument("--batch", type=int, default=100, help="users per task")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test", metavar="ADMIN_URL")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/6", help="the baseline's broker and counters")
    parser.add_argument("--clarion-redis-url", default="redis://127.0.0.1:6379/5")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--skip-clarion", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "peers", "users": args.users, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="clarion-peers-") as tmp:
        result["baseline"] = base = baseline(args, Path(tmp))
    print(
        f"baseline (Celery ×{args.workers} + Redis + Jinja2 + PostgreSQL): {base['seconds_to_last_sent']} s, "
        f"{base['users_per_s']:,} users/s",
        file=sys.stderr,
    )
    if not args.skip_clarion:
        for name, postgres in (("clarion_sqlite", False), ("clarion_postgresql", True)):
            result[name] = run = clarion(args, postgres)
            run["speed_vs_baseline"] = round(run["users_per_s"] / base["users_per_s"], 2)
            print(
                f"{name}: {run['seconds_to_last_sent']} s, {run['users_per_s']:,} users/s, "
                f"{run['speed_vs_baseline']}× the baseline's speed",
                file=sys.stderr,
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
