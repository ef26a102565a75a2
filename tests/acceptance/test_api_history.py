"""GET /v1/users/{id}/messages: a user's send record, newest first, paginated and filtered."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from clarion import bootstrap
from clarion.domain import ids
from tests.conftest import drain, put_template, put_user


async def setup(api) -> None:
    await put_user(api, "u1", attributes={"name": "Li"}, addresses={"sms": "+8613800138000"})
    await put_user(api, "u2")
    await put_template(api, "sms", channels={"sms": {"text": "{name} #{data.n}"}})
    await put_template(api, "note", channels={"inbox": {"title": "Note", "body": "#{data.n}"}})


async def send(api, template: str, n: int, to: str = "u1") -> str:
    response = await api.post("/v1/messages", json={"template": template, "to": to, "data": {"n": n}})
    assert response.status_code == 202, response.text
    # keep sends in distinct milliseconds: same-millisecond ids are the subject of the xfail below
    await asyncio.sleep(0.003)
    return response.json()["messages"][0]["id"]


async def record(api, user_id: str = "u1", **params: Any) -> Any:
    return await api.get(f"/v1/users/{user_id}/messages", params=params)


async def all_pages(api, limit: int, user_id: str = "u1") -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        page = (await record(api, user_id, **params)).json()
        assert len(page["messages"]) <= limit
        seen += [m["id"] for m in page["messages"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("pagination did not end")


async def test_newest_first_with_deliveries(api, clarion: bootstrap.Clarion) -> None:
    await setup(api)
    first = await send(api, "sms", 1)
    second = await send(api, "note", 2)
    await send(api, "note", 3, to="u2")
    await drain(clarion)
    response = await record(api)
    assert response.status_code == 200
    page = response.json()
    assert [m["id"] for m in page["messages"]] == [second, first]
    assert page["next_cursor"] is None
    newest, oldest = page["messages"]
    assert (newest["template"], newest["status"], newest["user_id"]) == ("note", "delivered", "u1")
    assert [(d["channel"], d["status"], d["provider"]) for d in oldest["deliveries"]] == [("sms", "sent", "file")]
    assert "data" not in newest


async def test_pagination_covers_every_message_exactly_once(api) -> None:
    await setup(api)
    sent = [await send(api, "note", n) for n in range(7)]
    for limit in (1, 2, 3, 7, 50):
        assert await all_pages(api, limit) == list(reversed(sent)), limit
    page = (await record(api, limit=3)).json()
    assert page["next_cursor"] == page["messages"][-1]["id"]


async def test_unknown_user_has_an_empty_record(api) -> None:
    page = (await record(api, "nobody")).json()
    assert page == {"messages": [], "next_cursor": None}


async def test_filters_by_status_channel_and_template(api, clarion: bootstrap.Clarion) -> None:
    await setup(api)
    sms = await send(api, "sms", 1)
    note = await send(api, "note", 2)
    failed = (await api.post("/v1/messages", json={"template": "sms", "to": "u1"})).json()["messages"][0]
    assert failed["reason"] == "missing_variable: data.n"
    await drain(clarion)

    async def ids(**params: Any) -> list[str]:
        response = await record(api, **params)
        assert response.status_code == 200, response.text
        return [m["id"] for m in response.json()["messages"]]

    assert await ids(status="failed") == [failed["id"]]
    assert await ids(status="sent") == [sms]
    assert await ids(status="delivered") == [note]
    assert await ids(status="queued") == []
    assert await ids(channel="sms") == [sms]
    assert await ids(channel="inbox") == [note]
    assert await ids(channel="email") == []
    assert await ids(template="sms") == [failed["id"], sms]
    assert await ids(template="sms", status="sent") == [sms]
    assert (await record(api, status="lost")).status_code == 422
    assert (await record(api, channel="fax")).status_code == 422


async def test_since_is_inclusive_and_until_exclusive(api) -> None:
    await setup(api)
    first = await send(api, "note", 1)
    second = await send(api, "note", 2)
    third = await send(api, "note", 3)
    created = {m["id"]: m["created_at"] for m in (await record(api)).json()["messages"]}
    pivot = created[second]

    async def ids(**params: Any) -> list[str]:
        response = await record(api, **params)
        assert response.status_code == 200, response.text
        return [m["id"] for m in response.json()["messages"]]

    assert await ids(since=pivot) == [third, second]
    assert await ids(until=pivot) == [first]
    assert await ids(since=pivot, until=created[third]) == [second]
    # the same instant written in another zone means the same thing
    shanghai = datetime.fromisoformat(pivot).astimezone(timezone(timedelta(hours=8))).isoformat()
    assert await ids(since=shanghai) == [third, second]
    zulu = datetime.fromisoformat(pivot).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert await ids(until=zulu) == [first]
    assert await ids(since="2000-01-01T00:00:00Z", until="2000-01-02T00:00:00Z") == []


@pytest.mark.parametrize("name", ["since", "until"])
async def test_naive_or_malformed_times_are_422(api, name: str) -> None:
    naive = await record(api, **{name: "2026-01-01T00:00:00"})
    assert naive.status_code == 422
    assert naive.json()["error"]["code"] == "invalid_input"
    assert naive.json()["error"]["details"] == {"field": name}
    bad = await record(api, **{name: "yesterday"})
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["field"] == f"query.{name}"


async def test_limit_bounds_are_enforced(api) -> None:
    assert (await record(api, limit=0)).status_code == 422
    assert (await record(api, limit=501)).status_code == 422
    assert (await record(api, limit=500)).status_code == 200


async def test_pagination_is_exact_for_messages_created_in_the_same_millisecond(api, monkeypatch) -> None:
    await setup(api)
    # what concurrent sends produce: every id from the same millisecond, created_at still increasing
    frozen = time.time()
    real_new_id = ids.new_id
    monkeypatch.setattr(ids, "new_id", lambda now=None: real_new_id(frozen))
    sent = [await send(api, "note", n) for n in range(10)]
    assert await all_pages(api, 1) == list(reversed(sent))
