"""What an outside signal does to a delivery (``domain.receipts``), and what a message becomes from its
deliveries (``model.message_status``)."""

from __future__ import annotations

import pytest

from clarion.domain import model, receipts
from clarion.domain.receipts import Event, judge

S = model.DeliveryStatus
M = model.MessageStatus


@pytest.mark.parametrize(
    ("current", "event", "action", "status"),
    [
        ("sent", Event.DELIVERED, "move", S.DELIVERED),
        ("sent", Event.UNDELIVERED, "move", S.UNDELIVERED),
        ("sent", Event.BOUNCED, "move", S.BOUNCED),
        ("sent", Event.READ, "move", S.READ),
        ("delivered", Event.READ, "move", S.READ),
        ("read", Event.CLICKED, "move", S.CLICKED),
        # a vendor that said "undelivered" and later "delivered" (the carrier retried) was wrong the first time
        ("undelivered", Event.DELIVERED, "move", S.DELIVERED),
        # a delivery that failed on our side may yet be proven delivered by its vendor
        ("failed", Event.DELIVERED, "move", S.DELIVERED),
        # never backwards: kept on the timeline, the status stays
        ("delivered", Event.UNDELIVERED, "note", None),
        ("read", Event.UNDELIVERED, "note", None),
        ("clicked", Event.DELIVERED, "note", None),
        ("clicked", Event.READ, "note", None),
        ("bounced", Event.UNDELIVERED, "note", None),
        ("sent", Event.DELAYED, "note", None),
        # nothing new
        ("delivered", Event.DELIVERED, "ignore", None),
        ("bounced", Event.BOUNCED, "ignore", None),
    ],
)
def test_a_signal_moves_a_sent_delivery_only_forward(
    current: str, event: Event, action: str, status: model.DeliveryStatus | None
) -> None:
    judgement = judge(current, event)
    assert (judgement.action, judgement.status) == (action, status)
    if action == "note":
        assert current in judgement.why


@pytest.mark.parametrize("current", ["accepted", "queued", "deferred", "sending"])
@pytest.mark.parametrize("event", list(Event))
def test_a_signal_before_the_outcome_is_recorded_is_held(current: str, event: Event) -> None:
    assert judge(current, event).action == "hold"


@pytest.mark.parametrize("current", ["filtered", "expired", "cancelled", "something-else"])
def test_a_delivery_that_was_never_sent_takes_no_signal(current: str) -> None:
    assert judge(current, Event.DELIVERED).action == "ignore"


def test_read_after_sent_says_it_implies_delivered() -> None:
    assert "implies delivered" in judge("sent", Event.READ).why
    assert judge("sent", Event.READ).implied == ("delivered",)
    assert "implies" not in judge("delivered", Event.READ).why
    assert judge("delivered", Event.READ).implied == ()
    assert "implies delivered" in judge("sent", Event.CLICKED).why


def test_only_a_change_that_leaves_it_unreached_may_call_for_a_fallback() -> None:
    assert receipts.may_fall_back("sent", S.UNDELIVERED)
    assert receipts.may_fall_back("sent", S.BOUNCED)
    assert not receipts.may_fall_back("undelivered", S.BOUNCED)
    assert not receipts.may_fall_back("sent", S.DELIVERED)


@pytest.mark.parametrize(
    ("status", "action", "event"),
    [
        ("5.1.1", "failed", Event.BOUNCED),
        ("5.2.2", None, Event.BOUNCED),
        (None, "failed", Event.BOUNCED),
        ("4.4.7", "delayed", Event.DELAYED),
        ("4.2.2", "failed", Event.DELAYED),  # a transient code is not a hard bounce, whatever the action says
        ("2.0.0", "delivered", Event.DELIVERED),
        ("2.0.0", "relayed", None),
        ("2.0.0", "expanded", None),
        (None, None, None),
    ],
)
def test_a_dsn_status_and_action_are_a_bounce_a_delay_or_a_delivery(
    status: str | None, action: str | None, event: Event | None
) -> None:
    assert receipts.bounce_event(status, action) is event


@pytest.mark.parametrize(
    ("deliveries", "message"),
    [
        (["clicked", "undelivered"], M.CLICKED),
        (["read", "delivered"], M.READ),
        (["undelivered", "delivered"], M.DELIVERED),
        (["bounced", "sent"], M.SENT),
        # a fallback still on its way: the message may yet reach the user
        (["undelivered", "queued"], M.QUEUED),
        (["undelivered"], M.UNDELIVERED),
        (["bounced", "filtered"], M.BOUNCED),
        (["undelivered", "bounced"], M.UNDELIVERED),
        (["expired"], M.EXPIRED),
        (["expired", "filtered"], M.EXPIRED),
        (["expired", "failed"], M.FAILED),
        (["filtered", "cancelled"], M.FILTERED),
        (["delivered", "cancelled"], M.DELIVERED),
        (["failed"], M.FAILED),
    ],
)
def test_a_message_follows_its_best_delivery(deliveries: list[str], message: model.MessageStatus) -> None:
    assert model.message_status(deliveries) is message
    assert model.message_status(list(reversed(deliveries))) is message
