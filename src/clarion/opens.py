"""The e-mail open pixel: off by default, turned on per template (``channels.email.track_opens``).

With it on, every e-mail of the template carries a 1×1 image at ``{public_url}/o/{token}.gif``, the token naming
its delivery and signed with Clarion's secret key (the first 16 bytes of HMAC-SHA256 over ``open:<delivery id>``),
so nobody can mark someone else's mail opened. Loading it (``GET /o/{token}.gif``) makes the delivery ``read`` —
the funnel's ``opened`` — once; the image is answered every time, whatever the token, so a mail client never
shows a broken image.

What an open pixel measures is an image being fetched, not a person reading: Apple Mail Privacy Protection and
some corporate gateways fetch every image on arrival (opens inflated), and clients that block images never fetch
it (opens missed). Treat e-mail open rates as a trend, not a count; clicks and conversions are the measures that
mean what they say. It is off by default because an invisible tracker is personal data many users have not
agreed to.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any

from clarion.domain import model
from clarion.domain.policy.decision import Candidate

#: the field of a template's e-mail content that turns the pixel on
FIELD = "track_opens"
#: a transparent 1×1 GIF
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_SIGNATURE_BYTES = 16
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def _signature(secret: bytes, delivery_id: str) -> str:
    digest = hmac.new(secret, f"open:{delivery_id}".encode(), hashlib.sha256).digest()[:_SIGNATURE_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token(secret: bytes, delivery_id: str) -> str:
    return f"{delivery_id}.{_signature(secret, delivery_id)}"


def verify(secret: bytes, value: str) -> str | None:
    """The delivery id a token names, or None when it is malformed or not signed with ``secret``."""
    delivery_id, _, signature = value.removesuffix(".gif").partition(".")
    if not value.isascii() or not delivery_id or not signature:
        return None
    return delivery_id if hmac.compare_digest(signature, _signature(secret, delivery_id)) else None


def pixel_tag(public_url: str, secret: bytes, delivery_id: str) -> str:
    url = f"{public_url.rstrip('/')}/o/{token(secret, delivery_id)}.gif"
    return f'<img src="{url}" width="1" height="1" alt="" style="display:none">'


def finisher(public_url: str, secret: bytes) -> Any:
    """The intake finisher that puts the pixel in the HTML of e-mails whose content asks for it (before
    ``</body>``, or at the end), and drops the ``track_opens`` switch from what the provider is given. It runs
    after the short-link finisher, so the pixel's own URL is never shortened."""

    def finish(candidate: Candidate, delivery_id: str, content: dict[str, Any], rows: Any) -> dict[str, Any]:
        if candidate.channel is not model.Channel.EMAIL or FIELD not in content:
            return content
        on = content[FIELD] is True
        content = {k: v for k, v in content.items() if k != FIELD}
        html = content.get("html")
        if not on or not isinstance(html, str) or not html:
            return content
        tag = pixel_tag(public_url, secret, delivery_id)
        end = _BODY_END.search(html)
        content["html"] = f"{html[: end.start()]}{tag}{html[end.start() :]}" if end else f"{html}{tag}"
        return content

    return finish
