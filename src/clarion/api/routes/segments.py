"""Segments and ID lists: saved audience queries, counted and sampled on the in-memory index while an operator
edits them, and uploaded lists of users for one-off audiences.

A segment's ``conditions`` are the JSON tree documented in :mod:`clarion.segments.query` (tags, attributes,
behaviour events, ``{"list": KEY}``). A definition is checked when saved — its syntax, and that it applies to the
index (ID lists exist, values fit the attributes' kinds) — and refused with 422 naming the bad node
(``details.path``, e.g. ``conditions.and[1].op``). Counts are of this process's index, which follows other
processes' changes within seconds.

Audience definitions are operators' content: saving or deleting a segment, and uploading or deleting an ID list,
need the ``editor`` or ``admin`` role (an upload is refused before its body is read). Counting an unsaved
definition, and every read, need only a valid key."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Body, Path, Query, Request, Response
from starlette.datastructures import UploadFile

from clarion.api import deps, openapi, problems, schemas, views
from clarion.domain import approval, errors
from clarion.segments import idlists
from clarion.segments import service as audiences
from clarion.store import audit as audit_log
from clarion.store import segments as store

router = APIRouter(prefix="/v1", tags=["segments"], dependencies=deps.AUTH)
KeyPath = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
Definition = Body(..., description='{"name": optional text, "conditions": the condition tree}')


def _iso(value: datetime) -> str:
    return value.isoformat()


def segment_json(row: Any) -> dict[str, Any]:
    return {
        "key": row.key,
        "name": row.name,
        "conditions": row.definition,
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
    }


def _ms(began: float) -> float:
    return round((time.perf_counter() - began) * 1000, 3)


# -- segments ------------------------------------------------------------------------------------------------


@router.put(
    "/segments/{key}",
    response_model=views.SavedSegment,
    responses=views.created(views.SavedSegment) | problems.answers(403),
)
async def put_segment(
    clarion: deps.Services,
    caller: deps.Caller,
    response: Response,
    key: str = KeyPath,
    body: schemas.Document = Definition,
) -> dict[str, Any]:
    """Create or replace a segment: ``{"name": "...", "conditions": {...}}`` (``admin``/``editor``) — 403
    ``forbidden`` otherwise. Answers with the stored segment and its current ``count``."""
    created, count = await audiences.save_segment(clarion, key, body, actor=caller.name, roles=caller.roles)
    response.status_code = 201 if created else 200
    async with clarion.db.read() as conn:
        row = await store.get_segment(conn, key)
    return {**segment_json(row), "count": count}


@router.get("/segments", response_model=views.SegmentList)
async def list_segments(clarion: deps.Services) -> dict[str, Any]:
    """Every segment by key (without counts: ask ``/count`` for each)."""
    async with clarion.db.read() as conn:
        return {"segments": [segment_json(row) for row in await store.list_segments(conn)]}


@router.post("/segments:count", response_model=views.Count)
async def count_conditions(clarion: deps.Services, body: schemas.Document = Definition) -> dict[str, Any]:
    """Count an unsaved definition (what the editor calls while an operator types); same body as the PUT."""
    node = audiences.conditions_of(body)
    began = time.perf_counter()
    count = await clarion.segments.count(node)
    return {"count": count, "took_ms": _ms(began)}


@router.get("/segments/{key}", response_model=views.Segment, responses=problems.answers(404))
async def get_segment(clarion: deps.Services, key: str = KeyPath) -> dict[str, Any]:
    return segment_json(await deps.read_or_404(clarion, store.get_segment, "segment", key))


@router.delete("/segments/{key}", status_code=204, responses=problems.answers(403, 404))
async def delete_segment(clarion: deps.Services, caller: deps.Caller, key: str = KeyPath) -> Response:
    """Delete a segment (``admin``/``editor``) — 403 ``forbidden`` otherwise."""
    approval.require(caller.roles, approval.EDIT)
    now = datetime.now(UTC)

    async def job(conn: Any) -> bool:
        return await audit_log.delete_recorded(
            conn,
            key,
            read=store.get_segment,
            delete=store.delete_segment,
            summary=audiences.segment_summary,
            kind="segment",
            actor=caller.name,
            at=now,
        )

    if not await clarion.db.write(job):
        raise errors.NotFound("segment", key)
    return Response(status_code=204)


@router.get("/segments/{key}/count", response_model=views.SegmentCount, responses=problems.answers(404))
async def count_segment(clarion: deps.Services, key: str = KeyPath) -> dict[str, Any]:
    """How many users the segment selects now, and how long counting took."""
    node = await clarion.segments.segment(key)
    began = time.perf_counter()
    count = await clarion.segments.count(node)
    return {"key": key, "count": count, "took_ms": _ms(began)}


@router.get("/segments/{key}/sample", response_model=views.Sample, responses=problems.answers(404))
async def sample_segment(
    clarion: deps.Services,
    key: str = KeyPath,
    n: int = Query(default=20, ge=1, le=200),
    seed: int | None = Query(default=None, description="draw at random with this seed; spread evenly when unset"),
) -> dict[str, Any]:
    """Up to ``n`` users of the segment with their attributes and tags: spread evenly over the result (the same
    while nothing changes) or, with ``seed``, at random."""
    node = await clarion.segments.segment(key)
    return {"key": key, "users": await audiences.sample_users(clarion, node, n, seed)}


# -- ID lists ------------------------------------------------------------------------------------------------


def list_json(row: Any) -> dict[str, Any]:
    return {
        "key": row.key,
        "name": row.name,
        "kind": row.kind,
        "size": row.size,
        "unknown": row.unknown,
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
    }


async def _file_chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(1 << 16):
        yield chunk


async def _upload(request: Request, kind: idlists.Kind, region: str | None) -> idlists.Upload:
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=20)
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise errors.InvalidInput("file: a file part is required", code="invalid_list", details={"field": "file"})
        is_csv = (file.filename or "").lower().endswith(".csv") or (file.content_type or "").startswith("text/csv")
        try:
            return await idlists.read(_file_chunks(file), kind, is_csv=is_csv, region=region)
        finally:
            await file.close()
    if content_type.startswith(("text/plain", "text/csv")) or not content_type:
        return await idlists.read(request.stream(), kind, is_csv=content_type.startswith("text/csv"), region=region)
    raise errors.InvalidInput(
        "body: send a multipart/form-data 'file', or a text/plain or text/csv body",
        code="invalid_list",
        details={"field": "body"},
    )


@router.post(
    "/lists",
    tags=["lists"],
    openapi_extra=openapi.LIST_UPLOAD,
    response_model=views.UploadedList,
    responses=views.created(views.UploadedList) | problems.answers(400, 403),
)
async def upload_list(
    request: Request,
    clarion: deps.Services,
    caller: deps.Caller,
    response: Response,
    key: str = Query(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$"),
    kind: idlists.Kind = Query(default="user_id"),
    name: str | None = Query(default=None, max_length=200),
    region: str | None = Query(default=None, pattern=r"^[A-Z]{2}$", description="for phone numbers without +"),
) -> dict[str, Any]:
    """Create or replace the ID list ``key`` from an upload: a multipart/form-data ``file`` or a text/plain or
    text/csv body, one value a line (CSV: the first column; a header line is skipped), at most 1,000,000 lines.
    ``kind``: ``user_id``, ``phone`` (normalized to E.164; give ``region`` for national numbers) or ``email``
    (compared case-insensitively). Phones and e-mails are matched to users by their addresses.

    Nothing is dropped silently: ``unknown`` counts the values that matched no user (``unknown_values`` shows the
    first 100 as written; ``invalid`` counts those that could not be a value of the kind). Unknown user ids stay
    members, so a user created later is in the list; unknown phones and e-mails cannot. The list is usable in
    segments and audiences as ``{"list": KEY}`` at once.

    Needs ``admin``/``editor`` — 403 ``forbidden`` otherwise, before the upload is read."""
    approval.require(caller.roles, approval.EDIT)
    upload = await _upload(request, kind, region)
    report = await audiences.save_list(clarion, key, upload, name=name, actor=caller.name, roles=caller.roles)
    response.status_code = 201 if report.pop("created") else 200
    async with clarion.db.read() as conn:
        row = await store.get_id_list(conn, key)
    return {**list_json(row), **report}


@router.get("/lists", tags=["lists"], response_model=views.IdLists)
async def list_lists(clarion: deps.Services) -> dict[str, Any]:
    async with clarion.db.read() as conn:
        return {"lists": [list_json(row) for row in await store.list_id_lists(conn)]}


@router.get("/lists/{key}", tags=["lists"], response_model=views.IdList, responses=problems.answers(404))
async def get_list(clarion: deps.Services, key: str = KeyPath) -> dict[str, Any]:
    return list_json(await deps.read_or_404(clarion, store.get_id_list, "ID list", key))


@router.delete("/lists/{key}", status_code=204, tags=["lists"], responses=problems.answers(403, 404, 409))
async def delete_list(clarion: deps.Services, caller: deps.Caller, key: str = KeyPath) -> Response:
    """Delete a list (``admin``/``editor``) — 403 ``forbidden`` otherwise; refused with 409 while a saved segment
    uses it."""
    approval.require(caller.roles, approval.EDIT)
    async with clarion.db.read() as conn:
        users = [row.key for row in await store.list_segments(conn) if key in _lists_in(row.definition)]
    if users:
        raise errors.Conflict(f"ID list {key!r} is used by segments {', '.join(users)}", details={"segments": users})
    now = datetime.now(UTC)

    async def job(conn: Any) -> bool:
        return await audit_log.delete_recorded(
            conn,
            key,
            read=store.get_id_list,
            delete=store.delete_id_list,
            summary=audiences.list_summary,
            kind="id_list",
            actor=caller.name,
            at=now,
        )

    if not await clarion.db.write(job):
        raise errors.NotFound("ID list", key)
    await clarion.segments.lists_changed()
    return Response(status_code=204)


def _lists_in(conditions: Any) -> set[str]:
    """The ID lists a stored condition tree names."""
    if isinstance(conditions, dict):
        found = {conditions["list"]} if isinstance(conditions.get("list"), str) else set()
        for child in conditions.values():
            found |= _lists_in(child)
        return found
    if isinstance(conditions, list):
        return set().union(*(_lists_in(c) for c in conditions)) if conditions else set()
    return set()
