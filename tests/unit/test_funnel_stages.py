"""Which funnel stages a timeline event counts at (``analytics.funnel``): its own, those it implies, and none for a
late receipt that changed nothing."""

from __future__ import annotations

from typing import Any

from clarion.analytics import funnel


def event(status: str, **detail: Any) -> dict[str, Any]:
    return {"delivery_id": "d1", "message_id": "m1", "status": status, "detail": detail or None}


def test_an_open_straight_after_sent_also_counts_delivered() -> None:
    opened = event("read", implies=["delivered"])
    assert funnel.stage_of(opened) == ("opened", "")
    assert funnel.implied_stages(opened) == ["delivered"]
    assert funnel.implied_stages(event("read")) == []
    assert funnel.implied_stages(event("clicked", implies="delivered")) == []  # not a list: nothing implied


def test_a_late_receipt_whose_status_was_kept_counts_nowhere() -> None:
    assert funnel.stage_of(event("delivered", status_kept="read")) is None
    assert funnel.stage_of(event("delivered")) == ("delivered", "")


def test_a_message_level_event_implies_nothing() -> None:
    accepted = {"delivery_id": None, "message_id": "m1", "status": "accepted", "detail": {"implies": ["delivered"]}}
    assert funnel.stage_of(accepted) == ("requested", "")
    assert funnel.implied_stages(accepted) == []
