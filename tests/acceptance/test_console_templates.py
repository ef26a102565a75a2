"""The console's templates pages: the list, the per-channel editor saving through the API's use case, the live
preview fragment (branches per user, SMS segments and cost, keyword findings, unknown variables, syntax errors
at their position), versions with a diff, the two-level review with the author's approve button absent, and a
test send to the whitelist only — each write audited under the operator."""

from __future__ import annotations

import re
from typing import Any

import httpx

from clarion import bootstrap
from tests.acceptance.console_client import page, post, signed_in
from tests.conftest import drain, put_template, put_user, set_approval, set_policies, sink

OFFER = (
    "<#if user.vip>Hi ${user.name}, your VIP coupon {data.code} is ready<#else>Hi ${user.name}, join VIP today</#if>"
)


def editor_form(**fields: str) -> dict[str, str]:
    """The editor's form for a marketing template sending on SMS, as a browser posts it."""
    form = {
        "key": "spring",
        "name": "Spring offer",
        "category": "marketing",
        "priority": "normal",
        "owner": "growth",
        "on.sms": "1",
        "content.sms.text": OFFER,
        "content.sms.signature": "Shop",
    }
    return {**form, **fields}


async def audit_actions(api: httpx.AsyncClient) -> list[tuple[str, str]]:
    entries = (await api.get("/v1/audit", params={"limit": 100})).json()["entries"]
    return [(e["action"], e["actor"]) for e in entries]


async def two_users(api: httpx.AsyncClient) -> None:
    await put_user(api, "vip1", attributes={"name": "Wang", "vip": True}, addresses={"sms": "+8613800138001"})
    await put_user(api, "new1", attributes={"name": "Zhao", "vip": False}, addresses={"sms": "+8613800138002"})


async def test_the_list_shows_status_category_owner_and_live_version_to_template_roles_only(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient
) -> None:
    await set_approval(clarion, levels={"marketing": ["business"]})
    await put_template(api, "code", category="verification", owner="identity", channels={"sms": {"text": "{data.c}"}})
    await put_template(api, "promo", category="marketing", channels={"sms": {"text": "Sale"}})
    async with signed_in(clarion, "ann", "approver") as ann:
        shown = await page(ann, "/console/templates")
    rows = re.findall(r"<tr>(.*?)</tr>", shown, re.S)
    code = next(r for r in rows if ">code<" in r)
    promo = next(r for r in rows if ">promo<" in r)
    assert "approved" in code and "verification" in code and "identity" in code and "v1" in code
    assert "draft" in promo and "marketing" in promo and promo.rstrip().endswith("<td>–</td>")
    assert "/console/templates/new" not in shown  # an approver does not write templates
    async with signed_in(clarion, "sue", "support") as sue:
        assert "/console/templates" not in await page(sue, "/console/record")
        await page(sue, "/console/templates", 403)


async def test_the_editor_saves_a_new_template_through_the_use_case_audited_under_the_operator(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient
) -> None:
    async with signed_in(clarion, "ed", "editor") as ed:
        answer = await post(ed, "/console/templates/new", editor_form(), from_page="/console/templates/new")
        assert (answer.status_code, answer.headers["location"]) == (303, "/console/templates/spring?saved=1")
        shown = await page(ed, answer.headers["location"])
    assert "Saved as version 1." in shown and "Spring offer" in shown
    saved = (await api.get("/v1/templates/spring")).json()
    assert saved["channels"]["sms"] == {"text": OFFER, "signature": "Shop"}
    assert (saved["owner"], saved["status"]) == ("growth", "draft")
    assert ("template.save", "operator:ed") in await audit_actions(api)


async def test_an_edit_keeps_what_the_editor_does_not_show_and_adds_a_channel(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient
) -> None:
    vendor = {"*": {"code": "SMS_1", "params": {"n": "{data.n}"}}}
    await put_template(api, "parcel", channels={"sms": {"text": "Parcel {data.n}", "vendor_template": vendor}})
    async with signed_in(clarion, "ed", "editor") as ed:
        assert 'id="channel-inbox" hidden disabled' in await page(ed, "/console/templates/parcel")
        form = {
            "name": "Parcel",
            "category": "transactional",
            "on.sms": "1",
            "content.sms.text": "Parcel {data.n} is on its way",
            "on.inbox": "1",
            "content.inbox.title": "Parcel {data.n}",
            "content.inbox.body": "On its way\r\nto you",
        }
        answer = await post(ed, "/console/templates/parcel", form, from_page="/console/templates/parcel")
    assert answer.status_code == 303, answer.text
    channels = (await api.get("/v1/templates/parcel")).json()["channels"]
    assert channels["sms"] == {"text": "Parcel {data.n} is on its way", "vendor_template": vendor}
    assert channels["inbox"] == {"title": "Parcel {data.n}", "body": "On its way\nto you"}


async def test_an_unclosed_placeholder_is_refused_at_save_naming_the_field_and_position(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient
) -> None:
    text = "Dear customer,\nHi ${user.name, welcome"
    async with signed_in(clarion, "ed", "editor") as ed:
        refused = await post(
            ed, "/console/templates/new", editor_form(**{"content.sms.text": text}), from_page="/console/templates/new"
        )
    assert refused.status_code == 422
    assert "channels.sms.text: unclosed ${: end the placeholder with } at line 2, column 4" in refused.text
    assert "Hi ${user.name, welcome</textarea>" in refused.text  # what was typed is still there
    assert (await api.get("/v1/templates/spring")).status_code == 404
    bad = await api.put(
        "/v1/templates/spring", json={"name": "x", "category": "marketing", "channels": {"sms": {"text": text}}}
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["details"] == {
        "field": "channels.sms.text",
        "message": "unclosed ${: end the placeholder with }",
        "line": 2,
        "column": 4,
    }


async def preview(client: httpx.AsyncClient, key: str, form: dict[str, str]) -> str:
    answer = await post(client, f"/console/templates/{key}/preview", form, from_page=f"/console/templates/{key}")
    assert answer.status_code == 200, answer.text
    return answer.text


async def test_the_preview_renders_each_users_branch_with_segments_cost_and_unknown_variables(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient
) -> None:
    await two_users(api)
    async with signed_in(clarion, "ed", "editor") as ed:
        form = editor_form(preview_users="vip1, new1", preview_data='{"code": "SPRING10"}')
        shown = await preview(ed, "new", form)
        without_code = await preview(ed, "new", {**form, "preview_data": "{}", "preview_users": "vip1"})
        nobody = await preview(ed, "new", {**form, "preview_users": "ghost"})
    vip, new = shown.split('data-user="new1"')
    assert "【Shop】Hi Wang, your VIP coupon SPRING10 is ready" in vip
    assert "【Shop】Hi Zhao, join VIP today" in new and "coupon" not in new
    assert "SMS: 1 segment(s)" in vip and "estimated cost 0.0450 CNY" in vip
    assert "Not in this user's data: data.code" in without_code
    assert "missing_variable: data.code" in without_code
    assert "user &#39;ghost&#39; not found" in nobody


async def test_the_preview_shows_syntax_errors_at_their_position_open_braces_and_keyword_findings(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient
) -> None:
    assert (await api.put("/v1/keyword-lists/rivals", json={"action": "mask", "words": ["AcmePush"]})).status_code in (
        200,
        201,
    )
    async with signed_in(clarion, "ed", "editor") as ed:
        broken = editor_form(**{"content.sms.text": "Hi\n<#if user.vip>VIP", "on.inbox": "1"})
        broken |= {"content.inbox.title": "Hi ${user.name", "content.inbox.body": "ok"}
        shown = await preview(ed, "new", broken)
        masked = await preview(ed, "new", editor_form(**{"content.sms.text": "Better than AcmePush"}))
        bad_data = await preview(ed, "new", editor_form(preview_data="[1"))
        open_brace = await preview(ed, "new", editor_form(**{"content.sms.text": "Hi {user.name, welcome"}))
    assert "Syntax error in channels.sms.text at line 2, column 1: unclosed &lt;#if&gt;" in shown
    assert "Syntax error in channels.inbox.title at line 1, column 4: unclosed ${" in shown
    assert "Better than ***" in masked and "Masked word AcmePush (list rivals) in text." in masked
    assert "preview_data: not JSON" in bad_data
    assert "channels.sms.text, line 1, column 4: {user.name has no closing brace, so it is sent as text." in open_brace
    assert "【Shop】Hi {user.name, welcome" in open_brace


async def review(client: httpx.AsyncClient, action: str, comment: str = "") -> httpx.Response:
    path = "/console/templates/spring"
    return await post(client, f"{path}/versions/1/{action}", {"comment": comment, "next": path}, from_page=path)


async def test_two_levels_of_review_where_the_author_is_never_offered_approval(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient
) -> None:
    await set_approval(clarion, levels={"marketing": ["business", "compliance"]})
    async with (
        signed_in(clarion, "ed", "editor") as ed,
        signed_in(clarion, "ann", "approver") as ann,
        signed_in(clarion, "bob", "approver") as bob,
    ):
        await post(ed, "/console/templates/new", editor_form(), from_page="/console/templates/new")
        assert 'id="approve"' not in await page(ann, "/console/templates/spring")  # a draft: nothing to approve
        assert (await review(ed, "submit")).status_code == 303
        authors_view = await page(ed, "/console/templates/spring")
        assert 'id="approve"' not in authors_view and 'id="reject"' not in authors_view
        assert "Waiting for level business (1 of 2): any approver or admin except operator:ed." in authors_view
        assert (await review(ann, "approve", "prices checked")).status_code == 303
        anns_view = await page(ann, "/console/templates/spring")
        assert "Waiting for level compliance (2 of 2)" in anns_view and 'id="approve"' not in anns_view
        assert 'id="approve"' in await page(bob, "/console/templates/spring")
        assert (await review(bob, "approve")).status_code == 303
    found = (await api.get("/v1/templates/spring")).json()
    assert (found["status"], found["live_version"]) == ("approved", 1)
    actions = await audit_actions(api)
    assert {("template.submit", "operator:ed"), ("template.approve", "operator:ann")} <= set(actions)
    assert ("template.approve", "operator:bob") in actions


async def test_the_author_approving_by_hand_is_refused_and_a_rejection_needs_a_comment(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient
) -> None:
    await set_approval(clarion, levels={"marketing": ["business"]})
    async with signed_in(clarion, "ed", "admin") as ed, signed_in(clarion, "ann", "approver") as ann:
        await post(ed, "/console/templates/new", editor_form(), from_page="/console/templates/new")
        await review(ed, "submit")
        own = await review(ed, "approve")
        assert own.status_code == 403 and "someone else must approve it" in own.text
        assert (await review(ann, "reject")).status_code == 422
        assert (await review(ann, "reject", "say which stores")).status_code == 303
        shown = await page(ann, "/console/templates/spring/versions/1")
    assert "Rejected: “say which stores”" in shown
    assert ("template.approve.refused", "operator:ed") in await audit_actions(api)


async def test_a_version_page_shows_the_text_diff_from_the_previous_version(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient
) -> None:
    await put_template(api, "parcel", channels={"sms": {"text": "Parcel {data.n}"}})
    await put_template(api, "parcel", channels={"sms": {"text": "Parcel {data.n} shipped"}})
    async with signed_in(clarion, "ann", "approver") as ann:
        shown = await page(ann, "/console/templates/parcel/versions/2")
        first = await page(ann, "/console/templates/parcel/versions/1")
        await page(ann, "/console/templates/parcel/versions/9", 404)
        assert "number: a version number from 1" in await page(ann, f"/console/templates/parcel/versions/{2**31}", 422)
    assert "Changes since version 1" in shown and "channels.sms.text" in shown
    assert "-Parcel {data.n}\n+Parcel {data.n} shipped" in shown
    assert "The first version" in first


async def test_a_test_send_reaches_the_whitelist_only_with_the_prefix(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient
) -> None:
    await set_approval(clarion, levels={"marketing": ["business"]})
    await set_policies(clarion, send_windows={})  # marketing may reach the user at any hour
    await two_users(api)
    assert (await api.put("/v1/test-recipients", json={"recipients": ["vip1"]})).status_code == 200
    async with signed_in(clarion, "ed", "editor") as ed:
        await post(ed, "/console/templates/new", editor_form(), from_page="/console/templates/new")
        assert "On the whitelist: vip1" in await page(ed, "/console/templates/spring")
        form = {"to": "vip1", "preview_data": '{"code": "T1"}'}
        sent = await post(ed, "/console/templates/spring/test", form, from_page="/console/templates/spring")
        assert sent.status_code == 303 and "tested=v1" in sent.headers["location"]
        outsider = await post(
            ed, "/console/templates/spring/test", {"to": "vip1, new1"}, from_page="/console/templates/spring"
        )
    assert outsider.status_code == 403 and "not on the test whitelist: new1" in outsider.text
    await drain(clarion)
    texts: list[Any] = [line["content"]["text"] for line in sink(clarion, "sms")]
    assert texts == ["【Shop】[TEST] Hi Wang, your VIP coupon T1 is ready"]
    assert ("template.test", "operator:ed") in await audit_actions(api)


async def test_the_editor_speaks_chinese(clarion: bootstrap.Clarion, api: httpx.AsyncClient) -> None:
    await put_template(api, "parcel", channels={"sms": {"text": "Parcel {data.n}"}})
    async with signed_in(clarion, "ed", "editor", language="zh-CN") as ed:
        shown = await page(ed, "/console/templates/parcel")
        listed = await page(ed, "/console/templates")
    assert "实时预览" in shown and "添加渠道" in shown and "测试发送" in shown
    assert "新建模板" in listed and "交易通知" in listed
