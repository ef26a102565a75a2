"""The HTTP API's request bodies. Validation lives here, at the edge; inside, values are plain dataclasses."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from clarion.channels import push as push_addresses
from clarion.domain import adapt, errors, jsonvalues, model, phones, render, timewindows
from clarion.domain import fallback as fallback_rules
from clarion.domain.policy import config

Key = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")]
AccountId = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^\S+$")]
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _storable(data: Any, title: str) -> Any:
    """``data`` itself, when every value in it can be stored; a validation error naming the first that cannot."""
    found = jsonvalues.problem(data)
    if found is not None:
        error = PydanticCustomError("unstorable_value", "{reason}", {"reason": found.message})
        raise ValidationError.from_exception_data(title, [InitErrorDetails(type=error, loc=found.path, input=None)])
    return data


class Stored(Strict):
    """A body Clarion stores as it is given: every value in it, free-form JSON included, must be storable
    (``clarion.domain.jsonvalues``: 64-bit integers, finite numbers, valid Unicode without NUL, at most
    ``MAX_DEPTH`` levels, the body counted). A value that is not is refused by its path, e.g.
    ``attributes.n`` or ``data.items.0.price``, before any other check."""

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        return _storable(data, cls.__name__)


#: a JSON object body that a route reads field by field itself (settings, caps, preferences, segment and campaign
#: definitions): checked as storable, like a ``Stored`` model, before the route sees it
Document = Annotated[dict[str, Any], BeforeValidator(lambda data: _storable(data, "Document"))]


class Addresses(Strict):
    email: str | None = Field(default=None, max_length=254)
    sms: str | None = Field(default=None, description="E.164 phone number, e.g. +8613800138000")
    push: list[Annotated[str | dict[str, Any], BeforeValidator(push_addresses.check_item)]] | None = Field(
        default=None,
        max_length=20,
        description='device tokens: a bare token, {"platform": "fcm|apns|webpush|jpush", "token": …}, '
        "or a browser's Web Push subscription {endpoint, keys: {p256dh, auth}}",
    )
    webhook: str | None = Field(default=None, max_length=2048)
    wechat: AccountId | None = Field(default=None, description="the user's openid with the official account")
    wecom: AccountId | None = Field(default=None, description="the user's WeCom userid")
    dingtalk: AccountId | None = Field(default=None, description="the user's DingTalk userid")
    feishu: AccountId | None = Field(default=None, description="the user's Feishu open_id")

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is not None and not _EMAIL.match(v):
            raise ValueError("not an e-mail address")
        return v

    @field_validator("sms")
    @classmethod
    def _phone(cls, v: str | None) -> str | None:
        return v if v is None else phones.normalize(v)

    @field_validator("webhook")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/?#]+[^\s]*$", v):
            raise ValueError("not an http(s) URL")
        return v


class UserIn(Stored):
    attributes: dict[str, Any] = Field(default_factory=dict)
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=1000
    )
    timezone: str | None = Field(default=None, description="an IANA time zone, e.g. Asia/Shanghai")
    locale: str | None = Field(default=None, max_length=35, pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")
    addresses: Addresses = Field(default_factory=Addresses)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return v if v is None else timewindows.check_zone(v)


Text = Annotated[str, StringConstraints(min_length=1, max_length=100_000)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
Title = Annotated[str, StringConstraints(min_length=1, max_length=500)]
LinkType = Literal["h5", "native", "miniprogram"]
AppId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Signature = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=2, max_length=20, pattern=r"^【?[^【】{}<>$]+】?$")
]
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://\S*$")
_TEMPLATED = ("{", "${", "<#")


def link_type(url: str | None, given: str | None, appid: str | None) -> str | None:
    """The link type of ``url`` (``given`` or inferred from the url); ValueError when they do not fit.

    h5 is an http(s) page, native a deep link into the app (``scheme://…``, the scheme the client defines),
    miniprogram a page path of the WeChat mini program ``appid``. A url that starts with a placeholder is only
    known at send time: its type is ``given`` or h5."""
    if url is None:
        if given is not None or appid is not None:
            raise ValueError("link_type and appid need a url")
        return None
    templated = url.lstrip().startswith(_TEMPLATED)
    scheme = _SCHEME.match(url)
    kind = given or ("h5" if templated or (scheme and scheme[1].lower() in ("http", "https")) else None)
    kind = kind or ("native" if scheme else None)
    if kind is None:
        raise ValueError("give link_type: the url is neither an http(s) page nor an app deep link (scheme://)")
    if (kind == "miniprogram") != (appid is not None):
        raise ValueError("a miniprogram link needs appid, and only a miniprogram link takes one")
    if templated:
        return kind
    if kind == "h5" and not (scheme and scheme[1].lower() in ("http", "https")):
        raise ValueError("an h5 link needs an http(s) url")
    if kind == "native" and not (scheme and scheme[1].lower() not in ("http", "https")):
        raise ValueError("a native link needs an app deep link (scheme://path), not a web page")
    if kind == "miniprogram" and (scheme or re.search(r"\s", url)):
        raise ValueError("a miniprogram link needs a page path (pages/index?x=1), not a url")
    return kind


class EmailContent(Strict):
    """html alone is enough: a plain-text alternative is made from it when the e-mail is sent."""

    subject: Annotated[str, StringConstraints(min_length=1, max_length=998)]
    text: Text | None = None
    html: Text | None = None
    track_opens: StrictBool | None = Field(
        default=None,
        description="put an open pixel in the html (off by default, for privacy): its fetch makes the delivery "
        "read, the funnel's opened. Mail clients that prefetch images (Apple Mail Privacy Protection) inflate "
        "opens, and those that block images miss them",
    )

    @model_validator(mode="after")
    def _body(self) -> EmailContent:
        if self.text is None and self.html is None:
            raise ValueError("email needs text and/or html")
        return self


class SmsTemplateRef(Strict):
    """An SMS template registered with a vendor (Aliyun ``SMS_123``, a Tencent template id), and what fills its
    parameters: each value is Clarion text, rendered with the message's variables like ``text``."""

    code: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = Field(
        description="the vendor's template code, e.g. SMS_123456 (Tencent: the template id)"
    )
    params: dict[
        Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")],
        Annotated[str, StringConstraints(max_length=500)],
    ] = Field(
        default_factory=dict,
        max_length=20,
        description='parameter → Clarion text, e.g. {"code": "{data.code}"}; Tencent\'s positional ones are "1", "2" …',
    )


class SmsContent(Strict):
    text: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    signature: Signature | None = Field(
        default=None, description="the brand put in front of the text as 【Brand】; default: the default content's"
    )
    vendor_template: (
        dict[
            Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^(\*|[A-Za-z0-9_.:@-]+)$")],
            SmsTemplateRef,
        ]
        | None
    ) = Field(
        default=None,
        max_length=20,
        description='provider account (or "*": every account) → the vendor\'s registered template; Aliyun and '
        "Tencent send only those, and ``text`` stays the record of what the user saw",
    )


class CardContent(Strict):
    title: Title
    body: Text
    url: Url | None = None


class PushContent(Strict):
    """Title and body are cut to the push platforms' limits when sent; the url opens as ``link_type``."""

    title: Title
    body: Text
    url: Url | None = None
    link_type: LinkType | None = Field(default=None, description="h5 | native | miniprogram; default: from the url")
    appid: AppId | None = Field(default=None, description="the WeChat mini program of a miniprogram link")

    @model_validator(mode="after")
    def _link(self) -> PushContent:
        self.link_type = link_type(self.url, self.link_type, self.appid)  # type: ignore[assignment]
        return self


class DefaultContent(Strict):
    """One content that the channels listed in ``targets`` (or given as ``{}``) are adapted from."""

    title: Title
    body: Text
    url: Url | None = None
    link_type: LinkType | None = Field(default=None, description="how push opens the url; default: from the url")
    appid: AppId | None = None
    signature: Signature | None = Field(default=None, description="the SMS signature, sent as 【signature】")

    @model_validator(mode="after")
    def _link(self) -> DefaultContent:
        self.link_type = link_type(self.url, self.link_type, self.appid)  # type: ignore[assignment]
        return self


class WebhookContent(Strict):
    body: Any = Field(description="any JSON value but null; placeholders are filled inside its strings")

    @field_validator("body")
    @classmethod
    def _not_null(cls, v: Any) -> Any:
        if v is None:
            raise ValueError("a webhook body cannot be null")
        return v


class MiniProgram(Strict):
    appid: AppId
    pagepath: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class WechatContent(Strict):
    """A WeChat official-account template message: the template registered with WeChat and its fields."""

    template_id: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]
    fields: dict[
        Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.]+$")],
        Annotated[str, StringConstraints(max_length=2000)],
    ] = Field(min_length=1, max_length=50, description="the template's fields by name, e.g. thing1, time2")
    url: Url | None = Field(default=None, description="the h5 page the message opens")
    miniprogram: MiniProgram | None = Field(default=None, description="the mini program page it opens instead")

    @field_validator("url")
    @classmethod
    def _h5(cls, v: str | None) -> str | None:
        if v is not None and link_type(v, None, None) != "h5":
            raise ValueError("a WeChat template message opens an http(s) page")
        return v


class MarkdownContent(Strict):
    """A WeCom or Feishu chat message; ``title`` is the notification preview."""

    title: Title | None = None
    markdown: Text


class DingTalkContent(MarkdownContent):
    title: Title  # DingTalk shows it in the notification and requires it


VendorParam = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class VoiceTemplateRef(Strict):
    """A text-to-speech template registered with a voice vendor, and what fills its parameters."""

    code: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = Field(
        description="the vendor's template code, e.g. TTS_123456"
    )
    params: dict[VendorParam, Annotated[str, StringConstraints(max_length=500)]] = Field(
        default_factory=dict, max_length=20, description='parameter → Clarion text, e.g. {"code": "{data.code}"}'
    )


class VoiceContent(Strict):
    """A voice call: ``text`` is what the call says, the record of what the user heard; vendors speak only
    templates registered with them, so ``vendor_template`` names the template per provider account (``"*"``:
    every account), like an SMS ``vendor_template``."""

    text: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    vendor_template: dict[
        Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^(\*|[A-Za-z0-9_.:@-]+)$")],
        VoiceTemplateRef,
    ] = Field(default_factory=dict, max_length=20, description='provider account (or "*") → its TTS template')


Adapted = {str(c) for c in adapt.ADAPTABLE}


class ChannelContents(Strict):
    """Content per channel. A channel given as ``{}`` or listed in ``targets`` is adapted from ``default``; a
    channel's own content replaces the default for that channel. Stored with adapted channels as ``{}``."""

    default: DefaultContent | None = None
    email: EmailContent | None = None
    sms: SmsContent | None = None
    push: PushContent | None = None
    inbox: CardContent | None = None
    webhook: WebhookContent | None = None
    wechat: WechatContent | None = None
    wecom: MarkdownContent | None = None
    dingtalk: DingTalkContent | None = None
    feishu: MarkdownContent | None = None
    voice: VoiceContent | None = None
    targets: list[model.Channel] | None = Field(
        default=None, exclude=True, description="channels adapted from default (same as giving them as {})"
    )

    #: whether ``{}`` means "adapt the default" even where this has no default (a variant's default may be the
    #: template's); a template's own channels need their default for it, so ``"sms": {}`` alone asks for a text
    _empty_adapts_without_default: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _empty_is_target(cls, data: Any) -> Any:
        if not isinstance(data, dict) or (data.get("default") is None and not cls._empty_adapts_without_default):
            return data
        empty = [k for k, v in data.items() if v == {} and k in Adapted]
        given = data.get("targets")
        if not empty or (given is not None and not isinstance(given, list)):
            return data
        targets: list[Any] = given or []
        rest = {k: v for k, v in data.items() if k not in empty}
        return {**rest, "targets": [*targets, *(t for t in empty if t not in targets)]}

    @field_validator("targets")
    @classmethod
    def _adaptable(cls, v: list[model.Channel] | None) -> list[model.Channel] | None:
        if v is None:
            return v
        wrong = [c.value for c in v if c not in adapt.ADAPTABLE]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} cannot be adapted from the default content: give its own content")
        return list(dict.fromkeys(v))

    @model_serializer(mode="wrap")
    def _with_targets(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        for channel in self.targets or ():
            out.setdefault(channel.value, {})
            if out[channel.value] is None:
                out[channel.value] = {}
        return out

    def channels(self) -> set[str]:
        """The channels this sends on (or changes, in a variant): those with content and the targets."""
        given = {name for name in type(self).model_fields if name not in ("default", "targets")}
        return {n for n in given if getattr(self, n) is not None} | {c.value for c in self.targets or ()}


class Channels(ChannelContents):
    _empty_adapts_without_default: ClassVar[bool] = False

    @model_validator(mode="after")
    def _some(self) -> Channels:
        if self.targets and self.default is None:
            raise ValueError("targets are adapted from the default content: give default")
        if not self.channels():
            raise ValueError(
                "a template needs content for at least one channel"
                + (" (list the channels adapted from default in targets)" if self.default is not None else "")
            )
        return self


class VariantIn(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    weight: int = Field(ge=0, le=1_000_000, description="its share of users: weight / sum of the weights")
    channels: ChannelContents = Field(
        default_factory=ChannelContents,
        description="entries replacing the template's entries of the same channel (default included); "
        "empty: the template's content as it is (a control group)",
    )

    @field_serializer("channels")
    def _compact(self, channels: ChannelContents) -> dict[str, Any]:
        return channels.model_dump(mode="json", exclude_none=True)


class GoalIn(Strict):
    """What counts as a conversion of this template's messages: the user's tracked ``event`` within
    ``within_hours`` of the click on one of its links (``attribution: click``) or of its delivery (``delivery``:
    handed to the provider, or confirmed delivered)."""

    event: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    within_hours: int = Field(default=72, ge=1, le=30 * 24)
    attribution: Literal["click", "delivery"] = "click"


class ExperimentIn(Strict):
    """How the template's A/B test is decided (``analytics.experiments``: an always-valid sequential test, safe to
    look at continuously): the ``metric`` compared, the exposures (sends) every variant needs first, the error
    rate ``alpha``, and ``auto_apply``: once the rule names a winner, Clarion gives it 100 % of the traffic (a new
    version with only the weights changed, audited and reversible with ``POST .../experiment:revert``)."""

    metric: Literal["click_rate", "conversion_rate"] = "click_rate"
    min_sample: int = Field(default=200, ge=1, le=100_000_000)
    alpha: float = Field(default=0.05, gt=0, le=0.5)
    auto_apply: bool = True


class TemplateIn(Stored):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    category: model.Category
    priority: model.Priority = model.Priority.NORMAL
    department: str | None = Field(default=None, max_length=100)
    owner: str | None = Field(default=None, max_length=100)
    channels: Channels
    variants: list[VariantIn] | None = Field(
        default=None,
        min_length=2,
        max_length=10,
        description="A/B variants: each user gets one, chosen by a stable hash of user and template in proportion "
        "to the weights; a variant changes only channels the template already sends on",
    )
    policy: dict[str, Any] | None = Field(
        default=None,
        description="overrides of the policy settings for this template: exempt_caps (bool), quiet_hours "
        '(defer|drop|ignore), send_window ("HH:MM-HH:MM"), dedup_seconds; checked by TemplatePolicy.from_json',
    )
    ttl_seconds: int | None = Field(
        default=None,
        ge=1,
        le=30 * 86_400,
        description="time to live: a delivery not handed to a provider within this many seconds of being accepted "
        "becomes `expired` and is never sent late (e.g. 300 for a verification code); it also bounds the retries",
    )
    goal: GoalIn | None = Field(
        default=None,
        description='the conversion goal: {"event": "coupon.claimed", "within_hours": 72, "attribution": "click"}; '
        "a tracked event of that name converts the user's most recent eligible message of this template, once",
    )
    experiment: ExperimentIn | None = Field(
        default=None,
        description='how the A/B variants are decided: {"metric": "click_rate", "min_sample": 200, "alpha": 0.05, '
        '"auto_apply": true}; needs variants',
    )
    fallback: list[dict[str, Any]] | None = Field(
        default=None,
        max_length=fallback_rules.MAX_STEPS,
        description='channel fallback: steps {"from": "push", "to": "sms", "when": "not_delivered", "within": 120}; '
        "`when` is `failed` (also undelivered, bounced: at once), `not_delivered` or `not_read` (inbox) within "
        "`within` seconds; both channels need content, a channel has one fallback, and a cycle is refused",
    )

    @model_validator(mode="after")
    def _experiment_needs_variants(self) -> TemplateIn:
        if self.experiment is not None and not self.variants:
            error = PydanticCustomError("experiment_needs_variants", "an experiment needs A/B variants to compare")
            raise ValidationError.from_exception_data(
                type(self).__name__, [InitErrorDetails(type=error, loc=("experiment",), input=None)]
            )
        return self

    @model_validator(mode="after")
    def _voice_is_urgent(self) -> TemplateIn:
        """A phone call interrupts whatever the user is doing: a template calls on ``voice`` only at priority
        urgent, unless its ``policy`` says ``voice_below_urgent``. Checked when the template is saved, so a
        refused call is never a surprise at send time."""
        below = self.priority is not model.Priority.URGENT and (self.policy or {}).get("voice_below_urgent") is not True
        if below and model.Channel.VOICE.value in self.channels.channels():
            message = "a template that calls on voice needs priority urgent (or policy.voice_below_urgent: true)"
            error = PydanticCustomError("voice_needs_urgent", message)
            raise ValidationError.from_exception_data(
                type(self).__name__, [InitErrorDetails(type=error, loc=("priority",), input=self.priority.value)]
            )
        return self

    @field_validator("fallback")
    @classmethod
    def _fallback(cls, v: list[dict[str, Any]] | None, info: ValidationInfo) -> list[dict[str, Any]] | None:
        base: Channels | None = info.data.get("channels")
        if v is None or base is None:
            return v  # no chain, or the template's own channels are invalid: that error is reported
        available = [c for c in model.Channel if c.value in base.channels()]
        try:
            steps = fallback_rules.parse(v, available)
        except errors.InvalidInput as exc:
            raise ValueError(str(exc)) from None
        return [s.as_json() for s in steps] or None

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: list[VariantIn] | None, info: ValidationInfo) -> list[VariantIn] | None:
        if v is None:
            return v
        names = [variant.name for variant in v]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"variant names must be unique: {', '.join(twice)} used more than once")
        if not any(variant.weight for variant in v):
            raise ValueError("at least one variant needs a weight above 0")
        base: Channels | None = info.data.get("channels")
        for i, variant in enumerate(v):
            _check_variant(i, variant.channels, base)
        return v


def _check_variant(i: int, channels: ChannelContents, base: Channels | None) -> None:
    """A variant changes only the template's channels, has a default for what it adapts, and compiles."""
    if base is None:
        return  # the template's own channels are invalid: that error is reported
    extra = sorted(channels.channels() - base.channels())
    if extra:
        raise ValueError(
            f"variants.{i}.channels: the template does not send on {', '.join(extra)}; "
            "a variant can only change the template's channels"
        )
    if channels.targets and channels.default is None and base.default is None:
        raise ValueError(f"variants.{i}.channels.targets: adapted channels need a default content")
    for name, content in channels.model_dump(mode="json", exclude_none=True).items():
        try:
            render.check(content, f"variants.{i}.channels.{name}")
        except errors.InvalidInput as exc:
            raise ValueError(exc.message) from None


class SendIn(Stored):
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


class EventIn(Stored):
    name: Key
    user_id: Key
    data: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None


class RuleIn(Stored):
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


class SuppressionIn(Stored):
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

    @field_validator("address")
    @classmethod
    def _phone_as_users_hold_it(cls, v: str | None) -> str | None:
        """A phone is matched as users hold it (E.164): one typed in national form is converted or refused."""
        return phones.normalize(v) if v is not None and phones.looks_like_phone(v) else v

    @model_validator(mode="after")
    def _target(self) -> SuppressionIn:
        if self.user_id is None and self.address is None:
            raise ValueError("give user_id and/or address")
        return self


class ProviderIn(Stored):
    channel: model.Channel
    kind: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="the kind's fields, and for any kind `prices`: what a delivery through the account costs, "
        '`{"currency": "CNY", "unit": "message"|"segment", "default": 0.045, "countries": {"86": 0.045, '
        '"1": 0.0079}}` (per SMS segment or per message; `countries` by calling code, else `default`; at most '
        "six decimals). Each delivery handed over keeps its cost, so a change applies from then on.",
    )
    enabled: bool = True


class ProbeIn(Stored):
    """A probe of a provider account: where it goes, and optionally what it says (else a fixed test text)."""

    address: Any = Field(description="the address on the account's channel: a phone, e-mail, push token, userid …")
    content: dict[str, Any] | None = Field(default=None, description="the channel's content; default: a test text")
    channel: model.Channel | None = Field(default=None, description="only for a built-in serving several channels")

    @field_validator("address")
    @classmethod
    def _present(cls, v: Any) -> Any:
        if v is None or v == "":
            raise ValueError("a probe needs an address")
        return v


MessageStatusFilter = Literal["accepted", "queued", "sent", "delivered", "clicked", "filtered", "deferred", "failed"]
