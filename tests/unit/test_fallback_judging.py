"""What a pending fallback step does with its original's status, when it is due, and which steps a send acts on;
the category defaults of the policy settings are checked like a template's chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clarion.domain import errors, fallback, model
from clarion.domain.policy import config

C, S, W = model.Channel, model.DeliveryStatus, fallback.When
PUSH_SMS = fallback.Step(C.PUSH, C.SMS, W.NOT_DELIVERED, 120)
SMS_EMAIL = fallback.Step(C.SMS, C.EMAIL, W.FAILED)


@pytest.mark.parametrize(
    ("when", "original", "passed", "verdict"),
    [
        (W.NOT_DELIVERED, S.SENT, False, "wait"),
        (W.NOT_DELIVERED, S.SENT, True, "fire"),
        (W.NOT_DELIVERED, S.QUEUED, True, "fire"),  # still stuck behind a backlog at the deadline
        (W.NOT_DELIVERED, S.DELIVERED, True, "cancel"),
        (W.NOT_DELIVERED, S.UNDELIVERED, False, "fire"),
        (W.NOT_DELIVERED, S.FILTERED, False, "fire"),
        (W.NOT_READ, S.DELIVERED, False, "wait"),
        (W.NOT_READ, S.DELIVERED, True, "fire"),
        (W.NOT_READ, S.READ, True, "cancel"),
        (W.FAILED, S.SENT, True, "wait"),  # a failed step has no deadline
        (W.FAILED, S.FAILED, False, "fire"),
        (W.FAILED, S.BOUNCED, False, "fire"),
        (W.FAILED, S.EXPIRED, False, "fire"),
        (W.FAILED, S.DELIVERED, False, "cancel"),
    ],
)
def test_a_step_waits_fires_or_is_cancelled_by_its_original_s_status(
    when: fallback.When, original: model.DeliveryStatus, passed: bool, verdict: str
) -> None:
    assert fallback.judge(when, original, deadline_passed=passed) == verdict


def test_a_step_is_due_within_seconds_after_its_original_goes_out_and_a_failed_step_has_no_time() -> None:
    at = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
    assert fallback.due_at(PUSH_SMS, at) == at + timedelta(seconds=120)
    assert fallback.due_at(SMS_EMAIL, at) is None


def test_a_send_acts_on_the_steps_of_its_channels_and_an_urgent_one_on_none() -> None:
    chain = (PUSH_SMS, SMS_EMAIL)
    assert fallback.for_send(chain, [C.PUSH, C.SMS, C.EMAIL], model.Priority.NORMAL) == chain
    assert fallback.for_send(chain, [C.PUSH, C.EMAIL], model.Priority.NORMAL) == ()
    assert fallback.for_send(chain, [C.SMS, C.EMAIL], model.Priority.HIGH) == (SMS_EMAIL,)
    assert fallback.for_send(chain, [C.PUSH, C.SMS, C.EMAIL], model.Priority.URGENT) == ()


def test_the_policy_settings_keep_a_default_chain_per_category_checked_like_a_template_s() -> None:
    raw = [PUSH_SMS.as_json()]
    settings = config.PolicySettings.from_json({"fallback": {"notification": raw}})
    assert settings.fallback == {model.Category.NOTIFICATION: (PUSH_SMS,)}
    assert settings.to_json()["fallback"] == {"notification": raw}
    assert config.PolicySettings().to_json()["fallback"] == {}
    for bad, field in (
        ({"notification": [{"from": "push", "to": "push", "when": "failed"}]}, "fallback.notification[0]"),
        ({"gossip": raw}, "fallback.gossip"),
        ({"notification": "push"}, "fallback.notification"),
    ):
        with pytest.raises(errors.InvalidInput) as caught:
            config.PolicySettings.from_json({"fallback": bad})
        assert caught.value.details["field"] == field
