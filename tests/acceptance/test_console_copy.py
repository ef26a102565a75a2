"""The console's "Draft with AI" panel, over httpx against the app, with the model an OpenAI-compatible server on
loopback that checks every request (key, model, the brief between its tags, a strict schema) and answers from a
script: the brief form, the drafts with every check's result and rendered for users of the segment, the ticked
drafts kept as the variants of a new version under review (origin, prompt and raw answer stored, audited under
the operator), and what an operator sees when no model is configured, when the model times out, for bad input
and for a role that does not write templates."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from clarion import bootstrap
from clarion.settings import Settings
from clarion.store import tables as t
from tests.acceptance.console_client import page, post, signed_in
from tests.conftest import put_template, put_user
from tests.fakes.openai_server import API_KEY, MODEL, FakeOpenAI, Turn, brief_of, draft, drafts

WARM = draft(
    "warm",
    "按年龄分两种说法",
    sms={"text": "{name}，双十一预热：<#if user.age gt 30>稳重之选<#else>潮流之选</#if>，满600减120"},
    push={"title": "双十一预热开始", "body": "云感羽绒服满减进行中"},
)
URGENT = draft(
    "urgent",
    "库存紧迫感",
    sms={"text": "{name}，您关注的羽绒服仅剩最后几件，满600减120"},
    push={"title": "仅剩最后几件", "body": "满600减120，手慢无"},
)
BROKEN = draft("branch", sms={"text": "{name}\n<#if user.age gt 30>稳重之选"}, push={"title": "a", "body": "b"})
BRIEF = {
    "product": "云感羽绒服，899元，90%白鸭绒",
    "offer": "满300减50，满600减120",
    "campaign": "双十一预热",
    "segment": "shoppers",
    "audience": "加购过冬装的老客",
    "channel.sms": "1",
    "channel.push": "1",
    "tone": "热情",
    "length": "short",
    "language": "zh-CN",
    "conditions": "1",
    "n": "3",
}
_TOKEN = re.compile(r'name="generation" value="([^"]+)"')


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
def model_configured() -> bool:
    return True


@pytest.fixture
def settings(settings: Settings, fake: FakeOpenAI, model_configured: bool) -> Settings:
    if not model_configured:
        return settings
    update = {
        "llm_url": fake.url,
        "llm_api_key": SecretStr(API_KEY),
        "llm_model": MODEL,
        "llm_timeout_seconds": 0.5,
        "llm_max_attempts": 2,
    }
    return settings.model_copy(update=update)


@pytest.fixture
async def festival(api: httpx.AsyncClient) -> None:
    """Four shoppers (two over 30), their segment, and the marketing template being edited (SMS with its
    signature, and an email the drafts do not write)."""
    for i, age in enumerate((25, 28, 35, 52)):
        await put_user(api, f"s{i}", attributes={"name": f"顾客{i}", "age": age}, tags=["shopper"])
    answer = await api.put("/v1/segments/shoppers", json={"conditions": {"tag": "shopper"}})
    assert answer.status_code in (200, 201), answer.text
    channels = {
        "sms": {"text": "{name}，冬装上新", "signature": "优选商城"},
        "email": {"subject": "冬装", "text": "上新"},
    }
    await put_template(api, "festival", category="marketing", owner="growth", channels=channels)


def token_of(shown: str) -> str:
    found = _TOKEN.search(shown)
    assert found, "the page has no drafts to keep"
    return html.unescape(found[1])


def draft_card(shown: str, index: int) -> str:
    found = re.search(rf'<article class="card draft" id="draft-{index}".*?</article>', shown, re.S)
    assert found, f"no draft {index} on the page"
    return found[0]


async def versions(api: httpx.AsyncClient, key: str) -> list[dict[str, Any]]:
    answer = await api.get(f"/v1/templates/{key}/versions")
    return list(answer.json()["versions"]) if answer.status_code == 200 else []


async def test_the_drafts_show_their_checks_and_the_ticked_ones_become_variants_under_review(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient, fake: FakeOpenAI, festival: None
) -> None:
    # the third draft does not parse, is written again twice, and stays broken
    one_broken = drafts(draft("branch", sms=BROKEN["sms"], push=BROKEN["push"]))
    scripted = drafts(WARM, URGENT, BROKEN)
    fake.add(scripted, one_broken, one_broken)
    async with signed_in(clarion, "ed", "editor") as ed:
        editor = await page(ed, "/console/templates/festival")
        assert 'href="/console/templates/festival/copy"' in editor
        form = await page(ed, "/console/templates/festival/copy")
        assert 'value="shoppers"' in form and 'id="channel-sms" value="1" checked' in form
        shown = await post(ed, "/console/templates/festival/copy", BRIEF, from_page="/console/templates/festival/copy")
        assert shown.status_code == 200, shown.text[:3000]
        text = shown.text
        # the console called the use case: the brief went to the model as data, for the segment's audience
        sent = brief_of(fake.accepted[0])
        assert sent["product"] == BRIEF["product"] and sent["audience_summary"]["size"] == 4
        warm, urgent, broken = (draft_card(text, i) for i in range(3))
        assert 'data-status="ok"' in warm and 'data-status="ok"' in urgent and 'data-status="broken"' in broken
        assert "tries: 3" in broken
        assert "Syntax error in sms.text at line 2, column 1: unclosed &lt;#if&gt;" in broken
        assert 'name="keep.2" id="keep-2" value="1" disabled' in broken
        assert "name, user.age" in warm  # its variables
        assert "<code>user.age gt 30</code>: 50.0%" in warm and "otherwise: 50.0%" in warm
        assert "1 of at most 1 segment(s)" in warm and "UCS-2" in warm
        assert "title 7 of 40 characters, body 10 of 100" in warm
        # rendered for users of the segment, each in the branch that is theirs
        assert warm.count('class="preview-user" data-user="s') == 3
        assert "顾客0，双十一预热：潮流之选，满600减120" in warm

        token = token_of(text)
        kept = await post(
            ed,
            "/console/templates/festival/copy/keep",
            {"generation": token, "keep.0": "1", "keep.1": "1", "keep.2": "1"},
            from_page="/console/templates/festival",
        )
        assert (kept.status_code, kept.headers["location"]) == (303, "/console/templates/festival?saved=2")
        after = await page(ed, kept.headers["location"])
        assert "Saved as version 2." in after
    latest, _ = await versions(api, "festival")
    assert (latest["version"], latest["status"], latest["author"]) == (2, "pending_review", "operator:ed")
    template = (await api.get("/v1/templates/festival/versions/2")).json()["body"]
    assert [(v["name"], v["weight"]) for v in template["variants"]] == [("warm", 1), ("urgent", 1)]  # not the broken
    assert template["variants"][1]["channels"]["sms"] == {"text": URGENT["sms"]["text"], "signature": "优选商城"}
    assert template["channels"]["sms"]["text"] == WARM["sms"]["text"]
    assert template["channels"]["email"] == {"subject": "冬装", "text": "上新"}  # what the drafts do not write is kept
    assert (template["owner"], template["category"]) == ("growth", "marketing")
    async with clarion.db.read() as conn:
        v = t.template_versions.c
        origin = (await conn.execute(sa.select(v.origin).where(v.template_key == "festival", v.version == 2))).scalar()
        audit = (await conn.execute(sa.select(t.audit_log).order_by(t.audit_log.c.id))).all()
        calls = (await conn.execute(sa.select(t.llm_calls.c.id).order_by(t.llm_calls.c.id))).scalars().all()
    assert origin["kind"] == "llm" and origin["model"] == MODEL
    assert origin["prompt"] == fake.accepted[0]["messages"] and origin["raw"] == scripted.content
    assert origin["call"] == calls[0] and [r["call"] for r in origin["regenerations"]] == calls[1:]
    assert [(a.action, a.subject, a.actor) for a in audit][-2:] == [
        ("template.save", "template:festival@2", "operator:ed"),
        ("template.submit", "template:festival@2", "operator:ed"),
    ]
    assert audit[-2].detail["origin"] == "llm" and audit[-2].detail["calls"] == calls
    assert audit[-2].detail["variants"] == 2


async def test_a_new_template_from_the_list_keeps_one_draft_as_its_content(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient, fake: FakeOpenAI, festival: None
) -> None:
    fake.add(drafts(WARM, URGENT))
    brief = {**BRIEF, "n": "2", "key": "winter", "name": "冬季 AI 文案", "category": "marketing"}
    async with signed_in(clarion, "ed", "editor") as ed:
        assert 'href="/console/templates/new/copy"' in await page(ed, "/console/templates")
        shown = await post(ed, "/console/templates/new/copy", brief, from_page="/console/templates/new/copy")
        assert shown.status_code == 200, shown.text[:3000]
        kept = await post(
            ed,
            "/console/templates/new/copy/keep",
            {"generation": token_of(shown.text), "keep.1": "1"},
            from_page="/console/templates/new/copy",
        )
        assert (kept.status_code, kept.headers["location"]) == (303, "/console/templates/winter?saved=1")
        again = await post(
            ed,
            "/console/templates/new/copy/keep",
            {"generation": token_of(shown.text), "keep.0": "1"},
            from_page="/console/templates/new/copy",
        )
        assert again.status_code == 422 and "a template &#39;winter&#39; already exists" in again.text
    saved = (await api.get("/v1/templates/winter")).json()
    assert (saved["name"], saved["status"], saved["variants"]) == ("冬季 AI 文案", "pending_review", None)
    assert saved["channels"] == {"sms": URGENT["sms"], "push": URGENT["push"]}


async def test_bad_input_is_refused_naming_the_field_before_the_model_is_asked(
    clarion: bootstrap.Clarion, fake: FakeOpenAI, festival: None
) -> None:
    at = "/console/templates/festival/copy"
    async with signed_in(clarion, "ed", "editor") as ed:
        for change, words in (
            ({"channel.sms": "", "channel.push": ""}, "channels: tick one or more channels"),
            ({"n": "9"}, "n: Input should be less than or equal to 5"),
            ({"n": "two"}, "n: a whole number of drafts from 1 to 5"),
            ({"product": " "}, "product: describe the product"),
            ({"length": "epic"}, "length: Input should be"),
            ({"segment": "nobody"}, "brief.audience.segment: no segment named &#39;nobody&#39;"),
        ):
            refused = await post(ed, at, {**BRIEF, **change}, from_page=at)
            assert refused.status_code == 422, (change, refused.status_code)
            assert words in refused.text, (change, refused.text[:3000])
            assert 'id="brief-error"' in refused.text and "满300减50，满600减120" in refused.text  # still typed
        new = "/console/templates/new/copy"
        taken = await post(ed, new, {**BRIEF, "key": "festival"}, from_page=new)
        assert taken.status_code == 422 and "key: a template &#39;festival&#39; already exists" in taken.text
        bad_key = await post(ed, new, {**BRIEF, "key": "a b"}, from_page=new)
        assert bad_key.status_code == 422 and "key: 1 to 128 letters" in bad_key.text
        no_csrf = await ed.post(at, data=BRIEF)
        assert no_csrf.status_code == 403
        forged = await post(ed, f"{at}/keep", {"generation": "forged", "keep.0": "1"}, from_page=at)
        assert forged.status_code == 422 and "generation: these drafts are too old" in forged.text
        assert (await page(ed, "/console/templates/missing/copy", 404)) is not None
    assert fake.accepted == []


async def test_drafts_are_kept_only_by_whom_and_for_the_template_they_were_written(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient, fake: FakeOpenAI, festival: None
) -> None:
    await put_template(api, "other", category="marketing", channels={"sms": {"text": "x"}})
    fake.add(drafts(WARM, URGENT))
    async with signed_in(clarion, "ed", "editor") as ed:
        at = "/console/templates/festival/copy"
        token = token_of((await post(ed, at, {**BRIEF, "n": "2"}, from_page=at)).text)
        elsewhere = await post(
            ed, "/console/templates/other/copy/keep", {"generation": token, "keep.0": "1"}, from_page=at
        )
        assert elsewhere.status_code == 422
        nothing = await post(ed, f"{at}/keep", {"generation": token}, from_page=at)
        assert nothing.status_code == 422 and "keep: tick one or more" in nothing.text
    async with signed_in(clarion, "ada", "admin") as ada:
        theirs = await post(ada, f"{at}/keep", {"generation": token, "keep.0": "1"}, from_page="/console/templates")
        assert theirs.status_code == 422 and "not written for you" in theirs.text
    assert [v["version"] for v in await versions(api, "festival")] == [1]
    assert [v["version"] for v in await versions(api, "other")] == [1]


async def test_only_editors_and_admins_see_the_panel(
    clarion: bootstrap.Clarion, fake: FakeOpenAI, festival: None
) -> None:
    async with signed_in(clarion, "ann", "approver") as ann:
        assert "/copy" not in await page(ann, "/console/templates/festival")
        assert "/copy" not in await page(ann, "/console/templates")
        await page(ann, "/console/templates/festival/copy", 403)
        refused = await post(ann, "/console/templates/festival/copy", BRIEF, from_page="/console/templates")
        assert refused.status_code == 403
        kept = await post(
            ann, "/console/templates/festival/copy/keep", {"generation": "x"}, from_page="/console/templates"
        )
        assert kept.status_code == 403
    async with signed_in(clarion, "sue", "support") as sue:
        await page(sue, "/console/templates/festival/copy", 403)
    async with signed_in(clarion, "ada", "admin") as ada:
        assert 'href="/console/templates/festival/copy"' in await page(ada, "/console/templates/festival")
        await page(ada, "/console/templates/festival/copy")
    assert fake.accepted == []


@pytest.mark.parametrize("model_configured", [False])
async def test_without_a_model_the_panel_says_how_to_configure_one(
    clarion: bootstrap.Clarion, fake: FakeOpenAI, festival: None
) -> None:
    at = "/console/templates/festival/copy"
    async with signed_in(clarion, "ed", "editor") as ed:
        shown = await page(ed, at)
        assert 'id="not-configured"' in shown and "CLARION_LLM_URL" in shown
        assert 'id="draft" disabled' in shown
        refused = await post(ed, at, BRIEF, from_page=at)
        assert refused.status_code == 503
        assert 'id="model-error"' in refused.text and "CLARION_LLM_URL" in refused.text
    async with signed_in(clarion, "ed2", "editor", language="zh-CN") as ed2:
        shown = await page(ed2, at)
        assert "未配置语言模型" in shown and "用 AI 起草" in shown
    assert fake.accepted == []


async def test_a_model_that_times_out_shows_a_clear_message_and_saves_nothing(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient, fake: FakeOpenAI, festival: None
) -> None:
    fake.add(Turn(delay=1.5), Turn(delay=1.5))
    at = "/console/templates/festival/copy"
    async with signed_in(clarion, "ed", "editor") as ed:
        failed = await post(ed, at, BRIEF, from_page=at)
    assert failed.status_code == 504
    assert "The model did not answer in time. Nothing was saved" in failed.text
    assert "云感羽绒服，899元" in failed.text and 'name="generation"' not in failed.text
    assert [v["version"] for v in await versions(api, "festival")] == [1]
    fake.add(Turn("overloaded", status=503), Turn("overloaded", status=503))
    async with signed_in(clarion, "ed2", "editor") as ed2:
        failed = await post(ed2, at, BRIEF, from_page=at)
    assert failed.status_code == 503 and "The model is unavailable" in failed.text
    assert [v["version"] for v in await versions(api, "festival")] == [1]
