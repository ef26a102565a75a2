"""Receipts and bounces from vendors: ``POST /r/{provider_name}`` and ``POST /r/{provider_name}/bounces``.

These paths sit outside ``/v1/``: a vendor has no API key. Each provider kind proves its callbacks its own way
(``channels.base.TakesReceipts``: an HMAC signature, a shared token, the vendor's scheme); a callback that does
not prove itself is refused with 401 and nothing of it is kept. What a verified callback carries goes to the
feedback stage (``pipeline.feedback``), and the vendor gets ``{"accepted", "pending", "ignored"}`` with 200 — for a
duplicate, an id no delivery carries yet, a receipt that beat the send's outcome or one that comes after the
fallback, too: a vendor answered 5xx would only send it again. A provider that does not exist, or whose
kind (or configuration) takes no receipts there, is 404.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import bootstrap
from clarion.api import deps, problems, views
from clarion.api.responses import JSON
from clarion.channels import base
from clarion.domain import errors
from clarion.pipeline import feedback

router = APIRouter(prefix="/r", tags=["receipts"])


class ReceiptsTaken(views.View):
    accepted: int = Field(description="applied: a status change, or a line on the delivery's timeline")
    pending: int = Field(description="kept until the delivery they name is known to be sent")
    ignored: int = Field(description="duplicates, and statuses that mean nothing to Clarion")


ANSWERS: dict[int | str, dict[str, Any]] = {
    401: {"model": problems.ErrorBody, "description": "the callback's signature or token does not verify"},
    404: {"model": problems.ErrorBody, "description": "no such provider, or it takes no callbacks here"},
    422: {"model": problems.ErrorBody, "description": "the body is not in the provider's receipt format"},
    503: {"model": problems.ErrorBody, "description": "the provider's secrets cannot be read by this process"},
}
BODY = {
    "requestBody": {
        "required": False,
        "description": "as the vendor sends it (JSON, a form, or for bounces a raw RFC 3464 report)",
        "content": {"application/json": {"schema": {}}},
    }
}


@router.post("/{provider_name}", response_model=ReceiptsTaken, responses=ANSWERS, openapi_extra=BODY)
async def take_receipts(provider_name: str, request: Request, clarion: deps.Services) -> Any:
    """Delivery receipts from the vendor of ``provider_name`` (``sms_http`` with a ``receipts`` block)."""
    provider = await provider_of(clarion, provider_name)
    if not isinstance(provider, base.TakesReceipts) or not provider.takes_receipts:
        raise errors.NotFound("receipt endpoint of provider", provider_name)
    callback = await callback_of(request)
    if (answer := _challenge(provider, callback)) is not None:
        return answer
    return _acknowledged(provider, await _apply(clarion, provider_name, _read(provider.receipts, callback)))


def _acknowledged(provider: Any, taken: Any) -> Any:
    """Clarion's counts, with the acknowledgement a kind's vendor wants beside them (``receipt_answer``: Aliyun's
    ``{"code": 0}``, Tencent's ``{"result": 0}``), without which it sends the same receipts again; a text
    ``receipt_answer`` is the whole answer (WeChat wants ``success`` in plain text, or shows the user an error)."""
    extra = getattr(provider, "receipt_answer", None)
    if not extra or not isinstance(taken, dict):
        return taken
    if isinstance(extra, str):
        return PlainTextResponse(extra)
    return JSON({**taken, **extra})


def _challenge(provider: Any, callback: base.Callback) -> JSON | None:
    """A kind's answer to the vendor checking the URL before it sends receipts (Feishu's ``url_verification``):
    a kind with ``challenge(callback) -> dict | None`` answers it with that body, or refuses it (401)."""
    challenge = getattr(provider, "challenge", None)
    if challenge is None:
        return None
    try:
        answer = challenge(callback)
    except base.RefusedCallback as exc:
        return _refused(exc)
    return None if answer is None else JSON(answer)


#: the answer is plain text, its errors the JSON error body (named here: a model would be documented as text)
_ECHO_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "description": answer["description"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    for status, answer in ANSWERS.items()
}


@router.get("/{provider_name}", response_class=PlainTextResponse, responses=_ECHO_ERRORS)
async def verify_callback_url(provider_name: str, request: Request, clarion: deps.Services) -> Any:
    """The vendor's check of the callback URL when the operator registers it (WeChat: a signed GET whose
    ``echostr`` is answered in plain text): a kind with ``verify_url(callback) -> str`` answers it, or refuses it
    (401); a kind without, or an account taking no callbacks, is 404."""
    provider = await provider_of(clarion, provider_name)
    verify = getattr(provider, "verify_url", None)
    if verify is None or not isinstance(provider, base.TakesReceipts) or not provider.takes_receipts:
        raise errors.NotFound("callback endpoint of provider", provider_name)
    try:
        return PlainTextResponse(verify(await callback_of(request)))
    except base.RefusedCallback as exc:
        return _refused(exc)
    except base.UnreadableCallback as exc:
        raise errors.InvalidInput(str(exc), code="invalid_callback") from None


@router.post("/{provider_name}/bounces", response_model=ReceiptsTaken, responses=ANSWERS, openapi_extra=BODY)
async def take_bounces(provider_name: str, request: Request, clarion: deps.Services) -> Any:
    """Bounces for an ``smtp`` account with a ``bounce_token``: a delivery status notification (RFC 3464,
    ``multipart/report``) posted raw by the mail server's bounce pipe, or its JSON form ``{"message_id",
    "recipient", "status", "action", "diagnostic"}`` (one or a list). A hard bounce (``5.x.x``, action
    ``failed``) makes the delivery ``bounced`` and suppresses the address (source ``bounce``); a soft bounce
    (``4.x.x``, ``delayed``) is put on the timeline."""
    provider = await provider_of(clarion, provider_name)
    if not isinstance(provider, base.TakesBounces) or not provider.takes_bounces:
        raise errors.NotFound("bounce endpoint of provider", provider_name)
    return await _apply(clarion, provider_name, _read(provider.bounces, await callback_of(request)))


class _Unavailable(errors.InvalidInput):
    status = 503


async def provider_of(clarion: bootstrap.Clarion, name: str) -> Any:
    try:
        return await clarion.providers.get(name)
    except errors.SendError as exc:
        if exc.code == "secrets_unreadable":
            raise _Unavailable(exc.message, code="unavailable") from None
        raise errors.NotFound("provider", name) from None


async def callback_of(request: Request) -> base.Callback:
    return base.Callback(
        body=await request.body(),
        headers={k.lower(): v for k, v in request.headers.items()},
        query=dict(request.query_params),
        content_type=request.headers.get("content-type", "").lower(),
        url=_public_url(request),
    )


def _public_url(request: Request) -> str:
    """The URL the vendor called as the public knows it (behind a proxy, not the one this process saw):
    ``CLARION_PUBLIC_URL`` + the path + the query as it came."""
    public = request.app.state.clarion.settings.public_url.rstrip("/")
    query = request.url.query
    return f"{public}{request.url.path}" + (f"?{query}" if query else "")


def _refused(exc: base.RefusedCallback) -> JSON:
    return JSON(problems.error_body("unauthorized", str(exc)), status_code=401)


def _read(reader: Any, callback: base.Callback) -> base.ReadCallback | JSON:
    """``reader(callback)``: the receipts, or the refusal to answer (401; 422 for a body it cannot read)."""
    try:
        return reader(callback)
    except base.RefusedCallback as exc:
        return _refused(exc)
    except base.UnreadableCallback as exc:
        raise errors.InvalidInput(str(exc), code="invalid_receipt") from None


async def _apply(clarion: bootstrap.Clarion, provider_name: str, read: base.ReadCallback | JSON) -> Any:
    if isinstance(read, JSON):
        return read
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> feedback.Tally:
        return await feedback.receive(conn, provider_name, read.receipts, now, ignored=read.ignored)

    tally = await clarion.db.write(job)
    if tally.suppressed:
        clarion.catalog.invalidate()  # the policy stage caches whether any suppression exists
    return tally.answer()
