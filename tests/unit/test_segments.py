"""Segments: the JSON query, the in-memory index and its evaluation, checked against a brute-force model."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clarion.domain import errors
from clarion.segments import evaluate as ev
from clarion.segments import index as ix
from clarion.segments import query as q

NOW = datetime(2025, 6, 15, 12, 34, 56, tzinfo=UTC)
TAGS = ["vip", "price_sensitive", "new_user", "rare", "churn_risk"]
TAG_RATES = [0.2, 0.4, 0.1, 0.03, 0.6]
CITIES = ["Beijing", "Shanghai", "Shenzhen", "Guangzhou", "Chengdu", "Hangzhou", "Wuhan", "Xi'an"]
INTERESTS = ["music", "sports", "travel", "food", "games"]
EVENTS = ["login", "add_to_cart", "pay"]
SCHEMA: dict[str, ix.Kind] = {"level": "category", "membership_expires_at": "timestamp", "age": "number"}


# -- the model ------------------------------------------------------------------------------------------------------


@dataclass
class User:
    user_id: str
    tags: set[str]
    attributes: dict[str, Any]
    events: dict[str, list[datetime]] = field(default_factory=dict)


def minutes(at: datetime) -> int:
    return math.floor(at.timestamp() / 60)


EDGE_HOURS = [0, 1, 5, 24, 48, 72, 96, 168, 192]


def near_hours(rnd: random.Random, hours: int) -> int:
    """Minutes within ±``hours`` of now: mostly one of the query windows ± a minute, so edges are hit exactly."""
    if rnd.random() < 0.3:
        return rnd.randint(-hours * 60, hours * 60)
    return rnd.choice([-1, 1]) * rnd.choice(EDGE_HOURS) * 60 + rnd.choice([-1, 0, 1])


def past(rnd: random.Random) -> int:
    """Minutes before now for an event: mostly on a window edge, a few just after now (a fast client clock)."""
    return rnd.randint(-30, 0) if rnd.random() < 0.05 else abs(near_hours(rnd, 600))


def make_users(n: int, seed: int) -> list[User]:
    rnd = random.Random(seed)
    users = []
    for i in range(n):
        attrs: dict[str, Any] = {}
        if rnd.random() < 0.95:
            attrs["city"] = CITIES[min(int(rnd.expovariate(0.6)), len(CITIES) - 1)]
        attrs["level"] = rnd.randint(1, 5)
        attrs["gender"] = rnd.choice(["f", "m", "x"])
        attrs["premium"] = rnd.random() < 0.3
        if rnd.random() < 0.9:
            attrs["age"] = rnd.randint(12, 80)
        if rnd.random() < 0.8:
            attrs["spend"] = round(rnd.uniform(0, 2000), 2)
        attrs["interests"] = rnd.sample(INTERESTS, rnd.randint(0, 3))
        if rnd.random() < 0.7:
            # Whole hours ± a minute hit the window edges exactly; odd seconds check the flooring to the minute.
            offset = timedelta(minutes=near_hours(rnd, 240), seconds=rnd.choice([0, 0, 30, 59]))
            attrs["membership_expires_at"] = (NOW.replace(second=0) + offset).isoformat()
        tags = {t for t, rate in zip(TAGS, TAG_RATES, strict=True) if rnd.random() < rate}
        events: dict[str, list[datetime]] = {}
        for event, rate in zip(EVENTS, [0.7, 0.4, 0.2], strict=True):
            if rnd.random() < rate:
                events[event] = [NOW - timedelta(minutes=past(rnd)) for _ in range(rnd.randint(1, 6))]
        users.append(User(f"u{i:05d}", tags, attrs, events))
    return users


def bulk_index(users: list[User], lists: dict[str, list[str]]) -> ix.SegmentIndex:
    """The index as the start-up loader fills it: columnar arrays by row."""
    users = sorted(users, key=lambda u: u.user_id)
    index = ix.SegmentIndex(SCHEMA)
    index.load_users(np.array([u.user_id.encode() for u in users]))
    n = len(users)
    for tag in TAGS:
        index.load_tag(tag, np.array([tag in u.tags for u in users]))
    index.load_categories(
        "city",
        np.array([CITIES.index(u.attributes.get("city", "-")) if "city" in u.attributes else -1 for u in users]),
        CITIES,
    )
    index.load_categories("level", np.array([u.attributes["level"] - 1 for u in users], dtype=np.int8), [1, 2, 3, 4, 5])
    index.load_categories(
        "gender", np.array([["f", "m", "x"].index(u.attributes["gender"]) for u in users]), ["f", "m", "x"]
    )
    index.load_value("premium", True, np.array([r for r, u in enumerate(users) if u.attributes["premium"]]))
    index.load_value("premium", False, np.array([r for r, u in enumerate(users) if not u.attributes["premium"]]))
    for interest in INTERESTS:
        index.load_value("interests", interest, np.array([interest in u.attributes["interests"] for u in users]))
    index.load_numbers(
        "age",
        np.array([u.attributes.get("age", 0) for u in users], dtype=np.int16),
        np.array(["age" in u.attributes for u in users]),
    )
    index.load_numbers(
        "spend",
        np.array([u.attributes.get("spend", 0.0) for u in users]),
        np.array(["spend" in u.attributes for u in users]),
    )
    expires = [u.attributes.get("membership_expires_at") for u in users]
    seconds = np.array([datetime.fromisoformat(e).timestamp() if e else 0 for e in expires], dtype=np.int64)
    index.load_timestamps("membership_expires_at", seconds, np.array([e is not None for e in expires]))
    for event in EVENTS:
        last = np.array([max(u.events[event]).timestamp() if event in u.events else 0 for u in users], dtype=np.int64)
        index.load_event_last(event, last, np.array([event in u.events for u in users]))
        by_day: dict[int, list[int]] = {}
        for row, u in enumerate(users):
            for day in {minutes(at) // 1440 for at in u.events.get(event, [])}:
                by_day.setdefault(day, []).append(row)
        for day, rows in by_day.items():
            index.load_event_day(event, day, np.array(rows))
    assert index.rows == n
    for name, ids in lists.items():
        index.register_list(name, ids)
    return index


def incremental_index(users: list[User], lists: dict[str, list[str]]) -> ix.SegmentIndex:
    """The index as live updates fill it, one user at a time, in a shuffled order."""
    index = ix.SegmentIndex(SCHEMA)
    for u in random.Random(7).sample(users, len(users)):
        index.upsert(u.user_id, u.attributes, u.tags)
        for event, times in u.events.items():
            for at in times:
                index.track(u.user_id, event, at)
    for name, ids in lists.items():
        index.register_list(name, ids)
    return index


def kind_of(value: Any) -> str:
    return "b" if isinstance(value, bool) else "n" if isinstance(value, int | float) else "s"


def brute(node: q.Node, user: User, lists: dict[str, list[str]], now: datetime) -> bool:
    """The documented meaning of each condition, one user at a time."""
    now_m = minutes(now)
    match node:
        case q.And(children):
            return all(brute(c, user, lists, now) for c in children)
        case q.Or(children):
            return any(brute(c, user, lists, now) for c in children)
        case q.Not(child):
            return not brute(child, user, lists, now)
        case q.HasTag(tag):
            return tag in user.tags
        case q.InList(name):
            return user.user_id in lists[name]
        case q.Event(event, count, span):
            times = [minutes(at) for at in user.events.get(event, [])]
            if span is None:
                return bool(times)
            since = now_m - span.minutes
            if count == 1:
                return any(t >= since for t in times)
            return len({t // 1440 for t in times if t // 1440 >= since // 1440}) >= count
        case q.AttrWithin(attr, op, span):
            if attr not in user.attributes:
                return False
            t = minutes(datetime.fromisoformat(user.attributes[attr]))
            return now_m <= t <= now_m + span.minutes if op == "within_next" else now_m - span.minutes <= t <= now_m
        case q.Attr(attr, op, value):
            if attr not in user.attributes:
                return False
            stored = user.attributes[attr]
            if attr == "membership_expires_at":
                stored = minutes(datetime.fromisoformat(stored))
                value = (
                    tuple(ix.timestamp_minutes(v) for v in value)
                    if isinstance(value, tuple)
                    else ix.timestamp_minutes(value)
                )
            elements = stored if isinstance(stored, list) else [stored]
            if op == "exists":
                return bool(elements)
            if op == "!=":
                return bool(elements) and not any(kind_of(e) == kind_of(value) and e == value for e in elements)
            return any(_holds(op, e, value) for e in elements)
    raise AssertionError(node)


def _holds(op: str, stored: Any, value: Any) -> bool:
    if op == "in":
        return any(kind_of(stored) == kind_of(v) and stored == v for v in value)
    if op == "contains":
        return isinstance(stored, str) and value in stored
    if op == "between":
        low, high = value
        return kind_of(stored) == kind_of(low) and low <= stored <= high
    if kind_of(stored) != kind_of(value) or (kind_of(stored) == "b" and op != "="):
        return False
    return {
        "=": stored == value,
        ">": stored > value,
        ">=": stored >= value,
        "<": stored < value,
        "<=": stored <= value,
    }[op]


USERS = make_users(3000, seed=1)
LISTS = {"incident-42": [u.user_id for u in USERS[::7]] + ["ghost-1", "ghost-2"]}
BULK = bulk_index(USERS, LISTS)
INCREMENTAL = incremental_index(USERS, LISTS)


# -- random queries -------------------------------------------------------------------------------------------------

numbers = st.one_of(st.integers(0, 90), st.floats(0, 2100, allow_nan=False).map(lambda x: round(x, 2)))
iso_times = st.integers(-12 * 1440, 12 * 1440).map(lambda m: (NOW.replace(second=0) + timedelta(minutes=m)).isoformat())
windows = st.one_of(
    st.builds(dict, days=st.sampled_from([1, 2, 3, 7]) | st.integers(1, 12)),
    st.builds(dict, hours=st.sampled_from([1, 5, 24, 48, 72]) | st.integers(1, 72)),
)
ops = st.sampled_from(["=", "!=", ">", ">=", "<", "<="])


def attr_leaf(attr: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.builds(lambda op, v: {"attr": attr, "op": op, "value": v}, ops, values),
        st.builds(lambda vs: {"attr": attr, "op": "in", "value": vs}, st.lists(values, min_size=1, max_size=4)),
        st.builds(lambda a, b: {"attr": attr, "op": "between", "value": sorted([a, b])}, values, values),
        st.just({"attr": attr, "op": "exists"}),
    )


def event_leaf() -> st.SearchStrategy[dict[str, Any]]:
    def build(event: str, count: int, window: dict[str, int] | None) -> dict[str, Any]:
        node: dict[str, Any] = {"event": event, "count": count if window else 1}
        node.update({f"within_{k}": v for k, v in (window or {}).items()})
        return node

    return st.builds(build, st.sampled_from([*EVENTS, "never_seen"]), st.integers(1, 4), st.none() | windows)


leaves = st.one_of(
    st.builds(lambda t: {"tag": t}, st.sampled_from([*TAGS, "no_such_tag"])),
    st.just({"list": "incident-42"}),
    attr_leaf("city", st.sampled_from([*CITIES, "Nowhere"])),
    attr_leaf("level", st.integers(0, 6)),
    attr_leaf("gender", st.sampled_from(["f", "m", "x"])),
    attr_leaf("premium", st.booleans()).filter(lambda n: n["op"] in ("=", "!=", "exists")),
    attr_leaf("age", st.integers(10, 85)),
    attr_leaf("spend", numbers),
    attr_leaf("interests", st.sampled_from(INTERESTS)),
    attr_leaf("membership_expires_at", iso_times),
    attr_leaf("unknown_attr", st.integers(0, 5)),
    st.builds(
        lambda a, s: {"attr": a, "op": "contains", "value": s},
        st.sampled_from(["city", "interests"]),
        st.sampled_from(["ng", "a", "Bei", "ort"]),
    ),
    st.builds(
        lambda op, w: {"attr": "membership_expires_at", "op": op, **w},
        st.sampled_from(["within_next", "within_last"]),
        windows,
    ),
    event_leaf(),
)
trees = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.builds(lambda cs: {"and": cs}, st.lists(inner, min_size=1, max_size=4)),
        st.builds(lambda cs: {"or": cs}, st.lists(inner, min_size=1, max_size=4)),
        st.builds(lambda c: {"not": c}, inner),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, shift=st.sampled_from([0, 0, 60, -60, 1440, -1440]) | st.integers(-90, 90))
def test_every_query_selects_what_the_brute_force_model_selects(tree: dict[str, Any], shift: int) -> None:
    node = q.parse(tree)
    assert q.parse(q.to_json(node)) == node
    now = NOW + timedelta(minutes=shift)
    expected = {u.user_id for u in USERS if brute(node, u, LISTS, now)}
    for index in (BULK, INCREMENTAL):
        rows = ev.evaluate(index, node, now)
        assert set(index.user_ids_of(ix.bitmap_rows(rows))) == expected
        assert ev.count(index, node, now) == len(expected)


# -- validation -----------------------------------------------------------------------------------------------------

EXAMPLE = {
    "and": [
        {"tag": "vip"},
        {"attr": "city", "op": "in", "value": ["Beijing", "Shanghai"]},
        {"attr": "membership_expires_at", "op": "within_next", "days": 3},
        {"event": "login", "op": "at_least", "count": 1, "within_days": 3},
        {"not": {"event": "pay", "within_hours": 24}},
        {"list": "incident-42"},
    ]
}


def test_the_documented_example_parses_into_typed_nodes_and_back() -> None:
    node = q.parse(EXAMPLE)
    assert isinstance(node, q.And)
    assert node.children[2] == q.AttrWithin("membership_expires_at", "within_next", q.Span(3, "days"))
    assert node.children[4] == q.Not(q.Event("pay", 1, q.Span(24, "hours")))
    assert q.parse(q.to_json(node)) == node


def _deep(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"tag": "vip"}
    for _ in range(levels - 1):
        node = {"not": node}
    return node


@pytest.mark.parametrize(
    ("tree", "path", "words"),
    [
        (
            {"and": [{"tag": "vip"}, {"tag": "a"}, {"attr": "age", "op": "~", "value": 1}]},
            "conditions.and[2].op",
            "one of",
        ),
        ({"or": [{"not": {"attr": "age", "op": ">", "value": True}}]}, "conditions.or[0].not.value", "no order"),
        ({"attr": "age", "op": "between", "value": [1]}, "conditions.value", "[low, high]"),
        ({"attr": "age", "op": "between", "value": [1, "x"]}, "conditions.value", "both be numbers"),
        ({"attr": "city", "op": "in", "value": []}, "conditions.value", "list of 1"),
        ({"attr": "city", "op": "in", "value": ["a", {"b": 1}]}, "conditions.value[1]", "string, a number"),
        ({"attr": "city", "op": "="}, "conditions.value", "required"),
        ({"attr": "city", "op": "exists", "value": 1}, "conditions.value", "unknown field"),
        ({"attr": "spend", "op": ">", "value": float("nan")}, "conditions.value", "finite"),
        ({"attr": "x", "op": "within_next"}, "conditions.days", "required"),
        ({"attr": "x", "op": "within_last", "days": 2, "hours": 3}, "conditions", "not both"),
        ({"attr": "x", "op": "within_last", "days": 0}, "conditions.days", "from 1"),
        ({"event": "login", "count": 0, "within_days": 3}, "conditions.count", "from 1"),
        ({"event": "login", "count": 2}, "conditions.count", "needs within_days"),
        ({"event": "login", "within_days": 400}, "conditions.within_days", "from 1 to 365"),
        ({"event": "login", "op": "at_most"}, "conditions.op", "at_least"),
        ({"tag": "vip", "attr": "age"}, "conditions", "exactly one"),
        ({"tag": ""}, "conditions.tag", "tag"),
        ({"tag": "a\nb"}, "conditions.tag", "printable"),
        ({"and": {"tag": "vip"}}, "conditions.and", "list of 1"),
        ({"and": [["tag"]]}, "conditions.and[0]", "object"),
        (_deep(q.MAX_DEPTH + 1), "conditions" + ".not" * q.MAX_DEPTH, "deeper"),
        ({"or": [{"tag": f"t{i}"} for i in range(50)] * 1}, None, None),
        (
            {"and": [{"or": [{"tag": f"t{i}"} for i in range(50)]} for _ in range(5)]},
            "conditions.and[3].or[45]",
            "at most 200",
        ),
    ],
)
def test_a_bad_condition_is_refused_with_the_path_of_the_bad_node(
    tree: Any, path: str | None, words: str | None
) -> None:
    if path is None:
        q.parse(tree)  # the largest allowed shape passes
        return
    with pytest.raises(errors.InvalidInput) as caught:
        q.parse(tree)
    assert caught.value.code == "invalid_segment"
    assert caught.value.details == {"path": path}
    assert words in caught.value.message and caught.value.message.startswith(path + ":")


@pytest.mark.parametrize(
    ("tree", "path", "words"),
    [
        ({"and": [{"tag": "vip"}, {"attr": "age", "op": "=", "value": "old"}]}, "conditions.and[1].value", "number"),
        ({"attr": "age", "op": "in", "value": [1, "x"]}, "conditions.value[1]", "number"),
        ({"attr": "membership_expires_at", "op": ">", "value": "next tuesday"}, "conditions.value", "ISO 8601"),
        ({"not": {"attr": "spend", "op": "contains", "value": "1"}}, "conditions.not.op", "text attribute"),
        ({"attr": "city", "op": "within_next", "days": 1}, "conditions.op", "timestamp attribute"),
        ({"or": [{"tag": "vip"}, {"list": "nope"}]}, "conditions.or[1].list", "no ID list"),
        ({"event": "login", "count": 2, "within_days": 200}, "conditions", "90 days"),
    ],
)
def test_a_condition_that_does_not_fit_the_index_is_refused_with_its_path(tree: Any, path: str, words: str) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        ev.count(BULK, q.parse(tree), NOW)
    assert caught.value.details == {"path": path}
    assert words in caught.value.message


def test_an_attribute_with_too_many_values_is_dropped_and_conditions_on_it_refused() -> None:
    index = ix.SegmentIndex(max_categories=3)
    for i in range(5):
        index.upsert(f"u{i}", {"email": f"{i}@example.com", "city": "Beijing"}, [])
    assert ev.count(index, q.parse({"attr": "city", "op": "=", "value": "Beijing"}), NOW) == 5
    with pytest.raises(errors.InvalidInput, match="too many distinct values"):
        ev.count(index, q.parse({"attr": "email", "op": "contains", "value": "@"}), NOW)


# -- incremental updates --------------------------------------------------------------------------------------------


def ids(index: ix.SegmentIndex, tree: dict[str, Any], now: datetime = NOW) -> set[str]:
    return set(index.user_ids_of(ix.bitmap_rows(ev.evaluate(index, q.parse(tree), now))))


def small_index() -> ix.SegmentIndex:
    index = ix.SegmentIndex(SCHEMA)
    index.load_users(np.array([b"a", b"b", b"c"]))
    index.load_tag("vip", np.array([0, 2]))
    index.load_categories("city", np.array([0, 1, -1]), ["Beijing", "Shanghai"])
    index.load_numbers("age", np.array([30, 40, 50], dtype=np.int8))
    return index


def test_upsert_replaces_tags_and_attributes_and_can_add_new_users() -> None:
    index = small_index()
    assert ids(index, {"tag": "vip"}) == {"a", "c"}
    index.upsert("a", {"city": "Shanghai", "age": 31.5}, ["new_user"])
    index.upsert("d", {"city": "Beijing", "age": 1000, "plan": "gold"}, ["vip"])
    assert ids(index, {"tag": "vip"}) == {"c", "d"}
    assert ids(index, {"tag": "new_user"}) == {"a"}
    assert ids(index, {"attr": "city", "op": "=", "value": "Shanghai"}) == {"a", "b"}
    assert ids(index, {"attr": "city", "op": "=", "value": "Beijing"}) == {"d"}
    # 31.5 and 1000 do not fit the bulk-loaded int8 column: it becomes float64 without losing the others.
    assert ids(index, {"attr": "age", "op": ">", "value": 31}) == {"a", "b", "c", "d"}
    assert ids(index, {"attr": "age", "op": "<", "value": 32}) == {"a"}
    assert ids(index, {"attr": "plan", "op": "exists"}) == {"d"}
    index.upsert("c", {}, [])
    assert ids(index, {"attr": "age", "op": "exists"}) == {"a", "b", "d"}
    assert ids(index, {"not": {"tag": "vip"}}) == {"a", "b", "c"}


def test_delete_removes_a_user_from_every_condition_and_upsert_brings_it_back_clean() -> None:
    index = small_index()
    index.track("a", "login", NOW)
    index.register_list("l", ["a", "b"])
    index.delete("a")
    index.delete("nobody")
    for tree in ({"tag": "vip"}, {"attr": "age", "op": "exists"}, {"event": "login"}, {"list": "l"}):
        assert "a" not in ids(index, tree)
    assert ids(index, {"not": {"tag": "vip"}}) == {"b"}
    assert ev.count(index, q.parse({"not": {"tag": "nothing"}}), NOW) == 2
    index.upsert("a", {"age": 20}, [])
    assert ids(index, {"attr": "age", "op": "<", "value": 25}) == {"a"}
    assert "a" not in ids(index, {"tag": "vip"}) | ids(index, {"event": "login"})
    assert ids(index, {"list": "l"}) == {"a", "b"}  # lists are about ids: the user is back in it


def test_an_id_list_counts_users_created_after_it() -> None:
    index = small_index()
    index.register_list("incident", ["b", "zed"])
    assert ids(index, {"list": "incident"}) == {"b"}
    index.upsert("zed", {}, [])
    assert ids(index, {"list": "incident"}) == {"b", "zed"}
    index.drop_list("incident")
    with pytest.raises(errors.InvalidInput):
        ids(index, {"list": "incident"})


def test_tracking_an_event_moves_behaviour_conditions() -> None:
    index = small_index()
    cart_not_pay = {
        "and": [{"event": "add_to_cart", "within_hours": 24}, {"not": {"event": "pay", "within_hours": 24}}]
    }
    index.track("a", "add_to_cart", NOW - timedelta(hours=2))
    index.track("b", "add_to_cart", NOW - timedelta(hours=25))
    assert ids(index, cart_not_pay) == {"a"}
    index.track("a", "pay", NOW - timedelta(hours=1))
    assert ids(index, cart_not_pay) == set()
    assert ids(index, cart_not_pay, NOW + timedelta(hours=23, minutes=30)) == set()  # the cart is 25.5 h old
    # An older event arriving late does not move the last time back.
    index.track("a", "pay", NOW - timedelta(days=5))
    assert ids(index, {"event": "pay", "within_hours": 2}) == {"a"}


def test_event_edges_are_at_minute_resolution_and_include_the_start() -> None:
    index = small_index()
    index.track("a", "login", NOW - timedelta(hours=24))
    index.track("b", "login", NOW - timedelta(hours=24, minutes=1))
    index.track("c", "login", NOW - timedelta(hours=24, seconds=40))
    window = {"event": "login", "within_hours": 24}
    # NOW is hh:34:56: the window starts at minute hh:34 a day ago, which holds a (hh:34:56) and c (hh:34:16).
    assert ids(index, window) == {"a", "c"}
    assert ids(index, window, NOW + timedelta(seconds=4)) == set()  # now floors to hh:35: the start moves on
    assert ids(index, window, NOW - timedelta(minutes=1)) == {"a", "b", "c"}


def test_at_least_k_counts_distinct_days_in_the_window() -> None:
    index = small_index()
    day = NOW.replace(hour=0, minute=0, second=0)
    for hours in (1, 2, 3):  # three logins, one day
        index.track("a", "login", day + timedelta(hours=hours))
    for days in (0, 1, 2):
        index.track("b", "login", day - timedelta(days=days) + timedelta(hours=1))
    index.track("c", "login", day - timedelta(days=3, hours=-23))  # the day that holds now - 3 days counts whole
    index.track("c", "login", day)
    assert ids(index, {"event": "login", "count": 3, "within_days": 3}) == {"b"}
    assert ids(index, {"event": "login", "count": 2, "within_days": 3}) == {"b", "c"}
    assert ids(index, {"event": "login", "count": 2, "within_days": 1}) == {"b"}


def test_day_bitmaps_older_than_the_horizon_are_dropped_but_last_times_stay() -> None:
    index = ix.SegmentIndex(horizon_days=10)
    index.upsert("a", {}, [])
    index.track("a", "login", NOW - timedelta(days=30))
    index.track("a", "login", NOW - timedelta(days=29))
    assert ids(index, {"event": "login", "count": 2, "within_days": 10}, NOW - timedelta(days=28)) == {"a"}
    index.track("a", "login", NOW)
    assert min(index.events["login"].days) > NOW.timestamp() // 86400 - 10
    assert ids(index, {"event": "login", "count": 2, "within_days": 10}, NOW - timedelta(days=28)) == set()
    assert ids(index, {"event": "login", "within_days": 40}, NOW - timedelta(days=28)) == {"a"}


def test_time_windows_on_timestamps_include_both_ends_at_minute_resolution() -> None:
    index = ix.SegmentIndex()
    start = NOW.replace(second=0)
    offsets = {"now": 0, "edge": 3 * 1440, "past_edge": 3 * 1440 + 1, "just_before": -1, "back_edge": -3 * 1440}
    for user, minutes_off in offsets.items():
        index.upsert(user, {"expires": start + timedelta(minutes=minutes_off, seconds=59)}, [])
    index.upsert("text", {"expires": "not a time"}, [])
    assert index.skipped_values == 1
    assert ids(index, {"attr": "expires", "op": "within_next", "days": 3}) == {"now", "edge"}
    assert ids(index, {"attr": "expires", "op": "within_last", "hours": 72}) == {"now", "just_before", "back_edge"}
    iso = (start + timedelta(days=3)).isoformat()
    assert ids(index, {"attr": "expires", "op": ">", "value": iso}) == {"past_edge"}
    assert ids(index, {"attr": "expires", "op": "=", "value": start.timestamp() + 30}) == {"now"}
    assert ids(index, {"attr": "expires", "op": "within_next", "days": 3}, NOW + timedelta(days=10)) == set()


# -- results ------------------------------------------------------------------------------------------------------


def test_sample_is_spread_evenly_and_stable_unless_seeded() -> None:
    node = q.parse({"tag": "price_sensitive"})
    every = [i for chunk in ev.user_ids(BULK, node, NOW) for i in chunk]
    first = ev.sample(BULK, node, 10, NOW)
    assert first == ev.sample(BULK, node, 10, NOW) == [every[i * len(every) // 10] for i in range(10)]
    seeded = ev.sample(BULK, node, 10, NOW, seed=3)
    assert seeded == ev.sample(BULK, node, 10, NOW, seed=3) != first
    assert set(seeded) <= set(every) and seeded == sorted(seeded)
    assert ev.sample(BULK, node, 10**6, NOW) == every


def test_user_ids_come_in_row_order_chunks_covering_every_match_once() -> None:
    node = q.parse({"or": [{"tag": "vip"}, {"event": "pay", "within_days": 2}]})
    chunks = list(ev.user_ids(INCREMENTAL, node, NOW, chunk_size=100))
    flat = [i for chunk in chunks for i in chunk]
    assert all(len(c) == 100 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 100
    assert len(flat) == len(set(flat)) == ev.count(INCREMENTAL, node, NOW)
    assert [INCREMENTAL.row_of(i) for i in flat] == sorted(INCREMENTAL.row_of(i) or 0 for i in flat)
    assert set(flat) == {u.user_id for u in USERS if brute(node, u, LISTS, NOW)}


# -- loading --------------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 300_000), density=st.sampled_from([0.0, 1e-5, 0.01, 0.06, 0.07, 0.5, 1.0]), seed=st.integers(0, 9)
)
def test_a_mask_becomes_the_bitmap_of_its_true_rows(n: int, density: float, seed: int) -> None:
    mask = np.random.default_rng(seed).random(n) < density
    assert ix.bitmap_rows(ix.mask_to_bitmap(mask)).tolist() == np.flatnonzero(mask).tolist()


def test_bulk_loading_checks_its_input() -> None:
    with pytest.raises(errors.InvalidInput, match="sorted"):
        ix.SegmentIndex().load_users(["b", "a"])
    with pytest.raises(errors.InvalidInput, match="sorted"):
        ix.SegmentIndex().load_users(["a", "a"])
    index = small_index()
    with pytest.raises(errors.InvalidInput, match="empty index"):
        index.load_users(["x"])
    with pytest.raises(errors.InvalidInput, match="does not exist"):
        index.load_tag("vip", np.array([3]))
    with pytest.raises(errors.InvalidInput, match="one value per row"):
        index.load_numbers("x", np.array([1, 2]))
    with pytest.raises(errors.InvalidInput, match="unknown kind"):
        ix.SegmentIndex({"x": "text"})  # type: ignore[dict-item]
    assert index.rows_for(["c", "zzz", "a"]).tolist() == [2, -1, 0]


def test_unicode_ids_round_trip_and_memory_is_reported() -> None:
    index = ix.SegmentIndex()
    index.load_users(sorted(["用户1", "a", "é"], key=str.encode))
    index.upsert("later", {"age": 3}, ["t"])
    everyone = ids(index, {"not": {"tag": "none"}})
    assert everyone == {"用户1", "a", "é", "later"}
    assert index.row_of("用户1") == 2 and index.row_of("用户") is None
    memory = index.memory()
    assert memory["total"] == memory["bitmaps"] + memory["arrays"] + memory["user_ids"] > 0
