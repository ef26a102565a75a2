"""Alert rules: validation naming the field, and fire → hold → repeat → recover for every kind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clarion.analytics import alerts
from clarion.domain import errors

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
ALIYUN = alerts.Subject("provider", "aliyun-a")
SALES = alerts.Subject("department", "sales")


def rule(kind: str, condition: dict[str, Any], **extra: Any) -> alerts.AlertRule:
    body = {"key": f"{kind}-rule", "kind": kind, "condition": condition, "notify": {"provider": "ops-robot"}}
    return alerts.AlertRule.from_json(body | extra)


def walk(
    r: alerts.AlertRule, subject: alerts.Subject, steps: list[tuple[int, alerts.Observation]]
) -> list[alerts.Transition]:
    """Evaluate observations at the given minutes after T0, carrying the state along."""
    state: alerts.AlertState | None = None
    out = []
    for minute, observation in steps:
        t = alerts.evaluate(r, subject, observation, state, T0 + timedelta(minutes=minute))
        state = t.state
        out.append(t)
    return out


BAD_RATE = alerts.RateWindow(sent=100, delivered=61, failed=39)
GOOD_RATE = alerts.RateWindow(sent=100, delivered=97, failed=3)

LIFECYCLES = [
    ("delivery_rate", {"threshold": 0.9}, ALIYUN, BAD_RATE, GOOD_RATE),
    (
        "failure_spike",
        {"min_failures": 20, "factor": 3},
        ALIYUN,
        alerts.RateWindow(100, 60, 40, baseline_failed=5.0),
        alerts.RateWindow(100, 90, 10, baseline_failed=5.0),
    ),
    (
        "urgent_queue_age",
        {"seconds": 300},
        alerts.Subject("queue", "urgent"),
        alerts.QueueAge(412.7),
        alerts.QueueAge(None),
    ),
    (
        "breaker_opened",
        {},
        ALIYUN,
        alerts.BreakerState(frozenset({"aliyun-a"})),
        alerts.BreakerState(frozenset({"tencent-b"})),
    ),
    ("budget", {}, SALES, alerts.BudgetUse(8500, 10000), alerts.BudgetUse(7000, 10000)),
]


@pytest.mark.parametrize(("kind", "condition", "subject", "bad", "good"), LIFECYCLES, ids=[c[0] for c in LIFECYCLES])
def test_each_kind_fires_holds_repeats_and_recovers(
    kind: str, condition: dict[str, Any], subject: alerts.Subject, bad: alerts.Observation, good: alerts.Observation
) -> None:
    r = rule(kind, condition, repeat_minutes=30)
    steps = [(0, good), (1, bad), (10, bad), (29, bad), (31, bad), (40, bad), (61, bad), (62, good), (63, good)]
    got = walk(r, subject, steps)
    assert [t.action for t in got] == ["quiet", "fire", "hold", "hold", "repeat", "hold", "repeat", "recover", "quiet"]
    assert got[1].state.firing_since == T0 + timedelta(minutes=1)
    assert got[4].state == alerts.AlertState(T0 + timedelta(minutes=1), T0 + timedelta(minutes=31), got[4].state.value)
    assert got[7].state.firing_since is None and got[7].text.startswith("recovered: ")
    assert [t.notifies for t in got].count(True) == 4


def test_text_names_figure_threshold_and_subject() -> None:
    texts = {
        kind: alerts.evaluate(rule(kind, cond), subject, bad, None, T0).text
        for kind, cond, subject, bad, _ in LIFECYCLES
    }
    assert texts == {
        "delivery_rate": "delivery rate of provider aliyun-a 61.0% over 15 min, below 90.0%",
        "failure_spike": "failures of provider aliyun-a 40 over 15 min, baseline 5.0, at or above 3.0× baseline "
        "and at least 20",
        "urgent_queue_age": "oldest queued urgent delivery waiting 412 s, over 300 s",
        "breaker_opened": "breaker of provider aliyun-a open",
        "budget": "spend of department sales 8,500.00 of budget 10,000.00 this month (85.0%), at or above 80.0%",
    }
    everything = alerts.evaluate(
        rule("delivery_rate", {"threshold": 0.9}), alerts.Subject.everything(), BAD_RATE, None, T0
    )
    assert everything.text == "delivery rate of all deliveries 61.0% over 15 min, below 90.0%"


def test_min_sent_keeps_a_thin_window_from_firing() -> None:
    r = rule("delivery_rate", {"threshold": 0.9, "min_sent": 50})
    thin = alerts.evaluate(r, ALIYUN, alerts.RateWindow(sent=2, delivered=1, failed=1), None, T0)
    assert thin.action == "quiet"
    assert thin.text == "delivery rate of provider aliyun-a: 2 sent over 15 min, fewer than 50"
    assert alerts.evaluate(r, ALIYUN, alerts.RateWindow(sent=50, delivered=25, failed=25), None, T0).action == "fire"
    # a firing alert is neither recovered nor re-notified by a thin window
    firing = alerts.evaluate(r, ALIYUN, BAD_RATE, None, T0).state
    later = alerts.evaluate(r, ALIYUN, alerts.RateWindow(3, 3, 0), firing, T0 + timedelta(hours=3))
    assert later.action == "hold" and later.state.firing_since == T0


def test_baseline_drop_mode_compares_with_the_same_hour_last_week() -> None:
    r = rule("delivery_rate", {"drop_points": 10})
    usual = alerts.RateWindow(sent=200, delivered=150, failed=50, baseline_rate=0.8)  # 75.0%, 5 points down
    dropped = alerts.RateWindow(sent=200, delivered=122, failed=78, baseline_rate=0.86)  # 61.0%, 25 points down
    assert alerts.evaluate(r, ALIYUN, usual, None, T0).action == "quiet"
    fired = alerts.evaluate(r, ALIYUN, dropped, None, T0)
    assert fired.action == "fire"
    assert fired.text == (
        "delivery rate of provider aliyun-a 61.0% over 15 min, 25.0 points below its baseline 86.0% (limit 10.0)"
    )
    no_history = alerts.RateWindow(sent=200, delivered=10, failed=190, baseline_rate=None)
    assert alerts.evaluate(r, ALIYUN, no_history, None, T0).action == "quiet"
    both = rule("delivery_rate", {"threshold": 0.9, "drop_points": 10})
    assert alerts.evaluate(both, ALIYUN, no_history, None, T0).action == "fire"  # the threshold still judges
    assert " and 25.0 points below" in alerts.evaluate(both, ALIYUN, dropped, None, T0).text


def test_failure_spike_needs_both_the_floor_and_the_factor() -> None:
    r = rule("failure_spike", {"min_failures": 20, "factor": 3})
    assert alerts.evaluate(r, ALIYUN, alerts.RateWindow(100, 70, 30, baseline_failed=12.0), None, T0).action == "quiet"
    assert alerts.evaluate(r, ALIYUN, alerts.RateWindow(100, 85, 15, baseline_failed=1.0), None, T0).action == "quiet"
    assert alerts.evaluate(r, ALIYUN, alerts.RateWindow(100, 75, 25, baseline_failed=None), None, T0).action == "fire"


def test_repeat_zero_never_renotifies_and_disabled_rules_stay_quiet() -> None:
    r = rule("breaker_opened", {}, repeat_minutes=0)
    opened = alerts.BreakerState(frozenset({"aliyun-a"}))
    assert [t.action for t in walk(r, ALIYUN, [(0, opened), (600, opened)])] == ["fire", "hold"]
    off = rule("breaker_opened", {}, enabled=False)
    assert alerts.evaluate(off, ALIYUN, opened, None, T0).action == "quiet"


def test_scope_and_round_trip() -> None:
    body = {
        "key": "aliyun-rate",
        "kind": "delivery_rate",
        "condition": {"scope": {"provider": "aliyun-a"}, "window_minutes": 15, "threshold": 0.9, "min_sent": 50},
        "notify": {"provider": "ops-mail", "to": "ops@example.com"},
        "repeat_minutes": 60,
        "enabled": True,
    }
    r = alerts.AlertRule.from_json(body)
    assert r.to_json() == body
    assert r.covers(ALIYUN) and not r.covers(alerts.Subject("provider", "tencent-b"))
    assert rule("budget", {}).covers(SALES)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "sms_volume"}, "kind"),
        ({"key": ""}, "key"),
        ({"condition": {"threshold": 1.5}}, "condition.threshold"),
        ({"condition": {}}, "condition.threshold"),
        ({"condition": {"threshold": 0.9, "min_sent": 0}}, "condition.min_sent"),
        ({"condition": {"threshold": 0.9, "window_minutes": "15"}}, "condition.window_minutes"),
        ({"condition": {"threshold": 0.9, "drop_points": -1}}, "condition.drop_points"),
        ({"condition": {"threshold": 0.9, "seconds": 5}}, "condition"),
        ({"condition": {"threshold": 0.9, "scope": {"department": "x"}}}, "condition.scope"),
        ({"condition": {"threshold": 0.9, "scope": {"provider": ""}}}, "condition.scope.provider"),
        ({"notify": {"to": "ops@example.com"}}, "notify.provider"),
        ({"notify": {"provider": "ops", "to": 5}}, "notify.to"),
        ({"repeat_minutes": -1}, "repeat_minutes"),
        ({"enabled": "yes"}, "enabled"),
    ],
)
def test_validation_names_the_field(change: dict[str, Any], field: str) -> None:
    body = {"key": "r", "kind": "delivery_rate", "condition": {"threshold": 0.9}, "notify": {"provider": "ops"}}
    with pytest.raises(errors.InvalidInput) as info:
        alerts.AlertRule.from_json(body | change)
    assert info.value.details["field"] == field
    assert info.value.message.startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("kind", "condition", "field"),
    [
        ("failure_spike", {"factor": 0.5}, "condition.factor"),
        ("urgent_queue_age", {"seconds": 0}, "condition.seconds"),
        ("urgent_queue_age", {"scope": {"provider": "a"}}, "condition.scope"),
        ("budget", {"share": 0}, "condition.share"),
    ],
)
def test_validation_of_other_kinds(kind: str, condition: dict[str, Any], field: str) -> None:
    with pytest.raises(errors.InvalidInput) as info:
        rule(kind, condition)
    assert info.value.details["field"] == field


def test_an_observation_of_the_wrong_kind_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="delivery_rate rule needs a RateWindow"):
        alerts.evaluate(rule("delivery_rate", {"threshold": 0.9}), ALIYUN, alerts.QueueAge(5), None, T0)
