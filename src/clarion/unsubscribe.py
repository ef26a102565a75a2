"""One-click unsubscribe links: signed tokens that name who unsubscribes from what.

A token is ``<payload>.<signature>``: the payload is the compact JSON ``{"u": user, "c": category, "ch": channel,
"a": address, "d": delivery}`` in URL-safe base64, the signature the first 16 bytes of its HMAC-SHA256 under
Clarion's secret key. ``d`` names the delivery the link came with, so the unsubscribe goes on that delivery's
timeline and funnel; tokens made before it was added carry none and stay valid. Nothing is stored when a link
is made; opening it (``GET /u/{token}``) shows a confirmation page and the mail client's one-click POST (RFC 8058,
``List-Unsubscribe-Post``) records the suppression. A token cannot be forged or altered without the key, and it
never expires: an unsubscribe link in an old mail must still work.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import orjson

from clarion.domain import errors

_SIGNATURE_BYTES = 16


@dataclass(frozen=True, slots=True)
class Request:
    """What a valid token asks for: stop ``category`` mail (on ``channel``) to ``user_id`` at ``address``; the link
    came with ``delivery_id`` (None: a link that names no delivery)."""

    user_id: str
    category: str | None
    channel: str | None
    address: str | None
    delivery_id: str | None = None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest()[:_SIGNATURE_BYTES])


def token(secret: bytes, request: Request) -> str:
    body: dict[str, Any] = {"u": request.user_id, "c": request.category, "ch": request.channel}
    if request.address is not None:
        body["a"] = request.address
    if request.delivery_id is not None:
        body["d"] = request.delivery_id
    payload = _b64(orjson.dumps(body))
    return f"{payload}.{_sign(secret, payload)}"


def verify(secret: bytes, value: str) -> Request:
    """The request a token carries; ``InvalidInput`` (code ``invalid_token``) when it is malformed or forged."""
    payload, _, signature = value.partition(".")
    if (
        not value.isascii()
        or not payload
        or not signature
        or not hmac.compare_digest(signature, _sign(secret, payload))
    ):
        raise errors.InvalidInput("this unsubscribe link is not valid", code="invalid_token")
    try:
        body = orjson.loads(_unb64(payload))
        return Request(body["u"], body.get("c"), body.get("ch"), body.get("a"), body.get("d"))
    except (ValueError, KeyError, TypeError):
        raise errors.InvalidInput("this unsubscribe link is not valid", code="invalid_token") from None


def links(
    public_url: str,
    secret: bytes,
    *,
    user_id: str,
    category: str | None,
    channel: str | None,
    address: str | None = None,
    delivery_id: str | None = None,
) -> dict[str, Any]:
    """The unsubscribe URL and the e-mail headers that announce it (``List-Unsubscribe`` + one-click POST)."""
    request = Request(user_id, category, channel, address, delivery_id)
    url = f"{public_url.rstrip('/')}/u/{token(secret, request)}"
    return {
        "url": url,
        "headers": {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    }
