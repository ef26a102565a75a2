"""Channel fallback at send time: a template's chain holds its fallback deliveries back and fires them when the
original has not reached the user in time, or has failed; a receipt or a read in time cancels them.

Messages go in through ``POST /v1/messages`` and are read back through ``GET /v1/messages/{id}``; push goes
through the built-in file outbox (handed over, never a receipt), SMS through an ``sms_http`` vendor on loopback
where a receipt is needed (``POST /r/{provider}``), inbox is built in (stored is delivered, read through the inbox
API). The dispatcher's and the firer's clock is moved by the tests, so windows pass without waiting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.store import fallbacks
from tests.acceptance.test_e2e_channels import message, put_provider, statuses
from tests.acceptance.test_receipts import RECEIPTS, SECRET, signed
from tests.conftest import drain, put_template, put_user, set_approval, set_policies, sink
from tests.integration.loopback import LoopbackServer, Reply

PHONE = "+8613800138000"
PUSH_SMS = [{"from": "push", "to": "sms", "when": "not_delivered", "within": 120}]
PUSH_AND_SMS = {"push": {"title": "Order", "body": "Shipped"}, "sms": {"text": "Your order shipped"}}


class Clock:
    """The time as the test moves it: the real time plus the seconds it was advanced (receipts and inbox reads
    are stamped with the real time), or from a given moment."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)

    def set(self, at: datetime) -> None:
        self.offset = at - datetime.now(UTC)


@pytest.fixture
def clock(clarion: bootstrap.Clarion) -> Clock:
    """Intake, the dispatcher and the firer on one clock the test moves."""
    controlled = Clock()
    clarion.intake.clock = controlled
    clarion.dispatcher.clock = controlled
    assert clarion.fallbacks is not None
    clarion.fallbacks.clock = controlled
    return controlled


@pytest.fixture
async def vendor_side(clarion: bootstrap.Clarion) -> AsyncIterator[httpx.AsyncClient]:
    """The API as a vendor calls it: no API key."""
    transport = httpx.ASGITransport(app=create_app(clarion=clarion))
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
        yield client


async def fire(clarion: bootstrap.Clarion) -> int:
    assert clarion.fallbacks is not None
    return await clarion.fallbacks.run_once("test-firer")


async def send(api: httpx.AsyncClient, template: str, code: str = "4711") -> dict[str, Any]:
    response = await api.post("/v1/messages", json={"template": template, "to": "u1", "data": {"code": code}})
    assert response.status_code == 202, response.text
    [answer] = response.json()["messages"]
    return answer


def on(detail: dict[str, Any], channel: str) -> dict[str, Any]:
    [delivery] = [d for d in detail["deliveries"] if d["channel"] == channel]
    return delivery


async def steps(clarion: bootstrap.Clarion, message_id: str) -> list[tuple[str, str | None]]:
    async with clarion.db.read() as conn:
        return [(r.state, r.reason) for r in await fallbacks.steps_of(conn, message_id)]


async def sms_vendor(api: httpx.AsyncClient, url: str) -> None:
    config = {
        "url": f"{url}/send",
        "allow_private_networks": True,
        "message_id_path": "data.id",
        "timeout": 5,
        "receipts": RECEIPTS,
        "receipt_secret": SECRET,
    }
    await put_provider(api, "vendor", "sms", "sms_http", config)


# -- not delivered in time ------------------------------------------------------------------------------------


async def test_a_push_not_delivered_within_its_window_is_followed_by_an_sms_with_its_timeline(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, clock: Clock
) -> None:
    await put_user(api, "u1", addresses={"push": ["token-1"], "sms": PHONE})
    await put_template(api, "shipped", category="notification", channels=PUSH_AND_SMS, fallback=PUSH_SMS)
    answer = await send(api, "shipped")
    assert answer["status"] == "queued"
    held = on(await message(api, answer["id"]), "sms")
    assert held["status"] == "accepted" and "held: fallback" in held["timeline"][0]["reason"]

    assert await drain(clarion) == 1  # the push only: the SMS is held back
    assert len(sink(clarion, "push")) == 1 and sink(clarion, "sms") == []
    clock.advance(118)
    assert await fire(clarion) == 0  # not due yet
    clock.advance(3)
    assert await fire(clarion) == 1
    assert await drain(clarion) == 1
    [sent] = sink(clarion, "sms")
    assert sent["content"]["text"] == "Your order shipped" and sent["address"] == PHONE

    detail = await message(api, answer["id"])
    push, sms = on(detail, "push"), on(detail, "sms")
    assert (detail["status"], push["status"], sms["status"]) == ("sent", "sent", "sent")
    assert sms["fallback_of"] == push["id"] and "fallback_of" not in push
    assert statuses(sms) == ["accepted", "queued", "sending", "sent"]
    fired = sms["timeline"][1]
    assert fired["reason"].startswith(f"fallback fired: the push delivery {push['id']} is sent")
    assert "not delivered within 120 s" in fired["reason"]
    assert fired["detail"]["fallback_of"] == push["id"]
    assert [s for s, _ in await steps(clarion, answer["id"])] == ["fired"]
    clock.advance(600)
    assert await fire(clarion) == 0  # fired once


async def test_a_delivered_receipt_in_time_cancels_the_fallback_and_a_late_one_changes_only_the_original(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, clock: Clock, vendor_side: httpx.AsyncClient
) -> None:
    await put_user(api, "u1", addresses={"sms": PHONE, "email": "li@example.com"})
    chain = [{"from": "sms", "to": "email", "when": "not_delivered", "within": 60}]
    channels = {"sms": {"text": "code {data.code}"}, "email": {"subject": "Code", "text": "code {data.code}"}}
    await put_template(api, "code", category="transactional", channels=channels, fallback=chain)
    async with LoopbackServer(Reply(200, {"data": {"id": "v-1"}}), Reply(200, {"data": {"id": "v-2"}})) as server:
        await sms_vendor(api, server.url)
        in_time, late = (await send(api, "code", "1")), (await send(api, "code", "2"))
        assert await drain(clarion) == 2
    first = on(await message(api, in_time["id"]), "sms")["provider_message_id"]
    second = "v-2" if first == "v-1" else "v-1"

    clock.advance(30)
    answer = await vendor_side.post("/r/vendor", **signed({"msgid": first, "stat": "DELIVRD"}))
    assert (answer.status_code, answer.json()["accepted"]) == (200, 1)
    detail = await message(api, in_time["id"])
    email = on(detail, "email")
    assert (detail["status"], on(detail, "sms")["status"], email["status"]) == ("delivered", "delivered", "cancelled")
    assert statuses(email) == ["accepted", "cancelled"]
    assert "delivered" in email["timeline"][-1]["reason"]
    [(state, reason)] = await steps(clarion, in_time["id"])
    assert state == "cancelled" and reason is not None and "delivered" in reason

    clock.advance(31)
    assert await fire(clarion) == 1  # the other message's step only
    assert await drain(clarion) == 1
    assert len(sink(clarion, "email")) == 1
    # its receipt comes after the fallback went out: the original's status changes, nothing else
    late_answer = await vendor_side.post("/r/vendor", **signed({"msgid": second, "stat": "DELIVRD"}))
    assert (late_answer.status_code, late_answer.json()["accepted"]) == (200, 1)
    detail = await message(api, late["id"])
    assert (on(detail, "sms")["status"], on(detail, "email")["status"]) == ("delivered", "sent")
    assert [s for s, _ in await steps(clarion, late["id"])] == ["fired"]


async def test_an_inbox_item_not_read_in_time_is_followed_by_an_sms_and_one_read_in_time_is_not(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, clock: Clock
) -> None:
    await put_user(api, "u1", addresses={"sms": PHONE})
    chain = [{"from": "inbox", "to": "sms", "when": "not_read", "within": 300}]
    channels = {"inbox": {"title": "Bill", "body": "Bill {data.code}"}, "sms": {"text": "Bill {data.code}"}}
    await put_template(api, "bill", category="notification", channels=channels, fallback=chain)
    unread, read = await send(api, "bill", "1"), await send(api, "bill", "2")
    assert await drain(clarion) == 2
    assert on(await message(api, unread["id"]), "inbox")["status"] == "delivered"  # stored is delivered, not read

    marked = await api.post(f"/v1/users/u1/inbox/{read['id']}/read")
    assert marked.status_code == 200, marked.text
    detail = await message(api, read["id"])
    assert (detail["status"], on(detail, "sms")["status"]) == ("read", "cancelled")

    clock.advance(301)
    assert await fire(clarion) == 1
    assert await drain(clarion) == 1
    detail = await message(api, unread["id"])
    sms = on(detail, "sms")
    assert (on(detail, "inbox")["status"], sms["status"]) == ("delivered", "sent")
    assert "not read within 300 s" in sms["timeline"][1]["reason"]
    assert len(sink(clarion, "sms")) == 1


async def test_a_fallback_to_a_channel_the_user_turned_off_is_filtered_with_the_reason(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, clock: Clock
) -> None:
    await put_user(api, "u1", addresses={"push": ["token-1"], "sms": PHONE})
    await put_template(api, "shipped", category="notification", channels=PUSH_AND_SMS, fallback=PUSH_SMS)
    answer = await send(api, "shipped")
    assert await drain(clarion) == 1
    off = await api.put("/v1/users/u1/preferences", json={"channels": {"sms": False}})
    assert off.status_code == 200, off.text

    clock.advance(121)
    assert await fire(clarion) == 1
    assert await drain(clarion) == 0
    detail = await message(api, answer["id"])
    sms = on(detail, "sms")
    assert (detail["status"], sms["status"]) == ("sent", "filtered")
    assert sms["decided_by"]["policy"] == "consent"
    assert sms["timeline"][-1]["reason"].endswith("; opted_out: the user turned sms off")
    assert sms["decided_by"]["reason"] == sms["timeline"][-1]["reason"]
    assert sink(clarion, "sms") == []


# -- failed: at once ------------------------------------------------------------------------------------------


async def test_a_failed_or_undelivered_original_fires_its_fallback_at_once(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, clock: Clock, vendor_side: httpx.AsyncClient
) -> None:
    await put_user(api, "u1", addresses={"sms": PHONE, "email": "li@example.com"})
    chain = [{"from": "sms", "to": "email", "when": "failed"}]
    channels = {"sms": {"text": "code {data.code}"}, "email": {"subject": "Code", "text": "code {data.code}"}}
    await put_template(api, "code", category="transactional", channels=channels, fallback=chain)
    refused = Reply(400, {"code": "InvalidPhone", "message": "no such number"})
    async with LoopbackServer(refused, Reply(200, {"data": {"id": "v-9"}})) as server:
        await sms_vendor(api, server.url)
        failed = await send(api, "code", "1")
        assert await drain(clarion) == 1
        undelivered = await send(api, "code", "2")
        assert await drain(clarion) == 1
    assert on(await message(api, failed["id"]), "sms")["status"] == "failed"
    assert await fire(clarion) == 1  # the clock has not moved: due because the original failed
    receipt = signed({"msgid": "v-9", "stat": "UNDELIV", "err": "MK:0001"})
    assert (await vendor_side.post("/r/vendor", **receipt)).status_code == 200
    assert await fire(clarion) == 1
    assert await drain(clarion) == 2
    for answer, original in ((failed, "failed"), (undelivered, "undelivered")):
        detail = await message(api, answer["id"])
        email = on(detail, "email")
        assert (on(detail, "sms")["status"], email["status"], detail["status"]) == (original, "sent", "sent")
        assert (
            email["timeline"][1]["reason"] == f"fallback fired: the sms delivery {email['fallback_of']} is {original}"
        )
    assert len(sink(clarion, "email")) == 2


# -- urgent, quiet hours, the category default ----------------------------------------------------------------


async def test_an_urgent_message_goes_on_every_channel_at_once_with_no_fallback_step(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, clock: Clock
) -> None:
    await put_user(api, "u1", addresses={"push": ["token-1"], "sms": PHONE})
    await put_template(
        api, "alarm", category="notification", priority="urgent", channels=PUSH_AND_SMS, fallback=PUSH_SMS
    )
    answer = await send(api, "alarm")
    detail = await message(api, answer["id"])
    assert sorted(d["status"] for d in detail["deliveries"]) == ["queued", "queued"]
    assert all("fallback_of" not in d for d in detail["deliveries"])
    assert await steps(clarion, answer["id"]) == []
    assert await drain(clarion) == 2


@pytest.mark.parametrize(("category", "expected"), [("marketing", "deferred"), ("verification", "queued")])
async def test_quiet_hours_hold_a_marketing_fallback_but_not_a_verification_one(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, clock: Clock, category: str, expected: str
) -> None:
    clock.set(datetime(2026, 12, 2, 19, 57, tzinfo=UTC))  # marketing may go 09:00-20:00 (UTC) by default
    await set_policies(clarion, send_windows={"marketing": "09:00-20:00"})
    await set_approval(clarion, levels={})
    await put_user(api, "u1", addresses={"push": ["token-1"], "sms": PHONE})
    chain = [{"from": "push", "to": "sms", "when": "not_delivered", "within": 300}]
    await put_template(api, "t", category=category, channels=PUSH_AND_SMS, fallback=chain)
    answer = await send(api, "t")
    assert await drain(clarion) == 1
    clock.advance(301)  # 20:02: the window has closed
    assert await fire(clarion) == 1
    sms = on(await message(api, answer["id"]), "sms")
    assert sms["status"] == expected
    if expected == "deferred":
        assert sms["decided_by"]["policy"] == "quiet_hours"
        assert sms["run_at"].startswith("2026-12-03T09:00")
    else:
        assert await drain(clarion) == 1


async def test_a_category_default_chain_from_the_policy_settings_applies_to_templates_without_one(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, clock: Clock
) -> None:
    bad = await api.put("/v1/policies/settings", json={"fallback": {"notification": [{"from": "push", "to": "sms"}]}})
    assert bad.status_code == 422, bad.text
    assert bad.json()["error"]["details"]["field"] == "fallback.notification[0]"
    saved = await api.put("/v1/policies/settings", json={"fallback": {"notification": PUSH_SMS}})
    assert saved.status_code == 200, saved.text
    assert saved.json()["fallback"] == {"notification": PUSH_SMS}
    clarion.catalog.invalidate()
    await put_user(api, "u1", addresses={"push": ["token-1"], "sms": PHONE})
    await put_template(api, "plain", category="notification", channels=PUSH_AND_SMS)
    other_channels = {"push": {"title": "Paid", "body": "Paid"}, "sms": {"text": "Paid"}}
    await put_template(api, "receipt", category="transactional", channels=other_channels)
    defaulted, other = await send(api, "plain", "1"), await send(api, "receipt", "2")
    assert on(await message(api, defaulted["id"]), "sms")["status"] == "accepted"
    assert [d["status"] for d in (await message(api, other["id"]))["deliveries"]] == ["queued", "queued"]
    assert await drain(clarion) == 3
    clock.advance(121)
    assert await fire(clarion) == 1
    assert on(await message(api, defaulted["id"]), "sms")["status"] == "queued"
