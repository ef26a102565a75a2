"""Idempotency keys on POST /v1/messages: a retried request gets the first answer and sends nothing again."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from clarion import bootstrap
from tests.conftest import drain, put_template, put_user, sink


async def setup(api) -> None:
    await put_user(api, "u1", attributes={"name": "Li"}, addresses={"sms": "+8613800138000"})
    await put_user(api, "u2", attributes={"name": "Bo"}, addresses={"sms": "+8613900139000"})
    await put_template(api, "order", channels={"sms": {"text": "{name}: order {data.order} shipped"}})


async def send(api, **body: Any) -> Any:
    body.setdefault("template", "order")
    body.setdefault("data", {"order": "A1"})
    return await api.post("/v1/messages", json=body)


async def test_idempotent_replay_returns_the_same_answer_and_sends_once(api, clarion: bootstrap.Clarion) -> None:
    await setup(api)
    first = await send(api, to=["u1", "u2"], channels=["sms"], idempotency_key="order-A1")
    assert first.status_code == 202
    assert "idempotent-replayed" not in first.headers
    assert await drain(clarion) == 2

    again = await send(api, to=["u1", "u2"], channels=["sms"], idempotency_key="order-A1")
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert await drain(clarion) == 0
    assert len(sink(clarion, "sms")) == 2
    record = (await api.get("/v1/users/u1/messages")).json()["messages"]
    assert [m["id"] for m in record] == [first.json()["messages"][0]["id"]]


async def test_same_idempotency_key_with_another_body_is_409(api, clarion: bootstrap.Clarion) -> None:
    await setup(api)
    first = await send(api, to="u1", channels=["sms"], idempotency_key="k1")
    assert first.status_code == 202
    conflict = await send(api, to="u1", channels=["sms"], data={"order": "B2"}, idempotency_key="k1")
    assert conflict.status_code == 409
    error = conflict.json()["error"]
    assert error["code"] == "conflict"
    assert error["details"] == {"idempotency_key": "k1", "request_id": first.json()["request_id"]}
    assert await drain(clarion) == 1
    assert [r["content"]["text"] for r in sink(clarion, "sms")] == ["Li: order A1 shipped"]


async def test_different_idempotency_keys_send_twice(api, clarion: bootstrap.Clarion) -> None:
    await setup(api)
    a = await send(api, to="u1", channels=["sms"], idempotency_key="k1")
    b = await send(api, to="u1", channels=["sms"], data={"order": "A2"}, idempotency_key="k2")
    assert a.json()["messages"][0]["id"] != b.json()["messages"][0]["id"]
    assert "idempotent-replayed" not in b.headers
    assert await drain(clarion) == 2


async def test_replay_is_independent_of_key_order_in_data(api, clarion: bootstrap.Clarion) -> None:
    await setup(api)
    first = await api.post(
        "/v1/messages", json={"template": "order", "to": "u1", "data": {"order": "A1", "x": 1}, "idempotency_key": "k"}
    )
    again = await api.post(
        "/v1/messages", json={"idempotency_key": "k", "data": {"x": 1, "order": "A1"}, "to": "u1", "template": "order"}
    )
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()


async def test_concurrent_retries_with_one_key_send_once(api, clarion: bootstrap.Clarion) -> None:
    await setup(api)
    responses = await asyncio.gather(*(send(api, to="u1", idempotency_key="burst") for _ in range(5)))
    assert [r.status_code for r in responses] == [202] * 5
    assert len({json.dumps(r.json(), sort_keys=True) for r in responses}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in responses) == 1
    assert clarion.intake._keys == {}  # the key's lock is gone with its last request
    assert await drain(clarion) == 1
    assert len(sink(clarion, "sms")) == 1
    assert len((await api.get("/v1/users/u1/messages")).json()["messages"]) == 1


async def test_a_key_used_for_a_send_conflicts_with_an_event(api) -> None:
    await setup(api)
    assert (await send(api, to="u1", idempotency_key="shared")).status_code == 202
    response = await api.post("/v1/events", json={"name": "e", "user_id": "u1", "idempotency_key": "shared"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
