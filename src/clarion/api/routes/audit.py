"""Governance: who did what (the audit log), who may do what (API keys and their roles), and what needs review
before it is sent (the approval settings). Changing keys or settings needs the ``admin`` role."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import Field, StringConstraints
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.api import deps, schemas
from clarion.api.responses import JSON
from clarion.domain import approval
from clarion.store import templates as template_store

router = APIRouter(prefix="/v1", tags=["audit"], dependencies=deps.AUTH)


# -- audit log -----------------------------------------------------------------------------------------------


@router.get("/audit")
async def list_audit(
    clarion: deps.Services,
    subject: str | None = Query(
        default=None,
        max_length=300,
        description="e.g. template:welcome (every version of it) or template:welcome@3 (that version)",
    ),
    actor: str | None = Query(default=None, max_length=128, description="an API key's name"),
    action: str | None = Query(default=None, max_length=40, description="e.g. template.approve"),
    limit: int = Query(default=100, ge=1, le=1000),
    after: int | None = Query(default=None, ge=1, description="next_cursor of the previous page"),
) -> dict[str, Any]:
    """The audit log, newest first: template saves, deletions, submissions, approvals, rejections (and refused
    attempts, as ``<action>.refused``), test sends, whitelist, key and settings changes."""
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


async def _audit(clarion: deps.Services, caller: deps.Caller, action: str, subject: str, detail: Any) -> None:
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> None:
        await template_store.audit(conn, actor=caller.name, action=action, subject=subject, at=now, detail=detail)

    await clarion.db.write(job)


# -- approval settings ---------------------------------------------------------------------------------------


@router.get("/approval/settings", tags=["templates"])
async def get_approval_settings(clarion: deps.Services) -> dict[str, Any]:
    """Which categories need review, by which levels in order, and the prefix of test sends."""
    async with clarion.db.read() as conn:
        return (await template_store.load_settings(conn)).to_json()


@router.put("/approval/settings", tags=["templates"])
async def put_approval_settings(
    clarion: deps.Services, caller: deps.Caller, body: dict[str, Any] = Body(...)
) -> dict[str, Any]:
    """Change the approval settings (``admin``): ``levels`` ({category: [level names, in order]}; a whole table —
    a category left out needs no approval) and/or ``test_prefix``. A fields not given keeps its value.
    Versions already saved keep their status; a pending one finishes under the new levels."""
    approval.require(caller.roles, approval.ADMINISTER)
    async with clarion.db.read() as conn:
        approval.Settings.from_json(body, await template_store.load_settings(conn))  # refused before queueing
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> approval.Settings:
        settings = approval.Settings.from_json(body, await template_store.load_settings(conn))
        await template_store.save_settings(conn, settings, now)
        await template_store.audit(
            conn,
            actor=caller.name,
            action="approval_settings.replace",
            subject="approval_settings",
            at=now,
            detail=settings.to_json(),
        )
        return settings

    settings = await clarion.db.write(job)
    clarion.invalidate()
    return settings.to_json()


# -- API keys ------------------------------------------------------------------------------------------------


class KeyIn(schemas.Strict):
    name: schemas.Key = Field(description="who or what uses the key; the identity approvals are compared by")
    roles: list[Annotated[str, StringConstraints(max_length=40)]] = Field(
        default_factory=lambda: ["admin"], min_length=1, max_length=len(approval.ROLES)
    )


@router.post("/api-keys", status_code=201, tags=["api-keys"])
async def create_key(body: KeyIn, clarion: deps.Services, caller: deps.Caller) -> JSON:
    """Create an API key with roles (``admin`` only): ``admin``, ``editor``, ``approver``, ``sender``. The key is
    in this answer only; it is stored hashed."""
    approval.require(caller.roles, approval.ADMINISTER)
    roles = approval.check_roles(body.roles)
    key = await clarion.keys.create(body.name, roles)
    await _audit(clarion, caller, "api_key.create", f"api_key:{body.name}", {"roles": list(roles), "prefix": key[:8]})
    return JSON({"name": body.name, "roles": list(roles), "prefix": key[:8], "key": key}, status_code=201)


@router.get("/api-keys", tags=["api-keys"])
async def list_keys(clarion: deps.Services, caller: deps.Caller) -> dict[str, Any]:
    """The keys (never the keys themselves): name, prefix, roles, when created and revoked (``admin`` only)."""
    approval.require(caller.roles, approval.ADMINISTER)
    return {"keys": await clarion.keys.described()}
