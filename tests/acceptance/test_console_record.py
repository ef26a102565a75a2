"""The send record (客服查询) in the console: support finds a user by phone, e-mail or id, reads their messages
newest first with addresses masked (in full to admins only), reads a message's timeline in plain words, and
re-sends a failed verification code through the API's own re-send, audited under the operator."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import pytest

from clarion import bootstrap
from tests.acceptance.console_client import page, post, signed_in
from tests.acceptance.test_e2e_channels import put_provider
from tests.conftest import drain, put_template, put_user, set_approval, set_policies
from tests.integration.loopback import LoopbackServer, Reply

PHONE = "+8613800138000"
ZONE = "Asia/Shanghai"


def closed_window(now: datetime) -> str:
    """A sending window that opens two hours from ``now`` in Shanghai: whatever the hour, a send now waits."""
    local = now.astimezone(ZoneInfo(ZONE))
    opens, closes = local + timedelta(hours=2), local + timedelta(hours=3)
    return f"{opens:%H:00}-{closes:%H:00}"


@pytest.fixture
async def vendor() -> AsyncIterator[LoopbackServer]:
    """An SMS vendor that refuses every message (400) until the test says otherwise."""
    async with LoopbackServer(default=Reply(400, {"error": "invalid signature"})) as server:
        yield server


@pytest.fixture
async def sent(api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor: LoopbackServer) -> dict[str, str]:
    """u1 (a phone and an e-mail, in Shanghai) was sent a notice that the sending window holds back, then a
    verification code that the vendor refused, and a marketing offer. Returns the message ids by template."""
    config = {"url": f"{vendor.url}/v1/sms", "allow_private_networks": True, "message_id_path": "data.id"}
    await put_provider(api, "aliyun-a", "sms", "sms_http", config)
    await put_user(api, "u1", addresses={"sms": PHONE, "email": "wang.li@example.com"}, timezone=ZONE)
    await put_user(api, "u2", addresses={"sms": "+8613900139000"})
    await put_template(api, "notice", category="notification", channels={"sms": {"text": "Parcel {data.n}"}})
    await put_template(api, "code", category="verification", channels={"sms": {"text": "验证码 {data.code}"}})
    await put_template(api, "offer", category="marketing", channels={"sms": {"text": "50% off"}})
    await set_approval(clarion, levels={})
    await set_policies(clarion, send_windows={"notification": closed_window(datetime.now(UTC))})
    ids = {
        "notice": await _send(api, "notice", "u1", {"n": 7}),
        "code": await _send(api, "code", "u1", {"code": "4711"}),
        "offer": await _send(api, "offer", "u1", {}),
    }
    await drain(clarion)
    return ids


async def _send(api: httpx.AsyncClient, template: str, user: str, data: dict[str, Any]) -> str:
    answer = await api.post("/v1/messages", json={"template": template, "to": user, "data": data})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["messages"][0]["id"])


async def test_support_finds_a_user_by_phone_email_or_id_and_reads_masked_addresses(
    clarion: bootstrap.Clarion, sent: dict[str, str]
) -> None:
    async with signed_in(clarion, "sue", "support") as sue:
        for typed in ("13800138000", "+86 138 0013 8000", "Wang.Li@example.com", "u1"):
            found = await page(sue, f"/console/record?q={quote(typed)}")
            assert "User u1" in found, typed
            addresses = found[found.index('<dl class="addresses">') :].split("</dl>")[0]
            assert "138****8000" in addresses and "w***@example.com" in addresses
            assert "13800138000" not in addresses and "wang.li@" not in addresses
        listed = await page(sue, "/console/record?user=u1")
        rows = [sent[k] for k in ("offer", "code", "notice")]  # newest first
        positions = [listed.index(f"/console/messages/{m}") for m in rows]
        assert positions == sorted(positions)
        failed_only = await page(sue, "/console/record?user=u1&status=failed")
        assert sent["code"] in failed_only and sent["notice"] not in failed_only
        assert "No user matches" in await page(sue, "/console/record?q=13700000000")
        bad = await sue.get("/console/record?user=u1&status=lost")
        assert bad.status_code == 422 and "status" in bad.text
    async with signed_in(clarion, "ada", "admin") as ada:
        shown = await page(ada, "/console/record?q=13800138000")
        assert f'<dd class="address">{PHONE}</dd>' in shown


async def test_a_message_held_by_the_sending_window_says_so_in_plain_words(
    clarion: bootstrap.Clarion, sent: dict[str, str]
) -> None:
    async with signed_in(clarion, "sue", "support", language="en") as sue:
        shown = await page(sue, f"/console/messages/{sent['notice']}")
        assert re.search(r"Held by quiet hours until \d{4}-\d\d-\d\d \d\d:00 Asia/Shanghai", shown), shown
        assert 'id="resend"' not in shown  # deferred, not failed: nothing to re-send
    async with signed_in(clarion, "li", "support", language="zh-CN,zh;q=0.9") as li:
        shown = await page(li, f"/console/messages/{sent['notice']}")
        assert re.search(r"因免打扰时段暂缓，将于 \d{4}-\d\d-\d\d \d\d:00 Asia/Shanghai 发送", shown)


async def test_support_re_sends_a_failed_verification_code_audited_under_its_name(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, sent: dict[str, str], vendor: LoopbackServer
) -> None:
    code = sent["code"]
    async with signed_in(clarion, "sue", "support") as sue:
        shown = await page(sue, f"/console/messages/{code}")
        assert "Failed: " in shown and 'id="resend"' in shown
        vendor.default = Reply(200, {"data": {"id": "vendor-2"}})
        answer = await post(
            sue, f"/console/messages/{code}/resend", {"reason": "user called"}, from_page=f"/console/messages/{code}"
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/console/messages/{code}?resent=queued"
        assert await drain(clarion) == 1
        shown = await page(sue, answer.headers["location"])
        assert "Re-sent at the request of operator:sue: user called" in shown
        assert "Sent through aliyun-a" in shown or "Delivered, receipt from aliyun-a" in shown
        missing = await post(
            sue, f"/console/messages/{code}/resend", {"reason": ""}, from_page=f"/console/messages/{code}"
        )
        assert missing.status_code == 422 and "reason" in missing.text
    entries = (await api.get("/v1/audit", params={"subject": f"message:{code}"})).json()["entries"]
    assert [(e["action"], e["actor"]) for e in entries] == [("message.resend", "operator:sue")]
    assert "4711" in vendor.requests[-1].body.decode()  # the code went out again, the same code


async def test_support_may_not_re_send_marketing_and_an_approver_re_sends_nothing(
    clarion: bootstrap.Clarion, sent: dict[str, str]
) -> None:
    async with signed_in(clarion, "sue", "support") as sue:
        offer = f"/console/messages/{sent['offer']}"
        assert 'id="resend"' not in await page(sue, offer)
        refused = await post(sue, f"{offer}/resend", {"reason": "why not"}, from_page=offer)
        assert refused.status_code == 403
    async with signed_in(clarion, "ana", "approver") as ana:
        code = f"/console/messages/{sent['code']}"
        assert 'id="resend"' not in await page(ana, code)
        assert (await post(ana, f"{code}/resend", {"reason": "x"}, from_page=code)).status_code == 403


async def test_the_overview_draws_the_days_sends_and_the_providers(
    clarion: bootstrap.Clarion, sent: dict[str, str]
) -> None:
    async with signed_in(clarion, "olga", "sender") as olga:
        shown = await page(olga, "/console/")
        assert shown.count("<svg") >= 3
        assert "aliyun-a" in shown
        assert "No urgent delivery is waiting." in shown


async def test_support_adds_the_user_to_the_suppression_list_and_the_next_message_is_filtered(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, sent: dict[str, str]
) -> None:
    record = "/console/record?user=u1"
    async with signed_in(clarion, "sue", "support") as sue:
        bad = await post(sue, "/console/record/u1/suppressions", {"channel": "fax"}, from_page=record)
        assert bad.status_code == 422 and "channel" in bad.text
        form = {"channel": "sms", "category": "", "reason": "asked by phone to stop"}
        answer = await post(sue, "/console/record/u1/suppressions", form, from_page=record)
        assert answer.status_code == 303
        assert "Added to the suppression list." in await page(sue, answer.headers["location"])
    listed = (await api.get("/v1/suppressions", params={"user_id": "u1"})).json()["suppressions"]
    assert [(s["channel"], s["reason"], s["source"]) for s in listed] == [
        ("sms", "asked by phone to stop", "user_request")
    ]
    entries = (await api.get("/v1/audit", params={"subject": "user:u1"})).json()["entries"]
    assert [(e["action"], e["actor"]) for e in entries] == [("suppression.add", "operator:sue")]
    answer = await api.post("/v1/messages", json={"template": "code", "to": "u1", "data": {"code": "1"}})
    assert answer.json()["messages"][0]["status"] == "filtered"
    async with signed_in(clarion, "ana", "approver") as ana:
        assert 'id="suppress"' not in await page(ana, record)
        refused = await post(ana, "/console/record/u1/suppressions", {"channel": "sms"}, from_page=record)
        assert refused.status_code == 403
