"""Placeholders as a sender sees them: what the file sink receives for each template form."""

from __future__ import annotations

from typing import Any

from clarion import bootstrap
from tests.conftest import drain, put_template, put_user, sink


async def render_sms(api, clarion: bootstrap.Clarion, text: str, data: dict[str, Any]) -> dict[str, Any]:
    """Send an sms template with ``text`` to user u1; the message answer and, once drained, what was sent."""
    await put_template(api, "t", channels={"sms": {"text": text}})
    response = await api.post("/v1/messages", json={"template": "t", "to": "u1", "data": data})
    assert response.status_code == 202, response.text
    [message] = response.json()["messages"]
    await drain(clarion)
    records = sink(clarion, "sms")
    message["sent"] = records[-1]["content"]["text"] if records else None
    return message


async def user(api) -> None:
    await put_user(
        api,
        "u1",
        attributes={"name": "Li", "city": "Hangzhou", "vip": True, "points": 0},
        addresses={"sms": "+8613800138000", "webhook": "https://hooks.example.com/in"},
    )


async def test_all_placeholder_forms_are_filled(api, clarion: bootstrap.Clarion) -> None:
    await user(api)
    message = await render_sms(
        api,
        clarion,
        "{name} ${name} {user.city} {data.order.id} ${data.order.total} {vip} {points}",
        {"order": {"id": "A-1", "total": 12.5}},
    )
    assert message["status"] == "queued"
    assert message["sent"] == "Li Li Hangzhou A-1 12.5 true 0"


async def test_data_wins_over_user_attributes_for_a_bare_name(api, clarion: bootstrap.Clarion) -> None:
    await user(api)
    message = await render_sms(api, clarion, "{name}/{user.name}/{data.name}", {"name": "Override"})
    assert message["sent"] == "Override/Li/Override"


async def test_user_id_is_available_as_user_id(api, clarion: bootstrap.Clarion) -> None:
    await user(api)
    message = await render_sms(api, clarion, "id={user.user_id}", {})
    assert message["sent"] == "id=u1"


async def test_braces_that_are_not_placeholders_stay_as_they_are(api, clarion: bootstrap.Clarion) -> None:
    await user(api)
    text = 'cfg {"a": 1, "b": [1, 2]} {} { name } {1x} ${} $5 {name}'
    message = await render_sms(api, clarion, text, {})
    assert message["status"] == "queued"
    assert message["sent"] == 'cfg {"a": 1, "b": [1, 2]} {} { name } {1x} ${} $5 Li'


async def test_missing_nested_value_names_the_full_path(api, clarion: bootstrap.Clarion) -> None:
    await user(api)
    message = await render_sms(api, clarion, "{data.order.id}", {"order": {"total": 1}})
    assert message["status"] == "failed"
    assert message["reason"] == "missing_variable: data.order.id"
    assert message["sent"] is None


async def test_user_placeholder_does_not_fall_back_to_data(api, clarion: bootstrap.Clarion) -> None:
    await user(api)
    message = await render_sms(api, clarion, "{user.coupon}", {"coupon": "C1"})
    assert message["status"] == "failed"
    assert message["reason"] == "missing_variable: user.coupon"


async def test_unicode_values_are_kept(api, clarion: bootstrap.Clarion) -> None:
    await user(api)
    message = await render_sms(api, clarion, "您好 {data.who}，验证码 {data.code}", {"who": "李雷", "code": "0042"})
    assert message["sent"] == "您好 李雷，验证码 0042"


async def test_every_channel_field_is_rendered(api, clarion: bootstrap.Clarion) -> None:
    await put_user(api, "u1", attributes={"name": "Li"}, addresses={"email": "li@example.com"})
    await put_template(
        api,
        "mail",
        channels={
            "email": {"subject": "Hi {name}", "text": "Code {data.code}", "html": "<p>{data.code}</p>"},
            "inbox": {"title": "For {name}", "body": "Code ${data.code}", "url": "https://x.test/{data.code}"},
        },
    )
    response = await api.post("/v1/messages", json={"template": "mail", "to": "u1", "data": {"code": "77"}})
    assert response.status_code == 202
    assert await drain(clarion) == 2
    [email] = sink(clarion, "email")
    assert email["address"] == "li@example.com"
    assert email["content"] == {"subject": "Hi Li", "text": "Code 77", "html": "<p>77</p>"}
    [item] = (await api.get("/v1/users/u1/inbox")).json()["items"]
    assert (item["title"], item["body"], item["url"]) == ("For Li", "Code 77", "https://x.test/77")


async def test_webhook_body_json_has_placeholders_filled_in_nested_strings(api, clarion: bootstrap.Clarion) -> None:
    await user(api)
    # route the webhook channel to a file account so the rendered body can be read back
    provider = await api.put(
        "/v1/providers/hook-file",
        json={"channel": "webhook", "kind": "file", "config": {"directory": clarion.settings.outbox_dir}},
    )
    assert provider.status_code == 201, provider.text
    body = {
        "event": "order.shipped",
        "order": {"id": "{data.order.id}", "lines": [{"sku": "{data.sku}", "qty": 2}], "note": '{"raw": true}'},
        "customer": "${name} from {user.city}",
        "flags": [True, None, 3.5],
    }
    template = await put_template(api, "hook", channels={"webhook": {"body": body}})
    assert template["variables"] == ["data.order.id", "data.sku", "name", "user.city"]
    response = await api.post(
        "/v1/messages", json={"template": "hook", "to": "u1", "data": {"order": {"id": "A-9"}, "sku": "SKU-1"}}
    )
    [message] = response.json()["messages"]
    assert message["status"] == "queued"
    assert await drain(clarion) == 1
    [record] = sink(clarion, "webhook")
    assert record["address"] == "https://hooks.example.com/in"
    assert record["content"]["body"] == {
        "event": "order.shipped",
        "order": {"id": "A-9", "lines": [{"sku": "SKU-1", "qty": 2}], "note": '{"raw": true}'},
        "customer": "Li from Hangzhou",
        "flags": [True, None, 3.5],
    }
    detail = (await api.get(f"/v1/messages/{message['id']}")).json()
    [delivery] = detail["deliveries"]
    assert (delivery["provider"], delivery["status"]) == ("hook-file", "sent")


async def test_webhook_body_missing_value_fails_the_message(api, clarion: bootstrap.Clarion) -> None:
    await user(api)
    await put_template(api, "hook", channels={"webhook": {"body": {"deep": [{"x": "{data.missing}"}]}}})
    response = await api.post("/v1/messages", json={"template": "hook", "to": "u1"})
    [message] = response.json()["messages"]
    assert (message["status"], message["reason"]) == ("failed", "missing_variable: data.missing")
    assert await drain(clarion) == 0
