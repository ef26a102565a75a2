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
from clarion.domain import approval, model
from clarion.pipeline import reviewing
from clarion.store import templates as template_store

router = APIRouter(prefix="/v1", tags=["templates"], dependencies=deps.AUTH)
KeyPath = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")
NumberPath = Path(ge=1, le=2**31 - 1)
Comment = Annotated[str, StringConstraints(max_length=2000)]


# -- versions and review -------------------------------------------------------------------------------------


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
    return await reviewing.versions(clarion, key, limit=limit, before=before)


@router.get("/templates/{key}/versions/{number}", response_model=views.Version, responses=problems.answers(404))
async def get_version(clarion: deps.Services, key: str = KeyPath, number: int = NumberPath) -> dict[str, Any]:
    """One version with its ``body``: the template exactly as that PUT saved it."""
    return await reviewing.version(clarion, key, number)


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
    return await reviewing.diff(clarion, key, number, against)


class ReviewIn(schemas.Strict):
    comment: Comment | None = Field(default=None, description="required to reject; optional otherwise")


NoReview = Body(default=None)


async def _review(
    clarion: deps.Services, caller: deps.Caller, key: str, number: int, action: str, comment: str | None
) -> dict[str, Any]:
    return await reviewing.review(clarion, approval.Actor(caller.name, caller.roles), key, number, action, comment)


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
    answer = await reviewing.test_send(
        clarion,
        approval.Actor(caller.name, caller.roles),
        key,
        to=body.recipients(),
        version=body.version,
        data=body.data,
        channels=body.channels,
    )
    return JSON(answer, status_code=202)
