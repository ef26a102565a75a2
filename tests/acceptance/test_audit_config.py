"""Every configuration change is in the audit log, through the HTTP API: policy settings, caps, keyword lists,
lifted suppressions, deleted users, segments, ID lists, rules and the approval settings. Each change writes
exactly one entry naming who made it and what changed — the values before and after, never a keyword list's
words or an ID list's members — and a refused change (403, 404, 422) writes none."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from clarion import bootstrap
from tests.conftest import drain, put_template, put_user

OPS_KEY = "clk_ops_the_operator_000000000000"
ED_KEY = "clk_ed_the_editor_0000000000000"
SAM_KEY = "clk_sam_the_sender_00000000000000"
AS = {
    "ops": {"Authorization": f"Bearer {OPS_KEY}"},
    "ed": {"Authorization": f"Bearer {ED_KEY}"},
    "sam": {"Authorization": f"Bearer {SAM_KEY}"},
}
Entry = dict[str, Any]


@pytest.fixture
async def people(clarion: bootstrap.Clarion) -> None:
    """Ops administers, Ed edits audiences and rules, Sam's business system owns user data."""
    for name, roles, key in (("ops", ("admin",), OPS_KEY), ("ed", ("editor",), ED_KEY), ("sam", ("sender",), SAM_KEY)):
        await clarion.keys.create(name, roles, key=key)


async def log(api: httpx.AsyncClient, **filters: Any) -> list[Entry]:
    """The audit log, oldest first."""
    response = await api.get("/v1/audit", params={"limit": 1000, **filters})
    assert response.status_code == 200, response.text
    return list(reversed(response.json()["entries"]))


async def change(
    api: httpx.AsyncClient, method: str, path: str, who: str, **request: Any
) -> tuple[httpx.Response, list[Entry]]:
    """Make one request as ``who``; its answer and the entries it added to the log."""
    seen = {e["id"] for e in await log(api)}
    response = await api.request(method, path, headers=AS[who], **request)
    return response, [e for e in await log(api) if e["id"] not in seen]


def only(response: httpx.Response, entries: list[Entry], status: int) -> Entry:
    assert response.status_code == status, response.text
    assert len(entries) == 1, entries
    return entries[0]


def shown(entry: Entry) -> tuple[Any, ...]:
    return entry["actor"], entry["action"], entry["subject"]


# -- policies ------------------------------------------------------------------------------------------------


async def test_a_settings_change_is_logged_with_the_fields_before_and_after(
    api: httpx.AsyncClient, people: None
) -> None:
    stored = (await api.get("/v1/policies/settings")).json()
    body = {"dedup_seconds": stored["dedup_seconds"] + 60, "enabled": {"quiet_hours": False}}
    response, added = await change(api, "PUT", "/v1/policies/settings", "ops", json=body)
    entry = only(response, added, 200)
    assert shown(entry) == ("ops", "policy_settings.update", "policy_settings")
    assert entry["detail"] == {
        "before": {"dedup_seconds": stored["dedup_seconds"], "enabled": stored["enabled"]},
        "after": {"dedup_seconds": body["dedup_seconds"], "enabled": {**stored["enabled"], "quiet_hours": False}},
    }
    assert await log(api, subject="policy_settings", action="policy_settings.update") == [entry]


async def test_a_cap_created_replaced_and_deleted_is_three_entries(api: httpx.AsyncClient, people: None) -> None:
    first = {"limit": 5, "window": {"unit": "day"}}
    response, added = await change(api, "PUT", "/v1/policies/caps/daily", "ops", json=first)
    created = only(response, added, 201)
    assert shown(created) == ("ops", "cap.put", "cap:daily")
    assert created["detail"]["key"] == "daily"
    assert created["detail"]["before"] is None
    assert (created["detail"]["after"]["limit"], created["detail"]["after"]["window"]) == (5, {"unit": "day"})

    response, added = await change(
        api, "PUT", "/v1/policies/caps/daily", "ops", json={**first, "limit": 3, "channel": "sms"}
    )
    replaced = only(response, added, 200)
    assert (replaced["detail"]["before"]["limit"], replaced["detail"]["before"]["channel"]) == (5, None)
    assert (replaced["detail"]["after"]["limit"], replaced["detail"]["after"]["channel"]) == (3, "sms")

    response, added = await change(api, "DELETE", "/v1/policies/caps/daily", "ops")
    deleted = only(response, added, 204)
    assert shown(deleted) == ("ops", "cap.delete", "cap:daily")
    assert deleted["detail"] == {"key": "daily", "before": replaced["detail"]["after"]}
    assert await log(api, subject="cap:daily") == [created, replaced, deleted]
    assert await log(api, action="cap.delete") == [deleted]


async def test_a_keyword_list_entry_counts_the_words_and_never_holds_them(api: httpx.AsyncClient, people: None) -> None:
    response, added = await change(
        api, "PUT", "/v1/keyword-lists/banned", "ops", json={"action": "block", "words": ["zzyzx", "qwvx"]}
    )
    created = only(response, added, 201)
    assert shown(created) == ("ops", "keyword_list.put", "keyword_list:banned")
    assert created["detail"]["before"] is None
    assert (created["detail"]["words_added"], created["detail"]["words_removed"]) == (2, 0)
    assert created["detail"]["after"]["word_count"] == 2

    response, added = await change(
        api, "PUT", "/v1/keyword-lists/banned", "ops", json={"action": "mask", "words": ["zzyzx", "plugh", "xyzzy"]}
    )
    replaced = only(response, added, 200)
    detail = replaced["detail"]
    assert (detail["before"]["action"], detail["before"]["version"], detail["before"]["word_count"]) == ("block", 1, 2)
    assert (detail["after"]["action"], detail["after"]["version"], detail["after"]["word_count"]) == ("mask", 2, 3)
    assert (detail["words_added"], detail["words_removed"]) == (2, 1)

    response, added = await change(api, "DELETE", "/v1/keyword-lists/banned", "ops")
    deleted = only(response, added, 204)
    assert shown(deleted) == ("ops", "keyword_list.delete", "keyword_list:banned")
    assert deleted["detail"] == {"key": "banned", "before": detail["after"]}
    for entry in (created, replaced, deleted):
        assert "zzyzx" not in str(entry)


async def test_a_lifted_suppression_names_its_target_and_why(api: httpx.AsyncClient, people: None) -> None:
    recorded = await api.post(
        "/v1/suppressions",
        headers=AS["sam"],
        json={"address": "Ann@Example.com", "channel": "email", "reason": "marked as spam", "source": "complaint"},
    )
    assert recorded.status_code == 201, recorded.text
    suppression = recorded.json()
    path = f"/v1/suppressions/{suppression['id']}"
    response, added = await change(api, "DELETE", path, "ops", params={"reason": "complained by mistake"})
    entry = only(response, added, 204)
    assert shown(entry) == ("ops", "suppression.lift", f"suppression:{suppression['id']}")
    assert entry["detail"] == {
        "suppression": {
            "user_id": None,
            "address": "ann@example.com",
            "channel": "email",
            "category": None,
            "reason": "marked as spam",
            "source": "complaint",
            "created_at": suppression["created_at"],
        },
        "reason": "complained by mistake",
    }
    assert await log(api, subject=f"suppression:{suppression['id']}") == [entry]


# -- users ---------------------------------------------------------------------------------------------------


async def test_a_deleted_user_is_logged_by_id_without_their_data(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, people: None
) -> None:
    await put_user(api, "u1", attributes={"name": "Ann"}, addresses={"email": "ann@example.com"})
    await put_template(api, "note", channels={"inbox": {"title": "Hello", "body": "Body"}})
    sent = await api.post("/v1/messages", json={"template": "note", "to": "u1"})
    assert sent.status_code == 202, sent.text
    assert await drain(clarion) == 1
    response, added = await change(api, "DELETE", "/v1/users/u1", "sam")
    entry = only(response, added, 204)
    assert shown(entry) == ("sam", "user.delete", "user:u1")
    assert entry["detail"] == {"user_id": "u1", "deliveries_cancelled": 0, "inbox_items_deleted": 1}
    assert "ann" not in str(entry).lower()
    assert await log(api, subject="user:u1") == [entry]


# -- audiences -----------------------------------------------------------------------------------------------


async def test_segments_and_id_lists_are_logged_without_members(api: httpx.AsyncClient, people: None) -> None:
    await put_user(api, "u1", tags=["vip"])
    listed = await api.post(
        "/v1/lists",
        params={"key": "winners", "name": "Winners"},
        content=b"u1\nu2\n",
        headers={**AS["ed"], "content-type": "text/plain"},
    )
    assert listed.status_code == 201, listed.text
    uploads = await log(api, action="id_list.put")
    assert len(uploads) == 1
    assert shown(uploads[0]) == ("ed", "id_list.put", "id_list:winners")
    assert uploads[0]["detail"] == {
        "key": "winners",
        "before": None,
        "after": {"name": "Winners", "kind": "user_id", "size": 2, "unknown": 1},
    }

    conditions = {"and": [{"tag": "vip"}, {"list": "winners"}]}
    response, added = await change(
        api, "PUT", "/v1/segments/vips", "ed", json={"name": "VIPs", "conditions": conditions}
    )
    created = only(response, added, 201)
    assert shown(created) == ("ed", "segment.put", "segment:vips")
    assert created["detail"] == {"key": "vips", "before": None, "after": {"name": "VIPs", "conditions": conditions}}

    response, added = await change(api, "PUT", "/v1/segments/vips", "ed", json={"conditions": {"tag": "vip"}})
    replaced = only(response, added, 200)
    assert replaced["detail"]["before"] == {"name": "VIPs", "conditions": conditions}
    assert replaced["detail"]["after"] == {"name": None, "conditions": {"tag": "vip"}}

    response, added = await change(api, "DELETE", "/v1/segments/vips", "ed")
    deleted = only(response, added, 204)
    assert shown(deleted) == ("ed", "segment.delete", "segment:vips")
    assert deleted["detail"] == {"key": "vips", "before": replaced["detail"]["after"]}

    response, added = await change(api, "DELETE", "/v1/lists/winners", "ed")
    dropped = only(response, added, 204)
    assert shown(dropped) == ("ed", "id_list.delete", "id_list:winners")
    assert dropped["detail"] == {"key": "winners", "before": uploads[0]["detail"]["after"]}
    assert await log(api, subject="segment:vips") == [created, replaced, deleted]


# -- rules and approval --------------------------------------------------------------------------------------


async def test_a_rule_created_replaced_and_deleted_is_logged(api: httpx.AsyncClient, people: None) -> None:
    await put_template(api, "receipt", channels={"inbox": {"title": "Paid", "body": "Thanks"}})
    rule = {"event": "order.paid", "template": "receipt", "condition": "data.total > 100"}
    response, added = await change(api, "PUT", "/v1/rules/big", "ed", json=rule)
    created = only(response, added, 201)
    assert shown(created) == ("ed", "rule.put", "rule:big")
    after = {
        "event": "order.paid",
        "template": "receipt",
        "condition": "data.total > 100",
        "channels": None,
        "enabled": True,
    }
    assert created["detail"] == {"key": "big", "before": None, "after": after}

    response, added = await change(api, "PUT", "/v1/rules/big", "ed", json={**rule, "enabled": False})
    replaced = only(response, added, 200)
    assert replaced["detail"] == {"key": "big", "before": after, "after": {**after, "enabled": False}}

    response, added = await change(api, "DELETE", "/v1/rules/big", "ed")
    deleted = only(response, added, 204)
    assert shown(deleted) == ("ed", "rule.delete", "rule:big")
    assert deleted["detail"] == {"key": "big", "before": {**after, "enabled": False}}


async def test_an_approval_settings_change_is_logged_with_the_fields_before_and_after(
    api: httpx.AsyncClient, people: None
) -> None:
    stored = (await api.get("/v1/approval/settings")).json()
    response, added = await change(api, "PUT", "/v1/approval/settings", "ops", json={"test_prefix": "[TRY] "})
    entry = only(response, added, 200)
    assert shown(entry) == ("ops", "approval_settings.replace", "approval_settings")
    assert entry["detail"] == {"before": {"test_prefix": stored["test_prefix"]}, "after": {"test_prefix": "[TRY] "}}


# -- refusals ------------------------------------------------------------------------------------------------

REFUSED = {
    "settings, not admin": ("PUT", "/v1/policies/settings", "ed", {"json": {"dedup_seconds": 1}}, 403),
    "settings, bad": ("PUT", "/v1/policies/settings", "ops", {"json": {"dedup_seconds": -1}}, 422),
    "cap, not admin": ("PUT", "/v1/policies/caps/daily", "ed", {"json": {"limit": 1, "window": {"unit": "day"}}}, 403),
    "cap, bad": ("PUT", "/v1/policies/caps/daily", "ops", {"json": {"limit": -1, "window": {"unit": "day"}}}, 422),
    "cap, delete unknown": ("DELETE", "/v1/policies/caps/nope", "ops", {}, 404),
    "cap, delete not admin": ("DELETE", "/v1/policies/caps/kept", "ed", {}, 403),
    "keyword list, not admin": (
        "PUT",
        "/v1/keyword-lists/banned",
        "ed",
        {"json": {"action": "block", "words": []}},
        403,
    ),
    "keyword list, bad": ("PUT", "/v1/keyword-lists/banned", "ops", {"json": {"action": "drop", "words": []}}, 422),
    "keyword list, delete unknown": ("DELETE", "/v1/keyword-lists/nope", "ops", {}, 404),
    "keyword list, delete not admin": ("DELETE", "/v1/keyword-lists/kept", "sam", {}, 403),
    "suppression, lift unknown": ("DELETE", "/v1/suppressions/nope", "ops", {}, 404),
    "suppression, lift not admin": ("DELETE", "/v1/suppressions/{suppression}", "sam", {}, 403),
    "user, delete unknown": ("DELETE", "/v1/users/nobody", "sam", {}, 404),
    "user, delete not user data": ("DELETE", "/v1/users/u1", "ed", {}, 403),
    "segment, not editor": ("PUT", "/v1/segments/vips", "sam", {"json": {"conditions": {"tag": "vip"}}}, 403),
    "segment, bad": (
        "PUT",
        "/v1/segments/vips",
        "ed",
        {"json": {"conditions": {"attr": "age", "op": "~", "value": 3}}},
        422,
    ),
    "segment, delete unknown": ("DELETE", "/v1/segments/nope", "ed", {}, 404),
    "id list, delete unknown": ("DELETE", "/v1/lists/nope", "ed", {}, 404),
    "id list, delete not editor": ("DELETE", "/v1/lists/kept", "sam", {}, 403),
    "rule, not editor": ("PUT", "/v1/rules/r", "sam", {"json": {"event": "e", "template": "note"}}, 403),
    "rule, unknown template": ("PUT", "/v1/rules/r", "ed", {"json": {"event": "e", "template": "nope"}}, 422),
    "rule, delete unknown": ("DELETE", "/v1/rules/nope", "ed", {}, 404),
    "approval settings, not admin": ("PUT", "/v1/approval/settings", "ed", {"json": {"test_prefix": "x"}}, 403),
    "approval settings, bad": ("PUT", "/v1/approval/settings", "ops", {"json": {"levels": {"spam": []}}}, 422),
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
async def test_a_refused_change_writes_no_entry(
    api: httpx.AsyncClient, people: None, case: tuple[str, str, str, dict[str, Any], int]
) -> None:
    method, path, who, request, status = case
    await put_user(api, "u1", tags=["vip"])
    await put_template(api, "note", channels={"inbox": {"title": "Hello", "body": "Body"}})
    for made in (
        await api.put("/v1/policies/caps/kept", json={"limit": 5, "window": {"unit": "day"}}),
        await api.put("/v1/keyword-lists/kept", json={"action": "block", "words": ["zzyzx"]}),
        await api.post("/v1/lists", params={"key": "kept"}, content=b"u1\n", headers={"content-type": "text/plain"}),
    ):
        assert made.status_code == 201, made.text
    suppressed = await api.post("/v1/suppressions", json={"user_id": "u1"})
    assert suppressed.status_code == 201, suppressed.text
    response, added = await change(api, method, path.format(suppression=suppressed.json()["id"]), who, **request)
    assert response.status_code == status, response.text
    assert added == []
