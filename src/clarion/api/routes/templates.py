"""Templates (what to say, per channel) and trigger rules (which event sends which template)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Response
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.api import deps, schemas
from clarion.domain import errors, expr, render
from clarion.domain.policy import config, decision, keywords
from clarion.store import records
from clarion.store import tables as t

router = APIRouter(prefix="/v1", tags=["templates"], dependencies=deps.AUTH)
KeyPath = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")


def template_json(row: Any) -> dict[str, Any]:
    return {
        "key": row.key,
        "name": row.name,
        "category": row.category,
        "priority": row.priority,
        "department": row.department,
        "owner": row.owner,
        "version": row.version,
        "channels": row.channels,
        "policy": row.policy,
        "variables": sorted(set().union(*(render.variables(c) for c in row.channels.values()))),
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


@router.put("/templates/{key}")
async def put_template(
    body: schemas.TemplateIn, clarion: deps.Services, response: Response, key: str = KeyPath
) -> dict[str, Any]:
    """Create or replace a template; every change bumps its version (messages record the one they used).

    Every text is checked against the enabled keyword lists: a word of a ``block`` list refuses the template
    (422 ``blocked_keyword`` naming the list, the word and the field); words of ``mask`` lists are allowed
    (they go out as ``***``) and listed in the answer's ``warnings``. ``policy`` overrides the policy settings
    for this template: ``exempt_caps``, ``quiet_hours`` (defer|drop|ignore), ``send_window`` ("HH:MM-HH:MM")
    and ``dedup_seconds``."""
    values = body.model_dump(mode="json", exclude={"channels", "policy"})
    values["channels"] = body.channels.model_dump(mode="json", exclude_none=True)
    for channel, content in values["channels"].items():
        render.check(content, f"channels.{channel}")
    values["policy"] = config.TemplatePolicy.from_json(body.policy).to_json() if body.policy is not None else None
    warnings = await keyword_warnings(clarion, values["channels"])
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        current = (await conn.execute(sa.select(t.templates.c.version).where(t.templates.c.key == key))).scalar()
        return await records.upsert(clarion.db, conn, t.templates, key, {**values, "version": (current or 0) + 1}, now)

    created = await clarion.db.write(job)
    clarion.invalidate()
    response.status_code = 201 if created else 200
    return {**template_json(await records.get_one(clarion.db, t.templates, key)), "warnings": warnings}


async def keyword_warnings(clarion: deps.Services, channels: dict[str, Any]) -> list[dict[str, str]]:
    """The mask-list words in ``channels`` (each once per field); raises for a block-list word."""
    verdict, _, masked = keywords.screen(channels, await clarion.catalog.keyword_lists())
    if isinstance(verdict, decision.Drop):
        hit = {
            "list": verdict.detail["list"],
            "word": verdict.detail["word"],
            "field": f"channels.{verdict.detail['field']}",
        }
        raise errors.InvalidInput(
            f"{hit['field']}: contains {hit['word']!r} from the blocked keyword list {hit['list']!r}",
            code="blocked_keyword",
            details=hit,
        )
    found = {(m["list"], m["word"], f"channels.{m['field']}"): None for m in masked}
    return [{"list": k, "word": w, "field": f} for k, w, f in found]


@router.get("/templates/{key}")
async def get_template(clarion: deps.Services, key: str = KeyPath) -> dict[str, Any]:
    row = await records.get_one(clarion.db, t.templates, key)
    if row is None:
        raise errors.NotFound("template", key)
    return template_json(row)


@router.get("/templates")
async def list_templates(
    clarion: deps.Services,
    limit: int = Query(default=100, ge=1, le=1000),
    cursor: str | None = Query(default=None, max_length=128),
) -> dict[str, Any]:
    rows = await records.list_all(clarion.db, t.templates, limit=limit + 1, after=cursor)
    page = rows[:limit]
    return {
        "templates": [template_json(r) for r in page],
        "next_cursor": page[-1].key if len(rows) > limit else None,
    }


@router.delete("/templates/{key}", status_code=204)
async def delete_template(clarion: deps.Services, key: str = KeyPath) -> Response:
    if not await records.delete_one(clarion.db, t.templates, key):
        raise errors.NotFound("template", key)
    clarion.invalidate()
    return Response(status_code=204)


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


@router.put("/rules/{key}", tags=["rules"])
async def put_rule(
    body: schemas.RuleIn, clarion: deps.Services, response: Response, key: str = KeyPath
) -> dict[str, Any]:
    """Create or replace a trigger rule. The condition is compiled now: a bad one is refused with its
    position, so it can never fail silently at send time."""
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
    created = await clarion.db.write(lambda conn: records.upsert(clarion.db, conn, t.rules, key, values, now))
    clarion.invalidate()
    response.status_code = 201 if created else 200
    return rule_json(await records.get_one(clarion.db, t.rules, key))


@router.get("/rules/{key}", tags=["rules"])
async def get_rule(clarion: deps.Services, key: str = KeyPath) -> dict[str, Any]:
    row = await records.get_one(clarion.db, t.rules, key)
    if row is None:
        raise errors.NotFound("rule", key)
    return rule_json(row)


@router.get("/rules", tags=["rules"])
async def list_rules(clarion: deps.Services, event: str | None = Query(default=None, max_length=128)) -> dict[str, Any]:
    rows = await records.list_all(clarion.db, t.rules, limit=10_000)
    return {"rules": [rule_json(r) for r in rows if event is None or r.event == event]}


@router.delete("/rules/{key}", status_code=204, tags=["rules"])
async def delete_rule(clarion: deps.Services, key: str = KeyPath) -> Response:
    if not await records.delete_one(clarion.db, t.rules, key):
        raise errors.NotFound("rule", key)
    clarion.invalidate()
    return Response(status_code=204)
