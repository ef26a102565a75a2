"""Provisioning the reach: provider accounts (secrets write-only), their probes and health, and the routes that
send a channel's deliveries through them.

These are the use cases the API's routes and the console's provider pages share, so both faces check the same
things, write the same rows and leave the same audit entries; the caller has checked the role and names the
``actor`` (an API key's name, or ``operator:<name>``)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import bootstrap, sealing
from clarion.channels import masking, registry
from clarion.domain import breaker, errors, model, routing
from clarion.store import audit as audit_log
from clarion.store import records
from clarion.store import routes as store_routes
from clarion.store import tables as t

# -- provider accounts ---------------------------------------------------------------------------------------


def provider_json(row: Any) -> dict[str, Any]:
    """A provider account as it may be shown: its secrets masked."""
    return {
        "name": row.name,
        "channel": row.channel,
        "kind": row.kind,
        "config": registry.public_config(row.kind, row.config),
        "enabled": row.enabled,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


class SecretsUnreadable(errors.InvalidInput):
    """The stored secrets a masked value stands for cannot be opened with this server's key."""

    status = 409


def _sealer(clarion: bootstrap.Clarion) -> sealing.Sealer:
    """The registry's, which opens what is sealed here; derived from the same secret key when it has none."""
    return clarion.providers.sealer or sealing.Sealer(clarion.secret_key)


def _opened(clarion: bootstrap.Clarion, name: str, stored: dict[str, Any], needed: bool) -> dict[str, Any] | None:
    """The current config in clear, to keep masked secrets; None when it cannot be opened and is not ``needed``."""
    try:
        return registry.unseal(name, stored, _sealer(clarion))
    except sealing.Unreadable as exc:
        if not needed:
            return None
        raise SecretsUnreadable(
            f"the stored secrets of provider {name!r} cannot be read ({exc.message}); give them again instead of "
            "the masked value",
            code="secrets_unreadable",
            details={"field": "config", "key_id": exc.key_id},
        ) from None


async def save_provider(
    clarion: bootstrap.Clarion,
    name: str,
    *,
    kind: str,
    channel: model.Channel,
    provider_config: dict[str, Any],
    enabled: bool,
    actor: str,
) -> tuple[dict[str, Any], bool]:
    """Create or replace a provider account: (the account as shown, whether it was created). A masked value
    (``********``) in a secret's place keeps the stored secret while its destination stays the same. The
    built-in names are reserved. Audited as ``provider.create``/``provider.update`` naming the fields changed,
    never their values."""
    if name in clarion.providers.builtins:
        raise errors.InvalidInput(
            f"{name!r} is a built-in provider; choose another name (a configured account takes over its channel)",
            code="reserved_name",
            details={"field": "name", "reserved": sorted(clarion.providers.builtins)},
        )
    current = await records.get_one(clarion.db, t.providers, name)
    previous = None
    if current is not None and current.kind == kind:
        previous = _opened(clarion, name, current.config, needed=masking.has_mask(provider_config))
    valid = registry.validate(kind, channel, provider_config, previous)
    if previous is None and current is not None:  # another kind, or unreadable: compare with what was shown
        previous = registry.public_config(current.kind, current.config)
    stored = registry.seal(name, kind, valid, _sealer(clarion))
    values = {"channel": channel.value, "kind": kind, "config": stored, "enabled": enabled}
    detail = {
        "kind": kind,
        "channel": channel.value,
        "enabled": enabled,
        "changed": [
            *(f for f in ("kind", "channel", "enabled") if current is None or getattr(current, f) != values[f]),
            *registry.changed_fields(previous, valid),
        ],
    }
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        created = await records.upsert(clarion.db, conn, t.providers, name, values, now)
        action = "provider.create" if created else "provider.update"
        await audit_log.record(conn, actor=actor, action=action, subject=f"provider:{name}", at=now, detail=detail)
        return created

    created = await clarion.db.write(job)
    clarion.invalidate()
    return provider_json(await records.get_one(clarion.db, t.providers, name)), created


def secret_fields(kind: str) -> tuple[str, ...]:
    """The config fields of ``kind`` that hold a whole secret (shown only as set or not set)."""
    cls = registry.KINDS.get(kind)
    return tuple(sorted(cls.Config.secret_fields)) if cls is not None else ()


#: what a probe sends on each channel when the request gives no ``content`` (WeChat needs a registered template)
PROBE_TEXT = "Clarion test message"
PROBE_CONTENT: dict[model.Channel, dict[str, Any]] = {
    model.Channel.SMS: {"text": PROBE_TEXT},
    model.Channel.EMAIL: {"subject": "Clarion test", "text": PROBE_TEXT},
    model.Channel.PUSH: {"title": "Clarion test", "body": PROBE_TEXT},
    model.Channel.INBOX: {"title": "Clarion test", "body": PROBE_TEXT},
    model.Channel.WEBHOOK: {"body": {"test": True, "text": PROBE_TEXT}},
    model.Channel.WECOM: {"title": "Clarion test", "markdown": PROBE_TEXT},
    model.Channel.DINGTALK: {"title": "Clarion test", "markdown": PROBE_TEXT},
    model.Channel.FEISHU: {"title": "Clarion test", "markdown": PROBE_TEXT},
}


async def probe_provider(
    clarion: bootstrap.Clarion,
    name: str,
    *,
    address: Any,
    content: dict[str, Any] | None,
    channel: model.Channel | None,
    actor: str,
) -> dict[str, Any]:
    """Send one probe through the account to ``address`` and report the vendor's answer. A probe is not a
    message: not stored, judged by no policy, not counted by the breaker. Audited as ``provider.test`` (the
    address is not recorded)."""
    row = await records.get_one(clarion.db, t.providers, name)
    if row is None and name not in clarion.providers.builtins:
        raise errors.NotFound("provider", name)
    chosen = model.Channel(row.channel) if row is not None else channel
    if chosen is None:
        raise errors.InvalidInput(
            f"{name!r} is a built-in serving several channels: say which", details={"field": "channel"}
        )
    content = content if content is not None else PROBE_CONTENT.get(chosen)
    if content is None:
        raise errors.InvalidInput(
            f"a probe on channel {chosen.value!r} needs its content (e.g. a registered template id)",
            details={"field": "content"},
        )
    probe_id = "probe_" + secrets.token_hex(8)
    outgoing = model.Outgoing(
        delivery_id=probe_id, message_id=probe_id, user_id="probe", channel=chosen, address=address, content=content
    )
    started = time.perf_counter()
    try:
        provider = await clarion.providers.get(name)
        [result] = await provider.send([outgoing])
        error = result.error
    except Exception as exc:  # a probe reports what went wrong, whatever it was
        result, error = None, exc
    took = time.perf_counter() - started
    answer: dict[str, Any] = {
        "provider": name,
        "channel": chosen.value,
        "ok": error is None,
        "seconds": round(took, 4),
        "provider_message_id": result.provider_message_id if result is not None and error is None else None,
        "status": (result.status.value if result is not None and result.status else "sent") if error is None else None,
        "error": None,
    }
    if error is not None:
        answer["error"] = {
            "code": getattr(error, "code", None) or type(error).__name__,
            "message": getattr(error, "message", None) or str(error) or repr(error),
            "transient": not isinstance(error, errors.PermanentSendError),
            "misconfigured": bool(getattr(error, "misconfigured", False)),
            "dead_address": bool(getattr(error, "dead_address", False)),
        }
    now = datetime.now(UTC)
    detail = {"channel": chosen.value, "ok": answer["ok"], "error": (answer["error"] or {}).get("code")}

    async def job(conn: AsyncConnection) -> None:
        await audit_log.record(
            conn, actor=actor, action="provider.test", subject=f"provider:{name}", at=now, detail=detail
        )

    await clarion.db.write(job)
    return answer


async def provider_health(clarion: bootstrap.Clarion, name: str) -> dict[str, Any]:
    """One account's last minute of outcomes, its breaker (state, whether shared, thresholds) and its rate
    limit with where it comes from; ``NotFound`` for a name neither configured nor built in."""
    row = await records.get_one(clarion.db, t.providers, name)
    if name not in clarion.providers.builtins and row is None:
        raise errors.NotFound("provider", name)
    breakers = clarion.providers.breakers
    thresholds, rate = await clarion.providers.limits(name)
    view = (
        await breakers.health(name, clarion.providers.clock())
        if breakers is not None
        else breaker.health(breaker.State(), 0.0)
    )
    view["breaker"] = {
        **view["breaker"],  # type: ignore[dict-item]
        "shared": bool(getattr(breakers, "shared", False)),
        "consecutive": thresholds.consecutive,
        "error_rate": thresholds.error_rate,
        "min_attempts": thresholds.min_attempts,
        "cool_down": thresholds.cool_down,
    }
    own = row is not None and (row.config or {}).get("rate_limit") is not None
    source = "none" if rate.unlimited else "account" if own else "kind"
    view["rate_limit"] = {"per_second": rate.per_second, "per_minute": rate.per_minute, "source": source}
    return {"provider": name, **view}


# -- routes --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteChange:
    """A route as given, validated field by field by its face (the API's schema, the console's form)."""

    channel: model.Channel
    match: dict[str, str]
    providers: Sequence[tuple[str, int]]
    failover: Sequence[str]
    enabled: bool


def _refuse(field: str, message: str, code: str = "invalid_input", **extra: Any) -> errors.InvalidInput:
    return errors.InvalidInput(
        f"{field}: {message}", code=code, details=[{"field": field, "message": message, **extra}]
    )


async def _check_route(
    conn: AsyncConnection, clarion: bootstrap.Clarion, key: str, change: RouteChange
) -> routing.Route:
    """The route ``change`` describes, once every account it names can send on its channel and it ties with no
    other enabled route; otherwise 422 naming the field (and, for a tie, the other route)."""
    channel = change.channel
    if "signature" in change.match and channel not in routing.SIGNED_CHANNELS:
        raise _refuse("match.signature", f"{channel.value} content has no signature")
    if "country_code" in change.match and channel not in routing.PHONE_CHANNELS:
        raise _refuse("match.country_code", f"a {channel.value} address is not a phone number")
    rows = (await conn.execute(sa.select(t.providers.c.name, t.providers.c.channel))).all()
    channels = {r.name: r.channel for r in rows}
    for name, account in clarion.providers.builtins.items():  # a built-in serves every channel its kind supports
        supported = registry.KINDS[account.kind].channels
        channels.setdefault(name, channel.value if channel in supported else "/".join(sorted(supported)))
    named = [(f"providers.{i}.name", p) for i, (p, _) in enumerate(change.providers)]
    named += [(f"failover.{i}", name) for i, name in enumerate(change.failover)]
    seen: set[str] = set()
    for field, name in named:
        if name not in channels:
            raise _refuse(field, f"no provider account is named {name!r}", "unknown_provider")
        if channels[name] != channel.value:
            raise _refuse(field, f"{name!r} sends on {channels[name]}, not {channel.value}", "wrong_channel")
        if name in seen:
            raise _refuse(field, f"{name!r} is listed twice")
        seen.add(name)
    route = routing.Route(
        key,
        channel,
        {f: change.match[f] for f in routing.MATCH_FIELDS if f in change.match},
        tuple(routing.Weighted(p, w) for p, w in change.providers),
        tuple(change.failover),
        change.enabled,
    )
    other = routing.tie(route, [r for r in await store_routes.load(conn) if r.key != key])
    if other is not None:
        raise _refuse(
            "match",
            f"ties with route {other.key!r}: as specific ({route.specificity} fields) and able to match the same "
            "deliveries; set another field on one of them, or disable one",
            "route_tie",
            route=other.key,
        )
    return route


async def save_route(
    clarion: bootstrap.Clarion, key: str, change: RouteChange, *, actor: str
) -> tuple[dict[str, Any], bool]:
    """Create or replace a route: (the route as stored, whether it was created). Audited as ``route.create`` or
    ``route.update`` with what it now says; applies to deliveries sent from now on, queued ones included."""
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        route = await _check_route(conn, clarion, key, change)
        values = {
            "channel": route.channel.value,
            "match": dict(route.match),
            "providers": [{"name": p.name, "weight": int(p.weight)} for p in route.providers],
            "failover": list(route.failover),
            "enabled": route.enabled,
        }
        created = await records.upsert(clarion.db, conn, t.routes, key, values, now)
        action = "route.create" if created else "route.update"
        await audit_log.record(conn, actor=actor, action=action, subject=f"route:{key}", at=now, detail=values)
        return created

    created = await clarion.db.write(job)
    clarion.invalidate()
    return store_routes.route_json(await records.get_one(clarion.db, t.routes, key)), created
