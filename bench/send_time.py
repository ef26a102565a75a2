"""Send-time optimisation benchmark: simulated users with hidden preferred hours, one campaign sent two ways.

Each of ``--users`` users lives in one of a few real time zones and has a hidden preferred local hour of the day
(drawn around the population's morning, lunch and evening peaks). Their response rate in local hour h is
``base + exp(kappa * (cos(2π (h + 0.5 − preferred) / 24) − 1))`` — a von-Mises-like bump over a base rate — and
their activity level varies (log-normal, median about 7 responses in four weeks, so many users have thin data).
Four weeks of past responses are drawn from that (a Poisson process, by thinning), profiles are built from them
(``send_time.hours_of_week`` + ``Profiles.from_responses`` + ``population``), and one campaign is sent:

- ``fixed``: to everyone at once at ``--fixed-hour`` o'clock Shanghai time;
- ``optimised``: each user at ``send_time.best_send_times`` within the next 24 h, outside quiet hours 22:00–08:00;
- ``oracle``: each user at their true best allowed hour (the ceiling).

A user clicks with probability ``--click-rate`` × their response rate at the local hour of the send ÷ the peak
rate. Prints one JSON line: expected and simulated clicks for each, ``uplift`` (optimised / fixed, expected
clicks), ``profile_build_s`` and ``decision_s``.

Run: ``.venv/bin/python bench/send_time.py``; ``--runs 3`` repeats (new seeds) and reports medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from clarion.analytics import send_time

ZONES = {
    "Asia/Shanghai": 0.55,
    "Asia/Tokyo": 0.1,
    "Asia/Kolkata": 0.1,
    "Europe/Berlin": 0.1,
    "America/New_York": 0.1,
    "America/Los_Angeles": 0.05,
}
PEAKS = ((8.5, 0.25), (12.5, 0.25), (20.5, 0.5))
START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday; the four weeks cross the US and EU DST changes
WEEKS = 4


def shape(hour_of_day: np.ndarray, preferred: np.ndarray, base: float, kappa: float) -> np.ndarray:
    angle = 2 * np.pi * (hour_of_day + 0.5 - preferred) / 24
    return base + np.exp(kappa * (np.cos(angle) - 1))


def local_hours(epochs: np.ndarray, zone_of: np.ndarray, zones: list[ZoneInfo]) -> np.ndarray:
    out = np.empty(len(epochs), dtype=np.int64)
    for z, zone in enumerate(zones):
        rows = np.flatnonzero(zone_of == z)
        out[rows] = send_time.hours_of_week(epochs[rows], zone)
    return out


def run_once(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n = args.users
    zones = [ZoneInfo(name) for name in ZONES]
    zone_of_user = rng.choice(len(zones), size=n, p=np.asarray(list(ZONES.values())))
    peak = rng.choice(len(PEAKS), size=n, p=[w for _, w in PEAKS])
    preferred = (np.asarray([h for h, _ in PEAKS])[peak] + rng.normal(0, 1.5, size=n)) % 24
    activity = rng.lognormal(np.log(7), 1.0, size=n)

    # four weeks of responses: a Poisson process at the peak rate, thinned by the user's rate at each local hour
    span = WEEKS * 7 * 86400
    mean_shape = shape(np.arange(24.0)[None, :], preferred[:, None], args.base, args.kappa).mean(axis=1)
    proposals = rng.poisson(activity * (args.base + 1) / mean_shape)
    user = np.repeat(np.arange(n), proposals)
    epochs = int(START.timestamp()) + rng.integers(0, span, size=len(user))
    hours = local_hours(epochs, zone_of_user[user], zones)
    accept = rng.random(len(user)) < shape(hours % 24, preferred[user], args.base, args.kappa) / (args.base + 1)
    user, epochs = user[accept], epochs[accept]

    t0 = time.perf_counter()
    profiles = send_time.Profiles.from_responses(user, local_hours(epochs, zone_of_user[user], zones), n)
    pop = send_time.population(profiles)
    build = time.perf_counter() - t0

    now = START + timedelta(weeks=WEEKS, hours=1)
    allowed = np.asarray([8 <= h % 24 < 22 for h in range(send_time.HOURS)])
    t0 = time.perf_counter()
    chosen = send_time.best_send_times(profiles, pop, zones, zone_of_user, now, allowed=allowed)
    decision = time.perf_counter() - t0

    shanghai = ZoneInfo("Asia/Shanghai")
    fixed_local = now.astimezone(shanghai).replace(hour=args.fixed_hour, minute=0, second=0, microsecond=0)
    if fixed_local < now:
        fixed_local += timedelta(days=1)
    fixed = np.full(n, int(fixed_local.timestamp()), dtype=np.int64)

    def clicks(at: np.ndarray) -> tuple[float, int]:
        p = args.click_rate * shape(local_hours(at, zone_of_user, zones) % 24, preferred, args.base, args.kappa)
        p /= args.base + 1
        return float(p.sum()), int((rng.random(n) < p).sum())

    best_allowed = shape(np.arange(8.0, 22.0)[None, :], preferred[:, None], args.base, args.kappa).max(axis=1)
    oracle_expected = float((args.click_rate * best_allowed / (args.base + 1)).sum())
    fixed_expected, fixed_clicks = clicks(fixed)
    optimised_expected, optimised_clicks = clicks(chosen)
    return {
        "responses": len(user),
        "users_without_data": int((np.diff(profiles.indptr) == 0).sum()),
        "fixed": {"expected_clicks": round(fixed_expected, 1), "clicks": fixed_clicks},
        "optimised": {"expected_clicks": round(optimised_expected, 1), "clicks": optimised_clicks},
        "oracle": {"expected_clicks": round(oracle_expected, 1)},
        "uplift": round(optimised_expected / fixed_expected, 3),
        "uplift_simulated": round(optimised_clicks / max(fixed_clicks, 1), 3),
        "share_of_oracle": round(optimised_expected / oracle_expected, 3),
        "profile_build_s": round(build, 4),
        "decision_s": round(decision, 4),
        "profile_bytes": profiles.indptr.nbytes + profiles.hours.nbytes + profiles.counts.nbytes,
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def walk(items: list[Any]) -> Any:
        if isinstance(items[0], dict):
            return {k: walk([i[k] for i in items]) for k in items[0]}
        return statistics.median(items)

    return walk(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--base", type=float, default=0.15, help="base response rate, relative to the bump's peak")
    parser.add_argument("--kappa", type=float, default=4.0, help="sharpness of the preferred-hour bump")
    parser.add_argument("--click-rate", type=float, default=0.1, help="click probability at the user's best hour")
    parser.add_argument("--fixed-hour", type=int, default=10, help="the fixed send's hour, Shanghai time")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    runs = [run_once(args, args.seed + r) for r in range(args.runs)]
    result: dict[str, Any] = median_of(runs) if len(runs) > 1 else runs[0]
    result.update(benchmark="send_time", runs=len(runs), users=args.users, cpus=os.cpu_count())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
