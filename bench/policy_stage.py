"""Policy stage microbenchmark: the CPU of ``PolicyStage.before_render`` + ``after_render`` per delivery.

The configuration is that of ``bench/triggered.py --policies on`` and ``bench/campaign.py``: all seven policies
on, two SMS caps (one ``per_department``), a 1,000-word block list, a 100-word mask list and 1,000 address
suppressions, on a migrated SQLite database set up through the API. The recipients are ``--users`` generated
users (time zones Asia/Shanghai, Europe/London, America/New_York or none; an SMS address each), read through
the intake's own profile loader (so their suppressions come with them); the template is a ``notification``
with an SMS text naming the user, so no two deliveries are duplicates. Rendering is done once, before timing.

Two paths are timed, each ``--runs`` times on fresh in-process counters (every run sees the same counts):

* ``batch_1``: one candidate per call (a triggered send: one request, one delivery), for every user;
* ``batch_1000``: the same users in calls of 1,000 candidates (a campaign fan-out batch).

Prints one JSON line with the median (and best) CPU µs per delivery of each path, and every run's figure. The
catalog's cache is kept warm for the whole run: what is measured is the stage, not configuration refreshes.

Run: ``.venv/bin/python bench/policy_stage.py`` (``--only batch_1`` times one path; ``--profile batch_1000``
prints a cProfile of that path instead).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.counters.memory import MemoryCounters
from clarion.domain import model, render
from clarion.domain.policy import config
from clarion.domain.policy.decision import Candidate, Drop
from clarion.store import migrate
from population import bench_settings, configure_policies, generate_users, put_notification

KEY = "clk_bench_policy_stage_key"
# 10:00 UTC: daytime or evening in every zone above, so nothing is held by a window.
NOW = datetime(2026, 3, 17, 10, 0, tzinfo=UTC)
PATHS = {"batch_1": 1, "batch_1000": 1000}  # candidates per call


async def configure(api: httpx.AsyncClient) -> None:
    await configure_policies(api)
    text = "【Clarion】{name}, your parcel to ${user.city} ships this week"
    await put_notification(api, "notification", "Notification", text)


async def prepare(clarion: bootstrap.Clarion, users: int) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """Every user's candidate and rendered SMS content."""
    template = await clarion.catalog.template("notification")
    assert template is not None and template.category is model.Category.NOTIFICATION
    loaded = await clarion.intake.users.load_many(f"u{i}" for i in range(users))
    candidates, contents = [], []
    for i in range(users):
        user = loaded[f"u{i}"]
        channel = model.Channel.SMS
        prefs = user.preferences or config.NO_PREFERENCES
        candidates.append(Candidate(f"m{i}", user, template, channel, NOW, user.address_for(channel), None, prefs))
        contents.append(render.compose(template, channel, render.context_for(user, {}), None))
    return candidates, contents


async def run_path(
    clarion: bootstrap.Clarion, candidates: Sequence[Candidate], contents: Sequence[dict[str, Any]], batch: int
) -> float:
    """CPU seconds of this process for the stage over every candidate in calls of ``batch``, on fresh counters
    (CPU time rather than wall time, so other processes busy on the machine disturb the figure less)."""
    stage = clarion.policies
    stage.counters = MemoryCounters()
    calls = [(candidates[at : at + batch], contents[at : at + batch]) for at in range(0, len(candidates), batch)]
    answers = []
    started = time.process_time()
    for some, rendered in calls:
        answers.append(await stage.after_render(await stage.before_render(some), rendered))
    elapsed = time.process_time() - started
    dropped = sum(isinstance(v.decision, Drop) for verdicts in answers for v in verdicts)
    assert not dropped, f"{dropped} deliveries dropped: the setup is wrong"
    return elapsed


async def measure(args: argparse.Namespace, tmp: Path, url: str) -> dict[str, Any]:
    clarion = bootstrap.build(bench_settings(tmp, url, KEY))
    await clarion.start(workers=0)
    try:
        transport = httpx.ASGITransport(app=create_app(clarion=clarion))
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers) as api:
            await configure(api)
        clarion.catalog.invalidate()
        clarion.catalog.ttl = 24 * 3600.0  # warm for the whole run
        candidates, contents = await prepare(clarion, args.users)
        if args.profile:
            batch = PATHS[args.profile]
            await run_path(clarion, candidates, contents, batch)  # warm-up
            profiler = cProfile.Profile()
            profiler.enable()
            await run_path(clarion, candidates, contents, batch)
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats(args.sort).print_stats(args.lines)
            return {}
        paths = {name: batch for name, batch in PATHS.items() if args.only in (None, name)}
        figures: dict[str, list[float]] = {name: [] for name in paths}
        for batch in paths.values():
            await run_path(clarion, candidates, contents, batch)  # warm-up: caches, lazily built automata
        for _ in range(args.runs):
            for name, batch in paths.items():  # interleaved, so a busy moment on the machine hits both
                elapsed = await run_path(clarion, candidates, contents, batch)
                figures[name].append(round(elapsed / len(candidates) * 1e6, 2))
    finally:
        await clarion.close()
    result: dict[str, Any] = {"benchmark": "policy_stage", "users": args.users, "runs": args.runs}
    for name, values in figures.items():
        result[f"{name}_us_per_delivery"] = statistics.median(values)
        result[f"{name}_best_us_per_delivery"] = min(values)
    result["all_runs"] = figures
    result["cpus"] = os.cpu_count()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--only", choices=sorted(PATHS), help="time one path only")
    parser.add_argument("--profile", choices=sorted(PATHS), help="print a cProfile of one path instead")
    parser.add_argument("--sort", default="tottime", help="cProfile sort key (with --profile)")
    parser.add_argument("--lines", type=int, default=40, help="cProfile lines (with --profile)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clarion-policy-bench-") as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/clarion.db"
        migrate.upgrade(url)
        generate_users(Path(tmp) / "clarion.db", args.users, NOW)
        result = asyncio.run(measure(args, Path(tmp), url))
    if result:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
