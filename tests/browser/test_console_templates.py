"""Author and review, in a real browser: an editor writes a marketing template with an ``<#if>`` branch, watches
the live preview show each branch to the user it is for, saves and submits it; two approvers approve it level by
level while the author is never offered the approve button. A ``support`` operator sees no Templates entry and
is refused the page. The editor's screenshot is the README's (docs/console-template-editor.png)."""

from __future__ import annotations

from pathlib import Path

from clarion import bootstrap
from tests.acceptance.console_client import PASSWORD, make_operator
from tests.browser.conftest import Screen
from tests.browser.test_console_browser import _api, _put
from tests.conftest import set_approval

OFFER = (
    "<#if user.vip>尊敬的会员 ${user.name}，您的春季专享券 {data.code} 已到账，满 200 减 50，{data.until} 前有效。"
    "<#else>${user.name}，您好！春季新品上市，注册会员即领 50 元券。</#if>回 T 退订"
)


async def sign_in_as(screen: Screen, name: str) -> None:
    if await screen.page.locator("#logout").count():
        await screen.page.click("#logout")
        await screen.page.wait_for_load_state()
    await screen.login(name, PASSWORD)


async def test_author_and_review(clarion: bootstrap.Clarion, screen: Screen, tmp_path: Path) -> None:
    from playwright.async_api import expect

    await set_approval(clarion, levels={"marketing": ["business", "compliance"]})
    with _api(screen.base) as api:
        for user_id, name, vip, phone in (
            ("vip1", "王芳", True, "+8613800138001"),
            ("new1", "赵磊", False, "+8613800138002"),
        ):
            _put(api, f"/v1/users/{user_id}", {"attributes": {"name": name, "vip": vip}, "addresses": {"sms": phone}})
    for name, role in (("ed", "editor"), ("ann", "approver"), ("bob", "approver"), ("sue", "support")):
        await make_operator(clarion, name, role)
    page = screen.page

    await screen.login("ed", PASSWORD)
    await screen.open("/console/templates")
    await page.click("#new-template")
    await page.wait_for_load_state()
    await page.fill("#key", "spring_offer")
    await page.fill("#name", "春季会员券")
    await page.select_option("#category", "marketing")
    await page.fill("input[name=owner]", "growth")
    await page.select_option("#add-channel", "sms")
    await page.click("#add-channel-button")
    await page.fill("#sms-signature", "优选商城")
    await page.fill("#sms-text", OFFER)
    await page.fill("#preview-users", "vip1, new1")
    await page.fill("#preview-data", '{"code": "SPRING50", "until": "3月31日"}')
    vip, new = page.locator("#preview [data-user=vip1]"), page.locator("#preview [data-user=new1]")
    await expect(vip).to_contain_text("尊敬的会员 王芳，您的春季专享券 SPRING50 已到账")
    await expect(new).to_contain_text("赵磊，您好！春季新品上市")
    assert "SPRING50" not in await new.inner_text()
    await expect(vip).to_contain_text("segment(s)")
    await expect(vip).to_contain_text("estimated cost")
    await screen.shoot("editor")
    screen.publish("editor", "console-template-editor.png")

    await page.click("#save")
    await page.wait_for_url("**/console/templates/spring_offer?saved=1")
    await page.click("#submit-review")
    await page.wait_for_load_state()
    await expect(page.locator("#next-reviewer")).to_contain_text("Waiting for level business (1 of 2)")
    assert await page.locator("#approve").count() == 0  # the author's own version: no approve button
    await screen.shoot("submitted")

    for approver, level in (("ann", "business"), ("bob", "compliance")):
        await sign_in_as(screen, approver)
        await screen.open("/console/templates/spring_offer")
        await expect(page.locator("#next-reviewer")).to_contain_text(f"Waiting for level {level}")
        await page.fill("#review-comment", f"{level} ok")
        await page.click("#approve")
        await page.wait_for_load_state()
    await expect(page.locator("#review-status")).to_have_text("approved")
    await screen.shoot("approved")

    await sign_in_as(screen, "ed")
    await screen.open("/console/templates/spring_offer")
    assert await page.locator("#approve").count() == 0
    assert "Level compliance approved by operator:bob" in await page.inner_text("#review")

    await sign_in_as(screen, "sue")
    assert await page.locator("nav a[href='/console/templates']").count() == 0
    async with screen.refused(403):
        refused = await screen.open("/console/templates")
    assert refused.status == 403
    await screen.shoot("support-refused")
