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

import re
from collections.abc import Mapping, Sequence
from typing import ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from clarion.domain import model


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


class Provider(Protocol):
    kind: ClassVar[str]
    channels: ClassVar[frozenset[model.Channel]]

    async def send(self, batch: Sequence[model.Outgoing]) -> list[model.SendResult]: ...

    async def close(self) -> None: ...


MASK = "********"
