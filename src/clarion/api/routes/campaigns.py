"""Campaigns: a template sent to an audience now, at a time or on a cron schedule, after approval.

    PUT  /v1/campaigns/{key}            save (as a draft: every change is reviewed again)   editor, admin
    GET  /v1/campaigns/{key}            the campaign, its latest run's live progress and recent runs
    GET  /v1/campaigns                  all, by key
    POST /v1/campaigns/{key}/estimate   the dry run: audience, what each policy drops/defers, SMS segments, cost
    POST /v1/campaigns/{key}/submit|approve|reject|start|pause|resume|cancel   {"comment": "..."} optional

The body of a PUT: ``template``, ``audience`` ({"segment": K} | {"list": L} | both, and "exclude": {...}),
``channels`` (default: the template's), ``schedule`` ("now" | {"kind": "at", "at": ISO} |
{"kind": "cron", "cron": "0 10 * * 1", "timezone": "Asia/Shanghai"}), ``rate`` (messages/s into the outbox),
``exclude_reached_days``, ``department``, ``goal`` (the conversion event), ``data`` (the template's data.*),
``name``. Approval needs an approver or admin other than whoever saved the campaign last; start, pause, resume
and cancel need sender or admin (pause and cancel also editor). Every action is in the audit log
(``campaign:{key}``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Response
from pydantic import Field, StringConstraints

from clarion.api import deps, problems, schemas, views
from clarion.api.schemas import Strict
from clarion.campaigns import service
from clarion.domain import approval

router = APIRouter(prefix="/v1", tags=["campaigns"], dependencies=deps.AUTH)
KeyPath = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")
Action = Literal["submit", "approve", "reject", "start", "pause", "resume", "cancel"]


class ActionIn(Strict):
    comment: Annotated[str, StringConstraints(max_length=2000)] | None = None


class EstimateIn(Strict):
    at: datetime | None = Field(default=None, description="judge at this moment (default: when it would first run)")


def _actor(caller: Any) -> approval.Actor:
    return approval.Actor(caller.name, tuple(caller.roles))


@router.put(
    "/campaigns/{key}",
    response_model=views.Campaign,
    responses=views.created(views.Campaign) | problems.answers(403, 409),
)
async def put_campaign(
    clarion: deps.Services,
    caller: deps.Caller,
    response: Response,
    body: schemas.Document = Body(...),
    key: str = KeyPath,
) -> dict[str, Any]:
    """Create or replace a campaign; it is saved as a ``draft`` (submit it for review). A scheduled, running or
    paused campaign must be cancelled before it can be changed (409)."""
    created, _ = await service.save(clarion, key, body, _actor(caller))
    response.status_code = 201 if created else 200
    return await service.show(clarion, key)


@router.get("/campaigns/{key}", response_model=views.Campaign, responses=problems.answers(404))
async def get_campaign(clarion: deps.Services, key: str = KeyPath) -> dict[str, Any]:
    """The campaign with ``run``: the latest run's progress — ``audience``, ``processed``, ``queued``, ``sent``,
    ``failed`` (its messages now), ``filtered``/``deferred`` (deliveries by policy) — and ``runs``."""
    return await service.show(clarion, key)


@router.get("/campaigns", response_model=views.Campaigns)
async def list_campaigns(
    clarion: deps.Services,
    limit: int = Query(default=100, ge=1, le=1000),
    cursor: str | None = Query(default=None, max_length=128),
) -> dict[str, Any]:
    return await service.page(clarion, limit=limit, after=cursor)


@router.post("/campaigns/{key}/estimate", response_model=views.Estimate, responses=problems.answers(404))
async def estimate_campaign(
    clarion: deps.Services, body: EstimateIn | None = None, key: str = KeyPath
) -> dict[str, Any]:
    """What the campaign would do if it ran at ``at``: nothing is sent, counted or marked. Exact for audiences
    up to ``CLARION_CAMPAIGN_ESTIMATE_EXACT`` users; above, from a random sample, with 95% ``intervals``.
    Costs use ``CLARION_CAMPAIGN_PRICES`` (per delivery; per segment for SMS)."""
    return await service.estimate(clarion, key, body.at if body is not None else None)


@router.post("/campaigns/{key}/{action}", response_model=views.Campaign, responses=problems.answers(403, 404, 409))
async def campaign_action(
    clarion: deps.Services,
    caller: deps.Caller,
    action: Action,
    body: ActionIn | None = None,
    key: str = KeyPath,
) -> dict[str, Any]:
    """Move the campaign through its lifecycle (see the module's table); 409 ``invalid_transition`` from a
    status the action does not apply to, 403 ``own_campaign`` for its author approving it."""
    await service.act(clarion, key, action, _actor(caller), comment=body.comment if body else None)
    return await service.show(clarion, key)
