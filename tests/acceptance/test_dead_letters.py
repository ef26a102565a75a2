"""Dead letters: ``GET /v1/deliveries`` lists what did not reach its user — failed, undelivered, expired — across
users, filtered and paged; ``POST /v1/deliveries:retry`` puts them back in the queue (``admin``), at most 10,000
per call, on each timeline and once in the audit log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.api.routes import deliveries as route
from clarion.store import tables as t
from tests.acceptance.test_e2e_channels import message, only_delivery, put_provider, send_one, statuses
from tests.conftest import drain, put_template, put_user
from tests.integration.loopback import LoopbackServer, Reply

SAM_KEY = "clk_sam_the_sender_00000000000000"


@pytest.fixture
async def dead(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> Any:
    """Five failed SMS (the vendor refuses them: 400), two expired inbox codes, one undelivered e-mail, and one
    sent inbox note that is not a dead letter. Yields the vendor, whose answers the test can change."""
    await clarion.keys.create("sam", ("sender",), key=SAM_KEY)
    async with LoopbackServer(default=Reply(400, {"error": "invalid number"})) as server:
        config = {"url": f"{server.url}/v1/sms", "allow_private_networks": True, "message_id_path": "data.id"}
        await put_provider(api, "vendor", "sms", "sms_http", config)
        for i in range(5):
            await put_user(api, f"u{i}", addresses={"sms": f"+861380013800{i}", "email": f"u{i}@example.com"})
        await put_template(api, "notice", channels={"sms": {"text": "Order {data.n} shipped"}})
        await put_template(api, "code", ttl_seconds=60, channels={"inbox": {"title": "Code {data.n}", "body": "b"}})
        await put_template(api, "mail", channels={"email": {"subject": "Hi", "text": "Hello {data.n}"}})
        await put_template(api, "note", channels={"inbox": {"title": "Note", "body": "b"}})
        ids: dict[str, list[str]] = {"notice": [], "code": [], "mail": [], "note": []}
        for i in range(5):
            ids["notice"].append(await send_one(api, "notice", f"u{i}", {"n": i}))
        ids["mail"].append(await send_one(api, "mail", "u0", {"n": 0}))
        assert await drain(clarion) == 6  # the SMS fail at once, the e-mail goes to the file provider
        real = clarion.intake.clock
        clarion.intake.clock = lambda: real() - timedelta(seconds=61)  # accepted a minute ago, never claimed
        for i in range(2):
            ids["code"].append(await send_one(api, "code", f"u{i}", {"n": i}))
        clarion.intake.clock = real
        ids["note"].append(await send_one(api, "note", "u3"))
        assert await drain(clarion) == 3
        mail = (await only_delivery(api, ids["mail"][0]))["id"]

        async def job(conn: Any) -> None:  # what a bounce receipt would record
            d = t.deliveries
            await conn.execute(d.update().where(d.c.id == mail).values(status="undelivered", last_error="mailbox full"))

        await clarion.db.write(job)
        yield server, ids


async def listed(api: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    answer = await api.get("/v1/deliveries", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["deliveries"]


async def test_the_dead_letters_across_users_newest_first(api: httpx.AsyncClient, dead: Any) -> None:
    _, ids = dead
    rows = await listed(api)
    assert [r["status"] for r in rows].count("failed") == 5
    assert [r["status"] for r in rows].count("expired") == 2
    assert [r["status"] for r in rows].count("undelivered") == 1
    assert len(rows) == 8  # the sent note is not a dead letter
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)
    assert {r["user_id"] for r in rows} == {"u0", "u1", "u2", "u3", "u4"}
    failed = next(r for r in rows if r["message_id"] == ids["notice"][0])
    assert (failed["template"], failed["channel"], failed["provider"]) == ("notice", "sms", "vendor")
    assert failed["last_error"].startswith("permanent: http_400")
    assert failed["attempts"] == 1
    expired = next(r for r in rows if r["status"] == "expired")
    assert expired["expires_at"] is not None and expired["last_error"].startswith("ttl_expired")


async def test_the_filters_narrow_the_list(api: httpx.AsyncClient, dead: Any) -> None:
    _, ids = dead
    assert len(await listed(api, status="expired")) == 2
    assert len(await listed(api, status=["failed", "undelivered"])) == 6
    assert len(await listed(api, status="failed,expired")) == 7
    assert {r["channel"] for r in await listed(api, channel="sms")} == {"sms"}
    assert len(await listed(api, provider="vendor")) == 5
    assert [r["message_id"] for r in await listed(api, template="mail")] == ids["mail"]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await listed(api, since=future) == []
    assert len(await listed(api, until=future)) == 8


async def test_pages_follow_the_cursor_without_gaps_or_repeats(api: httpx.AsyncClient, dead: Any) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/v1/deliveries", params=params)).json()
        seen += [r["id"] for r in page["deliveries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [r["id"] for r in await listed(api)]
    assert len(seen) == len(set(seen)) == 8


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "sent"}, "status"),
        ({"status": "failed,queued"}, "status"),
        ({"channel": "pigeon"}, "channel"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"since": "2026-01-01T00:00:00"}, "since"),  # no time zone
        ({"limit": 0}, "limit"),
    ],
)
async def test_bad_filters_are_refused_naming_the_field(
    api: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    answer = await api.get("/v1/deliveries", params=params)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert field in error["message"]


async def audit(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    return (await api.get("/v1/audit", params={"action": "deliveries.retry"})).json()["entries"]


async def test_a_bulk_retry_requeues_the_matching_ones_and_they_go_out(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, dead: Any
) -> None:
    server, ids = dead
    server.default = Reply(200, {"data": {"id": "v-ok"}})  # the vendor fixed the problem
    answer = await api.post("/v1/deliveries:retry", json={"status": ["failed"], "reason": "vendor fixed"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"requeued": 5, "skipped_expired": 0, "more": False}
    assert await listed(api, status="failed") == []
    assert len(await listed(api)) == 3  # the expired and the undelivered ones were not asked for

    delivery = await only_delivery(api, ids["notice"][0])
    assert (delivery["status"], delivery["attempts"]) == ("queued", 0)
    event = delivery["timeline"][-1]
    assert (event["status"], event["reason"]) == ("queued", "retry: vendor fixed")
    assert event["detail"]["by"] == "bootstrap"
    [entry] = await audit(api)
    assert (entry["actor"], entry["subject"]) == ("bootstrap", "deliveries:retry")
    assert entry["detail"]["filter"] == {"status": ["failed"]}
    assert (entry["detail"]["requeued"], entry["detail"]["reason"]) == (5, "vendor fixed")

    assert await drain(clarion) == 5
    for message_id in ids["notice"]:
        assert (await only_delivery(api, message_id))["status"] in ("sent", "delivered")
    assert statuses(await only_delivery(api, ids["notice"][0]))[-3:] == ["queued", "sending", "sent"]


async def test_expired_ones_stay_expired_unless_the_ttl_is_renewed(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, dead: Any
) -> None:
    _, ids = dead
    kept = await api.post("/v1/deliveries:retry", json={"status": ["expired"], "reason": "try again"})
    assert kept.json() == {"requeued": 0, "skipped_expired": 2, "more": False}
    assert len(await listed(api, status="expired")) == 2
    renewed = await api.post(
        "/v1/deliveries:retry", json={"status": ["expired"], "reason": "outage over", "renew_ttl": True}
    )
    assert renewed.json() == {"requeued": 2, "skipped_expired": 0, "more": False}
    assert await drain(clarion) == 2  # within their renewed ttl now
    for message_id in ids["code"]:
        assert (await message(api, message_id))["status"] in ("sent", "delivered")
    d = t.deliveries
    async with clarion.db.read() as conn:
        query = sa.select(d.c.expires_at, d.c.created_at).where(d.c.message_id.in_(ids["code"]))
        rows = (await conn.execute(query)).all()
    assert len(rows) == 2
    assert all(r.expires_at > datetime.now(UTC) + timedelta(seconds=50) for r in rows)  # its 60 s, from now
    assert [e["detail"]["skipped_expired"] for e in await audit(api)] == [0, 2]  # newest first


async def test_a_call_requeues_at_most_its_limit(
    api: httpx.AsyncClient, dead: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(route, "MAX_REQUEUED", 3)
    first = await api.post("/v1/deliveries:retry", json={"status": ["failed"], "reason": "again"})
    assert first.json() == {"requeued": 3, "skipped_expired": 0, "more": True}
    second = await api.post("/v1/deliveries:retry", json={"status": ["failed"], "reason": "again"})
    assert second.json() == {"requeued": 2, "skipped_expired": 0, "more": False}


async def test_only_an_admin_may_retry_and_a_refusal_changes_nothing(api: httpx.AsyncClient, dead: Any) -> None:
    refused = await api.post(
        "/v1/deliveries:retry", json={"reason": "please"}, headers={"Authorization": f"Bearer {SAM_KEY}"}
    )
    assert refused.status_code == 403, refused.text
    assert len(await listed(api)) == 8
    assert await audit(api) == []
    bad = await api.post("/v1/deliveries:retry", json={"status": ["sent"], "reason": "x"})
    assert bad.status_code == 422 and "status" in bad.json()["error"]["message"]
    no_reason = await api.post("/v1/deliveries:retry", json={})
    assert no_reason.status_code == 422 and no_reason.json()["error"]["details"][0]["field"] == "reason"
