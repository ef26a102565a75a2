"""The audiences and campaigns pages of the console, over httpx: an editor builds a segment and sees the same
live count as the API's, uploads an ID list and reads the values that matched no user; a campaign is created
from a form, estimated, approved by someone other than its author, run to the end with its progress and results,
and paused, resumed and cancelled — each write refused for the wrong role, audited under the operator."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from clarion import bootstrap
from tests.acceptance.console_client import page, post, signed_in
from tests.acceptance.test_campaigns import run_all
from tests.conftest import drain, put_template, put_user, set_approval, set_policies, sink

VIP_IN_BEIJING = {"and": [{"tag": "vip"}, {"attr": "city", "op": "=", "value": "Beijing"}]}


@pytest.fixture(autouse=True)
async def _setup(clarion: bootstrap.Clarion) -> None:
    """Sending windows and template review are not what these pages are about."""
    await set_policies(clarion, send_windows={})
    await set_approval(clarion, levels={})


@pytest.fixture
async def people(api: httpx.AsyncClient) -> list[str]:
    """Five users with a phone each: u0..u2 VIPs in Beijing, u3 a VIP in Shenzhen, u4 in Shanghai."""
    users = [("Beijing", ["vip"])] * 3 + [("Shenzhen", ["vip"]), ("Shanghai", [])]
    for i, (city, tags) in enumerate(users):
        await put_user(api, f"u{i}", attributes={"city": city}, tags=tags, addresses={"sms": f"+861380013800{i}"})
    return [f"u{i}" for i in range(len(users))]


async def _audit(api: httpx.AsyncClient, subject: str) -> list[dict[str, Any]]:
    answer = await api.get("/v1/audit", params={"subject": subject})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["entries"])


def _count_in(fragment: str) -> int:
    found = re.search(r'id="live-count" data-count="(\d+)"', fragment)
    assert found, fragment
    return int(found[1])


# -- audiences -----------------------------------------------------------------------------------------------


async def test_an_editor_sees_the_apis_count_while_building_and_saves_the_segment(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient, people: list[str]
) -> None:
    counted = await api.post("/v1/segments:count", json={"conditions": VIP_IN_BEIJING})
    assert counted.json()["count"] == 3
    async with signed_in(clarion, "ed", "editor") as ed:
        shown = await page(ed, "/console/audiences")
        assert 'id="conditions"' in shown and "/console/static/campaigns.js" in shown
        preview = await page(ed, f"/console/audiences/preview?conditions={quote(json.dumps(VIP_IN_BEIJING))}")
        assert _count_in(preview) == 3
        assert {"u0", "u1", "u2"} <= set(re.findall(r"<td>(u\d)</td>", preview)) and "u3" not in preview
        either = {"or": [{"tag": "vip"}, {"not": {"attr": "city", "op": "=", "value": "Beijing"}}]}
        assert _count_in(await page(ed, f"/console/audiences/preview?conditions={quote(json.dumps(either))}")) == 5

        wrong = {"and": [{"tag": "vip"}, {"attr": "city", "op": "~", "value": "x"}]}
        refused = await ed.get(f"/console/audiences/preview?conditions={quote(json.dumps(wrong))}")
        assert refused.status_code == 422 and "conditions.and[1].op" in refused.text

        form = {"key": "vip-bj", "name": "VIPs in Beijing", "conditions": json.dumps(VIP_IN_BEIJING)}
        saved = await post(ed, "/console/audiences/segments", form, from_page="/console/audiences")
        assert saved.status_code == 303 and saved.headers["location"] == "/console/audiences?segment=vip-bj&saved=1"
        listed = await page(ed, saved.headers["location"])
        assert "Segment vip-bj saved." in listed and 'data-segment-count="vip-bj">3<' in listed

        bad = await post(
            ed, "/console/audiences/segments", {**form, "conditions": "{not json"}, from_page="/console/audiences"
        )
        assert bad.status_code == 422 and "conditions: not valid JSON" in bad.text and "{not json" in bad.text
    assert (await api.get("/v1/segments/vip-bj/count")).json()["count"] == 3
    assert (await api.get("/v1/segments/vip-bj")).json()["conditions"] == VIP_IN_BEIJING
    [entry] = await _audit(api, "segment:vip-bj")
    assert (entry["actor"], entry["action"]) == ("operator:ed", "segment.put")


async def test_a_sender_may_count_an_audience_but_not_save_one(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient, people: list[str]
) -> None:
    async with signed_in(clarion, "sam", "sender") as sam:
        shown = await page(sam, "/console/audiences")
        assert 'id="save-segment"' not in shown and 'id="list-upload"' not in shown
        vips = quote(json.dumps({"tag": "vip"}))
        assert _count_in(await page(sam, f"/console/audiences/preview?conditions={vips}")) == 4
        form = {"key": "vips", "conditions": '{"tag": "vip"}'}
        refused = await post(sam, "/console/audiences/segments", form, from_page="/console/audiences")
        assert refused.status_code == 403 and "editor" in refused.text
    assert (await api.get("/v1/segments/vips")).status_code == 404


async def test_an_uploaded_id_list_reports_the_values_that_matched_no_user(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient, people: list[str]
) -> None:
    async with signed_in(clarion, "ed", "editor") as ed:
        token = re.search(r'name="csrf" value="([^"]+)"', await page(ed, "/console/audiences"))
        assert token
        answer = await ed.post(
            "/console/audiences/lists",
            data={"csrf": token[1], "key": "incident-42", "name": "Incident 42", "kind": "phone", "region": "CN"},
            files={"file": ("phones.txt", b"phone\n13800138000\n+8613800138001\n13999999999\nnot-a-phone\n")},
            headers={"X-Clarion-Fragment": "1"},
        )
        assert answer.status_code == 201, answer.text
        assert "<html" not in answer.text  # the fragment the page's script puts in place
        assert "4 lines, 2 matched users, 1 invalid" in answer.text
        unknown = re.findall(r"<li>([^<]+)</li>", answer.text)
        assert unknown == ["not-a-phone", "+8613999999999"]

        listed = await page(ed, "/console/audiences")
        assert "incident-42" in listed
        missing = await ed.post(
            "/console/audiences/lists", data={"csrf": token[1], "key": "incident-43", "kind": "phone"}
        )
        assert missing.status_code == 422 and "file: choose a file" in missing.text and "<html" in missing.text
    stored = (await api.get("/v1/lists/incident-42")).json()
    assert (stored["size"], stored["unknown"]) == (2, 2)
    [entry] = await _audit(api, "id_list:incident-42")
    assert (entry["actor"], entry["action"]) == ("operator:ed", "id_list.put")


# -- campaigns -----------------------------------------------------------------------------------------------


@pytest.fixture
async def vip_segment(api: httpx.AsyncClient, people: list[str]) -> None:
    answer = await api.put("/v1/segments/vip-bj", json={"conditions": VIP_IN_BEIJING})
    assert answer.status_code == 201, answer.text
    await put_template(api, "promo", category="marketing", channels={"sms": {"text": "Spring sale in {user.city}"}})


async def _act(client: httpx.AsyncClient, key: str, action: str, **form: str) -> httpx.Response:
    return await post(client, f"/console/campaigns/{key}/{action}", form, from_page=f"/console/campaigns/{key}")


async def test_a_campaign_is_created_estimated_approved_by_another_operator_and_run_to_its_results(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient, vip_segment: None
) -> None:
    form = {"key": "spring", "name": "Spring sale", "template": "promo", "segment": "vip-bj", "schedule": "now"}
    async with signed_in(clarion, "ada", "admin") as ada:
        created = await post(ada, "/console/campaigns", {**form, "rate": "50"}, from_page="/console/campaigns")
        assert (created.status_code, created.headers["location"]) == (303, "/console/campaigns/spring")
        shown = await page(ada, "/console/campaigns")
        assert re.search(r'spring</a>.*?class="status draft">draft<', shown, re.S)
        estimate = await page(ada, "/console/campaigns/spring/estimate")
        assert 'data-estimate="size">3<' in estimate and 'data-estimate="send-sms">3<' in estimate
        assert (await _act(ada, "spring", "submit")).status_code == 303
        own = await _act(ada, "spring", "approve", comment="mine")
        assert own.status_code == 403 and "someone else must approve it" in own.text
    async with signed_in(clarion, "ana", "approver") as ana:
        assert 'id="action-approve"' in await page(ana, "/console/campaigns/spring")
        assert (await _act(ana, "spring", "reject")).status_code == 422  # a rejection says what to change
        assert (await _act(ana, "spring", "approve", comment="ok")).status_code == 303
        detail = await page(ana, "/console/campaigns/spring")
        assert "approved" in detail and 'id="action-start"' not in detail  # approvers do not send
    async with signed_in(clarion, "sam", "sender") as sam:
        assert (await _act(sam, "spring", "start")).status_code == 303
        waiting = await page(sam, "/console/campaigns/spring/progress")
        assert 'data-live="1"' in waiting and "<html" not in waiting
        await run_all(clarion.campaigns)
        await drain(clarion)
        done = await page(sam, "/console/campaigns/spring/progress")
        assert 'data-live="0"' in done and 'id="run-percent">100.0%<' in done
        assert 'data-count="sent">3<' in done and 'data-count="failed">0<' in done
        results = await page(sam, "/console/campaigns/spring")
        assert 'id="results"' in results and "completed" in results
    assert len(sink(clarion)) == 3
    actions = [(e["actor"], e["action"]) for e in await _audit(api, "campaign:spring")]
    assert ("operator:ada", "campaign.save") in actions and ("operator:ana", "campaign.approve") in actions
    assert ("operator:sam", "campaign.start") in actions


async def test_a_campaign_form_names_the_field_it_refuses(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient, vip_segment: None
) -> None:
    base = {"key": "spring", "template": "promo", "segment": "vip-bj"}
    async with signed_in(clarion, "ed", "editor") as ed:
        for form, field in [
            ({**base, "template": "nope"}, "template"),
            ({**base, "segment": ""}, "audience"),
            ({**base, "schedule": "at", "at": "tomorrow"}, "at"),
            ({**base, "schedule": "cron", "cron": "every day", "timezone": "Asia/Shanghai"}, "schedule.cron"),
            ({**base, "schedule": "at", "at": "2030-01-01T10:00", "timezone": "Mars/Base"}, "timezone"),
            ({**base, "key": "no spaces"}, "key"),
        ]:
            refused = await post(ed, "/console/campaigns", form, from_page="/console/campaigns")
            assert refused.status_code == 422, (field, refused.status_code)
            assert re.search(rf'class="error" role="alert">{re.escape(field)}\b', refused.text), field
        at = {**base, "schedule": "at", "at": "2030-01-01T10:00", "timezone": "Asia/Shanghai"}
        assert (await post(ed, "/console/campaigns", at, from_page="/console/campaigns")).status_code == 303
    stored = (await api.get("/v1/campaigns/spring")).json()
    assert stored["schedule"] == {"kind": "at", "at": "2030-01-01T02:00:00+00:00"}


async def test_a_running_campaign_is_paused_resumed_and_cancelled_from_its_page(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient, vip_segment: None
) -> None:
    clarion.campaigns.batch_size, clarion.campaigns.slice_seconds = 1, 0
    async with signed_in(clarion, "ada", "admin") as ada:
        form = {"key": "spring", "template": "promo", "segment": "vip-bj"}
        await post(ada, "/console/campaigns", form, from_page="/console/campaigns")
        await _act(ada, "spring", "submit")
    async with signed_in(clarion, "ana", "approver") as ana:
        await _act(ana, "spring", "approve")
    async with signed_in(clarion, "sam", "sender") as sam:
        await _act(sam, "spring", "start")
        await clarion.campaigns.run_once("test-runner")  # one user of three
        running = await page(sam, "/console/campaigns/spring")
        assert 'id="campaign-status" class="status running"' in running and 'id="action-pause"' in running
        assert 'id="run-percent">33.3%<' in running
        assert (await _act(sam, "spring", "pause")).status_code == 303
        paused = await page(sam, "/console/campaigns/spring")
        assert 'class="status paused"' in paused and 'id="action-resume"' in paused
        assert await clarion.campaigns.run_once("test-runner") == 0  # a paused run does not advance
        assert (await _act(sam, "spring", "resume")).status_code == 303
        assert (await _act(sam, "spring", "cancel")).status_code == 303
        cancelled = await page(sam, "/console/campaigns/spring")
        assert 'class="status cancelled"' in cancelled and 'id="action-' not in cancelled
        again = await _act(sam, "spring", "resume")
        assert again.status_code == 409 and "cancelled" in again.text
    actions = [e["action"] for e in await _audit(api, "campaign:spring")]
    assert {"campaign.pause", "campaign.resume", "campaign.cancel"} <= set(actions)


async def test_the_audiences_and_campaigns_pages_speak_chinese(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient, vip_segment: None
) -> None:
    answer = await api.put("/v1/campaigns/spring", json={"template": "promo", "audience": {"segment": "vip-bj"}})
    assert answer.status_code == 201, answer.text
    async with signed_in(clarion, "ed", "editor", language="zh-CN") as ed:
        assert "分群构建器" in await page(ed, "/console/audiences")
        listed = await page(ed, "/console/campaigns")
        assert "新建活动" in listed and ">草稿<" in listed
        detail = await page(ed, "/console/campaigns/spring")
        assert "活动 spring" in detail and "提交审核" in detail and "Campaign" not in detail
        estimate = await page(ed, "/console/campaigns/spring/estimate")
        assert "精确值" in estimate
