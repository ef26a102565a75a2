"""Which provider instances exist: the accounts operators configured (``providers`` table) plus the built-in
defaults (file, inbox, webhook). Instances are built lazily, reused, and rebuilt when their row changes.

A stored account's ``config`` holds no secret in clear: it is the configuration as the API shows it (secrets
masked, see ``masking``) plus, under ``SEALED``, the whole configuration sealed (``sealing``) for this account.
Only building an instance (and saving over masked secrets) opens it. Rows written before sealing existed are
read as they are, and sealed by ``clarion secrets rotate``."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pydantic
import sqlalchemy as sa

from clarion import sealing
from clarion.channels import masking
from clarion.channels.base import Provider
from clarion.channels.file import FileProvider
from clarion.channels.inbox import InboxProvider
from clarion.channels.sms_http import SmsHttpProvider
from clarion.channels.smtp import SmtpProvider
from clarion.channels.webhook import WebhookProvider
from clarion.domain import errors, model, routing
from clarion.store import audit as audit_log
from clarion.store import tables as t
from clarion.store.db import Database

log = logging.getLogger(__name__)
#: the key of the sealed configuration inside a stored ``config`` (no field of any kind can be named so)
SEALED = "$sealed"

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
    ``stored`` is the account's current config, opened: secrets sent back masked keep their stored value."""
    cls = KINDS.get(kind)
    if cls is None:
        raise errors.InvalidInput(f"unknown provider kind {kind!r}", details={"field": "kind", "known": sorted(KINDS)})
    try:
        config = masking.keep(cls.Config, config, stored)
    except masking.NotKept as exc:
        raise errors.InvalidInput(
            f"{exc.field}: {exc.message}", details=[{"field": exc.field, "message": exc.message}]
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


def _spec(kind: str) -> Any:
    cls = KINDS.get(kind)
    return cls.Config if cls is not None else None


def public_config(kind: str, stored: dict[str, Any]) -> dict[str, Any]:
    """What the API shows of a stored config (sealed or, from before sealing, in clear): secrets masked."""
    return masking.mask(_spec(kind), {k: v for k, v in stored.items() if k != SEALED})


def seal(name: str, kind: str, config: dict[str, Any], sealer: sealing.Sealer) -> dict[str, Any]:
    """What the providers table holds of ``config``: the masked view, and the whole sealed for this account;
    a config with no secret in it is stored as it is."""
    shown = masking.mask(_spec(kind), config)
    if shown == config:
        return config
    return {**shown, SEALED: sealer.seal(config, context=f"provider:{name}")}


def is_sealed(stored: dict[str, Any]) -> bool:
    return SEALED in stored


def unseal(name: str, stored: dict[str, Any], sealer: sealing.Sealer | None) -> dict[str, Any]:
    """The config a stored one stands for; raises ``sealing.Unreadable`` when it cannot be opened."""
    if SEALED not in stored:
        return stored
    if sealer is None:
        raise sealing.Unreadable("this process has no secret key to open sealed provider secrets")
    opened = sealer.open(stored[SEALED], context=f"provider:{name}")
    if not isinstance(opened, dict):
        raise sealing.Unreadable(f"the sealed config of {name} is not an object")
    return opened


def changed_fields(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """The names of the config fields that differ (values are never named: they may be secrets)."""
    old = old or {}
    return sorted(f"config.{k}" for k in old.keys() | new.keys() if old.get(k) != new.get(k))


async def reseal(db: Database, old: sealing.Sealer | None, new: sealing.Sealer, *, actor: str) -> dict[str, int]:
    """Seal every stored account under ``new``, in one transaction: those sealed under ``old`` are opened and
    sealed again, those still in clear (stored before sealing) are sealed, those already under ``new`` are left.
    An account neither key opens fails the whole (``sealing.Unreadable`` naming it): nothing is half-rotated."""

    async def job(conn: Any) -> dict[str, int]:
        counts = {"resealed": 0, "sealed": 0, "unchanged": 0}
        for row in (await conn.execute(sa.select(t.providers.c.name, t.providers.c.kind, t.providers.c.config))).all():
            stored = row.config
            if SEALED in stored and new.opens(stored[SEALED]):
                new.open(stored[SEALED], context=f"provider:{row.name}")  # proves it, whole
                counts["unchanged"] += 1
                continue
            try:
                config = unseal(row.name, stored, old)
            except sealing.Unreadable as exc:
                raise sealing.Unreadable(f"provider {row.name!r}: {exc.message}", key_id=exc.key_id) from None
            counts["resealed" if SEALED in stored else "sealed"] += 1
            sealed = seal(row.name, row.kind, config, new)
            await conn.execute(t.providers.update().where(t.providers.c.name == row.name).values(config=sealed))
        detail = {"key_id": new.key_id, "old_key_id": old.key_id if old else None, **counts}
        at = datetime.now(UTC)
        await audit_log.record(conn, actor=actor, action="secrets.rotate", subject="secret_key", at=at, detail=detail)
        return counts

    return await db.write(job)


class ProviderRegistry:
    def __init__(
        self, db: Database, builtins: list[Account], *, sealer: sealing.Sealer | None = None, ttl: float = 2.0
    ) -> None:
        self.db = db
        #: opens the accounts' sealed secrets (the key derived from CLARION_SECRET_KEY)
        self.sealer = sealer
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
        try:
            config = unseal(name, account.config, self.sealer)
        except sealing.Unreadable as exc:  # the operator can restore the key before retries run out
            raise errors.TransientSendError(
                f"provider {name!r}: its secrets cannot be read: {exc.message}", code="secrets_unreadable"
            ) from None
        instance = cls(cls.Config.model_validate(config), name=name, **extra)
        self._instances[name] = (account, instance)
        return instance

    async def close(self) -> None:
        for _, instance in self._instances.values():
            try:
                await instance.close()
            except Exception:  # closing is best effort
                log.debug("closing provider failed", exc_info=True)
        self._instances.clear()
