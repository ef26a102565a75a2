"""Governance: who did what (the audit log), who may do what (API keys and their roles), and what needs review
before it is sent (the approval settings). Changing keys or settings needs the ``admin`` role."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Body, Query
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.api import deps, problems, schemas, views
from clarion.domain import approval
from clarion.pipeline import configuring
from clarion.store import audit as audit_log
from clarion.store import templates as template_store

router = APIRouter(prefix="/v1", tags=["audit"], dependencies=deps.AUTH)


# -- audit log -----------------------------------------------------------------------------------------------


@router.get("/audit", response_model=views.AuditLog)
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
    after: int | None = Query(default=None, ge=1, le=2**63 - 1, description="next_cursor of the previous page"),
) -> dict[str, Any]:
    """The audit log, newest first: template saves, deletions, submissions, approvals, rejections (and refused
    attempts, as ``<action>.refused``), test sends, whitelist, key and settings changes."""
    return await configuring.audit_page(clarion, subject=subject, actor=actor, action=action, limit=limit, after=after)


# -- approval settings ---------------------------------------------------------------------------------------


@router.get("/approval/settings", tags=["templates"], response_model=views.ApprovalSettings)
async def get_approval_settings(clarion: deps.Services) -> dict[str, Any]:
    """Which categories need review, by which levels in order, and the prefix of test sends."""
    async with clarion.db.read() as conn:
        return (await template_store.load_settings(conn)).to_json()


@router.put(
    "/approval/settings", tags=["templates"], response_model=views.ApprovalSettings, responses=problems.answers(403)
)
async def put_approval_settings(
    clarion: deps.Services, caller: deps.Caller, body: schemas.Document = Body(...)
) -> dict[str, Any]:
    """Change the approval settings (``admin``): ``levels`` ({category: [level names, in order]}; a whole table —
    a category left out needs no approval) and/or ``test_prefix``. A fields not given keeps its value.
    Versions already saved keep their status; a pending one finishes under the new levels."""
    approval.require(caller.roles, approval.ADMINISTER)
    async with clarion.db.read() as conn:
        approval.Settings.from_json(body, await template_store.load_settings(conn))  # refused before queueing
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> approval.Settings:
        stored = await template_store.load_settings(conn)
        settings = approval.Settings.from_json(body, stored)
        await template_store.save_settings(conn, settings, now)
        await audit_log.record(
            conn,
            actor=caller.name,
            action="approval_settings.replace",
            subject="approval_settings",
            at=now,
            detail=audit_log.changes(stored.to_json(), settings.to_json()),
        )
        return settings

    settings = await clarion.db.write(job)
    clarion.invalidate()
    return settings.to_json()
