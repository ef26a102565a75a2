"""Which provider instances exist: the accounts operators configured (``providers`` table) plus the built-in
defaults (file, inbox, webhook). Instances are built lazily, reused, and rebuilt when their row changes.
The routes are loaded with the accounts, and ``choose`` applies them (``domain.routing``) to each claimed batch.

A stored account's ``config`` holds no secret in clear: it is the configuration as the API shows it (secrets
masked, see ``masking``) plus, under ``SEALED``, the whole configuration sealed (``sealing``) for this account.
Only building an instance (and saving over masked secrets) opens it. Rows written before sealing existed are
read as they are, and sealed by ``clarion secrets rotate``."""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pydantic
import sqlalchemy as sa

from clarion import sealing
from clarion.channels import masking, vendor
from clarion.channels.aliyun_sms import AliyunSmsProvider
from clarion.channels.aliyun_voice import AliyunVoiceProvider
from clarion.channels.apns import ApnsProvider
from clarion.channels.apprise_kind import AppriseProvider
from clarion.channels.base import BreakerConfig, Provider, RateLimitConfig
from clarion.channels.dingtalk_robot import DingTalkRobotProvider
from clarion.channels.dingtalk_work import DingTalkWorkProvider
from clarion.channels.fcm import FcmProvider
from clarion.channels.feishu_app import FeishuAppProvider
from clarion.channels.feishu_bot import FeishuBotProvider
from clarion.channels.file import FileProvider
from clarion.channels.inbox import InboxProvider
from clarion.channels.jpush import JPushProvider
from clarion.channels.sms_http import SmsHttpProvider
from clarion.channels.smtp import SmtpProvider
from clarion.channels.tencent_sms import TencentSmsProvider
from clarion.channels.twilio import TwilioProvider
from clarion.channels.webhook import WebhookProvider
from clarion.channels.webpush import WebPushProvider
from clarion.channels.wechat_oa import WechatOaProvider
from clarion.channels.wecom_app import WecomAppProvider
from clarion.channels.wecom_robot import WecomRobotProvider
from clarion.counters import base as counters_base
from clarion.domain import breaker, errors, model, pricing, ratelimit, routing
from clarion.store import audit as audit_log
from clarion.store import costs, outbox
from clarion.store import routes as store_routes
from clarion.store import tables as t
from clarion.store.db import Database

log = logging.getLogger(__name__)
#: the key of the sealed configuration inside a stored ``config`` (no field of any kind can be named so)
SEALED = "$sealed"

_KIND_CLASSES: tuple[Any, ...] = (
    FileProvider,
    InboxProvider,
    SmtpProvider,
    WebhookProvider,
    SmsHttpProvider,
    DingTalkRobotProvider,
    DingTalkWorkProvider,
    FeishuBotProvider,
    FeishuAppProvider,
    WechatOaProvider,
    WecomAppProvider,
    WecomRobotProvider,
    AliyunVoiceProvider,
    AppriseProvider,
    AliyunSmsProvider,
    TencentSmsProvider,
    TwilioProvider,
    FcmProvider,
    ApnsProvider,
    WebPushProvider,
    JPushProvider,
)
KINDS: dict[str, Any] = {cls.kind: cls for cls in _KIND_CLASSES}


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
    config, prices = _without_prices(config)
    if prices is not None:
        prices = pricing.parse(prices, f"config.{costs.PRICES}").to_json()
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
        valid = cls.Config.model_validate(config).model_dump()
    except pydantic.ValidationError as exc:
        raise errors.InvalidInput(
            "invalid provider config",
            details=[
                {"field": ".".join(str(p) for p in ("config", *e["loc"])), "message": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)
            ],
        ) from None
    return valid if prices is None else {**valid, costs.PRICES: prices}


def _without_prices(config: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """``config`` less its ``prices`` (every kind may have them; they are what the account costs, not how it
    sends: ``domain.pricing`` reads them, the kind's ``Config`` never sees them), and the prices (None: none)."""
    if costs.PRICES not in config:
        return config, None
    rest = dict(config)
    return rest, rest.pop(costs.PRICES)


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
    """The accounts and the routes, loaded together and cached for ``ttl`` seconds (``invalidate`` forgets them
    at once, after a change made through this process), and the provider each claimed delivery goes to."""

    def __init__(
        self,
        db: Database,
        builtins: list[Account],
        *,
        sealer: sealing.Sealer | None = None,
        ttl: float = 2.0,
        rand: random.Random | None = None,
        breakers: counters_base.Breakers | None = None,
        context: vendor.ProviderContext | None = None,
    ) -> None:
        self.db = db
        #: what kinds that declare ``uses_context`` are built with (the shared access-token cache)
        self.context = context or vendor.ProviderContext()
        #: the accounts' circuit breakers (``domain.breaker``), consulted once per claimed batch
        self.breakers = breakers
        #: the breakers' clock (unix time): bootstrap makes it the dispatcher's
        self.clock: Callable[[], float] = time.time
        #: opens the accounts' sealed secrets (the key derived from CLARION_SECRET_KEY)
        self.sealer = sealer
        self.builtins = {a.name: a for a in builtins}
        self.ttl = ttl
        #: draws the weighted choices (seeded in tests)
        self.rand = rand or random.Random()
        self._accounts: dict[str, Account] = {}
        self._loaded_at = float("-inf")
        self._instances: dict[str, tuple[Account, Provider]] = {}
        self._routing = _Routing({}, {})
        #: the accounts' token buckets (``domain.ratelimit``), taken from by the dispatch stage
        self.rate_limits: counters_base.RateLimits | None = None
        self._limits: dict[str, tuple[breaker.Thresholds, ratelimit.Rate]] = {}

    def invalidate(self) -> None:
        self._loaded_at = float("-inf")
        costs.forget_prices()

    async def _load(self) -> dict[str, Account]:
        if time.monotonic() - self._loaded_at < self.ttl:
            return self._accounts
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(t.providers))).all()
            stored_routes = await store_routes.load(conn)
        accounts = dict(self.builtins)
        for r in rows:
            accounts[r.name] = Account(r.name, model.Channel(r.channel), r.kind, r.config, r.enabled, r.updated_at)
        self._routing = _Routing.of(accounts, stored_routes)
        self._accounts, self._loaded_at = accounts, time.monotonic()
        self._limits = {}
        return accounts

    def thresholds(self, name: str) -> breaker.Thresholds:
        """``name``'s breaker thresholds: its config's ``breaker``, else the defaults (as last loaded)."""
        return self._limits_of(name)[0]

    def rate(self, name: str) -> ratelimit.Rate:
        """``name``'s rate limit: its config's ``rate_limit``, else its kind's ``default_rate``, else none."""
        return self._limits_of(name)[1]

    async def limits(self, name: str) -> tuple[breaker.Thresholds, ratelimit.Rate]:
        """``thresholds`` and ``rate`` of ``name``, from the accounts as they are now (for the health view)."""
        await self._load()
        return self._limits_of(name)

    def _limits_of(self, name: str) -> tuple[breaker.Thresholds, ratelimit.Rate]:
        known = self._limits.get(name)
        if known is None:
            known = self._limits[name] = _limits(self._accounts.get(name))
        return known

    async def choose(self, batch: Sequence[outbox.Claimed]) -> list[routing.Choice]:
        """The provider each delivery of a claimed batch goes to now (``routing.Choice``, in the batch's order).
        Reads what the routes of the batch's channels match on only when they need it: the messages' template,
        category and department (one query), and for retries, the providers tried before (one query)."""
        await self._load()
        table = self._routing
        needs_message = {c for c, fields in table.needs.items() if fields & _MESSAGE_FIELDS}
        facts: dict[str, tuple[Any, ...]] = {}
        retried = [c.id for c in batch if c.attempts > 1]
        tried: dict[str, set[str]] = {}
        wanted = [c.message_id for c in batch if c.channel in needs_message]
        if wanted or retried:
            async with self.db.read() as conn:
                if wanted:
                    facts = await store_routes.message_facts(conn, wanted)
                if retried:
                    tried = await store_routes.tried(conn, retried)
        plans: dict[tuple[str, str | None], routing.Plan] = {}
        matched: dict[tuple[str, routing.Facts], routing.Route | None] = {}
        draw = self.rand.random
        accounts: dict[str, routing.Account] = table.accounts
        broken: dict[str, str] = {}
        probes: set[str] = set()
        admitted_at = 0.0
        if self.breakers is not None:
            channels = {model.Channel(c.channel) for c in batch}
            names = [a.name for a in accounts.values() if a.enabled and a.channels & channels]
            admitted_at = self.clock()
            broken = await self.breakers.admit(names, admitted_at, probes)
            if broken:  # those accounts cannot send now: choose as if they were disabled, and say why
                accounts = {n: dataclasses.replace(a, enabled=False) if n in broken else a for n, a in accounts.items()}
        choices = []
        for claimed in batch:
            channel = claimed.channel
            route = None
            candidates = table.routes.get(channel)
            if candidates:
                fact = _facts(claimed, table.needs[channel], facts.get(claimed.message_id))
                key = (channel, fact)
                if key in matched:
                    route = matched[key]
                else:
                    route = matched[key] = routing.route_for(candidates, fact)
            plan_key = (channel, route.key if route else None)
            plan = plans.get(plan_key)
            if plan is None:
                plan = plans[plan_key] = _unbroken(
                    routing.plan(model.Channel(channel), route, accounts), broken, channel, accounts
                )
            before = _NONE
            if claimed.attempts > 1:  # a retry: its earlier attempts' providers, the last one on the row itself
                before = frozenset(tried.get(claimed.id, ()))
                if claimed.provider:
                    before |= {claimed.provider}
            choices.append(routing.pick(plan, tried=before, rand=draw))
        if probes and self.breakers is not None:  # a probe no delivery was routed to goes to the next batch
            unused = probes - {c.provider for c in choices}
            if unused:
                await self.breakers.release(sorted(unused), admitted_at)
        return choices

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
        extra: dict[str, Any] = {"db": self.db} if cls is InboxProvider else {}
        if getattr(cls, "uses_context", False):
            extra["context"] = self.context
        try:
            config = unseal(name, account.config, self.sealer)
        except sealing.Unreadable as exc:  # the operator can restore the key before retries run out
            raise errors.TransientSendError(
                f"provider {name!r}: its secrets cannot be read: {exc.message}", code="secrets_unreadable"
            ) from None
        instance = cls(cls.Config.model_validate(_without_prices(config)[0]), name=name, **extra)
        self._instances[name] = (account, instance)
        return instance

    async def close(self) -> None:
        for _, instance in self._instances.values():
            try:
                await instance.close()
            except Exception:  # closing is best effort
                log.debug("closing provider failed", exc_info=True)
        self._instances.clear()


#: the match fields read from the message (and its template) rather than from the claimed delivery itself
_MESSAGE_FIELDS = frozenset({"category", "template", "department"})
_PRIORITIES = {p.lane: p.value for p in model.Priority}
_NONE: frozenset[str] = frozenset()


def _unbroken(
    plan: routing.Plan, broken: dict[str, str], channel: str, accounts: dict[str, routing.Account]
) -> routing.Plan:
    """``plan`` with the skip reason of each account an open breaker stopped ("breaker open: …", not "disabled")."""
    if not broken:
        return plan
    if plan.route is None:  # no route: the channel's accounts share the traffic, less those whose breaker is open
        mine = {
            n: broken[n]
            for n, a in accounts.items()
            if n in broken and not a.builtin and model.Channel(channel) in a.channels
        }
        if not mine:
            return plan
        if plan.usable:
            return dataclasses.replace(plan, skipped=mine)
        # never the built-in default instead of a configured account whose breaker is open: wait for it
        why = ", ".join(f"{n} {w}" for n, w in mine.items())
        return routing.Plan((), skipped=mine, reason=f"no provider of channel {channel!r} can send ({why})")
    if not any(n in broken for n in plan.skipped):
        return plan
    skipped = {n: broken.get(n, why) for n, why in plan.skipped.items()}
    reason = plan.reason
    if not plan.usable and plan.route is not None:
        why = ", ".join(f"{n} {w}" for n, w in skipped.items())
        reason = f"no provider of route {plan.route!r} can send ({why})"
    return dataclasses.replace(plan, skipped=skipped, reason=reason)


def _limits(account: Account | None) -> tuple[breaker.Thresholds, ratelimit.Rate]:
    """An account's breaker thresholds and rate limit, read from the config it was stored with (neither holds a
    secret, so neither is sealed); a config that no longer reads as its kind's keeps the defaults."""
    if account is None or account.kind not in KINDS:
        return breaker.DEFAULT, ratelimit.UNLIMITED
    cls = KINDS[account.kind]
    per_second, per_minute = getattr(cls, "default_rate", (None, None))
    rate = ratelimit.Rate(per_second, per_minute)
    thresholds = breaker.DEFAULT
    try:
        if (given := account.config.get("breaker")) is not None:
            b = BreakerConfig.model_validate(given)
            thresholds = dataclasses.replace(
                breaker.DEFAULT,
                consecutive=b.consecutive,
                error_rate=b.error_rate,
                min_attempts=b.min_attempts,
                window=b.window,
                cool_down=b.cool_down,
                probe_timeout=max(b.cool_down, breaker.DEFAULT.probe_timeout),
            )
        if (given := account.config.get("rate_limit")) is not None:
            r = RateLimitConfig.model_validate(given)
            rate = ratelimit.Rate(r.per_second, r.per_minute)
    except pydantic.ValidationError:
        log.warning("provider %s: its breaker or rate limit config is unreadable, using the defaults", account.name)
    return thresholds, rate


def _facts(claimed: outbox.Claimed, needs: frozenset[str], message: tuple[Any, ...] | None) -> routing.Facts:
    """What ``claimed`` is matched by: only the fields its channel's routes use (the others stay None, so
    deliveries that differ only in them share one look-up)."""
    template, category, department = (message[0], message[1], message[3]) if message else (None, None, None)
    return routing.Facts(
        category=category if "category" in needs else None,
        template=template if "template" in needs else None,
        department=department if "department" in needs else None,
        priority=_PRIORITIES.get(claimed.lane) if "priority" in needs else None,
        signature=routing.signature_of(claimed.content) if "signature" in needs else None,
        country_code=routing.calling_code(claimed.address) if "country_code" in needs else None,
    )


@dataclass(frozen=True, slots=True)
class _Routing:
    """The accounts as choosing sees them, and each channel's routes with the match fields they use."""

    accounts: dict[str, routing.Account]
    routes: dict[str, list[routing.Route]]  # channel → its routes, by key
    needs: dict[str, frozenset[str]] = field(default_factory=dict)  # channel → fields its enabled routes match on

    @classmethod
    def of(cls, accounts: dict[str, Account], routes: Sequence[routing.Route]) -> _Routing:
        choosing = {
            a.name: routing.Account(
                a.name,
                frozenset(KINDS[a.kind].channels) if a.channel is None else frozenset({a.channel}),
                a.enabled,
                builtin=a.channel is None,
            )
            for a in accounts.values()
            if a.kind in KINDS
        }
        by_channel: dict[str, list[routing.Route]] = {}
        needs: dict[str, frozenset[str]] = {}
        for route in routes:
            if route.enabled:
                channel = route.channel.value
                by_channel.setdefault(channel, []).append(route)
                needs[channel] = needs.get(channel, frozenset()) | frozenset(route.match)
        return cls(choosing, by_channel, needs)
