"""Clarion's vocabulary as values (see DESIGN.md). Pure: no I/O here."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clarion.domain import errors

if TYPE_CHECKING:
    from clarion.domain.policy import config


class Category(enum.StrEnum):
    VERIFICATION = "verification"
    TRANSACTIONAL = "transactional"
    NOTIFICATION = "notification"
    MARKETING = "marketing"


class Priority(enum.StrEnum):
    URGENT = "urgent"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def lane(self) -> int:
        """Claim order in the outbox: lower lanes are claimed first."""
        return _LANES[self]


_LANES = {Priority.URGENT: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}


class Channel(enum.StrEnum):
    INBOX = "inbox"
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    WEBHOOK = "webhook"
    #: a WeChat official-account template message (template id + field map)
    WECHAT = "wechat"
    #: WeCom, DingTalk and Feishu work chats: markdown text
    WECOM = "wecom"
    DINGTALK = "dingtalk"
    FEISHU = "feishu"
    #: a text-to-speech phone call, for the most urgent; it rings the user's SMS phone number
    VOICE = "voice"


class MessageStatus(enum.StrEnum):
    """What the user perceives of one message: the best of its deliveries."""

    ACCEPTED = "accepted"
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    CLICKED = "clicked"
    FILTERED = "filtered"
    DEFERRED = "deferred"
    UNDELIVERED = "undelivered"
    BOUNCED = "bounced"
    EXPIRED = "expired"
    FAILED = "failed"


class DeliveryStatus(enum.StrEnum):
    ACCEPTED = "accepted"
    FILTERED = "filtered"
    DEFERRED = "deferred"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"  # the vendor's receipt says it reached the device, the mailbox, the endpoint
    UNDELIVERED = "undelivered"  # the vendor's receipt says it did not (its reason kept: "phone off" …)
    BOUNCED = "bounced"  # e-mail: the receiving server sent it back
    READ = "read"  # inbox: the user opened it
    CLICKED = "clicked"  # a short link in it was opened (after it was sent)
    FAILED = "failed"
    EXPIRED = "expired"  # not handed to a provider within the template's ttl: never sent late
    CANCELLED = "cancelled"  # a pending fallback no longer needed: the delivery it stood behind arrived


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    attributes: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    timezone: str | None = None
    locale: str | None = None
    addresses: dict[str, Any] = field(default_factory=dict)
    preferences: config.Preferences | None = None
    #: the suppressions of this user and of their addresses, when loaded with the profile (None: not loaded)
    suppressions: tuple[config.Suppression, ...] | None = None

    def address_for(self, channel: Channel) -> Any:
        """The address a channel reaches this user at; inbox needs none but the user id."""
        if channel is Channel.INBOX:
            return self.user_id
        if channel is Channel.VOICE:  # a call rings the phone the user gave for text messages
            channel = Channel.SMS
        value = self.addresses.get(channel.value)
        return value or None


@dataclass(frozen=True, slots=True)
class Variant:
    """One A/B variant of a template's content: its channel entries replace the template's entries of the same
    channel, and its ``default`` (when given) replaces the template's default."""

    name: str
    weight: int
    channels: dict[Channel, dict[str, Any]] = field(default_factory=dict)
    default: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Template:
    """What to say. ``channels`` holds exactly the channels the template sends on; an empty content (``{}``)
    means "adapt ``default`` to this channel" (see ``domain.adapt``)."""

    key: str
    name: str
    category: Category
    priority: Priority
    channels: dict[Channel, dict[str, Any]]
    department: str | None = None
    owner: str | None = None
    version: int = 1
    policy: config.TemplatePolicy | None = None
    #: one content (title, body, url, link_type, appid, signature) that channels given as ``{}`` are adapted from
    default: dict[str, Any] | None = None
    #: A/B variants with their weights; empty: every user gets ``channels``
    variants: tuple[Variant, ...] = ()
    #: a delivery not handed to a provider within this many seconds of being accepted expires (None: never)
    ttl_seconds: int | None = None
    #: the channel fallback chain as saved: [{"from", "to", "when", "within"}] (see ``domain.fallback``)
    fallback: tuple[dict[str, Any], ...] = ()

    def channels_for(self, requested: Sequence[Channel] | None) -> list[Channel]:
        """The channels a send uses: all of the template's, or ``requested`` (in order, once each); raises
        ``InvalidInput`` (``invalid_channels``) naming those the template has no content for."""
        if not requested:
            return list(self.channels)
        unknown = [c.value for c in requested if c not in self.channels]
        if unknown:
            raise errors.InvalidInput(
                f"template {self.key!r} has no content for channel(s) {', '.join(unknown)}",
                code="invalid_channels",
                details={"field": "channels", "unknown": unknown, "available": [c.value for c in self.channels]},
            )
        return list(dict.fromkeys(requested))


@dataclass(frozen=True, slots=True)
class Rule:
    key: str
    event: str
    template: str
    condition: str | None = None
    channels: tuple[Channel, ...] | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One delivery handed to a provider: everything it needs, nothing it must look up."""

    delivery_id: str
    message_id: str
    user_id: str
    channel: Channel
    address: Any
    content: dict[str, Any]
    attempt: int = 1
    #: the message's priority (a ``Priority`` value) for vendors that send by it (APNs ``apns-priority``); None: unknown
    priority: str | None = None


@dataclass(frozen=True, slots=True)
class SendResult:
    """What a provider reports for one ``Outgoing``: a provider message id, or an error from our tree.

    ``status`` is ``DELIVERED`` when the send itself proves the delivery (a webhook's 2xx, an inbox item
    stored); None: it is ``sent``, and a receipt may tell more later."""

    delivery_id: str
    provider_message_id: str | None = None
    error: Exception | None = None
    status: DeliveryStatus | None = None
    #: addresses the vendor declared gone for good while the rest was sent (one push token of several): they are
    #: removed from the user, on the timeline. A delivery whose whole address is gone fails with
    #: ``PermanentSendError(dead_address=True)`` instead.
    dead_addresses: tuple[Any, ...] = ()


def message_status(delivery_statuses: list[str]) -> MessageStatus:
    """What a message is to its user, from its deliveries: the furthest any channel got.

    Clicked beats read beats delivered beats sent beats in-flight; a message is undelivered, bounced, filtered,
    expired or failed only when no channel is left that could still reach the user (a cancelled fallback counts
    for nothing: the delivery it stood behind says how far the message got)."""
    if len(delivery_statuses) == 1 and (single := _OF_ONE.get(delivery_statuses[0])) is not None:
        return single
    s = set(delivery_statuses)
    for status, shown in _BEST:
        if status in s:
            return shown
    if s & {DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.ACCEPTED}:
        return MessageStatus.QUEUED
    if DeliveryStatus.DEFERRED in s:
        return MessageStatus.DEFERRED
    if DeliveryStatus.UNDELIVERED in s:
        return MessageStatus.UNDELIVERED
    if DeliveryStatus.BOUNCED in s:
        return MessageStatus.BOUNCED
    s.discard(DeliveryStatus.CANCELLED)
    if s and s <= {DeliveryStatus.FILTERED}:
        return MessageStatus.FILTERED
    if DeliveryStatus.EXPIRED in s and s <= {DeliveryStatus.EXPIRED, DeliveryStatus.FILTERED}:
        return MessageStatus.EXPIRED
    return MessageStatus.FAILED


#: the statuses that say a message reached its user, furthest first
_BEST = (
    (DeliveryStatus.CLICKED, MessageStatus.CLICKED),
    (DeliveryStatus.READ, MessageStatus.READ),
    (DeliveryStatus.DELIVERED, MessageStatus.DELIVERED),
    (DeliveryStatus.SENT, MessageStatus.SENT),
)


_OF_ONE: dict[str, MessageStatus] = {}  # a message of one delivery (most are): its status by that delivery's
_OF_ONE.update((status.value, message_status([status.value])) for status in DeliveryStatus)
