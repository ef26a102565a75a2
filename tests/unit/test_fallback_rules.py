"""Fallback chains are checked when the template is saved: bounded, acyclic, on channels the template has."""

from __future__ import annotations

import itertools

import pytest

from clarion.domain import errors, fallback, model

C = model.Channel
ALL = (C.PUSH, C.SMS, C.EMAIL, C.INBOX)


def _error(raw: object, channels: tuple[model.Channel, ...] = ALL) -> errors.InvalidInput:
    with pytest.raises(errors.InvalidInput) as caught:
        fallback.parse(raw, channels)
    assert caught.value.code == "invalid_fallback"
    return caught.value


def test_a_chain_is_parsed_and_written_back_as_given() -> None:
    raw = [
        {"from": "push", "to": "sms", "when": "not_delivered", "within": 120},
        {"from": "sms", "to": "email", "when": "failed"},
    ]
    steps = fallback.parse(raw, ALL)
    assert steps == (
        fallback.Step(C.PUSH, C.SMS, fallback.When.NOT_DELIVERED, 120),
        fallback.Step(C.SMS, C.EMAIL, fallback.When.FAILED),
    )
    assert [s.as_json() for s in steps] == raw
    assert fallback.first_channels(steps, [C.PUSH, C.SMS, C.EMAIL]) == [C.PUSH]


def test_no_chain_is_an_empty_chain() -> None:
    assert fallback.parse(None, ALL) == ()
    assert fallback.parse([], ALL) == ()


def test_a_cycle_is_refused_naming_it() -> None:
    error = _error(
        [
            {"from": "push", "to": "sms", "when": "failed"},
            {"from": "sms", "to": "push", "when": "failed"},
        ]
    )
    assert error.details["field"] == "fallback[0]"
    assert error.details["cycle"] == ["push", "sms", "push"]


def test_a_channel_cannot_fall_back_to_itself_nor_have_two_fallbacks() -> None:
    assert _error([{"from": "sms", "to": "sms", "when": "failed"}]).details["field"] == "fallback[0]"
    two = [{"from": "push", "to": "sms", "when": "failed"}, {"from": "push", "to": "email", "when": "failed"}]
    assert _error(two).details["field"] == "fallback[1]"


def test_a_chain_is_bounded() -> None:
    channels = tuple(model.Channel)
    raw = [{"from": a.value, "to": b.value, "when": "failed"} for a, b in itertools.pairwise(channels)]
    assert len(raw) > fallback.MAX_STEPS
    assert _error(raw, channels).details == {"field": "fallback", "max": fallback.MAX_STEPS}


def test_the_template_must_have_content_for_both_channels() -> None:
    error = _error([{"from": "push", "to": "sms", "when": "failed"}], (C.PUSH,))
    assert error.details["unknown"] == ["sms"]


@pytest.mark.parametrize(
    "step",
    [
        {"from": "push", "to": "sms", "when": "not_delivered"},  # within is required
        {"from": "push", "to": "sms", "when": "not_delivered", "within": 0},
        {"from": "push", "to": "sms", "when": "not_delivered", "within": True},
        {"from": "push", "to": "sms", "when": "not_delivered", "within": fallback.MAX_WITHIN + 1},
        {"from": "push", "to": "sms", "when": "failed", "within": 60},  # failed fires at once
        {"from": "push", "to": "sms", "when": "not_read", "within": 60},  # read is an inbox outcome
        {"from": "push", "to": "sms", "when": "soon", "within": 60},
        {"from": "pager", "to": "sms", "when": "failed"},
        {"from": "push", "when": "failed"},
        {"from": "push", "to": "sms", "when": "failed", "after": 3},
        "push->sms",
    ],
)
def test_a_malformed_step_is_refused_naming_it(step: object) -> None:
    assert _error([step]).details["field"] == "fallback[0]"


def test_not_a_list_is_refused() -> None:
    assert _error({"from": "push"}).details["field"] == "fallback"
    assert _error("push").details["field"] == "fallback"


def test_what_cancels_and_what_fires_at_once() -> None:
    not_delivered = fallback.Step(C.PUSH, C.SMS, fallback.When.NOT_DELIVERED, 60)
    not_read = fallback.Step(C.INBOX, C.SMS, fallback.When.NOT_READ, 60)
    assert fallback.reached(not_delivered, "delivered")
    assert not fallback.reached(not_delivered, "sent")
    assert not fallback.reached(not_read, "delivered")
    assert fallback.reached(not_read, "read")
    assert fallback.due_now("undelivered") and fallback.due_now("bounced") and fallback.due_now("failed")
    assert not fallback.due_now("sent")
