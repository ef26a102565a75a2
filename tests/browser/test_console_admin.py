"""An admin configures Clarion through the console in a real browser (Chromium, headless), against a real
``clarion api``: creates a provider account with a secret that the page never shows again, tests a text against
the keyword lists, adds and lifts a suppression, creates an API key (shown once) and revokes it, and reads each of
these in the audit log under ``operator:ada``. The console logs no error on any page."""

from __future__ import annotations

import httpx

from clarion import bootstrap
from tests.acceptance.console_client import PASSWORD, make_operator
from tests.browser.conftest import Screen
from tests.conftest import API_KEY

SECRET = "receipt-secret-never-shown-0042"


async def test_an_admin_configures_providers_policies_and_keys_and_reads_the_audit_log(
    clarion: bootstrap.Clarion, screen: Screen
) -> None:
    async with httpx.AsyncClient(base_url=screen.base, headers={"Authorization": f"Bearer {API_KEY}"}) as api:
        words = {"action": "block", "words": ["赌博"]}
        assert (await api.put("/v1/keyword-lists/banned", json=words)).status_code == 201
    await make_operator(clarion, "ada", "admin")
    page = screen.page
    await screen.login("ada", PASSWORD)

    await screen.open("/console/providers")
    form = page.locator("#provider-form")
    await form.locator("input[name=name]").fill("vendor")
    await form.locator("select[name=kind]").select_option("smtp")
    await page.wait_for_selector("#secret-fields input[name='secret.password']")  # the kind's secrets, fetched
    await form.locator("select[name=kind]").select_option("sms_http")
    await page.wait_for_selector("#secret-fields input[name='secret.receipt_secret']")
    await form.locator("select[name=channel]").select_option("sms")
    await form.locator("textarea[name=config]").fill(
        '{"url": "http://127.0.0.1:9/send", "allow_private_networks": true}'
    )
    await form.locator("input[name='secret.receipt_secret']").fill(SECRET)
    await form.locator("button[type=submit]").click()
    await page.wait_for_load_state()
    assert "Saved: vendor" in await page.inner_text("#saved")
    assert "sms_http" in await page.inner_text("#accounts")
    await screen.shoot("providers")
    await page.click("#accounts a[href='/console/providers/vendor']")
    await page.wait_for_load_state()
    assert "(set)" in await page.inner_text("#secret-fields")
    assert SECRET not in await page.content()
    await screen.shoot("provider-edit")

    await screen.open("/console/policies")
    await page.fill("#keyword-test textarea[name=text]", "一起来赌博")
    await page.click("#keyword-test button")
    await page.wait_for_selector("#keyword-blocked")
    assert "Blocked: 赌博 (list banned)" in await page.inner_text("#keyword-result")
    assert page.url.endswith("/console/policies")  # answered in place, by the fragment
    await screen.shoot("keyword-test")

    adding = page.locator("#suppression-form")
    await adding.locator("input[name=user_id]").fill("u7")
    await adding.locator("input[name=reason]").fill("complained by phone")
    await adding.locator("button").click()
    await page.wait_for_load_state()
    row = page.locator("tr[data-suppression]")
    assert "complained by phone" in await row.inner_text()
    await screen.shoot("suppressed")
    await row.locator("input[name=reason]").fill("consent given again")
    await row.locator("button").click()
    await page.wait_for_load_state()
    assert await page.locator("tr[data-suppression]").count() == 0

    await screen.open("/console/api-keys")
    await page.fill("#key-form input[name=name]", "crm")
    await page.click("#key-form button[type=submit]")
    await page.wait_for_load_state()
    key = await page.inner_text("#issued-key")
    assert key.startswith("clk_")
    await screen.shoot("key-issued")
    await screen.open("/console/api-keys")
    assert key not in await page.content()
    await page.locator("tr", has_text="crm").locator("button").click()
    await page.wait_for_load_state()
    assert "revoked" in await page.locator("tr", has_text="crm").inner_text()

    await screen.open("/console/audit?actor=operator:ada")
    log = await page.inner_text("#audit")
    for action in ("provider.create", "suppression.add", "suppression.lift", "api_key.create", "api_key.revoke"):
        assert action in log, action
    assert SECRET not in await page.content() and key not in await page.content()
    await screen.shoot("audit")
