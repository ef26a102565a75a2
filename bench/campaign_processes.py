"""Campaign benchmark as a real deployment: the campaign of ``bench/campaign.py`` (the same users, policies,
template and campaign) on PostgreSQL + Redis, sent by one ``clarion api`` and N ``clarion worker`` processes.

Per run (not timed): a fresh PostgreSQL database is created on ``--postgres`` (dropped afterwards) and migrated,
the users of ``bench/population.py`` are inserted, an approver key is made; then ``clarion api`` is started, the
policies, template, a segment every generated user matches (``city = Hangzhou``) and the campaign are configured
over HTTP, the campaign is submitted and approved, and ``--workers`` worker processes (each ``clarion worker
--workers LOOPS``) are started. Every process gets its settings as ``CLARION_*`` variables, with a Redis prefix
of its own per run, and builds its own segment index (no ``clarion segments serve``). Timed: from ``POST
/v1/campaigns/spring/start`` until the run is completed and no delivery is queued, sending or deferred (polled
every ``--poll`` seconds, as ``bench/campaign.py`` does; the end is the last ``sent_at``). The campaign runner
inside the workers looks for due campaigns every ``CLARION_CAMPAIGN_POLL_SECONDS`` (``--campaign-poll``, 0.05 s
like ``bench/campaign.py``'s runner) where settings.py has that setting, else once a second, so up to a second of
a run is that wait; ``seconds_first_created_to_last_sent`` (and the throughput ratio) leaves it out.

CPU: ``utime + stime`` from ``/proc/PID/stat`` of every Clarion process (read before it is stopped) and of the
PostgreSQL server's processes (the backends of the run's database and the background processes, found in
``pg_stat_activity`` at every poll; a backend that came and went between two polls is missed), over the run.
The server's figure includes this benchmark's own progress queries (the run and two counts of deliveries every
``--poll`` seconds).
When the server runs without autovacuum, ``bench/campaign.py``'s stand-in VACUUMs the hot tables every
``--vacuum-seconds`` (its backend is counted with the server's).

``--workers 1,2,4`` runs the whole thing once per worker count, ``--runs K`` repeats each K times (medians
reported); ``--sqlite-reference`` also runs ``bench/campaign.py --users N`` (one process, SQLite) once per round,
so the PostgreSQL / SQLite ratios are measured in the same invocation. Prints one JSON line, and a table to
stderr.

Run: ``nice -n 19 .venv/bin/python bench/campaign_processes.py --users 5000 --workers 1,2 --runs 1
--sqlite-reference``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from campaign import KEY, _admin, configure, fresh_postgres, generate_users_sql, progress, stand_in_autovacuum
from clarion import bootstrap
from clarion.settings import Settings
from clarion.store import tables as t

CLARION = str(Path(sys.executable).parent / "clarion")
REVIEWER = "clk_bench_processes_reviewer"
SECRET = "bench-processes-secret"
EVERYONE = {"name": "Everyone", "conditions": {"attr": "city", "op": "=", "value": "Hangzhou"}}
TICKS = os.sysconf("SC_CLK_TCK")
#: whether this Clarion lets the campaign runner's poll be set (else the runner looks once a second)
POLL_SETTING = "campaign_poll_seconds" in Settings.model_fields


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, or None when it is gone or unreadable (another machine's server)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 onwards
    return (int(fields[11]) + int(fields[12])) / TICKS


class Child:
    """One Clarion process of the deployment, its output in ``log``."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path, url: str | None = None):
        self.name, self.log, self.url = name, log, url
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=out)

    def check(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.log.read_text(errors='replace')[-3000:]}")

    async def wait_ready(self, ready: Any, within: float = 120) -> None:
        deadline = time.monotonic() + within
        while not await ready():
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready: {self.log.read_text(errors='replace')[-3000:]}")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """SIGTERM (the graceful stop), killed if still running after 15 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.process.wait, 15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_api(env: dict[str, str], logs: Path) -> Child:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [CLARION, "api", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    api = Child("api", command, env, logs / "api.log", url)

    async def healthy() -> bool:
        try:
            async with httpx.AsyncClient(timeout=1) as client:
                return (await client.get(f"{url}/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    await api.wait_ready(healthy)
    return api


async def start_workers(env: dict[str, str], logs: Path, count: int, loops: int) -> list[Child]:
    command = [CLARION, "worker", "--workers", str(loops), "--log-level", "info"]
    workers = [Child(f"worker{i}", command, env, logs / f"worker{i}.log") for i in range(count)]
    for w in workers:

        async def started(w: Child = w) -> bool:
            return len(re.findall(r"worker \S+ started", w.log.read_text(errors="replace"))) >= loops

        await w.wait_ready(started)
    return workers


class ServerCpu:
    """The PostgreSQL server's processes' CPU over the run: the first and last reading of every pid seen."""

    def __init__(self, admin_url: str, database: str) -> None:
        self.admin_url = admin_url.replace("postgresql+asyncpg://", "postgresql://")
        self.database = database
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.readable = True
        self._conn: Any = None

    async def sample(self, *, baseline: bool = False) -> None:
        import asyncpg

        if self._conn is None:
            self._conn = await asyncpg.connect(self.admin_url, timeout=5)
        rows = await self._conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE (datname = $1 OR datname IS NULL) AND pid <> pg_backend_pid()",
            self.database,
        )
        for row in rows:
            cpu = cpu_seconds(row["pid"])
            if cpu is None:
                self.readable = False
                continue
            # a backend first seen after the start began during the run: all its CPU is the run's
            self.first.setdefault(row["pid"], cpu if baseline else 0.0)
            self.last[row["pid"]] = cpu

    def seconds(self) -> float | None:
        if not self.last:
            return None
        return sum(self.last[pid] - self.first[pid] for pid in self.last)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


async def measure(args: argparse.Namespace, url: str, database: str, workers: int, tmp: Path) -> dict[str, Any]:
    prefix = f"benchproc{time.time_ns()}:"
    settings = Settings(
        database_url=url,
        redis_url=args.redis_url,
        redis_prefix=prefix,
        data_dir=str(tmp / "var"),
        outbox_dir=str(tmp / "var" / "outbox"),
        api_key=KEY,
        secret_key=SECRET,
        claim_batch=args.claim_batch,
        campaign_batch=args.batch,
    )
    clarion = bootstrap.build(settings)  # this process only writes the users and polls progress
    await generate_users_sql(clarion, args.users)
    await _admin(url, "ANALYZE users")
    await clarion.keys.create("reviewer", ("approver",), key=REVIEWER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env |= {
        "CLARION_DATABASE_URL": url,
        "CLARION_REDIS_URL": args.redis_url,
        "CLARION_REDIS_PREFIX": prefix,
        "CLARION_API_KEY": KEY,
        "CLARION_SECRET_KEY": SECRET,
        "CLARION_DATA_DIR": str(tmp / "var"),
        "CLARION_OUTBOX_DIR": str(tmp / "var" / "outbox"),
        "CLARION_CAMPAIGN_BATCH": str(args.batch),
        "CLARION_CLAIM_BATCH": str(args.claim_batch),
    }
    if POLL_SETTING:  # as bench/campaign.py sets its one runner's poll_interval
        env["CLARION_CAMPAIGN_POLL_SECONDS"] = str(args.campaign_poll)
    children: list[Child] = []
    server = ServerCpu(args.postgres, database)
    vacuuming: asyncio.Task[None] | None = None
    try:
        api = await start_api(env, tmp)
        children.append(api)
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(base_url=api.url or "", headers=headers, timeout=60) as client:
            r = await client.put("/v1/segments/everyone", json=EVERYONE)
            assert r.status_code in (200, 201), r.text
            counted = (await client.get("/v1/segments/everyone/count")).json()["count"]
            assert counted == args.users, f"the segment counts {counted} of {args.users} users"
            await configure(client)
            for action, key in (("submit", KEY), ("approve", REVIEWER)):
                r = await client.post(f"/v1/campaigns/spring/{action}", headers={"Authorization": f"Bearer {key}"})
                assert r.status_code == 200, r.text
            children += await start_workers(env, tmp, workers, args.loops)
            await server.sample(baseline=True)
            cpu_before = {c.name: cpu_seconds(c.process.pid) or 0.0 for c in children}
            started_at = datetime.now(UTC)
            started = time.perf_counter()
            r = await client.post("/v1/campaigns/spring/start")
            assert r.status_code == 200, r.text
        vacuuming = asyncio.create_task(stand_in_autovacuum(args, url))
        timeline: list[list[float]] = []
        fanout_done: float | None = None
        while True:
            await asyncio.sleep(args.poll)
            now = time.perf_counter() - started
            for c in children:
                c.check()
            run_row, pending, sent = await progress(clarion)
            await server.sample()
            timeline.append([round(now, 1), run_row[1] if run_row else 0, sent])
            if run_row and run_row[0] == "completed" and fanout_done is None:
                fanout_done = now
            if run_row and run_row[0] == "completed" and pending == 0:
                break
            moved = [row for row in timeline if row[1:] != timeline[-1][1:]]
            if now - (moved[-1][0] if moved else 0.0) > args.stall_seconds or now > args.timeout:
                tails = "\n".join(f"--- {c.name}\n{c.log.read_text(errors='replace')[-1500:]}" for c in children)
                raise RuntimeError(f"no progress or not done in time, at {timeline[-1]}:\n{tails}")
        cpu = {c.name: round((cpu_seconds(c.process.pid) or 0.0) - cpu_before[c.name], 2) for c in children}
        await server.sample()
        d = t.deliveries
        async with clarion.db.read() as conn:
            last_sent, first_created = (
                await conn.execute(sa.select(sa.func.max(d.c.sent_at), sa.func.min(d.c.created_at)))
            ).one()
            counts = dict((await conn.execute(sa.select(d.c.status, sa.func.count()).group_by(d.c.status))).all())
    finally:
        if vacuuming is not None:
            vacuuming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await vacuuming
        for c in reversed(children):
            await c.stop()
        await server.close()
        await forget_redis(args.redis_url, prefix)
        await clarion.close()
    clarion_cpu = sum(cpu.values())
    server_cpu = server.seconds()
    sent = counts.get("sent", 0)
    seconds = (utc(last_sent) - started_at).total_seconds()
    sending = (utc(last_sent) - utc(first_created)).total_seconds()
    return {
        "workers": workers,
        "seconds_to_last_sent": round(seconds, 2),
        "seconds_polled": timeline[-1][0],
        "seconds_first_created_to_last_sent": round(sending, 2),
        "seconds_fanout": round(fanout_done, 1) if fanout_done else None,
        "deliveries_per_s": round(sent / seconds, 1),
        "deliveries_per_s_from_first_created": round(sent / sending, 1),
        "cpu_seconds_clarion": round(clarion_cpu, 2),
        "cpu_seconds_by_process": cpu,
        "cpu_seconds_postgres": round(server_cpu, 2) if server_cpu is not None else None,
        "cpu_us_per_user_clarion": round(clarion_cpu / args.users * 1e6, 1),
        "cpu_us_per_user_postgres": round(server_cpu / args.users * 1e6, 1) if server_cpu is not None else None,
        "deliveries": counts,
        "timeline": timeline,
    }


def utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


async def forget_redis(redis_url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
        for start in range(0, len(keys), 1000):
            await redis.delete(*keys[start : start + 1000])
    finally:
        await redis.aclose()


def one_run(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    """A fresh database for one measurement, dropped afterwards."""
    with (
        fresh_postgres(args.postgres, "clarion_bench_proc") as url,
        tempfile.TemporaryDirectory(prefix="clarion-campaign-processes-") as tmp,
    ):
        return asyncio.run(measure(args, url, sa.make_url(url).database or "", workers, Path(tmp)))


def sqlite_reference(args: argparse.Namespace) -> dict[str, Any]:
    """``bench/campaign.py`` on SQLite, one process, as its own subprocess; its JSON line."""
    command = [sys.executable, str(Path(__file__).with_name("campaign.py")), "--users", str(args.users)]
    command += ["--batch", str(args.batch), "--claim-batch", str(args.claim_batch)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def median(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


FIGURES = (
    "seconds_to_last_sent",
    "seconds_polled",
    "seconds_first_created_to_last_sent",
    "seconds_fanout",
    "deliveries_per_s",
    "deliveries_per_s_from_first_created",
    "cpu_seconds_clarion",
    "cpu_seconds_postgres",
    "cpu_us_per_user_clarion",
    "cpu_us_per_user_postgres",
)


def summarise(args: argparse.Namespace, runs: dict[int, list[dict[str, Any]]], sqlite: list[dict[str, Any]]) -> Any:
    result: dict[str, Any] = {
        "users": args.users,
        "loops_per_worker": args.loops,
        "batch": args.batch,
        "claim_batch": args.claim_batch,
        "campaign_poll_seconds": args.campaign_poll if POLL_SETTING else 1.0,
        "runs": args.runs,
        "database": "postgresql+redis",
        "by_workers": {},
    }
    reference = None
    if sqlite:
        sending = [
            (datetime.fromisoformat(s["last_sent"]) - datetime.fromisoformat(s["first_created"])).total_seconds()
            for s in sqlite
        ]
        reference = {
            "seconds_to_last_sent": median([s["seconds_to_last_sent"] for s in sqlite]),  # polled once a second
            "seconds_first_created_to_last_sent": median(sending),
            "deliveries_per_s": median([s["end_to_end_deliveries_per_s"] for s in sqlite]),
            "deliveries_per_s_from_first_created": median(
                [s["deliveries"].get("sent", 0) / seconds for s, seconds in zip(sqlite, sending, strict=True)]
            ),
            "cpu_us_per_user": median([s["cpu_us_per_user"] for s in sqlite]),
            "runs": [{k: s[k] for k in ("seconds_to_last_sent", "cpu_us_per_user", "deliveries")} for s in sqlite],
        }
        result["sqlite_one_process"] = reference
    for workers, measured in runs.items():
        figures: dict[str, Any] = {name: median([m[name] for m in measured]) for name in FIGURES}
        total = figures["cpu_us_per_user_clarion"] + (figures["cpu_us_per_user_postgres"] or 0.0)
        figures["cpu_us_per_user_total"] = round(total, 1)
        if reference:
            # > 1: PostgreSQL with this many workers is faster (or costs more CPU) than SQLite in one process.
            # Throughput from the first delivery written to the last sent: both runs' own timestamps, so neither
            # the once-a-second poll of bench/campaign.py nor the workers' runner poll (1 s; 0.05 s in
            # bench/campaign.py's one process) enters the ratio.
            figures["throughput_vs_sqlite"] = round(
                figures["deliveries_per_s_from_first_created"] / reference["deliveries_per_s_from_first_created"], 3
            )
            # start -> last sent, over bench/campaign.py's polled figure: coarse below ~10^5 users
            figures["seconds_vs_sqlite"] = round(figures["seconds_to_last_sent"] / reference["seconds_to_last_sent"], 3)
            figures["cpu_per_user_vs_sqlite"] = round(total / reference["cpu_us_per_user"], 3)
        figures["runs"] = measured
        result["by_workers"][str(workers)] = figures
    return result


def table(result: dict[str, Any]) -> str:
    lines = [f"{result['users']:,} users, {result['loops_per_worker']} loops per worker, medians of {result['runs']}"]
    lines.append("workers  start→sent s  written→sent s  deliveries/s  µs CPU/user clarion  postgres  vs SQLite")
    for workers, f in result["by_workers"].items():
        ratio = f.get("throughput_vs_sqlite")
        lines.append(
            f"{workers:>7}  {f['seconds_to_last_sent']:>12}  {f['seconds_first_created_to_last_sent']:>14}  "
            f"{f['deliveries_per_s_from_first_created']:>12}  {f['cpu_us_per_user_clarion']:>19}  "
            f"{f['cpu_us_per_user_postgres']!s:>8}  {ratio if ratio is not None else '-':>9}"
        )
    if "sqlite_one_process" in result:
        s = result["sqlite_one_process"]
        lines.append(
            f" sqlite  {s['seconds_to_last_sent']:>12}  {s['seconds_first_created_to_last_sent']:>14}  "
            f"{s['deliveries_per_s_from_first_created']:>12}  {s['cpu_us_per_user']:>19}         -          1"
        )
    lines.append("(deliveries/s from the first delivery written; SQLite's start→sent is polled once a second)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--workers", default="1,2,4", help="worker process counts, one deployment each")
    parser.add_argument("--loops", type=int, default=2, help="dispatch loops per worker (clarion worker --workers)")
    parser.add_argument("--runs", type=int, default=1, help="repetitions of each worker count (medians reported)")
    parser.add_argument("--batch", type=int, default=1000, help="CLARION_CAMPAIGN_BATCH")
    parser.add_argument("--claim-batch", type=int, default=200, help="CLARION_CLAIM_BATCH")
    parser.add_argument("--postgres", metavar="ADMIN_URL", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between progress polls")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds one run may take")
    parser.add_argument("--stall-seconds", type=float, default=120.0, help="give up when nothing moved this long")
    parser.add_argument(
        "--campaign-poll", type=float, default=0.05, help="CLARION_CAMPAIGN_POLL_SECONDS, where settings.py has it"
    )
    parser.add_argument(
        "--vacuum-seconds", type=float, default=10.0, help="PostgreSQL without autovacuum: VACUUM (ANALYZE) this often"
    )
    parser.add_argument(
        "--sqlite-reference", action="store_true", help="also run bench/campaign.py on SQLite in each round"
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    sqlite: list[dict[str, Any]] = []
    for round_ in range(args.runs):
        for n in counts:
            measured = one_run(args, n)
            runs[n].append(measured)
            print(
                f"round {round_ + 1}, {n} workers: {measured['seconds_to_last_sent']} s, "
                f"{measured['deliveries_per_s']} deliveries/s",
                file=sys.stderr,
                flush=True,
            )
        if args.sqlite_reference:
            sqlite.append(sqlite_reference(args))
            print(f"round {round_ + 1}, sqlite: {sqlite[-1]['seconds_to_last_sent']} s", file=sys.stderr, flush=True)
    result = summarise(args, runs, sqlite)
    print(json.dumps(result), flush=True)
    print(table(result), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
