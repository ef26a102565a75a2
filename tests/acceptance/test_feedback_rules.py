"""Tag feedback rules through the HTTP API: saved, read and deleted by editors with an audit entry, refused with
422 naming the field; a click, a conversion or an unsubscribe then tags the user (once per message), the firing is
on the user's record, segments count the new tag, and an unsubscribe through a message's link is the funnel's
``unsubscribed`` stage."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import bootstrap, unsubscribe
from clarion.domain.policy import config
from clarion.store import feedback_rules as store_feedback
from clarion.store import policies as store_policies
from tests.conftest import drain, put_template, put_user, set_approval, sink

ED_KEY = "clk_ed_the_editor_0000000000000"
SAM_KEY = "clk_sam_the_sender_00000000000000"
PRICE = "价格敏感用户"
FULL_PRICE = "正价偏好用户"


async def put_rule(api: httpx.AsyncClient, key: str, **body: Any) -> dict[str, Any]:
    answer = await api.put(f"/v1/feedback-rules/{key}", json=body)
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


async def send(api: httpx.AsyncClient, template: str, to: list[str], **extra: Any) -> dict[str, str]:
    answer = await api.post("/v1/messages", json={"template": template, "to": to, **extra})
    assert answer.status_code == 202, answer.text
    return {m["user_id"]: m["id"] for m in answer.json()["messages"]}


def codes(clarion: bootstrap.Clarion, user_id: str, containing: str = "") -> list[str]:
    """The short-link codes of the texts sent to ``user_id`` (those containing ``containing``), in order."""
    lines = [line for line in sink(clarion, "sms") if line["user_id"] == user_id]
    texts = [line["content"]["text"] for line in lines if containing in line["content"]["text"]]
    return [code for text in texts for code in re.findall(r"/s/([0-9A-Za-z]+)", text)]


async def tags(api: httpx.AsyncClient, user_id: str) -> list[str]:
    return (await api.get(f"/v1/users/{user_id}")).json()["tags"]


async def firings(api: httpx.AsyncClient, user_id: str) -> list[dict[str, Any]]:
    answer = await api.get(f"/v1/users/{user_id}/feedback")
    assert answer.status_code == 200, answer.text
    return answer.json()["firings"]


async def segment_count(api: httpx.AsyncClient, key: str) -> int:
    """The segment's count now: the process that recorded the fact told its segment index, so no poll is awaited."""
    return int((await api.get(f"/v1/segments/{key}/count")).json()["count"])


# -- configuration ---------------------------------------------------------------------------------------------


async def test_editors_save_read_and_delete_rules_and_each_write_is_audited(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await clarion.keys.create("ed", ("editor",), key=ED_KEY)
    await clarion.keys.create("sam", ("sender",), key=SAM_KEY)
    await put_template(api, "spring", channels={"sms": {"text": "领券 https://shop.example.com/c"}})
    body = {
        "on": "convert",
        "match": {"template": "spring", "event": "coupon.claimed"},
        "actions": [{"add_tag": PRICE}, {"set": {"segment_hint": "coupon"}}],
    }
    editor = {"Authorization": f"Bearer {ED_KEY}"}
    sender = {"Authorization": f"Bearer {SAM_KEY}"}

    refused = await api.put("/v1/feedback-rules/coupon", json=body, headers=sender)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    made = await api.put("/v1/feedback-rules/coupon", json=body, headers=editor)
    assert made.status_code == 201, made.text
    assert made.json() == {
        "key": "coupon",
        **body,
        "enabled": True,
        "created_at": made.json()["created_at"],
        "updated_at": made.json()["updated_at"],
    }
    replaced = await api.put("/v1/feedback-rules/coupon", json={**body, "enabled": False}, headers=editor)
    assert replaced.status_code == 200 and replaced.json()["enabled"] is False
    assert (await api.get("/v1/feedback-rules/coupon", headers=sender)).json()["enabled"] is False
    assert [r["key"] for r in (await api.get("/v1/feedback-rules")).json()["rules"]] == ["coupon"]

    assert (await api.delete("/v1/feedback-rules/coupon", headers=sender)).status_code == 403
    assert (await api.delete("/v1/feedback-rules/coupon", headers=editor)).status_code == 204
    assert (await api.get("/v1/feedback-rules/coupon")).status_code == 404
    assert (await api.delete("/v1/feedback-rules/coupon")).status_code == 404

    log = (await api.get("/v1/audit", params={"subject": "feedback_rule:coupon"})).json()["entries"]
    assert [(e["action"], e["actor"]) for e in reversed(log)] == [
        ("feedback_rule.create", "ed"),
        ("feedback_rule.update", "ed"),
        ("feedback_rule.delete", "ed"),
    ]
    assert log[1]["detail"]["before"]["enabled"] is True and log[1]["detail"]["after"]["enabled"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"on": "open", "actions": [{"add_tag": "x"}]}, "on"),
        ({"on": "click", "actions": []}, "actions"),
        ({"on": "click"}, "actions"),
        ({"on": "click", "actions": [{"add_tag": "x", "remove_tag": "y"}]}, "actions.0"),
        ({"on": "click", "actions": [{}]}, "actions.0"),
        ({"on": "click", "actions": [{"add_tag": ""}]}, "actions.0.add_tag"),
        ({"on": "click", "actions": [{"set": {}}]}, "actions.0.set"),
        ({"on": "click", "actions": [{"set": {"n": 2**70}}]}, "actions.0.set.n"),
        ({"on": "click", "actions": [{"tag": "x"}]}, "actions.0.tag"),
        ({"on": "click", "match": {"event": "paid"}, "actions": [{"add_tag": "x"}]}, "match.event"),
        ({"on": "convert", "match": {"link": "https://a"}, "actions": [{"add_tag": "x"}]}, "match.link"),
        ({"on": "click", "match": {"template": "nope"}, "actions": [{"add_tag": "x"}]}, "match.template"),
        ({"on": "click", "match": {"campaign": "nope"}, "actions": [{"add_tag": "x"}]}, "match.campaign"),
        ({"on": "click", "match": {"colour": "red"}, "actions": [{"add_tag": "x"}]}, "match.colour"),
        ({"on": "click", "actions": [{"add_tag": "x"}], "enabled": "maybe"}, "enabled"),
    ],
)
async def test_a_bad_rule_is_422_naming_the_field_and_nothing_is_stored(
    api: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    answer = await api.put("/v1/feedback-rules/bad", json=body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["message"].startswith(f"{field}:"), error
    assert (await api.get("/v1/feedback-rules/bad")).status_code == 404


# -- firing ----------------------------------------------------------------------------------------------------


async def test_a_click_tags_the_user_once_per_message_and_the_segment_counts_it(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    for n in (1, 2):
        await put_user(api, f"u{n}", tags=["member"], addresses={"sms": f"+861380013800{n}"})
    text = "春季上新 https://shop.example.com/new 会员 https://shop.example.com/vip"
    await put_template(api, "spring", channels={"sms": {"text": text}})
    await put_template(api, "other", channels={"sms": {"text": "其他 https://shop.example.com/x"}})
    assert (await api.put("/v1/segments/curious", json={"conditions": {"tag": "curious"}})).json()["count"] == 0
    await put_rule(
        api,
        "clicked",
        on="click",
        match={"template": "spring"},
        actions=[{"add_tag": "curious"}, {"remove_tag": "member"}],
    )
    await put_rule(
        api, "vip-link", on="click", match={"link": "https://shop.example.com/vip"}, actions=[{"set": {"vip": True}}]
    )
    ids = await send(api, "spring", ["u1", "u2"])
    await send(api, "other", ["u2"])
    await drain(clarion)

    first, second = codes(clarion, "u1")  # the new arrivals' link, then the membership's
    assert (await public.get(f"/s/{first}")).status_code == 302
    assert (await public.get(f"/s/{first}")).status_code == 302  # the same link again
    assert (await public.get(f"/s/{second}")).status_code == 302  # another link of the same message

    user = (await api.get("/v1/users/u1")).json()
    assert user["tags"] == ["curious"] and user["attributes"] == {"vip": True}
    fired = await firings(api, "u1")
    assert [(f["rule"], f["trigger"], f["message_id"]) for f in fired] == [
        ("vip-link", "click", ids["u1"]),
        ("clicked", "click", ids["u1"]),
    ]
    assert fired[1]["detail"] == {
        "template": "spring",
        "link": "https://shop.example.com/new",
        "actions": [{"add_tag": "curious"}, {"remove_tag": "member"}],
    }
    assert await segment_count(api, "curious") == 1

    [other] = codes(clarion, "u2", containing="其他")
    assert (await public.get(f"/s/{other}")).status_code == 302  # a message of another template: no rule
    assert await tags(api, "u2") == ["member"] and await firings(api, "u2") == []


async def test_the_briefs_conversions_tag_price_sensitive_and_full_price_buyers(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    for n in (1, 2):
        await put_user(api, f"u{n}", addresses={"sms": f"+861380013800{n}"})
    goal = {"event": "coupon.claimed", "within_hours": 72, "attribution": "click"}
    await put_template(api, "spring", goal=goal, channels={"sms": {"text": "领券 https://shop.example.com/c"}})
    await put_rule(
        api,
        "price",
        on="convert",
        match={"template": "spring", "event": "coupon.claimed"},
        actions=[{"add_tag": PRICE}, {"set": {"price_sensitive": True}}],
    )
    await put_rule(
        api, "full-price", on="convert", match={"event": "membership.bought"}, actions=[{"add_tag": FULL_PRICE}]
    )
    await put_rule(
        api, "off", on="convert", match={"event": "coupon.claimed"}, actions=[{"add_tag": "x"}], enabled=False
    )
    saved = await api.put("/v1/segments/price", json={"conditions": {"tag": PRICE}})
    assert saved.status_code == 201, saved.text
    ids = await send(api, "spring", ["u1", "u2"])
    await drain(clarion)
    [code] = codes(clarion, "u1")
    assert (await public.get(f"/s/{code}")).status_code == 302

    events = [
        {"user_id": "u1", "event": "coupon.claimed"},
        {"user_id": "u2", "event": "coupon.claimed"},  # never clicked: no conversion, the template rule is silent
        {"user_id": "u2", "event": "membership.bought", "properties": {"amount": 298}},
    ]
    tracked = await api.post("/v1/track", json={"events": events})
    assert tracked.status_code == 200 and tracked.json()["converted"] == 1, tracked.text
    again = await api.post("/v1/track", json={"user_id": "u1", "event": "coupon.claimed"})
    assert again.json()["converted"] == 0

    assert await tags(api, "u1") == [PRICE]
    assert await tags(api, "u2") == [FULL_PRICE]
    [fired] = await firings(api, "u1")  # once for the message, not again for the second goal event
    assert (fired["rule"], fired["trigger"], fired["message_id"]) == ("price", "convert", ids["u1"])
    assert fired["detail"]["event"] == "coupon.claimed"
    [bought] = await firings(api, "u2")
    assert (bought["rule"], bought["message_id"]) == ("full-price", None)
    assert (await api.get("/v1/users/u1")).json()["attributes"] == {"price_sensitive": True}
    assert await segment_count(api, "price") == 1


async def _marketing_email(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> tuple[str, str]:
    """A marketing e-mail sent to u1: its message and delivery ids."""
    await set_approval(clarion, levels={})

    async def no_send_windows(conn: AsyncConnection) -> None:
        await store_policies.save_settings(conn, config.PolicySettings(send_windows={}), datetime.now(UTC))

    await clarion.db.write(no_send_windows)
    clarion.catalog.invalidate()
    await put_user(api, "u1", tags=["reader"], addresses={"email": "li@example.com"})
    await put_template(api, "promo", category="marketing", channels={"email": {"subject": "Sale", "text": "Sale"}})
    [message_id] = (await send(api, "promo", ["u1"])).values()
    await drain(clarion)
    [delivery] = (await api.get(f"/v1/messages/{message_id}")).json()["deliveries"]
    return message_id, delivery["id"]


def _link(clarion: bootstrap.Clarion, delivery_id: str | None) -> str:
    request = unsubscribe.Request("u1", "marketing", "email", "li@example.com", delivery_id)
    return f"/u/{unsubscribe.token(clarion.secret_key.encode(), request)}"


async def test_an_unsubscribe_through_a_messages_link_fires_rules_and_is_the_funnels_unsubscribed_stage(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    message_id, delivery_id = await _marketing_email(api, clarion)
    await put_rule(
        api,
        "left",
        on="unsubscribe",
        match={"template": "promo"},
        actions=[{"add_tag": "unsubscribed"}, {"remove_tag": "reader"}],
    )
    await api.put("/v1/segments/left", json={"conditions": {"tag": "unsubscribed"}})
    path = _link(clarion, delivery_id)

    assert (await public.post(path)).status_code == 200
    assert (await public.post(path)).status_code == 200  # already unsubscribed: nothing more

    assert await tags(api, "u1") == ["unsubscribed"]
    [fired] = await firings(api, "u1")
    assert (fired["rule"], fired["trigger"], fired["message_id"]) == ("left", "unsubscribe", message_id)
    assert (await api.get("/v1/segments/left/count")).json()["count"] == 1  # at once: this process was told
    timeline = (await api.get(f"/v1/messages/{message_id}")).json()["deliveries"][0]["timeline"]
    assert [e["status"] for e in timeline].count("unsubscribed") == 1
    funnel = (await api.get("/v1/analytics/funnel", params={"template": "promo"})).json()["total"]
    assert funnel["stages"]["unsubscribed"] == 1
    assert funnel["rates"]["unsubscribe_rate"]["numerator"] == 1


async def test_an_old_link_without_a_delivery_still_unsubscribes_and_fires_only_rules_for_any_message(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    message_id, _ = await _marketing_email(api, clarion)
    await put_rule(api, "promo-only", on="unsubscribe", match={"template": "promo"}, actions=[{"add_tag": "a"}])
    await put_rule(api, "any", on="unsubscribe", actions=[{"add_tag": "b"}])
    await put_rule(api, "off", on="unsubscribe", actions=[{"add_tag": "c"}], enabled=False)

    assert "You are unsubscribed" in (await public.post(_link(clarion, None))).text

    assert await tags(api, "u1") == ["reader", "b"]
    assert [f["rule"] for f in await firings(api, "u1")] == ["any"]
    funnel = (await api.get("/v1/analytics/funnel", params={"template": "promo"})).json()["total"]
    assert funnel["stages"]["unsubscribed"] == 0
    timeline = (await api.get(f"/v1/messages/{message_id}")).json()["deliveries"][0]["timeline"]
    assert "unsubscribed" not in [e["status"] for e in timeline]


async def test_a_disabled_rule_does_nothing_and_a_deleted_one_keeps_its_firings(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await put_user(api, "u1", addresses={"sms": "+8613800138001"})
    await put_template(api, "spring", channels={"sms": {"text": "春季 {data.n} https://shop.example.com/new"}})
    await put_rule(api, "clicked", on="click", actions=[{"add_tag": "curious"}], enabled=False)
    await send(api, "spring", ["u1"], data={"n": 1})
    await drain(clarion)
    [code] = codes(clarion, "u1")
    assert (await public.get(f"/s/{code}")).status_code == 302
    assert await tags(api, "u1") == [] and await firings(api, "u1") == []

    await put_rule(api, "clicked", on="click", actions=[{"add_tag": "curious"}])
    await send(api, "spring", ["u1"], data={"n": 2})
    await drain(clarion)
    [_, code] = codes(clarion, "u1")
    assert (await public.get(f"/s/{code}")).status_code == 302
    assert await tags(api, "u1") == ["curious"]
    assert (await api.delete("/v1/feedback-rules/clicked")).status_code == 204
    assert [f["rule"] for f in await firings(api, "u1")] == ["clicked"]


async def test_two_transactions_firing_a_rule_for_one_message_record_it_once(clarion: bootstrap.Clarion) -> None:
    """Two links of one message clicked at the same moment both see no firing: the store keeps one, and a firing
    of no message (a tracked event that converted none) may repeat."""
    now = datetime.now(UTC)

    def firing(message_id: str | None) -> dict[str, Any]:
        return {"rule_key": "r", "user_id": "u1", "message_id": message_id, "trigger": "click", "detail": {}, "at": now}

    async def job(conn: AsyncConnection) -> None:
        await store_feedback.record_firings(conn, [firing("m1"), firing(None)])

    await clarion.db.write(job)
    await clarion.db.write(job)
    async with clarion.db.read() as conn:
        rows = await store_feedback.firings_of(conn, "u1", limit=10)
    assert sorted((r.message_id or "") for r in rows) == ["", "", "m1"]
