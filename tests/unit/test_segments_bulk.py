"""The start-up bulk load gives the same index as upserting and tracking the same users one by one."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clarion.segments import bulk
from clarion.segments import evaluate as ev
from clarion.segments import index as ix
from clarion.segments import query as q

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
QUERIES: list[dict[str, Any]] = [
    {"tag": "vip"},
    {"tag": "new"},
    {"attr": "city", "op": "=", "value": "Beijing"},
    {"attr": "city", "op": "!=", "value": "Beijing"},
    {"attr": "interests", "op": "in", "value": ["music", "games"]},
    {"attr": "premium", "op": "=", "value": True},
    {"attr": "age", "op": ">", "value": 40},
    {"attr": "age", "op": "exists"},
    {"attr": "spend", "op": "between", "value": [100, 900]},
    {"attr": "mixed", "op": "exists"},
    {"attr": "expires_at", "op": "within_next", "days": 3},
    {"attr": "expires_at", "op": "<", "value": "2025-06-14T00:00:00"},
    {"attr": "birthday", "op": "<", "value": "2000-01-01"},
    {"event": "login"},
    {"event": "login", "within_days": 3},
    {"event": "login", "count": 2, "within_days": 7},
    {"event": "pay", "within_hours": 30},
    {"and": [{"tag": "vip"}, {"not": {"event": "pay", "within_days": 30}}]},
]


def users(seed: int) -> list[tuple[str, dict[str, Any], list[str]]]:
    rnd = random.Random(seed)
    out = []
    for i in range(300):
        attrs: dict[str, Any] = {"city": rnd.choice(["Beijing", "Shanghai", "Wuhan"]), "premium": rnd.random() < 0.3}
        if rnd.random() < 0.8:
            attrs["age"] = rnd.randint(10, 80)
        if rnd.random() < 0.5:
            attrs["spend"] = rnd.choice([rnd.randint(0, 1000), round(rnd.uniform(0, 1000), 2)])
        attrs["interests"] = rnd.sample(["music", "sports", "games"], rnd.randint(0, 2))
        attrs["mixed"] = rnd.choice([1, "one", None, [True]])  # the first value seen decides the kind
        if rnd.random() < 0.6:
            attrs["expires_at"] = (NOW + timedelta(hours=rnd.randint(-200, 200))).isoformat()
        if rnd.random() < 0.4:
            attrs["birthday"] = f"{rnd.randint(1960, 2010)}-0{rnd.randint(1, 9)}-1{rnd.randint(0, 9)}"
        tags = [t for t in ("vip", "new") if rnd.random() < 0.4]
        out.append((f"user-{i:04d}", attrs, tags))
    return out


def events(seed: int) -> list[tuple[str, str, datetime]]:
    rnd = random.Random(seed)
    return [
        (f"user-{rnd.randint(0, 320):04d}", rnd.choice(["login", "pay"]), NOW - timedelta(hours=rnd.randint(0, 3000)))
        for _ in range(600)
    ]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bulk_load_equals_upsert_and_track(seed: int) -> None:
    people, happened = users(seed), events(seed + 100)
    one_by_one = ix.SegmentIndex(horizon_days=30)
    for user_id, attrs, tags in people:
        one_by_one.upsert(user_id, bulk.prepared(attrs, one_by_one.kinds), tags)
    for user_id, event, at in happened:
        one_by_one.track(user_id, event, at)

    load = bulk.BulkLoad(ix.SegmentIndex(horizon_days=30))
    rows = {user_id: load.add_user(user_id, attrs, tags) for user_id, attrs, tags in people}
    last: dict[tuple[str, str], datetime] = {}
    for user_id, event, at in happened:
        last[(user_id, event)] = max(at, last.get((user_id, event), at))
        if at >= NOW - timedelta(days=31):
            load.add_event(rows.get(user_id), user_id, event, at)
    for (user_id, event), at in last.items():
        load.add_last_event(rows.get(user_id), user_id, event, at)
    loaded = load.finish()

    assert loaded.kinds == one_by_one.kinds
    assert loaded.kinds["expires_at"] == "timestamp" and loaded.kinds["birthday"] == "timestamp"
    assert len(loaded.live) == len(one_by_one.live) == len(people)
    for conditions in QUERIES:
        node = q.parse(conditions)
        expected = ev.sample(one_by_one, node, 1000, now=NOW)
        assert ev.sample(loaded, node, 1000, now=NOW) == expected, conditions

    # events of ids that were no user yet count once those users are created
    for index in (one_by_one, loaded):
        for i in range(300, 321):
            index.upsert(f"user-{i:04d}", {}, [])
    for conditions in QUERIES[-5:]:
        node = q.parse(conditions)
        assert sorted(ev.sample(loaded, node, 1000, now=NOW)) == sorted(ev.sample(one_by_one, node, 1000, now=NOW))


def test_an_attribute_known_as_text_keeps_iso_looking_strings_as_text() -> None:
    kinds: dict[str, ix.Kind] = {"code": "category"}
    assert bulk.prepared({"code": "2025-01-01", "at": "2025-01-01T08:00:00Z", "n": "12"}, kinds) == {
        "code": "2025-01-01",
        "at": datetime(2025, 1, 1, 8, tzinfo=UTC),
        "n": "12",
    }
