"""Campaign rules as values: the definition, the schedule, the lifecycle, the pacing and the estimate's scaling."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from clarion.campaigns import definition, estimate, lifecycle, pacing
from clarion.domain import approval, errors

S = lifecycle.Status
EDITOR = approval.Actor("ed", ("editor",))
ANA = approval.Actor("ana", ("approver",))
SENDER = approval.Actor("sam", ("sender",))


def test_a_cron_schedule_fires_in_its_time_zone() -> None:
    schedule = definition.Schedule.from_json({"kind": "cron", "cron": "0 10 * * *", "timezone": "Asia/Shanghai"})
    after = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai: the next fire is tomorrow's
    assert schedule.next_after(after) == datetime(2026, 3, 11, 2, 0, tzinfo=UTC)
    assert schedule.first_due(datetime(2026, 3, 10, 1, 0, tzinfo=UTC)) == after


def test_an_at_schedule_in_the_past_is_due_at_once() -> None:
    schedule = definition.Schedule.from_json({"kind": "at", "at": "2026-03-10T10:00:00+08:00"})
    assert schedule.at == datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    now = datetime(2026, 4, 1, tzinfo=UTC)
    assert schedule.first_due(now) == now
    assert definition.Schedule.from_json("now").first_due(now) == now


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"template": "t", "audience": {"segment": "s", "exclude": {"tag": "x"}}}, "audience.exclude.tag"),
        ({"template": "t", "audience": {"segment": "s"}, "channels": ["fax"]}, "channels.0"),
        ({"template": "t", "audience": {"list": "l"}, "schedule": {"kind": "cron", "cron": "x"}}, "schedule.cron"),
        (
            {
                "template": "t",
                "audience": {"list": "l"},
                "schedule": {"kind": "cron", "cron": "* * * * *", "timezone": "Mars/Base"},
            },
            "schedule.timezone",
        ),
        ({"template": "t", "audience": {"list": "l"}, "exclude_reached_days": -1}, "exclude_reached_days"),
        ({"template": "t", "audience": {"list": "l"}, "rate": True}, "rate"),
        ({"template": "t", "audience": {"list": "l"}, "goal": "has space"}, "goal"),
        ({"template": "t", "audience": {"list": "l"}, "colour": "red"}, "colour"),
    ],
)
def test_a_bad_definition_names_its_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(errors.InvalidInput) as raised:
        definition.Definition.from_json(body)
    assert raised.value.details == {"field": field}


def test_a_definition_survives_its_json() -> None:
    body = {
        "template": "promo",
        "audience": {"segment": "active", "list": "vip", "exclude": {"list": "staff"}},
        "channels": ["sms", "push"],
        "schedule": {"kind": "cron", "cron": "0 10 * * 1", "timezone": "Asia/Shanghai"},
        "rate": 50,
        "exclude_reached_days": 7,
        "goal": "order_paid",
    }
    parsed = definition.Definition.from_json(body)
    assert definition.Definition.from_json(parsed.to_json()) == parsed


def test_the_lifecycle_moves_only_along_its_arrows_and_by_the_right_people() -> None:
    assert lifecycle.decide("submit", S.DRAFT, EDITOR, author="ed") == lifecycle.Move(S.PENDING_REVIEW)
    own = lifecycle.decide("approve", S.PENDING_REVIEW, approval.Actor("ed", ("admin",)), author="ed")
    assert isinstance(own, approval.Refusal) and own.code == "own_campaign"
    assert lifecycle.decide("approve", S.PENDING_REVIEW, ANA, author="ed") == lifecycle.Move(S.APPROVED)
    refused = lifecycle.decide("start", S.APPROVED, ANA, author="ed")
    assert isinstance(refused, approval.Refusal) and refused.status == 403
    assert lifecycle.decide("start", S.APPROVED, SENDER, author="ed") == lifecycle.Move(S.SCHEDULED)
    wrong = lifecycle.decide("start", S.DRAFT, SENDER, author="ed")
    assert isinstance(wrong, approval.Refusal) and wrong.code == "invalid_transition"
    assert lifecycle.decide("resume", S.PAUSED, SENDER, author="ed", has_run=True) == lifecycle.Move(S.RUNNING)
    assert lifecycle.decide("resume", S.PAUSED, SENDER, author="ed") == lifecycle.Move(S.SCHEDULED)
    assert lifecycle.decide("pause", S.RUNNING, EDITOR, author="x") == lifecycle.Move(S.PAUSED)
    assert isinstance(lifecycle.decide("cancel", S.COMPLETED, SENDER, author="x"), approval.Refusal)
    assert lifecycle.editable(S.RUNNING) is not None and lifecycle.editable(S.COMPLETED) is None


async def test_the_bucket_paces_to_its_rate() -> None:
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    bucket = pacing.Bucket(100, clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        await bucket.take(50)
    assert now[0] == pytest.approx(5.0)
    await bucket.take(250)  # more than the burst: waits a second's worth, and the next take pays the debt
    assert now[0] == pytest.approx(6.0)
    await bucket.take(100)
    assert now[0] == pytest.approx(8.5)


def test_the_estimate_scales_a_sample_with_bounds() -> None:
    exact = estimate.Scale(100, 100)
    assert exact.count(30) == (30, None)
    sampled = estimate.Scale(1_000_000, 1000)
    value, bounds = sampled.count(300)
    assert value == 300_000
    assert bounds is not None and 270_000 < bounds[0] < 300_000 < bounds[1] < 330_000
    total, spread = sampled.total([1] * 500 + [3] * 500)
    assert total == 2_000_000 and spread is not None and spread[0] < total < spread[1]
    assert estimate.Scale(1000, 1000).total([2, 2]) == (4, None)
