"""The ``apns`` kind against a fake APNs on loopback speaking HTTP/2 over TLS and checking the ES256 token."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from clarion.channels import apns, vendor
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, Outgoing
from tests.fakes.apns import FakeApns

DEVICE = "a1" * 32
CONTENT = {"title": "订单已发货", "body": "A-1001 已发货", "url": "myshop://orders/1", "link_type": "native"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeApns]:
    async with FakeApns() as server:
        yield server


def config(fake: FakeApns, **extra: Any) -> apns.ApnsProvider.Config:
    body = {
        "team_id": fake.team_id,
        "key_id": fake.key_id,
        "private_key": fake.private_key,
        "bundle_id": fake.bundle_id,
        "endpoint": fake.url,
        "ca_certificate": fake.ca_certificate,
        "allow_private_networks": True,
        **extra,
    }
    return apns.ApnsProvider.Config.model_validate(body)


def provider(fake: FakeApns, context: vendor.ProviderContext | None = None, **extra: Any) -> apns.ApnsProvider:
    return apns.ApnsProvider(config(fake, **extra), name="apns-a", context=context)


def outgoing(
    address: Any, content: dict[str, Any] | None = None, *, n: int = 1, priority: str | None = None
) -> Outgoing:
    return Outgoing(f"d{n}", f"m{n}", "u1", Channel.PUSH, address, content or CONTENT, priority=priority)


async def send(p: apns.ApnsProvider, *items: Outgoing) -> list[Any]:
    try:
        return await p.send(list(items))
    finally:
        await p.close()


async def test_apns_sends_an_alert_over_http2_with_a_valid_provider_token(fake: FakeApns) -> None:
    [result] = await send(
        provider(fake, sound="default"), outgoing([{"platform": "apns", "token": DEVICE}], priority="urgent")
    )
    assert result.error is None, result.error
    assert len(result.provider_message_id) == 36
    [request] = fake.requests
    assert request.alpn == "h2" and request.path == f"/3/device/{DEVICE}"
    assert request.headers["apns-topic"] == "com.example.shop"
    assert (request.headers["apns-push-type"], request.headers["apns-priority"]) == ("alert", "10")
    assert int(request.headers["apns-expiration"]) > 0
    assert request.json() == {
        "aps": {"alert": {"title": "订单已发货", "body": "A-1001 已发货"}, "sound": "default"},
        "url": "myshop://orders/1",
        "link_type": "native",
    }
    token = request.headers["authorization"].removeprefix("bearer ")
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": fake.key_id, "typ": "JWT"}


@pytest.mark.parametrize(
    ("priority", "expected"), [("urgent", "10"), (None, "10"), ("high", "5"), ("normal", "5"), ("low", "5")]
)
async def test_apns_priority_is_10_for_urgent_and_5_otherwise(
    fake: FakeApns, priority: str | None, expected: str
) -> None:
    [result] = await send(provider(fake), outgoing([DEVICE], priority=priority))
    assert result.error is None
    assert fake.requests[0].headers["apns-priority"] == expected


async def test_apns_sends_collapse_id_and_a_background_push_for_data_only_content(fake: FakeApns) -> None:
    content = {"data": {"order": "A-1"}, "collapse_id": "orders"}
    [result] = await send(provider(fake, ttl=0), outgoing([DEVICE], content, priority="urgent"))
    assert result.error is None
    [request] = fake.requests
    assert request.headers["apns-collapse-id"] == "orders" and request.headers["apns-expiration"] == "0"
    assert (request.headers["apns-push-type"], request.headers["apns-priority"]) == ("background", "5")
    assert request.json() == {"aps": {"content-available": 1}, "order": "A-1"}


async def test_apns_client_without_http2_is_refused_by_the_fake(fake: FakeApns) -> None:
    import ssl

    import httpx

    context = ssl.create_default_context(cadata=fake.ca_certificate)
    async with httpx.AsyncClient(verify=context, http2=False) as client:
        with pytest.raises(httpx.HTTPError):
            await client.post(f"{fake.url}/3/device/{DEVICE}", content=b"{}")
    assert fake.refused_connections == 1


async def test_apns_token_signed_with_another_key_is_refused_as_invalid_provider_token(fake: FakeApns) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    [result] = await send(provider(fake, private_key=other.decode()), outgoing([DEVICE]))
    assert isinstance(result.error, PermanentSendError) and result.error.misconfigured
    assert result.error.code == "InvalidProviderToken"
    assert len(fake.requests) == 2  # refreshed once, refused again


async def test_apns_reuses_its_provider_token_for_50_minutes(fake: FakeApns) -> None:
    now = [1_000_000.0]
    context = vendor.ProviderContext(vendor.TokenCache(clock=lambda: now[0]))
    await send(provider(fake, context), outgoing([DEVICE], n=1), outgoing([DEVICE], n=2))
    now[0] += 49 * 60
    await send(provider(fake, context), outgoing([DEVICE], n=3))
    now[0] += 2 * 60
    await send(provider(fake, context), outgoing([DEVICE], n=4))
    tokens = fake.provider_tokens()
    assert len(set(tokens[:3])) == 1 and tokens[3] != tokens[0]
    assert context.tokens.fetches == 2


async def test_apns_expired_provider_token_is_replaced_once_and_the_push_sent(fake: FakeApns) -> None:
    context = vendor.ProviderContext()
    await send(provider(fake, context), outgoing([DEVICE], n=1))
    fake.expired.add(fake.provider_tokens()[0])
    [result] = await send(provider(fake, context), outgoing([DEVICE], n=2))
    assert result.error is None
    tokens = fake.provider_tokens()
    assert tokens[1] == tokens[0] and tokens[2] != tokens[0] and len(tokens) == 3


ROWS = [
    (410, "Unregistered", "dead_address"),
    (400, "BadDeviceToken", "dead_address"),
    (400, "DeviceTokenNotForTopic", "permanent"),
    (400, "BadTopic", "misconfigured"),
    (400, "TopicDisallowed", "misconfigured"),
    (403, "BadCertificateEnvironment", "misconfigured"),
    (403, "Forbidden", "misconfigured"),
    (413, "PayloadTooLarge", "permanent"),
    (400, "BadCollapseId", "permanent"),
    (429, "TooManyRequests", "transient"),
    (429, "TooManyProviderTokenUpdates", "transient"),
    (500, "InternalServerError", "transient"),
    (503, "ServiceUnavailable", "transient"),
    (503, "Shutdown", "transient"),
]


@pytest.mark.parametrize(("status", "reason", "verdict"), ROWS)
async def test_apns_error_reasons_map_to_our_errors(fake: FakeApns, status: int, reason: str, verdict: str) -> None:
    fake.errors[DEVICE] = (status, reason)
    [result] = await send(provider(fake), outgoing([DEVICE]))
    error = result.error
    assert error.code == reason and reason in error.message
    assert {
        "transient": isinstance(error, TransientSendError),
        "permanent": isinstance(error, PermanentSendError) and not (error.misconfigured or error.dead_address),
        "misconfigured": isinstance(error, PermanentSendError) and error.misconfigured,
        "dead_address": isinstance(error, PermanentSendError) and error.dead_address,
    }[verdict]
    assert apns.ERRORS[reason] == verdict


async def test_apns_wrong_bundle_id_is_a_misconfigured_account(fake: FakeApns) -> None:
    [result] = await send(provider(fake, bundle_id="com.example.other"), outgoing([DEVICE]))
    assert (
        isinstance(result.error, PermanentSendError) and result.error.misconfigured and result.error.code == "BadTopic"
    )


async def test_apns_reports_dead_tokens_and_sends_to_the_others(fake: FakeApns) -> None:
    gone = "b2" * 32
    fake.errors[gone] = (410, "Unregistered")
    address = [{"platform": "apns", "token": gone}, {"platform": "fcm", "token": "android"}, DEVICE]
    [sent] = await send(provider(fake), outgoing(address))
    assert sent.error is None and sent.dead_addresses == ({"platform": "apns", "token": gone},)
    assert [r.path for r in fake.requests] == [f"/3/device/{gone}", f"/3/device/{DEVICE}"]


async def test_apns_delivery_to_dead_tokens_only_fails_as_dead_address(fake: FakeApns) -> None:
    fake.errors[DEVICE] = (410, "Unregistered")
    [failed] = await send(provider(fake), outgoing([{"platform": "apns", "token": DEVICE}]))
    assert isinstance(failed.error, PermanentSendError) and failed.error.dead_address
    [none] = await send(provider(fake), outgoing([{"platform": "webpush", "token": {}}]))
    assert isinstance(none.error, PermanentSendError) and none.error.code == "invalid_address"


def test_apns_sandbox_and_production_endpoints(fake: FakeApns) -> None:
    sandbox = apns.ApnsProvider(config(fake, endpoint=None, sandbox=True), name="a")
    production = apns.ApnsProvider(config(fake, endpoint=None), name="b")
    assert (sandbox._base, production._base) == ("https://api.sandbox.push.apple.com", "https://api.push.apple.com")


def test_apns_config_refuses_a_key_that_is_not_p256(fake: FakeApns) -> None:
    with pytest.raises(ValueError, match="not a PEM private key"):
        config(fake, private_key="-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----")
    other = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="not a P-256"):
        config(fake, private_key=other.decode())


SECRET = "app-confirm-secret-0123456789"


async def test_apns_with_a_receipt_secret_carries_the_delivery_and_its_ack_beside_aps(fake: FakeApns) -> None:
    [result] = await send(provider(fake, receipt_secret=SECRET), outgoing([DEVICE]))
    assert result.error is None, result.error
    payload = fake.requests[0].json()
    digest = hmac.new(SECRET.encode(), b"d1", hashlib.sha256).digest()
    assert payload["clarion_delivery"] == "d1"
    assert payload["clarion_ack"] == base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert payload["aps"]["alert"] == {"title": "订单已发货", "body": "A-1001 已发货"}
    assert result.provider_message_id == "d1"  # not the apns-id: the app confirms with the delivery id


async def test_apns_without_a_receipt_secret_carries_no_confirmation_keys(fake: FakeApns) -> None:
    p = provider(fake)
    [result] = await send(p, outgoing([DEVICE]))
    assert set(fake.requests[0].json()) == {"url", "link_type", "aps"}
    assert len(result.provider_message_id) == 36 and not p.takes_receipts
