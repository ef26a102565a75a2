"""The webhook provider against a real HTTP server on loopback."""

from __future__ import annotations

import hashlib
import hmac
import time

import orjson
import pytest

from clarion.channels.outbound import validate_url
from clarion.channels.webhook import WebhookProvider, parse_retry_after, sign, verify
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, Outgoing
from tests.integration.loopback import LoopbackServer, Recorded, Reply

SECRET = "whsec-test"


def provider(**config: object) -> WebhookProvider:
    options = {"secret": SECRET, "allow_private_networks": True, "timeout": 5, **config}
    return WebhookProvider(WebhookProvider.Config(**options), name="hooks")


async def send_once(batch: list[Outgoing], **config: object) -> list:
    """Send one batch with a fresh provider and close it (its HTTP client) afterwards."""
    sender = provider(**config)
    try:
        return await sender.send(batch)
    finally:
        await sender.close()


def hook(n: int, url: str, body: object = None) -> Outgoing:
    return Outgoing(
        delivery_id=f"dlv-{n}",
        message_id=f"msg-{n}",
        user_id=f"u{n}",
        channel=Channel.WEBHOOK,
        address=url,
        content={"body": {"event": "order.shipped", "n": n, "名字": "张三"} if body is None else body},
    )


def signed_ok(request: Recorded) -> Reply:
    """A receiver that checks the signature the way a customer would."""
    good = verify(SECRET, request.headers["Clarion-Timestamp"], request.body, request.headers["Clarion-Signature"])
    if not good:
        return Reply(401, {"error": "bad signature"})
    return Reply(200, {"ok": True}, headers={"X-Request-Id": "rcv-" + request.headers["Clarion-Delivery-Id"]})


async def test_posts_signed_json_concurrently() -> None:
    async with LoopbackServer(handler=signed_ok) as server:
        sender = provider(headers={"Authorization": "Bearer abc", "clarion-signature": "forged"})
        batch = [hook(n, f"{server.url}/hooks/{n}") for n in range(40)]
        results = await sender.send(batch)
        await sender.close()

    assert [r.delivery_id for r in results] == [f"dlv-{n}" for n in range(40)]
    assert [r.error for r in results] == [None] * 40
    assert [r.provider_message_id for r in results] == [f"rcv-dlv-{n}" for n in range(40)]
    assert len(server.requests) == 40
    request = next(r for r in server.requests if r.path == "/hooks/3")
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == "Bearer abc"
    assert len(request.headers.getall("Clarion-Signature")) == 1
    assert request.headers["Clarion-Delivery-Id"] == "dlv-3"
    assert abs(int(request.headers["Clarion-Timestamp"]) - time.time()) < 60
    assert request.json() == {"event": "order.shipped", "n": 3, "名字": "张三"}


async def test_delivery_id_is_the_message_id_without_x_request_id() -> None:
    async with LoopbackServer(Reply(204)) as server:
        results = await send_once([hook(1, server.url, body=[1, "two", None])])
    assert results[0].error is None
    assert results[0].provider_message_id == "dlv-1"
    assert server.requests[0].body == b'[1,"two",null]'


async def test_503_is_transient_with_retry_after_and_400_permanent() -> None:
    async with LoopbackServer(Reply(503, headers={"Retry-After": "7"}), Reply(400, {"error": "no"})) as server:
        sender = provider()
        [unavailable] = await sender.send([hook(1, server.url)])
        [rejected] = await sender.send([hook(2, server.url)])
        await sender.close()

    assert isinstance(unavailable.error, TransientSendError)
    assert unavailable.error.code == "http_503"
    assert unavailable.error.retry_after == 7.0
    assert isinstance(rejected.error, PermanentSendError)
    assert rejected.error.code == "http_400"
    assert '{"error":"no"}' in rejected.error.message  # the head of the body explains the refusal


async def test_a_flood_of_response_body_is_not_downloaded() -> None:
    async with LoopbackServer(Reply(404, body=b"x" * 5_000_000)) as server:
        [result] = await send_once([hook(1, server.url)])
    assert isinstance(result.error, PermanentSendError) and result.error.code == "http_404"
    assert result.error.message == "HTTP 404: " + "x" * 200


async def test_429_is_transient_and_redirects_are_not_followed() -> None:
    replies = (Reply(429), Reply(302, headers={"Location": "http://169.254.169.254/"}))
    async with LoopbackServer(*replies) as server:
        sender = provider()
        [limited] = await sender.send([hook(1, server.url)])
        [redirected] = await sender.send([hook(2, server.url)])
        await sender.close()

    assert isinstance(limited.error, TransientSendError) and limited.error.retry_after is None
    assert isinstance(redirected.error, PermanentSendError) and redirected.error.code == "http_302"
    assert len(server.requests) == 2


async def test_timeout_and_refused_connection_are_transient() -> None:
    async with LoopbackServer(Reply(200, delay=2)) as server:
        [slow] = await send_once([hook(1, server.url)], timeout=0.2)
        dead_url = server.url
    [refused] = await send_once([hook(2, dead_url)])

    assert isinstance(slow.error, TransientSendError) and slow.error.code == "timeout"
    assert isinstance(refused.error, TransientSendError) and refused.error.code == "connect_error"


async def test_private_addresses_are_refused_by_default() -> None:
    async with LoopbackServer() as server:
        sender = provider(allow_private_networks=False)
        local = server.url.replace("127.0.0.1", "localhost")
        batch = [hook(1, server.url), hook(2, local), hook(3, "ftp://example.com/x"), hook(4, "http:///x")]
        results = await sender.send(batch)
        await sender.close()

    assert server.requests == []
    for result in results:
        assert isinstance(result.error, PermanentSendError)
        assert result.error.code == "url_not_allowed"


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/",
        "http://192.168.0.1:8080/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://100.64.0.1/",
    ],
)
async def test_validate_url_refuses_non_public_addresses(url: str) -> None:
    with pytest.raises(PermanentSendError) as caught:
        await validate_url(url, allow_private_networks=False)
    assert caught.value.code == "url_not_allowed"
    await validate_url(url, allow_private_networks=True)  # the operator's opt-in lets it through


async def test_validate_url_accepts_public_literals() -> None:
    await validate_url("https://8.8.8.8/hook", allow_private_networks=False)
    await validate_url("http://[2001:4860:4860::8888]:8443/", allow_private_networks=False)


def test_sign_and_verify() -> None:
    body = orjson.dumps({"a": 1})
    now = 1_700_000_000
    signature = sign(SECRET, str(now), body)
    # the documented scheme, computed independently of sign(): HMAC-SHA256 over "<timestamp>." + body
    assert signature == "v1=" + hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert verify(SECRET, str(now), body, signature, now=now)
    assert verify(SECRET, str(now), body, f"v1=deadbeef, {signature}", now=now)  # rotated secrets
    assert not verify(SECRET, str(now + 1), body, signature, now=now)  # tampered timestamp
    assert not verify(SECRET, str(now), body + b" ", signature, now=now)  # tampered body
    assert not verify("other", str(now), body, signature, now=now)
    assert not verify(SECRET, str(now), body, signature, now=now + 301)  # too old: replay
    assert not verify(SECRET, "not-a-number", body, signature, now=now)


def test_parse_retry_after() -> None:
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a past date means now


def test_secret_is_a_secret_field() -> None:
    assert WebhookProvider.Config.secret_fields == frozenset({"secret"})
    with pytest.raises(ValueError):
        WebhookProvider.Config(secret="")
