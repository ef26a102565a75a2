"""The "Draft with AI" panel of the template editor: a brief, the drafts the model wrote for it with every check's
result and each draft rendered for users of the audience, and the drafts the operator keeps saved as the
template's variants.

Drafting calls ``copywriting.generate`` as ``POST /v1/copy:generate`` does, with the operator's API roles (editor
or admin), and keeping calls ``generate.keep``, the saving behind its ``save_as``: a new version, submitted for
the normal review, with the model, prompt and raw answers kept as its ``origin`` and named in the audit log under
``operator:<name>``. Between the two steps the drafts travel in the page, in a token signed with the
installation's secret key and bound to the operator and the template, so what is saved is exactly what the model
wrote and what the operator saw, on whichever process the second request lands."""

from __future__ import annotations

import dataclasses
import typing
import urllib.parse
from collections.abc import Mapping
from typing import Any

import itsdangerous
import pydantic
from fastapi import APIRouter, Request
from fastapi.responses import Response

from clarion.api import schemas
from clarion.api.routes import copy as copy_api
from clarion.console import access, pages_templates, roles
from clarion.copywriting import generate, llm
from clarion.domain import approval, errors, model
from clarion.pipeline import previewing
from clarion.store import segments as segment_store
from clarion.store import templates as template_store

router = APIRouter(include_in_schema=False)
CHANNELS: tuple[str, ...] = typing.get_args(generate.Channel)
CATEGORIES = tuple(c.value for c in model.Category)
SAMPLE_USERS = 3  # the audience's users each draft is rendered for
KEEP_MAX_AGE = 2 * 3600  # seconds a page of drafts may be kept from
USABLE = ("ok", "repaired")
_SALT = "clarion.console.copy"


# -- reading the brief -----------------------------------------------------------------------------------------


def _target(form: Mapping[str, str], key: str) -> str:
    """The template the drafts are for: the page's, or for a new one the key typed (as the editor takes it)."""
    chosen = form.get("key", "").strip() if key == pages_templates.NEW else key
    if not pages_templates.KEY.match(chosen) or chosen == pages_templates.NEW:
        raise errors.InvalidInput(
            "key: 1 to 128 letters, digits or _ . : @ - (and not 'new')", details={"field": "key"}
        )
    return chosen


def _form_field(loc: tuple[int | str, ...]) -> str:
    """The form's field for a location in ``POST /v1/copy:generate``'s body (``brief.audience.segment`` → segment)."""
    names = [str(p) for p in loc if isinstance(p, str)] or ["brief"]
    if names[:2] == ["brief", "audience"]:
        return "segment" if names[2:3] == ["segment"] else "audience"
    return names[1] if names[0] == "brief" and len(names) > 1 else names[0]


def _n(raw: str) -> int:
    try:
        return int(raw.strip() or "2")
    except ValueError:
        raise errors.InvalidInput("n: a whole number of drafts from 1 to 5", details={"field": "n"}) from None


def _request(form: Mapping[str, str], row: Any) -> generate.Request:
    """The brief as ``POST /v1/copy:generate`` takes it, validated by the API's own schema; the category and the
    department are the template's (typed in for a new one)."""
    if not form.get("product", "").strip():
        raise errors.InvalidInput("product: describe the product", details={"field": "product"})
    channels = [c for c in CHANNELS if form.get(f"channel.{c}")]
    if not channels:
        raise errors.InvalidInput("channels: tick one or more channels", details={"field": "channels"})
    body = {
        "brief": {
            "product": form["product"].strip(),
            "offer": form.get("offer", "").strip() or None,
            "campaign": form.get("campaign", "").strip() or None,
            "audience": {
                "segment": form.get("segment", "").strip() or None,
                "description": form.get("audience", "").strip() or None,
            },
            "channels": channels,
            "tone": form.get("tone", "").strip() or None,
            "length": form.get("length", "short"),
            "language": form.get("language", "zh-CN"),
            "conditions": bool(form.get("conditions")),
        },
        "n": _n(form.get("n", "")),
        "category": row.category if row is not None else form.get("category", "marketing"),
        "department": (row.department if row is not None else form.get("department", "").strip()) or None,
        "name": (row.name if row is not None else form.get("name", "").strip()) or None,
    }
    try:
        return copy_api.GenerateIn.model_validate(body).to_request()
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        field = _form_field(tuple(first["loc"]))
        raise errors.InvalidInput(f"{field}: {first['msg']}", details={"field": field}) from None


# -- what the page shows -----------------------------------------------------------------------------------------


async def _latest(request: Request, key: str) -> Any:
    """The template's latest row, None when there is none."""
    async with access.console(request).clarion.db.read() as conn:
        rows = await template_store.template_rows(conn, key=key)
    return rows[0] if rows else None


async def _row(request: Request, key: str) -> Any:
    """The page's template; None for the new template, 404 for a key that does not exist."""
    if key == pages_templates.NEW:
        return None
    row = await _latest(request, key)
    if row is None:
        raise errors.NotFound("template", key)
    return row


def _unused(key: str, row: Any) -> None:
    if row is not None:
        raise errors.InvalidInput(f"key: a template {key!r} already exists", details={"field": "key"})


def _defaults(row: Any) -> dict[str, str]:
    """The brief's form before anything is typed: the template's channels that AI copy writes, or SMS."""
    sent = [c for c in CHANNELS if row is not None and c in (row.channels or {})] or ["sms"]
    found = {f"channel.{c}": "1" for c in sent}
    category = row.category if row is not None else model.Category.MARKETING.value
    return {**found, "length": "short", "language": "zh-CN", "conditions": "1", "n": "2", "category": category}


def _configured(request: Request, row: Any) -> str | None:
    """None when a model is configured for the template's department; else the setting to fix, as the API's 503."""
    department = row.department if row is not None else None
    try:
        llm.config_for(access.console(request).clarion.settings, department)
    except llm.NotConfigured as exc:
        return exc.message
    return None


async def _panel(
    request: Request,
    visit: access.Visit,
    key: str,
    row: Any,
    form: Mapping[str, str],
    *,
    code: int = 200,
    error: errors.InvalidInput | None = None,
    failure: llm.ModelError | None = None,
    result: generate.Result | None = None,
    drafts: list[dict[str, Any]] | None = None,
    token: str = "",
) -> Response:
    async with access.console(request).clarion.db.read() as conn:
        segments = await segment_store.list_segments(conn)
    return access.render(
        request,
        "copy.html",
        visit,
        code,
        key=key,
        row=row,
        form=form,
        channels=CHANNELS,
        categories=CATEGORIES,
        segments=[(s.key, s.name) for s in segments],
        not_configured=_configured(request, row),
        error=error,
        failure=failure,
        result=result,
        drafts=drafts or [],
        token=token,
    )


async def _rendered(
    request: Request, key: str, contents: dict[str, Any], users: list[str | None]
) -> list[dict[str, Any]]:
    """One draft previewed for each user as the editor's live preview shows a template (``previewing``)."""
    clarion = access.console(request).clarion
    body = schemas.TemplateIn.model_validate({"name": key, "category": "marketing", "channels": contents})
    template = previewing.draft_template(key, body)
    columns = []
    for user_id in users:
        try:
            shown = await previewing.author_view(clarion, template, user_id=user_id, data={})
            columns.append({"user": user_id, "channels": shown, "error": None})
        except errors.InvalidInput as exc:
            columns.append({"user": user_id, "channels": [], "error": exc.message})
    return columns


async def _drafts(request: Request, key: str, result: generate.Result) -> list[dict[str, Any]]:
    users: list[str | None] = [u.user_id for u in result.audience.sample[:SAMPLE_USERS]] or [None]
    shown = []
    for draft in result.drafts:
        found = draft.to_json()
        try:
            found["columns"] = await _rendered(request, key, found["channels"], users)
        except pydantic.ValidationError:
            found["columns"] = []  # not a template's shape: its problems say why
        shown.append(found)
    return shown


# -- the signed drafts -------------------------------------------------------------------------------------------


def _signer(request: Request) -> itsdangerous.URLSafeTimedSerializer:
    return itsdangerous.URLSafeTimedSerializer(access.console(request).clarion.secret_key, salt=_SALT)


def _token(request: Request, visit: access.Visit, key: str, asked: generate.Request, result: generate.Result) -> str:
    """What keeping needs, signed: the usable drafts, the origin to store, whose and which template they are, and
    a new template's name, category and department."""
    usable = [
        {"i": i, "name": d.name, "contents": d.check.contents}
        for i, d in enumerate(result.drafts)
        if d.status in USABLE
    ]
    found = {
        "op": visit.operator.actor,
        "page": key,
        "target": asked.save_as,
        "name": asked.name,
        "category": asked.category.value,
        "department": asked.department,
        "drafts": usable,
        "origin": result.origin,
    }
    return str(_signer(request).dumps(found))


def _kept(request: Request, visit: access.Visit, key: str, token: str) -> dict[str, Any]:
    refused = errors.InvalidInput(
        "generation: these drafts are too old or were not written for you and this template; draft again",
        details={"field": "generation"},
    )
    try:
        found = _signer(request).loads(token, max_age=KEEP_MAX_AGE)
    except itsdangerous.BadData:
        raise refused from None
    if not isinstance(found, dict) or found.get("op") != visit.operator.actor or found.get("page") != key:
        raise refused
    return found


# -- the routes --------------------------------------------------------------------------------------------------


async def _visit(request: Request) -> access.Visit:
    """An operator who writes templates (editor, admin): the API's rule for generating copy."""
    visit = await access.visit(request, roles.TEMPLATES)
    approval.require(visit.api_roles, approval.EDIT)
    return visit


@router.get("/templates/{key}/copy")
async def copy_page(request: Request, key: str) -> Response:
    visit = await _visit(request)
    row = await _row(request, key)
    return await _panel(request, visit, key, row, _defaults(row))


@router.post("/templates/{key}/copy")
async def draft_copy(request: Request, key: str) -> Response:
    """The drafts for the posted brief, each with its checks and rendered for users of the audience; a refused
    brief or a model that fails shows the form again with what was typed and why (nothing is saved either way)."""
    visit = await _visit(request)
    form = await access.form(request, visit.session)
    row = await _row(request, key)
    clarion = access.console(request).clarion
    try:
        target = _target(form, key)
        if row is None:
            _unused(target, await _latest(request, target))
        asked = _request(form, row)
        result = await generate.generate(clarion, asked, actor=visit.operator.actor, roles=visit.api_roles)
    except llm.ModelError as exc:
        return await _panel(request, visit, key, row, form, code=exc.status, failure=exc)
    except errors.InvalidInput as exc:
        if isinstance(exc, approval.Forbidden):
            raise
        return await _panel(request, visit, key, row, form, code=exc.status, error=exc)
    drafts = await _drafts(request, target, result)
    token = _token(request, visit, key, dataclasses.replace(asked, save_as=target), result)
    return await _panel(request, visit, key, row, form, result=result, drafts=drafts, token=token)


@router.post("/templates/{key}/copy/keep")
async def keep_drafts(request: Request, key: str) -> Response:
    """The ticked drafts saved as the template's next version, its variants with equal weights, submitted for
    review (``generate.keep``, as ``save_as``); the editor then shows the version waiting for its reviewers."""
    visit = await _visit(request)
    form = await access.form(request, visit.session)
    found = _kept(request, visit, key, form.get("generation", ""))
    chosen = [d for d in found["drafts"] if form.get(f"keep.{d['i']}")]
    if not chosen:
        raise errors.InvalidInput("keep: tick one or more of the drafts that passed", details={"field": "keep"})
    target = found["target"]
    row = await _latest(request, target)
    if key == pages_templates.NEW:
        _unused(target, row)
    elif row is None:
        raise errors.NotFound("template", target)
    base = {n: getattr(row, n) for n in schemas.TemplateIn.model_fields if hasattr(row, n)} if row else None
    saved = await generate.keep(
        access.console(request).clarion,
        target,
        [(d["name"], d["contents"]) for d in chosen],
        found["origin"],
        name=found["name"],
        category=model.Category(found["category"]),
        department=found["department"],
        base=base,
        field_name="keep",
        actor=visit.operator.actor,
        roles=visit.api_roles,
    )
    return access.see_other(f"/console/templates/{urllib.parse.quote(target)}?saved={saved['version']}")
