"""The campaign flow in a real browser against a real ``clarion api``, with a ``clarion worker`` beside it (the
API process runs no delivery workers and no campaign runner: ``clarion api`` is started with none, as in a
deployment where they run as processes of their own).

An editor builds a segment with the builder and sees the live count that ``GET /v1/segments/{key}/count`` then
answers, uploads an ID list and reads the value that matched no user, creates a campaign on the segment, reads
the estimate and submits it; an admin approves and starts it and watches the progress reach 100%, and the sent
count matches the file provider's outbox."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from clarion import bootstrap
from clarion.settings import Settings
from tests.acceptance.console_client import PASSWORD, make_operator
from tests.browser.conftest import Screen
from tests.conftest import API_KEY, sink
from tests.processes import worker_process

CITIES = ["Beijing", "Beijing", "Shanghai", "Beijing", "Shenzhen"]
CUSTOMERS = 30
#: the segment the editor builds: VIPs (the even users) in Beijing or Shanghai, but not in Shanghai
VIPS_IN_BEIJING = [i for i in range(0, CUSTOMERS, 2) if CITIES[i % len(CITIES)] == "Beijing"]


def worker_env(settings: Settings) -> dict[str, str]:
    """What ``clarion worker`` runs with here: the test's database and outbox, so it sends, and runs the campaigns
    that are due."""
    assert settings.api_key is not None and settings.secret_key is not None
    return {
        **os.environ,
        "CLARION_DATABASE_URL": settings.database_url,
        "CLARION_DATA_DIR": settings.data_dir,
        "CLARION_OUTBOX_DIR": settings.outbox_dir,
        "CLARION_API_KEY": settings.api_key.get_secret_value(),
        "CLARION_SECRET_KEY": settings.secret_key.get_secret_value(),
        "CLARION_TUNE_GC": "false",
    }


async def _put(api: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
    answer = await api.put(path, json=body)
    assert answer.status_code in (200, 201), answer.text


async def _customers(api: httpx.AsyncClient) -> None:
    """``CUSTOMERS`` users with phones: every other one a VIP, in the cities of ``CITIES`` in turn; a marketing
    template, no review of templates and no sending window (neither is what this flow is about)."""
    await _put(api, "/v1/approval/settings", {"levels": {}})
    await _put(api, "/v1/policies/settings", {"send_windows": {}})
    for i in range(CUSTOMERS):
        user = {
            "attributes": {"city": CITIES[i % len(CITIES)], "name": f"Customer {i}"},
            "tags": ["vip"] if i % 2 == 0 else [],
            "addresses": {"sms": f"+86138001380{i:02d}"},
        }
        await _put(api, f"/v1/users/c{i:02d}", user)
    template = {"name": "Spring sale", "category": "marketing", "channels": {"sms": {"text": "{name}: spring sale"}}}
    await _put(api, "/v1/templates/spring-sale", template)


async def _add(screen: Screen, kind: str, name: str, join: str, op: str = "=", value: str = "") -> None:
    page = screen.page
    await page.select_option("#node-kind", kind)
    await page.fill("#node-name", name)
    await page.select_option("#node-op", op)
    await page.fill("#node-value", value)
    await page.click(f"#builder button[data-join={join}]")


async def test_campaign(clarion: bootstrap.Clarion, settings: Settings, screen: Screen, tmp_path: Path) -> None:
    page = screen.page
    async with httpx.AsyncClient(base_url=screen.base, headers={"Authorization": f"Bearer {API_KEY}"}) as api:
        await _customers(api)
        await make_operator(clarion, "ed", "editor")
        await make_operator(clarion, "ada", "admin")

        await screen.login("ed", PASSWORD)
        await screen.open("/console/audiences")
        await _add(screen, "tag", "vip", "and")
        await _add(screen, "attr", "city", "and", "in", "Beijing, Shanghai")
        await _add(screen, "attr", "city", "not", "=", "Shanghai")
        await page.wait_for_selector("#preview[aria-busy=false] #live-count")  # the answer for all three
        live = int(await page.get_attribute("#live-count", "data-count") or -1)
        assert live == len(VIPS_IN_BEIJING) == 9
        assert await page.locator("#sample tbody tr").count() == live
        await page.fill("#segment-form input[name=key]", "vip-beijing")
        await page.fill("#segment-form input[name=name]", "VIPs in Beijing")
        await screen.shoot("segment-builder")
        await page.click("#save-segment")
        await page.wait_for_load_state()
        assert "Segment vip-beijing saved." in await page.inner_text("main")
        assert (await api.get("/v1/segments/vip-beijing/count")).json()["count"] == live
        assert await page.inner_text("[data-segment-count=vip-beijing]") == str(live)

        phones = tmp_path / "staff.csv"
        phones.write_text("phone\n13800138001\n13800138003\n13999999999\n")
        await page.fill("#list-upload input[name=key]", "staff")
        await page.select_option("#list-upload select[name=kind]", "phone")
        await page.fill("#list-upload input[name=region]", "CN")
        await page.set_input_files("#list-upload input[type=file]", str(phones))
        await page.click("#list-upload button[type=submit]")
        await page.wait_for_selector("#upload-result")
        assert await page.get_attribute("#upload-progress", "value") == "100"
        assert await page.inner_text("#unknown-values") == "+8613999999999"
        assert (await api.get("/v1/lists/staff")).json()["size"] == 2

        await screen.open("/console/campaigns")
        await page.fill("#campaign-form input[name=key]", "spring")
        await page.fill("#campaign-form input[name=name]", "Spring sale, Beijing VIPs")
        await page.select_option("#campaign-form select[name=template]", "spring-sale")
        await page.select_option("#campaign-form select[name=segment]", "vip-beijing")
        await page.fill("#campaign-form input[name=rate]", "4")
        await page.click("#create-campaign")
        await page.wait_for_url("**/console/campaigns/spring")
        await page.click("#estimate")
        await page.wait_for_selector("#estimate-body")
        assert await page.inner_text("[data-estimate=reached]") == str(live)
        assert await page.inner_text("[data-estimate=send-sms]") == str(live)
        await screen.shoot("campaign-estimate")
        await page.click("#action-submit")
        await page.wait_for_load_state()
        assert await page.inner_text("#campaign-status") == "waiting for review"
        await page.click("#logout")
        await page.wait_for_load_state()

        await screen.login("ada", PASSWORD)
        await screen.open("/console/campaigns/spring")
        await page.fill("form[action$='/approve'] input[name=comment]", "ok for Beijing")
        await page.click("#action-approve")
        await page.wait_for_load_state()
        assert await page.inner_text("#campaign-status") == "approved"
        await page.click("#action-start")
        await page.wait_for_load_state()
        with worker_process(worker_env(settings), tmp_path / "worker.log", loops=1):
            await page.wait_for_selector("#run-progress", timeout=30_000)
            await screen.shoot("campaign-running")
            await page.wait_for_selector("#results", timeout=60_000)  # the page reloads when the run is over
        assert await page.inner_text("#run-percent") == "100.0%"
        assert await page.inner_text("#campaign-status") == "completed"
        sent = int(await page.inner_text("[data-count=sent]"))
        assert sent == live == len(sink(clarion))
        assert {line["address"] for line in sink(clarion)} == {f"+86138001380{i:02d}" for i in VIPS_IN_BEIJING}
        await screen.shoot("campaign-finished")
        assert screen.errors == []
        screen.publish("campaign-finished", "console-campaign.png")
