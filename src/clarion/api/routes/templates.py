"""Templates (what to say, per channel) and trigger rules (which event sends which template).

Every PUT saves a new version of the template; what happens to it — review, approval, test sends — is
``routes.template_versions``. Writes need the ``editor`` role (or ``admin``) and are in the audit log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.api import deps, problems, schemas, views
from clarion.domain import approval, errors, expr, render
from clarion.pipeline import authoring
from clarion.store import audit as audit_log
from clarion.store import records
from clarion.store import tables as t
from clarion.store import templates as template_store

router = APIRouter(prefix="/v1", tags=["templates"], dependencies=deps.AUTH)
KeyPath = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")


def template_json(row: Any) -> dict[str, Any]:
    """A template as stored (its latest version), with ``status`` (the latest version's) and ``live_version``
    (the version sends use where approval is required)."""
    return {
        "key": row.key,
        "name": row.name,
        "category": row.category,
        "priority": row.priority,
        "department": row.department,
        "owner": row.owner,
        "version": row.version,
        "live_version": row.live_version,
        "status": row.status,
        "channels": row.channels,
        "variants": row.variants,
        "policy": row.policy,
        "ttl_seconds": row.ttl_seconds,
        "fallback": getattr(row, "fallback", None),
        "goal": getattr(row, "goal", None),
        "experiment": getattr(row, "experiment", None),
        "variables": sorted(
            set().union(*(render.variables(c) for _, c in render.contents(row.channels, row.variants)))
        ),
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


async def _template_row(clarion: deps.Services, key: str) -> Any:
    async with clarion.db.read() as conn:
        rows = await template_store.template_rows(conn, key=key)
    if not rows:
        raise errors.NotFound("template", key)
    return rows[0]


@router.put(
    "/templates/{key}",
    response_model=views.SavedTemplate,
    responses=views.created(views.SavedTemplate) | problems.answers(403),
)
async def put_template(
    body: schemas.TemplateIn, clarion: deps.Services, caller: deps.Caller, response: Response, key: str = KeyPath
) -> dict[str, Any]:
    """Create or replace a template; every change saves a new version (messages record the one they used).
    The answer's ``status`` is the new version's: ``approved`` (live now) where the category needs no approval,
    otherwise ``draft`` (submit it for review; sends keep using ``live_version``). Needs ``editor`` or ``admin``.

    Every text is checked against the enabled keyword lists: a word of a ``block`` list refuses the template
    (422 ``blocked_keyword`` naming the list, the word and the field); words of ``mask`` lists are allowed
    (they go out as ``***``) and listed in the answer's ``warnings``. ``policy`` overrides the policy settings
    for this template: ``exempt_caps``, ``quiet_hours`` (defer|drop|ignore), ``send_window`` ("HH:MM-HH:MM")
    and ``dedup_seconds``."""
    outcome = await authoring.save_template(clarion, key, body, actor=caller.name, roles=caller.roles)
    saved, warnings = outcome.saved, outcome.warnings
    response.status_code = 201 if saved.created else 200
    return {**template_json(await _template_row(clarion, key)), "warnings": warnings}


@router.get("/templates/{key}", response_model=views.Template, responses=problems.answers(404))
async def get_template(clarion: deps.Services, key: str = KeyPath) -> dict[str, Any]:
    return template_json(await _template_row(clarion, key))


@router.get("/templates", response_model=views.Templates)
async def list_templates(
    clarion: deps.Services,
    limit: int = Query(default=100, ge=1, le=1000),
    cursor: str | None = Query(default=None, max_length=128),
) -> dict[str, Any]:
    async with clarion.db.read() as conn:
        rows = await template_store.template_rows(conn, limit=limit + 1, after=cursor)
    page = rows[:limit]
    return {
        "templates": [template_json(r) for r in page],
        "next_cursor": page[-1].key if len(rows) > limit else None,
    }


@router.delete("/templates/{key}", status_code=204, responses=problems.answers(403, 404))
async def delete_template(clarion: deps.Services, caller: deps.Caller, key: str = KeyPath) -> Response:
    """Delete a template. Its versions are kept (messages name the version they were rendered from, and the
    audit log its reviews); saving the key again continues their numbering."""
    approval.require(caller.roles, approval.EDIT)
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        deleted = await template_store.delete(conn, key)
        if deleted:
            await template_store.audit(
                conn, actor=caller.name, action="template.delete", subject=template_store.subject(key), at=now
            )
        return deleted

    if not await clarion.db.write(job):
        raise errors.NotFound("template", key)
    clarion.invalidate()
    return Response(status_code=204)


# -- rules ---------------------------------------------------------------------------------------------------


def rule_json(row: Any) -> dict[str, Any]:
    return {
        "key": row.key,
        "event": row.event,
        "template": row.template_key,
        "condition": row.condition,
        "channels": row.channels,
        "enabled": row.enabled,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


@router.put(
    "/rules/{key}",
    tags=["rules"],
    response_model=views.Rule,
    responses=views.created(views.Rule) | problems.answers(403),
)
async def put_rule(
    body: schemas.RuleIn, clarion: deps.Services, caller: deps.Caller, response: Response, key: str = KeyPath
) -> dict[str, Any]:
    """Create or replace a trigger rule (``editor`` or ``admin``). The condition is compiled now: a bad one is
    refused with its position, so it can never fail silently at send time."""
    approval.require(caller.roles, approval.EDIT)
    if body.condition:
        try:
            expr.compile_expression(body.condition)
        except errors.ExpressionError as exc:
            raise errors.InvalidInput(
                f"condition: {exc}",
                code="invalid_expression",
                details={
                    "field": "condition",
                    "message": exc.message,
                    "position": exc.position,
                    "line": exc.line,
                    "column": exc.column,
                },
            ) from None
    template = await records.get_one(clarion.db, t.templates, body.template)
    if template is None:
        raise errors.InvalidInput(
            f"template {body.template!r} does not exist",
            code="unknown_template",
            details={"field": "template"},
        )
    if body.channels:
        missing = sorted({c.value for c in body.channels} - set(template.channels))
        if missing:
            raise errors.InvalidInput(
                f"template {body.template!r} has no content for {', '.join(missing)}",
                code="invalid_channels",
                details={"field": "channels", "unknown": missing},
            )
    values = {
        "event": body.event,
        "template_key": body.template,
        "condition": body.condition,
        "channels": [c.value for c in body.channels] if body.channels else None,
        "enabled": body.enabled,
    }
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        before = await _rule_values(conn, key)
        created = await records.upsert(clarion.db, conn, t.rules, key, values, now)
        detail = {"key": key, "before": before, "after": _rule_shown(values)}
        await audit_log.record(conn, actor=caller.name, action="rule.put", subject=f"rule:{key}", at=now, detail=detail)
        return created

    created = await clarion.db.write(job)
    clarion.invalidate()
    response.status_code = 201 if created else 200
    return rule_json(await records.get_one(clarion.db, t.rules, key))


@router.get("/rules/{key}", tags=["rules"], response_model=views.Rule, responses=problems.answers(404))
async def get_rule(clarion: deps.Services, key: str = KeyPath) -> dict[str, Any]:
    row = await records.get_one(clarion.db, t.rules, key)
    if row is None:
        raise errors.NotFound("rule", key)
    return rule_json(row)


@router.get("/rules", tags=["rules"], response_model=views.Rules)
async def list_rules(clarion: deps.Services, event: str | None = Query(default=None, max_length=128)) -> dict[str, Any]:
    rows = await records.list_all(clarion.db, t.rules, limit=10_000)
    return {"rules": [rule_json(r) for r in rows if event is None or r.event == event]}


@router.delete("/rules/{key}", status_code=204, tags=["rules"], responses=problems.answers(403, 404))
async def delete_rule(clarion: deps.Services, caller: deps.Caller, key: str = KeyPath) -> Response:
    approval.require(caller.roles, approval.EDIT)
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        before = await _rule_values(conn, key)
        if before is None or not (await conn.execute(t.rules.delete().where(t.rules.c.key == key))).rowcount:
            return False
        detail = {"key": key, "before": before}
        await audit_log.record(
            conn, actor=caller.name, action="rule.delete", subject=f"rule:{key}", at=now, detail=detail
        )
        return True

    if not await clarion.db.write(job):
        raise errors.NotFound("rule", key)
    clarion.invalidate()
    return Response(status_code=204)


def _rule_shown(values: Any) -> dict[str, Any]:
    """A rule's columns as its audit entry shows them: what a PUT sets, named as the API names them."""
    shown = {c: values[c] for c in ("event", "condition", "channels", "enabled")}
    return {**shown, "template": values["template_key"]}


async def _rule_values(conn: AsyncConnection, key: str) -> dict[str, Any] | None:
    """The stored rule as its audit entry shows it, None when there is none."""
    row = (await conn.execute(t.rules.select().where(t.rules.c.key == key))).first()
    return _rule_shown(row._mapping) if row is not None else None
