"""Templates through the HTTP API: per-channel required content, versions, variables, listing, deletion."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import put_template


def fields(response: Any) -> list[str]:
    details = response.json()["error"]["details"]
    return [d["field"] for d in details] if isinstance(details, list) else [details["field"]]


def body(**channels: Any) -> dict[str, Any]:
    return {"name": "T", "category": "transactional", "channels": channels}


async def test_put_creates_with_version_1_then_each_put_bumps_the_version(api) -> None:
    created = await api.put(
        "/v1/templates/welcome",
        json={
            "name": "Welcome",
            "category": "notification",
            "priority": "high",
            "department": "growth",
            "owner": "ana",
            "channels": {"sms": {"text": "Hi {name}"}},
        },
    )
    assert created.status_code == 201, created.text
    template = created.json()
    assert {k: template[k] for k in ("key", "name", "category", "priority", "department", "owner", "version")} == {
        "key": "welcome",
        "name": "Welcome",
        "category": "notification",
        "priority": "high",
        "department": "growth",
        "owner": "ana",
        "version": 1,
    }
    assert template["channels"] == {"sms": {"text": "Hi {name}"}}

    second = await api.put("/v1/templates/welcome", json=body(sms={"text": "Hello {name}"}))
    assert second.status_code == 200
    assert second.json()["version"] == 2
    assert second.json()["priority"] == "normal"  # the default, the PUT replaced everything
    third = await api.put("/v1/templates/welcome", json=body(sms={"text": "Hey {name}"}))
    assert third.json()["version"] == 3

    fetched = (await api.get("/v1/templates/welcome")).json()
    assert fetched["version"] == 3
    assert fetched["channels"] == {"sms": {"text": "Hey {name}"}}
    assert fetched["created_at"] == template["created_at"]


async def test_messages_record_the_template_version_they_used(api) -> None:
    await api.put("/v1/users/u1", json={})
    await put_template(api, "t", channels={"inbox": {"title": "a", "body": "b"}})
    await put_template(api, "t", channels={"inbox": {"title": "a", "body": "c"}})
    sent = (await api.post("/v1/messages", json={"template": "t", "to": "u1"})).json()
    detail = (await api.get(f"/v1/messages/{sent['messages'][0]['id']}")).json()
    assert detail["template"] == "t"
    assert detail["template_version"] == 2


async def test_variables_lists_every_placeholder_of_every_channel(api) -> None:
    template = await put_template(
        api,
        "v",
        channels={
            "email": {"subject": "Hi {user.first_name}", "text": "Order {data.order.id}", "html": "<b>${name}</b>"},
            "sms": {"text": "{name}: {data.code} {not a placeholder} {}"},
            "webhook": {"body": {"order": {"id": "{data.order.id}"}, "lines": ["{data.sku}"], "n": 1}},
        },
    )
    assert template["variables"] == ["data.code", "data.order.id", "data.sku", "name", "user.first_name"]


async def test_template_without_placeholders_has_no_variables(api) -> None:
    template = await put_template(api, "plain", channels={"sms": {"text": 'Nothing to fill {"a": 1}'}})
    assert template["variables"] == []


@pytest.mark.parametrize(
    ("channels", "field"),
    [
        ({"email": {"text": "no subject"}}, "channels.email.subject"),
        ({"email": {"subject": "no body"}}, "channels.email"),
        ({"email": {"subject": "", "text": "x"}}, "channels.email.subject"),
        ({"sms": {}}, "channels.sms.text"),
        ({"sms": {"text": ""}}, "channels.sms.text"),
        ({"push": {"body": "no title"}}, "channels.push.title"),
        pytest.param({"push": {"title": "no body"}}, "channels.push.body"),
        ({"inbox": {"body": "no title"}}, "channels.inbox.title"),
        pytest.param({"inbox": {"title": "no body"}}, "channels.inbox.body"),
        pytest.param({"webhook": {}}, "channels.webhook.body"),
        ({"sms": {"text": "x", "subject": "extra"}}, "channels.sms.subject"),
        ({"fax": {"text": "x"}}, "channels.fax"),
        ({}, "channels"),
    ],
)
async def test_missing_channel_content_is_422_naming_the_field(api, channels: dict[str, Any], field: str) -> None:
    response = await api.put("/v1/templates/bad", json=body(**channels))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    assert field in fields(response)
    assert (await api.get("/v1/templates/bad")).status_code == 404


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"category": "transactional", "channels": {"sms": {"text": "x"}}}, "name"),
        ({"name": "T", "channels": {"sms": {"text": "x"}}}, "category"),
        ({"name": "T", "category": "spam", "channels": {"sms": {"text": "x"}}}, "category"),
        ({"name": "T", "category": "marketing", "priority": "asap", "channels": {"sms": {"text": "x"}}}, "priority"),
        ({"name": "T", "category": "marketing"}, "channels"),
        ({"name": "T", "category": "marketing", "channels": {"sms": {"text": "x"}}, "color": "red"}, "color"),
    ],
)
async def test_invalid_template_fields_are_422(api, payload: dict[str, Any], field: str) -> None:
    response = await api.put("/v1/templates/bad", json=payload)
    assert response.status_code == 422, response.text
    assert fields(response) == [field]


async def test_a_failed_update_keeps_the_stored_version(api) -> None:
    await put_template(api, "keep", channels={"sms": {"text": "v1"}})
    refused = await api.put("/v1/templates/keep", json=body(sms={"text": ""}))
    assert refused.status_code == 422
    stored = (await api.get("/v1/templates/keep")).json()
    assert stored["version"] == 1
    assert stored["channels"] == {"sms": {"text": "v1"}}


async def test_list_paginates_by_key_with_next_cursor(api) -> None:
    keys = [f"t{i:02d}" for i in range(7)]
    for key in reversed(keys):
        await put_template(api, key, channels={"sms": {"text": key}})

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        response = await api.get("/v1/templates", params=params)
        assert response.status_code == 200
        page = response.json()
        seen += [t["key"] for t in page["templates"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == keys
    assert pages == 3

    everything = (await api.get("/v1/templates")).json()
    assert [t["key"] for t in everything["templates"]] == keys
    assert everything["next_cursor"] is None
    assert everything["templates"][0]["variables"] == []


async def test_list_limit_bounds_are_enforced(api) -> None:
    assert (await api.get("/v1/templates", params={"limit": 0})).status_code == 422
    assert (await api.get("/v1/templates", params={"limit": 1001})).status_code == 422


async def test_exact_page_size_has_no_next_cursor(api) -> None:
    for key in ("a", "b"):
        await put_template(api, key, channels={"sms": {"text": key}})
    page = (await api.get("/v1/templates", params={"limit": 2})).json()
    assert [t["key"] for t in page["templates"]] == ["a", "b"]
    assert page["next_cursor"] is None


async def test_delete_then_get_is_404(api) -> None:
    await put_template(api, "bye", channels={"sms": {"text": "x"}})
    assert (await api.delete("/v1/templates/bye")).status_code == 204
    response = await api.get("/v1/templates/bye")
    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "not_found",
        "message": "template 'bye' not found",
        "details": {"kind": "template", "key": "bye"},
    }
    assert (await api.delete("/v1/templates/bye")).status_code == 404


async def test_deleted_template_can_no_longer_be_sent(api) -> None:
    await api.put("/v1/users/u1", json={})
    await put_template(api, "bye", channels={"sms": {"text": "x"}})
    assert (await api.delete("/v1/templates/bye")).status_code == 204
    response = await api.post("/v1/messages", json={"template": "bye", "to": "u1"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
