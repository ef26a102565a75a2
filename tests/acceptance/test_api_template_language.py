"""The template language through the API: refused at save with its position, applied per user at send."""

from __future__ import annotations

from clarion import bootstrap
from tests.conftest import drain, put_template, put_user, set_approval, set_policies, sink


async def test_a_template_with_a_syntax_error_is_refused_with_its_position(api, clarion: bootstrap.Clarion) -> None:
    body = {
        "name": "Broken",
        "category": "notification",
        "channels": {"sms": {"text": "Hi {name}\n<#if user.vip gt 3>VIP"}},
    }
    response = await api.put("/v1/templates/broken", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_template"
    assert (error["details"]["field"], error["details"]["line"], error["details"]["column"]) == (
        "channels.sms.text",
        2,
        1,
    )
    assert (await api.get("/v1/templates/broken")).status_code == 404


async def test_conditions_and_filters_are_rendered_per_user(api, clarion: bootstrap.Clarion) -> None:
    await set_policies(clarion, send_windows={})  # marketing at any hour: this test is about rendering
    await set_approval(clarion, levels={})  # and sendable once saved
    await put_user(api, "vip", attributes={"name": "li", "level": 5}, addresses={"sms": "+8613800138000"})
    await put_user(api, "new", attributes={"level": 1}, addresses={"sms": "+8613800138001"})
    template = await put_template(
        api,
        "offer",
        category="marketing",
        channels={"sms": {"text": '{name|default:"friend"|upper}: <#if user.level gte 3>20% off<#else>5% off</#if>'}},
    )
    assert set(template["variables"]) >= {"name", "user.level"}
    response = await api.post("/v1/messages", json={"template": "offer", "to": ["vip", "new"]})
    assert [m["status"] for m in response.json()["messages"]] == ["queued", "queued"]
    await drain(clarion)
    texts = {record["user_id"]: record["content"]["text"] for record in sink(clarion)}
    assert texts == {"vip": "LI: 20% off", "new": "FRIEND: 5% off"}
