"""User data in bulk: profiles by the thousand, one tag on many users, and behaviour events for segments.

Each call takes at most ``MAX_ITEMS`` items. Items are validated one by one before anything is written: the
valid ones are written together in one transaction, the invalid ones are listed with their index and the
reason (the same reasons ``PUT /v1/users/{user_id}`` gives), and the answer is 200 either way.

Every call here writes user data: it needs the ``sender`` or ``admin`` role (``users:batch`` and ``track`` refuse
before reading the body)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

import orjson
import pydantic
from fastapi import APIRouter, Path, Query, Request
from pydantic import Field, field_validator

from clarion.api import deps, problems, schemas, views
from clarion.domain import approval, errors
from clarion.pipeline import conversions, intake
from clarion.store import bulk

router = APIRouter(prefix="/v1", tags=["bulk"], dependencies=deps.AUTH)

MAX_ITEMS = 10_000
MAX_PROPERTIES_BYTES = 8192
_USER_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
_JSON_LINES = ("application/x-ndjson", "application/jsonl", "application/json-lines", "application/x-jsonlines")
_FIRE_AT_ONCE = 64
Tag = Path(min_length=1, max_length=100, description="the tag, URL-encoded")
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"oneOf": [{"type": "array"}, {"type": "object"}]}},
            "application/x-ndjson": {"schema": {"type": "string", "description": "one JSON object a line"}},
        },
    }
}


class TooMany(errors.InvalidInput):
    status = 413

    def __init__(self, count: int) -> None:
        super().__init__(
            f"at most {MAX_ITEMS} items a call, got {count}: split them, or use 'clarion users import'",
            code="too_many_items",
            details={"limit": MAX_ITEMS, "count": count},
        )


class Unsupported(errors.InvalidInput):
    status = 415


class ItemError(ValueError):
    """One item of a batch is invalid; the others go on."""

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


def _invalid(exc: pydantic.ValidationError) -> ItemError:
    problems = [{"field": ".".join(str(p) for p in e["loc"]) or "item", "message": e["msg"]} for e in exc.errors()]
    return ItemError(f"{problems[0]['field']}: {problems[0]['message']}", problems)


def parse_profile(item: Any) -> bulk.Profile:
    """One batch item — ``{"user_id", ...}`` with the body of ``PUT /v1/users/{user_id}`` — as a change that
    knows which fields were given (merging leaves the others alone); ItemError when it is invalid."""
    if not isinstance(item, dict):
        raise ItemError("not a JSON object")
    rest = dict(item)
    user_id = rest.pop("user_id", None)
    if not isinstance(user_id, str) or not _USER_ID.match(user_id):
        raise ItemError("user_id: 1 to 128 characters of A-Z a-z 0-9 _ . : @ -", [{"field": "user_id"}])
    try:
        body = schemas.UserIn.model_validate(rest)
    except pydantic.ValidationError as exc:
        raise _invalid(exc) from None
    fields: dict[str, Any] = {}
    for name in body.model_fields_set:
        if name == "addresses":
            fields[name] = {channel: getattr(body.addresses, channel) for channel in body.addresses.model_fields_set}
        elif name == "tags":
            fields[name] = list(dict.fromkeys(body.tags))
        else:
            fields[name] = getattr(body, name)
    return bulk.Profile(user_id, fields)


class _Malformed:
    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


async def _items(request: Request, key: str) -> tuple[list[Any], list[int] | None, dict[str, Any]]:
    """The call's items, the line of each (JSON lines only), and the other fields of a ``{key: [...]}`` body."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    raw = await request.body()
    if kind in _JSON_LINES:
        numbered = [(n, line) for n, line in enumerate(raw.splitlines(), 1) if line.strip()]
        if len(numbered) > MAX_ITEMS:
            raise TooMany(len(numbered))
        items: list[Any] = []
        for _, line in numbered:
            try:
                items.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                items.append(_Malformed(f"malformed JSON: {exc}"))
        return items, [n for n, _ in numbered], {}
    if kind != "application/json" and not kind.endswith("+json"):
        raise Unsupported(
            f"unsupported content type {kind!r}: send application/json or application/x-ndjson (JSON lines)",
            code="unsupported_media_type",
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidInput(f"body: malformed JSON: {exc}", details={"field": "body"}) from None
    extra: dict[str, Any] = {}
    if isinstance(body, dict) and key in body:
        extra = {k: v for k, v in body.items() if k != key}
        body = body[key]
        if not isinstance(body, list):
            raise errors.InvalidInput(f"{key}: expected an array", details={"field": key})
    elif isinstance(body, dict) and key == "events":
        body = [body]
    if not isinstance(body, list):
        raise errors.InvalidInput(f'expected an array of {key} or {{"{key}": [...]}}', details={"field": "body"})
    if len(body) > MAX_ITEMS:
        raise TooMany(len(body))
    return body, None, extra


def _failure(index: int, item: Any, exc: ItemError, lines: list[int] | None) -> dict[str, Any]:
    failed: dict[str, Any] = {
        "index": index,
        "user_id": item.get("user_id") if isinstance(item, dict) else None,
        "error": exc.message,
    }
    if exc.details is not None:
        failed["details"] = exc.details
    if lines is not None:
        failed["line"] = lines[index]
    return failed


@router.post("/users:batch", openapi_extra=_BODY, response_model=views.UsersBatch, responses=problems.answers(403, 415))
async def users_batch(
    request: Request,
    clarion: deps.Services,
    caller: deps.Caller,
    mode: bulk.Mode = Query(
        default=bulk.Mode.MERGE,
        description="merge: only the fields given change (attributes and addresses key by key, null removes a key;"
        " tags, timezone, locale replaced when given). replace: each profile becomes what is given, like PUT.",
    ),
) -> dict[str, Any]:
    """Create or update up to 10,000 users: a JSON array (or ``{"users": [...]}``), or JSON lines
    (``application/x-ndjson``), each item ``{"user_id", "attributes", "tags", "timezone", "locale", "addresses"}``
    validated as ``PUT /v1/users/{user_id}`` validates its body. The valid items are written in one transaction;
    the answer counts them and lists each invalid one: ``{"created", "updated", "failed": [{"index", "user_id",
    "error", "details", "line" (JSON lines)}]}``. A user given twice gets both changes, in order.
    Needs ``admin``/``sender`` — 403 ``forbidden`` otherwise, before the body is read."""
    approval.require(caller.roles, approval.USER_DATA)
    items, lines, extra = await _items(request, "users")
    if extra:
        raise errors.InvalidInput(f"unexpected fields: {', '.join(sorted(extra))}", details={"fields": sorted(extra)})
    changes: list[bulk.Profile] = []
    failed = []
    for index, item in enumerate(items):
        try:
            if isinstance(item, _Malformed):
                raise ItemError(item.message)
            changes.append(parse_profile(item))
        except ItemError as exc:
            failed.append(_failure(index, item, exc, lines))
    done = bulk.Upserted()
    if changes:
        now = datetime.now(UTC)
        done = await clarion.db.write(lambda conn: bulk.upsert_users(conn, changes, mode, now))
        await clarion.segments.users_changed([*done.created, *done.updated])
    return {"created": len(done.created), "updated": len(done.updated), "failed": failed}


class UserIds(schemas.Strict):
    user_ids: list[schemas.Key] = Field(min_length=1, max_length=MAX_ITEMS)


async def _retag(clarion: Any, tag: str, user_ids: list[str], *, add: bool) -> dict[str, Any]:
    now = datetime.now(UTC)
    done = await clarion.db.write(lambda conn: bulk.retag(conn, tag, user_ids, add=add, now=now))
    if done.changed:
        await clarion.segments.users_changed(done.changed)
    return {"tag": tag, "changed": len(done.changed), "unchanged": len(done.unchanged), "unknown": done.unknown}


@router.post("/tags/{tag}:add", response_model=views.Retagged, responses=problems.answers(403))
async def add_tag(body: UserIds, clarion: deps.Services, caller: deps.Caller, tag: str = Tag) -> dict[str, Any]:
    """Tag up to 10,000 users at once: ``{"user_ids": [...]}`` (``admin``/``sender``) — 403 ``forbidden``
    otherwise. Answers how many gained the tag, how many had it already, and which ids have no profile
    (``unknown``; nothing is created for them)."""
    approval.require(caller.roles, approval.USER_DATA)
    return await _retag(clarion, tag, body.user_ids, add=True)


@router.post("/tags/{tag}:remove", response_model=views.Retagged, responses=problems.answers(403))
async def remove_tag(body: UserIds, clarion: deps.Services, caller: deps.Caller, tag: str = Tag) -> dict[str, Any]:
    """Untag up to 10,000 users at once (``admin``/``sender``) — 403 ``forbidden`` otherwise; answered like
    ``:add``."""
    approval.require(caller.roles, approval.USER_DATA)
    return await _retag(clarion, tag, body.user_ids, add=False)


class TrackIn(schemas.Stored):
    user_id: schemas.Key
    event: schemas.Key
    at: datetime | None = Field(default=None, description="ISO time with a zone; default: when received")
    properties: dict[str, Any] = Field(default_factory=dict)
    trigger: bool | None = Field(default=None, description="also fire trigger rules; default: the call's trigger")

    @field_validator("at")
    @classmethod
    def _zoned(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("needs a time zone (e.g. 2026-01-01T00:00:00Z)")
        return v

    @field_validator("properties")
    @classmethod
    def _small(cls, v: dict[str, Any]) -> dict[str, Any]:
        if len(orjson.dumps(v)) > MAX_PROPERTIES_BYTES:
            raise ValueError(f"at most {MAX_PROPERTIES_BYTES} bytes of JSON")
        return v


async def _fire(clarion: Any, index: int, event: bulk.Event) -> dict[str, Any]:
    """One tracked event through the trigger rules, exactly as ``POST /v1/events`` would send it."""
    command = intake.EventCommand(name=event.event, user_id=event.user_id, data=dict(event.properties or {}))
    try:
        accepted = await clarion.intake.event(command)
    except errors.ClarionError as exc:
        return {"index": index, "error": str(exc)}
    for message in accepted.response["messages"]:
        clarion.metrics.accepted.labels(message["status"]).inc()
    return {"index": index, "request_id": accepted.response["request_id"], "messages": accepted.response["messages"]}


@router.post("/track", openapi_extra=_BODY, response_model=views.Tracked, responses=problems.answers(403, 415, 422))
async def track(request: Request, clarion: deps.Services, caller: deps.Caller) -> dict[str, Any]:
    """Record what users did, for segments: one event ``{"user_id", "event", "at", "properties"}``, or up to
    10,000 as ``{"events": [...], "trigger": false}`` or JSON lines. ``at`` is an ISO time with a zone (default:
    now); ``properties`` an object of at most 8 KiB. Events of users without a profile are kept (the profile
    may come later) and listed in ``unknown_users``. With ``"trigger": true`` (for the call, or per event) an
    event also goes through the trigger rules as ``POST /v1/events`` with ``data`` = ``properties``; off by
    default, as tracking far outnumbers messaging. Invalid events are listed in ``failed``, as in
    ``/v1/users:batch``. Needs ``admin``/``sender`` — 403 ``forbidden`` otherwise, before the body is read."""
    approval.require(caller.roles, approval.USER_DATA)
    items, lines, extra = await _items(request, "events")
    trigger = extra.pop("trigger", False)
    if not isinstance(trigger, bool) or extra:
        raise errors.InvalidInput("only 'events' and 'trigger' (true/false) go with events", details={"field": "body"})
    now = datetime.now(UTC)
    events: list[bulk.Event] = []
    to_fire: list[tuple[int, bulk.Event]] = []
    failed = []
    for index, item in enumerate(items):
        try:
            if isinstance(item, _Malformed):
                raise ItemError(item.message)
            try:
                given = TrackIn.model_validate(item)
            except pydantic.ValidationError as exc:
                raise _invalid(exc) from None
        except ItemError as exc:
            failed.append(_failure(index, item, exc, lines))
            continue
        event = bulk.Event(given.user_id, given.event, given.at or now, given.properties)
        events.append(event)
        if trigger if given.trigger is None else given.trigger:
            to_fire.append((index, event))
    unknown: set[str] = set()
    converted = 0
    if events:
        async with clarion.db.read() as conn:
            known = await bulk.known_users(conn, (e.user_id for e in events))
        unknown = {e.user_id for e in events} - known
        inserts = bulk.record_events(events)

        retagged: set[str] = set()  # users the feedback rules changed

        async def job(conn: Any) -> int:
            retagged.clear()  # a retried transaction starts over
            await inserts(conn)
            return await conversions.convert(conn, events, retagged=retagged)  # a crash keeps both or neither

        converted = await clarion.db.write(job)
        await clarion.segments.events_tracked()
        if retagged:
            await clarion.segments.users_changed(sorted(retagged))
    triggered = []
    for start in range(0, len(to_fire), _FIRE_AT_ONCE):
        triggered += await asyncio.gather(*(_fire(clarion, i, e) for i, e in to_fire[start : start + _FIRE_AT_ONCE]))
    answer = {"recorded": len(events), "converted": converted, "failed": failed, "unknown_users": sorted(unknown)}
    return {**answer, "triggered": triggered}
