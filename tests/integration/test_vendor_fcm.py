"""The ``fcm`` kind against a fake FCM on loopback that checks the RS256 grant and the access token it issued."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from clarion.channels import base, fcm, vendor
from clarion.domain import receipts
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, Outgoing
from tests.fakes.fcm import FakeFcm

CONTENT = {
    "title": "订单已发货",
    "body": "您的订单 A-1001 已发货",
    "url": "https://shop.example/o/1",
    "link_type": "h5",
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeFcm]:
    async with FakeFcm() as server:
        yield server


def provider(fake: FakeFcm, context: vendor.ProviderContext | None = None, **config: Any) -> fcm.FcmProvider:
    body = {"service_account": fake.service_account(), "endpoint": fake.url, "allow_private_networks": True, **config}
    return fcm.FcmProvider(fcm.FcmProvider.Config.model_validate(body), name="fcm-a", context=context)


def outgoing(address: Any, content: dict[str, Any] | None = None, n: int = 1, priority: str | None = None) -> Outgoing:
    return Outgoing(f"d{n}", f"m{n}", "u1", Channel.PUSH, address, content or CONTENT, priority=priority)


async def send(p: fcm.FcmProvider, item: Outgoing) -> Any:
    try:
        [result] = await p.send([item])
        return result
    finally:
        await p.close()


async def test_fcm_sends_a_signed_notification_with_the_link_in_data(fake: FakeFcm) -> None:
    result = await send(provider(fake), outgoing([{"platform": "fcm", "token": "dev-1:APA91b"}], priority="urgent"))
    assert result.error is None, result.error
    assert result.provider_message_id.startswith("projects/clarion-test/messages/0:")
    [message] = fake.messages
    assert message["token"] == "dev-1:APA91b"
    assert message["notification"] == {"title": "订单已发货", "body": "您的订单 A-1001 已发货"}
    assert message["data"] == {"url": "https://shop.example/o/1", "link_type": "h5"}
    assert message["webpush"] == {"fcm_options": {"link": "https://shop.example/o/1"}}
    assert message["android"] == {"priority": "HIGH"}
    assert fake.requests[0].path == "/token" and fake.requests[1].path == "/v1/projects/clarion-test/messages:send"


async def test_fcm_sends_a_data_message_and_lays_the_account_overrides_under_it(fake: FakeFcm) -> None:
    config = {"android": {"ttl": "3600s", "notification": {"channel_id": "orders"}}, "apns": {"headers": {"x": "1"}}}
    content = {"data": {"order": "A-1", "count": 2}, "collapse_id": "orders"}
    result = await send(provider(fake, **config), outgoing(["bare-token:APA91b"], content))
    assert result.error is None
    [message] = fake.messages
    assert "notification" not in message
    assert message["data"] == {"order": "A-1", "count": "2"}
    assert message["android"] == {"ttl": "3600s", "notification": {"channel_id": "orders"}, "collapse_key": "orders"}
    assert message["apns"] == {"headers": {"x": "1"}}


async def test_fcm_reuses_its_access_token_across_sends(fake: FakeFcm) -> None:
    p = provider(fake)
    results = await p.send([outgoing(["a:APA91b"], n=1), outgoing(["b:APA91b"], n=2), outgoing(["c:APA91b"], n=3)])
    await p.close()
    assert all(r.error is None for r in results)
    assert fake.token_requests == 1 and len(fake.messages) == 3


async def test_fcm_refreshes_a_revoked_token_once_and_sends(fake: FakeFcm) -> None:
    context = vendor.ProviderContext()
    first = await send(provider(fake, context), outgoing(["a:APA91b"]))
    fake.revoke_tokens()
    second = await send(provider(fake, context), outgoing(["b:APA91b"], n=2))
    assert first.error is None and second.error is None
    assert fake.token_requests == 2
    assert [r.path for r in fake.requests].count("/v1/projects/clarion-test/messages:send") == 3


async def test_fcm_still_unauthenticated_after_one_refresh_is_misconfigured(fake: FakeFcm) -> None:
    fake.fail("stuck:APA91b", 401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
    result = await send(provider(fake), outgoing(["stuck:APA91b"]))
    assert isinstance(result.error, PermanentSendError) and result.error.misconfigured
    assert result.error.code == "UNAUTHENTICATED"
    assert fake.token_requests == 2


async def test_fcm_key_of_another_account_is_refused_by_the_token_endpoint(fake: FakeFcm) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    result = await send(provider(fake, service_account=fake.service_account(other)), outgoing(["a:APA91b"]))
    assert isinstance(result.error, PermanentSendError) and result.error.misconfigured
    assert result.error.code == "invalid_grant" and "Signature verification failed" in result.error.message
    assert fake.messages == []


ROWS = [
    (404, "NOT_FOUND", "UNREGISTERED", "dead_address"),
    (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "permanent"),
    (403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", "permanent"),
    (429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "transient"),
    (429, "RESOURCE_EXHAUSTED", None, "transient"),
    (503, "UNAVAILABLE", "UNAVAILABLE", "transient"),
    (500, "INTERNAL", "INTERNAL", "transient"),
    (401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR", "misconfigured"),
    (403, "PERMISSION_DENIED", "PERMISSION_DENIED", "misconfigured"),
    (404, "NOT_FOUND", None, "permanent"),
    (400, "INVALID_ARGUMENT", "UNSPECIFIED_ERROR", "permanent"),
]


@pytest.mark.parametrize(("http", "status", "code", "verdict"), ROWS)
async def test_fcm_error_codes_map_to_our_errors(
    fake: FakeFcm, http: int, status: str, code: str, verdict: str
) -> None:
    fake.fail("dev:APA91b", http, status, f"vendor says {status}", code)
    result = await send(provider(fake), outgoing(["dev:APA91b"]))
    error = result.error
    assert error.code == (code or status)
    assert f"vendor says {status}" in error.message
    assert {
        "transient": isinstance(error, TransientSendError),
        "permanent": isinstance(error, PermanentSendError) and not (error.misconfigured or error.dead_address),
        "misconfigured": isinstance(error, PermanentSendError) and error.misconfigured,
        "dead_address": isinstance(error, PermanentSendError) and error.dead_address,
    }[verdict]
    assert set(fcm.ERRORS) >= {r[2] for r in ROWS if r[2]}


async def test_fcm_invalid_argument_naming_the_token_is_a_dead_token(fake: FakeFcm) -> None:
    fake.fail(
        "junk:APA91b",
        400,
        "INVALID_ARGUMENT",
        "The registration token is not valid",
        "INVALID_ARGUMENT",
        field="message.token",
    )
    result = await send(provider(fake), outgoing(["junk:APA91b"]))
    assert isinstance(result.error, PermanentSendError) and result.error.dead_address


async def test_fcm_quota_exceeded_keeps_the_retry_after(fake: FakeFcm) -> None:
    fake.fail("dev:APA91b", 429, "RESOURCE_EXHAUSTED", "quota", "QUOTA_EXCEEDED", retry_after=42)
    result = await send(provider(fake), outgoing(["dev:APA91b"]))
    assert isinstance(result.error, TransientSendError) and result.error.retry_after == 42


async def test_fcm_reports_the_dead_tokens_of_a_delivery_sent_to_the_others(fake: FakeFcm) -> None:
    fake.fail("gone:APA91b", 404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
    dead_item = {"platform": "fcm", "token": "gone:APA91b"}
    address = [dead_item, {"platform": "apns", "token": "ios-1"}, "live:APA91b", {"platform": "jpush", "token": "j"}]
    result = await send(provider(fake), outgoing(address))
    assert result.error is None and result.provider_message_id
    assert result.dead_addresses == (dead_item,)
    assert [m["token"] for m in fake.messages] == ["live:APA91b"]  # apns and jpush items are left to their kinds


async def test_fcm_delivery_whose_every_token_is_dead_fails_as_dead_address(fake: FakeFcm) -> None:
    for token in ("gone-1:APA91b", "gone-2:APA91b"):
        fake.fail(token, 404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
    result = await send(provider(fake), outgoing(["gone-1:APA91b", "gone-2:APA91b"]))
    assert isinstance(result.error, PermanentSendError) and result.error.dead_address
    assert result.error.code == "UNREGISTERED" and result.dead_addresses == ("gone-1:APA91b", "gone-2:APA91b")


async def test_fcm_address_with_no_fcm_token_is_an_invalid_address(fake: FakeFcm) -> None:
    result = await send(provider(fake), outgoing([{"platform": "apns", "token": "ios-1"}]))
    assert isinstance(result.error, PermanentSendError) and result.error.code == "invalid_address"
    assert fake.requests == []


async def test_fcm_config_takes_the_key_as_text_and_refuses_a_broken_one(fake: FakeFcm) -> None:
    import orjson

    config = fcm.FcmProvider.Config.model_validate({"service_account": orjson.dumps(fake.service_account()).decode()})
    assert (config.project_id, config.token_uri, config.endpoint) == (
        "clarion-test",
        fake.token_uri,
        "https://fcm.googleapis.com",
    )
    broken = {**fake.service_account(), "private_key": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"}
    with pytest.raises(ValueError, match="not a PEM private key") as caught:
        fcm.FcmProvider.Config.model_validate({"service_account": broken})
    assert "nope" not in str(caught.value)


async def test_fcm_access_token_is_shared_by_processes_through_redis(fake: FakeFcm) -> None:
    from tests.conftest import connect_redis, disconnect_redis

    redis = await connect_redis()
    try:
        one, two = (vendor.ProviderContext(vendor.TokenCache(redis, prefix="clarion-test:")) for _ in range(2))
        first = await send(provider(fake, one), outgoing(["a:APA91b"], n=1))
        second = await send(provider(fake, two), outgoing(["b:APA91b"], n=2))
    finally:
        await disconnect_redis(redis)
    assert first.error is None and second.error is None
    assert fake.token_requests == 1 and (one.tokens.fetches, two.tokens.fetches) == (1, 0)


async def test_fcm_sends_only_the_bare_tokens_shaped_like_fcm_tokens(fake: FakeFcm) -> None:
    apns_token, jpush_id, subscription_json = "a1" * 32, "1a0018970a9a83e4e5c", '{"endpoint": "https://x"}'
    result = await send(provider(fake), outgoing([apns_token, jpush_id, subscription_json, "f1:APA91b"]))
    assert result.error is None
    assert [m["token"] for m in fake.messages] == ["f1:APA91b"]


async def test_fcm_delivery_with_a_dead_and_an_unavailable_token_retries_and_reports_the_dead(fake: FakeFcm) -> None:
    fake.fail("gone:APA91b", 404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
    fake.fail("busy:APA91b", 503, "UNAVAILABLE", "try later", "UNAVAILABLE")
    result = await send(provider(fake), outgoing(["gone:APA91b", "busy:APA91b"]))
    assert isinstance(result.error, TransientSendError) and result.error.code == "UNAVAILABLE"
    assert result.dead_addresses == ("gone:APA91b",)


# -- app-confirmed delivery (shared by the push kinds: channels/push.py) ---------------------------------------

SECRET = "app-confirm-secret-0123456789"


def ack_of(delivery_id: str, secret: str = SECRET) -> str:
    """The ack a device reads from its push, computed here from the documented rule."""
    digest = hmac.new(secret.encode(), delivery_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def confirming(body: Any) -> base.Callback:
    return base.Callback(body=orjson.dumps(body), content_type="application/json")


async def test_fcm_with_a_receipt_secret_puts_the_delivery_and_its_ack_in_data(fake: FakeFcm) -> None:
    p = provider(fake, receipt_secret=SECRET)
    result = await send(p, outgoing([{"platform": "fcm", "token": "dev-1:APA91b"}], {**CONTENT, "data": {"k": 1}}))
    assert result.error is None, result.error
    [message] = fake.messages
    assert message["data"] == {
        "k": "1",
        "url": "https://shop.example/o/1",
        "link_type": "h5",
        "clarion_delivery": "d1",
        "clarion_ack": ack_of("d1"),
    }
    assert result.provider_message_id == "d1"  # what the app's confirmation names
    assert p.takes_receipts


async def test_fcm_without_a_receipt_secret_sends_no_confirmation_keys(fake: FakeFcm) -> None:
    p = provider(fake)
    result = await send(p, outgoing([{"platform": "fcm", "token": "dev-1:APA91b"}]))
    assert "clarion_ack" not in fake.messages[0]["data"] and "clarion_delivery" not in fake.messages[0]["data"]
    assert result.provider_message_id.startswith("projects/") and not p.takes_receipts


def test_the_receipt_secret_is_a_secret_of_at_least_16_characters(fake: FakeFcm) -> None:
    assert "receipt_secret" in fcm.FcmProvider.Config.secret_fields
    with pytest.raises(ValidationError, match="receipt_secret"):
        provider(fake, receipt_secret="short")


async def test_confirmations_with_the_right_ack_are_delivered_receipts(fake: FakeFcm) -> None:
    p = provider(fake, receipt_secret=SECRET)
    await p.close()
    read = p.receipts(
        confirming(
            [
                {"delivery": "d1", "ack": ack_of("d1")},
                {"delivery": "d2", "ack": ack_of("d2") + "=", "status": "delivered"},  # padding tolerated
                {"delivery": "d1", "ack": ack_of("d1")},
            ]
        )
    )
    assert [(r.provider_message_id, r.event) for r in read.receipts] == [
        ("d1", receipts.Event.DELIVERED),
        ("d2", receipts.Event.DELIVERED),
    ]
    assert read.ignored == 1 and read.receipts[0].detail == {"confirmed_by": "app", "delivery_id": "d1"}
    [single] = p.receipts(confirming({"delivery": "d3", "ack": ack_of("d3")})).receipts
    assert single.provider_message_id == "d3"


@pytest.mark.parametrize(
    "body",
    [
        {"delivery": "d1", "ack": ack_of("d1", "another-secret-0123456789")},
        {"delivery": "d1", "ack": ack_of("d2")},
        {"delivery": "d1"},
        [{"delivery": "d2", "ack": ack_of("d2")}, {"delivery": "d1", "ack": "x"}],
    ],
)
async def test_a_wrong_or_missing_ack_refuses_the_whole_callback(fake: FakeFcm, body: Any) -> None:
    p = provider(fake, receipt_secret=SECRET)
    await p.close()
    with pytest.raises(base.RefusedCallback):
        p.receipts(confirming(body))


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"delivery": "d1", "ack": ack_of("d1"), "status": "undelivered"}, 'only "delivered"'),
        ({"ack": ack_of("d1")}, '"delivery"'),
        ([], "1 to 500"),
        ("d1", '"delivery"'),
    ],
)
async def test_a_confirmation_of_another_shape_is_unreadable(fake: FakeFcm, body: Any, says: str) -> None:
    p = provider(fake, receipt_secret=SECRET)
    await p.close()
    with pytest.raises(base.UnreadableCallback, match=says):
        p.receipts(confirming(body))
    with pytest.raises(base.UnreadableCallback):
        p.receipts(base.Callback(body=b"not json"))
