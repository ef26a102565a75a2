"""Users: who Clarion reaches, where, and what it sent them. Writing a profile or preferences, or deleting a
user, needs the ``sender`` or ``admin`` role (the business systems that own user data); reading only a valid
key."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Body, Path, Query, Response
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.api import deps, problems, schemas, views
from clarion.domain import approval, errors
from clarion.domain.policy import config
from clarion.store import audit as audit_log
from clarion.store import history, outbox, records
from clarion.store import tables as t

router = APIRouter(prefix="/v1/users", tags=["users"], dependencies=deps.AUTH)
UserId = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")


def preferences(row: Any) -> config.Preferences:
    return config.Preferences.from_json(row.preferences) if row.preferences else config.NO_PREFERENCES


def user_json(row: Any) -> dict[str, Any]:
    return {
        "user_id": row.user_id,
        "attributes": row.attributes,
        "tags": row.tags,
        "timezone": row.timezone,
        "locale": row.locale,
        "addresses": row.addresses,
        "preferences": preferences(row).to_json(),
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


@router.put("/{user_id}", response_model=views.User, responses=views.created(views.User) | problems.answers(403))
async def put_user(
    body: schemas.UserIn, clarion: deps.Services, caller: deps.Caller, response: Response, user_id: str = UserId
) -> dict[str, Any]:
    """Create or replace a user's profile and addresses (``admin``/``sender``) — 403 ``forbidden`` otherwise."""
    approval.require(caller.roles, approval.USER_DATA)
    values = body.model_dump()
    values["addresses"] = body.addresses.model_dump(exclude_none=True)
    values["tags"] = list(dict.fromkeys(body.tags))
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        return await records.upsert(clarion.db, conn, t.users, user_id, values, now)

    created = await clarion.db.write(job)
    await clarion.segments.users_changed([user_id])
    response.status_code = 201 if created else 200
    return user_json(await records.get_one(clarion.db, t.users, user_id))


@router.get("/{user_id}", response_model=views.User, responses=problems.answers(404))
async def get_user(clarion: deps.Services, user_id: str = UserId) -> dict[str, Any]:
    row = await records.get_one(clarion.db, t.users, user_id)
    if row is None:
        raise errors.NotFound("user", user_id)
    return user_json(row)


@router.delete("/{user_id}", status_code=204, responses=problems.answers(403, 404))
async def delete_user(clarion: deps.Services, caller: deps.Caller, user_id: str = UserId) -> Response:
    """Remove the user and their personal data: profile, addresses, inbox, and the addresses, content and
    data kept on their messages (``admin``/``sender``) — 403 ``forbidden`` otherwise. Message ids and statuses
    stay, so counts and audits still add up. The audit log keeps who deleted the user, and how many pending
    deliveries were cancelled and inbox items removed — no personal data."""
    approval.require(caller.roles, approval.USER_DATA)
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        gone = (await conn.execute(t.users.delete().where(t.users.c.user_id == user_id))).rowcount
        cancelled = await outbox.cancel_pending(conn, user_id=user_id, reason="user_deleted", now=now)
        inbox = (await conn.execute(t.inbox_items.delete().where(t.inbox_items.c.user_id == user_id))).rowcount
        await conn.execute(
            t.deliveries.update().where(t.deliveries.c.user_id == user_id).values(address=None, content=None)
        )
        await conn.execute(t.messages.update().where(t.messages.c.user_id == user_id).values(data={}))
        if gone:
            detail = {"user_id": user_id, "deliveries_cancelled": cancelled, "inbox_items_deleted": inbox}
            await audit_log.record(
                conn, actor=caller.name, action="user.delete", subject=f"user:{user_id}", at=now, detail=detail
            )
        return bool(gone)

    if not await clarion.db.write(job):
        raise errors.NotFound("user", user_id)
    await clarion.segments.users_changed([user_id])
    return Response(status_code=204)


@router.get("/{user_id}/messages", response_model=views.SendRecord)
async def user_messages(
    clarion: deps.Services,
    user_id: str = UserId,
    status: schemas.MessageStatusFilter | None = None,
    channel: schemas.model.Channel | None = None,
    template: str | None = Query(default=None, max_length=128),
    since: datetime | None = Query(default=None, description="ISO time, inclusive"),
    until: datetime | None = Query(default=None, description="ISO time, exclusive"),
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = Query(default=None, max_length=32, description="next_cursor of the previous page"),
) -> dict[str, Any]:
    """The send record: every message sent to the user, newest first, with each delivery's status."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise errors.InvalidInput(f"{name} needs a time zone (e.g. 2026-01-01T00:00:00Z)", details={"field": name})
    flt = history.RecordFilter(status, channel.value if channel else None, template, since, until)
    async with clarion.db.read() as conn:
        return await history.send_record(conn, user_id, flt, limit=limit, before=cursor)


@router.get("/{user_id}/preferences", response_model=views.Preferences, responses=problems.answers(404))
async def get_preferences(clarion: deps.Services, user_id: str = UserId) -> dict[str, Any]:
    """The user's own choices (everything on, consent not given either way, until they say otherwise)."""
    row = await records.get_one(clarion.db, t.users, user_id)
    if row is None:
        raise errors.NotFound("user", user_id)
    return preferences(row).to_json()


@router.put("/{user_id}/preferences", response_model=views.Preferences, responses=problems.answers(403, 404))
async def put_preferences(
    clarion: deps.Services,
    caller: deps.Caller,
    user_id: str = UserId,
    body: schemas.Document = Body(..., description="the whole preferences document; what is left out is on"),
) -> dict[str, Any]:
    """Replace the user's preferences: ``channels`` ({channel: false} to opt out of a channel),
    ``categories`` ({category: false}, or {category: {"channels": {channel: false}}} for one pair),
    ``marketing_consent`` (true/false/null) and ``do_not_disturb`` ("22:00-08:00"). Replacing the profile
    (``PUT /v1/users/{user_id}``) keeps them. Needs ``admin``/``sender`` — 403 ``forbidden`` otherwise."""
    approval.require(caller.roles, approval.USER_DATA)
    chosen = config.Preferences.from_json(body)

    async def job(conn: AsyncConnection) -> bool:
        changed = await conn.execute(
            t.users.update()
            .where(t.users.c.user_id == user_id)
            .values(preferences=chosen.to_json(), updated_at=datetime.now(UTC))
        )
        return bool(changed.rowcount)

    if not await clarion.db.write(job):
        raise errors.NotFound("user", user_id)
    return chosen.to_json()
