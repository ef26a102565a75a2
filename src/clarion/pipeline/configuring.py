"""Configuring Clarion: provider accounts (secrets write-only), their probes and health, routes, policy settings,
caps and keyword lists (and what the lists do to a text), suppressions added and lifted with a reason, a user's
preferences, API keys, and the audit log's pages.

These are the use cases the API's routes and the console's configuration pages share, so both faces check the
same things, write the same rows and leave the same audit entries; the caller has checked the role and names
the ``actor`` (an API key's name, or ``operator:<name>``)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import apikeys, bootstrap, sealing
from clarion.channels import masking, registry
from clarion.domain import breaker, errors, model, routing
from clarion.domain.policy import config
from clarion.domain.policy import decision as verdicts
from clarion.domain.policy import keywords as keyword_policy
from clarion.store import audit as audit_log
from clarion.store import policies, records
from clarion.store import routes as store_routes
from clarion.store import tables as t
from clarion.store import templates as template_store

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


# -- policies ------------------------------------------------------------------------------------------------


def merged_settings(current: config.PolicySettings, change: dict[str, Any]) -> config.PolicySettings:
    """``change``'s top-level fields over ``current``; ``enabled`` switch by switch."""
    stored = current.to_json()
    merged = {**stored, **change}
    if isinstance(change.get("enabled"), dict):
        merged["enabled"] = {**stored["enabled"], **change["enabled"]}
    return config.PolicySettings.from_json(merged)


async def update_settings(clarion: bootstrap.Clarion, change: dict[str, Any], *, actor: str) -> config.PolicySettings:
    """Change some policy settings (see ``merged_settings``), refused before queueing behind other writes when
    invalid; audited as ``policy_settings.update`` with what changed."""
    async with clarion.db.read() as conn:
        merged_settings(await policies.load_settings(conn), change)
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> config.PolicySettings:
        stored = await policies.load_settings(conn)
        settings = merged_settings(stored, change)  # onto what is stored at write time
        await policies.save_settings(conn, settings, now)
        detail = audit_log.changes(stored.to_json(), settings.to_json())
        await audit_log.record(
            conn, actor=actor, action="policy_settings.update", subject="policy_settings", at=now, detail=detail
        )
        return settings

    settings = await clarion.db.write(job)
    clarion.catalog.invalidate()
    return settings


def cap_summary(cap: config.Cap | None) -> dict[str, Any] | None:
    """A cap as its audit entry shows it: the stored definition, without the key the subject names."""
    return {k: v for k, v in cap.to_json().items() if k != "key"} if cap is not None else None


async def save_cap(clarion: bootstrap.Clarion, cap: config.Cap, *, actor: str) -> bool:
    """Create or replace a frequency cap (True: created); audited as ``cap.put`` with before and after."""
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        before = await policies.get_cap(conn, cap.key)
        created = await policies.put_cap(conn, cap, now)
        detail = {"key": cap.key, "before": cap_summary(before), "after": cap_summary(cap)}
        await audit_log.record(conn, actor=actor, action="cap.put", subject=f"cap:{cap.key}", at=now, detail=detail)
        return created

    created = await clarion.db.write(job)
    clarion.catalog.invalidate()
    return created


def keyword_list_json(spec: policies.KeywordListSpec, *, words: bool = True) -> dict[str, Any]:
    shown = spec.to_json()
    shown["word_count"] = len(spec.words)
    if not words:
        del shown["words"]
    return shown


def keyword_list_summary(spec: policies.KeywordListSpec | None) -> dict[str, Any] | None:
    """A list as its audit entry shows it: everything but the words (a list can hold 100,000), which it counts."""
    return keyword_list_json(spec, words=False) if spec is not None else None


async def save_keyword_list(
    clarion: bootstrap.Clarion, spec: policies.KeywordListSpec, *, actor: str
) -> policies.KeywordListSpec:
    """Create or replace a keyword list, bumping its version; audited as ``keyword_list.put`` with how many words
    came and went (never the words)."""
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> policies.KeywordListSpec:
        before = await policies.get_keyword_list(conn, spec.key)
        stored = await policies.put_keyword_list(conn, spec, now)
        old = set(before.words) if before is not None else set()
        detail = {
            "key": spec.key,
            "before": keyword_list_summary(before),
            "after": keyword_list_summary(stored),
            "words_added": len(set(stored.words) - old),
            "words_removed": len(old - set(stored.words)),
        }
        await audit_log.record(
            conn, actor=actor, action="keyword_list.put", subject=f"keyword_list:{spec.key}", at=now, detail=detail
        )
        return stored

    stored = await clarion.db.write(job)
    clarion.catalog.invalidate()
    return stored


async def screen_text(clarion: bootstrap.Clarion, text: str) -> dict[str, Any]:
    """What the enabled keyword lists would do to ``text`` if a message said it: ``blocked`` (the word, its list
    and the reason) or the text as it would go out with the ``masked`` words — nothing is sent or recorded."""
    lists = await clarion.catalog.keyword_lists()
    decision, screened, masked = keyword_policy.screen({"text": text}, lists)
    blocked = {"reason": decision.reason, **decision.detail} if isinstance(decision, verdicts.Drop) else None
    return {"blocked": blocked, "text": screened.get("text", text), "masked": masked}


async def add_suppression(
    clarion: bootstrap.Clarion,
    *,
    user_id: str | None,
    address: str | None,
    channel: model.Channel | None,
    category: model.Category | None,
    reason: str | None,
    source: str,
    actor: str,
) -> tuple[config.Suppression, bool]:
    """Stop sending to a user or an address (on one channel or category, or on all): (the suppression, whether
    it is new). A new one is audited as ``suppression.add``; recording an existing one changes nothing."""
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> tuple[config.Suppression, bool]:
        found, created = await policies.add_suppression(
            conn,
            user_id=user_id,
            address=address,
            channel=channel,
            category=category,
            reason=reason,
            source=source,
            now=now,
        )
        if created:
            subject = f"user:{user_id}" if user_id is not None else f"suppression:{found.id}"
            await audit_log.record(
                conn, actor=actor, action="suppression.add", subject=subject, at=now, detail=found.to_json()
            )
        return found, created

    answer = await clarion.db.write(job)
    clarion.catalog.invalidate()
    return answer


async def lift_suppression(clarion: bootstrap.Clarion, suppression_id: str, *, reason: str | None, actor: str) -> None:
    """Remove a suppression, so messages reach its user or address again; the audit log's ``suppression.lift``
    keeps what was lifted and ``reason``. ``NotFound`` for an unknown id."""
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        table = t.suppressions
        row = (await conn.execute(table.select().where(table.c.id == suppression_id))).first()
        if row is None or not await policies.delete_suppression(conn, suppression_id):
            return False
        lifted = {c: getattr(row, c) for c in ("user_id", "address", "channel", "category", "reason", "source")}
        detail = {"suppression": {**lifted, "created_at": row.created_at.isoformat()}, "reason": reason}
        await audit_log.record(
            conn, actor=actor, action="suppression.lift", subject=f"suppression:{suppression_id}", at=now, detail=detail
        )
        return True

    if not await clarion.db.write(job):
        raise errors.NotFound("suppression", suppression_id)
    clarion.catalog.invalidate()


async def save_preferences(
    clarion: bootstrap.Clarion, user_id: str, chosen: config.Preferences, *, actor: str
) -> config.Preferences:
    """Replace a user's preferences (the whole document: what is left out is on); ``NotFound`` for an unknown
    user. Audited as ``user.preferences`` with what changed, since it decides what reaches the user."""
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        row = (await conn.execute(sa.select(t.users.c.preferences).where(t.users.c.user_id == user_id))).first()
        if row is None:
            return False
        before = config.Preferences.from_json(row.preferences) if row.preferences else config.NO_PREFERENCES
        await conn.execute(
            t.users.update().where(t.users.c.user_id == user_id).values(preferences=chosen.to_json(), updated_at=now)
        )
        detail = audit_log.changes(before.to_json(), chosen.to_json())
        await audit_log.record(
            conn, actor=actor, action="user.preferences", subject=f"user:{user_id}", at=now, detail=detail
        )
        return True

    if not await clarion.db.write(job):
        raise errors.NotFound("user", user_id)
    return chosen


# -- API keys ------------------------------------------------------------------------------------------------


async def issue_key(
    clarion: bootstrap.Clarion,
    name: str,
    roles: Sequence[str],
    *,
    expires_at: datetime | None,
    expires_in_days: float | None,
    actor: str,
) -> apikeys.Issued:
    """A new API key with ``roles``, expiring at ``expires_at`` or ``expires_in_days`` from now (not both), shown
    in clear in this answer only; audited as ``api_key.create``."""
    if expires_in_days is not None:
        if expires_at is not None:
            raise errors.InvalidInput(
                "give expires_at or expires_in_days, not both", details={"fields": ["expires_at", "expires_in_days"]}
            )
        expires_at = datetime.now(UTC) + timedelta(days=expires_in_days)
    return await clarion.keys.issue(name, roles, expires_at=expires_at, actor=actor)


# -- the audit log -------------------------------------------------------------------------------------------


async def audit_page(
    clarion: bootstrap.Clarion,
    *,
    subject: str | None,
    actor: str | None,
    action: str | None,
    limit: int,
    after: int | None,
) -> dict[str, Any]:
    """A page of the audit log, newest first, filtered by subject, actor and action; ``next_cursor`` is what
    ``after`` takes for the next page (None on the last)."""
    async with clarion.db.read() as conn:
        rows = await template_store.audit_entries(
            conn, subject=subject, actor=actor, action=action, limit=limit + 1, before=after
        )
    page = rows[:limit]
    return {
        "entries": [
            {
                "id": r.id,
                "at": r.at.isoformat(),
                "actor": r.actor,
                "action": r.action,
                "subject": r.subject,
                "detail": r.detail,
            }
            for r in page
        ],
        "next_cursor": page[-1].id if len(rows) > limit else None,
    }
