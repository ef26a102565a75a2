"""Re-send (补发) as decisions: who may re-send a message, and which of its deliveries each new one copies.

A re-send makes new deliveries of a message from what it already rendered: per channel, the latest delivery
that has content (its words and address as they went, or would have gone, out). It is a person's decision, so
dedup does not swallow it; the safety valve, consent and suppressions still hold (``pipeline.resend``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from clarion.domain import approval, errors, model


class NothingToResend(errors.InvalidInput):
    """The message has no rendered content on the channels asked for (it was filtered before rendering)."""

    status = 409


@dataclass(frozen=True, slots=True)
class Source:
    """A delivery of the message as a re-send sees it."""

    id: str
    channel: str
    address: Any
    content: dict[str, Any] | None


def permission(category: model.Category) -> str:
    """Senders and admins re-send; a marketing message only an admin (it reaches people who did not ask)."""
    return approval.ADMINISTER if category is model.Category.MARKETING else approval.SEND


def require(roles: Iterable[str], category: model.Category) -> None:
    """Raise ``approval.Forbidden`` (403) unless ``roles`` may re-send a message of ``category``."""
    approval.require(roles, permission(category))


def sources(deliveries: Sequence[Source], requested: Sequence[model.Channel] | None) -> dict[str, Source]:
    """By channel, in the order the message first used them, the delivery each re-sent one copies: the latest
    with content. ``requested`` narrows to those channels; one the message never used is refused (422 naming
    ``channels``), and so is a message with no content to send on them (409 ``nothing_to_resend``)."""
    used = list(dict.fromkeys(d.channel for d in deliveries))
    wanted = list(dict.fromkeys(c.value for c in requested)) if requested else used
    unknown = [c for c in wanted if c not in used]
    if unknown:
        raise errors.InvalidInput(
            f"channels: the message has no delivery on {', '.join(unknown)}",
            code="invalid_channels",
            details={"field": "channels", "unknown": unknown, "available": used},
        )
    found: dict[str, Source] = {}
    for d in deliveries:  # oldest first: the last with content wins
        if d.channel in wanted and d.content:
            found[d.channel] = d
    chosen = {c: found[c] for c in wanted if c in found}
    if not chosen:
        raise NothingToResend(
            f"the message has no rendered content on {', '.join(wanted)} to re-send (it was filtered before rendering)",
            code="nothing_to_resend",
            details={"field": "channels", "channels": wanted},
        )
    return chosen
