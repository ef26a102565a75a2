"""Dead letters: the deliveries that did not reach their user — ``failed`` (a permanent error, or every attempt
used), ``undelivered`` (the vendor's receipt said so) and ``expired`` (not handed to a provider within the
template's ttl) — listed across users, and put back in the queue in bulk.

Reading needs any valid key; requeueing needs ``admin`` and is in the audit log (``deliveries.retry``, subject
``deliveries:retry``) with the filter, the reason and how many were requeued."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, Field

from clarion.api import deps, problems, schemas, views
from clarion.domain import approval, errors, model
from clarion.pipeline import feedback
from clarion.store import audit
from clarion.store import deliveries as store

router = APIRouter(prefix="/v1", tags=["deliveries"], dependencies=deps.AUTH)
MAX_REQUEUED = 10_000  # per call: a larger backlog takes several calls (the answer's ``more`` says so)
_DEAD = tuple(s.value for s in store.DEAD)
_ID = re.compile(r"[0-9a-f]{32}")


class DeadLetter(views.View):
    id: str
    message_id: str
    user_id: str
    template: str
    channel: str
    provider: str | None
    status: model.DeliveryStatus
    last_error: str | None
    attempts: int
    created_at: views.Timestamp
    updated_at: views.Timestamp
    sent_at: views.Timestamp | None
    expires_at: views.Timestamp | None


class DeadLetters(views.View):
    deliveries: list[DeadLetter]
    next_cursor: str | None = Field(description="pass it back as `cursor` for the next page; null on the last")


class RetryIn(schemas.Strict):
    status: list[str] | None = Field(
        default=None, max_length=3, description="failed, undelivered, expired (any of them); all three by default"
    )
    channel: model.Channel | None = None
    provider: str | None = Field(default=None, max_length=128)
    template: str | None = Field(default=None, max_length=128)
    since: AwareDatetime | None = Field(default=None, description="accepted at or after")
    until: AwareDatetime | None = Field(default=None, description="accepted before")
    reason: str = Field(min_length=1, max_length=500, description="why: on each delivery's timeline and in the audit")
    renew_ttl: bool = Field(
        default=False,
        description="deliveries past their ttl stay expired unless true: then each gets its ttl again from now",
    )


class Requeued(views.View):
    requeued: int = Field(description="how many deliveries this call put back in the queue")
    skipped_expired: int = Field(description="matched but past their ttl, left expired (see renew_ttl)")
    more: bool = Field(description="more deliveries matched than one call requeues (10,000): call again")


def _statuses(given: list[str] | None) -> tuple[model.DeliveryStatus, ...]:
    values = [v.strip() for item in given or () for v in item.split(",") if v.strip()]
    wrong = [v for v in values if v not in _DEAD]
    if wrong:
        raise errors.InvalidInput(
            f"status: {', '.join(map(repr, wrong))} is not a dead letter status; use {', '.join(_DEAD)}",
            details={"field": "status", "unknown": wrong, "allowed": list(_DEAD)},
        )
    return tuple(model.DeliveryStatus(v) for v in dict.fromkeys(values)) or store.DEAD


def _filter(
    status: list[str] | None,
    channel: model.Channel | None,
    provider: str | None,
    template: str | None,
    since: datetime | None,
    until: datetime | None,
) -> store.Filter:
    if since is not None and until is not None and since >= until:
        raise errors.InvalidInput("until: must come after since", details={"field": "until"})
    return store.Filter(_statuses(status), channel.value if channel else None, provider, template, since, until)


def _cursor(row_id: str) -> str:
    return base64.urlsafe_b64encode(f"d1:{row_id}".encode()).decode().rstrip("=")


def _after(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not text.startswith("d1:") or not _ID.fullmatch(text[3:]):
        raise errors.InvalidInput("cursor: not a cursor this list gave", details={"field": "cursor"})
    return text[3:]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _dead_letter(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "message_id": row.message_id,
        "user_id": row.user_id,
        "template": row.template_key,
        "channel": row.channel,
        "provider": row.provider,
        "status": row.status,
        "last_error": row.last_error,
        "attempts": row.attempts,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "sent_at": _iso(row.sent_at),
        "expires_at": _iso(row.expires_at),
    }


@router.get("/deliveries", response_model=DeadLetters)
async def dead_letters(
    clarion: deps.Services,
    status: list[str] | None = Query(
        default=None, max_length=3, description="failed, undelivered, expired (repeated or comma separated); all three"
    ),
    channel: model.Channel | None = None,
    provider: str | None = Query(default=None, max_length=128),
    template: str | None = Query(default=None, max_length=128),
    since: AwareDatetime | None = Query(default=None, description="accepted at or after (ISO 8601 with a zone)"),
    until: AwareDatetime | None = Query(default=None, description="accepted before"),
    limit: int = Query(default=100, ge=1, le=1000),
    cursor: str | None = Query(default=None, max_length=128),
) -> dict[str, Any]:
    """The dead letters across users, newest first: deliveries ``failed``, ``undelivered`` or ``expired``,
    narrowed by channel, provider, template and when their message was accepted, a page at a time. Each names
    its message, user, template, channel, provider, status, last error and attempts. Another status: 422."""
    which = _filter(status, channel, provider, template, since, until)
    async with clarion.db.read() as conn:
        rows = await store.dead_letters(conn, which, limit=limit + 1, before=_after(cursor))
    page = rows[:limit]
    return {
        "deliveries": [_dead_letter(r) for r in page],
        "next_cursor": _cursor(page[-1].id) if len(rows) > limit else None,
    }


class Opened(views.View):
    delivery_id: str
    accepted: bool = Field(description="false when the open was already recorded (or the send not yet)")


@router.post("/deliveries/{delivery_id}/opened", response_model=Opened, responses=problems.answers(403, 404, 422))
async def delivery_opened(delivery_id: str, clarion: deps.Services, caller: deps.Caller) -> dict[str, Any]:
    """The app (through its backend, ``admin``/``sender``) reports that the user opened a push or WeChat message:
    the delivery becomes ``read`` (the funnel's ``opened``), on its timeline as "opened in the app". Reporting it
    again is harmless; 404 for an unknown delivery, 422 for a channel that has no app to open it in."""
    approval.require(caller.roles, approval.USER_DATA)
    if not _ID.fullmatch(delivery_id):
        raise errors.NotFound("delivery", delivery_id)
    now = datetime.now(UTC)
    tally = await clarion.db.write(lambda conn: feedback.open_delivery(conn, delivery_id, now))
    if tally is None:
        raise errors.NotFound("delivery", delivery_id)
    return {"delivery_id": delivery_id, "accepted": tally.accepted > 0}


@router.post("/deliveries:retry", response_model=Requeued, responses=problems.answers(403))
async def retry_dead_letters(body: RetryIn, clarion: deps.Services, caller: deps.Caller) -> dict[str, Any]:
    """Put dead letters back in the queue (``admin`` only): those the same filter as ``GET /v1/deliveries``
    matches, oldest first, at most 10,000 per call (``more`` says when others are left). Each is due now with its
    attempts reset, so the whole retry schedule applies again; ``retry: <reason>`` and who asked go on its
    timeline, one ``deliveries.retry`` entry with the filter and the count in the audit log. A delivery past its
    ttl stays expired (counted in ``skipped_expired``) unless ``renew_ttl`` gives it its ttl again from now."""
    approval.require(caller.roles, approval.ADMINISTER)
    which = _filter(body.status, body.channel, body.provider, body.template, body.since, body.until)
    now = datetime.now(UTC)

    async def job(conn: Any) -> store.Requeued:
        done = await store.requeue(
            conn,
            which,
            limit=MAX_REQUEUED,
            now=now,
            reason=body.reason,
            actor=caller.name,
            renew_ttl=body.renew_ttl,
        )
        detail = {
            "filter": which.to_json(),
            "reason": body.reason,
            "renew_ttl": body.renew_ttl,
            "requeued": done.requeued,
            "skipped_expired": done.skipped_expired,
            "more": done.more,
        }
        await audit.record(
            conn, actor=caller.name, action="deliveries.retry", subject="deliveries:retry", at=now, detail=detail
        )
        return done

    done = await clarion.db.write(job)
    if done.requeued:
        clarion.dispatcher.notify(done.requeued)
    return {"requeued": done.requeued, "skipped_expired": done.skipped_expired, "more": done.more}
