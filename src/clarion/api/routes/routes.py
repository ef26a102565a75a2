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

from clarion.api import deps, problems, schemas, views
from clarion.domain import approval, errors, model, routing
from clarion.pipeline import provisioning
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


def change_of(body: RouteIn) -> provisioning.RouteChange:
    """The route a validated ``RouteIn`` describes, as the use case takes it (the console posts the same)."""
    return provisioning.RouteChange(
        channel=body.channel,
        match={f: str(v) for f, v in body.match.model_dump(mode="json", exclude_none=True).items()},
        providers=[(p.name, p.weight) for p in body.providers],
        failover=list(body.failover),
        enabled=body.enabled,
    )


@router.put("/{key}", response_model=Route, responses={**views.created(Route), **problems.answers(403)})
async def put_route(
    body: RouteIn, clarion: deps.Services, caller: deps.Caller, response: Response, key: str = RouteKey
) -> dict[str, Any]:
    """Create or replace a route (``admin``) — 403 ``forbidden`` otherwise. 422 naming the field for an unknown
    provider (``unknown_provider``), one of another channel (``wrong_channel``), a weight below 0, an empty
    ``providers``, or a ``match`` that ties with another enabled route (``route_tie``, naming it in
    ``details[0].route``). Applies to deliveries sent from now on, queued ones included."""
    approval.require(caller.roles, approval.ADMINISTER)
    shown, created = await provisioning.save_route(clarion, key, change_of(body), actor=caller.name)
    response.status_code = 201 if created else 200
    return shown


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
