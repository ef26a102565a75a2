"""Routes: which provider accounts send a channel's deliveries. Reading and changing them needs the ``admin``
role, like the accounts themselves; every change is in the audit log (``route.create``, ``route.update``,
``route.delete``, subject ``route:<key>``).

A route ``match``es deliveries of its ``channel`` on any of ``category``, ``template``, ``department``,
``priority``, ``signature`` (SMS) and ``country_code`` (SMS: the phone's calling code, ``+86``); a field left out
matches anything, so "+86" and "the rest" are a route with ``country_code`` and one without. The matching route
with most fields set wins; two enabled routes of a channel with as many fields set that could both match one
delivery are a tie, refused when the second is saved. The winner sends through one of its ``providers``, drawn
by ``weight`` (integers; all 0: the first that can send), preferring on a retry one the delivery has not tried;
a provider deleted, disabled or moved to another channel is skipped, and when none of them can send, the
``failover`` accounts are tried in order. A channel with no route shares its traffic equally among its enabled
accounts. The choice is made when each delivery is sent, so a change applies to the queued backlog too."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Response
from pydantic import Field, StringConstraints, field_validator
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import bootstrap
from clarion.api import deps, problems, schemas, views
from clarion.channels import registry
from clarion.domain import approval, errors, model, routing
from clarion.store import audit as audit_log
from clarion.store import records
from clarion.store import routes as store_routes
from clarion.store import tables as t

router = APIRouter(prefix="/v1/routes", tags=["routes"], dependencies=deps.AUTH)
RouteKey = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")
Text = Annotated[str, StringConstraints(min_length=1, max_length=100)]
MAX_PROVIDERS = 32


class MatchIn(schemas.Strict):
    category: model.Category | None = None
    template: schemas.Key | None = Field(default=None, description="a template key")
    department: Text | None = Field(default=None, description="the template's owning department")
    priority: model.Priority | None = None
    signature: Text | None = Field(default=None, description="sms: the content's signature, without 【】")
    country_code: str | None = Field(
        default=None, description="sms: the phone's country calling code, e.g. +86", examples=["+86"]
    )

    @field_validator("signature")
    @classmethod
    def _bare_signature(cls, value: str | None) -> str | None:
        if value is not None and not value.strip("【】"):
            raise ValueError("a signature needs more than its brackets")
        return value.strip("【】") if value is not None else None

    @field_validator("country_code")
    @classmethod
    def _calling_code(cls, value: str | None) -> str | None:
        if value is not None and not routing.is_calling_code(value):
            raise ValueError("not a country calling code (expected + and 1 to 3 digits, e.g. +86)")
        return value


class ProviderWeight(schemas.Strict):
    name: schemas.Key = Field(description="a provider account of the route's channel")
    weight: int = Field(default=1, ge=0, le=1_000_000, description="its share of the traffic among those listed")


class RouteIn(schemas.Strict):
    channel: model.Channel
    match: MatchIn = Field(default_factory=MatchIn, description="what the route applies to; empty: everything")
    providers: list[ProviderWeight] = Field(min_length=1, max_length=MAX_PROVIDERS)
    failover: list[schemas.Key] = Field(
        default_factory=list,
        max_length=MAX_PROVIDERS,
        description="accounts tried in order when none of ``providers`` can send",
    )
    enabled: bool = True


class Route(views.View):
    key: str
    channel: str
    match: dict[str, str] = Field(description="the fields the route matches on (those left out match anything)")
    providers: list[ProviderWeight]
    failover: list[str]
    enabled: bool
    created_at: views.Timestamp
    updated_at: views.Timestamp


class RouteList(views.View):
    routes: list[Route]


def _refuse(field: str, message: str, code: str = "invalid_input", **extra: Any) -> errors.InvalidInput:
    return errors.InvalidInput(
        f"{field}: {message}", code=code, details=[{"field": field, "message": message, **extra}]
    )


async def _check(conn: AsyncConnection, clarion: bootstrap.Clarion, key: str, body: RouteIn) -> routing.Route:
    """The route ``body`` describes, once every account it names can send on its channel and it ties with no
    other enabled route; otherwise 422 naming the field (and, for a tie, the other route)."""
    channel = body.channel
    if body.match.signature is not None and channel not in routing.SIGNED_CHANNELS:
        raise _refuse("match.signature", f"{channel.value} content has no signature")
    if body.match.country_code is not None and channel not in routing.PHONE_CHANNELS:
        raise _refuse("match.country_code", f"a {channel.value} address is not a phone number")
    rows = (await conn.execute(sa.select(t.providers.c.name, t.providers.c.channel))).all()
    channels = {r.name: r.channel for r in rows}
    for name, account in clarion.providers.builtins.items():  # a built-in serves every channel its kind supports
        supported = registry.KINDS[account.kind].channels
        channels.setdefault(name, channel.value if channel in supported else "/".join(sorted(supported)))
    named = [(f"providers.{i}.name", p.name) for i, p in enumerate(body.providers)]
    named += [(f"failover.{i}", name) for i, name in enumerate(body.failover)]
    seen: set[str] = set()
    for field, name in named:
        if name not in channels:
            raise _refuse(field, f"no provider account is named {name!r}", "unknown_provider")
        if channels[name] != channel.value:
            raise _refuse(field, f"{name!r} sends on {channels[name]}, not {channel.value}", "wrong_channel")
        if name in seen:
            raise _refuse(field, f"{name!r} is listed twice")
        seen.add(name)
    match = {f: str(v) for f, v in body.match.model_dump(mode="json", exclude_none=True).items()}
    route = routing.Route(
        key,
        channel,
        {f: match[f] for f in routing.MATCH_FIELDS if f in match},
        tuple(routing.Weighted(p.name, p.weight) for p in body.providers),
        tuple(body.failover),
        body.enabled,
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


@router.put("/{key}", response_model=Route, responses={**views.created(Route), **problems.answers(403)})
async def put_route(
    body: RouteIn, clarion: deps.Services, caller: deps.Caller, response: Response, key: str = RouteKey
) -> dict[str, Any]:
    """Create or replace a route (``admin``) — 403 ``forbidden`` otherwise. 422 naming the field for an unknown
    provider (``unknown_provider``), one of another channel (``wrong_channel``), a weight below 0, an empty
    ``providers``, or a ``match`` that ties with another enabled route (``route_tie``, naming it in
    ``details[0].route``). Applies to deliveries sent from now on, queued ones included."""
    approval.require(caller.roles, approval.ADMINISTER)
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        route = await _check(conn, clarion, key, body)
        values = {
            "channel": route.channel.value,
            "match": dict(route.match),
            "providers": [{"name": p.name, "weight": int(p.weight)} for p in route.providers],
            "failover": list(route.failover),
            "enabled": route.enabled,
        }
        created = await records.upsert(clarion.db, conn, t.routes, key, values, now)
        action = "route.create" if created else "route.update"
        await audit_log.record(conn, actor=caller.name, action=action, subject=f"route:{key}", at=now, detail=values)
        return created

    created = await clarion.db.write(job)
    clarion.invalidate()
    response.status_code = 201 if created else 200
    return store_routes.route_json(await records.get_one(clarion.db, t.routes, key))


@router.get("/{key}", response_model=Route, responses=problems.answers(403, 404))
async def get_route(clarion: deps.Services, caller: deps.Caller, key: str = RouteKey) -> dict[str, Any]:
    """One route (``admin``)."""
    approval.require(caller.roles, approval.ADMINISTER)
    row = await records.get_one(clarion.db, t.routes, key)
    if row is None:
        raise errors.NotFound("route", key)
    return store_routes.route_json(row)


@router.get("", response_model=RouteList, responses=problems.answers(403))
async def list_routes(clarion: deps.Services, caller: deps.Caller) -> dict[str, Any]:
    """Every route, by key (``admin``)."""
    approval.require(caller.roles, approval.ADMINISTER)
    return {"routes": [store_routes.route_json(r) for r in await records.list_all(clarion.db, t.routes)]}


@router.delete("/{key}", status_code=204, responses=problems.answers(403, 404))
async def delete_route(clarion: deps.Services, caller: deps.Caller, key: str = RouteKey) -> Response:
    """Remove a route (``admin``): its deliveries, queued ones included, go by the next most specific route,
    or are shared among the channel's enabled accounts. Written to the audit log as ``route.delete``."""
    approval.require(caller.roles, approval.ADMINISTER)
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        row = (await conn.execute(sa.select(t.routes).where(t.routes.c.key == key))).first()
        if row is None:
            return False
        await conn.execute(t.routes.delete().where(t.routes.c.key == key))
        detail = {"channel": row.channel, "match": row.match}
        await audit_log.record(
            conn, actor=caller.name, action="route.delete", subject=f"route:{key}", at=now, detail=detail
        )
        return True

    if not await clarion.db.write(job):
        raise errors.NotFound("route", key)
    clarion.invalidate()
    return Response(status_code=204)
