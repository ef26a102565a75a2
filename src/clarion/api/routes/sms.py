"""SMS replies (上行) and the keyword table: ``GET/PUT /v1/sms/keywords``, ``GET /v1/sms/replies``, and the vendors'
callback ``POST /r/{provider_name}/replies``.

A reply that is a keyword (defaults ``TD 退订 T N STOP UNSUBSCRIBE``, per sending number or sign name, ``*`` for
all) suppresses marketing SMS to that phone (source ``sms_reply``), with a confirmation sent back where the
keyword has one (``pipeline.replies``). The callback is proven the way the provider kind proves its receipts;
a duplicate, or a reply from a number that is not a phone, is answered 200 like any other."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Body, Query, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.api import deps, problems, views
from clarion.api.responses import JSON
from clarion.api.routes import receipts
from clarion.channels import base
from clarion.domain import approval, errors, phones, replies
from clarion.pipeline import replies as take_replies
from clarion.store import audit as audit_log
from clarion.store import replies as store_replies

router = APIRouter(prefix="/v1/sms", tags=["sms"], dependencies=deps.AUTH)
callbacks = APIRouter(prefix="/r", tags=["receipts"])


def _keywords_json(table: tuple[replies.Keyword, ...]) -> dict[str, Any]:
    return replies.table_to_json(table)


@router.get("/keywords", response_model=views.SmsKeywords)
async def get_keywords(clarion: deps.Services) -> dict[str, Any]:
    """The keyword table (the defaults until one is saved)."""
    async with clarion.db.read() as conn:
        return _keywords_json(await store_replies.load_keywords(conn))


@router.put("/keywords", response_model=views.SmsKeywords, responses=problems.answers(403))
async def put_keywords(
    clarion: deps.Services,
    caller: deps.Caller,
    body: dict[str, Any] = Body(..., description='{"keywords": [{"word": "TD", "scope": "*", "confirmation": …}]}'),
) -> dict[str, Any]:
    """Replace the keyword table (``admin``): each ``word`` once per ``scope`` (a sending number or sign name, or
    ``*``), compared as replies are (trimmed, without case or trailing punctuation); ``confirmation`` is the text
    sent back. An empty list turns keyword unsubscribes off. Audited as ``sms_keywords.update``."""
    approval.require(caller.roles, approval.ADMINISTER)
    table = replies.table_from_json(body)
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> None:
        before = await store_replies.load_keywords(conn)
        await store_replies.save_keywords(conn, table, now)
        detail = audit_log.changes(_keywords_json(before), _keywords_json(table))
        await audit_log.record(
            conn, actor=caller.name, action="sms_keywords.update", subject="sms_keywords", at=now, detail=detail
        )

    await clarion.db.write(job)
    return _keywords_json(table)


@router.get("/replies", response_model=views.SmsReplies)
async def list_replies(
    clarion: deps.Services,
    phone: str | None = Query(default=None, min_length=1, max_length=32, description="one phone's replies"),
    before: int | None = Query(default=None, ge=1, le=2**63 - 1, description="``next`` of the previous page"),
    limit: int = Query(default=100, ge=1, le=1000),
) -> dict[str, Any]:
    """Replies newest first, with what each did."""
    if phone is not None:
        try:
            phone = phones.normalize(phone)
        except ValueError as exc:
            raise errors.InvalidInput(f"phone: {exc}", details=[{"field": "phone", "message": str(exc)}]) from None
    async with clarion.db.read() as conn:
        rows = await store_replies.page(conn, phone=phone, before=before, limit=limit + 1)
    shown = rows[:limit]
    return {
        "replies": [
            {
                **{c: getattr(r, c) for c in views.SmsReply.model_fields if c != "received_at"},
                "received_at": r.received_at.isoformat(),
            }
            for r in shown
        ],
        "next": shown[-1].id if len(rows) > limit else None,
    }


@callbacks.post(
    "/{provider_name}/replies",
    response_model=views.RepliesTaken,
    responses=receipts.ANSWERS,
    openapi_extra=receipts.BODY,
)
async def take(provider_name: str, request: Request, clarion: deps.Services) -> Any:
    """Users' SMS replies from the vendor of ``provider_name`` (a kind that takes replies), proven as its
    receipts are; 401 when the proof is missing or wrong, and nothing is kept."""
    provider = await receipts.provider_of(clarion, provider_name)
    if not isinstance(provider, base.TakesReplies) or not provider.takes_replies:
        raise errors.NotFound("reply endpoint of provider", provider_name)
    callback = await receipts.callback_of(request)
    try:
        taken = provider.replies(callback)
    except base.RefusedCallback as exc:
        return JSON(problems.error_body("unauthorized", str(exc)), status_code=401)
    except base.UnreadableCallback as exc:
        raise errors.InvalidInput(str(exc), code="invalid_reply") from None
    tally = await take_replies.take(clarion.db, provider_name, taken)
    if tally.unsubscribed:
        clarion.catalog.invalidate()  # the policy stage caches whether any suppression exists
    if tally.confirmations:
        await take_replies.confirm(clarion.db, provider, tally.confirmations)
    return {"accepted": tally.accepted, "duplicates": tally.duplicates, "unsubscribed": tally.unsubscribed}
