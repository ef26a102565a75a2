"""Trigger rules and events: conditions compiled at save time, only matching rules send, events are idempotent."""

from __future__ import annotations

from typing import Any

import pytest

from clarion import bootstrap
from tests.conftest import drain, put_template, put_user

VIP_BIG = "data.amount > 100 and user.vip_level gte 3"


async def setup(api) -> None:
    await put_user(api, "vip", attributes={"name": "Li", "vip_level": 3}, addresses={"sms": "+8613800138000"})
    await put_user(api, "basic", attributes={"name": "Bo", "vip_level": 1}, addresses={"sms": "+8613900139000"})
    await put_template(
        api,
        "big-order",
        channels={"sms": {"text": "{name}: {data.amount}"}, "inbox": {"title": "Big", "body": "{data.amount}"}},
    )
    await put_template(api, "receipt", channels={"inbox": {"title": "Receipt", "body": "{data.amount}"}})


async def put_rule(api, key: str, **body: Any) -> dict[str, Any]:
    response = await api.put(f"/v1/rules/{key}", json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def event(api, user_id: str, amount: Any, **extra: Any) -> Any:
    return await api.post(
        "/v1/events", json={"name": "order.paid", "user_id": user_id, "data": {"amount": amount}, **extra}
    )


async def test_put_get_and_replace_a_rule(api) -> None:
    await setup(api)
    created = await api.put(
        "/v1/rules/vip",
        json={"event": "order.paid", "template": "big-order", "condition": VIP_BIG, "channels": ["sms"]},
    )
    assert created.status_code == 201
    rule = created.json()
    assert {k: rule[k] for k in ("key", "event", "template", "condition", "channels", "enabled")} == {
        "key": "vip",
        "event": "order.paid",
        "template": "big-order",
        "condition": VIP_BIG,
        "channels": ["sms"],
        "enabled": True,
    }
    replaced = await api.put("/v1/rules/vip", json={"event": "order.paid", "template": "receipt"})
    assert replaced.status_code == 200
    got = (await api.get("/v1/rules/vip")).json()
    assert (got["template"], got["condition"], got["channels"]) == ("receipt", None, None)


@pytest.mark.parametrize(
    ("condition", "position", "line", "column"),
    [
        ("data.amount >", 13, 1, 14),
        ("data.amount = 1", 12, 1, 13),
        ("data.amount > 1 and\n  user.vip_level >>= 3", 38, 2, 19),
        ("frobnicate(data.amount)", 0, 1, 1),
        ("'unterminated", 0, 1, 1),
    ],
)
async def test_bad_condition_is_422_with_its_position(
    api, condition: str, position: int, line: int, column: int
) -> None:
    await setup(api)
    response = await api.put(
        "/v1/rules/bad", json={"event": "order.paid", "template": "receipt", "condition": condition}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_expression"
    details = error["details"]
    assert details["field"] == "condition"
    assert (details["position"], details["line"], details["column"]) == (position, line, column)
    assert isinstance(details["message"], str) and details["message"]
    assert (await api.get("/v1/rules/bad")).status_code == 404


async def test_rule_for_a_missing_template_is_422(api) -> None:
    response = await api.put("/v1/rules/r", json={"event": "order.paid", "template": "nope"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_template"
    assert response.json()["error"]["details"] == {"field": "template"}
    assert (await api.get("/v1/rules/r")).status_code == 404


async def test_rule_channels_must_exist_in_the_template(api) -> None:
    await setup(api)
    response = await api.put("/v1/rules/r", json={"event": "order.paid", "template": "receipt", "channels": ["sms"]})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_channels"
    assert response.json()["error"]["details"] == {"field": "channels", "unknown": ["sms"]}


async def test_event_sends_only_for_matching_rules(api, clarion: bootstrap.Clarion) -> None:
    await setup(api)
    await put_rule(api, "a-vip", event="order.paid", template="big-order", condition=VIP_BIG, channels=["sms"])
    await put_rule(api, "b-receipt", event="order.paid", template="receipt")
    await put_rule(api, "c-other", event="order.refunded", template="receipt")

    response = await event(api, "vip", 150)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["event"] == "order.paid"
    assert answer["rules"] == [
        {"rule": "a-vip", "template": "big-order", "matched": True},
        {"rule": "b-receipt", "template": "receipt", "matched": True},
    ]
    assert sorted((m["template"], m["status"]) for m in answer["messages"]) == [
        ("big-order", "queued"),
        ("receipt", "queued"),
    ]
    big = next(m for m in answer["messages"] if m["template"] == "big-order")
    detail = (await api.get(f"/v1/messages/{big['id']}")).json()
    assert [d["channel"] for d in detail["deliveries"]] == ["sms"]
    assert detail["timeline"][0]["reason"] == "rule a-vip: template big-order v1"
    assert await drain(clarion) == 2


@pytest.mark.parametrize(("user_id", "amount"), [("vip", 100), ("basic", 150), ("vip", None)])
async def test_condition_not_met_sends_nothing(api, clarion: bootstrap.Clarion, user_id: str, amount: Any) -> None:
    await setup(api)
    await put_rule(api, "vip", event="order.paid", template="big-order", condition=VIP_BIG)
    response = await event(api, user_id, amount)
    assert response.status_code == 202
    assert response.json()["rules"] == [{"rule": "vip", "template": "big-order", "matched": False}]
    assert response.json()["messages"] == []
    assert await drain(clarion) == 0


async def test_event_without_rules_is_accepted_with_no_messages(api) -> None:
    await setup(api)
    response = await api.post("/v1/events", json={"name": "nobody.cares", "user_id": "vip"})
    assert response.status_code == 202
    assert response.json()["rules"] == []
    assert response.json()["messages"] == []


async def test_condition_error_at_send_time_is_reported_not_matched(api) -> None:
    await setup(api)
    await put_rule(api, "cmp", event="order.paid", template="receipt", condition="data.amount > 3")
    response = await event(api, "vip", "a lot")
    assert response.status_code == 202
    [outcome] = response.json()["rules"]
    assert outcome["matched"] is False
    assert outcome["reason"].startswith("condition_error: cannot compare string with number")
    assert response.json()["messages"] == []


async def test_event_for_unknown_user_fails_its_message(api) -> None:
    await setup(api)
    await put_rule(api, "all", event="order.paid", template="receipt")
    response = await event(api, "ghost", 1)
    [message] = response.json()["messages"]
    assert (message["user_id"], message["status"], message["reason"]) == ("ghost", "failed", "unknown_user")


async def test_event_idempotency(api, clarion: bootstrap.Clarion) -> None:
    await setup(api)
    await put_rule(api, "all", event="order.paid", template="receipt")
    first = await event(api, "vip", 5, idempotency_key="evt-1")
    assert first.status_code == 202
    assert "idempotent-replayed" not in first.headers
    again = await event(api, "vip", 5, idempotency_key="evt-1")
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert await drain(clarion) == 1
    assert (await api.get("/v1/users/vip/inbox/count")).json() == {"total": 1, "unread": 1}

    conflict = await event(api, "vip", 6, idempotency_key="evt-1")
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "conflict"
    assert await drain(clarion) == 0


async def test_list_filters_by_event_and_delete(api) -> None:
    await setup(api)
    await put_rule(api, "b", event="order.paid", template="receipt")
    await put_rule(api, "a", event="order.paid", template="big-order")
    await put_rule(api, "c", event="order.refunded", template="receipt")
    everything = (await api.get("/v1/rules")).json()["rules"]
    assert [r["key"] for r in everything] == ["a", "b", "c"]
    paid = (await api.get("/v1/rules", params={"event": "order.paid"})).json()["rules"]
    assert [r["key"] for r in paid] == ["a", "b"]
    assert (await api.get("/v1/rules", params={"event": "none"})).json() == {"rules": []}

    assert (await api.delete("/v1/rules/a")).status_code == 204
    missing = await api.get("/v1/rules/a")
    assert missing.status_code == 404
    assert missing.json()["error"]["details"] == {"kind": "rule", "key": "a"}
    assert (await api.delete("/v1/rules/a")).status_code == 404
    assert [r["rule"] for r in (await event(api, "vip", 1)).json()["rules"]] == ["b"]


async def test_rule_whose_template_was_deleted_reports_unknown_template(api, clarion: bootstrap.Clarion) -> None:
    await setup(api)
    await put_rule(api, "r", event="order.paid", template="receipt")
    assert (await api.delete("/v1/templates/receipt")).status_code == 204
    response = await event(api, "vip", 1)
    assert response.status_code == 202
    assert response.json()["rules"] == [
        {"rule": "r", "template": "receipt", "matched": False, "reason": "unknown_template"}
    ]
    assert response.json()["messages"] == []
    assert await drain(clarion) == 0


async def test_disabled_rule_does_not_send(api) -> None:
    await setup(api)
    await put_rule(api, "off", event="order.paid", template="receipt", enabled=False)
    response = await event(api, "vip", 1)
    assert response.json()["messages"] == []


async def test_empty_condition_is_refused_or_always_matches(api) -> None:
    await setup(api)
    response = await api.put("/v1/rules/empty", json={"event": "order.paid", "template": "receipt", "condition": ""})
    if response.status_code == 422:
        return
    assert response.status_code == 201
    outcome = (await event(api, "vip", 1)).json()["rules"]
    assert outcome == [{"rule": "empty", "template": "receipt", "matched": True}]
