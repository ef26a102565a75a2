"""The ``jpush`` kind against a fake JPush Push API v3 on loopback checking Basic auth."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from clarion.channels import jpush
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
