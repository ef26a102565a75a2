"""The ``webpush`` kind against a fake push service that verifies VAPID and decrypts the payload."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from clarion.channels import webpush
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, Outgoing
from tests.fakes.webpush import FakeWebPush, b64url
from tests.integration.loopback import Reply

CONTENT = {"title": "新消息", "body": "您有一条新回复", "url": "https://shop.example/m/1", "link_type": "h5"}


def pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


VAPID = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
async def fake() -> AsyncIterator[FakeWebPush]:
    async with FakeWebPush() as server:
        yield server


def provider(key: str | None = None, **extra: Any) -> webpush.WebPushProvider:
    body = {
        "vapid_private_key": key or pem(VAPID),
        "vapid_subject": "mailto:ops@example.com",
        "allow_private_networks": True,
        **extra,
    }
    return webpush.WebPushProvider(webpush.WebPushProvider.Config.model_validate(body), name="web-a")


def outgoing(address: Any, content: dict[str, Any] | None = None, *, priority: str | None = None) -> Outgoing:
    return Outgoing("d1", "m1", "u1", Channel.PUSH, address, content or CONTENT, priority=priority)


async def send(p: webpush.WebPushProvider, item: Outgoing) -> Any:
    try:
        [result] = await p.send([item])
        return result
    finally:
        await p.close()


async def test_webpush_payload_is_decrypted_by_the_subscribed_browser(fake: FakeWebPush) -> None:
    p = provider(ttl=600)
    fake.application_server_key = p.public_key
    subscription = fake.subscribe("laptop")
    content = {**CONTENT, "data": {"thread": 7}, "collapse_id": "thread-7"}
    result = await send(p, outgoing([{"platform": "webpush", "token": subscription}], content, priority="urgent"))
    assert result.error is None, (result.error, fake.refusals)
    assert result.provider_message_id == f"{fake.server.url}/message/1"
    [pushed] = fake.pushes
    assert pushed.payload == {**CONTENT, "data": {"thread": 7}, "collapse_id": "thread-7"}
    assert (pushed.headers["TTL"], pushed.headers["Urgency"], pushed.headers["Topic"]) == ("600", "high", "thread-7")


async def test_webpush_takes_the_subscription_itself_and_a_raw_base64url_key(fake: FakeWebPush) -> None:
    raw = b64url(VAPID.private_numbers().private_value.to_bytes(32, "big"))
    p = provider(raw)
    fake.application_server_key = p.public_key
    result = await send(p, outgoing([fake.subscribe("phone"), "fcm-token-left-alone"]))
    assert result.error is None, fake.refusals
    assert [push.name for push in fake.pushes] == ["phone"]
    assert fake.pushes[0].headers["Urgency"] == "normal"


async def test_webpush_takes_a_bare_string_holding_the_subscription_json(fake: FakeWebPush) -> None:
    result = await send(provider(), outgoing([orjson.dumps(fake.subscribe("tablet")).decode()]))
    assert result.error is None and len(fake.pushes) == 1


async def test_webpush_vapid_key_other_than_the_subscriptions_is_refused(fake: FakeWebPush) -> None:
    fake.application_server_key = provider().public_key
    result = await send(provider(pem(ec.generate_private_key(ec.SECP256R1()))), outgoing([fake.subscribe("laptop")]))
    assert isinstance(result.error, PermanentSendError) and result.error.code == "http_403"
    assert fake.refusals == ["subscription made for another application server key"]


async def test_webpush_vapid_token_is_made_for_the_endpoint_origin_and_reused(fake: FakeWebPush) -> None:
    p = provider()
    first = p.vapid(fake.server.url + "/push/a", now=1000.0)
    again = p.vapid(fake.server.url + "/push/b", now=1000.0 + 3000)
    later = p.vapid(fake.server.url + "/push/a", now=1000.0 + 3700)
    other = p.vapid("https://updates.push.services.mozilla.com/wpush/v2/x", now=1000.0)
    await p.close()
    assert first == again and later != first and other != first
    assert first.endswith(f", k={p.public_key}")


ROWS = [
    (404, "dead_address"),
    (410, "dead_address"),
    (413, "permanent"),
    (400, "permanent"),
    (401, "misconfigured"),
    (403, "permanent"),
    (429, "transient"),
    (500, "transient"),
    (503, "transient"),
]


@pytest.mark.parametrize(("status", "verdict"), ROWS)
async def test_webpush_statuses_map_to_our_errors(fake: FakeWebPush, status: int, verdict: str) -> None:
    fake.answers["laptop"] = Reply(status, body=b"push service says no", headers={"Retry-After": "9"})
    result = await send(provider(), outgoing([fake.subscribe("laptop")]))
    error = result.error
    assert error.code == f"http_{status}" and "push service says no" in error.message
    assert {
        "transient": isinstance(error, TransientSendError) and error.retry_after == 9,
        "permanent": isinstance(error, PermanentSendError) and not (error.misconfigured or error.dead_address),
        "misconfigured": isinstance(error, PermanentSendError) and error.misconfigured,
        "dead_address": isinstance(error, PermanentSendError) and error.dead_address,
    }[verdict]


async def test_webpush_reports_a_gone_subscription_and_sends_to_the_others(fake: FakeWebPush) -> None:
    gone, live = fake.subscribe("old"), fake.subscribe("new")
    fake.answers["old"] = Reply(410, body=b"Gone")
    result = await send(provider(), outgoing([{"platform": "webpush", "token": gone}, live]))
    assert result.error is None
    assert result.dead_addresses == ({"platform": "webpush", "token": gone},)
    assert [p.name for p in fake.pushes] == ["new"]


async def test_webpush_too_large_payload_fails_before_sending(fake: FakeWebPush) -> None:
    result = await send(provider(), outgoing([fake.subscribe("laptop")], {"title": "t", "body": "x" * 5000}))
    assert isinstance(result.error, PermanentSendError) and result.error.code == "payload_too_large"
    assert fake.requests == []


async def test_webpush_address_without_a_subscription_is_invalid(fake: FakeWebPush) -> None:
    result = await send(provider(), outgoing(["fcm-token", {"platform": "apns", "token": "ab"}]))
    assert isinstance(result.error, PermanentSendError) and result.error.code == "invalid_address"


async def test_webpush_plain_http_endpoint_needs_private_networks_allowed(fake: FakeWebPush) -> None:
    result = await send(provider(allow_private_networks=False), outgoing([fake.subscribe("laptop")]))
    assert isinstance(result.error, PermanentSendError) and result.error.code == "invalid_address"
    assert fake.requests == []


def test_webpush_config_refuses_a_bad_key_and_subject() -> None:
    with pytest.raises(ValueError, match="not a P-256 private key"):
        webpush.WebPushProvider.Config.model_validate({"vapid_private_key": "c2hvcnQ", "vapid_subject": "mailto:a@b.c"})
    with pytest.raises(ValueError, match="mailto: address or an https: URL"):
        webpush.WebPushProvider.Config.model_validate({"vapid_private_key": pem(VAPID), "vapid_subject": "ops"})


# -- HTTPS push services, app-confirmed delivery ----------------------------------------------------------------

SECRET = "app-confirm-secret-0123456789"


async def test_webpush_trusts_the_https_push_service_its_ca_certificate_names() -> None:
    async with FakeWebPush(tls=True) as service:
        assert service.server.url.startswith("https://127.0.0.1:") and service.ca_certificate
        subscription = service.subscribe("laptop")
        trusting = await send(provider(ca_certificate=service.ca_certificate), outgoing([subscription]))
        untrusting = await send(provider(), outgoing([subscription]))
    assert trusting.error is None, (trusting.error, service.refusals)
    assert service.pushes[0].payload == CONTENT
    assert isinstance(untrusting.error, TransientSendError) and len(service.pushes) == 1  # the system's CAs refuse


def test_webpush_config_refuses_a_ca_certificate_that_is_not_pem() -> None:
    with pytest.raises(ValueError, match="not PEM certificates"):
        provider(ca_certificate="-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----")


async def test_webpush_with_a_receipt_secret_puts_the_delivery_and_its_ack_in_the_payload(fake: FakeWebPush) -> None:
    result = await send(provider(receipt_secret=SECRET), outgoing([fake.subscribe("laptop")]))
    assert result.error is None and result.provider_message_id == "d1"
    digest = hmac.new(SECRET.encode(), b"d1", hashlib.sha256).digest()
    ack = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert fake.pushes[0].payload == {**CONTENT, "clarion_delivery": "d1", "clarion_ack": ack}


async def test_webpush_without_a_receipt_secret_keeps_the_payload_as_it_was(fake: FakeWebPush) -> None:
    p = provider()
    result = await send(p, outgoing([fake.subscribe("laptop")]))
    assert fake.pushes[0].payload == CONTENT
    assert result.provider_message_id == f"{fake.server.url}/message/1" and not p.takes_receipts
