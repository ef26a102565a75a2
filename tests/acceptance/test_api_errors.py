"""Cross-cutting API behaviour: authentication, error bodies, body limits, refusals that write nothing,
health and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.store import tables as t
from tests.conftest import API_KEY, drain, put_template, put_user


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


async def row_counts(clarion: bootstrap.Clarion) -> dict[str, int]:
    async with clarion.db.read() as conn:
        return {
            table.name: (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
            for table in t.metadata.sorted_tables
        }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/users/u1"),
        ("PUT", "/v1/users/u1"),
        ("GET", "/v1/templates"),
        ("POST", "/v1/messages"),
        ("POST", "/v1/events"),
        ("GET", "/v1/rules"),
        ("GET", "/v1/providers"),
        ("GET", "/v1/users/u1/inbox"),
        ("GET", "/v1/messages/01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    ],
)
@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing API key: send 'Authorization: Bearer <key>'"),
        ({"Authorization": "Bearer clk_wrong"}, "invalid API key"),
        ({"Authorization": API_KEY}, "missing API key: send 'Authorization: Bearer <key>'"),
        ({"Authorization": "Basic " + API_KEY}, "missing API key: send 'Authorization: Bearer <key>'"),
        ({"Authorization": "Bearer "}, "missing API key: send 'Authorization: Bearer <key>'"),
    ],
)
async def test_requests_without_a_valid_key_are_401(
    clarion: bootstrap.Clarion, api, method: str, path: str, headers: dict[str, str], message: str
) -> None:
    async with httpx.AsyncClient(transport=api._transport, base_url="http://clarion.test") as anonymous:
        response = await anonymous.request(method, path, headers=headers, json={})
    error = assert_error(response, 401, "unauthorized")
    assert error["message"] == message
    assert error["details"] is None
    assert response.headers["www-authenticate"] == "Bearer"


async def test_unauthorised_write_writes_nothing(clarion: bootstrap.Clarion, api) -> None:
    before = await row_counts(clarion)
    async with httpx.AsyncClient(transport=api._transport, base_url="http://clarion.test") as anonymous:
        response = await anonymous.put("/v1/users/u1", json={}, headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert await row_counts(clarion) == before


async def test_health_and_metrics_need_no_key(clarion: bootstrap.Clarion, api) -> None:
    async with httpx.AsyncClient(transport=api._transport, base_url="http://clarion.test") as anonymous:
        health = await anonymous.get("/healthz")
        metrics = await anonymous.get("/metrics")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "database": clarion.db.dialect}
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")


async def test_metrics_count_accepted_messages_and_queue_depth(clarion: bootstrap.Clarion, api) -> None:
    await put_user(api, "u1", addresses={"sms": "+8613800138000"})
    await put_template(api, "t", channels={"sms": {"text": "hi"}, "inbox": {"title": "T", "body": "B"}})
    await put_template(api, "urgent", priority="urgent", channels={"sms": {"text": "now"}})
    await api.post("/v1/messages", json={"template": "t", "to": ["u1", "ghost"]})
    await api.post("/v1/messages", json={"template": "urgent", "to": "u1"})
    text = (await api.get("/metrics")).text
    lines = set(text.splitlines())
    assert 'clarion_messages_accepted_total{status="queued"} 2.0' in lines
    assert 'clarion_messages_accepted_total{status="failed"} 1.0' in lines
    assert 'clarion_queue_depth{lane="0"} 1.0' in lines
    assert 'clarion_queue_depth{lane="2"} 2.0' in lines
    assert 'clarion_queue_depth{lane="3"} 0.0' in lines

    assert await drain(clarion) == 3
    lines = set((await api.get("/metrics")).text.splitlines())
    assert 'clarion_queue_depth{lane="0"} 0.0' in lines
    assert 'clarion_queue_depth{lane="2"} 0.0' in lines
    assert 'clarion_messages_accepted_total{status="queued"} 2.0' in lines


async def test_replayed_send_is_not_counted_again(clarion: bootstrap.Clarion, api) -> None:
    await put_user(api, "u1")
    await put_template(api, "t", channels={"inbox": {"title": "T", "body": "B"}})
    for _ in range(3):
        assert (
            await api.post("/v1/messages", json={"template": "t", "to": "u1", "idempotency_key": "k"})
        ).status_code == 202
    assert 'clarion_messages_accepted_total{status="queued"} 1.0' in (await api.get("/metrics")).text.splitlines()


@pytest.mark.parametrize("content", [b"{", b'{"template": "t", "to": "u1",}', b"not json", b'{"a": 1} trailing'])
async def test_malformed_json_is_422_json_error(api, content: bytes) -> None:
    response = await api.post("/v1/messages", content=content, headers={"content-type": "application/json"})
    error = assert_error(response, 422, "invalid_input")
    assert error["details"][0]["field"] == "body"
    assert error["details"][0]["message"].startswith("malformed JSON: ")


async def test_malformed_json_names_the_body(api) -> None:
    response = await api.post("/v1/messages", content=b"{", headers={"content-type": "application/json"})
    assert response.json()["error"]["details"][0]["field"] == "body"


async def test_malformed_json_without_a_key_is_401(api) -> None:
    async with httpx.AsyncClient(transport=api._transport, base_url="http://clarion.test") as anonymous:
        response = await anonymous.post("/v1/messages", content=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 401


async def test_wrong_json_type_is_422(api) -> None:
    response = await api.put("/v1/users/u1", json=["not", "an", "object"])
    assert_error(response, 422, "invalid_input")


async def test_body_over_the_limit_is_413(clarion: bootstrap.Clarion, api) -> None:
    limit = clarion.settings.max_body_bytes
    assert limit == 1_048_576
    before = await row_counts(clarion)
    padding = "x" * (limit + 1)
    response = await api.put("/v1/users/big", json={"attributes": {"blob": padding}})
    error = assert_error(response, 413, "payload_too_large")
    assert error["details"] == {"limit": limit}
    assert await row_counts(clarion) == before
    assert (await api.get("/v1/users/big")).status_code == 404


async def test_body_just_under_the_limit_is_accepted(clarion: bootstrap.Clarion, api) -> None:
    overhead = len(b'{"attributes":{"blob":""}}')
    padding = "x" * (clarion.settings.max_body_bytes - overhead)
    response = await api.put(
        "/v1/users/big",
        content=f'{{"attributes":{{"blob":"{padding}"}}}}'.encode(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 201, response.text[:200]


async def test_chunked_body_over_the_limit_is_413(clarion: bootstrap.Clarion, api) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(clarion.settings.max_body_bytes // 65536 + 2):
            yield b" " * 65536

    response = await api.post("/v1/messages", content=chunks(), headers={"content-type": "application/json"})
    assert_error(response, 413, "payload_too_large")


async def test_refused_requests_write_nothing(clarion: bootstrap.Clarion, api) -> None:
    await put_user(api, "u1", attributes={"name": "Li"})
    await put_template(api, "t", channels={"inbox": {"title": "T", "body": "{name}"}})
    assert (
        await api.post("/v1/messages", json={"template": "t", "to": "u1", "idempotency_key": "k"})
    ).status_code == 202
    await drain(clarion)
    before = await row_counts(clarion)

    refused = [
        await api.post("/v1/messages", json={"template": "nope", "to": "u1"}),
        await api.post("/v1/messages", json={"template": "t", "to": "u1", "channels": ["sms"]}),
        await api.post("/v1/messages", json={"template": "t", "to": []}),
        await api.post("/v1/messages", json={"template": "t", "to": [f"x{i}" for i in range(1001)]}),
        await api.post("/v1/messages", json={"template": "t", "to": "u2", "idempotency_key": "k"}),
        await api.post("/v1/events", json={"name": "e"}),
        await api.put("/v1/users/u1", json={"addresses": {"sms": "12345"}}),
        await api.put("/v1/templates/t", json={"name": "T", "category": "marketing", "channels": {"sms": {}}}),
        await api.put("/v1/rules/r", json={"event": "e", "template": "t", "condition": "user.x >"}),
        await api.put("/v1/rules/r", json={"event": "e", "template": "missing"}),
        await api.put("/v1/providers/p", json={"channel": "sms", "kind": "smtp", "config": {}}),
        await api.post("/v1/users/u1/inbox/01ARZ3NDEKTSV4RRFFQ69G5FAV/read"),
        await api.delete("/v1/users/nobody"),
        await api.delete("/v1/templates/nope"),
    ]
    assert [r.status_code for r in refused] == [404, 422, 422, 422, 409, 422, 422, 422, 422, 422, 422, 404, 404, 404]
    assert await row_counts(clarion) == before
    assert (await api.get("/v1/templates/t")).json()["version"] == 1


async def test_unknown_route_and_method_are_json_errors(api) -> None:
    assert_error(await api.get("/v1/nothing-here"), 404, "not_found")
    assert_error(await api.delete("/v1/messages/01ARZ3NDEKTSV4RRFFQ69G5FAV"), 405, "method_not_allowed")


async def test_bulk_paths_take_bodies_over_the_general_limit(clarion: bootstrap.Clarion, api) -> None:
    """An ID-list file of 2 MB is an upload, not an oversized API call; the same size elsewhere is refused."""
    size = clarion.settings.max_body_bytes * 2
    lines = "\n".join(f"user-{i:07d}" for i in range(size // 13))
    assert len(lines) > clarion.settings.max_body_bytes
    uploaded = await api.post(
        "/v1/lists?key=big&kind=user_id", content=lines.encode(), headers={"content-type": "text/plain"}
    )
    assert uploaded.status_code in (200, 201), uploaded.text
    assert uploaded.json()["size"] == size // 13
    refused = await api.put("/v1/users/big", json={"attributes": {"blob": "x" * size}})
    assert_error(refused, 413, "payload_too_large")
