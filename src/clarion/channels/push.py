"""What the push kinds (``fcm``, ``apns``, ``webpush``, ``jpush``) share: reading a user's push address, and
turning the vendor's answers for each device into one ``SendResult``.

A user's ``push`` address is a list of device addresses. Each item is a bare token string (as Clarion stored
them before push addresses were typed: its shape says its platform, see ``platform_of``), a typed item
``{"platform": "fcm" | "apns" | "webpush" | "jpush", "token": …}``, or a browser's Web Push subscription
itself (``{"endpoint": …, "keys": {"p256dh": …, "auth": …}}``). Each kind sends to the items it can reach —
its platform's and the bare strings of its shape — and leaves the others to the user's other push accounts.

A delivery reaches a user, not a device: it is sent when at least one device accepted it. The devices the
vendor declared gone come back in ``SendResult.dead_addresses`` (the items as stored, so they can be removed
from the user); a delivery none of whose devices is left fails with ``dead_address``. A device that failed
for another reason while another accepted is not retried: a retry would notify the others twice.

App-confirmed delivery: the push vendors do not say whether a device got a push (FCM, APNs and Web Push never
call back), so an account may set ``receipt_secret``. Each push it sends then carries, where the app (or the
site's service worker) reads it, ``clarion_delivery`` (the delivery id) and ``clarion_ack`` (the base64url
HMAC-SHA256 of that id under the secret); the app posts ``{"delivery", "ack"}`` (one, or a list) to
``POST /r/{provider_name}`` when the push arrives, and the delivery becomes ``delivered``. Only a device that
received the push knows its ack, so a forged confirmation is refused (401) without the secret ever leaving the
server. The FCM, APNs and Web Push accounts that take confirmations record the delivery id as the delivery's
provider message id (the app never learns the vendor's id), so a confirmation that beats the worker's record of
the send is held and applied once it is written, like any early receipt. JPush keeps its ``msg_id``, which its
received report is polled with; its confirmations name the delivery (``detail["delivery_id"]``), which the
feedback stage matches when no vendor id does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import Field

from clarion.channels import base
from clarion.domain import receipts
from clarion.domain.errors import PermanentSendError, SendError, TransientSendError
from clarion.domain.model import Outgoing, SendResult

PLATFORMS = ("fcm", "apns", "webpush", "jpush")
TOKEN_LIMIT = 4096
_HTTPS = re.compile(r"^https://[^\s/?#]+[^\s]*$")
_HTTP = re.compile(r"^http://[^\s/?#]+[^\s]*$")


@dataclass(frozen=True, slots=True)
class Target:
    """One device of a delivery: the item as the user's address holds it, and the token the vendor takes."""

    item: Any
    token: Any


def b64url_decode(value: str) -> bytes:
    """Base64url with or without its padding (Web Push keys come without)."""
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def check_subscription(value: Any, *, plain_http: bool = False) -> dict[str, Any]:
    """A browser's ``PushSubscription.toJSON()``: an https endpoint (``plain_http``: or http, for an in-house
    push service), a P-256 public key and a 16-byte secret. Raises ``ValueError`` saying which part is wrong."""
    if not isinstance(value, Mapping):
        raise ValueError("a Web Push subscription is an object with endpoint and keys")
    unknown = set(value) - {"endpoint", "keys", "expirationTime"}
    if unknown:
        raise ValueError(f"unknown subscription fields: {', '.join(sorted(unknown))}")
    endpoint = value.get("endpoint")
    scheme_ok = isinstance(endpoint, str) and (_HTTPS.match(endpoint) or (plain_http and _HTTP.match(endpoint)))
    if not isinstance(endpoint, str) or len(endpoint) > 2048 or not scheme_ok:
        raise ValueError("subscription endpoint must be an https URL")
    keys = value.get("keys")
    if not isinstance(keys, Mapping):
        raise ValueError("subscription keys must be an object with p256dh and auth")
    for name, size in (("p256dh", 65), ("auth", 16)):
        raw = keys.get(name)
        try:
            decoded = b64url_decode(raw) if isinstance(raw, str) else b""
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) != size or (name == "p256dh" and decoded[0] != 4):
            raise ValueError(f"subscription keys.{name} must be {size} bytes in base64url")
    return dict(value)


def check_item(item: Any) -> Any:
    """One item of a user's push address as the API takes it (see the module's docstring); ``ValueError``."""
    if isinstance(item, str):
        if not 1 <= len(item) <= TOKEN_LIMIT:
            raise ValueError(f"a push token has 1 to {TOKEN_LIMIT} characters")
        return item
    if not isinstance(item, Mapping):
        raise ValueError("a push address is a token string or an object")
    if "platform" not in item:
        if "endpoint" in item:
            return check_subscription(item)
        raise ValueError('a push address object needs "platform" and "token" (or is a Web Push subscription)')
    unknown = set(item) - {"platform", "token"}
    if unknown:
        raise ValueError(f"unknown push address fields: {', '.join(sorted(unknown))}")
    platform, token = item.get("platform"), item.get("token")
    if platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {', '.join(PLATFORMS)}")
    if platform == "webpush":
        return {"platform": platform, "token": check_subscription(token)}
    if not isinstance(token, str) or not 1 <= len(token) <= TOKEN_LIMIT:
        raise ValueError(f"token must be a string of 1 to {TOKEN_LIMIT} characters")
    return {"platform": platform, "token": token}


_APNS_TOKEN = re.compile(r"^[0-9a-fA-F]{64,200}$")


def platform_of(token: str) -> str:
    """Which platform a bare token string is, by its shape: a JSON object is a Web Push subscription, 64 or
    more hex digits an APNs device token, a token with ``:`` an FCM registration token (``<id>:APA91b…``),
    anything else a JPush registration id. So a kind never sends another platform's bare token to its vendor,
    which would call it invalid and have it removed from the user."""
    if token.lstrip().startswith("{"):
        return "webpush"
    if _APNS_TOKEN.match(token):
        return "apns"
    return "fcm" if ":" in token else "jpush"


def targets(address: Any, platform: str) -> list[Target]:
    """The devices of ``address`` that ``platform`` sends to: its typed items, the bare strings of its shape
    (``platform_of``) and, for Web Push, subscriptions given as they are. Duplicates are sent to once."""
    items = address if isinstance(address, list | tuple) else [address]
    found: list[Target] = []
    seen: list[Any] = []
    for item in items:
        token: Any = None
        if isinstance(item, str) and item:
            token = item if platform_of(item) == platform else None
        elif isinstance(item, Mapping):
            if "platform" in item:
                token = item.get("token") if item.get("platform") == platform else None
            elif platform == "webpush" and "endpoint" in item:
                token = item
        if token is not None and token not in seen:
            seen.append(token)
            found.append(Target(item, token))
    return found


#: ``send(target)`` → the vendor's message id, or a ``SendError`` raised
SendOne = Callable[[Target], Awaitable[str]]


def outcome(item: Outgoing, answers: list[tuple[Target, str | SendError]], *, by_delivery: bool = False) -> SendResult:
    """One delivery's result from its devices' answers (each a vendor message id or an error).

    Accepted by any: sent, with the first vendor id (``by_delivery``: the delivery id, which the app confirms
    with) and the dead devices. Accepted by none: the account's
    fault first (misconfigured), then a retry (transient), then the first refusal; when every device is dead,
    ``dead_address``. Dead devices ride along on errors too, so they are removed whatever else happened."""
    accepted = [answer for _, answer in answers if isinstance(answer, str)]
    dead = tuple(
        target.item for target, answer in answers if isinstance(answer, PermanentSendError) and answer.dead_address
    )
    if accepted:
        vendor_id = item.delivery_id if by_delivery else next((a for a in accepted if a), item.delivery_id)
        return SendResult(item.delivery_id, provider_message_id=vendor_id, dead_addresses=dead)
    errors = [answer for _, answer in answers if isinstance(answer, SendError)]
    if not errors:
        raise PermanentSendError("no device answered", code="invalid_address")
    if len(dead) == len(errors):
        first = errors[0]
        many = f" (all {len(dead)} devices)" if len(dead) > 1 else ""
        error: SendError = PermanentSendError(f"{first.message}{many}", code=first.code, dead_address=True)
    else:
        live = [e for e in errors if not (isinstance(e, PermanentSendError) and e.dead_address)]
        misconfigured = [e for e in live if isinstance(e, PermanentSendError) and e.misconfigured]
        transient = [e for e in live if isinstance(e, TransientSendError)]
        error = (misconfigured or transient or live)[0]
    return SendResult(item.delivery_id, error=error, dead_addresses=dead)


def none_for(platform: str) -> PermanentSendError:
    return PermanentSendError(f"the address holds no {platform} device token", code="invalid_address")


async def each_device(item: Outgoing, platform: str, send: SendOne, *, by_delivery: bool = False) -> SendResult:
    """Send ``item`` to each of its devices on ``platform`` in turn (one request each; the account's client
    multiplexes them) and combine the answers with ``outcome``."""
    found = targets(item.address, platform)
    if not found:
        raise none_for(platform)
    answers: list[tuple[Target, str | SendError]] = []
    for target in found:
        try:
            answers.append((target, await send(target)))
        except SendError as exc:
            answers.append((target, exc))
    return outcome(item, answers, by_delivery=by_delivery)


def notification(content: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The title and body a device shows, as strings (None when absent)."""
    title, body = content.get("title"), content.get("body")
    return (None if title is None else str(title)), (None if body is None else str(body))


def link_extras(content: Mapping[str, Any]) -> dict[str, str]:
    """The push link as key-value data the app reads when the notification is opened: ``url``, ``link_type``
    (h5: open in a browser or web view; native: an app route or deep link; miniprogram: a WeChat mini program,
    with its ``appid``). Every platform carries these, so one handler in the app serves them all."""
    extras = {}
    for key in ("url", "link_type", "appid"):
        value = content.get(key)
        if value is not None:
            extras[key] = str(value)
    return extras


def string_data(content: Mapping[str, Any]) -> dict[str, str]:
    """The content's ``data`` object (a data message's payload), its values as strings as FCM requires."""
    data = content.get("data")
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise PermanentSendError("content 'data' must be an object", code="invalid_content")
    return {str(k): v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in data.items()}


#: how a vendor's error code is handled: retried, failed, the account's fault (its breaker opens), or the
#: device gone for good (removed from the user)
TRANSIENT, PERMANENT, MISCONFIGURED, DEAD = "transient", "permanent", "misconfigured", "dead_address"


def vendor_error(verdict: str, message: str, *, code: str, retry_after: float | None = None) -> SendError:
    """The ``SendError`` a row of a kind's error table stands for."""
    if verdict == TRANSIENT:
        return TransientSendError(message, code=code, retry_after=retry_after)
    return PermanentSendError(message, code=code, misconfigured=verdict == MISCONFIGURED, dead_address=verdict == DEAD)


def pem_authorities(value: str | None) -> str | None:
    """``ca_certificate``'s check: PEM certificates a TLS context can trust (``ValueError`` otherwise)."""
    if value is not None:
        try:
            ssl.create_default_context(cadata=value)
        except (ssl.SSLError, ValueError):
            raise ValueError("not PEM certificates") from None
    return value


def trusting(ca_certificate: str | None) -> ssl.SSLContext | None:
    """The TLS context trusting only ``ca_certificate`` (None: the system's authorities)."""
    return ssl.create_default_context(cadata=ca_certificate) if ca_certificate else None


# -- app-confirmed delivery (see the module's docstring) -------------------------------------------------------

DELIVERY_KEY, ACK_KEY = "clarion_delivery", "clarion_ack"
#: confirmations one callback may carry
CONFIRMATIONS_LIMIT = 500
_DELIVERY_ID_LIMIT = 200


def receipt_secret_field() -> Any:
    """The ``receipt_secret`` config field every push kind declares."""
    return Field(
        default=None,
        min_length=16,
        max_length=256,
        description=(
            "app-confirmed delivery: pushes carry clarion_delivery and clarion_ack (HMAC-SHA256 of the delivery id"
            " under this secret); the app posts them to /r/{name} and the delivery becomes delivered"
        ),
    )


def ack_token(secret: str, delivery_id: str) -> str:
    """What proves a device received the push of ``delivery_id``: base64url HMAC-SHA256, without padding."""
    digest = hmac.new(secret.encode(), delivery_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def confirmation(secret: str | None, delivery_id: str) -> dict[str, str]:
    """The payload keys the app confirms the delivery with; none when the account takes no confirmations."""
    if not secret:
        return {}
    return {DELIVERY_KEY: delivery_id, ACK_KEY: ack_token(secret, delivery_id)}


def confirmations(secret: str, callback: base.Callback) -> base.ReadCallback:
    """The app's confirmations: ``{"delivery": id, "ack": token, "status"?: "delivered"}`` or a list of them.
    Any wrong or missing ack refuses the whole callback (``RefusedCallback``); a body of another shape, or a status
    other than ``delivered``, is ``UnreadableCallback``. Each receipt names the delivery itself (its
    ``detail["delivery_id"]``), for the kinds whose deliveries carry the vendor's id."""
    try:
        document = orjson.loads(callback.body)
    except orjson.JSONDecodeError:
        raise base.UnreadableCallback('a confirmation is JSON: {"delivery", "ack"} or a list of them') from None
    entries = document if isinstance(document, list) else [document]
    if not entries or len(entries) > CONFIRMATIONS_LIMIT:
        raise base.UnreadableCallback(f"a callback carries 1 to {CONFIRMATIONS_LIMIT} confirmations")
    found: list[receipts.Receipt] = []
    seen: set[str] = set()
    for entry in entries:
        delivery = entry.get("delivery") if isinstance(entry, Mapping) else None
        if not isinstance(delivery, str) or not 1 <= len(delivery) <= _DELIVERY_ID_LIMIT:
            raise base.UnreadableCallback('each confirmation is an object with "delivery" (the clarion_delivery id)')
        ack = entry.get("ack")
        given = ack.rstrip("=") if isinstance(ack, str) else None
        if not base.same_secret(ack_token(secret, delivery), given):
            raise base.RefusedCallback(f"missing or wrong ack for delivery {delivery[:64]!r}")
        status = entry.get("status", receipts.Event.DELIVERED.value)
        if status != receipts.Event.DELIVERED.value:
            raise base.UnreadableCallback(f'status {str(status)[:32]!r}: an app confirms only "delivered"')
        if delivery in seen:
            continue
        seen.add(delivery)
        detail = {"confirmed_by": "app", "delivery_id": delivery}
        found.append(receipts.Receipt(delivery, receipts.Event.DELIVERED, "confirmed by the app", detail))
    return base.ReadCallback(found, ignored=len(entries) - len(found))


class ConfirmedByApp:
    """What a push kind needs to take its app's confirmations at ``POST /r/{provider_name}``
    (``base.TakesReceipts``): an account with a ``receipt_secret`` does; one without is 404 there."""

    config: Any

    @property
    def takes_receipts(self) -> bool:
        return self.config.receipt_secret is not None

    def receipts(self, callback: base.Callback) -> base.ReadCallback:
        secret = self.config.receipt_secret
        if secret is None:
            raise base.RefusedCallback("this account takes no confirmations")
        return confirmations(secret, callback)
