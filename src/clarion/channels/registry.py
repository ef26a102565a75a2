"""Which provider instances exist: the accounts operators configured (``providers`` table) plus the built-in
defaults (file, inbox, webhook). Instances are built lazily, reused, and rebuilt when their row changes."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pydantic
import sqlalchemy as sa

from clarion.channels.base import Provider, keep_secrets, redact
from clarion.channels.file import FileProvider
from clarion.channels.inbox import InboxProvider
from clarion.channels.sms_http import SmsHttpProvider
from clarion.channels.smtp import SmtpProvider
from clarion.channels.webhook import WebhookProvider
from clarion.domain import errors, model, routing
from clarion.store import tables as t
from clarion.store.db import Database

log = logging.getLogger(__name__)

KINDS: dict[str, Any] = {
    cls.kind: cls for cls in (FileProvider, InboxProvider, SmtpProvider, WebhookProvider, SmsHttpProvider)
}


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    channel: model.Channel | None  # None: a built-in that serves every channel it supports
    kind: str
    config: dict[str, Any]
    enabled: bool = True
    version: datetime | None = None


def validate(
    kind: str, channel: model.Channel, config: dict[str, Any], stored: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Check a provider account before it is stored; returns the config with defaults filled in.
    ``stored`` is the account's current config: secrets sent back masked keep their stored value."""
    cls = KINDS.get(kind)
    if cls is None:
        raise errors.InvalidInput(f"unknown provider kind {kind!r}", details={"field": "kind", "known": sorted(KINDS)})
    try:
        config = keep_secrets(config, stored, cls.Config.secret_fields)
    except KeyError as exc:
        raise errors.InvalidInput(
            f"config.{exc.args[0]}: the masked value can only stand for a secret already stored",
            details=[{"field": f"config.{exc.args[0]}", "message": "give the secret itself"}],
        ) from None
    if channel not in cls.channels:
        raise errors.InvalidInput(
            f"provider kind {kind!r} cannot send on channel {channel.value!r}",
            details={"field": "channel", "supported": sorted(c.value for c in cls.channels)},
        )
    try:
        return cls.Config.model_validate(config).model_dump()
    except pydantic.ValidationError as exc:
        raise errors.InvalidInput(
            "invalid provider config",
            details=[
                {"field": ".".join(str(p) for p in ("config", *e["loc"])), "message": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)
            ],
        ) from None


def public_config(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    cls = KINDS.get(kind)
    return redact(config, cls.Config.secret_fields if cls else frozenset(config))


class ProviderRegistry:
    def __init__(self, db: Database, builtins: list[Account], *, ttl: float = 2.0) -> None:
        self.db = db
        self.builtins = {a.name: a for a in builtins}
        self.ttl = ttl
        self._accounts: dict[str, Account] = {}
        self._loaded_at = float("-inf")
        self._instances: dict[str, tuple[Account, Provider]] = {}

    def invalidate(self) -> None:
        self._loaded_at = float("-inf")

    async def _load(self) -> dict[str, Account]:
        if time.monotonic() - self._loaded_at < self.ttl:
            return self._accounts
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(t.providers))).all()
        accounts = dict(self.builtins)
        for r in rows:
            accounts[r.name] = Account(r.name, model.Channel(r.channel), r.kind, r.config, r.enabled, r.updated_at)
        self._accounts, self._loaded_at = accounts, time.monotonic()
        return accounts

    async def resolve(self, name: str | None, channel: model.Channel) -> str:
        """The provider a delivery goes through: the one routed at intake if it is still usable, else the
        channel's current choice."""
        accounts = await self._load()
        account = accounts.get(name) if name else None
        if account is not None and account.enabled and (account.channel in (None, channel)):
            return account.name
        choices = [routing.ProviderChoice(a.name, a.channel, a.enabled) for a in accounts.values() if a.channel]
        return routing.choose_provider(channel, choices)

    async def get(self, name: str) -> Provider:
        accounts = await self._load()
        account = accounts.get(name)
        if account is None:
            if name == routing.NO_PROVIDER:  # a channel with no built-in provider and no account: nothing to wait for
                raise errors.PermanentSendError("no provider is configured for this channel", code="no_provider")
            raise errors.TransientSendError(f"provider {name!r} is not configured", code="no_provider")
        cached = self._instances.get(name)
        if cached is not None and cached[0] == account:
            return cached[1]
        if cached is not None:
            await cached[1].close()
        cls = KINDS[account.kind]
        extra = {"db": self.db} if cls is InboxProvider else {}
        instance = cls(cls.Config.model_validate(account.config), name=name, **extra)
        self._instances[name] = (account, instance)
        return instance

    async def close(self) -> None:
        for _, instance in self._instances.values():
            try:
                await instance.close()
            except Exception:  # closing is best effort
                log.debug("closing provider failed", exc_info=True)
        self._instances.clear()
