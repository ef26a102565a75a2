"""Templates operators can trust, through the HTTP API: every change is a version, diffable; marketing goes out only
once two people other than its author approved it; roles decide who may do what; every review is audited; and a
draft can be tried on the test whitelist before anyone approves it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from clarion import bootstrap, cli
from clarion.store import migrate
from tests.conftest import drain, put_template, put_user, set_policies, sink

PHONE = "+8613800138000"
ED = {"Authorization": "Bearer clk_ed_the_editor_0000000000000"}
ANA = {"Authorization": "Bearer clk_ana_the_approver_000000000000"}
BO = {"Authorization": "Bearer clk_bo_the_approver_0000000000000"}
SAM = {"Authorization": "Bearer clk_sam_the_sender_00000000000000"}


@pytest.fixture
async def people(clarion: bootstrap.Clarion) -> None:
    """Ed writes templates, Ana and Bo review them, Sam's business system sends."""
    for name, roles, headers in (
        ("ed", ("editor",), ED),
        ("ana", ("approver",), ANA),
        ("bo", ("approver",), BO),
        ("sam", ("sender",), SAM),
    ):
        await clarion.keys.create(name, roles, key=headers["Authorization"].removeprefix("Bearer "))


def sms(text: str) -> dict[str, Any]:
    return {"sms": {"text": text}}


async def put_as(api: httpx.AsyncClient, headers: dict[str, str], key: str, **body: Any) -> httpx.Response:
    body.setdefault("name", key)
    body.setdefault("category", "marketing")
    return await api.put(f"/v1/templates/{key}", json=body, headers=headers)


async def review(
    api: httpx.AsyncClient, headers: dict[str, str], key: str, number: int, action: str, comment: str | None = None
) -> httpx.Response:
    body = {"comment": comment} if comment is not None else None
    return await api.post(f"/v1/templates/{key}/versions/{number}/{action}", json=body, headers=headers)


async def approved_by_both(api: httpx.AsyncClient, key: str, number: int) -> None:
    assert (await review(api, ED, key, number, "submit")).status_code == 200
    assert (await review(api, ANA, key, number, "approve")).status_code == 200
    done = await review(api, BO, key, number, "approve")
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "approved"


async def send(api: httpx.AsyncClient, key: str, user: str, **data: Any) -> httpx.Response:
    return await api.post("/v1/messages", json={"template": key, "to": user, "data": data})


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    found: dict[str, Any] = response.json()["error"]
    return found


@pytest.fixture
async def shopper(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> str:
    """A user marketing can reach at any hour (no sending windows)."""
    await set_policies(clarion, send_windows={})
    await put_user(api, "u1", addresses={"sms": PHONE})
    return "u1"


# -- versions ------------------------------------------------------------------------------------------------


async def test_every_put_saves_a_version_that_can_be_read_and_diffed(api: httpx.AsyncClient) -> None:
    await put_template(api, "welcome", channels={"sms": {"text": "Hi {name}\nWelcome aboard"}})
    second = await put_template(api, "welcome", priority="high", channels={"sms": {"text": "Hi {name}\nWelcome!"}})
    assert (second["version"], second["live_version"], second["status"]) == (2, 2, "approved")

    listed = (await api.get("/v1/templates/welcome/versions")).json()
    assert [(v["version"], v["status"], v["author"]) for v in listed["versions"]] == [
        (2, "approved", "bootstrap"),
        (1, "approved", "bootstrap"),
    ]
    first = (await api.get("/v1/templates/welcome/versions/1")).json()
    assert first["body"]["channels"] == {"sms": {"text": "Hi {name}\nWelcome aboard"}}
    assert first["body"]["priority"] == "normal"

    diff = (await api.get("/v1/templates/welcome/versions/2/diff")).json()
    assert diff["against"] == 1
    assert [(c["path"], c["old"], c["new"]) for c in diff["changes"]] == [
        ("channels.sms.text", "Hi {name}\nWelcome aboard", "Hi {name}\nWelcome!"),
        ("priority", "normal", "high"),
    ]
    assert "-Welcome aboard\n+Welcome!" in diff["changes"][0]["text_diff"]
    backwards = (await api.get("/v1/templates/welcome/versions/1/diff", params={"against": 2})).json()
    assert [(c["path"], c["new"]) for c in backwards["changes"]] == [
        ("channels.sms.text", "Hi {name}\nWelcome aboard"),
        ("priority", "normal"),
    ]
    assert error(await api.get("/v1/templates/welcome/versions/3"), 404)["code"] == "not_found"
    assert (await api.get("/v1/templates/welcome/versions/2/diff", params={"against": 9})).status_code == 404
    assert (await api.get("/v1/templates/nothing/versions")).status_code == 404


async def test_versions_page_newest_first(api: httpx.AsyncClient) -> None:
    for text in "abcde":
        await put_template(api, "t", channels=sms(text))
    first = (await api.get("/v1/templates/t/versions", params={"limit": 2})).json()
    assert [v["version"] for v in first["versions"]] == [5, 4]
    rest = (await api.get("/v1/templates/t/versions", params={"before": first["next_cursor"]})).json()
    assert [v["version"] for v in rest["versions"]] == [3, 2, 1]
    assert rest["next_cursor"] is None


async def test_a_deleted_templates_versions_stay_and_numbering_continues(api: httpx.AsyncClient) -> None:
    await put_template(api, "gone", channels=sms("one"))
    assert (await api.delete("/v1/templates/gone")).status_code == 204
    assert [v["version"] for v in (await api.get("/v1/templates/gone/versions")).json()["versions"]] == [1]
    again = await put_template(api, "gone", channels=sms("two"))
    assert again["version"] == 2
    assert (await api.get("/v1/templates/gone/versions/1")).json()["body"]["channels"] == sms("one")


# -- approval ------------------------------------------------------------------------------------------------


async def test_a_transactional_template_an_editor_saves_is_sent_at_once(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, people: None
) -> None:
    await put_user(api, "u1", addresses={"sms": PHONE})
    saved = await put_as(api, ED, "receipt", category="transactional", channels=sms("Paid {data.n}"))
    assert saved.status_code == 201, saved.text
    assert (saved.json()["status"], saved.json()["live_version"]) == ("approved", 1)
    assert (await send(api, "receipt", "u1", n=1)).status_code == 202
    assert await drain(clarion) == 1
    assert [m["content"]["text"] for m in sink(clarion)] == ["Paid 1"]


async def test_marketing_is_sent_only_after_two_approvals_by_two_people_other_than_its_author(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, people: None, shopper: str
) -> None:
    saved = await put_as(api, ED, "promo", channels=sms("Sale {data.n}"))
    assert (saved.json()["status"], saved.json()["live_version"]) == ("draft", None)
    refused = error(await send(api, "promo", shopper, n=1), 409)
    assert (refused["code"], refused["details"]) == ("not_approved", {"template": "promo"})

    submitted = await review(api, ED, "promo", 1, "submit")
    assert (submitted.json()["status"], submitted.json()["awaiting"]) == ("pending_review", "business")
    own = error(await review(api, ED, "promo", 1, "approve"), 403)
    assert own["code"] == "forbidden"  # an editor may not approve at all

    first = await review(api, ANA, "promo", 1, "approve", "copy is fine")
    assert first.status_code == 200, first.text
    assert (first.json()["status"], first.json()["awaiting"], first.json()["live_version"]) == (
        "pending_review",
        "compliance",
        None,
    )
    assert [(a["level"], a["by"], a["comment"]) for a in first.json()["approvals"]] == [
        ("business", "ana", "copy is fine")
    ]
    twice = error(await review(api, ANA, "promo", 1, "approve"), 403)
    assert (twice["code"], twice["details"]) == ("already_approved", {"level": "business"})
    assert error(await send(api, "promo", shopper, n=2), 409)["code"] == "not_approved"

    second = await review(api, BO, "promo", 1, "approve")
    assert (second.json()["status"], second.json()["live_version"]) == ("approved", 1)
    assert error(await review(api, BO, "promo", 1, "approve"), 409)["code"] == "invalid_transition"
    assert (await send(api, "promo", shopper, n=3)).status_code == 202
    assert await drain(clarion) == 1
    assert [m["content"]["text"] for m in sink(clarion)] == ["Sale 3"]
    assert (await api.get("/v1/templates/promo")).json()["status"] == "approved"


async def test_the_author_cannot_approve_their_own_version_even_as_approver(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, people: None
) -> None:
    await clarion.keys.create("ana", ("editor", "approver"), key="clk_ana_second_key_with_two_roles_0")
    both = {"Authorization": "Bearer clk_ana_second_key_with_two_roles_0"}
    await put_as(api, both, "promo", channels=sms("Sale"))
    assert (await review(api, both, "promo", 1, "submit")).status_code == 200
    for headers in (both, ANA):  # the same name, whichever of her keys
        own = error(await review(api, headers, "promo", 1, "approve"), 403)
        assert (own["code"], own["details"]) == ("own_version", {"author": "ana"})
    version = (await api.get("/v1/templates/promo/versions/1")).json()
    assert (version["status"], version["approvals"]) == ("pending_review", [])


async def test_roles_decide_who_may_write_review_and_configure(api: httpx.AsyncClient, people: None) -> None:
    forbidden = error(await put_as(api, ANA, "promo", channels=sms("x")), 403)
    assert (forbidden["code"], forbidden["details"]["needs"]) == ("forbidden", ["admin", "editor"])
    assert error(await put_as(api, SAM, "promo", channels=sms("x")), 403)["code"] == "forbidden"
    assert (await api.get("/v1/templates/promo")).status_code == 404

    await put_as(api, ED, "promo", channels=sms("x"))
    assert error(await review(api, SAM, "promo", 1, "submit"), 403)["code"] == "forbidden"
    await review(api, ED, "promo", 1, "submit")
    assert error(await review(api, ED, "promo", 1, "reject", "no"), 403)["code"] == "forbidden"
    assert error(await api.delete("/v1/templates/promo", headers=ANA), 403)["code"] == "forbidden"
    assert error(await api.put("/v1/approval/settings", json={"levels": {}}, headers=ED), 403)["code"] == "forbidden"
    assert error(await api.put("/v1/test-recipients", json={"recipients": ["u9"]}, headers=ED), 403)
    rule = {"event": "signup", "template": "promo"}
    assert error(await api.put("/v1/rules/r", json=rule, headers=ANA), 403)["code"] == "forbidden"
    assert (await api.put("/v1/rules/r", json=rule, headers=ED)).status_code == 201
    # reading needs only a key
    assert (await api.get("/v1/templates/promo/versions", headers=SAM)).status_code == 200


async def test_a_rejection_needs_a_comment_and_is_final(api: httpx.AsyncClient, people: None) -> None:
    await put_as(api, ED, "promo", channels=sms("BUY NOW"))
    await review(api, ED, "promo", 1, "submit")
    missing = error(await review(api, ANA, "promo", 1, "reject"), 422)
    assert missing["code"] == "comment_required"
    assert error(await review(api, ANA, "promo", 1, "reject", "  "), 422)["code"] == "comment_required"
    rejected = await review(api, ANA, "promo", 1, "reject", "too loud")
    assert (rejected.json()["status"], rejected.json()["comment"]) == ("rejected", "too loud")
    assert error(await review(api, ED, "promo", 1, "submit"), 409)["code"] == "invalid_transition"
    assert error(await review(api, BO, "promo", 1, "approve"), 409)["code"] == "invalid_transition"
    assert (await api.get("/v1/templates/promo")).json()["status"] == "rejected"


async def test_editing_approved_marketing_keeps_the_approved_version_live_until_the_new_one_is_approved(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, people: None, shopper: str
) -> None:
    await put_as(api, ED, "promo", channels=sms("Old sale {data.n}"))
    await approved_by_both(api, "promo", 1)
    edited = (await put_as(api, ED, "promo", channels=sms("New sale {data.n}"))).json()
    assert (edited["version"], edited["live_version"], edited["status"]) == (2, 1, "draft")
    assert edited["channels"] == sms("New sale {data.n}")  # GET shows the latest

    sent = (await send(api, "promo", shopper, n=1)).json()
    detail = (await api.get(f"/v1/messages/{sent['messages'][0]['id']}")).json()
    assert detail["template_version"] == 1
    await approved_by_both(api, "promo", 2)
    sent = (await send(api, "promo", shopper, n=2)).json()
    detail = (await api.get(f"/v1/messages/{sent['messages'][0]['id']}")).json()
    assert detail["template_version"] == 2
    assert await drain(clarion) == 2
    assert [m["content"]["text"] for m in sink(clarion)] == ["Old sale 1", "New sale 2"]


def ab(weight_a: int, weight_b: int, text_b: str = "B {data.n}") -> list[dict[str, Any]]:
    return [
        {"name": "A", "weight": weight_a, "channels": sms("A {data.n}")},
        {"name": "B", "weight": weight_b, "channels": sms(text_b)},
    ]


async def test_changing_only_variant_weights_needs_no_new_review(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, people: None
) -> None:
    await put_as(api, ED, "promo", channels=sms("base {data.n}"), variants=ab(50, 50))
    await approved_by_both(api, "promo", 1)
    shifted = (await put_as(api, ED, "promo", channels=sms("base {data.n}"), variants=ab(90, 10))).json()
    assert (shifted["version"], shifted["live_version"], shifted["status"]) == (2, 2, "approved")
    version = (await api.get("/v1/templates/promo/versions/2")).json()
    assert version["approvals"][0]["level"] == "weights"

    reworded = (await put_as(api, ED, "promo", channels=sms("base {data.n}"), variants=ab(90, 10, "new B"))).json()
    assert (reworded["version"], reworded["live_version"], reworded["status"]) == (3, 2, "draft")


async def test_an_older_pending_version_cannot_replace_a_newer_live_one(api: httpx.AsyncClient, people: None) -> None:
    await put_as(api, ED, "promo", channels=sms("one"))
    await put_as(api, ED, "promo", channels=sms("two"))
    await review(api, ED, "promo", 1, "submit")
    await approved_by_both(api, "promo", 2)
    await review(api, ANA, "promo", 1, "approve")
    stale = error(await review(api, BO, "promo", 1, "approve"), 409)
    assert (stale["code"], stale["details"]) == ("superseded", {"live_version": 2})
    assert (await api.get("/v1/templates/promo")).json()["live_version"] == 2


async def test_an_operator_can_require_approval_for_any_category(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, people: None
) -> None:
    assert (await api.get("/v1/approval/settings")).json() == {
        "levels": {"marketing": ["business", "compliance"]},
        "test_prefix": "[TEST] ",
    }
    changed = await api.put("/v1/approval/settings", json={"levels": {"transactional": ["compliance"]}})
    assert changed.json() == {"levels": {"transactional": ["compliance"]}, "test_prefix": "[TEST] "}
    bad = error(await api.put("/v1/approval/settings", json={"levels": {"spam": []}}), 422)
    assert (bad["code"], bad["details"]) == ("invalid_approval_settings", {"field": "levels.spam"})

    await put_user(api, "u1", addresses={"sms": PHONE})
    saved = await put_as(api, ED, "receipt", category="transactional", channels=sms("Paid"))
    assert saved.json()["status"] == "draft"
    assert error(await send(api, "receipt", "u1"), 409)["code"] == "not_approved"
    await review(api, ED, "receipt", 1, "submit")
    assert (await review(api, ANA, "receipt", 1, "approve")).json()["status"] == "approved"
    assert (await send(api, "receipt", "u1")).status_code == 202
    # marketing, left out of the table, now needs no approval
    assert (await put_as(api, ED, "promo", channels=sms("Sale"))).json()["status"] == "approved"


# -- audit ---------------------------------------------------------------------------------------------------


async def test_every_review_action_is_in_the_audit_log(api: httpx.AsyncClient, people: None) -> None:
    await put_as(api, ED, "promo", channels=sms("one"))
    await review(api, ED, "promo", 1, "submit")
    await review(api, ED, "promo", 1, "approve")  # refused: logged too
    await review(api, ANA, "promo", 1, "approve", "fine")
    await review(api, BO, "promo", 1, "reject", "not compliant")
    await put_as(api, ED, "other", channels=sms("x"))

    log = (await api.get("/v1/audit", params={"subject": "template:promo"})).json()
    assert [(e["actor"], e["action"], e["subject"]) for e in log["entries"]] == [
        ("bo", "template.reject", "template:promo@1"),
        ("ana", "template.approve", "template:promo@1"),
        ("ed", "template.approve.refused", "template:promo@1"),
        ("ed", "template.submit", "template:promo@1"),
        ("ed", "template.save", "template:promo@1"),
    ]
    assert log["entries"][0]["detail"]["comment"] == "not compliant"
    assert log["entries"][1]["detail"]["level"] == "business"
    assert log["entries"][2]["detail"]["refused"] == "forbidden"

    by_ana = (await api.get("/v1/audit", params={"actor": "ana"})).json()["entries"]
    assert [e["action"] for e in by_ana] == ["template.approve"]
    page = (await api.get("/v1/audit", params={"limit": 2})).json()
    assert [e["subject"] for e in page["entries"]] == ["template:other@1", "template:promo@1"]
    rest = (await api.get("/v1/audit", params={"after": page["next_cursor"]})).json()
    assert len(rest["entries"]) == 4
    assert rest["next_cursor"] is None


# -- test sends ----------------------------------------------------------------------------------------------


async def test_a_draft_test_send_reaches_whitelisted_users_prefixed(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, people: None, shopper: str
) -> None:
    listed = await api.put("/v1/test-recipients", json={"recipients": [{"user_id": "u1", "note": "Ed's phone"}]})
    assert [(r["user_id"], r["note"]) for r in listed.json()["recipients"]] == [("u1", "Ed's phone")]
    assert (await api.get("/v1/test-recipients")).json() == listed.json()
    await put_as(api, ED, "promo", channels=sms("Sale {data.n}"))

    tried = await api.post("/v1/templates/promo/test", json={"to": "u1", "data": {"n": 5}}, headers=ED)
    assert tried.status_code == 202, tried.text
    assert tried.json()["version"] == 1
    detail = (await api.get(f"/v1/messages/{tried.json()['messages'][0]['id']}")).json()
    assert detail["template_version"] == 1
    assert await drain(clarion) == 1
    assert [m["content"]["text"] for m in sink(clarion)] == ["[TEST] Sale 5"]
    version = (await api.get("/v1/templates/promo/versions/1")).json()
    assert version["status"] == "draft"  # a test send approves nothing
    assert error(await send(api, "promo", shopper, n=6), 409)["code"] == "not_approved"
    audit = (await api.get("/v1/audit", params={"action": "template.test"})).json()["entries"]
    assert [(e["actor"], e["subject"], e["detail"]["to"]) for e in audit] == [("ed", "template:promo@1", ["u1"])]


async def test_a_test_send_to_anyone_off_the_whitelist_is_refused_and_sends_nothing(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, people: None, shopper: str
) -> None:
    await put_user(api, "u2", addresses={"sms": "+8613800138001"})
    await api.put("/v1/test-recipients", json={"recipients": ["u1"]})
    await put_as(api, ED, "promo", channels=sms("Sale"))
    refused = error(await api.post("/v1/templates/promo/test", json={"to": ["u1", "u2"]}, headers=ED), 403)
    assert (refused["code"], refused["details"]) == ("not_a_test_recipient", {"field": "to", "user_ids": ["u2"]})
    assert "u2" in refused["message"]
    assert error(await api.post("/v1/templates/promo/test", json={"to": "u1"}, headers=SAM), 403)["code"] == (
        "forbidden"
    )
    assert await drain(clarion) == 0
    assert sink(clarion) == []


async def test_a_test_send_picks_a_version_and_the_prefix_is_configurable(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, people: None, shopper: str
) -> None:
    await api.put("/v1/test-recipients", json={"recipients": ["u1"]})
    await api.put("/v1/approval/settings", json={"test_prefix": "(test) "})
    await put_as(api, ED, "promo", channels=sms("one {data.n}"))
    await put_as(api, ED, "promo", channels=sms("two {data.n}"))
    for number in (1, 2):
        body = {"to": "u1", "version": number, "data": {"n": number}}
        assert (await api.post("/v1/templates/promo/test", json=body, headers=ANA)).status_code == 202
    assert error(await api.post("/v1/templates/promo/test", json={"to": "u1", "version": 3}), 404)
    assert await drain(clarion) == 2
    assert sorted(m["content"]["text"] for m in sink(clarion)) == ["(test) one 1", "(test) two 2"]


# -- keys ----------------------------------------------------------------------------------------------------


async def test_an_admin_creates_keys_with_roles(api: httpx.AsyncClient, people: None) -> None:
    created = await api.post("/v1/api-keys", json={"name": "cy", "roles": ["approver"]})
    assert created.status_code == 201, created.text
    cy = {"Authorization": f"Bearer {created.json()['key']}"}
    assert created.json()["roles"] == ["approver"]
    assert error(await put_as(api, cy, "promo", channels=sms("x")), 403)["code"] == "forbidden"
    await put_as(api, ED, "promo", channels=sms("x"))
    await review(api, ED, "promo", 1, "submit")
    assert (await review(api, cy, "promo", 1, "approve")).json()["approvals"][0]["by"] == "cy"

    unknown = error(await api.post("/v1/api-keys", json={"name": "x", "roles": ["root"]}), 422)
    assert (unknown["code"], unknown["details"]["unknown"]) == ("unknown_role", ["root"])
    assert error(await api.post("/v1/api-keys", json={"name": "x"}, headers=ED), 403)["code"] == "forbidden"
    names = {k["name"]: k["roles"] for k in (await api.get("/v1/api-keys")).json()["keys"]}
    assert names["cy"] == ["approver"] and names["bootstrap"] == ["admin"]
    assert all("key" not in k for k in (await api.get("/v1/api-keys")).json()["keys"])


def test_the_cli_creates_keys_with_roles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from clarion.settings import Settings

    monkeypatch.setenv("CLARION_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("CLARION_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("CLARION_SECRET_KEY", "cli-secret")
    runner = CliRunner()
    assert runner.invoke(cli.app, ["migrate"]).exit_code == 0
    made = runner.invoke(cli.app, ["apikey", "create", "ops", "--role", "editor", "--role", "approver"])
    assert made.exit_code == 0, made.output
    bad = runner.invoke(cli.app, ["apikey", "create", "ops", "--role", "root"])
    assert bad.exit_code != 0
    assert "root" in bad.output

    async def roles() -> tuple[str, ...] | None:
        services = bootstrap.build(Settings())
        try:
            caller = await services.keys.verify(made.output.strip())
            return caller.roles if caller else None
        finally:
            await services.close()

    assert asyncio.run(roles()) == ("editor", "approver")


# -- migration -----------------------------------------------------------------------------------------------


def test_migrating_makes_existing_templates_approved_live_versions(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}", "0002")
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO templates (key, name, category, priority, channels, version, created_at, updated_at) "
            "VALUES ('promo', 'Promo', 'marketing', 'low', '{\"sms\": {\"text\": \"Sale\"}}', 4, "
            "'2026-01-01 00:00:00.000000', '2026-01-02 00:00:00.000000')"
        )
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version, live_version FROM templates").fetchall() == [(4, 4)]
        [(key, number, body, status)] = db.execute(
            "SELECT template_key, version, body, status FROM template_versions"
        ).fetchall()
    import json

    assert (key, number, status) == ("promo", 4, "approved")
    assert json.loads(body) == {
        "name": "Promo",
        "category": "marketing",
        "priority": "low",
        "department": None,
        "owner": None,
        "channels": {"sms": {"text": "Sale"}},
        "policy": None,
        "variants": None,
    }


async def test_only_keys_that_may_send_can_send(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, people: None
) -> None:
    await put_user(api, "u1", addresses={"sms": PHONE})
    await put_template(api, "receipt", channels=sms("paid {n}"))
    for headers in (ED, ANA):
        refused = await api.post("/v1/messages", json={"template": "receipt", "to": "u1"}, headers=headers)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
        event = await api.post("/v1/events", json={"name": "paid", "user_id": "u1"}, headers=headers)
        assert event.status_code == 403
    sent = await api.post("/v1/messages", json={"template": "receipt", "to": "u1", "data": {"n": 1}}, headers=SAM)
    assert sent.status_code == 202, sent.text
    assert await drain(clarion) == 1
