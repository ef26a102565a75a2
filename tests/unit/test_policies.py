"""The policies as pure functions: each decision for the cases that matter to a user."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from clarion.counters import base as counters
from clarion.domain import errors, keywords, model
from clarion.domain.policy import caps, config, consent, dedup, quiet_hours, suppression
from clarion.domain.policy import keywords as keyword_policy
from clarion.domain.policy.decision import ALLOW, Candidate, Defer, Drop

C, Ch = model.Category, model.Channel
UTC_ZONE = ZoneInfo("UTC")
SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")


def candidate(
    category: model.Category = C.MARKETING,
    channel: model.Channel = Ch.SMS,
    *,
    now: datetime = datetime(2026, 6, 1, 12, 0, tzinfo=UTC),
    priority: model.Priority = model.Priority.NORMAL,
    preferences: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
    address: Any = "+8613800138000",
    department: str | None = "growth",
    user_id: str = "u1",
    dedup_key: str | None = None,
) -> Candidate:
    template = model.Template(
        key="t",
        name="t",
        category=category,
        priority=priority,
        channels={channel: {"text": "hi"}},
        department=department,
        policy=config.TemplatePolicy.from_json(policy),
    )
    prefs = config.Preferences.from_json(preferences or {})
    user = model.User(user_id, preferences=prefs)
    return Candidate("m1", user, template, channel, now, address, dedup_key, prefs)


SETTINGS = config.PolicySettings()


# -- consent ---------------------------------------------------------------------------------------------------


def test_channel_opt_out_drops_marketing_and_transactional_but_never_a_code() -> None:
    prefs = {"channels": {"sms": False}}
    for category in (C.MARKETING, C.NOTIFICATION, C.TRANSACTIONAL):
        decision = consent.decide(candidate(category, preferences=prefs), SETTINGS)
        assert isinstance(decision, Drop) and decision.reason.startswith("opted_out")
    assert consent.decide(candidate(C.VERIFICATION, preferences=prefs), SETTINGS) is ALLOW
    assert consent.decide(candidate(C.MARKETING, Ch.EMAIL, preferences=prefs), SETTINGS) is ALLOW


def test_category_opt_out_does_not_silence_transactional_messages() -> None:
    prefs = {"categories": {"marketing": False, "transactional": False}}
    assert isinstance(consent.decide(candidate(C.MARKETING, preferences=prefs), SETTINGS), Drop)
    assert consent.decide(candidate(C.TRANSACTIONAL, preferences=prefs), SETTINGS) is ALLOW


def test_category_channel_pair_opt_out() -> None:
    prefs = {"categories": {"notification": {"channels": {"sms": False}}}}
    decision = consent.decide(candidate(C.NOTIFICATION, preferences=prefs), SETTINGS)
    assert isinstance(decision, Drop) and decision.detail["preference"] == "category_channel"
    assert consent.decide(candidate(C.NOTIFICATION, Ch.EMAIL, preferences=prefs), SETTINGS) is ALLOW
    assert consent.decide(candidate(C.MARKETING, preferences=prefs), SETTINGS) is ALLOW


def test_opt_in_mode_needs_explicit_marketing_consent() -> None:
    opt_in = config.PolicySettings.from_json({"marketing_consent": "opt_in"})
    assert isinstance(consent.decide(candidate(), opt_in), Drop)
    assert consent.decide(candidate(preferences={"marketing_consent": True}), opt_in) is ALLOW
    assert consent.decide(candidate(), SETTINGS) is ALLOW  # opt-out mode: allowed until refused
    assert isinstance(consent.decide(candidate(preferences={"marketing_consent": False}), SETTINGS), Drop)
    assert consent.decide(candidate(C.NOTIFICATION), opt_in) is ALLOW


# -- suppressions ----------------------------------------------------------------------------------------------


def sup(**kw: Any) -> config.Suppression:
    base: dict[str, Any] = dict(
        id="s1", user_id=None, address=None, channel=None, category=None, reason=None, source="admin"
    )
    base.update(kw)
    return config.Suppression(created_at=datetime(2026, 1, 1, tzinfo=UTC), **base)


def test_suppression_by_user_scoped_to_category() -> None:
    s = sup(user_id="u1", category=C.MARKETING, source="unsubscribe_link")
    decision = suppression.decide(candidate(), [s])
    assert isinstance(decision, Drop) and "unsubscribe_link" in decision.reason
    assert decision.detail["suppression_id"] == "s1"
    assert suppression.decide(candidate(C.TRANSACTIONAL), [s]) is ALLOW
    assert suppression.decide(candidate(user_id="u2"), [s]) is ALLOW


def test_suppression_by_address_even_without_a_user_and_case_insensitive_email() -> None:
    s = sup(address="ann@example.com", source="complaint")
    assert isinstance(suppression.decide(candidate(C.VERIFICATION, Ch.EMAIL, address="Ann@Example.com"), [s]), Drop)
    assert suppression.decide(candidate(C.VERIFICATION, Ch.EMAIL, address="bob@example.com"), [s]) is ALLOW


def test_push_is_suppressed_only_when_every_device_is() -> None:
    s = sup(address="tok-a", channel=Ch.PUSH)
    assert suppression.decide(candidate(channel=Ch.PUSH, address=["tok-a", "tok-b"]), [s]) is ALLOW
    both = [s, sup(id="s2", address="tok-b")]
    assert isinstance(suppression.decide(candidate(channel=Ch.PUSH, address=["tok-a", "tok-b"]), both), Drop)


# -- quiet hours -----------------------------------------------------------------------------------------------


def at(zone: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=zone).astimezone(UTC)  # type: ignore[misc]


def test_marketing_outside_window_is_deferred_to_the_users_morning() -> None:
    c = candidate(now=at(SHANGHAI, 2026, 6, 1, 22, 30))
    decision = quiet_hours.decide(c, SETTINGS, SHANGHAI)
    assert isinstance(decision, Defer)
    assert decision.until == at(SHANGHAI, 2026, 6, 2, 9, 0)
    assert decision.detail["window"] == "09:00-20:00" and decision.detail["timezone"] == "Asia/Shanghai"
    # the same instant is 14:30 in UTC: inside the window for a user there
    assert quiet_hours.decide(c, SETTINGS, UTC_ZONE) is ALLOW


def test_window_boundaries_start_inclusive_end_exclusive() -> None:
    assert quiet_hours.decide(candidate(now=at(SHANGHAI, 2026, 6, 1, 9, 0)), SETTINGS, SHANGHAI) is ALLOW
    closing = quiet_hours.decide(candidate(now=at(SHANGHAI, 2026, 6, 1, 20, 0)), SETTINGS, SHANGHAI)
    assert isinstance(closing, Defer) and closing.until == at(SHANGHAI, 2026, 6, 2, 9, 0)
    last = quiet_hours.decide(candidate(now=at(SHANGHAI, 2026, 6, 1, 19, 59, 59)), SETTINGS, SHANGHAI)
    assert last is ALLOW


def test_template_can_drop_instead_of_defer_or_ignore_the_window() -> None:
    night = at(SHANGHAI, 2026, 6, 1, 23, 0)
    dropped = quiet_hours.decide(candidate(now=night, policy={"quiet_hours": "drop"}), SETTINGS, SHANGHAI)
    assert isinstance(dropped, Drop) and dropped.reason.startswith("quiet_hours")
    ignored = candidate(now=night, policy={"quiet_hours": "ignore"})
    assert quiet_hours.decide(ignored, SETTINGS, SHANGHAI) is ALLOW
    narrower = candidate(now=at(SHANGHAI, 2026, 6, 1, 10, 0), policy={"send_window": "12:00-13:00"})
    deferred = quiet_hours.decide(narrower, SETTINGS, SHANGHAI)
    assert isinstance(deferred, Defer) and deferred.until == at(SHANGHAI, 2026, 6, 1, 12, 0)


def test_protected_messages_ignore_the_operator_window() -> None:
    night = at(SHANGHAI, 2026, 6, 1, 23, 0)
    for c in (
        candidate(C.VERIFICATION, now=night),
        candidate(C.TRANSACTIONAL, now=night, policy={"quiet_hours": "drop"}),
        candidate(C.MARKETING, now=night, priority=model.Priority.URGENT),
    ):
        assert quiet_hours.decide(c, SETTINGS, SHANGHAI) is ALLOW


def test_users_do_not_disturb_defers_transactional_but_not_codes() -> None:
    prefs = {"do_not_disturb": "22:00-08:00"}
    night = at(SHANGHAI, 2026, 6, 1, 23, 0)
    order = quiet_hours.decide(candidate(C.TRANSACTIONAL, now=night, preferences=prefs), SETTINGS, SHANGHAI)
    assert isinstance(order, Defer) and order.until == at(SHANGHAI, 2026, 6, 2, 8, 0)
    assert order.detail["kind"] == "do_not_disturb"
    assert quiet_hours.decide(candidate(C.VERIFICATION, now=night, preferences=prefs), SETTINGS, SHANGHAI) is ALLOW
    # marketing waits for both: the user's 08:00 and the operator's 09:00
    promo = quiet_hours.decide(candidate(now=night, preferences=prefs), SETTINGS, SHANGHAI)
    assert isinstance(promo, Defer) and promo.until == at(SHANGHAI, 2026, 6, 2, 9, 0)


def test_windows_that_never_overlap_drop() -> None:
    prefs = {"do_not_disturb": "08:00-22:00"}
    decision = quiet_hours.decide(candidate(now=at(SHANGHAI, 2026, 6, 1, 12)), SETTINGS, SHANGHAI)
    assert decision is ALLOW
    never = quiet_hours.decide(candidate(now=at(SHANGHAI, 2026, 6, 1, 12), preferences=prefs), SETTINGS, SHANGHAI)
    assert isinstance(never, Drop) and "never overlap" in never.reason


def test_dst_spring_forward_window_opening_in_the_gap() -> None:
    # 2026-03-08: New York skips 02:00-03:00. A window opening at 02:30 opens at 03:00 that day.
    settings = config.PolicySettings.from_json({"send_windows": {"marketing": "02:30-20:00"}})
    decision = quiet_hours.decide(candidate(now=at(NEW_YORK, 2026, 3, 8, 1, 0)), settings, NEW_YORK)
    assert isinstance(decision, Defer)
    assert decision.until == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT


def test_dst_fall_back_defers_by_wall_clock_not_by_fixed_hours() -> None:
    # 2026-11-01: New York repeats 01:00-02:00; 21:00 the evening before to 09:00 is 13 hours, not 12.
    decision = quiet_hours.decide(candidate(now=at(NEW_YORK, 2026, 10, 31, 21, 0)), SETTINGS, NEW_YORK)
    assert isinstance(decision, Defer)
    assert decision.until == datetime(2026, 11, 1, 14, 0, tzinfo=UTC)  # 09:00 EST
    assert (decision.until - at(NEW_YORK, 2026, 10, 31, 21, 0)).total_seconds() == 13 * 3600


# -- keywords --------------------------------------------------------------------------------------------------


def test_block_list_drops_naming_word_and_field_mask_list_masks_every_string() -> None:
    block = keywords.KeywordList("illegal", ["赌博"], action="block")
    mask = keywords.KeywordList("competitor", ["AcmePay"], action="mask")
    decision, _, _ = keyword_policy.screen({"title": "hello", "body": "网络赌博"}, [block, mask])
    assert isinstance(decision, Drop)
    assert decision.detail["word"] == "赌博" and decision.detail["field"] == "body"
    decision, content, masked = keyword_policy.screen({"subject": "acmepay deal", "body": {"x": ["AcmePay"]}}, [mask])
    assert decision is ALLOW
    assert content == {"subject": "*** deal", "body": {"x": ["***"]}}
    assert [m["field"] for m in masked] == ["subject", "body.x.0"]


# -- dedup, caps and the safety valve --------------------------------------------------------------------------


def test_dedup_key_depends_on_user_channel_and_content_or_business_key() -> None:
    a = dedup.key(candidate(), {"text": "code 1234"})
    assert a == dedup.key(candidate(), {"text": "code 1234"})
    assert a != dedup.key(candidate(), {"text": "code 9999"})
    assert a != dedup.key(candidate(user_id="u2"), {"text": "code 1234"})
    assert a != dedup.key(candidate(channel=Ch.EMAIL), {"text": "code 1234"})
    keyed = dedup.key(candidate(dedup_key="order-7"), {"text": "x"})
    assert keyed == dedup.key(candidate(dedup_key="order-7"), {"text": "different words"})
    assert dedup.window(candidate(policy={"dedup_seconds": 0}), SETTINGS) == 0
    assert dedup.window(candidate(), SETTINGS) == 300


def cap(key: str, limit: int, **kw: Any) -> config.Cap:
    return config.Cap.from_json(key, {"limit": limit, **kw})


CAPS = [
    cap("mkt-sms-week", 1, window={"seconds": 7 * 86400}, channel="sms", category="marketing"),
    cap("sms-dept-day", 5, window={"unit": "day"}, channel="sms", per_department=True),
    cap("sms-day", 30, window={"unit": "day"}, channel="sms"),
    cap("email-day", 3, window={"unit": "day"}, channel="email"),
]


def test_limits_for_a_marketing_sms_name_every_matching_cap_in_the_users_calendar() -> None:
    c = candidate(now=at(SHANGHAI, 2026, 6, 1, 12))
    counted = caps.limits_for(c, CAPS, SETTINGS, SHANGHAI, dedup_key="dedup:abc")
    keys = [limit.key for limit in counted.limits]
    assert keys == [
        "dedup:abc",
        "cap:mkt-sms-week:604800s:u1",
        "cap:sms-dept-day:day:u1:growth",
        "cap:sms-day:day:u1",
        "valve:3600s:u1",
    ]
    day = counted.limits[2].window
    assert day.kind == "fixed" and day.start == at(SHANGHAI, 2026, 6, 1, 0).timestamp() and day.seconds == 86400
    assert [limit.limit for limit in counted.limits] == [1, 1, 5, 30, 100]


def test_protected_messages_are_counted_but_never_refused_by_caps_exempt_ones_not_counted() -> None:
    code = caps.limits_for(candidate(C.VERIFICATION), CAPS, SETTINGS, UTC_ZONE)
    assert [limit.key.split(":")[1] for limit in code.limits] == ["sms-dept-day", "sms-day", "3600s"]
    assert all(limit.limit > 10**6 for limit in code.limits[:-1]) and code.limits[-1].limit == 100
    exempt = caps.limits_for(candidate(policy={"exempt_caps": True}), CAPS, SETTINGS, UTC_ZONE)
    assert [limit.key for limit in exempt.limits] == ["valve:3600s:u1"]
    off = config.PolicySettings.from_json({"enabled": {"safety_valve": False, "caps": False}})
    assert caps.limits_for(candidate(), CAPS, off, UTC_ZONE).hit() is None


def test_limits_in_force_serve_every_user_zone_day_and_template_alike() -> None:
    # The stage keeps one Limits while the caps and settings stay the same: what it works out per template and
    # channel must not leak one delivery's user, zone, day or template into another's.
    limits = caps.Limits(CAPS, SETTINGS)
    deliveries = [
        (candidate(now=at(SHANGHAI, 2026, 6, 1, 12)), SHANGHAI, "dedup:a"),
        (candidate(now=at(SHANGHAI, 2026, 6, 1, 12), user_id="u2", department=None), SHANGHAI, None),
        (candidate(now=at(NEW_YORK, 2026, 6, 1, 23)), NEW_YORK, "dedup:b"),
        (candidate(now=at(NEW_YORK, 2026, 6, 2, 1)), NEW_YORK, "dedup:c"),
        (candidate(C.VERIFICATION, now=at(SHANGHAI, 2026, 6, 2, 1), user_id="u3"), SHANGHAI, "dedup:d"),
        (candidate(C.TRANSACTIONAL, Ch.EMAIL, policy={"dedup_seconds": 0}), UTC_ZONE, "dedup:e"),
        (candidate(policy={"exempt_caps": True}), UTC_ZONE, "dedup:f"),
    ]
    for c, zone, key in deliveries * 2:
        assert limits.counted(c, zone, key) == caps.limits_for(c, CAPS, SETTINGS, zone, key)
    shanghai_day = limits.counted(*deliveries[0]).limits[2]
    assert shanghai_day.key == "cap:sms-dept-day:day:u1:growth"
    assert shanghai_day.window.start == at(SHANGHAI, 2026, 6, 1, 0).timestamp()
    no_department = limits.counted(*deliveries[1]).limits[1]
    assert no_department.key == "cap:sms-dept-day:day:u2:-"
    assert limits.counted(*deliveries[3]).limits[2].window.start == at(NEW_YORK, 2026, 6, 2, 0).timestamp()
    assert [limit.key for limit in limits.counted(*deliveries[5]).limits] == ["cap:email-day:day:u1", "valve:3600s:u1"]
    assert limits.dedup_seconds(deliveries[5][0]) == 0 and limits.dedup_seconds(deliveries[0][0]) == 300


def test_decide_names_the_cap_and_the_count_it_saw() -> None:
    c = candidate()
    counted = caps.limits_for(c, CAPS, SETTINGS, UTC_ZONE, dedup_key="dedup:k")
    refused = counters.HitResult(False, (0, 1, 2, 2, 7), blocked=1)
    decision = caps.decide(c, counted, refused)
    assert isinstance(decision, Drop) and decision.policy == "caps"
    assert decision.detail == {"limit": 1, "count": 1, "window": {"seconds": 604800}, "cap": "mkt-sms-week"}
    dup = caps.decide(c, counted, counters.HitResult(False, (1, 0, 0, 0, 0), blocked=0))
    assert isinstance(dup, Drop) and dup.policy == "dedup" and dup.reason.startswith("duplicate")
    valve = caps.decide(c, counted, counters.HitResult(False, (0, 0, 0, 0, 100), blocked=4))
    assert isinstance(valve, Drop) and valve.policy == "safety_valve"
    assert caps.decide(c, counted, counters.HitResult(True, (1, 1, 1, 1, 1))) is ALLOW


# -- configuration -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: config.Cap.from_json("k", {"limit": -1, "window": {"unit": "day"}}), "limit"),
        (lambda: config.Cap.from_json("k", {"limit": 1, "window": {"unit": "month"}}), "window.unit"),
        (lambda: config.Cap.from_json("k", {"limit": 1, "window": {}}), "window"),
        (lambda: config.Cap.from_json("k", {"limit": 1, "window": {"unit": "day"}, "channel": "fax"}), "channel"),
        (lambda: config.PolicySettings.from_json({"default_timezone": "Mars/Base"}), "default_timezone"),
        (lambda: config.PolicySettings.from_json({"send_windows": {"marketing": "9-20"}}), "send_windows.marketing"),
        (lambda: config.PolicySettings.from_json({"enabled": {"teleport": True}}), "enabled"),
        (lambda: config.Preferences.from_json({"channels": {"sms": "no"}}), "channels.sms"),
        (lambda: config.Preferences.from_json({"do_not_disturb": "22:00-22:00"}), "do_not_disturb"),
        (lambda: config.TemplatePolicy.from_json({"quiet_hours": "sometimes"}), "policy.quiet_hours"),
    ],
)
def test_bad_configuration_names_the_field(build: Any, field: str) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        build()
    assert caught.value.details["field"] == field


def test_configuration_round_trips_through_json() -> None:
    settings = config.PolicySettings.from_json(
        {"default_timezone": "Asia/Shanghai", "send_windows": {"marketing": "10:00-21:00"}, "dedup_seconds": 60}
    )
    assert config.PolicySettings.from_json(settings.to_json()) == settings
    assert settings.to_json()["quiet_hours"] == {"marketing": "defer", "notification": "defer"}
    prefs = config.Preferences.from_json(
        {
            "channels": {"sms": False, "email": True},
            "categories": {"marketing": False, "notification": {"channels": {"push": False}}},
            "marketing_consent": True,
            "do_not_disturb": "22:00-08:00",
        }
    )
    assert config.Preferences.from_json(prefs.to_json()) == prefs
    one = CAPS[1]
    assert config.Cap.from_json(one.key, {k: v for k, v in one.to_json().items() if k not in ("key", "summary")}) == one
    assert one.describe() == "at most 5 sms per user per department per day"


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("Li@Example.COM ", "li@example.com"),
        ("+86 138-0013-8000", "+8613800138000"),
        ("+8613800138000", "+8613800138000"),
        ("device-token-AbC", "device-token-AbC"),
        ("https://hooks.example.com/a", "https://hooks.example.com/a"),
    ],
)
def test_addresses_are_compared_as_users_store_them(given: str, stored: str) -> None:
    assert config.normalize_address(given) == stored
