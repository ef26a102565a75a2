"""Re-send (补发): ``POST /v1/messages/{id}/resend`` makes new deliveries of what the message already rendered,
linked to it, on the timeline and in the audit log with who asked and why; ``sender`` or ``admin`` may, for a
marketing message only ``admin``. Dedup does not swallow it; the safety valve and unsubscribes still hold."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from clarion import bootstrap
from tests.acceptance.test_e2e_channels import message
from tests.conftest import API_KEY, drain, put_template, put_user, set_approval, set_policies, sink

SAM_KEY = "clk_sam_the_sender_00000000000000"
ED_KEY = "clk_ed_the_editor_0000000000000"
PHONE = "+8613800138000"


def as_key(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def sent(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> str:
    """A verification code sent by SMS (and delivered to the file provider); returns its message id."""
    await clarion.keys.create("sam", ("sender",), key=SAM_KEY)
    await clarion.keys.create("ed", ("editor",), key=ED_KEY)
    await put_user(api, "u1", addresses={"sms": PHONE, "email": "u1@example.com"})
    await put_template(
        api,
        "code",
        category="verification",
        ttl_seconds=300,
        channels={"sms": {"text": "验证码 {data.code}"}, "email": {"subject": "Code", "text": "Code {data.code}"}},
    )
    answer = await api.post("/v1/messages", json={"template": "code", "to": "u1", "data": {"code": "4711"}})
    assert answer.status_code == 202, answer.text
    assert await drain(clarion) == 2
    return answer.json()["messages"][0]["id"]


async def resend(api: httpx.AsyncClient, message_id: str, key: str = SAM_KEY, **body: Any) -> httpx.Response:
    body.setdefault("reason", "user says the code never came")
    return await api.post(f"/v1/messages/{message_id}/resend", json=body, headers=as_key(key))


async def audit(api: httpx.AsyncClient, subject: str) -> list[dict[str, Any]]:
    return (await api.get("/v1/audit", params={"subject": subject})).json()["entries"]


async def test_a_resend_sends_the_stored_content_again_linked_and_audited(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, sent: str
) -> None:
    [first] = [d for d in (await message(api, sent))["deliveries"] if d["channel"] == "sms"]
    # the template changes meanwhile: the re-send carries the words the user was sent
    await put_template(api, "code", category="verification", channels={"sms": {"text": "NEW {data.code}"}})

    answer = await resend(api, sent, channels=["sms"])
    assert answer.status_code == 202, answer.text
    [new] = answer.json()["deliveries"]
    assert (new["channel"], new["status"], new["resend_of"]) == ("sms", "queued", first["id"])
    assert answer.json()["message_id"] == sent

    assert await drain(clarion) == 1
    texts = [line["content"]["text"] for line in sink(clarion, "sms")]
    assert texts == ["验证码 4711", "验证码 4711"]
    detail = await message(api, sent)
    sms = [d for d in detail["deliveries"] if d["channel"] == "sms"]
    assert [d["id"] for d in sms] == [first["id"], new["id"]]
    resent = sms[1]
    assert resent["status"] in ("sent", "delivered")
    asked = resent["timeline"][0]
    assert (asked["status"], asked["reason"]) == ("accepted", "resend: user says the code never came")
    assert asked["detail"] == {"resend_of": first["id"], "by": "sam", "reason": "user says the code never came"}

    [entry] = await audit(api, f"message:{sent}")
    assert (entry["action"], entry["actor"]) == ("message.resend", "sam")
    assert entry["detail"]["reason"] == "user says the code never came"
    assert [d["id"] for d in entry["detail"]["deliveries"]] == [new["id"]]


async def test_without_channels_every_channel_is_resent(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, sent: str
) -> None:
    answer = await resend(api, sent)
    assert answer.status_code == 202, answer.text
    assert sorted(d["channel"] for d in answer.json()["deliveries"]) == ["email", "sms"]


async def test_dedup_does_not_swallow_a_resend(api: httpx.AsyncClient, clarion: bootstrap.Clarion, sent: str) -> None:
    again = await api.post("/v1/messages", json={"template": "code", "to": "u1", "data": {"code": "4711"}})
    assert again.json()["messages"][0]["status"] == "filtered"  # the same send again is a duplicate
    answer = await resend(api, sent, channels=["sms"])
    assert [d["status"] for d in answer.json()["deliveries"]] == ["queued"]


async def test_the_safety_valve_still_applies(api: httpx.AsyncClient, clarion: bootstrap.Clarion, sent: str) -> None:
    await set_policies(clarion, safety_valve={"limit": 3, "window": {"seconds": 3600}})  # 2 deliveries so far
    first = await resend(api, sent, channels=["sms"])
    assert [d["status"] for d in first.json()["deliveries"]] == ["queued"]
    second = await resend(api, sent, channels=["sms"])
    [refused] = second.json()["deliveries"]
    assert second.status_code == 202
    assert refused["status"] == "filtered"
    assert refused["reason"].startswith("safety_valve")
    assert await drain(clarion) == 1
    assert len(sink(clarion, "sms")) == 2


async def test_an_unsubscribed_user_is_not_sent_a_resend(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, sent: str
) -> None:
    made = await api.post("/v1/suppressions", json={"user_id": "u1", "channel": "sms", "reason": "STOP"})
    assert made.status_code == 201, made.text
    answer = await resend(api, sent, channels=["sms"])
    [refused] = answer.json()["deliveries"]
    assert refused["status"] == "filtered" and refused["reason"].startswith("unsubscribed")
    assert await drain(clarion) == 0
    assert len(sink(clarion, "sms")) == 1


async def test_roles_sender_and_admin_may_marketing_only_admin(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, sent: str
) -> None:
    refused = await resend(api, sent, ED_KEY)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "forbidden"
    assert (await resend(api, sent, API_KEY, channels=["sms"])).status_code == 202
    assert await drain(clarion) == 1

    await set_approval(clarion, levels={})  # marketing goes out without review here
    await set_policies(clarion, send_windows={})  # and at any hour of the day the test runs
    await put_template(api, "promo", category="marketing", channels={"sms": {"text": "Sale! Reply TD to opt out"}})
    promo = await api.post("/v1/messages", json={"template": "promo", "to": "u1"})
    assert promo.status_code == 202, promo.text
    promo_id = promo.json()["messages"][0]["id"]
    assert await drain(clarion) == 1
    by_sender = await resend(api, promo_id)
    assert by_sender.status_code == 403, by_sender.text
    assert by_sender.json()["error"]["details"]["needs"] == ["admin"]
    assert await audit(api, f"message:{promo_id}") == []  # a refusal writes nothing
    assert (await resend(api, promo_id, API_KEY)).status_code == 202


async def test_what_cannot_be_resent_is_refused_naming_why(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, sent: str
) -> None:
    unknown = await resend(api, "0" * 32)
    assert unknown.status_code == 404
    wrong = await resend(api, sent, channels=["push"])
    assert wrong.status_code == 422
    assert wrong.json()["error"]["details"]["field"] == "channels"
    no_reason = await api.post(f"/v1/messages/{sent}/resend", json={}, headers=as_key(SAM_KEY))
    assert no_reason.status_code == 422
    assert no_reason.json()["error"]["details"][0]["field"] == "reason"
    bad_channel = await resend(api, sent, channels=["pigeon"])
    assert bad_channel.status_code == 422

    await put_user(api, "u2")  # no phone: the SMS is filtered before it is rendered
    await put_template(api, "sms_only", channels={"sms": {"text": "hi"}})
    nothing = await api.post("/v1/messages", json={"template": "sms_only", "to": "u2"})
    filtered = nothing.json()["messages"][0]
    assert filtered["status"] == "filtered"
    refused = await resend(api, filtered["id"])
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "nothing_to_resend"
    assert await audit(api, f"message:{filtered['id']}") == []


async def test_a_resend_gets_the_templates_ttl_from_now(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, sent: str
) -> None:
    from datetime import UTC, datetime, timedelta

    import sqlalchemy as sa

    from clarion.store import tables as t

    answer = await resend(api, sent, channels=["sms"])
    [new] = answer.json()["deliveries"]
    async with clarion.db.read() as conn:
        row = (await conn.execute(sa.select(t.deliveries).where(t.deliveries.c.id == new["id"]))).one()
    assert row.expires_at - row.created_at == timedelta(seconds=300)
    assert abs(row.created_at - datetime.now(UTC)) < timedelta(seconds=30)
