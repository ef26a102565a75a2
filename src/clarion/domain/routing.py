"""Which provider a delivery goes through. Later: weights, health, rate limits and fallback chains."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clarion.domain import model

#: the provider used for a channel when no account is configured for it
DEFAULT_PROVIDERS = {
    model.Channel.INBOX: "inbox",
    model.Channel.EMAIL: "file",
    model.Channel.SMS: "file",
    model.Channel.PUSH: "file",
    model.Channel.WEBHOOK: "webhook",
}


@dataclass(frozen=True, slots=True)
class ProviderChoice:
    name: str
    channel: model.Channel
    enabled: bool = True


def choose_provider(channel: model.Channel, configured: Sequence[ProviderChoice]) -> str:
    """The channel's enabled provider (the first by name when several are), else the built-in default."""
    candidates = sorted(p.name for p in configured if p.channel is channel and p.enabled)
    return candidates[0] if candidates else DEFAULT_PROVIDERS[channel]
