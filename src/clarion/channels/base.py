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

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from clarion.domain import model


class ProviderConfig(BaseModel):
    """Base for providers' configuration models: unknown keys are refused so typos surface at save time."""

    model_config = ConfigDict(extra="forbid")

    #: names of fields that are secrets: stored, used, never returned by the API
    secret_fields: ClassVar[frozenset[str]] = frozenset()


class Provider(Protocol):
    kind: ClassVar[str]
    channels: ClassVar[frozenset[model.Channel]]

    async def send(self, batch: Sequence[model.Outgoing]) -> list[model.SendResult]: ...

    async def close(self) -> None: ...


MASK = "********"


def redact(config: dict[str, Any], secret_fields: frozenset[str]) -> dict[str, Any]:
    """The configuration as the API may show it: secrets replaced by ``MASK``."""
    return {k: (MASK if k in secret_fields and v else v) for k, v in config.items()}


def keep_secrets(new: dict[str, Any], stored: dict[str, Any] | None, secret_fields: frozenset[str]) -> dict[str, Any]:
    """A configuration saved back as it was shown carries ``MASK`` for its secrets: keep the stored ones.
    Raises ``KeyError`` naming a masked secret that has nothing stored behind it."""
    merged = dict(new)
    for name in secret_fields:
        if merged.get(name) == MASK:
            if not stored or name not in stored:
                raise KeyError(name)
            merged[name] = stored[name]
    return merged
