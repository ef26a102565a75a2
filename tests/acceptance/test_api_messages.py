"""POST /v1/messages and GET /v1/messages/{id}: who gets what, what is refused, and the delivery timeline."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from clarion import bootstrap
from tests.conftest import drain, put_template, put_user, sink


async def setup(api) -> None:
    await put_user(api, "u1", attributes={"name": "Li"}, addresses={"sms": "+8613800138000", "email": "li@example.com"})
    await put_user(api, "u2", attributes={"name": "Bo"}, addresses={"sms": "+8613900139000"})
    await put_template(
        api,
        "order",
        channels={
            "sms": {"text": "{name}: order {data.order} shipped"},
            "email": {"subject": "Order {data.order}", "text": "Hi {name}"},
            "inbox": {"title": "Shipped", "body": "Order {data.order}"},
        },
    )


async def send(api, **body: Any) -> Any:
    body.setdefault("template", "order")
    body.setdefault("data", {"order": "A1"})
    return await api.post("/v1/messages", json=body)


async def test_send_to_one_user_as_string_is_202_with_one_queued_message(api) -> None:
    await setup(api)
    response = await send(api, to="u1")
    assert response.status_code == 202, response.text
    assert "idempotent-replayed" not in response.headers
    answer = response.json()
    [message] = answer["messages"]
    assert message == {"id": message["id"], "user_id": "u1", "template": "order", "status": "queued"}
    assert len(message["id"]) == 32
    assert isinstance(answer["request_id"], str)


async def test_send_to_a_list_answers_in_recipient_order_without_duplicates(api) -> None:
    await setup(api)
    response = await send(api, to=["u2", "u1", "u2"])
    assert response.status_code == 202
    messages = response.json()["messages"]
    assert [(m["user_id"], m["status"]) for m in messages] == [("u2", "queued"), ("u1", "queued")]
    assert len({m["id"] for m in messages}) == 2


async def test_unknown_user_fails_alone_while_others_are_queued(api, clarion: bootstrap.Clarion) -> None:
    await setup(api)
    response = await send(api, to=["u1", "ghost"])
    assert response.status_code == 202
    by_user = {m["user_id"]: m for m in response.json()["messages"]}
    assert by_user["u1"]["status"] == "queued"
    assert by_user["ghost"]["status"] == "failed"
    assert by_user["ghost"]["reason"] == "unknown_user"
    detail = (await api.get(f"/v1/messages/{by_user['ghost']['id']}")).json()
    assert detail["status"] == "failed"
    assert detail["reason"] == "unknown_user"
    assert detail["deliveries"] == []
    assert [(e["status"], e["reason"]) for e in detail["timeline"]][1] == ("failed", "unknown_user")
    assert await drain(clarion) == 3  # u1's three channels only


async def test_unknown_template_is_404_not_found(api) -> None:
    await setup(api)
    response = await send(api, template="nope", to="u1")
    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "not_found",
        "message": "template 'nope' not found",
        "details": {"kind": "template", "key": "nope"},
    }


async def test_recipient_count_bounds(api) -> None:
    await setup(api)
    empty = await send(api, to=[])
    assert empty.status_code == 422
    assert empty.json()["error"]["details"] == {"field": "to", "count": 0}
    too_many = await send(api, to=[f"u{i}" for i in range(1001)])
    assert too_many.status_code == 422
    assert too_many.json()["error"]["code"] == "invalid_input"
    assert too_many.json()["error"]["details"] == {"field": "to", "count": 1001}
    at_limit = await send(api, to=[f"x{i}" for i in range(1000)])
    assert at_limit.status_code == 202
    assert len(at_limit.json()["messages"]) == 1000


async def test_missing_placeholder_fails_the_message_and_queues_nothing(api, clarion: bootstrap.Clarion) -> None:
    await setup(api)
    response = await send(api, to=["u1", "u2"], data={})
    assert response.status_code == 202
    messages = response.json()["messages"]
    assert [(m["status"], m["reason"]) for m in messages] == [
        ("failed", "missing_variable: data.order"),
        ("failed", "missing_variable: data.order"),
    ]
    detail = (await api.get(f"/v1/messages/{messages[0]['id']}")).json()
    assert detail["status"] == "failed"
    assert detail["reason"] == "missing_variable: data.order"
    assert detail["deliveries"] == []
    assert await drain(clarion) == 0
    assert sink(clarion, "sms") == []
    assert (await api.get("/v1/users/u1/inbox/count")).json() == {"total": 0, "unread": 0}


async def test_missing_user_attribute_fails_only_that_recipient(api, clarion: bootstrap.Clarion) -> None:
    await setup(api)
    await put_user(api, "anon", addresses={"sms": "+8613700137000"})
    response = await send(api, to=["anon", "u2"], channels=["sms"])
    by_user = {m["user_id"]: m for m in response.json()["messages"]}
    assert by_user["anon"]["status"] == "failed"
    assert by_user["anon"]["reason"] == "missing_variable: name"
    assert by_user["u2"]["status"] == "queued"
    assert await drain(clarion) == 1
    assert [r["content"]["text"] for r in sink(clarion, "sms")] == ["Bo: order A1 shipped"]


async def test_channels_subset_sends_only_those_channels(api, clarion: bootstrap.Clarion) -> None:
    await setup(api)
    response = await send(api, to="u1", channels=["sms"])
    assert response.status_code == 202
    detail = (await api.get(f"/v1/messages/{response.json()['messages'][0]['id']}")).json()
    assert [d["channel"] for d in detail["deliveries"]] == ["sms"]
    assert await drain(clarion) == 1
    assert sink(clarion, "email") == []
    assert (await api.get("/v1/users/u1/inbox/count")).json()["total"] == 0


async def test_channel_not_in_template_is_422(api) -> None:
    await setup(api)
    response = await send(api, to="u1", channels=["sms", "push"])
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_channels"
    assert {**error["details"], "available": sorted(error["details"]["available"])} == {
        "field": "channels",
        "unknown": ["push"],
        "available": ["email", "inbox", "sms"],
    }
    unknown = await send(api, to="u1", channels=["fax"])
    assert unknown.status_code == 422
    assert unknown.json()["error"]["details"][0]["field"] == "channels.0"


async def test_user_without_address_gets_a_filtered_delivery(api, clarion: bootstrap.Clarion) -> None:
    await setup(api)
    response = await send(api, to="u2", channels=["sms", "email"])  # u2 has no e-mail address
    [message] = response.json()["messages"]
    assert message["status"] == "queued"
    detail = (await api.get(f"/v1/messages/{message['id']}")).json()
    email = next(d for d in detail["deliveries"] if d["channel"] == "email")
    assert email["status"] == "filtered"
    assert [(e["status"], e["reason"]) for e in email["timeline"]] == [
        ("filtered", "no_address: the user has no email address")
    ]
    assert await drain(clarion) == 1
    assert sink(clarion, "email") == []


async def test_message_is_filtered_when_no_channel_has_an_address(api, clarion: bootstrap.Clarion) -> None:
    await setup(api)
    response = await send(api, to="u2", channels=["email"])
    [message] = response.json()["messages"]
    assert message["status"] == "filtered"
    assert await drain(clarion) == 0


async def test_message_detail_has_deliveries_and_timelines(api, clarion: bootstrap.Clarion) -> None:
    await setup(api)
    [message] = (await send(api, to="u1")).json()["messages"]
    queued = (await api.get(f"/v1/messages/{message['id']}")).json()
    assert queued["status"] == "queued"
    assert all(d["status"] == "queued" and d["attempts"] == 0 for d in queued["deliveries"])
    assert await drain(clarion) == 3

    detail = (await api.get(f"/v1/messages/{message['id']}")).json()
    assert {k: detail[k] for k in ("id", "user_id", "template", "template_version", "status", "reason")} == {
        "id": message["id"],
        "user_id": "u1",
        "template": "order",
        "template_version": 1,
        "status": "delivered",  # its best delivery: the inbox item, stored
        "reason": None,
    }
    assert detail["data"] == {"order": "A1"}
    assert [e["status"] for e in detail["timeline"]] == ["accepted"]
    assert detail["timeline"][0]["reason"] == "api: template order v1"
    by_channel = {d["channel"]: d for d in detail["deliveries"]}
    assert sorted(by_channel) == ["email", "inbox", "sms"]
    assert {c: d["provider"] for c, d in by_channel.items()} == {"email": "file", "inbox": "inbox", "sms": "file"}
    for channel, delivery in by_channel.items():
        assert delivery["status"] == ("delivered" if channel == "inbox" else "sent")
        assert delivery["attempts"] == 1
        assert delivery["last_error"] is None
        stored = ["delivered"] if channel == "inbox" else []  # an inbox item is delivered once it is stored
        assert [e["status"] for e in delivery["timeline"]] == ["queued", "sending", "sent", *stored]
        for entry in delivery["timeline"]:
            assert set(entry) >= {"status", "reason", "at"}
            assert datetime.fromisoformat(entry["at"]).utcoffset() is not None
        expected_id = message["id"] if channel == "inbox" else f"file:{delivery['id']}"
        assert delivery["provider_message_id"] == expected_id
    assert by_channel["sms"]["timeline"][1]["reason"] == "attempt 1"
    assert by_channel["sms"]["timeline"][2]["reason"] == "accepted by file"


async def test_unknown_message_is_404(api) -> None:
    response = await api.get("/v1/messages/01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert response.json()["error"]["details"] == {"kind": "message", "key": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}


async def test_invalid_send_bodies_are_422(api) -> None:
    await setup(api)
    for body, field in [
        ({"to": "u1"}, "template"),
        ({"template": "order"}, "to"),
        ({"template": "order", "to": "u1", "priority": "high"}, "priority"),
        ({"template": "order", "to": "bad id!"}, "to.constrained-str"),
        ({"template": "order", "to": "u1", "data": [1]}, "data"),
        ({"template": "order", "to": "u1", "idempotency_key": ""}, "idempotency_key"),
    ]:
        response = await api.post("/v1/messages", json=body)
        assert response.status_code == 422, body
        assert response.json()["error"]["details"][0]["field"] == field, response.text
