"""Conversions: a template's ``goal`` event, tracked through ``POST /v1/track`` after a click on the message's link
(or its delivery), converts the most recent eligible message once, on its timeline and in the funnel with its
amount; outside the window, without a message, or a second time, it converts nothing."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from clarion import bootstrap
from tests.conftest import drain, put_template, put_user, sink

GOAL = {"event": "coupon.claimed", "within_hours": 72, "attribution": "click"}


async def send(api: httpx.AsyncClient, template: str, to: list[str], n: int = 1) -> dict[str, str]:
    answer = await api.post("/v1/messages", json={"template": template, "to": to, "data": {"n": n}})
    assert answer.status_code == 202, answer.text
    return {m["user_id"]: m["id"] for m in answer.json()["messages"]}


async def click(clarion: bootstrap.Clarion, public: httpx.AsyncClient, user_id: str) -> None:
    [line] = [line for line in sink(clarion, "sms") if line["user_id"] == user_id]
    code = re.search(r"/s/([0-9A-Za-z]+)", line["content"]["text"])
    assert code is not None
    assert (await public.get(f"/s/{code.group(1)}")).status_code == 302


async def track(api: httpx.AsyncClient, *events: dict[str, Any]) -> dict[str, Any]:
    answer = await api.post("/v1/track", json={"events": list(events)})
    assert answer.status_code == 200, answer.text
    return answer.json()


def converted(detail: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for d in detail["deliveries"] for e in d["timeline"] if e["status"] == "converted"]


async def test_a_goal_event_after_a_click_converts_the_message_once_with_its_amount(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    for n in (1, 2, 3):
        await put_user(api, f"u{n}", addresses={"sms": f"+861380013800{n}"})
    await put_template(api, "spring", goal=GOAL, channels={"sms": {"text": "领券 https://shop.example.com/c"}})
    saved = (await api.get("/v1/templates/spring")).json()
    assert saved["goal"] == GOAL
    ids = await send(api, "spring", ["u1", "u2", "u3"])
    await drain(clarion)
    await click(clarion, public, "u1")
    await click(clarion, public, "u3")
    now = datetime.now(UTC)

    first = await track(
        api,
        {
            "user_id": "u1",
            "event": "coupon.claimed",
            "at": (now + timedelta(hours=1)).isoformat(),
            "properties": {"amount": 30},
        },
        {"user_id": "u2", "event": "coupon.claimed"},  # got the SMS but never clicked: nothing to attribute
        {"user_id": "u3", "event": "coupon.claimed", "at": (now + timedelta(hours=73)).isoformat()},  # too late
        {"user_id": "u9", "event": "coupon.claimed"},  # no message at all
        {"user_id": "u1", "event": "page.viewed"},  # not a goal
    )
    assert first["converted"] == 1
    again = await track(api, {"user_id": "u1", "event": "coupon.claimed", "properties": {"amount": 99}})
    assert again["converted"] == 0  # a message converts once

    detail = (await api.get(f"/v1/messages/{ids['u1']}")).json()
    [event] = converted(detail)
    assert event["reason"] == "goal coupon.claimed within 72 h of its click"
    assert event["detail"]["event"] == "coupon.claimed" and event["detail"]["amount"] == 30
    for user in ("u2", "u3"):
        assert converted((await api.get(f"/v1/messages/{ids[user]}")).json()) == []

    funnel = (await api.get("/v1/analytics/funnel", params={"template": "spring"})).json()["total"]
    assert (funnel["stages"]["clicked"], funnel["stages"]["converted"], funnel["revenue"]) == (2, 1, 30.0)
    assert funnel["rates"]["conversion_rate"] == {"rate": 0.5, "numerator": 1, "denominator": 2}


async def test_delivery_attribution_converts_the_most_recent_message_without_a_click(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await put_user(api, "u1", addresses={"sms": "+8613800138001"})
    goal = {"event": "order.paid", "within_hours": 24, "attribution": "delivery"}
    await put_template(api, "reminder", goal=goal, channels={"sms": {"text": "您的订单 {data.n} 待支付"}})
    older = await send(api, "reminder", ["u1"])
    await drain(clarion)
    newer = await send(api, "reminder", ["u1"], n=2)  # another order: not a duplicate
    await drain(clarion)
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert (await track(api, {"user_id": "u1", "event": "order.paid", "at": later}))["converted"] == 1
    assert converted((await api.get(f"/v1/messages/{newer['u1']}")).json())
    assert converted((await api.get(f"/v1/messages/{older['u1']}")).json()) == []
    # an event before any message was sent converts nothing
    before = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert (await track(api, {"user_id": "u1", "event": "order.paid", "at": before}))["converted"] == 0


@pytest.mark.parametrize(
    ("goal", "field"),
    [
        ({"event": ""}, "goal.event"),
        ({"event": "x", "within_hours": 0}, "goal.within_hours"),
        ({"event": "x", "attribution": "open"}, "goal.attribution"),
        ({"event": "x", "extra": 1}, "goal.extra"),
    ],
)
async def test_a_bad_goal_is_422_naming_the_field(api: httpx.AsyncClient, goal: dict[str, Any], field: str) -> None:
    body = {"name": "x", "category": "transactional", "goal": goal, "channels": {"sms": {"text": "hi"}}}
    answer = await api.put("/v1/templates/x", json=body)
    assert answer.status_code == 422, answer.text
    assert field in answer.text
