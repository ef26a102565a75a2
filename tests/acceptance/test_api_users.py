"""Users through the HTTP API: create/update/read/delete, address validation, and what a delete erases."""

from __future__ import annotations

from typing import Any

import pytest

from clarion import bootstrap
from tests.conftest import drain, put_template, put_user


def fields(response: Any) -> list[str]:
    """The fields a 422 names, in order."""
    details = response.json()["error"]["details"]
    return [d["field"] for d in details] if isinstance(details, list) else [details["field"]]


async def test_put_creates_then_updates_and_get_returns_the_profile(api) -> None:
    body = {
        "attributes": {"name": "Li", "vip_level": 3},
        "tags": ["beta", "beta", "cn"],
        "timezone": "Asia/Shanghai",
        "locale": "zh-CN",
        "addresses": {"email": "li@example.com", "sms": "+8613800138000", "push": ["tok-1"]},
    }
    created = await api.put("/v1/users/u-1", json=body)
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["user_id"] == "u-1"
    assert user["attributes"] == {"name": "Li", "vip_level": 3}
    assert user["tags"] == ["beta", "cn"]  # duplicates dropped, order kept
    assert user["timezone"] == "Asia/Shanghai"
    assert user["locale"] == "zh-CN"
    assert user["addresses"] == {"email": "li@example.com", "sms": "+8613800138000", "push": ["tok-1"]}

    updated = await api.put("/v1/users/u-1", json={"attributes": {"name": "Wang"}})
    assert updated.status_code == 200, updated.text
    assert updated.json()["created_at"] == user["created_at"]

    fetched = await api.get("/v1/users/u-1")
    assert fetched.status_code == 200
    got = fetched.json()
    assert got["attributes"] == {"name": "Wang"}
    assert got["addresses"] == {}  # PUT replaces the whole profile
    assert got["tags"] == []
    assert got["timezone"] is None


async def test_get_unknown_user_is_404(api) -> None:
    response = await api.get("/v1/users/nobody")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert response.json()["error"]["details"] == {"kind": "user", "key": "nobody"}


async def test_delete_then_get_is_404_and_second_delete_is_404(api) -> None:
    await put_user(api, "gone")
    deleted = await api.delete("/v1/users/gone")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await api.get("/v1/users/gone")).status_code == 404
    again = await api.delete("/v1/users/gone")
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "not_found"


async def test_phone_is_normalised_to_e164(api) -> None:
    user = await put_user(api, "p", addresses={"sms": "+86 138-0013-8000"})
    assert user["addresses"]["sms"] == "+8613800138000"


@pytest.mark.parametrize("phone", ["12345", "+86123", "not a phone", "+1 555"])
async def test_bad_phone_is_422_naming_addresses_sms(api, phone: str) -> None:
    response = await api.put("/v1/users/p", json={"addresses": {"sms": phone}})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert fields(response) == ["addresses.sms"]
    assert error["message"].startswith("addresses.sms: ")
    assert (await api.get("/v1/users/p")).status_code == 404  # nothing stored


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"addresses": {"email": "not-an-email"}}, "addresses.email"),
        ({"addresses": {"email": "a@b"}}, "addresses.email"),
        ({"addresses": {"webhook": "ftp://example.com/hook"}}, "addresses.webhook"),
        ({"addresses": {"webhook": "javascript:alert(1)"}}, "addresses.webhook"),
        ({"addresses": {"fax": "+8613800138000"}}, "addresses.fax"),
        ({"nickname": "x"}, "nickname"),
        ({"locale": "not a locale"}, "locale"),
        ({"tags": [""]}, "tags.0"),
    ],
)
async def test_invalid_profile_is_422_naming_the_field(api, body: dict[str, Any], field: str) -> None:
    response = await api.put("/v1/users/v", json=body)
    assert response.status_code == 422, response.text
    assert fields(response) == [field]
    assert (await api.get("/v1/users/v")).status_code == 404


async def test_webhook_address_accepts_http_and_https(api) -> None:
    user = await put_user(api, "w", addresses={"webhook": "https://hooks.example.com/a?b=1"})
    assert user["addresses"] == {"webhook": "https://hooks.example.com/a?b=1"}
    user = await put_user(api, "w", addresses={"webhook": "http://hooks.example.com/"})
    assert user["addresses"] == {"webhook": "http://hooks.example.com/"}


async def test_bad_user_id_in_path_is_422(api) -> None:
    response = await api.put("/v1/users/has space", json={})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"


async def _send_inbox_and_sms(api) -> str:
    await put_template(
        api,
        "hello",
        channels={"inbox": {"title": "Hi {name}", "body": "Order {data.order}"}, "sms": {"text": "Order {data.order}"}},
    )
    response = await api.post("/v1/messages", json={"template": "hello", "to": "del", "data": {"order": "A-17"}})
    assert response.status_code == 202, response.text
    return response.json()["messages"][0]["id"]


async def test_delete_erases_inbox_and_message_data(api, clarion: bootstrap.Clarion) -> None:
    await put_user(api, "del", attributes={"name": "Li"}, addresses={"sms": "+8613800138000"})
    message_id = await _send_inbox_and_sms(api)
    assert await drain(clarion) == 2
    assert (await api.get("/v1/users/del/inbox/count")).json() == {"total": 1, "unread": 1}
    before = (await api.get(f"/v1/messages/{message_id}")).json()
    assert before["data"] == {"order": "A-17"}

    assert (await api.delete("/v1/users/del")).status_code == 204

    assert (await api.get("/v1/users/del/inbox")).json() == {"items": [], "next_cursor": None}
    assert (await api.get("/v1/users/del/inbox/count")).json() == {"total": 0, "unread": 0}
    after = await api.get(f"/v1/messages/{message_id}")
    assert after.status_code == 200  # ids and statuses stay for audits
    detail = after.json()
    assert detail["data"] == {}
    assert "A-17" not in after.text
    assert "+8613800138000" not in after.text
    assert detail["status"] == "delivered"
    assert sorted(d["status"] for d in detail["deliveries"]) == ["delivered", "sent"]
    record = (await api.get("/v1/users/del/messages")).json()["messages"]
    assert [(m["id"], m["status"]) for m in record] == [(message_id, "delivered")]


async def test_delete_erases_data_of_messages_still_queued(api, clarion: bootstrap.Clarion) -> None:
    await put_user(api, "del", attributes={"name": "Li"}, addresses={"sms": "+8613800138000"})
    message_id = await _send_inbox_and_sms(api)
    assert (await api.delete("/v1/users/del")).status_code == 204
    detail = await api.get(f"/v1/messages/{message_id}")
    assert detail.json()["data"] == {}
    assert "A-17" not in detail.text


async def test_delete_with_pending_deliveries_keeps_inbox_empty_after_the_worker_runs(
    api, clarion: bootstrap.Clarion
) -> None:
    await put_user(api, "del", attributes={"name": "Li"}, addresses={"sms": "+8613800138000"})
    await _send_inbox_and_sms(api)
    assert (await api.delete("/v1/users/del")).status_code == 204
    await drain(clarion)
    assert (await api.get("/v1/users/del/inbox")).json() == {"items": [], "next_cursor": None}
    assert (await api.get("/v1/users/del/inbox/count")).json() == {"total": 0, "unread": 0}
