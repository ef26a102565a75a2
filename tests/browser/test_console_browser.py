"""Operators' flows through the console in a real browser (Chromium, headless), against a real ``clarion api``.

- Security: every page sends a browser without a session to the login page; a form posted without its CSRF
  token is refused; a ``support`` operator gets 403 on an admin's page; wrong passwords get throttled.
- Support: search a user by phone, open a message that the sending window holds back and read why in plain
  words, re-send a verification code the SMS vendor refused."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from clarion import bootstrap
from clarion.console import roles
from tests.acceptance.console_client import PASSWORD, make_operator
from tests.acceptance.test_console_record import PHONE, ZONE, closed_window
from tests.browser.conftest import Screen
from tests.conftest import API_KEY, drain
from tests.integration.loopback import LoopbackServer, Reply

#: every page of the navigation, and pages reached from them
PAGES = [path for _, path in roles.NAVIGATION] + [
    "/console/messages/m1",
    "/console/account",
    "/console/templates/t1",
    "/console/campaigns/c1",
    "/console/users/u1/preferences",
]


async def test_security_sessions_csrf_roles_and_throttling(clarion: bootstrap.Clarion, screen: Screen) -> None:
    await make_operator(clarion, "ada", "admin")
    await make_operator(clarion, "sue", "support")
    page = screen.page
    for path in PAGES:
        await screen.open(path)
        assert "/console/login?next=" in page.url, path
        assert await page.locator("#login").is_visible()
    await screen.shoot("login")

    await screen.login("sue", PASSWORD)
    assert page.url.endswith("/console/record")
    async with screen.refused(403):
        refused = await screen.open("/console/operators")
    assert refused.status == 403
    assert "Not allowed" in await page.inner_text("h1")
    await screen.shoot("forbidden")

    await screen.open("/console/record")
    await page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())")
    async with screen.refused(403), page.expect_navigation() as navigation:
        await page.click("#logout")
    assert (await navigation.value).status == 403
    assert "CSRF" in await page.inner_text("main")
    await screen.open("/console/record")
    await page.click("#logout")
    await page.wait_for_url(re.compile(r".*/console/login$"))

    for _ in range(5):
        async with screen.refused(401):
            await screen.login("ada", "not the password")
        assert "Wrong name or password" in await page.inner_text("main")
    async with screen.refused(429):
        await screen.login("ada", PASSWORD)
    assert "Too many failed logins" in await page.inner_text("main")
    await screen.shoot("throttled")


async def test_admin_sees_the_overview_and_the_operators(clarion: bootstrap.Clarion, screen: Screen) -> None:
    await make_operator(clarion, "ada", "admin")
    await screen.login("ada", PASSWORD)
    assert screen.page.url.endswith("/console/")
    assert await screen.page.locator("svg.chart, p.muted").count() >= 4
    await screen.shoot("overview")
    await screen.open("/console/operators")
    await screen.page.fill("form[action='/console/operators'] input[name=name]", "sue")
    await screen.page.select_option("select[name=role]", "support")
    await screen.page.fill("form[action='/console/operators'] input[name=password]", "a long password")
    await screen.page.click("form[action='/console/operators'] button")
    await screen.page.wait_for_load_state()
    assert "sue" in await screen.page.inner_text("table")
    await screen.shoot("operators")
    await screen.page.click("button[lang=zh-CN]")
    await screen.page.wait_for_load_state()
    assert "操作员" in await screen.page.inner_text("h1")
    await screen.shoot("operators-zh")


def _api(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {API_KEY}"})


def _put(client: httpx.Client, path: str, body: dict[str, Any]) -> None:
    answer = client.put(path, json=body)
    assert answer.status_code in (200, 201), answer.text


def _send(client: httpx.Client, template: str, data: dict[str, Any]) -> str:
    answer = client.post("/v1/messages", json={"template": template, "to": "u1", "data": data})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["messages"][0]["id"])


@pytest.fixture
async def vendor() -> Any:
    async with LoopbackServer(default=Reply(400, {"error": "invalid signature"})) as server:
        yield server


async def test_support_finds_a_user_reads_why_and_re_sends_a_failed_code(
    clarion: bootstrap.Clarion, screen: Screen, vendor: LoopbackServer
) -> None:
    with _api(screen.base) as api:
        config = {"url": f"{vendor.url}/v1/sms", "allow_private_networks": True, "message_id_path": "data.id"}
        _put(api, "/v1/providers/aliyun-a", {"channel": "sms", "kind": "sms_http", "config": config})
        _put(api, "/v1/users/u1", {"addresses": {"sms": PHONE}, "timezone": ZONE})
        notice = {"name": "notice", "category": "notification", "channels": {"sms": {"text": "Parcel {data.n}"}}}
        _put(api, "/v1/templates/notice", notice)
        code = {"name": "code", "category": "verification", "channels": {"sms": {"text": "验证码 {data.code}"}}}
        _put(api, "/v1/templates/code", code)
        _put(api, "/v1/policies/settings", {"send_windows": {"notification": closed_window(datetime.now(UTC))}})
        held = _send(api, "notice", {"n": 7})
        failed = _send(api, "code", {"code": "4711"})
    await drain(clarion)  # the code goes to the vendor, which refuses it
    await make_operator(clarion, "sue", "support")
    page = screen.page

    await screen.login("sue", PASSWORD)
    await page.fill("#q", "138 0013 8000")
    await page.click("#search")
    await page.wait_for_load_state()
    assert "138****8000" in await page.inner_text("dl.addresses")
    await screen.shoot("record")

    await page.click(f"a[href='/console/messages/{held}']")
    await page.wait_for_load_state()
    timeline = await page.inner_text("ol.timeline")
    assert re.search(r"Held by quiet hours until \d{4}-\d\d-\d\d \d\d:00 Asia/Shanghai", timeline), timeline
    await screen.shoot("message-held")

    await page.go_back()
    await page.click(f"a[href='/console/messages/{failed}']")
    await page.wait_for_load_state()
    assert "Failed:" in await page.inner_text("ol.timeline")
    vendor.default = Reply(200, {"data": {"id": "vendor-2"}})
    await page.fill("#reason", "the user called: no code")
    await page.click("#resend")
    await page.wait_for_load_state()
    assert "Re-sent: queued" in await page.inner_text("main")
    assert await drain(clarion) == 1
    await page.reload()
    text = await page.inner_text("main")
    assert "Re-sent at the request of operator:sue: the user called: no code" in text
    assert "aliyun-a" in text
    await screen.shoot("message-resent")
    assert "4711" in vendor.requests[-1].body.decode()
