"""The HTTP API's request bodies. Validation lives here, at the edge; inside, values are plain dataclasses."""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Any, Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from clarion.domain import model
from clarion.domain.policy import config

Key = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")]
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Addresses(Strict):
    email: str | None = Field(default=None, max_length=254)
    sms: str | None = Field(default=None, description="E.164 phone number, e.g. +8613800138000")
    push: list[Annotated[str, StringConstraints(min_length=1, max_length=4096)]] | None = Field(
        default=None, max_length=20
    )
    webhook: str | None = Field(default=None, max_length=2048)

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is not None and not _EMAIL.match(v):
            raise ValueError("not an e-mail address")
        return v

    @field_validator("sms")
    @classmethod
    def _phone(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            number = phonenumbers.parse(v, None)
        except phonenumbers.NumberParseException:
            raise ValueError("not an E.164 phone number (expected +<country code><number>)") from None
        if not phonenumbers.is_valid_number(number):
            raise ValueError("not a valid phone number")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

    @field_validator("webhook")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/?#]+[^\s]*$", v):
            raise ValueError("not an http(s) URL")
        return v


class UserIn(Strict):
    attributes: dict[str, Any] = Field(default_factory=dict)
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=1000
    )
    timezone: str | None = None
    locale: str | None = Field(default=None, max_length=35, pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")
    addresses: Addresses = Field(default_factory=Addresses)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r}") from None
        return v


Text = Annotated[str, StringConstraints(min_length=1, max_length=100_000)]


class EmailContent(Strict):
    subject: Annotated[str, StringConstraints(min_length=1, max_length=998)]
    text: Text | None = None
    html: Text | None = None

    @model_validator(mode="after")
    def _body(self) -> EmailContent:
        if self.text is None and self.html is None:
            raise ValueError("email needs text and/or html")
        return self


class SmsContent(Strict):
    text: Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class CardContent(Strict):
    title: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    body: Text
    url: Annotated[str, StringConstraints(max_length=2048)] | None = None


class WebhookContent(Strict):
    body: Any = Field(description="any JSON value but null; placeholders are filled inside its strings")

    @field_validator("body")
    @classmethod
    def _not_null(cls, v: Any) -> Any:
        if v is None:
            raise ValueError("a webhook body cannot be null")
        return v


class Channels(Strict):
    email: EmailContent | None = None
    sms: SmsContent | None = None
    push: CardContent | None = None
    inbox: CardContent | None = None
    webhook: WebhookContent | None = None

    @model_validator(mode="after")
    def _some(self) -> Channels:
        if not self.model_dump(exclude_none=True):
            raise ValueError("a template needs content for at least one channel")
        return self


class TemplateIn(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    category: model.Category
    priority: model.Priority = model.Priority.NORMAL
    department: str | None = Field(default=None, max_length=100)
    owner: str | None = Field(default=None, max_length=100)
    channels: Channels
    policy: dict[str, Any] | None = Field(
        default=None,
        description="overrides of the policy settings for this template: exempt_caps (bool), quiet_hours "
        '(defer|drop|ignore), send_window ("HH:MM-HH:MM"), dedup_seconds; checked by TemplatePolicy.from_json',
    )


class SendIn(Strict):
    template: Key
    to: Key | list[Key]
    data: dict[str, Any] = Field(default_factory=dict)
    channels: list[model.Channel] | None = Field(default=None, min_length=1, description="default: all")
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    dedup_key: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None,
        description="a business key (e.g. an order id): deliveries with the same key to the same user and channel "
        "within the dedup window are sent once, whatever their content",
    )

    def recipients(self) -> list[str]:
        return [self.to] if isinstance(self.to, str) else self.to


class EventIn(Strict):
    name: Key
    user_id: Key
    data: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None


class RuleIn(Strict):
    event: Key
    template: Key
    condition: Annotated[str, StringConstraints(max_length=4096)] | None = Field(
        default=None, description="an expression over data.* and user.*; empty or absent: always matches"
    )
    channels: list[model.Channel] | None = Field(default=None, min_length=1)
    enabled: bool = True

    @field_validator("condition")
    @classmethod
    def _blank_is_none(cls, v: str | None) -> str | None:
        return v if v and v.strip() else None


class SuppressionIn(Strict):
    user_id: Key | None = None
    address: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=320)] | None = Field(
        default=None, description="an e-mail address (compared case-insensitively), phone number, push token or URL"
    )
    channel: model.Channel | None = Field(default=None, description="default: every channel")
    category: model.Category | None = Field(default=None, description="default: every category")
    reason: Annotated[str, StringConstraints(max_length=1000)] | None = None
    source: str = Field(default="admin", description=f"one of {', '.join(config.SUPPRESSION_SOURCES)}")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if v not in config.SUPPRESSION_SOURCES:
            raise ValueError(f"must be one of {', '.join(config.SUPPRESSION_SOURCES)}")
        return v

    @model_validator(mode="after")
    def _target(self) -> SuppressionIn:
        if self.user_id is None and self.address is None:
            raise ValueError("give user_id and/or address")
        return self


class ProviderIn(Strict):
    channel: model.Channel
    kind: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    config: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


MessageStatusFilter = Literal["accepted", "queued", "sent", "delivered", "filtered", "deferred", "failed"]
