"""The in-app message center: what the apps show a signed-in user. Marking items read needs the ``sender`` or
``admin`` role (the app's backend, on the user's behalf); reading only a valid key."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query

from clarion.api import deps, problems, views
from clarion.domain import approval, errors
from clarion.pipeline import feedback
from clarion.store import history
from clarion.store import tables as t

router = APIRouter(prefix="/v1/users/{user_id}/inbox", tags=["inbox"], dependencies=deps.AUTH)
UserId = Path(min_length=1, max_length=128)


@router.get("", response_model=views.Inbox)
async def list_inbox(
    clarion: deps.Services,
    user_id: str = UserId,
    unread: bool = False,
    limit: int = Query(default=20, ge=1, le=200),
    cursor: str | None = Query(default=None, max_length=32),
) -> dict[str, Any]:
    async with clarion.db.read() as conn:
        return await history.inbox(conn, user_id, unread=unread, limit=limit, before=cursor)


@router.get("/count", response_model=views.InboxCount)
async def count_inbox(clarion: deps.Services, user_id: str = UserId) -> dict[str, int]:
    async with clarion.db.read() as conn:
        return await history.inbox_count(conn, user_id)


@router.post("/read-all", response_model=views.Updated, responses=problems.answers(403))
async def read_all(clarion: deps.Services, caller: deps.Caller, user_id: str = UserId) -> dict[str, int]:
    """Mark every item of the user read (``admin``/``sender``) — 403 ``forbidden`` otherwise; their deliveries
    become ``read``."""
    approval.require(caller.roles, approval.USER_DATA)
    now = datetime.now(UTC)
    return {"updated": await clarion.db.write(lambda conn: feedback.read_inbox(conn, user_id, now))}


@router.post("/{message_id}/read", response_model=views.ReadItem, responses=problems.answers(403, 404))
async def read_one(
    clarion: deps.Services, caller: deps.Caller, user_id: str = UserId, message_id: str = Path(max_length=32)
) -> dict[str, Any]:
    """Mark one item read (``admin``/``sender``) — 403 ``forbidden`` otherwise; its delivery becomes ``read``.
    Reading it again is harmless; 404 when the user has no such item."""
    approval.require(caller.roles, approval.USER_DATA)
    now = datetime.now(UTC)
    updated = await clarion.db.write(lambda conn: feedback.read_inbox(conn, user_id, now, message_id))
    if not updated:
        i = t.inbox_items
        async with clarion.db.read() as conn:
            found = (
                await conn.execute(
                    sa.select(i.c.message_id).where(i.c.user_id == user_id, i.c.message_id == message_id)
                )
            ).first()
        if found is None:
            raise errors.NotFound("inbox item", message_id)
    return {"message_id": message_id, "read": True}
