"""The console's doors: operators log in with a password (argon2), sessions are signed HttpOnly SameSite cookies,
every form carries a CSRF token, failed logins are throttled per account and per address, every page needs a
session and a role that may open it, and a write made through the console is audited under the operator."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.console import operators
from clarion.store import tables as t
from tests.acceptance.console_client import (
    PASSWORD,
    browser,
    console_app,
    csrf_of,
    login,
    make_operator,
    page,
    post,
    signed_in,
)

PAGES = ["/console/", "/console/record", "/console/record?q=u1", "/console/messages/m1", "/console/operators"]


async def test_every_page_sends_a_browser_without_a_session_to_the_login_page(clarion: bootstrap.Clarion) -> None:
    async with browser(console_app(clarion)) as client:
        for path in PAGES:
            answer = await client.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/console/login?next=%2Fconsole"), path
        client.cookies.set("clarion_session", "eyJvcCI6ImFkbWluIn0.forged.sig", path="/console")
        assert (await client.get("/console/")).status_code == 303


async def test_an_operator_logs_in_with_a_signed_httponly_cookie_and_logs_out(clarion: bootstrap.Clarion) -> None:
    await make_operator(clarion, "olga", "editor")
    async with browser(console_app(clarion)) as client:
        wrong = await login(client, "olga", "not the password")
        assert wrong.status_code == 401
        assert "Wrong name or password" in wrong.text
        answer = await login(client, "olga")
        assert (answer.status_code, answer.headers["location"]) == (303, "/console/")
        cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith("clarion_session="))
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/console" in cookie
        home = await page(client, "/console/")
        assert "olga" in home

        out = await post(client, "/console/logout", {}, from_page="/console/")
        assert (out.status_code, out.headers["location"]) == (303, "/console/login")
        assert (await client.get("/console/")).status_code == 303
    stored = await operators.Operators(clarion.db).get("olga")
    assert stored is not None and stored.last_login_at is not None
    async with clarion.db.read() as conn:
        digest = (await conn.execute(sa.select(t.operators.c.password_hash))).scalar_one()
    assert digest.startswith("$argon2id$") and PASSWORD not in digest


async def test_login_lands_where_the_browser_was_going_but_never_off_the_console(clarion: bootstrap.Clarion) -> None:
    await make_operator(clarion, "olga", "admin")
    async with browser(console_app(clarion)) as client:
        token = csrf_of(await page(client, "/console/login?next=/console/operators"))
        form = {"csrf": token, "name": "olga", "password": PASSWORD}
        answer = await client.post("/console/login", data={**form, "next": "/console/operators"})
        assert answer.headers["location"] == "/console/operators"
        answer = await client.post("/console/login", data={**form, "next": "https://evil.example/"})
        assert answer.headers["location"] == "/console/"


async def test_a_form_posted_without_its_csrf_token_is_refused(clarion: bootstrap.Clarion) -> None:
    await make_operator(clarion, "olga", "admin")
    async with browser(console_app(clarion)) as client:
        await page(client, "/console/login")
        refused = await client.post("/console/login", data={"name": "olga", "password": PASSWORD})
        assert refused.status_code == 403
        assert "CSRF" in refused.text
        assert (await login(client, "olga")).status_code == 303
        form = {"name": "mallory", "role": "admin", "password": "0123456789abc"}
        assert (await client.post("/console/operators", data=form)).status_code == 403
        assert (await client.post("/console/operators", data={**form, "csrf": "guessed"})).status_code == 403
        assert await operators.Operators(clarion.db).get("mallory") is None
        # another browser's token does not do either: the token is bound to this browser's cookie and session
        async with browser(console_app(clarion)) as other:
            foreign = csrf_of(await page(other, "/console/login"))
        assert (await client.post("/console/operators", data={**form, "csrf": foreign})).status_code == 403
        assert (await post(client, "/console/operators", form, from_page="/console/operators")).status_code == 303
        assert await operators.Operators(clarion.db).get("mallory") is not None


async def test_failed_logins_are_throttled_per_account(clarion: bootstrap.Clarion) -> None:
    await make_operator(clarion, "olga", "admin")
    await make_operator(clarion, "pete", "admin")
    async with browser(console_app(clarion)) as client:
        for _ in range(5):
            assert (await login(client, "olga", "guess")).status_code == 401
        throttled = await login(client, "olga")  # the right password, too late
        assert throttled.status_code == 429
        assert int(throttled.headers["retry-after"]) > 800
        assert "Too many failed logins" in throttled.text
        assert (await login(client, "pete")).status_code == 303  # another account is not locked out


async def test_failed_logins_are_throttled_per_address(clarion: bootstrap.Clarion) -> None:
    await make_operator(clarion, "olga", "admin")
    async with browser(console_app(clarion)) as client:
        for i in range(20):  # a different name each time: only the address adds up
            assert (await login(client, f"nobody{i}", "guess")).status_code == 401
        assert (await login(client, "olga")).status_code == 429


async def test_a_disabled_operator_can_neither_log_in_nor_keep_its_session(clarion: bootstrap.Clarion) -> None:
    async with signed_in(clarion, "ada", "admin") as admin, signed_in(clarion, "olga", "sender") as olga:
        assert (await olga.get("/console/")).status_code == 200
        answer = await post(admin, "/console/operators/olga/disable", {}, from_page="/console/operators")
        assert answer.status_code == 303
        assert (await olga.get("/console/")).status_code == 303
        assert (await login(olga, "olga")).status_code == 401
        listed = await page(admin, "/console/operators")
        assert "disabled" in listed
    async with clarion.db.read() as conn:
        entries = (await conn.execute(sa.select(t.audit_log).order_by(t.audit_log.c.id))).all()
    assert [(e.action, e.actor, e.subject) for e in entries if e.action == "operator.disable"] == [
        ("operator.disable", "operator:ada", "operator:olga")
    ]


@pytest.mark.parametrize(
    ("role", "allowed", "refused"),
    [
        ("support", ["/console/record"], ["/console/", "/console/operators"]),
        ("sender", ["/console/", "/console/record"], ["/console/operators"]),
        ("editor", ["/console/", "/console/record"], ["/console/operators"]),
        ("admin", ["/console/", "/console/record", "/console/operators"], []),
    ],
)
async def test_each_role_opens_its_pages_and_gets_403_on_the_others(
    clarion: bootstrap.Clarion, role: str, allowed: list[str], refused: list[str]
) -> None:
    async with signed_in(clarion, "olga", role) as client:
        for path in allowed:
            await page(client, path)
        for path in refused:
            assert (await client.get(path)).status_code == 403, path
        form = {"name": "x1", "role": "admin", "password": "0123456789abc"}
        created = await client.post(
            "/console/operators", data={**form, "csrf": csrf_of(await page(client, allowed[0]))}
        )
        assert created.status_code == (303 if role == "admin" else 403)


async def test_a_support_operator_logs_in_to_the_send_record(clarion: bootstrap.Clarion) -> None:
    await make_operator(clarion, "sue", "support")
    async with browser(console_app(clarion)) as client:
        answer = await login(client, "sue")
        assert answer.headers["location"] == "/console/record"
        nav = await page(client, "/console/record")
        assert 'href="/console/operators"' not in nav and 'href="/console/"' not in nav


async def test_an_operator_made_in_the_console_is_audited_under_its_maker(
    clarion: bootstrap.Clarion, api: httpx.AsyncClient
) -> None:
    async with signed_in(clarion, "ada", "admin") as admin:
        form = {"name": "sue", "role": "support", "password": "short"}
        refused = await post(admin, "/console/operators", form, from_page="/console/operators")
        assert refused.status_code == 422 and "password" in refused.text
        refused = await post(admin, "/console/operators", {**form, "role": "root"}, from_page="/console/operators")
        assert refused.status_code == 422 and "role" in refused.text
        made = await post(
            admin, "/console/operators", {**form, "password": "a long password"}, from_page="/console/operators"
        )
        assert made.status_code == 303
        again = await post(
            admin, "/console/operators", {**form, "password": "a long password"}, from_page="/console/operators"
        )
        assert again.status_code == 409
    entries = (await api.get("/v1/audit", params={"subject": "operator:sue"})).json()["entries"]
    assert [(e["action"], e["actor"]) for e in entries] == [("operator.create", "operator:ada")]
    assert "password" not in str(entries[0]["detail"])
