"""``/v1/feedback-rules``: what a click, a conversion or an unsubscribe does to the user's tags and attributes.

A rule (``pipeline.feedback_rules`` says how it fires) is ``{"on": "click" | "convert" | "unsubscribe",
"match": {"template", "campaign", "event", "link"}, "actions": [{"add_tag": T}, {"remove_tag": T},
{"set": {attribute: value}}], "enabled": true}``: the brief's ``coupon.claimed`` on campaign ``spring`` tagging
``价格敏感用户`` is ``{"on": "convert", "match": {"campaign": "spring", "event": "coupon.claimed"}, "actions":
[{"add_tag": "价格敏感用户"}]}``. ``event`` is for conversions only (a template's goal event, or any tracked event
name), ``link`` (a prefix of the clicked link's target) for clicks only; the template and campaign named must
exist. Saving or deleting a rule needs the ``editor`` or ``admin`` role and is audited (``feedback_rule.create``,
``.update``, ``.delete``, subject ``feedback_rule:<key>``); reading needs a valid key. A change applies to the
facts that come after it. ``GET /v1/users/{user_id}/feedback`` lists what the rules did to a user.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Response
from pydantic import Field, StringConstraints, model_validator
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.api import deps, problems, schemas, views
from clarion.domain import approval, errors
from clarion.pipeline import feedback_rules as rules
from clarion.store import audit as audit_log
from clarion.store import feedback_rules as store
from clarion.store import tables as t

router = APIRouter(prefix="/v1", tags=["feedback"], dependencies=deps.AUTH)
RuleKey = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")
UserId = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")
Tag = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Attribute = Annotated[str, StringConstraints(min_length=1, max_length=100)]
MAX_ACTIONS = 20


class MatchIn(schemas.Strict):
    template: schemas.Key | None = Field(default=None, description="the message's template")
    campaign: schemas.Key | None = Field(default=None, description="the campaign that sent the message")
    event: schemas.Key | None = Field(
        default=None, description="convert only: the goal event, or any tracked event name"
    )
    link: str | None = Field(
        default=None, min_length=1, max_length=2048, description="click only: the clicked link's target starts so"
    )


class ActionIn(schemas.Strict):
    """Exactly one of the three."""

    add_tag: Tag | None = None
    remove_tag: Tag | None = None
    set: dict[Attribute, Any] | None = Field(
        default=None, min_length=1, max_length=100, description="attributes to set; a null value removes one"
    )

    @model_validator(mode="after")
    def _one(self) -> ActionIn:
        if len([name for name, value in self if value is not None]) != 1:
            raise ValueError("give exactly one of add_tag, remove_tag, set")
        return self


class FeedbackRuleIn(schemas.Stored):
    on: Literal["click", "convert", "unsubscribe"]
    match: MatchIn = Field(default_factory=MatchIn, description="what the fact must match; empty: every fact")
    actions: list[ActionIn] = Field(min_length=1, max_length=MAX_ACTIONS, description="done in order")
    enabled: bool = True


class Action(views.Partial):
    add_tag: str | None = None
    remove_tag: str | None = None
    set: dict[str, Any] | None = None


class FeedbackRule(views.View):
    key: str
    on: str
    match: dict[str, str] = Field(description="the fields the rule matches on (those left out match anything)")
    actions: list[Action]
    enabled: bool
    created_at: views.Timestamp
    updated_at: views.Timestamp


class FeedbackRuleList(views.View):
    rules: list[FeedbackRule]


class Firing(views.View):
    id: int
    rule: str
    trigger: str
    message_id: str | None
    detail: dict[str, Any] = Field(description="template, campaign, event and link of the fact, and the actions")
    at: views.Timestamp


class Firings(views.View):
    user_id: str
    firings: list[Firing]
    next_cursor: int | None


def _refuse(field: str, message: str) -> errors.InvalidInput:
    return errors.InvalidInput(f"{field}: {message}", details=[{"field": field, "message": message}])


def rule_json(row: Any) -> dict[str, Any]:
    return {
        "key": row.key,
        **row.definition,
        "enabled": row.enabled,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


def _summary(row: Any) -> dict[str, Any] | None:
    """A stored rule as its audit entry shows it."""
    return {**row.definition, "enabled": row.enabled} if row is not None else None


async def _definition(conn: AsyncConnection, body: FeedbackRuleIn) -> dict[str, Any]:
    """The stored form of ``body``, once its match fits its trigger and names a template and campaign that exist;
    otherwise 422 naming the field."""
    match = body.match.model_dump(exclude_none=True)
    if "event" in match and body.on != "convert":
        raise _refuse("match.event", "only a convert rule matches an event")
    if "link" in match and body.on != "click":
        raise _refuse("match.link", "only a click rule matches a link")
    for field, table, what in (("template", t.templates, "template"), ("campaign", t.campaigns, "campaign")):
        if (
            field in match
            and (await conn.execute(sa.select(table.c.key).where(table.c.key == match[field]))).first() is None
        ):
            raise _refuse(f"match.{field}", f"no {what} named {match[field]!r}")
    actions = [a.model_dump(exclude_none=True) for a in body.actions]
    return {"on": body.on, "match": {f: match[f] for f in rules.MATCH_FIELDS if f in match}, "actions": actions}


@router.put(
    "/feedback-rules/{key}",
    response_model=FeedbackRule,
    responses=views.created(FeedbackRule) | problems.answers(403),
)
async def put_rule(
    body: FeedbackRuleIn, clarion: deps.Services, caller: deps.Caller, response: Response, key: str = RuleKey
) -> dict[str, Any]:
    """Create or replace a feedback rule (``admin``/``editor``) — 403 ``forbidden`` otherwise; 422 naming the field
    for a bad body, an ``event`` on a rule not ``on`` convert, a ``link`` on one not ``on`` click, or a template or
    campaign that does not exist."""
    approval.require(caller.roles, approval.EDIT)
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        definition = await _definition(conn, body)
        before = await store.get(conn, key)
        created = await store.put(conn, key, definition, body.enabled, now)
        detail = {"key": key, "before": _summary(before), "after": {**definition, "enabled": body.enabled}}
        action = "feedback_rule.create" if created else "feedback_rule.update"
        await audit_log.record(
            conn, actor=caller.name, action=action, subject=f"feedback_rule:{key}", at=now, detail=detail
        )
        return created

    created = await clarion.db.write(job)
    response.status_code = 201 if created else 200
    return rule_json(await deps.read_or_404(clarion, store.get, "feedback rule", key))


@router.get("/feedback-rules", response_model=FeedbackRuleList)
async def list_rules(clarion: deps.Services) -> dict[str, Any]:
    """Every feedback rule, by key."""
    async with clarion.db.read() as conn:
        return {"rules": [rule_json(row) for row in await store.list_all(conn)]}


@router.get("/feedback-rules/{key}", response_model=FeedbackRule, responses=problems.answers(404))
async def get_rule(clarion: deps.Services, key: str = RuleKey) -> dict[str, Any]:
    return rule_json(await deps.read_or_404(clarion, store.get, "feedback rule", key))


@router.delete("/feedback-rules/{key}", status_code=204, responses=problems.answers(403, 404))
async def delete_rule(clarion: deps.Services, caller: deps.Caller, key: str = RuleKey) -> Response:
    """Delete a feedback rule (``admin``/``editor``) — 403 ``forbidden`` otherwise. Its firings stay on the users'
    records."""
    approval.require(caller.roles, approval.EDIT)
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        return await audit_log.delete_recorded(
            conn,
            key,
            read=store.get,
            delete=store.delete,
            summary=_summary,
            kind="feedback_rule",
            actor=caller.name,
            at=now,
        )

    if not await clarion.db.write(job):
        raise errors.NotFound("feedback rule", key)
    return Response(status_code=204)


@router.get("/users/{user_id}/feedback", tags=["users"], response_model=Firings)
async def user_feedback(
    clarion: deps.Services,
    user_id: str = UserId,
    limit: int = Query(default=50, ge=1, le=500),
    cursor: int | None = Query(default=None, ge=1, le=2**63 - 1, description="next_cursor of the previous page"),
) -> dict[str, Any]:
    """What the feedback rules did to the user, newest first: which rule, on which fact, with which actions."""
    async with clarion.db.read() as conn:
        rows = await store.firings_of(conn, user_id, limit=limit, before=cursor)
    firings = [
        {
            "id": row.id,
            "rule": row.rule_key,
            "trigger": row.trigger,
            "message_id": row.message_id,
            "detail": row.detail or {},
            "at": row.at.isoformat(),
        }
        for row in rows
    ]
    return {"user_id": user_id, "firings": firings, "next_cursor": rows[-1].id if len(rows) == limit else None}
