"""The console's routes, one section per page. Each parses its query or form, checks the operator's role for the
page, calls the use case the API route calls, and renders; a write is posted with the form's CSRF token and is
audited by the use case under ``operator:<name>``."""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime
from typing import Any

import pydantic
from fastapi import APIRouter, Request
from fastapi.responses import Response

from clarion.api import schemas
from clarion.console import access, explain, i18n, overview, queries, roles, sessions
from clarion.domain import approval, errors, model
from clarion.domain import resend as resend_rules
from clarion.pipeline import configuring, resend
from clarion.store import history, records

router = APIRouter(include_in_schema=False)
#: a message in one of these may be re-sent from its page (if it is not marketing, or the operator is an admin)
RESENDABLE = frozenset({"failed", "undelivered", "bounced", "expired"})
STATUSES = tuple(s.value for s in model.MessageStatus)
CHANNELS = tuple(c.value for c in model.Channel)


# -- login, logout, language ---------------------------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    return access.render(request, "login.html", None, next=access.local(next) or "", error=None, name="")


@router.post("/login")
async def login(request: Request) -> Response:
    console = access.console(request)
    form = await access.form(request, None)
    name, password, back = form.get("name", "").strip(), form.get("password", ""), access.local(form.get("next"))
    address = request.client.host if request.client else "-"
    _ = console.gettext(request)

    def refused(error: str, status: int) -> Response:
        return access.render(request, "login.html", None, status, next=back or "", error=error, name=name)

    wait = console.throttle.retry_after(name, address)
    if wait > 0:
        minutes = max(1, round(wait / 60))
        response = refused(_("Too many failed logins. Try again in {n} min.").format(n=minutes), 429)
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    operator = await console.operators.authenticate(name, password) if name and password else None
    if operator is None:
        console.throttle.failed(name, address)
        return refused(_("Wrong name or password, or the account is disabled."), 401)
    console.throttle.succeeded(name)
    response = access.see_other(back or roles.home(operator.role))
    console.sessions.start(response, operator.name, form["csrf"])
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    console = access.console(request)
    await access.form(request, console.sessions.read(request))
    response = access.see_other("/console/login")
    console.sessions.end(response)
    return response


@router.post("/language")
async def language(request: Request) -> Response:
    console = access.console(request)
    form = await access.form(request, console.sessions.read(request))
    chosen = form.get("language", "")
    if chosen not in i18n.LOCALES:
        raise errors.InvalidInput(f"language: one of {', '.join(i18n.LOCALES)}", details={"field": "language"})
    response = access.see_other(access.local(form.get("next")) or "/console/")
    response.set_cookie(sessions.LANGUAGE, chosen, max_age=365 * 86400, path="/console", samesite="lax")
    return response


# -- overview ------------------------------------------------------------------------------------------------


@router.get("/")
async def overview_page(request: Request) -> Response:
    visit = await access.visit(request, roles.OVERVIEW)
    figures = await overview.figures(access.console(request).clarion, datetime.now(UTC))
    return access.render(request, "overview.html", visit, figures=figures)


# -- send record ---------------------------------------------------------------------------------------------


def _address(visit: access.Visit, address: Any) -> str:
    if roles.sees_addresses(visit.operator.role):
        return ", ".join(map(str, address)) if isinstance(address, list) else str(address)
    return explain.masked(address)


@router.get("/record")
async def record_page(
    request: Request,
    q: str = "",
    user: str | None = None,
    status: str = "",
    channel: str = "",
    cursor: str | None = None,
) -> Response:
    visit = await access.visit(request, roles.RECORD)
    clarion = access.console(request).clarion
    q = q.strip()[:320]
    if status and status not in STATUSES:
        raise errors.InvalidInput(f"status: one of {', '.join(STATUSES)}", details={"field": "status"})
    if channel and channel not in CHANNELS:
        raise errors.InvalidInput(f"channel: one of {', '.join(CHANNELS)}", details={"field": "channel"})
    async with clarion.db.read() as conn:
        found = [user] if user else (await queries.find_users(conn, q) if q else [])
        chosen = found[0] if len(found) == 1 else None
        addresses, record = {}, None
        if chosen is not None:
            for row in await records.user_rows(conn, [chosen]):
                addresses = {k: _address(visit, v) for k, v in row.addresses.items()}
            flt = history.RecordFilter(status or None, channel or None)
            record = await history.send_record(conn, chosen, flt, limit=50, before=cursor)
    return access.render(
        request,
        "record.html",
        visit,
        q=q,
        found=found,
        user=chosen,
        addresses=addresses,
        record=record,
        status=status,
        channel=channel,
        statuses=STATUSES,
        channels=CHANNELS,
        categories=tuple(c.value for c in model.Category),
        may_suppress=approval.may(visit.api_roles, approval.USER_DATA),
        suppressed=request.query_params.get("suppressed") == "1",
    )


def _may_resend(visit: access.Visit, message: dict[str, Any]) -> bool:
    category = model.Category(message["category"])
    permitted = approval.may(visit.api_roles, resend_rules.permission(category))
    return permitted and message["status"] in RESENDABLE and category is not model.Category.MARKETING


@router.get("/messages/{message_id}")
async def message_page(request: Request, message_id: str) -> Response:
    visit = await access.visit(request, roles.RECORD)
    clarion = access.console(request).clarion
    async with clarion.db.read() as conn:
        message = await history.message_detail(conn, message_id[:32])
    if message is None:
        raise errors.NotFound("message", message_id)
    _ = access.console(request).gettext(request)
    deliveries = [
        {
            **d,
            "sentences": [(e["at"], e["status"], explain.sentence(e, d, _)) for e in d["timeline"]],
        }
        for d in message["deliveries"]
    ]
    return access.render(
        request,
        "message.html",
        visit,
        message=message,
        deliveries=deliveries,
        may_resend=_may_resend(visit, message),
        resent=request.query_params.get("resent"),
    )


@router.post("/messages/{message_id}/resend")
async def resend_page(request: Request, message_id: str) -> Response:
    visit = await access.visit(request, roles.RECORD)
    form = await access.form(request, visit.session)
    reason = form.get("reason", "").strip()
    if not reason or len(reason) > 500:
        raise errors.InvalidInput("reason: between 1 and 500 characters", details={"field": "reason"})
    clarion = access.console(request).clarion
    command = resend.Command(message_id[:32], reason, visit.operator.actor, visit.api_roles)
    answer = await resend.resend_message(
        clarion.db, clarion.policies, command, now=datetime.now(UTC), on_queued=clarion.dispatcher.notify
    )
    statuses = ",".join(d["status"] for d in answer["deliveries"])
    return access.see_other(f"/console/messages/{message_id}?" + urllib.parse.urlencode({"resent": statuses}))


@router.post("/record/{user_id}/suppressions")
async def suppress_user(request: Request, user_id: str) -> Response:
    """Stop sending to the user (on one channel or category, or on all), as ``POST /v1/suppressions`` records
    it, with the same validation and role (``sender``'s, which a ``support`` operator acts with); audited as
    ``suppression.add`` under the operator."""
    visit = await access.visit(request, roles.RECORD)
    form = await access.form(request, visit.session)
    approval.require(visit.api_roles, approval.USER_DATA)
    try:
        body = schemas.SuppressionIn.model_validate(
            {
                "user_id": user_id,
                "channel": form.get("channel") or None,
                "category": form.get("category") or None,
                "reason": form.get("reason", "").strip() or None,
                "source": "user_request",
            }
        )
    except pydantic.ValidationError as exc:
        field = ".".join(map(str, exc.errors()[0]["loc"])) or "user_id"
        raise errors.InvalidInput(f"{field}: {exc.errors()[0]['msg']}", details={"field": field}) from None
    await configuring.add_suppression(
        access.console(request).clarion,
        user_id=body.user_id,
        address=None,
        channel=body.channel,
        category=body.category,
        reason=body.reason,
        source=body.source,
        actor=visit.operator.actor,
    )
    return access.see_other(f"/console/record?{urllib.parse.urlencode({'user': user_id, 'suppressed': '1'})}")


# -- operators (admin) ---------------------------------------------------------------------------------------


@router.get("/operators")
async def operators_page(request: Request) -> Response:
    visit = await access.visit(request, roles.OPERATORS)
    listed = await access.console(request).operators.listed()
    return access.render(request, "operators.html", visit, operators=listed, roles=roles.ROLES)


@router.post("/operators")
async def create_operator(request: Request) -> Response:
    visit = await access.visit(request, roles.OPERATORS)
    form = await access.form(request, visit.session)
    await access.console(request).operators.create(
        form.get("name", "").strip(), form.get("role", ""), form.get("password", ""), actor=visit.operator.actor
    )
    return access.see_other("/console/operators")


@router.post("/operators/{name}/disable")
async def disable_operator(request: Request, name: str) -> Response:
    visit = await access.visit(request, roles.OPERATORS)
    await access.form(request, visit.session)
    await access.console(request).operators.disable(name, actor=visit.operator.actor)
    return access.see_other("/console/operators")
