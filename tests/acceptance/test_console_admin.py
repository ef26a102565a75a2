"""The console's configuration pages: provider accounts with write-only secrets, their probe and routes; policy
settings, caps, keyword lists and their test box, suppressions added and lifted; the audit log; API keys shown
once and revoked; and the operator's own password. Every write is refused without its CSRF token and to roles
that may not make it, and the audit log names the operator."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from clarion import bootstrap
from clarion.channels import registry
from clarion.domain import model
from clarion.store import records
from clarion.store import tables as t
from tests.acceptance.console_client import PASSWORD, browser, console_app, login, page, post, signed_in
from tests.conftest import put_user
from tests.integration.loopback import LoopbackServer, Reply

SECRET = "receipt-secret-4711-do-not-show"


async def _audit(api: httpx.AsyncClient, action: str) -> list[dict[str, Any]]:
    answer = await api.get("/v1/audit", params={"action": action})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["entries"])


async def _provider(ada: httpx.AsyncClient, url: str, **extra: str) -> httpx.Response:
    config = f'{{"url": "{url}/send", "allow_private_networks": true, "status_path": "status"}}'
    form = {"name": "vendor", "kind": "sms_http", "channel": "sms", "enabled": "on", "config": config, **extra}
    return await post(ada, "/console/providers", form, from_page="/console/providers")


@pytest.mark.parametrize(
    ("role", "path"),
    [
        ("editor", "/console/providers"),
        ("editor", "/console/audit"),
        ("editor", "/console/api-keys"),
        ("support", "/console/policies"),
        ("sender", "/console/providers/vendor"),
    ],
)
async def test_a_role_that_may_not_open_a_configuration_page_gets_403(
    clarion: bootstrap.Clarion, role: str, path: str
) -> None:
    async with signed_in(clarion, "olga", role) as olga:
        shown = await page(olga, path, 403)
    assert "Not allowed" in shown


async def test_every_role_opens_its_own_account_page(clarion: bootstrap.Clarion) -> None:
    async with signed_in(clarion, "sue", "support") as sue:
        shown = await page(sue, "/console/account")
    assert "Change my password" in shown and "sue" in shown


async def test_a_write_without_the_forms_csrf_token_is_refused_and_changes_nothing(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient
) -> None:
    async with signed_in(clarion, "ada", "admin") as ada:
        await page(ada, "/console/api-keys")
        refused = await ada.post("/console/api-keys", data={"name": "crm", "role.sender": "on"})
        wrong = await ada.post("/console/api-keys", data={"csrf": "forged", "name": "crm", "role.sender": "on"})
    assert (refused.status_code, wrong.status_code) == (403, 403)
    assert "CSRF" in refused.text
    keys = (await api.get("/v1/api-keys")).json()["keys"]
    assert "crm" not in [k["name"] for k in keys]


async def test_an_editor_reads_the_policies_but_may_not_change_them(clarion: bootstrap.Clarion) -> None:
    async with signed_in(clarion, "eve", "editor") as eve:
        shown = await page(eve, "/console/policies")
        assert "Sending windows and quiet hours" in shown
        assert 'id="cap-form"' not in shown and "/lift" not in shown
        refused = await post(
            eve, "/console/policies/settings", {"default_timezone": "Asia/Shanghai"}, from_page="/console/policies"
        )
    assert refused.status_code == 403


async def test_a_provider_secret_is_write_only_and_kept_when_left_blank(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient
) -> None:
    async with signed_in(clarion, "ada", "admin") as ada:
        created = await _provider(ada, "http://127.0.0.1:9", **{"secret.receipt_secret": SECRET})
        assert (created.status_code, created.headers["location"]) == (303, "/console/providers?saved=vendor")
        listed = await page(ada, "/console/providers?saved=vendor")
        edit = await page(ada, "/console/providers/vendor")
        assert "vendor" in listed and "sms_http" in listed
        assert SECRET not in listed and SECRET not in edit
        assert re.search(r"receipt_secret <span[^>]*>\(set\)", edit)
        kept = await _provider(ada, "http://127.0.0.1:9")  # the secret's input left blank
        assert kept.status_code == 303
    row = await records.get_one(clarion.db, t.providers, "vendor")
    assert registry.unseal("vendor", row.config, clarion.providers.sealer)["receipt_secret"] == SECRET
    entries = await _audit(api, "provider.update") + await _audit(api, "provider.create")
    assert [e["actor"] for e in entries] == ["operator:ada", "operator:ada"]
    assert SECRET not in str(entries)


async def test_a_bad_provider_form_is_refused_naming_the_field(clarion: bootstrap.Clarion) -> None:
    async with signed_in(clarion, "ada", "admin") as ada:
        not_json = await _provider(ada, "http://127.0.0.1:9", config="{url")
        wrong_kind = await post(
            ada,
            "/console/providers",
            {"name": "vendor", "kind": "sms_http", "channel": "email", "config": "{}"},
            from_page="/console/providers",
        )
        secret_of_kind = await page(ada, "/console/provider-secrets?kind=smtp")
    assert not_json.status_code == 422 and "config: not JSON" in not_json.text
    assert wrong_kind.status_code == 422 and "channel" in wrong_kind.text
    assert 'name="secret.password"' in secret_of_kind and "not set" in secret_of_kind


async def test_send_test_shows_the_vendors_answer_and_is_audited(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient
) -> None:
    vendor = LoopbackServer(Reply(200, {"status": "ok", "message_id": "V-77"}))
    async with vendor as server, signed_in(clarion, "ada", "admin") as ada:
        await _provider(ada, server.url)
        answer = await post(
            ada, "/console/providers/vendor/test", {"address": "+8613800138000"}, from_page="/console/providers/vendor"
        )
    assert answer.status_code == 200
    assert "provider message id: V-77" in answer.text
    [entry] = await _audit(api, "provider.test")
    assert (entry["actor"], entry["subject"], entry["detail"]["ok"]) == ("operator:ada", "provider:vendor", True)


async def test_routes_are_listed_and_saved_and_an_unknown_provider_is_refused(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient
) -> None:
    async with signed_in(clarion, "ada", "admin") as ada:
        await _provider(ada, "http://127.0.0.1:9")
        form = {"key": "cn", "channel": "sms", "match": '{"country_code": "+86"}', "providers": "vendor:3"}
        saved = await post(ada, "/console/routes", {**form, "enabled": "on"}, from_page="/console/providers")
        unknown = await post(ada, "/console/routes", {**form, "providers": "nobody:1"}, from_page="/console/providers")
        listed = await page(ada, "/console/providers")
        editing = await page(ada, "/console/providers?route=cn")
        changed = await post(ada, "/console/routes", {**form, "providers": "vendor:5"}, from_page="/console/providers")
    assert saved.status_code == 303 and changed.status_code == 303
    assert unknown.status_code == 422 and "providers.0.name" in unknown.text
    routes = listed[listed.index('id="routes"') :]
    assert "cn" in routes and "vendor:3" in routes and "+86" in routes
    route_form = editing[editing.index('id="route-form"') :]
    assert 'value="cn"' in route_form and 'value="vendor:3"' in route_form
    stored = (await api.get("/v1/routes/cn")).json()
    assert (stored["providers"], stored["enabled"]) == ([{"name": "vendor", "weight": 5}], False)
    [created] = await _audit(api, "route.create")
    [updated] = await _audit(api, "route.update")
    assert created["actor"] == updated["actor"] == "operator:ada"


async def test_policy_settings_and_caps_are_saved_from_their_forms(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient
) -> None:
    settings = {
        "default_timezone": "Asia/Shanghai",
        "window.marketing": "10:00-19:00",
        "quiet.marketing": "drop",
        "dedup_seconds": "600",
        "valve_limit": "20",
        "valve_unit": "day",
    }
    async with signed_in(clarion, "ada", "admin") as ada:
        saved = await post(ada, "/console/policies/settings", settings, from_page="/console/policies")
        bad = await post(
            ada, "/console/policies/settings", {**settings, "window.marketing": "late"}, from_page="/console/policies"
        )
        cap = {"key": "daily-sms", "limit": "3", "window_unit": "day", "channel": "sms", "enabled": "on"}
        capped = await post(ada, "/console/policies/caps", cap, from_page="/console/policies")
        shown = await page(ada, "/console/policies")
    assert (saved.status_code, capped.status_code) == (303, 303)
    assert bad.status_code == 422 and "send_windows.marketing" in bad.text
    stored = (await api.get("/v1/policies/settings")).json()
    assert stored["send_windows"] == {"marketing": "10:00-19:00"}
    assert stored["quiet_hours"]["marketing"] == "drop"
    assert stored["safety_valve"] == {"limit": 20, "window": {"unit": "day"}}
    assert "daily-sms" in shown[shown.index('id="caps"') :]
    [entry] = await _audit(api, "policy_settings.update")
    assert entry["actor"] == "operator:ada"


async def test_the_keyword_test_shows_what_is_blocked_and_what_is_masked(clarion: bootstrap.Clarion) -> None:
    async with signed_in(clarion, "ada", "admin") as ada:
        for key, action, word in (("banned", "block", "赌博"), ("soft", "mask", "免费")):
            form = {"key": key, "action": action, "words": f"{word}\n", "enabled": "on"}
            assert (
                await post(ada, "/console/policies/keyword-lists", form, from_page="/console/policies")
            ).status_code == 303
        async with signed_in(clarion, "eve", "editor") as eve:
            blocked = await page(eve, f"/console/policies/keyword-test?text={quote('来赌博吧')}")
            masked = await page(eve, f"/console/policies?text={quote('免费领取')}")
    assert "Blocked: 赌博 (list banned)" in blocked and "<html" not in blocked
    assert "Not blocked." in masked and "***领取" in masked and "Masked: 免费 (list soft)" in masked


async def test_a_suppression_is_added_found_and_lifted_with_a_reason(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient
) -> None:
    async with signed_in(clarion, "ada", "admin") as ada:
        form = {"user_id": "u9", "channel": "sms", "reason": "asked by phone"}
        added = await post(ada, "/console/policies/suppressions", form, from_page="/console/policies")
        by_phone = {"address": "+86 138 0013 8000", "reason": "complaint"}
        assert (
            await post(ada, "/console/policies/suppressions", by_phone, from_page="/console/policies")
        ).status_code == 303
        found_by_phone = await page(ada, f"/console/policies?address={quote('+86 13800138000')}")
        bad_phone = await page(ada, "/console/policies?address=13800138000", 422)  # no default region here
        empty = await post(ada, "/console/policies/suppressions", {"reason": "x"}, from_page="/console/policies")
        found = await page(ada, "/console/policies?user_id=u9")
        [suppression] = re.findall(r'data-suppression="([^"]+)"', found)
        lift = f"/console/policies/suppressions/{suppression}/lift"
        no_reason = await post(ada, lift, {"reason": " "}, from_page="/console/policies")
        lifted = await post(ada, lift, {"reason": "consent given again"}, from_page="/console/policies")
        after = await page(ada, "/console/policies?user_id=u9")
    assert (added.status_code, lifted.status_code) == (303, 303)
    assert empty.status_code == 422 and no_reason.status_code == 422 and "reason" in no_reason.text
    assert "asked by phone" in found and "data-suppression" not in after
    assert "+8613800138000" in found_by_phone and "asked by phone" not in found_by_phone
    assert "address" in bad_phone
    by_address, add = await _audit(api, "suppression.add")  # newest first
    assert (by_address["actor"], by_address["subject"]) == ("operator:ada", f"suppression:{by_address['detail']['id']}")
    [lift_entry] = await _audit(api, "suppression.lift")
    assert (add["actor"], add["subject"]) == ("operator:ada", "user:u9")
    assert (lift_entry["actor"], lift_entry["detail"]["reason"]) == ("operator:ada", "consent given again")


async def test_the_audit_log_is_filtered_and_paged_newest_first(clarion: bootstrap.Clarion) -> None:
    async with signed_in(clarion, "ada", "admin") as ada:
        for n in range(55):
            await clarion.keys.issue(f"k{n}", ["sender"], actor="operator:ada")
        first = await page(ada, "/console/audit?action=api_key.create")
        older = re.search(r'id="older" href="([^"]+)"', first)
        assert older is not None
        second = await page(ada, older[1].replace("&amp;", "&"))
        by_other = await page(ada, "/console/audit?actor=operator:nobody")
    names = re.findall(r'"name": "(k\d+)"', first)
    assert names[:2] == ["k54", "k53"] and len(names) == 50
    assert re.findall(r'"name": "(k\d+)"', second) == [f"k{n}" for n in range(4, -1, -1)]
    assert "No entry matches." in by_other


async def test_an_api_key_is_shown_once_and_revoked(clarion: bootstrap.Clarion, api: httpx.AsyncClient) -> None:
    async with signed_in(clarion, "ada", "admin") as ada:
        form = {"name": "crm", "role.sender": "on", "expires_in_days": "30"}
        created = await post(ada, "/console/api-keys", form, from_page="/console/api-keys")
        key = re.search(r'id="issued-key">([^<]+)<', created.text)
        assert created.status_code == 201 and key is not None
        listed = await page(ada, "/console/api-keys")
        no_role = await post(ada, "/console/api-keys", {"name": "x"}, from_page="/console/api-keys")
        [key_id] = re.findall(r'action="/console/api-keys/([^"/]+)/revoke"', listed)[-1:]
        revoked = await post(ada, f"/console/api-keys/{key_id}/revoke", {}, from_page="/console/api-keys")
        after = await page(ada, "/console/api-keys")
    assert key[1] not in listed and "crm" in listed
    assert no_role.status_code == 422 and "roles" in no_role.text
    assert revoked.status_code == 303 and "revoked" in after
    refused = await api.get("/v1/templates", headers={"Authorization": f"Bearer {key[1]}"})
    assert refused.status_code == 401
    [made] = await _audit(api, "api_key.create")
    [gone] = await _audit(api, "api_key.revoke")
    assert made["actor"] == gone["actor"] == "operator:ada"


async def test_an_operator_changes_their_own_password(clarion: bootstrap.Clarion, api: httpx.AsyncClient) -> None:
    new = "a much longer password"
    async with signed_in(clarion, "sue", "support") as sue:
        path = "/console/account/password"
        wrong = await post(
            sue, path, {"old_password": "nope", "password": new, "password_again": new}, from_page="/console/account"
        )
        short = await post(
            sue,
            path,
            {"old_password": PASSWORD, "password": "short", "password_again": "short"},
            from_page="/console/account",
        )
        differ = await post(
            sue,
            path,
            {"old_password": PASSWORD, "password": new, "password_again": new + "!"},
            from_page="/console/account",
        )
        changed = await post(
            sue, path, {"old_password": PASSWORD, "password": new, "password_again": new}, from_page="/console/account"
        )
    assert wrong.status_code == 422 and "The current password is wrong." in wrong.text
    assert short.status_code == 422 and "between 10 and 1000 characters" in short.text
    assert differ.status_code == 422 and "differ" in differ.text
    assert (changed.status_code, changed.headers["location"]) == (303, "/console/account?changed=1")
    async with browser(console_app(clarion)) as again:
        assert (await login(again, "sue")).status_code == 401
        assert (await login(again, "sue", new)).status_code == 303
    [entry] = await _audit(api, "operator.password")
    assert (entry["actor"], entry["subject"]) == ("operator:sue", "operator:sue")


def _switch(html: str, name: str) -> str:
    found = re.search(rf'<input type="checkbox" name="{re.escape(name)}"[^>]*>', html)
    assert found is not None, name
    return found[0]


def _every_switch_on() -> dict[str, str]:
    channels = [c.value for c in model.Channel]
    categories = [c.value for c in model.Category]
    return {
        **{f"channel.{c}": "on" for c in channels},
        **{f"category.{k}": "on" for k in categories},
        **{f"pair.{k}.{c}": "on" for k in categories for c in channels},
    }


async def test_a_users_preferences_are_shown_and_changed_from_their_page(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient
) -> None:
    await put_user(api, "u1", addresses={"sms": "+8613800138000"})
    path = "/console/users/u1/preferences"
    form = _every_switch_on()
    del form["channel.sms"], form["category.marketing"], form["pair.notification.email"]
    form.update(marketing_consent="no", do_not_disturb="22:00-08:00")
    async with signed_in(clarion, "ada", "admin") as ada:
        record = await page(ada, "/console/record?user=u1")
        shown = await page(ada, path)
        assert "checked" in _switch(shown, "channel.sms")
        saved = await post(ada, path, form, from_page=path)
        bad = await post(ada, path, {**form, "do_not_disturb": "late"}, from_page=path)
        after = await page(ada, path + "?saved=1")
    assert f'href="{path}"' in record  # the user's send record leads to their preferences
    assert (saved.status_code, saved.headers["location"]) == (303, path + "?saved=1")
    assert bad.status_code == 422 and "do_not_disturb" in bad.text
    assert "checked" not in _switch(after, "channel.sms") and "checked" in _switch(after, "channel.email")
    stored = (await api.get("/v1/users/u1/preferences")).json()
    assert stored == {
        "channels": {"sms": False},
        "categories": {"marketing": False, "notification": {"channels": {"email": False}}},
        "marketing_consent": False,
        "do_not_disturb": "22:00-08:00",
    }
    [entry] = await _audit(api, "user.preferences")
    assert (entry["actor"], entry["subject"]) == ("operator:ada", "user:u1")


async def test_support_reads_a_users_preferences_but_may_not_change_them(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient
) -> None:
    await put_user(api, "u1", addresses={"sms": "+8613800138000"})
    path = "/console/users/u1/preferences"
    async with signed_in(clarion, "sue", "support") as sue:
        shown = await page(sue, path)
        refused = await post(sue, path, _every_switch_on(), from_page=path)
        unknown = await page(sue, "/console/users/nobody/preferences", 404)
    assert "Preferences of u1" in shown and 'type="submit"' not in shown.split('id="preferences-form"')[1]
    assert refused.status_code == 403 and "nobody" in unknown
