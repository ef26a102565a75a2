"""API keys over HTTP: created with roles and an optional expiry, refused once expired or revoked (revoked keys
stay listed), their last use recorded in the background, and every creation and revocation in the audit log."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from clarion import apikeys, bootstrap
from tests.conftest import API_KEY


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()["error"]


async def make_key(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "ops")
    made = await api.post("/v1/api-keys", json=body)
    assert made.status_code == 201, made.text
    return made.json()


async def listed(api: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    answer = await api.get("/v1/api-keys")
    assert answer.status_code == 200, answer.text
    return {k["id"]: k for k in answer.json()["keys"]}


# -- expiry --------------------------------------------------------------------------------------------------


async def test_a_key_expires_at_its_time_even_while_cached(api: httpx.AsyncClient) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    made = await make_key(api, expires_at=soon.isoformat())
    assert datetime.fromisoformat(made["expires_at"]) == soon
    assert (await api.get("/v1/api-keys", headers=bearer(made["key"]))).status_code == 200  # now cached
    assert (await listed(api))[made["id"]]["status"] == "active"
    await asyncio.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.05)
    refused = error(await api.get("/v1/api-keys", headers=bearer(made["key"])), 401)
    assert refused["code"] == "unauthorized"
    assert (await listed(api))[made["id"]]["status"] == "expired"


async def test_an_expiry_in_days(api: httpx.AsyncClient) -> None:
    before = datetime.now(UTC)
    made = await make_key(api, expires_in_days=30)
    expires = datetime.fromisoformat(made["expires_at"])
    assert before + timedelta(days=30) <= expires <= datetime.now(UTC) + timedelta(days=30)
    assert (await api.get("/v1/api-keys", headers=bearer(made["key"]))).status_code == 200
    never = await make_key(api, name="forever")
    assert never["expires_at"] is None
    assert (await listed(api))[never["id"]]["expires_at"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"expires_at": "2001-01-01T00:00:00Z"},  # past
        {"expires_at": "2999-01-01T00:00:00"},  # no time zone
        {"expires_at": "2999-01-01T00:00:00Z", "expires_in_days": 3},  # both
        {"expires_in_days": 0},
        {"expires_in_days": "soon"},
    ],
)
async def test_a_bad_expiry_is_refused_and_nothing_is_made(api: httpx.AsyncClient, body: dict[str, Any]) -> None:
    answer = await api.post("/v1/api-keys", json={"name": "bad", **body})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid_input"
    assert [k["name"] for k in (await listed(api)).values()] == ["bootstrap"]


# -- revocation ----------------------------------------------------------------------------------------------


async def test_a_revoked_key_is_refused_at_once_and_stays_listed(api: httpx.AsyncClient) -> None:
    made = await make_key(api, roles=["editor"])
    assert (await api.get("/v1/templates", headers=bearer(made["key"]))).status_code == 200  # now cached

    revoked = await api.delete(f"/v1/api-keys/{made['id']}")
    assert revoked.status_code == 204 and revoked.content == b""
    refused = error(await api.get("/v1/templates", headers=bearer(made["key"])), 401)
    assert refused == {"code": "unauthorized", "message": "invalid API key", "details": None}

    shown = (await listed(api))[made["id"]]
    assert (shown["name"], shown["status"], shown["roles"]) == ("ops", "revoked", ["editor"])
    revoked_at = shown["revoked_at"]
    assert revoked_at is not None
    again = await api.delete(f"/v1/api-keys/{made['id']}")
    assert again.status_code == 204
    assert (await listed(api))[made["id"]]["revoked_at"] == revoked_at  # changed nothing

    unknown = error(await api.delete("/v1/api-keys/no-such-key"), 404)
    assert (unknown["code"], unknown["details"]) == ("not_found", {"kind": "api key", "key": "no-such-key"})


async def test_a_key_may_revoke_itself(api: httpx.AsyncClient) -> None:
    made = await make_key(api, name="leaving")
    own = bearer(made["key"])
    assert (await api.delete(f"/v1/api-keys/{made['id']}", headers=own)).status_code == 204
    assert error(await api.get("/v1/api-keys", headers=own), 401)["code"] == "unauthorized"
    assert (await api.get("/v1/api-keys")).status_code == 200  # the other keys work on


async def test_only_admin_creates_lists_and_revokes_keys(api: httpx.AsyncClient) -> None:
    target = await make_key(api, name="target")
    for role in ("editor", "approver", "sender"):
        key = (await make_key(api, name=role, roles=[role]))["key"]
        assert error(await api.delete(f"/v1/api-keys/{target['id']}", headers=bearer(key)), 403)["code"] == "forbidden"
        assert error(await api.get("/v1/api-keys", headers=bearer(key)), 403)["code"] == "forbidden"
        assert (
            error(await api.post("/v1/api-keys", json={"name": "x"}, headers=bearer(key)), 403)["code"] == "forbidden"
        )
    assert (await listed(api))[target["id"]]["status"] == "active"
    assert (await api.get("/v1/api-keys", headers=bearer(target["key"]))).status_code == 200


async def test_creations_and_revocations_are_audited_without_the_key(api: httpx.AsyncClient) -> None:
    made = await make_key(api, name="ci", roles=["sender"], expires_in_days=7)
    assert (await api.delete(f"/v1/api-keys/{made['id']}")).status_code == 204
    assert (await api.delete(f"/v1/api-keys/{made['id']}")).status_code == 204  # nothing changed: no entry

    answer = await api.get("/v1/audit", params={"subject": f"api_key:{made['id']}"})
    assert answer.status_code == 200, answer.text
    entries = answer.json()["entries"]
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("api_key.revoke", "bootstrap"),
        ("api_key.create", "bootstrap"),
    ]
    revoke, create = entries
    assert create["detail"] == {
        "name": "ci",
        "prefix": made["prefix"],
        "roles": ["sender"],
        "expires_at": made["expires_at"],
    }
    assert revoke["detail"] == {"name": "ci", "prefix": made["prefix"]}
    assert made["key"] not in answer.text and apikeys.hash_key(made["key"]) not in answer.text


# -- last use ------------------------------------------------------------------------------------------------


async def test_last_use_is_written_by_a_flush_not_by_the_request(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    made = await make_key(api, name="used")
    unused = await make_key(api, name="unused")
    before = datetime.now(UTC)
    assert (await api.get("/v1/templates", headers=bearer(made["key"]))).status_code == 200

    stored = {k["id"]: k for k in await apikeys.ApiKeys(clarion.db).described()}  # the table, as another process
    assert stored[made["id"]]["last_used_at"] is None
    here = await listed(api)  # this process adds what it has not written yet
    assert datetime.fromisoformat(here[made["id"]]["last_used_at"]) >= before

    assert await clarion.keys.flush() >= 1
    stored = {k["id"]: k for k in await apikeys.ApiKeys(clarion.db).described()}
    used_at = datetime.fromisoformat(stored[made["id"]]["last_used_at"])
    assert before - timedelta(seconds=1) <= used_at <= datetime.now(UTC)
    assert stored[unused["id"]]["last_used_at"] is None


async def test_last_use_is_flushed_in_the_background(clarion: bootstrap.Clarion) -> None:
    keys = apikeys.ApiKeys(clarion.db, flush_seconds=0.1)
    issued = await keys.issue("bg")
    assert await keys.verify(issued.key) is not None
    assert await keys.verify(issued.key) is not None
    await asyncio.sleep(0.4)
    stored = {k["id"]: k for k in await apikeys.ApiKeys(clarion.db).described()}
    assert stored[issued.id]["last_used_at"] is not None
    await keys.close()


async def test_a_failing_flush_fails_no_request_and_is_retried(
    clarion: bootstrap.Clarion, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = apikeys.ApiKeys(clarion.db)
    issued = await keys.issue("flaky")

    async def broken(job: Any) -> Any:
        raise OSError("disk full")

    assert await keys.verify(issued.key) is not None
    with monkeypatch.context() as patch:
        patch.setattr(clarion.db, "write", broken)
        assert await keys.flush() == 0
        assert await keys.verify(issued.key) is not None  # the request is served regardless
    assert await keys.flush() == 1  # the use kept from the failed flush
    stored = {k["id"]: k for k in await apikeys.ApiKeys(clarion.db).described()}
    assert stored[issued.id]["last_used_at"] is not None
    await keys.close()


# -- several processes' caches -------------------------------------------------------------------------------


async def test_another_instance_sees_a_revocation_within_its_check_interval(clarion: bootstrap.Clarion) -> None:
    """Two ``ApiKeys`` on one database, as two processes have (a real second process: test_api_keys_processes)."""
    other = apikeys.ApiKeys(clarion.db, revocation_check_seconds=0.3)
    issued = await clarion.keys.issue("shared")
    assert await other.verify(issued.key) is not None
    assert await other.verify(API_KEY) is not None

    await clarion.keys.revoke(issued.id, actor="test")
    assert await clarion.keys.verify(issued.key) is None  # the revoking instance: at once
    assert await other.verify(issued.key) is not None  # the other: from its cache, until it looks again
    await asyncio.sleep(0.35)
    assert await other.verify(issued.key) is None
    assert await other.verify(API_KEY) is not None
    await other.close()


async def test_a_key_refused_before_it_was_created_is_accepted_after(clarion: bootstrap.Clarion) -> None:
    key = "clk_made_after_a_refusal_00000000000"
    assert await clarion.keys.verify(key) is None  # remembered as unknown
    await clarion.keys.issue("late", key=key)
    assert await clarion.keys.verify(key) is not None
