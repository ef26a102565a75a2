"""Draft with AI, in a real browser: an editor opens the panel from the template editor, fills in the brief for a
saved segment, sees the drafts the model (an OpenAI-compatible server on loopback, checking the key, the model,
the brief between its tags and the strict schema) wrote with every check's result and rendered for the
segment's users, ticks two and keeps them; the template then has a new version waiting for review whose
variants are those two, written by the AI. An approver is offered no panel and is refused its page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from clarion import bootstrap
from clarion.settings import Settings
from clarion.store import tables as t
from tests.acceptance.console_client import PASSWORD, make_operator
from tests.acceptance.test_console_copy import BROKEN, URGENT, WARM
from tests.browser.conftest import Screen
from tests.browser.test_console_browser import _api, _put
from tests.browser.test_console_templates import sign_in_as
from tests.fakes.openai_server import API_KEY, MODEL, FakeOpenAI, brief_of, draft, drafts


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
def settings(settings: Settings, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The suite's settings with the loopback model, also in the environment the ``clarion api`` process gets."""
    for name, value in (("URL", fake.url), ("API_KEY", API_KEY), ("MODEL", MODEL), ("TIMEOUT_SECONDS", "10")):
        monkeypatch.setenv(f"CLARION_LLM_{name}", value)
    return settings.model_copy(update={"llm_url": fake.url, "llm_api_key": SecretStr(API_KEY), "llm_model": MODEL})


async def test_draft_with_ai_and_keep_two_drafts_as_variants(
    clarion: bootstrap.Clarion, screen: Screen, fake: FakeOpenAI, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    with _api(screen.base) as api:
        for i, age in enumerate((25, 28, 35, 52)):
            _put(api, f"/v1/users/s{i}", {"attributes": {"name": f"顾客{i}", "age": age}, "tags": ["shopper"]})
        _put(api, "/v1/segments/shoppers", {"conditions": {"tag": "shopper"}})
        _put(
            api,
            "/v1/templates/festival",
            {"name": "双十一预热", "category": "marketing", "channels": {"sms": {"text": "{name}，冬装上新"}}},
        )
    one_broken = drafts(draft("branch", sms=BROKEN["sms"], push=BROKEN["push"]))
    fake.add(drafts(WARM, URGENT, BROKEN), one_broken, one_broken)
    for name, role in (("ed", "editor"), ("ann", "approver")):
        await make_operator(clarion, name, role)
    page = screen.page

    await screen.login("ed", PASSWORD)
    await screen.open("/console/templates/festival")
    await page.click("#draft-with-ai")
    await page.wait_for_url("**/console/templates/festival/copy")
    await expect(page.locator("#channel-sms")).to_be_checked()  # the template's channel, ticked for you
    await page.fill("#product", "云感羽绒服，899元，90%白鸭绒，轻至380克")
    await page.fill("#offer", "满300减50，满600减120")
    await page.fill("#campaign", "双十一预热：阶梯优惠预告")
    await page.select_option("#segment", "shoppers")
    await page.fill("#audience", "加购过冬装、对价格敏感的老客")
    await page.check("#channel-push")
    await page.fill("#tone", "热情、紧迫但不夸张")
    await page.check("#length-short")
    await page.select_option("#language", "zh-CN")
    await expect(page.locator("#conditions")).to_be_checked()
    await page.fill("#n", "3")
    async with page.expect_navigation():
        await page.click("#draft")

    warm, urgent, broken = (page.locator(f"#draft-{i}") for i in range(3))
    await expect(warm.locator(".draft-status")).to_have_text("ok")
    await expect(urgent.locator(".draft-status")).to_have_text("ok")
    await expect(broken.locator(".draft-status")).to_have_text("broken")
    await expect(broken.locator(".problem")).to_contain_text("Syntax error in sms.text at line 2, column 1")
    await expect(broken.locator("#keep-2")).to_be_disabled()
    await expect(warm.locator(".branches")).to_contain_text("user.age gt 30: 50.0%")
    await expect(warm.locator(".sms-facts")).to_contain_text("1 of at most 1 segment(s)")
    await expect(warm.locator(".push-facts")).to_contain_text("title 7 of 40 characters")
    await expect(warm.locator("[data-user=s0]")).to_contain_text("顾客0，双十一预热：潮流之选")
    await expect(warm.locator("[data-user=s2]")).to_contain_text("顾客2，双十一预热：稳重之选")
    assert brief_of(fake.accepted[0])["audience"] == "加购过冬装、对价格敏感的老客"
    await expect(page.locator("#keep-drafts")).to_be_disabled()  # nothing ticked yet
    await screen.shoot("drafts")

    await page.check("#keep-0")
    await page.check("#keep-1")
    async with page.expect_navigation(url="**/console/templates/festival?saved=2"):
        await page.click("#keep-drafts")
    await expect(page.locator("#review-status")).to_have_text("pending review")
    await screen.shoot("kept")

    with _api(screen.base) as api:
        listed = api.get("/v1/templates/festival/versions").json()["versions"]
        body = api.get("/v1/templates/festival/versions/2").json()["body"]
    assert [(v["version"], v["status"], v["author"]) for v in listed] == [
        (2, "pending_review", "operator:ed"),
        (1, "draft", "bootstrap"),
    ]
    assert [(v["name"], v["weight"]) for v in body["variants"]] == [("warm", 1), ("urgent", 1)]
    assert body["variants"][1]["channels"]["push"] == URGENT["push"]
    async with clarion.db.read() as conn:
        v = t.template_versions.c
        origin = (await conn.execute(sa.select(v.origin).where(v.template_key == "festival", v.version == 2))).scalar()
    assert (origin["kind"], origin["model"], len(origin["regenerations"])) == ("llm", MODEL, 2)

    await sign_in_as(screen, "ann")
    await screen.open("/console/templates/festival")
    assert await page.locator("#draft-with-ai").count() == 0
    async with screen.refused(403):
        refused = await screen.open("/console/templates/festival/copy")
    assert refused.status == 403
