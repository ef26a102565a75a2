"""Signed JSON webhooks, plus the outbound-URL rule every HTTP provider shares.

A webhook answered 2xx is ``delivered``: the receiver itself took it, so no receipt will follow.

Receivers must be able to tell that a POST really came from this Clarion and was not replayed, so each
request carries ``Clarion-Timestamp`` and ``Clarion-Signature: v1=<hex HMAC-SHA256(secret, "{ts}." + body)>``;
``sign``/``verify`` are pure so receivers and tests use exactly the code we send with.

Webhook URLs come from users, so a request could be aimed at the platform's own network (SSRF): the
provider's client follows ``outbound``'s rule, checking each host where it connects. The HTTP helpers below
(status and transport errors, bounded concurrency) are shared by every HTTP provider.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Sequence
from email.utils import parsedate_to_datetime
from typing import ClassVar

import httpcore
import httpx
import orjson
from pydantic import Field

from clarion.channels import outbound
from clarion.channels.base import ProviderConfig
from clarion.domain.errors import PermanentSendError, SendError, TransientSendError
from clarion.domain.model import Channel, DeliveryStatus, Outgoing, SendResult

CONCURRENCY = 16


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``Clarion-Signature`` header value for ``body`` sent at ``timestamp`` (unix seconds, as text)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> bool:
    """True if ``signature`` (one or more comma-separated ``v1=`` values) signs body+timestamp and the
    timestamp is within ``tolerance`` seconds of ``now``; the comparison is constant-time."""
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - sent_at) > tolerance:
        return False
    expected = sign(secret, timestamp, body).encode()
    return any(hmac.compare_digest(expected, part.strip().encode()) for part in signature.split(","))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), if usable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def http_status_error(response: httpx.Response, snippet: str | None = None) -> SendError | None:
    """The shared HTTP status rule: 2xx is fine, 429/5xx retry, anything else is permanent.
    ``snippet`` is the start of the body when the caller did not read all of it."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return TransientSendError(f"HTTP {status}", code=f"http_{status}", retry_after=retry_after)
    text = response.text[:200] if snippet is None else snippet
    return PermanentSendError(f"HTTP {status}: {text}", code=f"http_{status}")


def transport_error(exc: httpx.HTTPError | TimeoutError) -> TransientSendError:
    """Network-level failures are always worth retrying."""
    code = "timeout" if isinstance(exc, httpx.TimeoutException | TimeoutError) else "connect_error"
    return TransientSendError(f"{type(exc).__name__}: {exc}", code=code)


async def send_bounded(
    batch: Sequence[Outgoing], one: Callable[[Outgoing], Awaitable[SendResult]], limit: int = CONCURRENCY
) -> list[SendResult]:
    """Run ``one`` for every delivery, at most ``limit`` at a time; a bug in one becomes its own
    transient error rather than losing the whole batch's results."""
    gate = asyncio.Semaphore(limit)

    async def guarded(item: Outgoing) -> SendResult:
        async with gate:
            try:
                return await one(item)
            except SendError as exc:
                return SendResult(item.delivery_id, error=exc)
            except Exception as exc:
                error = TransientSendError(f"{type(exc).__name__}: {exc}", code="provider_error")
                return SendResult(item.delivery_id, error=error)

    return list(await asyncio.gather(*(guarded(item) for item in batch)))


async def send_to(
    url: str,
    batch: Sequence[Outgoing],
    one: Callable[[Outgoing], Awaitable[SendResult]],
    *,
    allow_private_networks: bool,
) -> list[SendResult]:
    """``send_bounded`` for a kind whose requests go to one configured ``url``: a URL refused before connecting
    (its syntax, a literal private address) fails each delivery with that refusal, without a request."""
    refused = outbound.refusal(url, allow_private_networks=allow_private_networks)

    async def checked(item: Outgoing) -> SendResult:
        if refused is not None:
            raise type(refused)(refused.message, code=refused.code)
        return await one(item)

    return await send_bounded(batch, checked)


async def _head(response: httpx.Response, limit: int = 200) -> str:
    """Up to ``limit`` bytes of the body, for error messages; the rest is never downloaded."""
    head = b""
    async for chunk in response.aiter_bytes():
        head += chunk
        if len(head) >= limit:
            break
    return head[:limit].decode("utf-8", "replace")


class WebhookProvider:
    """POSTs ``content["body"]`` as JSON to the delivery's URL, signed with the configured secret."""

    kind: ClassVar[str] = "webhook"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.WEBHOOK})

    class Config(ProviderConfig):
        secret_fields: ClassVar[frozenset[str]] = frozenset({"secret"})
        header_fields: ClassVar[frozenset[str]] = frozenset({"headers"})

        secret: str = Field(min_length=1)
        timeout: float = Field(default=10, gt=0)
        allow_private_networks: bool = False
        headers: dict[str, str] = Field(default_factory=dict)

    def __init__(
        self,
        config: WebhookProvider.Config,
        *,
        name: str,
        resolve: outbound.Resolver | None = None,
        network: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self._client = outbound.client(
            timeout=config.timeout,
            allow_private_networks=config.allow_private_networks,
            resolve=resolve,
            network=network,
        )

    async def send(self, batch: Sequence[Outgoing]) -> list[SendResult]:
        allow = self.config.allow_private_networks
        verdicts = {
            url: outbound.refusal(url, allow_private_networks=allow)
            for url in {item.address for item in batch if isinstance(item.address, str)}
        }

        async def one(item: Outgoing) -> SendResult:
            if not isinstance(item.address, str):
                raise PermanentSendError("the address is not a URL", code="url_not_allowed")
            verdict = verdicts[item.address]
            if verdict is not None:
                raise type(verdict)(verdict.message, code=verdict.code)
            if "body" not in item.content:
                raise PermanentSendError("content has no 'body'", code="invalid_content")
            return await self._post(item)

        return await send_bounded(batch, one)

    async def _post(self, item: Outgoing) -> SendResult:
        try:
            body = orjson.dumps(item.content["body"])
        except TypeError as exc:
            raise PermanentSendError(f"body is not JSON: {exc}", code="invalid_content") from None
        timestamp = str(int(time.time()))
        headers = httpx.Headers(self.config.headers)  # ours replace configured ones, whatever their case
        headers["Content-Type"] = "application/json"
        headers["Clarion-Delivery-Id"] = item.delivery_id
        headers["Clarion-Timestamp"] = timestamp
        headers["Clarion-Signature"] = sign(self.config.secret, timestamp, body)
        try:  # the timeout bounds the whole exchange, and only the body's head is read: the far end is
            async with asyncio.timeout(self.config.timeout):  # user-chosen and may trickle or flood
                request = self._client.stream("POST", item.address, content=body, headers=headers)
                async with request as response:
                    snippet = await _head(response)
        except (httpx.HTTPError, TimeoutError) as exc:
            raise transport_error(exc) from None
        except httpx.InvalidURL as exc:
            raise PermanentSendError(f"invalid URL: {exc}", code="url_not_allowed") from None
        error = http_status_error(response, snippet)
        if error is not None:
            raise error
        request_id = response.headers.get("x-request-id") or item.delivery_id
        # the receiver answered 2xx: it has the message, there is no later receipt to wait for
        return SendResult(item.delivery_id, provider_message_id=request_id, status=DeliveryStatus.DELIVERED)

    async def close(self) -> None:
        await self._client.aclose()
