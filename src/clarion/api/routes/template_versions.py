"""Template versions, their review, and test sends.

Every PUT of a template saves a version (``routes.templates``). Where the template's category needs approval
(``GET /v1/approval/settings``; by default ``marketing``: two levels, ``business`` then ``compliance``) the version
starts as a ``draft``; an editor submits it, approvers other than its author approve it level by level, and only
then do sends use it. Until then sends use the previous approved version — or are refused with 409
``not_approved`` when there is none. Before that, a test send shows the draft to the test whitelist only.
Every review action, refused ones too, is in the audit log (``GET /v1/audit``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import Field, StringConstraints
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.api import deps, problems, schemas, views
from clarion.api.responses import JSON
from clarion.domain import approval, errors, model
from clarion.pipeline import intake
from clarion.store import templates as template_store

router = APIRouter(prefix="/v1", tags=["templates"], dependencies=deps.AUTH)
KeyPath = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")
NumberPath = Path(ge=1, le=2**31 - 1)
Comment = Annotated[str, StringConstraints(max_length=2000)]


# -- versions and review -------------------------------------------------------------------------------------


def version_json(row: Any, settings: approval.Settings, *, body: bool = False) -> dict[str, Any]:
    """A version's state; ``awaiting`` names the review level a pending version waits for."""
    awaiting = None
    if row.status == approval.Status.PENDING_REVIEW:
        levels = settings.levels_for(model.Category(row.body["category"])) or ("review",)
        awaiting = levels[min(len(row.approvals), len(levels) - 1)]
    found = {
        "template": row.template_key,
        "version": row.version,
        "status": row.status,
        "author": row.author,
        "approvals": row.approvals,
        "awaiting": awaiting,
        "comment": row.comment,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }
    return {**found, "body": row.body} if body else found


async def _version(conn: AsyncConnection, key: str, number: int) -> Any:
    row = await template_store.get_version(conn, key, number)
    if row is None:
        raise errors.NotFound("template version", f"{key}@{number}")
    return row


@router.get("/templates/{key}/versions", response_model=views.Versions, responses=problems.answers(404))
async def list_versions(
    clarion: deps.Services,
    key: str = KeyPath,
    limit: int = Query(default=100, ge=1, le=1000),
    before: int | None = Query(
        default=None, ge=1, le=2**31 - 1, description="the next page: versions older than this one"
    ),
) -> dict[str, Any]:
    """The template's saved versions, newest first (also those of a deleted template)."""
    async with clarion.db.read() as conn:
        rows = await template_store.list_versions(conn, key, limit=limit + 1, before=before)
        settings = await template_store.load_settings(conn)
        if not rows and before is None:
            raise errors.NotFound("template", key)
    page = rows[:limit]
    return {
        "versions": [version_json(r, settings) for r in page],
        "next_cursor": page[-1].version if len(rows) > limit else None,
    }


@router.get("/templates/{key}/versions/{number}", response_model=views.Version, responses=problems.answers(404))
async def get_version(clarion: deps.Services, key: str = KeyPath, number: int = NumberPath) -> dict[str, Any]:
    """One version with its ``body``: the template exactly as that PUT saved it."""
    async with clarion.db.read() as conn:
        row = await _version(conn, key, number)
        return version_json(row, await template_store.load_settings(conn), body=True)


@router.get("/templates/{key}/versions/{number}/diff", response_model=views.Diff, responses=problems.answers(404))
async def diff_version(
    clarion: deps.Services,
    key: str = KeyPath,
    number: int = NumberPath,
    against: int | None = Query(
        default=None, ge=0, le=2**31 - 1, description="the version to compare with; default the previous"
    ),
) -> dict[str, Any]:
    """What changed from version ``against`` (default ``number - 1``; 0: nothing) to ``number``: per changed
    field path (``channels.sms.text``) the old and new value, and for texts a unified diff (``text_diff``)."""
    against = number - 1 if against is None else against
    async with clarion.db.read() as conn:
        new = await _version(conn, key, number)
        old = await _version(conn, key, against) if against else None
    changes = approval.diff(
        old.body if old is not None else {}, new.body, old_label=f"{key}@{against}", new_label=f"{key}@{number}"
    )
    return {"template": key, "version": number, "against": against, "changes": changes}


class ReviewIn(schemas.Strict):
    comment: Comment | None = Field(default=None, description="required to reject; optional otherwise")


NoReview = Body(default=None)


async def _review(
    clarion: deps.Services, caller: deps.Caller, key: str, number: int, action: str, comment: str | None
) -> dict[str, Any]:
    """Apply ``action`` to a version as the domain decides, and log it — a refusal too, with its reason."""
    actor = approval.Actor(caller.name, caller.roles)
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> approval.Outcome | approval.Refusal:
        template = await template_store.template_rows(conn, key=key)
        if not template:
            raise errors.NotFound("template", key)
        row = await template_store.get_version(conn, key, number, lock=True)
        if row is None:
            raise errors.NotFound("template version", f"{key}@{number}")
        version = template_store.version_of(row)
        settings = await template_store.load_settings(conn)
        decided: approval.Outcome | approval.Refusal
        if action == "submit":
            decided = approval.submit(version, actor)
        elif action == "approve":
            decided = approval.approve(
                version, actor, settings, at=now, comment=comment, live_version=template[0].live_version
            )
        else:
            decided = approval.reject(version, actor, comment=comment)
        subject = template_store.subject(key, number)
        if isinstance(decided, approval.Refusal):
            refused = {"refused": decided.code, "message": decided.message, "comment": comment}
            await template_store.audit(
                conn, actor=caller.name, action=f"template.{action}.refused", subject=subject, at=now, detail=refused
            )
            return decided
        live = await template_store.record_outcome(conn, key, number, decided, now)
        detail = {"status": decided.status.value, "level": decided.level, "comment": comment, "live_version": live}
        await template_store.audit(
            conn, actor=caller.name, action=f"template.{action}", subject=subject, at=now, detail=detail
        )
        return decided

    decided = await clarion.db.write(job)
    if isinstance(decided, approval.Refusal):
        raise decided.error()
    clarion.invalidate()
    async with clarion.db.read() as conn:
        row = await _version(conn, key, number)
        found = version_json(row, await template_store.load_settings(conn))
        live = (await template_store.template_rows(conn, key=key))[0].live_version
    return {**found, "live_version": live}


@router.post(
    "/templates/{key}/versions/{number}/submit",
    response_model=views.Version,
    responses=problems.answers(403, 404, 409),
)
async def submit_version(
    clarion: deps.Services,
    caller: deps.Caller,
    key: str = KeyPath,
    number: int = NumberPath,
    body: ReviewIn | None = NoReview,
) -> dict[str, Any]:
    """Ask for review of a ``draft`` version (``editor`` or ``admin``): it becomes ``pending_review``."""
    return await _review(clarion, caller, key, number, "submit", body.comment if body else None)


@router.post(
    "/templates/{key}/versions/{number}/approve",
    response_model=views.Version,
    responses=problems.answers(403, 404, 409),
)
async def approve_version(
    clarion: deps.Services,
    caller: deps.Caller,
    key: str = KeyPath,
    number: int = NumberPath,
    body: ReviewIn | None = NoReview,
) -> dict[str, Any]:
    """Approve the level a ``pending_review`` version waits for (``approver`` or ``admin``, not its author, one
    level per person). After the last level it is ``approved`` and becomes the ``live_version``. Refusals:
    403 ``forbidden`` (roles), ``own_version``, ``already_approved``; 409 ``invalid_transition``, ``superseded``."""
    return await _review(clarion, caller, key, number, "approve", body.comment if body else None)


@router.post(
    "/templates/{key}/versions/{number}/reject",
    response_model=views.Version,
    responses=problems.answers(403, 404, 409),
)
async def reject_version(
    clarion: deps.Services,
    caller: deps.Caller,
    key: str = KeyPath,
    number: int = NumberPath,
    body: ReviewIn | None = NoReview,
) -> dict[str, Any]:
    """Reject a ``pending_review`` version with a ``comment`` saying what to change (422 ``comment_required``
    without one). Same reviewer rules as approving; a rejected version stays rejected — save a new one."""
    return await _review(clarion, caller, key, number, "reject", body.comment if body else None)


# -- test sends ----------------------------------------------------------------------------------------------


class TestRecipientIn(schemas.Strict):
    user_id: schemas.Key
    note: Annotated[str, StringConstraints(max_length=200)] | None = None


class TestRecipientsIn(schemas.Strict):
    recipients: list[schemas.Key | TestRecipientIn] = Field(
        max_length=1000, description='user ids, or {"user_id", "note"} objects'
    )


@router.put("/test-recipients", response_model=views.TestRecipients, responses=problems.answers(403))
async def put_test_recipients(body: TestRecipientsIn, clarion: deps.Services, caller: deps.Caller) -> dict[str, Any]:
    """Replace the test whitelist: the only users test sends reach. Needs ``admin`` (the whitelist is what keeps
    an unapproved text from reaching customers)."""
    approval.require(caller.roles, approval.ADMINISTER)
    entries = [(r, None) if isinstance(r, str) else (r.user_id, r.note) for r in body.recipients]
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> None:
        await template_store.replace_test_recipients(conn, entries, now)
        await template_store.audit(
            conn,
            actor=caller.name,
            action="test_recipients.replace",
            subject="test_recipients",
            at=now,
            detail={"user_ids": sorted(dict(entries))},
        )

    await clarion.db.write(job)
    return await get_test_recipients(clarion)


@router.get("/test-recipients", response_model=views.TestRecipients)
async def get_test_recipients(clarion: deps.Services) -> dict[str, Any]:
    async with clarion.db.read() as conn:
        rows = await template_store.test_recipients(conn)
    return {
        "recipients": [{"user_id": r.user_id, "note": r.note, "created_at": r.created_at.isoformat()} for r in rows]
    }


class TestSendIn(schemas.Strict):
    version: int | None = Field(default=None, ge=1, le=2**31 - 1, description="default: the latest")
    to: schemas.Key | list[schemas.Key] = Field(description="whitelisted user ids (PUT /v1/test-recipients)")
    data: dict[str, Any] = Field(default_factory=dict)
    channels: list[model.Channel] | None = Field(default=None, min_length=1, description="default: all")

    def recipients(self) -> list[str]:
        return [self.to] if isinstance(self.to, str) else list(dict.fromkeys(self.to))


@router.post(
    "/templates/{key}/test",
    status_code=202,
    response_model=views.TestSendAccepted,
    responses=problems.answers(403, 404),
)
async def test_send(body: TestSendIn, clarion: deps.Services, caller: deps.Caller, key: str = KeyPath) -> JSON:
    """Send one version — a draft or one under review too — to whitelisted users only, every subject, title and
    text prefixed with the approval settings' ``test_prefix`` (``"[TEST] "``). Any recipient not on the whitelist
    refuses the whole request (403 ``not_a_test_recipient`` naming them): nothing is sent. Policies apply as to
    any send. Needs ``editor``, ``approver`` or ``admin``."""
    approval.require(caller.roles, approval.TEST)
    recipients = body.recipients()
    if not recipients:
        raise errors.InvalidInput("to: at least one recipient", details={"field": "to"})
    async with clarion.db.read() as conn:
        template = await template_store.template_rows(conn, key=key)
        if not template:
            raise errors.NotFound("template", key)
        version = await _version(conn, key, body.version or template[0].version)
        outsiders = await template_store.not_test_recipients(conn, recipients)
        settings = await template_store.load_settings(conn)
    if outsiders:
        raise approval.Forbidden(
            f"not on the test whitelist: {', '.join(outsiders)} (PUT /v1/test-recipients)",
            code="not_a_test_recipient",
            details={"field": "to", "user_ids": outsiders},
        )
    accepted = await clarion.intake.send(
        intake.SendCommand(template=key, to=recipients, data=body.data, channels=body.channels),
        template=template_store.template_at(template[0], version.body, version.version),
        prefix=settings.test_prefix,
    )
    now = datetime.now(UTC)
    detail = {"to": recipients, "request_id": accepted.response.get("request_id"), "status": version.status}

    async def job(conn: AsyncConnection) -> None:
        subject = template_store.subject(key, version.version)
        await template_store.audit(
            conn, actor=caller.name, action="template.test", subject=subject, at=now, detail=detail
        )

    await clarion.db.write(job)
    return JSON({**accepted.response, "version": version.version, "prefix": settings.test_prefix}, status_code=202)
