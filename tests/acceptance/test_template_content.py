"""Per-channel content through the API: one default content adapted to many channels, channel overrides, link
types, the new chat channels, A/B variants, and the preview operators check a template with.

Tests marked "sends" go through ``POST /v1/messages`` and rely on intake composing with ``render.compose`` and
``variants.choose``."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from clarion import bootstrap
from clarion.domain import adapt, variants
from clarion.settings import Settings
from tests.conftest import drain, put_template, put_user, sink

PHONE = "+8613800138000"
URL = "https://shop.example.com/o/{data.id}"
DEFAULT = {
    "title": "Order {data.id} has shipped",
    "body": "Hi {name}, your parcel is on its way.",
    "url": URL,
    "signature": "Shop",
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Links as written: short links are another component's business (and would hide where the url went)."""
    return settings.model_copy(update={"short_links": "off"})


def fields(response: httpx.Response) -> list[str]:
    details = response.json()["error"]["details"]
    return [d["field"] for d in details] if isinstance(details, list) else [details["field"]]


async def everyone(api: httpx.AsyncClient, user_id: str = "u1", **attributes: Any) -> None:
    await put_user(
        api,
        user_id,
        attributes={"name": "Li", **attributes},
        addresses={"sms": PHONE, "email": "li@example.com", "push": ["token-1"]},
    )


async def send(api: httpx.AsyncClient, template: str, data: dict[str, Any], to: str = "u1") -> dict[str, Any]:
    response = await api.post("/v1/messages", json={"template": template, "to": to, "data": data})
    assert response.status_code == 202, response.text
    [message] = response.json()["messages"]
    return message


async def preview(api: httpx.AsyncClient, key: str, **body: Any) -> dict[str, Any]:
    response = await api.post(f"/v1/templates/{key}/preview", json=body)
    assert response.status_code == 200, response.text
    return response.json()


# -- one content, many channels ---------------------------------------------------------------------------------


async def test_default_content_with_targets_is_stored_with_the_adapted_channels(api: httpx.AsyncClient) -> None:
    created = await put_template(api, "shipped", channels={"default": DEFAULT, "targets": ["sms", "push"], "email": {}})
    assert created["version"] == 1
    fetched = (await api.get("/v1/templates/shipped")).json()
    assert fetched["channels"] == {"default": {**DEFAULT, "link_type": "h5"}, "sms": {}, "push": {}, "email": {}}
    assert fetched["variables"] == ["data.id", "name"]


@pytest.mark.parametrize(
    ("channels", "field"),
    [
        ({"default": DEFAULT}, "channels"),  # a default alone sends on nothing
        ({"targets": ["sms"], "inbox": {"title": "t", "body": "b"}}, "channels"),  # targets without a default
        ({"default": DEFAULT, "targets": ["wechat"]}, "channels.targets"),  # a template message is never adapted
        ({"default": DEFAULT, "targets": ["fax"]}, "channels.targets.0"),
        ({"default": {"body": "no title"}, "targets": ["sms"]}, "channels.default.title"),
        ({"default": {**DEFAULT, "signature": "【】"}, "targets": ["sms"]}, "channels.default.signature"),
        ({"sms": {}}, "channels.sms.text"),  # {} adapts only a default
    ],
)
async def test_invalid_default_content_is_422_naming_the_field(
    api: httpx.AsyncClient, channels: dict[str, Any], field: str
) -> None:
    response = await api.put("/v1/templates/bad", json={"name": "B", "category": "notification", "channels": channels})
    assert response.status_code == 422, response.text
    assert field in fields(response)


async def test_a_send_adapts_the_default_to_each_channel(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    """sends"""
    await everyone(api)
    long_body = "Hi {name}, " + "your parcel left our warehouse and is on its way to you. " * 3
    await put_template(
        api,
        "shipped",
        category="notification",
        channels={"default": {**DEFAULT, "body": long_body}, "targets": ["sms", "push", "email", "inbox"]},
    )
    message = await send(api, "shipped", {"id": "A7"})
    assert message["status"] == "queued", message
    await drain(clarion)

    body = "Hi Li, " + "your parcel left our warehouse and is on its way to you. " * 3
    [sms] = sink(clarion, "sms")
    assert sms["content"] == {"text": f"【Shop】{body.rstrip()} https://shop.example.com/o/A7"}
    [push] = sink(clarion, "push")
    assert push["content"]["title"] == "Order A7 has shipped"
    assert len(push["content"]["body"]) <= adapt.PUSH_BODY_LIMIT
    assert push["content"]["body"].endswith("…") and body.startswith(push["content"]["body"][:-1])
    assert (push["content"]["url"], push["content"]["link_type"]) == ("https://shop.example.com/o/A7", "h5")
    [email] = sink(clarion, "email")
    assert email["content"]["subject"] == "Order A7 has shipped"
    assert email["content"]["html"].startswith("<p>Hi Li, your parcel")
    assert '<a href="https://shop.example.com/o/A7">' in email["content"]["html"]
    assert email["content"]["text"] == f"{body.rstrip()}\n\nhttps://shop.example.com/o/A7"
    inbox = (await api.get("/v1/users/u1/inbox")).json()
    assert inbox["items"][0]["title"] == "Order A7 has shipped"

    detail = (await api.get(f"/v1/messages/{message['id']}")).json()
    [sms_delivery] = [d for d in detail["deliveries"] if d["channel"] == "sms"]
    assert sms_delivery["segments"] == 4  # UCS-2 (the 【】 of the signature): 213 units in 67-unit parts


async def test_a_channel_content_overrides_the_default(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    """sends"""
    await everyone(api)
    await put_template(
        api,
        "shipped",
        channels={
            "default": DEFAULT,
            "targets": ["sms", "push"],
            "push": {"title": "📦 {data.id}", "body": "Tap to track", "url": "shop://orders/{data.id}"},
        },
    )
    await send(api, "shipped", {"id": "B8"})
    await drain(clarion)
    [push] = sink(clarion, "push")
    assert push["content"] == {
        "title": "📦 B8",
        "body": "Tap to track",
        "url": "shop://orders/B8",
        "link_type": "native",
    }
    [sms] = sink(clarion, "sms")
    assert sms["content"]["text"].startswith("【Shop】Hi Li")


async def test_html_only_email_is_sent_with_a_text_alternative(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    """sends"""
    await everyone(api)
    html = '<h1>Receipt {data.id}</h1><p>Total: <b>¥12.50</b></p><p><a href="https://x.example/r">View</a></p>'
    await put_template(api, "receipt", channels={"email": {"subject": "Receipt", "html": html}})
    await send(api, "receipt", {"id": "R1"})
    await drain(clarion)
    [email] = sink(clarion, "email")
    assert email["content"]["html"] == html.replace("{data.id}", "R1")
    assert email["content"]["text"] == "Receipt R1\n\nTotal: ¥12.50\n\nView (https://x.example/r)"


# -- links and the new channels -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("push", "link_type"),
    [
        ({"url": "https://m.example.com/sale"}, "h5"),
        ({"url": "myapp://orders/1"}, "native"),
        ({"url": "{data.link}"}, "h5"),
        ({"url": "{data.link}", "link_type": "native"}, "native"),
        ({"url": "pages/order/detail?id={data.id}", "link_type": "miniprogram", "appid": "wx0123456789abcdef"}, None),
        ({}, None),
    ],
)
async def test_push_link_types_are_inferred_or_kept(
    api: httpx.AsyncClient, push: dict[str, Any], link_type: str | None
) -> None:
    saved = await put_template(api, "p", channels={"push": {"title": "t", "body": "b", **push}})
    expected = {"title": "t", "body": "b", **push}
    if link_type is not None:
        expected["link_type"] = link_type
    assert saved["channels"]["push"] == expected


@pytest.mark.parametrize(
    ("push", "message"),
    [
        ({"url": "myapp://orders/1", "link_type": "h5"}, "h5 link needs an http(s) url"),
        ({"url": "https://m.example.com", "link_type": "native"}, "native link needs an app deep link"),
        ({"url": "pages/index", "link_type": "miniprogram"}, "needs appid"),
        ({"url": "https://m.example.com", "appid": "wx1"}, "only a miniprogram link takes one"),
        ({"url": "https://m.example.com", "link_type": "miniprogram", "appid": "wx1"}, "needs a page path"),
        ({"url": "orders/1"}, "give link_type"),
        ({"link_type": "h5"}, "need a url"),
    ],
)
async def test_bad_push_links_are_422(api: httpx.AsyncClient, push: dict[str, Any], message: str) -> None:
    body = {"name": "P", "category": "notification", "channels": {"push": {"title": "t", "body": "b", **push}}}
    response = await api.put("/v1/templates/p", json=body)
    assert response.status_code == 422, response.text
    assert fields(response) == ["channels.push"]
    assert message in response.json()["error"]["message"]


async def test_wechat_and_chat_channels_have_their_own_content(api: httpx.AsyncClient) -> None:
    channels = {
        "wechat": {
            "template_id": "TM0001",
            "fields": {"thing1": "{data.item}", "time2": "{data.at}"},
            "url": "https://m.example.com/o",
        },
        "wecom": {"markdown": "**Paid** {data.item}"},
        "dingtalk": {"title": "Paid", "markdown": "### Paid\n{data.item}"},
        "feishu": {"title": "Paid", "markdown": "{data.item}"},
    }
    saved = await put_template(api, "paid", channels=channels)
    assert saved["channels"] == channels
    assert saved["variables"] == ["data.at", "data.item"]
    for bad, field in [
        ({"wechat": {"template_id": "TM0001", "fields": {}}}, "channels.wechat.fields"),
        ({"wechat": {"template_id": "TM0001", "fields": {"a": "b"}, "url": "app://x"}}, "channels.wechat.url"),
        ({"dingtalk": {"markdown": "x"}}, "channels.dingtalk.title"),
    ]:
        response = await api.put("/v1/templates/bad", json={"name": "B", "category": "notification", "channels": bad})
        assert response.status_code == 422, response.text
        assert fields(response) == [field]


async def test_a_channel_without_any_provider_fails_with_a_reason(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await put_user(api, "u1", addresses={"wechat": "oAbCdEf-openid"})
    await put_template(api, "paid", channels={"wechat": {"template_id": "TM1", "fields": {"thing1": "{data.x}"}}})
    message = await send(api, "paid", {"x": "tea"})
    assert message["status"] == "queued", message
    delivery: dict[str, Any] = {}
    for _ in range(100):  # retried at most max_attempts times, 0.05-0.5 s apart, then failed
        await drain(clarion)
        [delivery] = (await api.get(f"/v1/messages/{message['id']}")).json()["deliveries"]
        if delivery["status"] == "failed":
            break
        await asyncio.sleep(0.05)
    assert delivery["status"] == "failed"
    assert "no_provider" in delivery["timeline"][-1]["reason"]
    assert sink(clarion, "wechat") == []


# -- preview ----------------------------------------------------------------------------------------------------


async def test_preview_shows_every_channel_with_sms_segments_in_both_alphabets(api: httpx.AsyncClient) -> None:
    await everyone(api)
    await put_template(
        api,
        "code",
        category="verification",
        channels={
            "sms": {"text": "Your code is {data.code}. " + "x" * 141},
            "email": {"subject": "Code", "html": "<p>Code <b>{data.code}</b></p>"},
        },
    )
    shown = await preview(api, "code", user_id="u1", data={"code": "1234"})
    assert shown["template"] == "code" and shown["variant"] is None
    sms = shown["channels"]["sms"]
    assert sms["content"]["text"].startswith("Your code is 1234. ")
    assert sms["segments"] == {"encoding": "GSM-7", "characters": 160, "count": 1}
    assert sms["keywords"] == {"masked": [], "blocked": None}
    assert shown["channels"]["email"]["content"]["text"] == "Code 1234"
    assert "segments" not in shown["channels"]["email"]

    longer = await preview(api, "code", user_id="u1", data={"code": "12345"})
    assert longer["channels"]["sms"]["segments"] == {"encoding": "GSM-7", "characters": 161, "count": 2}

    await put_template(
        api, "cn", channels={"default": {**DEFAULT, "body": "您好{name}，" + "您的包裹已发出" * 9}, "sms": {}}
    )
    chinese = (await preview(api, "cn", user_id="u1", data={"id": "C1"}))["channels"]["sms"]
    assert chinese["content"]["text"].startswith("【Shop】您好Li，您的包裹已发出")
    # 【Shop】 (6) + 您好Li， (5) + 63 + " " (1) + the url (29) = 104 UTF-16 units: 2 segments of 67
    assert chinese["segments"] == {"encoding": "UCS-2", "characters": 104, "count": 2}


async def test_preview_reports_keyword_findings(api: httpx.AsyncClient) -> None:
    await everyone(api)
    assert (await api.put("/v1/keyword-lists/illegal", json={"action": "block", "words": ["赌博"]})).status_code in (
        200,
        201,
    )
    assert (await api.put("/v1/keyword-lists/rivals", json={"action": "mask", "words": ["AcmePush"]})).status_code in (
        200,
        201,
    )
    await put_template(
        api, "say", channels={"sms": {"text": "{data.what}"}, "inbox": {"title": "News", "body": "{data.what}"}}
    )
    shown = await preview(api, "say", user_id="u1", data={"what": "better than acmepush"})
    assert shown["channels"]["sms"]["content"] == {"text": "better than ***"}
    assert shown["channels"]["sms"]["keywords"] == {
        "masked": [{"field": "text", "word": "AcmePush", "list": "rivals"}],
        "blocked": None,
    }
    blocked = await preview(api, "say", user_id="u1", data={"what": "网络赌博"}, channels=["inbox"])
    assert list(blocked["channels"]) == ["inbox"]
    assert blocked["channels"]["inbox"]["keywords"]["blocked"] == {"list": "illegal", "word": "赌博", "field": "body"}


async def test_preview_reports_render_errors_per_channel(api: httpx.AsyncClient) -> None:
    await put_template(
        api,
        "mixed",
        channels={"sms": {"text": "Hi {user.name}"}, "inbox": {"title": "Order {data.id}", "body": "ok"}},
    )
    shown = await preview(api, "mixed", data={"id": "9"})  # no user: user.* is missing
    assert shown["user_id"] is None
    assert shown["channels"]["sms"] == {
        "content": None,
        "error": {"code": "missing_variable", "message": "missing_variable: user.name", "variable": "user.name"},
    }
    assert shown["channels"]["inbox"]["content"] == {"title": "Order 9", "body": "ok"}


async def test_preview_shows_the_latest_saved_version_or_the_one_asked_for(api: httpx.AsyncClient) -> None:
    """A marketing template awaiting approval cannot be sent yet, but it can be previewed."""
    await put_template(api, "offer", category="marketing", channels={"sms": {"text": "first {data.n}"}})
    await put_template(api, "offer", category="marketing", channels={"sms": {"text": "second {data.n}"}})
    latest = await preview(api, "offer", data={"n": 1})
    assert (latest["version"], latest["channels"]["sms"]["content"]) == (2, {"text": "second 1"})
    first = await preview(api, "offer", data={"n": 1}, version=1)
    assert (first["version"], first["channels"]["sms"]["content"]) == (1, {"text": "first 1"})
    missing = await api.post("/v1/templates/offer/preview", json={"version": 9})
    assert missing.status_code == 404


async def test_preview_of_unknown_things(api: httpx.AsyncClient) -> None:
    await everyone(api)
    await put_template(api, "t", channels={"sms": {"text": "x"}})
    missing_template = await api.post("/v1/templates/nope/preview", json={})
    assert missing_template.status_code == 404
    assert missing_template.json()["error"]["details"] == {"kind": "template", "key": "nope"}
    missing_user = await api.post("/v1/templates/t/preview", json={"user_id": "ghost"})
    assert missing_user.status_code == 404
    assert missing_user.json()["error"]["details"] == {"kind": "user", "key": "ghost"}
    wrong_channel = await api.post("/v1/templates/t/preview", json={"channels": ["email"]})
    assert wrong_channel.status_code == 422
    assert fields(wrong_channel) == ["channels"]
    wrong_variant = await api.post("/v1/templates/t/preview", json={"variant": "B"})
    assert wrong_variant.status_code == 422
    assert fields(wrong_variant) == ["variant"]


# -- A/B variants ---------------------------------------------------------------------------------------------


AB = {
    "channels": {"default": DEFAULT, "sms": {}, "inbox": {"title": "Shipped", "body": "Order {data.id}"}},
    "variants": [
        {"name": "A", "weight": 50},
        {"name": "B", "weight": 50, "channels": {"default": {"title": "On its way", "body": "B: {data.id} ships"}}},
    ],
}


async def test_preview_shows_each_users_variant_deterministically(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    for i in range(20):
        await everyone(api, f"u{i}")
    await put_template(api, "ab", category="notification", **AB)
    template = await clarion.catalog.template("ab")
    assert template is not None
    seen = {}
    for i in range(20):
        shown = await preview(api, "ab", user_id=f"u{i}", data={"id": "7"})
        again = await preview(api, "ab", user_id=f"u{i}", data={"id": "7"})
        assert shown == again
        assert shown["variant"] == variants.choose(template, f"u{i}")
        assert shown["variants"] == [{"name": "A", "weight": 50}, {"name": "B", "weight": 50}]
        seen[shown["variant"]] = shown["channels"]
    assert set(seen) == {"A", "B"}
    assert (
        seen["A"]["sms"]["content"]["text"] == "【Shop】Hi Li, your parcel is on its way. https://shop.example.com/o/7"
    )
    assert seen["B"]["sms"]["content"]["text"] == "【Shop】B: 7 ships"  # the brand's signature is kept
    assert seen["A"]["inbox"] == seen["B"]["inbox"]  # B changes only the default
    chosen = await preview(api, "ab", user_id="u0", variant="B", data={"id": "7"})
    assert chosen["variant"] == "B"


async def test_changing_weights_on_a_running_template(api: httpx.AsyncClient) -> None:
    for i in range(10):
        await everyone(api, f"u{i}")
    await put_template(api, "ab", **AB)
    only_a = {**AB, "variants": [{**AB["variants"][0], "weight": 1}, {**AB["variants"][1], "weight": 0}]}
    updated = await put_template(api, "ab", **only_a)
    assert updated["version"] == 2
    for i in range(10):
        assert (await preview(api, "ab", user_id=f"u{i}", data={"id": "1"}))["variant"] == "A"


async def test_a_send_records_and_uses_the_users_variant(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    """sends"""
    for i in range(6):
        await everyone(api, f"u{i}")
    await put_template(api, "ab", category="notification", **AB)
    for i in range(6):
        expected = (await preview(api, "ab", user_id=f"u{i}", data={"id": f"S{i}"}))["channels"]["sms"]["content"]
        message = await send(api, "ab", {"id": f"S{i}"}, to=f"u{i}")
        detail = (await api.get(f"/v1/messages/{message['id']}")).json()
        assert detail["variant"] == (await preview(api, "ab", user_id=f"u{i}", data={"id": "x"}))["variant"]
        await drain(clarion)
        assert sink(clarion, "sms")[-1]["content"] == expected


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"variants": [{"name": "A", "weight": 50}]}, "variants", "at least 2"),
        ({"variants": [{"name": "A", "weight": 50}, {"name": "A", "weight": 50}]}, "variants", "unique"),
        ({"variants": [{"name": "A", "weight": 0}, {"name": "B", "weight": 0}]}, "variants", "weight above 0"),
        ({"variants": [{"name": "A", "weight": -1}, {"name": "B", "weight": 1}]}, "variants.0.weight", "greater"),
        ({"variants": [{"name": "A B", "weight": 1}, {"name": "B", "weight": 1}]}, "variants.0.name", "pattern"),
        ({"variants": [{"name": "A"}, {"name": "B", "weight": 1}]}, "variants.0.weight", "required"),
        (
            {"variants": [{"name": "A", "weight": 1}, {"name": "B", "weight": 1, "channels": {"email": {}}}]},
            "variants",
            "does not send on email",
        ),
        (
            {
                "variants": [
                    {"name": "A", "weight": 1},
                    {"name": "B", "weight": 1, "channels": {"sms": {"text": "<#if x>"}}},
                ]
            },
            "variants",
            "variants.1.channels.sms.text",
        ),
    ],
)
async def test_invalid_variants_are_422_naming_the_field(
    api: httpx.AsyncClient, change: dict[str, Any], field: str, message: str
) -> None:
    body = {"name": "AB", "category": "notification", **AB, **change}
    response = await api.put("/v1/templates/ab", json=body)
    assert response.status_code == 422, response.text
    assert fields(response) == [field]
    assert message in response.json()["error"]["message"]
    assert (await api.get("/v1/templates/ab")).status_code == 404
