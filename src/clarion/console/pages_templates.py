"""The templates pages: the list, the per-channel editor with its live preview, versions with a diff, review and
test sends. Every write calls the use case the API's template routes call — saving ``authoring.save_template``
(``PUT /v1/templates/{key}``), reviewing and test sends ``reviewing`` (``/v1/templates/{key}/versions…``,
``/test``), previews ``previewing`` — so the roles, the checks and the audit (under ``operator:<name>``) are the
API's.

The editor edits the texts of each channel; what it does not show (an SMS's vendor templates, A/B variants, the
default content, policies, fallbacks) is kept as last saved."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

import pydantic
from fastapi import APIRouter, Request
from fastapi.responses import Response

from clarion.api import schemas
from clarion.console import access, roles
from clarion.domain import approval, errors, model
from clarion.pipeline import authoring, previewing, reviewing
from clarion.store import templates as template_store

router = APIRouter(include_in_schema=False)

#: the texts the editor offers per channel, in order; another channel is edited as its JSON content
FIELDS: Mapping[str, tuple[str, ...]] = {
    "sms": ("text", "signature"),
    "inbox": ("title", "body", "url"),
    "push": ("title", "body", "url"),
    "email": ("subject", "text", "html"),
    "wecom": ("title", "markdown"),
    "dingtalk": ("title", "markdown"),
    "feishu": ("title", "markdown"),
    "voice": ("text",),
}
LONG = frozenset({"text", "body", "html", "markdown"})  # edited in a text area
CHANNELS = tuple(c.value for c in model.Channel)
CATEGORIES = tuple(c.value for c in model.Category)
PRIORITIES = tuple(p.value for p in model.Priority)
KEY = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
MAX_PREVIEW_USERS = 5
MAX_VERSION = 2**31 - 1
NEW = "new"  # /console/templates/new: the editor of a template not saved yet


# -- reading the editor's form -------------------------------------------------------------------------------


def _text(form: Mapping[str, str], name: str) -> str:
    """A posted text as typed, with the browser's CRLF line ends made LF (what the API stores)."""
    return form.get(name, "").replace("\r\n", "\n")


def _content(channel: str, form: Mapping[str, str], stored: Any) -> Any:
    """The channel's content from the form, over what was saved (so fields the editor does not show are kept)."""
    if channel not in FIELDS:
        raw = form.get(f"content.{channel}.json", "").strip()
        try:
            return json.loads(raw) if raw else {}
        except json.JSONDecodeError as exc:
            raise errors.InvalidInput(
                f"channels.{channel}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})",
                details={"field": f"channels.{channel}"},
            ) from None
    content = dict(stored) if isinstance(stored, dict) else {}
    for name in FIELDS[channel]:
        value = _text(form, f"content.{channel}.{name}")
        if value.strip():
            content[name] = value
        else:
            content.pop(name, None)
    return content


def _document(form: Mapping[str, str], row: Any) -> dict[str, Any]:
    """The ``PUT /v1/templates/{key}`` body the form asks for: the template as last saved (``row``; None for a
    new one), with the form's name, category, priority, department, owner and the channels it sends on."""
    document = {name: getattr(row, name) for name in schemas.TemplateIn.model_fields if hasattr(row, name)}
    stored = dict(document.get("channels") or {})
    channels = {k: v for k, v in stored.items() if k == "default"}
    for channel in CHANNELS:
        if form.get(f"on.{channel}"):
            channels[channel] = _content(channel, form, stored.get(channel))
    document["channels"] = channels
    for name in ("name", "category", "priority", "department", "owner"):
        document[name] = form.get(name, "").strip() or None
    document["priority"] = document["priority"] or model.Priority.NORMAL.value
    return document


def _body(document: dict[str, Any]) -> schemas.TemplateIn:
    try:
        return schemas.TemplateIn.model_validate(document)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(map(str, first["loc"])) or "channels"
        raise errors.InvalidInput(f"{field}: {first['msg']}", details={"field": field}) from None


def _key(form: Mapping[str, str], key: str) -> str:
    chosen = form.get("key", "").strip() if key == NEW else key
    if not KEY.match(chosen) or chosen == NEW:
        raise errors.InvalidInput(
            "key: 1 to 128 letters, digits or _ . : @ - (and not 'new')", details={"field": "key"}
        )
    return chosen


async def _row(request: Request, key: str) -> Any:
    """The template's row (its latest version, with ``status``), None for one that does not exist."""
    async with access.console(request).clarion.db.read() as conn:
        rows = await template_store.template_rows(conn, key=key)
    return rows[0] if rows else None


# -- the list ------------------------------------------------------------------------------------------------


@router.get("/templates")
async def templates_page(request: Request) -> Response:
    visit = await access.visit(request, roles.TEMPLATES)
    async with access.console(request).clarion.db.read() as conn:
        rows = await template_store.template_rows(conn)
    return access.render(
        request, "templates.html", visit, templates=rows, may_edit=approval.may(visit.api_roles, approval.EDIT)
    )


# -- the editor ----------------------------------------------------------------------------------------------


def _editing(document: Mapping[str, Any], added: str | None) -> list[dict[str, Any]]:
    """Every channel as the editor shows it: on (the template sends on it) or offered to add, with its texts."""
    contents = document.get("channels") or {}
    shown = []
    for channel in CHANNELS:
        content = contents.get(channel)
        values = content if isinstance(content, dict) else {}
        fields = [(name, values.get(name) or "", name in LONG) for name in FIELDS.get(channel, ())]
        raw = json.dumps(content, ensure_ascii=False, indent=2) if content and channel not in FIELDS else ""
        shown.append(
            {
                "channel": channel,
                "on": content is not None or channel == added,
                "adapted": content == {},
                "fields": fields,
                "json": raw,
            }
        )
    return shown


async def _editor(
    request: Request,
    visit: access.Visit,
    key: str,
    row: Any,
    document: Mapping[str, Any],
    *,
    code: int = 200,
    error: errors.InvalidInput | None = None,
    form: Mapping[str, str] | None = None,
) -> Response:
    clarion = access.console(request).clarion
    listed: list[dict[str, Any]] = []
    pending = None
    if row is not None:
        listed = (await reviewing.versions(clarion, key, limit=20))["versions"]
        pending = await reviewing.next_review(clarion, key, row.version)
    async with clarion.db.read() as conn:
        whitelist = [r.user_id for r in await template_store.test_recipients(conn)]
    form = form or {}
    added = request.query_params.get("add")
    return access.render(
        request,
        "templates_editor.html",
        visit,
        code,
        key=key,
        row=row,
        document=document,
        channels=_editing(document, added if added in CHANNELS else None),
        categories=CATEGORIES,
        priorities=PRIORITIES,
        versions=listed,
        latest=listed[0] if listed else None,
        pending=pending,
        whitelist=whitelist,
        error=error,
        typed_key=form.get("key", ""),
        preview_users=form.get("preview_users", ""),
        preview_data=form.get("preview_data", "{}"),
        saved=request.query_params.get("saved"),
        tested=request.query_params.get("tested"),
        **_rights(visit, listed[0] if listed else None, pending),
    )


def _rights(
    visit: access.Visit, version: Mapping[str, Any] | None, pending: reviewing.NextReview | None
) -> dict[str, bool]:
    """What the operator is offered; the use cases decide again (an author approving their own version is refused
    there too)."""
    status = version["status"] if version else None
    return {
        "may_edit": approval.may(visit.api_roles, approval.EDIT),
        "may_test": approval.may(visit.api_roles, approval.TEST) and version is not None,
        "may_submit": status == approval.Status.DRAFT and approval.may(visit.api_roles, approval.EDIT),
        "may_decide": pending is not None
        and approval.may(visit.api_roles, approval.REVIEW)
        and visit.operator.actor not in pending.excluded,
    }


@router.get("/templates/new")
async def new_template_page(request: Request) -> Response:
    visit = await access.visit(request, roles.TEMPLATES)
    approval.require(visit.api_roles, approval.EDIT)
    document = {"category": model.Category.NOTIFICATION.value, "priority": model.Priority.NORMAL.value}
    return await _editor(request, visit, NEW, None, document)


@router.get("/templates/{key}")
async def template_page(request: Request, key: str) -> Response:
    visit = await access.visit(request, roles.TEMPLATES)
    row = await _row(request, key)
    if row is None:
        raise errors.NotFound("template", key)
    document = {name: getattr(row, name) for name in schemas.TemplateIn.model_fields if hasattr(row, name)}
    return await _editor(request, visit, key, row, document)


@router.post("/templates/{key}")
async def save_template(request: Request, key: str) -> Response:
    """Save the editor's form as the template's next version, as ``PUT /v1/templates/{key}`` does; a refusal
    (a field, a syntax error at its line and column, a blocked word) shows the editor again with what was typed."""
    visit = await access.visit(request, roles.TEMPLATES)
    form = await access.form(request, visit.session)
    row = None if key == NEW else await _row(request, key)
    document: dict[str, Any] = {}
    try:
        chosen = _key(form, key)
        if key == NEW:
            row = await _row(request, chosen)
            if row is not None:
                raise errors.InvalidInput(f"key: a template {chosen!r} already exists", details={"field": "key"})
        document = _document(form, row)
        clarion = access.console(request).clarion
        outcome = await authoring.save_template(
            clarion, chosen, _body(document), actor=visit.operator.actor, roles=visit.api_roles
        )
    except errors.InvalidInput as exc:
        document = document or _document(form, row)
        return await _editor(request, visit, key, row, document, code=exc.status, error=exc, form=form)
    return access.see_other(f"/console/templates/{urllib.parse.quote(chosen)}?saved={outcome.saved.version}")


# -- the live preview (an HTML fragment) ---------------------------------------------------------------------


def _users(raw: str) -> list[str]:
    found = list(dict.fromkeys(u for u in re.split(r"[\s,]+", raw) if u))
    if len(found) > MAX_PREVIEW_USERS or any(not KEY.match(u) for u in found):
        raise errors.InvalidInput(
            f"preview_users: at most {MAX_PREVIEW_USERS} user ids, separated by commas",
            details={"field": "preview_users"},
        )
    return found


def _data(raw: str) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise errors.InvalidInput(
            f"preview_data: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})",
            details={"field": "preview_data"},
        ) from None
    if not isinstance(data, dict):
        raise errors.InvalidInput("preview_data: a JSON object", details={"field": "preview_data"})
    return data


@router.post("/templates/{key}/preview")
async def preview_fragment(request: Request, key: str) -> Response:
    """The editor's form previewed for each chosen user (or the sample data alone), unsaved: always 200, so a
    half-typed template shows what is wrong with it in the fragment rather than failing the request."""
    visit = await access.visit(request, roles.TEMPLATES)
    form = await access.form(request, visit.session)
    clarion = access.console(request).clarion
    columns: list[dict[str, Any]] = []
    try:
        users, data = _users(form.get("preview_users", "")), _data(form.get("preview_data", ""))
        row = None if key == NEW else await _row(request, key)
        template = previewing.draft_template(form.get("key", "").strip() or key, _body(_document(form, row)))
        chosen: list[str | None] = [*users] or [None]
        for user_id in chosen:
            try:
                shown = await previewing.author_view(clarion, template, user_id=user_id, data=data)
                columns.append({"user": user_id, "channels": shown, "error": None})
            except errors.InvalidInput as exc:
                columns.append({"user": user_id, "channels": [], "error": exc.message})
    except errors.InvalidInput as exc:
        return access.render(request, "templates_preview.html", visit, columns=[], error=exc.message)
    return access.render(request, "templates_preview.html", visit, columns=columns, error=None)


# -- versions and review -------------------------------------------------------------------------------------


def _version_number(number: int, field: str) -> None:
    """A version number as the API accepts it (the store's column is a 32-bit integer)."""
    if not 1 <= number <= MAX_VERSION:
        raise errors.InvalidInput(f"{field}: a version number from 1 to {MAX_VERSION}", details={"field": field})


@router.get("/templates/{key}/versions/{number}")
async def version_page(request: Request, key: str, number: int, against: int | None = None) -> Response:
    visit = await access.visit(request, roles.TEMPLATES)
    clarion = access.console(request).clarion
    _version_number(number, "number")
    if against is not None and against != 0:
        _version_number(against, "against")
    shown = await reviewing.version(clarion, key, number)
    changes = await reviewing.diff(clarion, key, number, against)
    pending = await reviewing.next_review(clarion, key, number)
    return access.render(
        request,
        "templates_version.html",
        visit,
        key=key,
        version=shown,
        diff=changes,
        pending=pending,
        **_rights(visit, shown, pending),
    )


@router.post("/templates/{key}/versions/{number}/{action}")
async def review_version(request: Request, key: str, number: int, action: str) -> Response:
    """Submit, approve or reject a version with the form's comment, as the API's review routes do (the use case
    refuses what the operator may not do — an author approving their own version — and audits the refusal)."""
    visit = await access.visit(request, roles.TEMPLATES)
    form = await access.form(request, visit.session)
    _version_number(number, "number")
    comment = form.get("comment", "").strip() or None
    if comment is not None and len(comment) > 2000:
        raise errors.InvalidInput("comment: at most 2000 characters", details={"field": "comment"})
    actor = approval.Actor(visit.operator.actor, visit.api_roles)
    await reviewing.review(access.console(request).clarion, actor, key, number, action, comment)
    back = access.local(form.get("next")) or f"/console/templates/{urllib.parse.quote(key)}/versions/{number}"
    return access.see_other(back)


# -- test sends ----------------------------------------------------------------------------------------------


@router.post("/templates/{key}/test")
async def test_send(request: Request, key: str) -> Response:
    """Send the latest version (a draft too) to whitelisted users, with the preview's sample data."""
    visit = await access.visit(request, roles.TEMPLATES)
    form = await access.form(request, visit.session)
    to = list(dict.fromkeys(u for u in re.split(r"[\s,]+", form.get("to", "")) if u))
    if not to or any(not KEY.match(u) for u in to):
        raise errors.InvalidInput("to: one or more whitelisted user ids, separated by commas", details={"field": "to"})
    data = _data(form.get("preview_data", ""))
    actor = approval.Actor(visit.operator.actor, visit.api_roles)
    answer = await reviewing.test_send(access.console(request).clarion, actor, key, to=to, data=data)
    query = urllib.parse.urlencode({"tested": f"v{answer['version']} → {', '.join(to)}"})
    return access.see_other(f"/console/templates/{urllib.parse.quote(key)}?{query}")
