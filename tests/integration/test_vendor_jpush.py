"""The ``jpush`` kind against a fake JPush Push API v3 on loopback checking Basic auth."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import pytest

from clarion.channels import jpush
from clarion.domain import receipts
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, Outgoing
from tests.fakes.jpush import FakeJPush, error

CONTENT = {"title": "订单已发货", "body": "A-1001 已发货", "url": "myshop://orders/1", "link_type": "native"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeJPush]:
    async with FakeJPush() as server:
        yield server


def provider(fake: FakeJPush, **extra: Any) -> jpush.JPushProvider:
    body = {
        "app_key": fake.app_key,
        "master_secret": fake.master_secret,
        "endpoint": fake.url,
        "allow_private_networks": True,
        **extra,
    }
    return jpush.JPushProvider(jpush.JPushProvider.Config.model_validate(body), name="jpush-a")


def outgoing(address: Any, content: dict[str, Any] | None = None) -> Outgoing:
    return Outgoing("d1", "m1", "u1", Channel.PUSH, address, content or CONTENT)


async def send(p: jpush.JPushProvider, item: Outgoing) -> Any:
    try:
        [result] = await p.send([item])
        return result
    finally:
        await p.close()


async def test_jpush_sends_one_notification_to_all_registration_ids(fake: FakeJPush) -> None:
    address = [{"platform": "jpush", "token": "1a0018970a"}, "13065ffa4e", {"platform": "fcm", "token": "f"}]
    result = await send(provider(fake, apns_production=False, time_to_live=600), outgoing(address))
    assert result.error is None and result.provider_message_id.isdigit()
    [pushed] = fake.pushes
    extras = {"url": "myshop://orders/1", "link_type": "native"}
    assert pushed == {
        "platform": ["android", "ios"],
        "audience": {"registration_id": ["1a0018970a", "13065ffa4e"]},
        "notification": {
            "android": {
                "alert": "A-1001 已发货",
                "title": "订单已发货",
                "extras": extras,
                "intent": {"url": "myshop://orders/1"},
            },
            "ios": {"alert": {"title": "订单已发货", "body": "A-1001 已发货"}, "extras": extras},
        },
        "options": {"apns_production": False, "time_to_live": 600},
    }


async def test_jpush_sends_data_only_content_as_a_custom_message(fake: FakeJPush) -> None:
    result = await send(provider(fake, platforms=["android"]), outgoing(["rid"], {"data": {"order": "A-1"}}))
    assert result.error is None
    [pushed] = fake.pushes
    assert pushed["platform"] == ["android"] and "notification" not in pushed
    assert pushed["message"] == {"msg_content": '{"order":"A-1"}', "extras": {"order": "A-1"}}


async def test_jpush_wrong_master_secret_is_refused_and_misconfigured(fake: FakeJPush) -> None:
    result = await send(provider(fake, master_secret="wrong"), outgoing(["rid"]))
    assert isinstance(result.error, PermanentSendError) and result.error.misconfigured
    assert result.error.code == "1004" and "Authen failed" in result.error.message
    assert fake.pushes == []


async def test_jpush_unknown_app_key_is_misconfigured(fake: FakeJPush) -> None:
    result = await send(provider(fake, app_key="0" * 24), outgoing(["rid"]))
    assert isinstance(result.error, PermanentSendError) and result.error.misconfigured and result.error.code == "1008"


async def test_jpush_no_known_registration_id_reports_them_all_dead(fake: FakeJPush) -> None:
    fake.registered = {"someone-else"}
    address = [{"platform": "jpush", "token": "old-1"}, "old-2"]
    result = await send(provider(fake), outgoing(address))
    assert isinstance(result.error, PermanentSendError) and result.error.dead_address and result.error.code == "1011"
    assert result.dead_addresses == ({"platform": "jpush", "token": "old-1"}, "old-2")


async def test_jpush_accepted_for_one_known_id_reports_none_dead(fake: FakeJPush) -> None:
    fake.registered = {"live"}
    result = await send(provider(fake), outgoing(["old", "live"]))
    assert result.error is None and result.dead_addresses == ()


ROWS = [
    (500, 1000, "transient"),
    (400, 1002, "permanent"),
    (400, 1003, "permanent"),
    (401, 1004, "misconfigured"),
    (400, 1005, "permanent"),
    (400, 1008, "misconfigured"),
    (400, 1011, "dead_address"),
    (503, 1030, "transient"),
    (429, 2002, "transient"),
    (403, 2003, "misconfigured"),
    (403, 2004, "misconfigured"),
    (429, 2008, "transient"),
]


@pytest.mark.parametrize(("status", "code", "verdict"), ROWS)
async def test_jpush_error_codes_map_to_our_errors(fake: FakeJPush, status: int, code: int, verdict: str) -> None:
    fake.errors.append(error(status, code, f"vendor says {code}", {"X-Rate-Limit-Reset": "30"}))
    result = await send(provider(fake), outgoing(["rid"]))
    err = result.error
    assert err.code == str(code) and f"vendor says {code}" in err.message
    assert {
        "transient": isinstance(err, TransientSendError) and err.retry_after == 30,
        "permanent": isinstance(err, PermanentSendError) and not (err.misconfigured or err.dead_address),
        "misconfigured": isinstance(err, PermanentSendError) and err.misconfigured,
        "dead_address": isinstance(err, PermanentSendError) and err.dead_address,
    }[verdict]
    assert jpush.ERRORS[code] == verdict


async def test_jpush_address_without_a_jpush_id_is_invalid(fake: FakeJPush) -> None:
    result = await send(provider(fake), outgoing([{"platform": "apns", "token": "ab"}]))
    assert isinstance(result.error, PermanentSendError) and result.error.code == "invalid_address"
    assert fake.requests == []


# -- app-confirmed delivery, the received report ------------------------------------------------------------------

SECRET = "app-confirm-secret-0123456789"


async def test_jpush_with_a_receipt_secret_carries_the_delivery_and_its_ack_in_extras(fake: FakeJPush) -> None:
    result = await send(provider(fake, receipt_secret=SECRET), outgoing(["rid"]))
    digest = hmac.new(SECRET.encode(), b"d1", hashlib.sha256).digest()
    confirm = {"clarion_delivery": "d1", "clarion_ack": base64.urlsafe_b64encode(digest).decode().rstrip("=")}
    [pushed] = fake.pushes
    assert pushed["notification"]["android"]["extras"] == {"url": "myshop://orders/1", "link_type": "native", **confirm}
    assert pushed["notification"]["ios"]["extras"]["clarion_ack"] == confirm["clarion_ack"]
    assert result.provider_message_id in fake.sent  # JPush keeps its msg_id: the received report is asked by it
    custom = await send(provider(fake, receipt_secret=SECRET), outgoing(["rid"], {"data": {"order": "A-1"}}))
    assert custom.error is None and fake.pushes[1]["message"]["extras"] == {"order": "A-1", **confirm}


async def test_jpush_without_a_receipt_secret_carries_no_confirmation_keys(fake: FakeJPush) -> None:
    p = provider(fake)
    await send(p, outgoing(["rid"]))
    assert "clarion_ack" not in fake.pushes[0]["notification"]["android"]["extras"] and not p.takes_receipts


async def test_jpush_polls_the_received_report_for_what_reached_a_device(fake: FakeJPush) -> None:
    fake.registered = {"live", "asleep"}
    p = provider(fake, report_endpoint=fake.url)
    [reached] = await p.send([outgoing(["live"])])
    [waiting] = await p.send([outgoing(["asleep"])])
    fake.offline = {"asleep"}
    try:
        polled = await p.poll_receipts([reached.provider_message_id, waiting.provider_message_id, "d9", "42"])
    finally:
        await p.close()
    [receipt] = polled
    assert (receipt.provider_message_id, receipt.event) == (reached.provider_message_id, receipts.Event.DELIVERED)
    assert receipt.reason == "JPush received report: jpush_received=1"
    assert receipt.detail == {"vendor_status": "received", "received": {"jpush_received": 1}}
    [report] = [r for r in fake.requests if r.path == "/v3/received/detail"]
    assert report.method == "GET" and report.query["msg_ids"].split(",") == [
        reached.provider_message_id,
        waiting.provider_message_id,
        "42",
    ]  # "d9" is a delivery id, not a msg_id: not asked about


async def test_jpush_report_counts_any_received_counter(fake: FakeJPush) -> None:
    line = {"msg_id": 7, "jpush_received": None, "ios_apns_received": 2, "android_pns_sent": 3}
    receipt = jpush.received(line)
    assert receipt is not None and receipt.provider_message_id == "7"
    assert receipt.detail["received"] == {"ios_apns_received": 2}
    assert jpush.received({"msg_id": "8", "jpush_received": 0, "android_pns_received": None}) is None


async def test_jpush_polling_with_a_wrong_secret_raises_the_misconfiguration(fake: FakeJPush) -> None:
    p = provider(fake, report_endpoint=fake.url, master_secret="wrong")
    try:
        with pytest.raises(PermanentSendError) as refused:
            await p.poll_receipts(["1234"])
    finally:
        await p.close()
    assert refused.value.misconfigured and refused.value.code == "1004"


def test_jpush_report_endpoint_defaults_to_the_real_host(fake: FakeJPush) -> None:
    config = jpush.JPushProvider.Config.model_validate({"app_key": "k", "master_secret": "s"})
    assert config.report_endpoint == "https://report.jpush.cn"
    assert "report_endpoint" in jpush.JPushProvider.Config.destination_fields
