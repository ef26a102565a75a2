"""Policy configuration through the HTTP API: settings, frequency caps, keyword lists, suppressions, a user's
preferences, a template's policy overrides, and the keyword check when a template is saved."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import put_template, put_user

DEFAULT_SETTINGS: dict[str, Any] = {
    "default_timezone": "UTC",
    "marketing_consent": "opt_out",
    "send_windows": {"marketing": "09:00-20:00"},
    "quiet_hours": {"marketing": "defer", "notification": "defer"},
    "dedup_seconds": 300,
    "safety_valve": {"limit": 100, "window": {"seconds": 3600}},
    "enabled": {
        "consent": True,
        "suppression": True,
        "quiet_hours": True,
        "dedup": True,
        "keywords": True,
        "caps": True,
        "safety_valve": True,
    },
    "fallback": {},
}
NO_PREFERENCES: dict[str, Any] = {"channels": {}, "categories": {}, "marketing_consent": None, "do_not_disturb": None}


def error(response: Any, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()["error"]


def error_fields(response: Any) -> list[str]:
    details = error(response)["details"]
    return [d["field"] for d in details] if isinstance(details, list) else [details["field"]]


# -- settings ------------------------------------------------------------------------------------------------


async def test_settings_are_the_defaults_until_changed(api) -> None:
    response = await api.get("/v1/policies/settings")
    assert response.status_code == 200
    assert response.json() == DEFAULT_SETTINGS


async def test_a_partial_put_changes_only_the_fields_given_and_keeps_earlier_changes(api) -> None:
    first = await api.put("/v1/policies/settings", json={"default_timezone": "Asia/Shanghai"})
    assert first.status_code == 200, first.text
    assert first.json() == {**DEFAULT_SETTINGS, "default_timezone": "Asia/Shanghai"}

    second = await api.put(
        "/v1/policies/settings", json={"dedup_seconds": 60, "send_windows": {"notification": "08:00-22:00"}}
    )
    assert second.status_code == 200, second.text
    assert second.json()["default_timezone"] == "Asia/Shanghai"  # merged onto what was stored, not the defaults
    assert second.json()["dedup_seconds"] == 60
    assert second.json()["send_windows"] == {"notification": "08:00-22:00"}  # a table is replaced whole

    await api.put("/v1/policies/settings", json={"enabled": {"caps": False}})
    third = await api.put("/v1/policies/settings", json={"enabled": {"dedup": False}, "safety_valve": None})
    assert third.status_code == 200, third.text
    expected = {
        **DEFAULT_SETTINGS,
        "default_timezone": "Asia/Shanghai",
        "dedup_seconds": 60,
        "send_windows": {"notification": "08:00-22:00"},
        "safety_valve": None,
        "enabled": {**DEFAULT_SETTINGS["enabled"], "caps": False, "dedup": False},
    }
    assert third.json() == expected
    assert (await api.get("/v1/policies/settings")).json() == expected


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"dedup_seconds": -1}, "dedup_seconds"),
        ({"dedup_seconds": "60"}, "dedup_seconds"),
        ({"marketing_consent": "maybe"}, "marketing_consent"),
        ({"default_timezone": "Mars/Olympus"}, "default_timezone"),
        ({"send_windows": {"marketing": "25:00-26:00"}}, "send_windows.marketing"),
        ({"send_windows": {"spam": "09:00-20:00"}}, "send_windows.spam"),
        ({"quiet_hours": {"notification": "later"}}, "quiet_hours.notification"),
        ({"safety_valve": {"limit": 0, "window": {"seconds": 60}}}, "safety_valve.limit"),
        ({"enabled": {"caps": "no"}}, "enabled.caps"),
        ({"enabled": {"telepathy": True}}, "enabled"),
        ({"colour": "red"}, "settings"),
    ],
)
async def test_a_bad_setting_is_422_naming_the_field_and_nothing_changes(
    api, change: dict[str, Any], field: str
) -> None:
    await api.put("/v1/policies/settings", json={"dedup_seconds": 120})
    response = await api.put("/v1/policies/settings", json={"default_timezone": "Europe/Paris", **change})
    problem = error(response)
    assert problem["code"] == "invalid_policy"
    assert problem["details"]["field"] == field
    assert (await api.get("/v1/policies/settings")).json() == {**DEFAULT_SETTINGS, "dedup_seconds": 120}


async def test_settings_must_be_an_object(api) -> None:
    response = await api.put("/v1/policies/settings", json=["dedup_seconds", 60])
    assert response.status_code == 422
    assert (await api.get("/v1/policies/settings")).json() == DEFAULT_SETTINGS


# -- frequency caps ------------------------------------------------------------------------------------------


async def test_caps_are_created_replaced_listed_and_deleted(api) -> None:
    created = await api.put(
        "/v1/policies/caps/marketing-daily",
        json={"limit": 3, "window": {"unit": "day"}, "category": "marketing", "description": "3 a day"},
    )
    assert created.status_code == 201, created.text
    assert created.json() == {
        "key": "marketing-daily",
        "limit": 3,
        "window": {"unit": "day"},
        "channel": None,
        "category": "marketing",
        "per_department": False,
        "enabled": True,
        "description": "3 a day",
        "summary": "at most 3 marketing per user per day",
    }
    assert (await api.get("/v1/policies/caps/marketing-daily")).json() == created.json()

    replaced = await api.put(
        "/v1/policies/caps/marketing-daily", json={"limit": 5, "window": {"seconds": 3600}, "channel": "sms"}
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["limit"] == 5
    assert replaced.json()["category"] is None  # a PUT replaces the whole cap
    await api.put("/v1/policies/caps/a-weekly", json={"limit": 10, "window": {"unit": "week"}, "enabled": False})

    listed = await api.get("/v1/policies/caps")
    assert listed.status_code == 200
    assert [(c["key"], c["limit"], c["enabled"]) for c in listed.json()["caps"]] == [
        ("a-weekly", 10, False),
        ("marketing-daily", 5, True),
    ]
    assert listed.json()["caps"][1] == (await api.get("/v1/policies/caps/marketing-daily")).json()

    assert (await api.delete("/v1/policies/caps/marketing-daily")).status_code == 204
    missing = await api.get("/v1/policies/caps/marketing-daily")
    assert error(missing, 404) == {
        "code": "not_found",
        "message": "cap 'marketing-daily' not found",
        "details": {"kind": "cap", "key": "marketing-daily"},
    }
    assert error(await api.delete("/v1/policies/caps/marketing-daily"), 404)["code"] == "not_found"
    assert [c["key"] for c in (await api.get("/v1/policies/caps")).json()["caps"]] == ["a-weekly"]


@pytest.mark.parametrize(
    ("cap", "field"),
    [
        ({"limit": 3, "window": {"unit": "month"}}, "window.unit"),
        ({"limit": 3, "window": {}}, "window"),
        ({"limit": 3, "window": {"unit": "day", "seconds": 60}}, "window"),
        ({"limit": 3, "window": {"seconds": 0}}, "window.seconds"),
        ({"limit": 3}, "window"),
        ({"limit": -1, "window": {"unit": "day"}}, "limit"),
        ({"limit": 3, "window": {"unit": "day"}, "channel": "fax"}, "channel"),
        ({"limit": 3, "window": {"unit": "day"}, "per_user": True}, "cap"),
    ],
)
async def test_a_bad_cap_is_422_naming_the_field_and_is_not_stored(api, cap: dict[str, Any], field: str) -> None:
    response = await api.put("/v1/policies/caps/bad", json=cap)
    problem = error(response)
    assert problem["code"] == "invalid_policy"
    assert problem["details"]["field"] == field
    assert (await api.get("/v1/policies/caps/bad")).status_code == 404


# -- keyword lists -------------------------------------------------------------------------------------------


async def test_keyword_lists_are_created_replaced_with_a_new_version_listed_and_deleted(api) -> None:
    created = await api.put(
        "/v1/keyword-lists/gambling",
        json={"action": "block", "words": ["casino", " roulette ", "", "casino"], "description": "no betting"},
    )
    assert created.status_code == 201, created.text
    assert created.json() == {
        "key": "gambling",
        "action": "block",
        "words": ["casino", "roulette"],
        "case_sensitive": False,
        "enabled": True,
        "description": "no betting",
        "version": 1,
        "word_count": 2,
    }

    replaced = await api.put(
        "/v1/keyword-lists/gambling", json={"action": "mask", "words": ["Casino"], "case_sensitive": True}
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["version"] == 2
    assert (replaced.json()["action"], replaced.json()["words"], replaced.json()["description"]) == (
        "mask",
        ["Casino"],
        None,
    )
    again = await api.put("/v1/keyword-lists/gambling", json={"action": "mask", "words": ["Casino"]})
    assert again.json()["version"] == 3
    fetched = await api.get("/v1/keyword-lists/gambling")
    assert fetched.status_code == 200
    assert fetched.json() == again.json()

    await api.put("/v1/keyword-lists/abuse", json={"action": "block", "words": ["a", "b", "c"], "enabled": False})
    listed = await api.get("/v1/keyword-lists")
    assert listed.status_code == 200
    assert [(k["key"], k["word_count"], k["version"], k["enabled"]) for k in listed.json()["keyword_lists"]] == [
        ("abuse", 3, 1, False),
        ("gambling", 1, 3, True),
    ]
    assert all("words" not in k for k in listed.json()["keyword_lists"])

    assert (await api.delete("/v1/keyword-lists/gambling")).status_code == 204
    assert error(await api.get("/v1/keyword-lists/gambling"), 404)["details"] == {
        "kind": "keyword list",
        "key": "gambling",
    }
    assert (await api.delete("/v1/keyword-lists/gambling")).status_code == 404
    assert [k["key"] for k in (await api.get("/v1/keyword-lists")).json()["keyword_lists"]] == ["abuse"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "shout", "words": ["x"]}, "action"),
        ({"words": ["x"]}, "action"),
        ({"action": "block", "words": "casino"}, "words"),
        ({"action": "block", "words": ["ok", 3]}, "words"),
        ({"action": "block", "words": ["x" * 201]}, "words"),
        ({"action": "block", "words": ["x"], "enabled": "yes"}, "enabled"),
        ({"action": "block", "words": ["x"], "regex": True}, "regex"),
    ],
)
async def test_a_bad_keyword_list_is_422_naming_the_field_and_is_not_stored(
    api, body: dict[str, Any], field: str
) -> None:
    response = await api.put("/v1/keyword-lists/bad", json=body)
    problem = error(response)
    assert problem["code"] == "invalid_keyword_list"
    assert problem["details"]["field"] == field
    assert (await api.get("/v1/keyword-lists/bad")).status_code == 404


async def test_a_refused_keyword_list_update_keeps_the_stored_version(api) -> None:
    await api.put("/v1/keyword-lists/kept", json={"action": "block", "words": ["x"]})
    assert (await api.put("/v1/keyword-lists/kept", json={"action": "drop", "words": ["y"]})).status_code == 422
    stored = (await api.get("/v1/keyword-lists/kept")).json()
    assert (stored["version"], stored["action"], stored["words"]) == (1, "block", ["x"])


# -- suppressions --------------------------------------------------------------------------------------------


async def test_a_suppression_is_recorded_once_and_listed_by_user(api) -> None:
    created = await api.post("/v1/suppressions", json={"user_id": "u1", "channel": "sms", "reason": "replied STOP"})
    assert created.status_code == 201, created.text
    suppression = created.json()
    assert {k: v for k, v in suppression.items() if k not in ("id", "created_at")} == {
        "user_id": "u1",
        "address": None,
        "channel": "sms",
        "category": None,
        "reason": "replied STOP",
        "source": "admin",
    }

    same = await api.post("/v1/suppressions", json={"user_id": "u1", "channel": "sms", "source": "sms_reply"})
    assert same.status_code == 200, same.text
    assert same.json() == suppression  # the existing one, not a second
    narrower = await api.post(
        "/v1/suppressions", json={"user_id": "u1", "channel": "sms", "category": "marketing", "source": "user_request"}
    )
    assert narrower.status_code == 201
    await api.post("/v1/suppressions", json={"user_id": "u2"})

    listed = await api.get("/v1/suppressions", params={"user_id": "u1"})
    assert listed.status_code == 200
    assert listed.json() == {"suppressions": [suppression, narrower.json()], "next": None}


async def test_suppressions_by_address_compare_e_mail_case_insensitively(api) -> None:
    created = await api.post("/v1/suppressions", json={"address": " Li@Example.COM ", "source": "complaint"})
    assert created.status_code == 201, created.text
    assert (created.json()["address"], created.json()["user_id"], created.json()["source"]) == (
        "li@example.com",
        None,
        "complaint",
    )
    again = await api.post("/v1/suppressions", json={"address": "LI@example.com", "source": "bounce"})
    assert again.status_code == 200
    assert again.json()["id"] == created.json()["id"]
    await api.post("/v1/suppressions", json={"address": "+8613800138000", "channel": "sms"})

    by_address = (await api.get("/v1/suppressions", params={"address": "lI@EXAMPLE.com"})).json()
    assert [s["id"] for s in by_address["suppressions"]] == [created.json()["id"]]
    assert (await api.get("/v1/suppressions", params={"user_id": "li"})).json()["suppressions"] == []
    everything = (await api.get("/v1/suppressions")).json()["suppressions"]
    assert [s["address"] for s in everything] == ["li@example.com", "+8613800138000"]


async def test_suppressions_are_paged_oldest_first_with_a_next_cursor(api) -> None:
    ids = []
    for i in range(5):
        response = await api.post("/v1/suppressions", json={"user_id": f"u{i}"})
        assert response.status_code == 201
        ids.append(response.json()["id"])

    seen: list[str] = []
    pages = 0
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = (await api.get("/v1/suppressions", params=params)).json()
        pages += 1
        assert len(page["suppressions"]) <= 2
        seen += [s["id"] for s in page["suppressions"]]
        if page["next"] is None:
            break
        params["after"] = page["next"]
    assert seen == ids
    assert pages == 3


async def test_a_deleted_suppression_is_gone(api) -> None:
    kept = (await api.post("/v1/suppressions", json={"user_id": "u1", "channel": "email"})).json()
    gone = (await api.post("/v1/suppressions", json={"user_id": "u1", "channel": "sms"})).json()
    assert (await api.delete(f"/v1/suppressions/{gone['id']}")).status_code == 204
    assert error(await api.delete(f"/v1/suppressions/{gone['id']}"), 404)["details"] == {
        "kind": "suppression",
        "key": gone["id"],
    }
    assert (await api.get("/v1/suppressions", params={"user_id": "u1"})).json()["suppressions"] == [kept]
    again = await api.post("/v1/suppressions", json={"user_id": "u1", "channel": "sms"})
    assert again.status_code == 201  # recorded anew, not found as an identical one
    assert again.json()["id"] != gone["id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channel": "sms"}, "body"),
        ({"user_id": None, "address": None}, "body"),
        ({"address": "   "}, "address"),
        ({"user_id": "u1", "source": "gossip"}, "source"),
        ({"user_id": "u1", "channel": "fax"}, "channel"),
        ({"user_id": "u1", "category": "spam"}, "category"),
        ({"user_id": "not a key!"}, "user_id"),
        ({"user_id": "u1", "until": "forever"}, "until"),
    ],
)
async def test_a_bad_suppression_is_422_and_nothing_is_recorded(api, body: dict[str, Any], field: str) -> None:
    response = await api.post("/v1/suppressions", json=body)
    assert error(response)["code"] == "invalid_input"
    assert field in error_fields(response)
    assert (await api.get("/v1/suppressions")).json() == {"suppressions": [], "next": None}


# -- a user's preferences ------------------------------------------------------------------------------------


async def test_preferences_are_empty_until_set_then_stored_and_shown(api) -> None:
    await put_user(api, "li", addresses={"email": "li@example.com"})
    default = await api.get("/v1/users/li/preferences")
    assert default.status_code == 200
    assert default.json() == NO_PREFERENCES

    chosen = {
        "channels": {"sms": False, "email": True},
        "categories": {"marketing": False, "notification": {"channels": {"push": False}}},
        "marketing_consent": False,
        "do_not_disturb": "22:00-08:00",
    }
    response = await api.put("/v1/users/li/preferences", json=chosen)
    assert response.status_code == 200, response.text
    expected = {
        "channels": {"sms": False},  # what is on is not stored: on is the default
        "categories": {"marketing": False, "notification": {"channels": {"push": False}}},
        "marketing_consent": False,
        "do_not_disturb": "22:00-08:00",
    }
    assert response.json() == expected
    assert (await api.get("/v1/users/li/preferences")).json() == expected
    assert (await api.get("/v1/users/li")).json()["preferences"] == expected

    await put_user(api, "li", addresses={"email": "li@new.example.com"})  # replacing the profile keeps them
    assert (await api.get("/v1/users/li/preferences")).json() == expected

    cleared = await api.put("/v1/users/li/preferences", json={})
    assert cleared.json() == NO_PREFERENCES
    assert (await api.get("/v1/users/li")).json()["preferences"] == NO_PREFERENCES


@pytest.mark.parametrize(
    ("prefs", "field"),
    [
        ({"channels": {"fax": False}}, "channels.fax"),
        ({"channels": {"sms": "off"}}, "channels.sms"),
        ({"categories": {"spam": False}}, "categories.spam"),
        ({"categories": {"marketing": {"channels": {"pigeon": False}}}}, "categories.marketing.channels.pigeon"),
        ({"do_not_disturb": "late"}, "do_not_disturb"),
        ({"marketing_consent": "yes"}, "marketing_consent"),
        ({"volume": 3}, "preferences"),
    ],
)
async def test_bad_preferences_are_422_naming_the_field_and_nothing_changes(
    api, prefs: dict[str, Any], field: str
) -> None:
    await put_user(api, "li")
    await api.put("/v1/users/li/preferences", json={"channels": {"email": False}})
    problem = error(await api.put("/v1/users/li/preferences", json=prefs))
    assert problem["code"] == "invalid_policy"
    assert problem["details"]["field"] == field
    assert (await api.get("/v1/users/li/preferences")).json()["channels"] == {"email": False}


async def test_preferences_of_an_unknown_user_are_404(api) -> None:
    assert error(await api.get("/v1/users/nobody/preferences"), 404)["details"] == {"kind": "user", "key": "nobody"}
    refused = await api.put("/v1/users/nobody/preferences", json={"channels": {"sms": False}})
    assert error(refused, 404)["details"] == {"kind": "user", "key": "nobody"}
    assert (await api.get("/v1/users/nobody")).status_code == 404  # not created by the PUT


# -- templates: policy overrides and the keyword check ------------------------------------------------------


async def test_a_template_policy_is_stored_shown_and_replaced_with_the_template(api) -> None:
    template = await put_template(
        api,
        "promo",
        category="marketing",
        channels={"sms": {"text": "Sale!"}},
        policy={"quiet_hours": "drop", "send_window": "10:00-18:00", "exempt_caps": True},
    )
    policy = {"exempt_caps": True, "quiet_hours": "drop", "send_window": "10:00-18:00", "dedup_seconds": None}
    assert template["policy"] == policy
    assert (await api.get("/v1/templates/promo")).json()["policy"] == policy
    listed = (await api.get("/v1/templates")).json()["templates"]
    assert [t["policy"] for t in listed] == [policy]

    without = await put_template(api, "promo", category="marketing", channels={"sms": {"text": "Sale!"}})
    assert without["policy"] is None
    assert (await api.get("/v1/templates/promo")).json()["policy"] is None


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"quiet_hours": "later"}, "policy.quiet_hours"),
        ({"send_window": "9-5"}, "policy.send_window"),
        ({"dedup_seconds": -5}, "policy.dedup_seconds"),
        ({"exempt_caps": "yes"}, "policy.exempt_caps"),
        ({"priority_boost": 1}, "policy"),
    ],
)
async def test_a_bad_template_policy_is_422_and_the_template_is_not_saved(
    api, policy: dict[str, Any], field: str
) -> None:
    response = await api.put(
        "/v1/templates/promo",
        json={"name": "P", "category": "marketing", "channels": {"sms": {"text": "x"}}, "policy": policy},
    )
    problem = error(response)
    assert problem["code"] == "invalid_policy"
    assert problem["details"]["field"] == field
    assert (await api.get("/v1/templates/promo")).status_code == 404


async def test_a_word_of_a_block_list_refuses_the_template(api) -> None:
    await api.put("/v1/keyword-lists/gambling", json={"action": "block", "words": ["casino"]})
    response = await api.put(
        "/v1/templates/promo",
        json={
            "name": "P",
            "category": "marketing",
            "channels": {
                "sms": {"text": "Hello {name}"},
                "webhook": {"body": {"event": "promo", "lines": ["fun", "Visit our CASINO tonight"]}},
            },
        },
    )
    problem = error(response)
    assert problem["code"] == "blocked_keyword"
    assert problem["details"] == {"list": "gambling", "word": "casino", "field": "channels.webhook.body.lines.1"}
    assert (await api.get("/v1/templates/promo")).status_code == 404

    night = {"name": "P", "category": "marketing", "channels": {"sms": {"text": "casino night"}}}
    assert error(await api.put("/v1/templates/promo", json=night))["details"]["field"] == "channels.sms.text"

    # a disabled list no longer blocks, and neither does a deleted one
    await api.put("/v1/keyword-lists/gambling", json={"action": "block", "words": ["casino"], "enabled": False})
    saved = await api.put("/v1/templates/promo", json=night)
    assert saved.status_code == 201, saved.text
    assert saved.json()["warnings"] == []
    await api.put("/v1/keyword-lists/gambling", json={"action": "block", "words": ["casino"]})
    assert error(await api.put("/v1/templates/promo", json=night))["code"] == "blocked_keyword"
    assert (await api.get("/v1/templates/promo")).json()["version"] == 1
    assert (await api.delete("/v1/keyword-lists/gambling")).status_code == 204
    assert (await api.put("/v1/templates/promo", json=night)).status_code == 200


async def test_words_of_a_mask_list_save_the_template_with_warnings(api) -> None:
    await api.put("/v1/keyword-lists/soft", json={"action": "mask", "words": ["cheap", "free"]})
    response = await api.put(
        "/v1/templates/promo",
        json={
            "name": "P",
            "category": "marketing",
            "channels": {
                "email": {"subject": "Cheap flights", "text": "Hi {name}"},
                "sms": {"text": "cheap, cheap and FREE"},
            },
        },
    )
    assert response.status_code == 201, response.text
    assert response.json()["warnings"] == [
        {"list": "soft", "word": "cheap", "field": "channels.email.subject"},
        {"list": "soft", "word": "cheap", "field": "channels.sms.text"},
        {"list": "soft", "word": "free", "field": "channels.sms.text"},
    ]
    stored = (await api.get("/v1/templates/promo")).json()
    assert stored["channels"]["sms"] == {"text": "cheap, cheap and FREE"}  # saved as written; masked when sent

    clean = await put_template(api, "clean", channels={"sms": {"text": "Your code is {data.code}"}})
    assert clean["warnings"] == []


async def test_the_template_language_is_still_checked_when_keyword_lists_exist(api) -> None:
    await api.put("/v1/keyword-lists/soft", json={"action": "mask", "words": ["cheap"]})
    response = await api.put(
        "/v1/templates/broken",
        json={"name": "B", "category": "notification", "channels": {"sms": {"text": "cheap <#if user.vip gt 3>"}}},
    )
    problem = error(response)
    assert problem["code"] == "invalid_template"
    assert problem["details"]["field"] == "channels.sms.text"
    assert (await api.get("/v1/templates/broken")).status_code == 404
