"""Receipts: from ``sent`` to ``delivered``, ``undelivered``, ``bounced`` and ``read``.

Each path goes over HTTP as a vendor and an operator take it: providers configured through ``PUT /v1/providers``,
messages sent through ``POST /v1/messages`` and handed to a vendor on loopback, receipts posted to
``POST /r/{provider_name}`` (no API key: the vendor's own signature or token), bounces to
``POST /r/{provider_name}/bounces``, and every status read back through ``GET /v1/messages/{id}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.store import tables as t
from tests.acceptance.test_e2e_channels import SmtpRecorder, message, put_provider, send_one, smtp_server, statuses
from tests.conftest import drain, put_template, put_user
from tests.integration.loopback import LoopbackServer, Reply
from tests.integration.test_dsn import HARD, report

__all__ = ["smtp_server"]  # the fixture, used here
PHONE = "+8613800138000"
SECRET = "vendor-receipt-key-0123456789"
BOUNCE_TOKEN = "bounce-pipe-token-0123456789"


@pytest.fixture
async def vendor_side(clarion: bootstrap.Clarion) -> AsyncIterator[httpx.AsyncClient]:
    """The API as a vendor calls it: no API key."""
    transport = httpx.ASGITransport(app=create_app(clarion=clarion))
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
        yield client


def signed(document: Any, secret: str = SECRET) -> dict[str, Any]:
    body = orjson.dumps(document)
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"content": body, "headers": {"Content-Type": "application/json", "X-Vendor-Signature": signature}}


RECEIPTS = {
    "verify": "hmac",
    "signature_header": "X-Vendor-Signature",
    "id_path": "msgid",
    "status_path": "stat",
    "reason_path": "err",
    "delivered": ["DELIVRD"],
    "undelivered": ["UNDELIV", "EXPIRED"],
}


async def sms_vendor(api: httpx.AsyncClient, url: str, **receipts: Any) -> None:
    config = {
        "url": f"{url}/send",
        "allow_private_networks": True,
        "message_id_path": "data.id",
        "timeout": 5,
        "receipts": {**RECEIPTS, **receipts},
        "receipt_secret": SECRET,
    }
    await put_provider(api, "vendor", "sms", "sms_http", config)
    await put_user(api, "u1", addresses={"sms": PHONE})
    await put_template(api, "code", category="verification", channels={"sms": {"text": "code {data.code}"}})


async def sent_sms(api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_id: str = "v-1") -> str:
    async with LoopbackServer(Reply(200, {"data": {"id": vendor_id}})) as server:
        await sms_vendor(api, server.url)
        message_id = await send_one(api, "code", "u1", {"code": "4711"})
        assert await drain(clarion) == 1
    delivery = (await message(api, message_id))["deliveries"][0]
    assert (delivery["status"], delivery["provider_message_id"]) == ("sent", vendor_id)
    return message_id


async def receipts_kept(clarion: bootstrap.Clarion) -> list[tuple[str, str, str]]:
    r = t.receipts
    async with clarion.db.read() as conn:
        rows = (await conn.execute(sa.select(r.c.provider, r.c.provider_message_id, r.c.status))).all()
    return [tuple(row) for row in rows]


# -- sms_http: the configured receipt mapping -------------------------------------------------------------


async def test_a_delivered_receipt_makes_the_sms_delivered_once(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    message_id = await sent_sms(api, clarion)
    answer = await vendor_side.post("/r/vendor", **signed({"msgid": "v-1", "stat": "DELIVRD"}))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 1, "pending": 0, "ignored": 0}

    detail = await message(api, message_id)
    [delivery] = detail["deliveries"]
    assert (detail["status"], delivery["status"]) == ("delivered", "delivered")
    assert statuses(delivery) == ["queued", "sending", "sent", "delivered"]
    event = delivery["timeline"][-1]
    assert "DELIVRD" in event["reason"]
    assert event["detail"]["provider"] == "vendor" and event["detail"]["vendor_status"] == "DELIVRD"

    again = await vendor_side.post("/r/vendor", **signed({"msgid": "v-1", "stat": "DELIVRD"}))
    assert (again.status_code, again.json()) == (200, {"accepted": 0, "pending": 0, "ignored": 1})
    assert statuses((await message(api, message_id))["deliveries"][0]) == ["queued", "sending", "sent", "delivered"]


async def test_the_same_receipt_posted_at_once_many_times_is_applied_once(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    message_id = await sent_sms(api, clarion)
    request = signed({"msgid": "v-1", "stat": "DELIVRD"})
    answers = await asyncio.gather(*(vendor_side.post("/r/vendor", **request) for _ in range(5)))
    assert [a.status_code for a in answers] == [200] * 5
    assert sum(a.json()["accepted"] for a in answers) == 1
    assert sum(a.json()["ignored"] for a in answers) == 4
    assert statuses((await message(api, message_id))["deliveries"][0]) == ["queued", "sending", "sent", "delivered"]


async def test_undelivered_keeps_the_carrier_s_reason_and_a_late_one_does_not_go_back(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    message_id = await sent_sms(api, clarion)
    answer = await vendor_side.post("/r/vendor", **signed({"msgid": "v-1", "stat": "UNDELIV", "err": "MK:0001"}))
    assert answer.json() == {"accepted": 1, "pending": 0, "ignored": 0}
    detail = await message(api, message_id)
    [delivery] = detail["deliveries"]
    assert (detail["status"], delivery["status"]) == ("undelivered", "undelivered")
    assert "UNDELIV MK:0001" in delivery["timeline"][-1]["reason"]
    assert delivery["timeline"][-1]["detail"]["vendor_reason"] == "MK:0001"

    # the carrier tried again and it arrived: the late, better news is applied
    await vendor_side.post("/r/vendor", **signed({"msgid": "v-1", "stat": "DELIVRD"}))
    assert (await message(api, message_id))["status"] == "delivered"
    # a later "expired" from the vendor is kept on the timeline but does not move it back
    late = await vendor_side.post("/r/vendor", **signed({"msgid": "v-1", "stat": "EXPIRED"}))
    assert late.status_code == 200
    assert late.json() == {"accepted": 0, "pending": 0, "ignored": 1}  # an undelivered is already on the timeline
    [delivery] = (await message(api, message_id))["deliveries"]
    assert delivery["status"] == "delivered"
    assert statuses(delivery) == ["queued", "sending", "sent", "undelivered", "delivered"]


async def test_a_late_undelivered_after_delivered_is_noted_and_the_status_stays(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    message_id = await sent_sms(api, clarion)
    await vendor_side.post("/r/vendor", **signed({"msgid": "v-1", "stat": "DELIVRD"}))
    late = await vendor_side.post("/r/vendor", **signed({"msgid": "v-1", "stat": "UNDELIV", "err": "late"}))
    assert late.json() == {"accepted": 1, "pending": 0, "ignored": 0}
    detail = await message(api, message_id)
    [delivery] = detail["deliveries"]
    assert (detail["status"], delivery["status"]) == ("delivered", "delivered")
    last = delivery["timeline"][-1]
    assert (last["status"], last["detail"]["status_kept"]) == ("undelivered", "delivered")
    assert "status stays delivered" in last["reason"]


async def test_a_receipt_before_the_sent_outcome_is_kept_and_applied_when_it_is_written(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    async with LoopbackServer(Reply(200, {"data": {"id": "v-early"}})) as server:
        await sms_vendor(api, server.url)
        message_id = await send_one(api, "code", "u1", {"code": "1"})
        early = await vendor_side.post("/r/vendor", **signed({"msgid": "v-early", "stat": "DELIVRD"}))
        assert (early.status_code, early.json()) == (200, {"accepted": 0, "pending": 1, "ignored": 0})
        twice = await vendor_side.post("/r/vendor", **signed({"msgid": "v-early", "stat": "DELIVRD"}))
        assert twice.json() == {"accepted": 0, "pending": 0, "ignored": 1}
        assert await receipts_kept(clarion) == [("vendor", "v-early", "delivered")]
        assert (await message(api, message_id))["status"] == "queued"
        assert await drain(clarion) == 1

    detail = await message(api, message_id)
    [delivery] = detail["deliveries"]
    assert (detail["status"], delivery["status"]) == ("delivered", "delivered")
    assert statuses(delivery) == ["queued", "sending", "sent", "delivered"]
    assert "received_at" in delivery["timeline"][-1]["detail"]
    assert await receipts_kept(clarion) == []


async def test_an_unknown_id_is_kept_pending_never_a_server_error(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    await sent_sms(api, clarion)
    batch = [
        {"msgid": "nobody-has-this", "stat": "DELIVRD"},
        {"msgid": "v-1", "stat": "DELIVRD"},
        {"msgid": "v-1", "stat": "ENROUTE"},  # an intermediate vendor status: nothing to do
    ]
    answer = await vendor_side.post("/r/vendor", **signed(batch))
    assert (answer.status_code, answer.json()) == (200, {"accepted": 1, "pending": 1, "ignored": 1})
    assert await receipts_kept(clarion) == [("vendor", "nobody-has-this", "delivered")]


async def test_a_bad_signature_is_refused_and_changes_nothing(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    message_id = await sent_sms(api, clarion)
    forged = signed({"msgid": "v-1", "stat": "DELIVRD"}, secret="not-the-vendor-key")
    unknown = signed({"msgid": "never-seen", "stat": "DELIVRD"}, secret="not-the-vendor-key")
    unsigned = {"content": orjson.dumps({"msgid": "v-1", "stat": "DELIVRD"})}
    for attempt in (forged, unknown, unsigned):
        refused = await vendor_side.post("/r/vendor", **attempt)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "unauthorized"
    # a body changed after signing is not the body signed
    tampered = signed({"msgid": "v-1", "stat": "UNDELIV"})
    tampered["content"] = orjson.dumps({"msgid": "v-1", "stat": "DELIVRD"})
    assert (await vendor_side.post("/r/vendor", **tampered)).status_code == 401

    [delivery] = (await message(api, message_id))["deliveries"]
    assert delivery["status"] == "sent"
    assert statuses(delivery) == ["queued", "sending", "sent"]
    assert await receipts_kept(clarion) == []


async def test_a_shared_token_in_a_header_or_the_query(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    async with LoopbackServer(Reply(200, {"data": {"id": "v-1"}}), Reply(200, {"data": {"id": "v-2"}})) as server:
        await sms_vendor(api, server.url, verify="token", token_header="X-Vendor-Token")
        first = await send_one(api, "code", "u1", {"code": "1"})
        second = await send_one(api, "code", "u1", {"code": "2"})
        assert await drain(clarion) == 2
    by_vendor_id = {}
    for message_id in (first, second):
        [delivery] = (await message(api, message_id))["deliveries"]
        by_vendor_id[delivery["provider_message_id"]] = message_id
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    wrong = await vendor_side.post("/r/vendor?token=guess", content=b"msgid=v-1&stat=DELIVRD", headers=form)
    assert wrong.status_code == 401
    by_header = await vendor_side.post(
        "/r/vendor", content=b"msgid=v-1&stat=DELIVRD", headers={**form, "X-Vendor-Token": SECRET}
    )
    by_query = await vendor_side.post(f"/r/vendor?token={SECRET}", json={"msgid": "v-2", "stat": "UNDELIV"})
    assert (by_header.json()["accepted"], by_query.json()["accepted"]) == (1, 1)
    assert (await message(api, by_vendor_id["v-1"]))["status"] == "delivered"
    assert (await message(api, by_vendor_id["v-2"]))["status"] == "undelivered"


async def test_the_receipt_secret_is_masked_like_every_secret(api: httpx.AsyncClient) -> None:
    await sms_vendor(api, "http://127.0.0.1:9")
    config = (await api.get("/v1/providers/vendor")).json()["config"]
    assert config["receipt_secret"] == "********"
    assert config["receipts"]["status_path"] == "stat"
    refused = await api.put(
        "/v1/providers/other",
        json={"channel": "sms", "kind": "sms_http", "config": {"url": "https://sms.example.com", "receipts": {}}},
    )
    assert refused.status_code == 422
    assert "receipt_secret" in refused.text


async def test_no_such_provider_or_one_taking_no_receipts_is_404(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    plain = {"url": "https://sms.example.com/send"}
    await put_provider(api, "plain", "sms", "sms_http", plain)
    for path in ("/r/nobody", "/r/plain", "/r/inbox", "/r/webhook", "/r/plain/bounces", "/r/nobody/bounces"):
        answer = await vendor_side.post(path, json={"msgid": "x", "stat": "DELIVRD"})
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["error"]["code"] == "not_found"


async def test_an_unreadable_receipt_body_is_422(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    await sms_vendor(api, "http://127.0.0.1:9")
    for document in ({"stat": "DELIVRD"}, "not an object"):
        answer = await vendor_side.post("/r/vendor", **signed(document))
        assert answer.status_code == 422, answer.text


# -- webhook and inbox: proven by the send itself --------------------------------------------------------------


async def test_a_webhook_answered_2xx_is_delivered(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    async with LoopbackServer(Reply(204)) as server:
        await put_provider(api, "hooks", "webhook", "webhook", {"secret": "s", "allow_private_networks": True})
        await put_user(api, "u1", addresses={"webhook": f"{server.url}/hook"})
        await put_template(api, "hook", channels={"webhook": {"body": {"x": 1}}})
        message_id = await send_one(api, "hook", "u1")
        assert await drain(clarion) == 1
    detail = await message(api, message_id)
    [delivery] = detail["deliveries"]
    assert (detail["status"], delivery["status"]) == ("delivered", "delivered")
    assert statuses(delivery) == ["queued", "sending", "sent", "delivered"]
    assert delivery["sent_at"] is not None


async def test_an_inbox_item_is_delivered_when_stored_and_read_when_read(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await put_user(api, "u1")
    await put_template(api, "note", channels={"inbox": {"title": "Hi", "body": "There"}})
    message_id = await send_one(api, "note", "u1")
    assert await drain(clarion) == 1
    detail = await message(api, message_id)
    assert (detail["status"], detail["deliveries"][0]["status"]) == ("delivered", "delivered")

    assert (await api.post(f"/v1/users/u1/inbox/{message_id}/read")).status_code == 200
    assert (await api.post(f"/v1/users/u1/inbox/{message_id}/read")).status_code == 200  # again: harmless
    assert (await api.post("/v1/users/u1/inbox/read-all")).json() == {"updated": 0}
    detail = await message(api, message_id)
    [delivery] = detail["deliveries"]
    assert (detail["status"], delivery["status"]) == ("read", "read")
    assert statuses(delivery) == ["queued", "sending", "sent", "delivered", "read"]
    assert delivery["timeline"][-1]["reason"] == "read in the inbox"


async def test_read_all_makes_each_delivery_read(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    await put_user(api, "u1")
    await put_template(api, "note", channels={"inbox": {"title": "Hi", "body": "Note {data.n}"}})
    ids = [await send_one(api, "note", "u1", {"n": n}) for n in range(2)]
    assert await drain(clarion) == 2
    assert (await api.post("/v1/users/u1/inbox/read-all")).json() == {"updated": 2}
    assert [(await message(api, i))["status"] for i in ids] == ["read", "read"]


# -- smtp: accepted stays sent; bounces ----------------------------------------------------------------------


async def sent_mail(api: httpx.AsyncClient, clarion: bootstrap.Clarion, port: int) -> tuple[str, str]:
    config = {
        "host": "127.0.0.1",
        "port": port,
        "sender": "Clarion <noreply@notify.example.com>",
        "timeout": 5,
        "bounce_token": BOUNCE_TOKEN,
    }
    await put_provider(api, "mail", "email", "smtp", config)
    await put_user(api, "u1", addresses={"email": "li.lei@example.com"})
    await put_template(api, "order", channels={"email": {"subject": "Order", "text": "Shipped"}})
    message_id = await send_one(api, "order", "u1")
    assert await drain(clarion) == 1
    [delivery] = (await message(api, message_id))["deliveries"]
    assert delivery["status"] == "sent"  # the server took it: that is all it says
    return message_id, delivery["provider_message_id"]


async def test_a_dsn_hard_bounce_makes_the_mail_bounced_and_suppresses_the_address(
    api: httpx.AsyncClient,
    clarion: bootstrap.Clarion,
    vendor_side: httpx.AsyncClient,
    smtp_server: tuple[SmtpRecorder, int],
) -> None:
    _, port = smtp_server
    message_id, mail_id = await sent_mail(api, clarion, port)
    original = f"Message-ID: {mail_id}\r\nTo: li.lei@example.com\r\nSubject: Order\r\n"
    dsn = report(HARD, original=original)
    headers = {"Content-Type": 'multipart/report; report-type=delivery-status; boundary="B0UND"'}

    refused = await vendor_side.post("/r/mail/bounces?token=wrong-token", content=dsn, headers=headers)
    assert refused.status_code == 401
    assert (await message(api, message_id))["status"] == "sent"

    taken = await vendor_side.post(
        "/r/mail/bounces", content=dsn, headers={**headers, "Authorization": f"Bearer {BOUNCE_TOKEN}"}
    )
    assert (taken.status_code, taken.json()) == (200, {"accepted": 1, "pending": 0, "ignored": 0})
    detail = await message(api, message_id)
    [delivery] = detail["deliveries"]
    assert (detail["status"], delivery["status"]) == ("bounced", "bounced")
    assert "5.1.1" in delivery["timeline"][-1]["reason"]
    suppressions = (await api.get("/v1/suppressions", params={"address": "li.lei@example.com"})).json()
    [suppression] = suppressions["suppressions"]
    assert (suppression["source"], suppression["channel"]) == ("bounce", "email")

    # the next mail to that address is not sent
    again = await api.post("/v1/messages", json={"template": "order", "to": "u1", "data": {"n": 2}})
    [filtered] = again.json()["messages"]
    [delivery] = (await message(api, filtered["id"]))["deliveries"]
    assert (delivery["status"], delivery["decided_by"]["policy"]) == ("filtered", "suppression")


async def test_a_soft_bounce_in_json_is_on_the_timeline_and_the_status_stays(
    api: httpx.AsyncClient,
    clarion: bootstrap.Clarion,
    vendor_side: httpx.AsyncClient,
    smtp_server: tuple[SmtpRecorder, int],
) -> None:
    _, port = smtp_server
    message_id, mail_id = await sent_mail(api, clarion, port)
    soft = {"message_id": mail_id, "recipient": "li.lei@example.com", "status": "4.2.2", "action": "delayed"}
    taken = await vendor_side.post("/r/mail/bounces", json=soft, headers={"X-Clarion-Token": BOUNCE_TOKEN})
    assert taken.json() == {"accepted": 1, "pending": 0, "ignored": 0}
    [delivery] = (await message(api, message_id))["deliveries"]
    assert delivery["status"] == "sent"
    assert delivery["timeline"][-1]["status"] == "delayed"
    assert (await api.get("/v1/suppressions", params={"address": "li.lei@example.com"})).json()["suppressions"] == []


async def test_a_click_proves_an_undelivered_receipt_wrong(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    async with LoopbackServer(Reply(200, {"data": {"id": "v-1"}})) as server:
        await sms_vendor(api, server.url)
        await put_template(api, "promo", channels={"sms": {"text": "Sale: https://shop.example.com/p?id=1"}})
        message_id = await send_one(api, "promo", "u1")
        assert await drain(clarion) == 1
    await vendor_side.post("/r/vendor", **signed({"msgid": "v-1", "stat": "UNDELIV"}))
    assert (await message(api, message_id))["status"] == "undelivered"
    async with clarion.db.read() as conn:
        code = (await conn.execute(sa.select(t.short_links.c.code))).scalar_one()
    phone = {"User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"}
    assert (await vendor_side.get(f"/s/{code}", headers=phone)).status_code == 302
    detail = await message(api, message_id)
    assert (detail["status"], detail["deliveries"][0]["status"]) == ("clicked", "clicked")
