"""Segment benchmark: generate N users, bulk-load the in-memory segment index, time five 3-5-condition segments.

Prints one JSON line: ``generate_s`` (NumPy generation of the columns), ``build_s`` (time spent inside the index's
bulk loaders), per segment the match count and the median (and every run) of ``--reps`` counts in ms, the index's
own memory (roaring containers + NumPy arrays + the user-id map) and the process's peak RSS (generation
temporaries included).

Users: ids ``u000000001``…; 20 tags from 60 % down to 0.1 %; ``city`` (300 values, Zipf-skewed: Beijing ≈ 16 %),
``gender``, ``level`` (categories); ``age`` (int8), ``spend`` (float32) with gaps; ``membership_expires_at`` and
``last_login`` timestamps; events ``login`` (10 % of users a day), ``add_to_cart`` (3 %) and ``pay`` (30 % of that
day's carts) over ``--days`` days, each user independently each day.

Run: ``.venv/bin/python bench/segments.py`` (10^7 users) or ``--users 100000000`` (needs ~12 GB RAM, minutes).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from clarion.segments import evaluate as ev
from clarion.segments import index as ix
from clarion.segments import query as q

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
DAY = 86400
TAGS = {
    "app_user": 0.6,
    "price_sensitive": 0.3,
    "email_verified": 0.5,
    "churn_risk": 0.15,
    "new_user": 0.1,
    "unsubscribed_marketing": 0.08,
    "vip": 0.05,
    "high_value": 0.02,
    "student": 0.12,
    "parent": 0.2,
    "pet_owner": 0.07,
    "gamer": 0.04,
    "traveler": 0.09,
    "night_owl": 0.25,
    "coupon_hunter": 0.18,
    "beta_tester": 0.005,
    "employee": 0.001,
    "complained": 0.01,
    "referrer": 0.03,
    "wechat_bound": 0.45,
}
FIRST_CITIES = ["Beijing", "Shanghai", "Shenzhen", "Guangzhou", "Chengdu", "Hangzhou", "Wuhan", "Xi'an"]
CITIES = FIRST_CITIES + [f"city_{i:03d}" for i in range(len(FIRST_CITIES), 300)]

SEGMENTS: dict[str, dict[str, Any]] = {
    "beijing_login_3d": {
        "and": [
            {"attr": "city", "op": "=", "value": "Beijing"},
            {"event": "login", "op": "at_least", "count": 1, "within_days": 3},
            {"attr": "age", "op": ">=", "value": 18},
        ]
    },
    "price_sensitive_expiring_3d": {
        "and": [
            {"tag": "price_sensitive"},
            {"attr": "membership_expires_at", "op": "within_next", "days": 3},
            {"not": {"tag": "unsubscribed_marketing"}},
            {"attr": "level", "op": "in", "value": [3, 4, 5]},
        ]
    },
    "vip_cart_not_pay_24h": {
        "and": [
            {"tag": "vip"},
            {"event": "add_to_cart", "within_hours": 24},
            {"not": {"event": "pay", "within_hours": 24}},
        ]
    },
    "engaged_spenders": {
        "and": [
            {"attr": "spend", "op": "between", "value": [100, 1000]},
            {"event": "login", "op": "at_least", "count": 3, "within_days": 7},
            {"or": [{"attr": "city", "op": "in", "value": ["Shanghai", "Shenzhen", "Guangzhou"]}, {"tag": "vip"}]},
            {"attr": "gender", "op": "=", "value": "f"},
        ]
    },
    "lapsed_high_value": {
        "and": [
            {"or": [{"tag": "high_value"}, {"attr": "spend", "op": ">=", "value": 1500}]},
            {"not": {"attr": "last_login", "op": "within_last", "days": 14}},
            {"attr": "age", "op": "between", "value": [25, 45]},
            {"not": {"list": "incident-42"}},
        ]
    },
}


def sample_rows(rng: np.random.Generator, n: int, p: float) -> np.ndarray[Any, Any]:
    """Sorted distinct rows, each included with probability p (geometric gaps: O(p·n), not O(n))."""
    parts, start = [], -1
    while True:
        gaps = rng.geometric(p, size=int((n - start) * p * 1.05) + 1000)
        rows = start + np.cumsum(gaps)
        parts.append(rows[rows < n])
        if rows[-1] >= n:
            return np.concatenate(parts)
        start = int(rows[-1])


def user_ids(n: int) -> np.ndarray[Any, Any]:
    """``u`` + 9 digits as a sorted ``S10`` array, written digit by digit."""
    chars = np.empty((n, 10), dtype=np.uint8)
    chars[:, 0] = ord("u")
    number = np.arange(1, n + 1, dtype=np.int64)
    for position in range(9, 0, -1):
        chars[:, position] = number % 10 + ord("0")
        number //= 10
    return chars.view("S10").ravel()


def build(n: int, days: int, seed: int) -> tuple[ix.SegmentIndex, float, float]:
    rng = np.random.default_rng(seed)
    index = ix.SegmentIndex({"level": "category"}, horizon_days=max(days, 1))
    spent = [0.0]
    now = int(NOW.timestamp())

    def load(method: Callable[..., None], *args: Any) -> None:
        started = time.perf_counter()
        method(*args)
        spent[0] += time.perf_counter() - started

    started = time.perf_counter()
    load(index.load_users, user_ids(n))
    for tag, rate in TAGS.items():
        load(index.load_tag, tag, sample_rows(rng, n, rate))
    weights = 1 / np.arange(1, len(CITIES) + 1)
    city = rng.choice(len(CITIES), size=n, p=weights / weights.sum()).astype(np.int16)
    city[sample_rows(rng, n, 0.03)] = -1
    load(index.load_categories, "city", city, CITIES)
    del city
    load(index.load_categories, "gender", rng.choice(3, size=n, p=[0.48, 0.48, 0.04]).astype(np.int8), ["f", "m", "x"])
    level = rng.choice(5, size=n, p=[0.4, 0.25, 0.17, 0.12, 0.06]).astype(np.int8)
    load(index.load_categories, "level", level, [1, 2, 3, 4, 5])
    del level
    load(index.load_numbers, "age", rng.integers(16, 81, size=n, dtype=np.int8), rng.random(n) < 0.9)
    spend = rng.lognormal(5.5, 1.2, size=n).astype(np.float32)
    load(index.load_numbers, "spend", spend, rng.random(n) < 0.85)
    del spend
    expires = now + rng.integers(-60 * DAY, 365 * DAY, size=n)
    load(index.load_timestamps, "membership_expires_at", expires, rng.random(n) < 0.4)
    del expires
    last_login = now - (rng.exponential(20 * DAY, size=n)).astype(np.int64)
    load(index.load_timestamps, "last_login", last_login, rng.random(n) < 0.95)
    del last_login
    today = now // DAY
    minutes_today = (now % DAY) // 60
    last = {e: np.full(n, -1, dtype=np.int64) for e in ("login", "add_to_cart", "pay")}
    for back in range(days - 1, -1, -1):
        day = today - back
        span = minutes_today if back == 0 else 1440
        login = sample_rows(rng, n, 0.10)
        cart = sample_rows(rng, n, 0.03)
        pay = cart[rng.random(len(cart)) < 0.3]
        for event, rows in (("login", login), ("add_to_cart", cart), ("pay", pay)):
            last[event][rows] = day * DAY + rng.integers(0, span, size=len(rows)) * 60
            load(index.load_event_day, event, int(day), rows)
    for event, seconds in last.items():
        load(index.load_event_last, event, seconds, seconds >= 0)
    del last
    picked = rng.choice(n, size=min(n, 100_000), replace=False)
    load(index.register_list, "incident-42", (f"u{i + 1:09d}" for i in picked.tolist()))
    return index, time.perf_counter() - started - spent[0], spent[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=60, help="days of event history")
    parser.add_argument("--reps", type=int, default=7, help="timed counts per segment (median reported)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    index, generate_s, build_s = build(args.users, args.days, args.seed)
    segments: dict[str, Any] = {}
    for name, tree in SEGMENTS.items():
        node = q.parse(tree)
        runs, found = [], 0
        for _ in range(args.reps):
            started = time.perf_counter()
            found = ev.count(index, node, NOW)
            runs.append((time.perf_counter() - started) * 1000)
        segments[name] = {
            "count": found,
            "median_ms": round(statistics.median(runs), 1),
            "runs_ms": [round(r, 1) for r in runs],
        }
    memory = index.memory()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "users": args.users,
                "days": args.days,
                "seed": args.seed,
                "generate_s": round(generate_s, 1),
                "build_s": round(build_s, 1),
                "segments": segments,
                "max_median_ms": max(s["median_ms"] for s in segments.values()),
                "index_gb": round(memory["total"] / 1e9, 3),
                "index_bytes": memory,
                "peak_rss_gb": round(peak_rss / 1e9, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
