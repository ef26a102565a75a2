"""The one narrow interface every provider implements.

A provider is built from its stored configuration (``config``, a JSON object validated by the provider's
``Config`` model) and hands a batch of deliveries to one outside system. It returns one ``SendResult`` per
delivery, in any order; an error in a result is a ``TransientSendError`` (retried with backoff) or a
``PermanentSendError`` (the delivery fails now). Any other exception a provider lets escape is treated as
transient by the dispatcher, so a bug never silently drops a message.

Every delivery carries a stable ``delivery_id``; providers pass it to the receiver (a header, the e-mail
Message-ID, the vendor request id) so a re-send after a crash can be recognised downstream.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from clarion.domain import model, pricing, receipts


class BreakerConfig(BaseModel):
    """An account's circuit breaker (``domain.breaker``): it opens after ``consecutive`` transient failures in a
    row, or when at least ``min_attempts`` attempts of the last ``window`` seconds failed at ``error_rate`` or
    more; after ``cool_down`` seconds one probe is let through, and its success closes it."""

    model_config = ConfigDict(extra="forbid")

    consecutive: int = Field(default=5, ge=1, le=1000, description="transient failures in a row that open it")
    error_rate: float = Field(default=0.5, gt=0, le=1, description="share of failed attempts that opens it")
    min_attempts: int = Field(default=20, ge=1, le=500, description="attempts in the window before the rate counts")
    window: float = Field(default=60, gt=0, le=3600, description="seconds of outcomes the error rate is taken over")
    cool_down: float = Field(default=30, gt=0, le=3600, description="seconds open before a half-open probe")


class RateLimitConfig(BaseModel):
    """An account's rate limit (``domain.ratelimit``): at most ``per_second`` and/or ``per_minute`` deliveries;
    a field left out (or null) sets no limit for that period."""

    model_config = ConfigDict(extra="forbid")

    per_second: float | None = Field(default=None, gt=0, le=100_000)
    per_minute: float | None = Field(default=None, gt=0, le=6_000_000)


class ProviderConfig(BaseModel):
    """Base for providers' configuration models: unknown keys are refused so typos surface at save time.

    The class variables say where secrets sit, so that ``masking`` shows them masked and ``registry`` stores
    them sealed; a kind declares every place its configuration can carry a credential."""

    model_config = ConfigDict(extra="forbid")

    #: names of fields that are secrets as a whole: stored sealed, used, never returned by the API
    secret_fields: ClassVar[frozenset[str]] = frozenset()
    #: fields holding a URL: its userinfo (user and password) and every query value are secret
    url_fields: ClassVar[frozenset[str]] = frozenset()
    #: fields holding HTTP headers (name -> value): every value is secret (Authorization, X-Api-Key …)
    header_fields: ClassVar[frozenset[str]] = frozenset()
    #: fields holding a JSON request template, with the pattern of its placeholders: every string that
    #: holds no placeholder is a literal the operator wrote (an account key, a signature …), so it is secret
    template_fields: ClassVar[Mapping[str, re.Pattern[str]]] = {}
    #: fields that say where the secrets are sent (an SMTP host); with ``url_fields``' origins, a masked
    #: secret sent back is kept only while these stay the same, so it cannot be redirected to another server
    destination_fields: ClassVar[frozenset[str]] = frozenset()

    #: this account's breaker thresholds; absent: the defaults (5 in a row, 50% of ≥ 20 in 60 s, 30 s cool-down)
    breaker: BreakerConfig | None = Field(default=None, exclude_if=lambda v: v is None)
    #: this account's rate limit; absent: the kind's documented ``default_rate`` (none: unlimited); ``{}``: none
    rate_limit: RateLimitConfig | None = Field(default=None, exclude_if=lambda v: v is None)


class Provider(Protocol):
    kind: ClassVar[str]
    channels: ClassVar[frozenset[model.Channel]]

    async def send(self, batch: Sequence[model.Outgoing]) -> list[model.SendResult]: ...

    async def close(self) -> None: ...


# -- receipts ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Callback:
    """An HTTP request a vendor sent to ``POST /r/{provider_name}``, as a provider reads it: no web framework's
    types. ``headers`` has lower-case names; ``query`` holds each parameter's last value."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    content_type: str = ""
    #: the URL the vendor called, as the public sees it (``CLARION_PUBLIC_URL`` + path + query): what vendors
    #: that sign the URL (Twilio) signed
    url: str = ""


class RefusedCallback(Exception):
    """The callback does not prove it comes from the vendor (a missing or wrong signature or token): 401, and
    nothing of it is kept."""


class UnreadableCallback(ValueError):
    """The callback verified but its body is not what the provider's receipt format says: 422."""


@runtime_checkable
class TakesReceipts(Protocol):
    """A provider kind that takes the vendor's receipts at ``POST /r/{provider_name}``.

    ``takes_receipts`` says whether this account is configured to (an ``sms_http`` account without a ``receipts``
    block does not: 404). ``receipts`` checks the vendor's proof first — an HMAC signature, a shared token, the
    vendor's own scheme, compared in constant time — raising ``RefusedCallback``, then reads the body into
    receipts (``UnreadableCallback`` when it cannot). A receipt whose vendor status means nothing to Clarion
    (an intermediate "submitted to carrier") is left out; ``ignored`` counts those."""

    @property
    def takes_receipts(self) -> bool: ...

    def receipts(self, callback: Callback) -> ReadCallback: ...


@runtime_checkable
class TakesBounces(Protocol):
    """A provider kind whose bounces come to ``POST /r/{provider_name}/bounces`` (``smtp``: delivery status
    notifications from the mail server's bounce pipe), proven and read like ``TakesReceipts``' callbacks."""

    @property
    def takes_bounces(self) -> bool: ...

    def bounces(self, callback: Callback) -> ReadCallback: ...


@runtime_checkable
class PollsReceipts(Protocol):
    """A provider kind whose vendor is asked for statuses rather than calling back: given the provider message
    ids of deliveries still ``sent``, it returns what the vendor knows of them (the same receipts a callback
    carries). A poller (next) calls it for the deliveries of each such account, and applies what comes back
    through ``pipeline.feedback.receive``, exactly like a callback's."""

    async def poll_receipts(self, provider_message_ids: Sequence[str]) -> list[receipts.Receipt]: ...


@runtime_checkable
class HasStatistics(Protocol):
    """A provider kind whose vendor answers daily statistics over its API (Aliyun ``QuerySendStatistics``,
    Tencent ``SendStatusStatistics`` + ``CallbackStatusStatistics``, Twilio's daily usage records), so a day can
    be reconciled without uploading the bill (``POST /v1/reconciliation/{provider}:fetch``).

    ``daily_statistics`` asks for ``day`` as the vendor reckons it, in its reporting zone (``VendorDay.zone``),
    and returns what the vendor says of it, None for each count it does not report; a vendor error is raised as
    a ``SendError`` with the vendor's code and message."""

    async def daily_statistics(self, day: date) -> pricing.VendorDay: ...


@dataclass(frozen=True, slots=True)
class ReadCallback:
    """What a callback carried: the receipts to apply, and how many entries were left out as meaning nothing."""

    receipts: list[receipts.Receipt]
    ignored: int = 0


def same_secret(expected: str, given: str | None) -> bool:
    """``given`` is ``expected``, compared in constant time (a missing value never matches)."""
    if not given or not expected:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


MASK = "********"


# -- replies (mobile-originated SMS) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMS a user sent back, as the vendor reported it: from ``phone`` (E.164) to ``to`` (the number or
    extension it was sent to), naming ``sign`` (the sign name, where the vendor knows it). ``vendor_id`` makes a
    reply the vendor sends twice the same reply."""

    phone: str
    text: str
    vendor_id: str
    to: str | None = None
    sign: str | None = None
    received_at: str | None = None  # as the vendor wrote it


@runtime_checkable
class TakesReplies(Protocol):
    """A provider kind whose vendor posts users' replies to ``POST /r/{provider_name}/replies``, proven like its
    receipts (``RefusedCallback``) and read into ``Reply`` values (``UnreadableCallback`` when it cannot)."""

    @property
    def takes_replies(self) -> bool: ...

    def replies(self, callback: Callback) -> list[Reply]: ...
