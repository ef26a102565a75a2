"""JPush (极光推送), Push API v3: one ``POST /v3/push`` per delivery, to all of its registration ids at once.

JPush reaches Android phones without Google services (and iOS through its own APNs relay). Requests are
authenticated with HTTP Basic ``app_key:master_secret``. A content with a title or body is a notification
(Android ``title``/``alert``, iOS ``alert {title, body}``); one with only ``data`` is a custom message
(透传, ``message.msg_content``) the app handles itself. The link (``url``, ``link_type``, ``appid``) and the
content's ``data`` ride in ``extras`` on both platforms; a ``native`` link is also the Android ``intent.url``,
which opens that page when the notification is tapped.

JPush answers for the request as a whole: it accepts the message when any registration id is known, and
says ``1011`` (no push target) when none is. With registration ids for an audience, 1011 means each of them
is unknown to this app key, so the delivery's JPush tokens are reported dead. No token is reported dead when
others were accepted: JPush does not say which were not.

Receipts: JPush does not call back, but its report API counts the devices each ``msg_id`` reached
(``GET {report_endpoint}/v3/received/detail?msg_ids=…``, up to 100 ids, the same Basic auth). The receipt
poller asks it about the deliveries still ``sent`` (``poll_receipts``): a message any of whose received
counters (``jpush_received``, ``android_pns_received``, ``ios_apns_received``, ``ios_msg_received``,
``quickapp_jpush_received``, ``quickapp_pns_received`` …) is 1 or more is ``delivered``, the counters named in
the reason; one with none yet stays ``sent`` and is asked about again. An account with ``receipt_secret``
also takes the app's confirmations (``push``: ``clarion_delivery`` and ``clarion_ack`` ride in ``extras``;
the app posts them to ``POST /r/{name}``), which the report would tell later.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import httpcore
import httpx
import orjson
from pydantic import Field

from clarion.channels import outbound, push
from clarion.channels.base import ProviderConfig
from clarion.channels.webhook import http_status_error, parse_retry_after, send_bounded, transport_error
from clarion.domain import receipts
from clarion.domain.errors import PermanentSendError, SendError, TransientSendError
from clarion.domain.model import Channel, Outgoing, SendResult

Platform = Literal["android", "ios"]
PLATFORMS: tuple[Platform, ...] = ("android", "ios")
#: JPush takes up to 1000 registration ids in one audience
AUDIENCE_LIMIT = 1000
#: the received report takes up to 100 msg_ids a request
REPORT_LIMIT = 100
#: how the report names a counter of devices that received the message, by channel (``jpush_received``,
#: ``android_pns_received``, ``ios_apns_received``, ``ios_msg_received``, ``quickapp_jpush_received`` …)
RECEIVED_SUFFIX = "_received"

#: JPush ``error.code`` values → what they mean for the delivery
ERRORS: dict[int, str] = {
    1000: push.TRANSIENT,  # internal error
    1001: push.PERMANENT,  # POST only
    1002: push.PERMANENT,  # a required parameter is missing
    1003: push.PERMANENT,  # a parameter value is invalid
    1004: push.MISCONFIGURED,  # authentication failed: app key or master secret
    1005: push.PERMANENT,  # message too large
    1008: push.MISCONFIGURED,  # invalid app key
    1009: push.PERMANENT,  # unsupported key in the push object
    1011: push.DEAD,  # no push target: none of the registration ids is known to this app key
    1020: push.MISCONFIGURED,  # HTTPS only: the endpoint is wrong
    1030: push.TRANSIENT,  # internal timeout
    2002: push.TRANSIENT,  # the app's API call rate exceeded
    2003: push.MISCONFIGURED,  # this app key may not push through the API
    2004: push.MISCONFIGURED,  # no permission for this operation
    2005: push.TRANSIENT,  # sending volume out of range
    2008: push.TRANSIENT,  # broadcast frequency limit
}


class JPushProvider(push.ConfirmedByApp):
    """Sends push content to JPush registration ids of one JPush app."""

    kind: ClassVar[str] = "jpush"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.PUSH})
    #: JPush's documented free quota for the push API: 600 calls a minute per app
    default_rate: ClassVar[tuple[float | None, float | None]] = (None, 600.0)
    #: msg_ids one received report takes
    poll_batch: ClassVar[int] = REPORT_LIMIT

    class Config(ProviderConfig):
        secret_fields: ClassVar[frozenset[str]] = frozenset({"master_secret", "receipt_secret"})
        destination_fields: ClassVar[frozenset[str]] = frozenset({"endpoint", "report_endpoint"})

        app_key: str = Field(min_length=1, max_length=64)
        master_secret: str = Field(min_length=1, max_length=256)
        endpoint: str = Field(default="https://api.jpush.cn", description="or https://bjapi.push.jiguang.cn")
        report_endpoint: str = Field(
            default="https://report.jpush.cn", description="the report API (received counts), polled for receipts"
        )
        platforms: list[Platform] = Field(default_factory=lambda: list(PLATFORMS), min_length=1)
        apns_production: bool = Field(default=True, description="iOS through APNs production (False: development)")
        time_to_live: int = Field(default=86400, ge=0, le=10 * 86400, description="seconds kept for offline devices")
        allow_private_networks: bool = False
        timeout: float = Field(default=10, gt=0)
        receipt_secret: str | None = push.receipt_secret_field()

    def __init__(
        self,
        config: JPushProvider.Config,
        *,
        name: str,
        resolve: outbound.Resolver | None = None,
        network: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.config = config
        self.name = name
        credentials = base64.b64encode(f"{config.app_key}:{config.master_secret}".encode()).decode()
        self._authorization = f"Basic {credentials}"
        self._url = config.endpoint.rstrip("/") + "/v3/push"
        self._report_url = config.report_endpoint.rstrip("/") + "/v3/received/detail"
        self._client = outbound.client(
            timeout=config.timeout,
            allow_private_networks=config.allow_private_networks,
            resolve=resolve,
            network=network,
        )

    async def send(self, batch: Sequence[Outgoing]) -> list[SendResult]:
        return await send_bounded(batch, self._one)

    async def _one(self, item: Outgoing) -> SendResult:
        found = [t for t in push.targets(item.address, self.kind) if isinstance(t.token, str)][:AUDIENCE_LIMIT]
        if not found:
            raise push.none_for(self.kind)
        body = self.push_object(item, [t.token for t in found])
        try:
            msg_id = await self._post(body)
        except PermanentSendError as exc:
            if exc.dead_address:  # every id of the audience is unknown
                return SendResult(item.delivery_id, error=exc, dead_addresses=tuple(t.item for t in found))
            raise
        return SendResult(item.delivery_id, provider_message_id=msg_id or item.delivery_id)

    def push_object(self, item: Outgoing, registration_ids: list[str]) -> dict[str, Any]:
        """The v3 push object: platforms, the audience, the notification (or custom message), options."""
        content = item.content
        title, body = push.notification(content)
        extras: dict[str, Any] = {
            **push.string_data(content),
            **push.link_extras(content),
            **push.confirmation(self.config.receipt_secret, item.delivery_id),
        }
        platforms = list(dict.fromkeys(self.config.platforms))
        shown: dict[str, Any] = {"platform": platforms, "audience": {"registration_id": registration_ids}}
        if title is None and body is None:
            shown["message"] = {"msg_content": orjson.dumps(content.get("data") or {}).decode(), "extras": extras}
        else:
            notification: dict[str, Any] = {}
            if "android" in platforms:
                android: dict[str, Any] = {"alert": body or title or "", "extras": extras}
                if title is not None:
                    android["title"] = title
                if content.get("link_type") == "native" and content.get("url"):
                    android["intent"] = {"url": str(content["url"])}
                notification["android"] = android
            if "ios" in platforms:
                alert = {k: v for k, v in (("title", title), ("body", body)) if v is not None}
                notification["ios"] = {"alert": alert, "extras": extras}
            shown["notification"] = notification
        options = {"apns_production": self.config.apns_production, "time_to_live": self.config.time_to_live}
        shown["options"] = options
        return shown

    async def _call(self, method: str, url: str, **request: Any) -> tuple[httpx.Response, Any]:
        """One authorised request to JPush: the response and its JSON (None when it is not JSON)."""
        headers = {"Authorization": self._authorization, **request.pop("headers", {})}
        try:
            response = await self._client.request(method, url, headers=headers, **request)
        except httpx.HTTPError as exc:
            raise transport_error(exc) from None
        try:
            return response, response.json()
        except ValueError:
            return response, None

    async def _post(self, body: dict[str, Any]) -> str:
        response, answer = await self._call(
            "POST", self._url, content=orjson.dumps(body), headers={"Content-Type": "application/json"}
        )
        if response.status_code == 200 and isinstance(answer, dict) and "error" not in answer:
            return str(answer.get("msg_id") or "")
        raise self.error(response, answer)

    @staticmethod
    def error(response: httpx.Response, answer: Any) -> SendError:
        error = answer.get("error") if isinstance(answer, dict) else None
        if not isinstance(error, dict) or "code" not in error:
            return http_status_error(response) or TransientSendError("unexpected answer", code="jpush_error")
        try:
            code = int(error["code"])
        except (TypeError, ValueError):
            code = -1
        message = f"JPush {error.get('code')}: {error.get('message', '')}"
        verdict = ERRORS.get(code)
        if verdict is None:
            fallback = http_status_error(response)
            verdict = push.TRANSIENT if isinstance(fallback, TransientSendError) else push.PERMANENT
        retry_after = parse_retry_after(
            response.headers.get("retry-after") or response.headers.get("x-rate-limit-reset")
        )
        return push.vendor_error(verdict, message, code=str(error.get("code")), retry_after=retry_after)

    # -- receipts: the received report ---------------------------------------------------------------------

    async def poll_receipts(self, provider_message_ids: Sequence[str]) -> list[receipts.Receipt]:
        """What the received report says of these msg_ids: ``delivered`` for each that some device received;
        nothing for the others (still on their way, or offline: asked again next round). Ids that are not
        JPush msg_ids (a delivery sent without one) are not asked about. A refused report raises (a wrong master
        secret is ``misconfigured``), so the poller tells a failed poll from "nothing new"."""
        asked = [pmid for pmid in provider_message_ids if pmid.isdigit()]
        found: list[receipts.Receipt] = []
        for start in range(0, len(asked), REPORT_LIMIT):
            for entry in await self._report(asked[start : start + REPORT_LIMIT]):
                receipt = received(entry)
                if receipt is not None:
                    found.append(receipt)
        return found

    async def _report(self, msg_ids: list[str]) -> list[Any]:
        response, answer = await self._call("GET", self._report_url, params={"msg_ids": ",".join(msg_ids)})
        if response.status_code == 200 and isinstance(answer, list):
            return answer
        if response.status_code in (401, 403):  # the report API refuses the app key or master secret
            error = answer.get("error") if isinstance(answer, dict) else None
            code = str(error.get("code")) if isinstance(error, dict) else f"http_{response.status_code}"
            why = str(error.get("message", "")) if isinstance(error, dict) else response.text[:200]
            raise PermanentSendError(f"JPush report {code}: {why}", code=code, misconfigured=True)
        raise self.error(response, answer)

    async def close(self) -> None:
        await self._client.aclose()


def received(entry: Any) -> receipts.Receipt | None:
    """One msg_id's line of the received report as a receipt: ``delivered`` when a received counter is 1 or
    more (a counter JPush does not know yet is null), else None."""
    if not isinstance(entry, dict) or entry.get("msg_id") in (None, ""):
        return None
    counts = {
        name: value
        for name, value in entry.items()
        if name.endswith(RECEIVED_SUFFIX) and isinstance(value, int) and not isinstance(value, bool) and value >= 1
    }
    if not counts:
        return None
    msg_id = str(entry["msg_id"])
    reason = "JPush received report: " + ", ".join(f"{name}={value}" for name, value in sorted(counts.items()))
    detail = {"vendor_status": "received", "received": counts}
    return receipts.Receipt(msg_id, receipts.Event.DELIVERED, reason, detail)
