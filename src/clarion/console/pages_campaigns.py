"""The audiences and campaigns pages: the segment builder with its live count, ID-list uploads, and campaigns from
creation through the estimate, approval and the live run to the results. Every write calls the use case the API's
segment and campaign routes call (``segments.service``, ``campaigns.service``), with the operator's API roles, and
is audited under ``operator:<name>``; the fragments the page scripts fetch (the preview, the estimate, the
progress) are the same reads the API answers."""

from __future__ import annotations

import json
import re
import urllib.parse
import zoneinfo
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, cast

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from clarion.campaigns import lifecycle
from clarion.campaigns import service as campaigns
from clarion.console import access, overview, roles
from clarion.domain import approval, errors, timewindows
from clarion.segments import idlists
from clarion.segments import service as audiences
from clarion.store import segments as segment_store
from clarion.store import templates as template_store

router = APIRouter(include_in_schema=False)
SAMPLE = 10  # users shown beside the live count
AUDIENCE_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")  # as the segments API's paths take them
CAMPAIGN_KEY = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")  # as the campaigns API's paths take them
KINDS = ("user_id", "phone", "email")
SCHEDULES = ("now", "at", "cron")
FUNNEL = ("requested", "sent", "delivered", "opened", "clicked", "converted")
#: a campaign whose page keeps polling its progress: it may still change without anyone acting on it
LIVE = ("scheduled", "running")
FRAGMENT = "x-clarion-fragment"  # the header the page scripts send to get a fragment instead of a page


def _field(form: dict[str, str], name: str, pattern: re.Pattern[str], what: str) -> str:
    value = form.get(name, "").strip()
    if not pattern.match(value):
        raise errors.InvalidInput(f"{name}: {what}", details={"field": name})
    return value


def _json(raw: str, field: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise errors.InvalidInput(f"{field}: not valid JSON ({exc})", details={"field": field}) from None


def _actor(visit: access.Visit) -> approval.Actor:
    return approval.Actor(visit.operator.actor, visit.api_roles)


# -- audiences -----------------------------------------------------------------------------------------------


async def _audiences(request: Request, visit: access.Visit, code: int = 200, **context: Any) -> Response:
    """The audiences page: the segments with their counts now, the ID lists, the builder and the upload form."""
    clarion = access.console(request).clarion
    async with clarion.db.read() as conn:
        segments = await segment_store.list_segments(conn)
        lists = await segment_store.list_id_lists(conn)
    counts: dict[str, int | None] = {}
    for row in segments:
        try:
            counts[row.key] = await clarion.segments.count(await clarion.segments.segment(row.key))
        except errors.InvalidInput:  # e.g. an ID list it names was replaced by one of another kind
            counts[row.key] = None
    context.setdefault("key", "")
    context.setdefault("name", "")
    context.setdefault("conditions", "")
    context.setdefault("error", None)
    context.setdefault("saved", False)
    context.setdefault("report", None)
    return access.render(
        request,
        "audiences.html",
        visit,
        code,
        segments=segments,
        counts=counts,
        lists=lists,
        kinds=KINDS,
        may_edit=approval.may(visit.api_roles, approval.EDIT),
        **context,
    )


@router.get("/audiences")
async def audiences_page(request: Request, segment: str | None = None, saved: str | None = None) -> Response:
    visit = await access.visit(request, roles.AUDIENCES)
    if not segment:
        return await _audiences(request, visit)
    clarion = access.console(request).clarion
    async with clarion.db.read() as conn:
        row = await segment_store.get_segment(conn, segment[:128])
    if row is None:
        raise errors.NotFound("segment", segment)
    conditions = json.dumps(row.definition, ensure_ascii=False, indent=2)
    return await _audiences(request, visit, key=row.key, name=row.name or "", conditions=conditions, saved=saved == "1")


@router.get("/audiences/preview")
async def audience_preview(request: Request, conditions: str = "") -> Response:
    """The live count and a sample of the users an unsaved definition selects (``POST /v1/segments:count`` and
    ``/sample``'s reads), as a fragment; a definition that cannot be counted answers 422 naming the node."""
    visit = await access.visit(request, roles.AUDIENCES)
    clarion = access.console(request).clarion
    try:
        node = audiences.conditions_of({"conditions": _json(conditions, "conditions")})
        count = await clarion.segments.count(node)
        users = await audiences.sample_users(clarion, node, SAMPLE)
    except errors.InvalidInput as exc:
        return access.render(request, "audiences_preview.html", visit, exc.status, error=exc.message)
    return access.render(request, "audiences_preview.html", visit, error=None, count=count, users=users)


@router.post("/audiences/segments")
async def save_segment(request: Request) -> Response:
    visit = await access.visit(request, roles.AUDIENCES)
    form = await access.form(request, visit.session)
    key, name, raw = form.get("key", "").strip(), form.get("name", "").strip(), form.get("conditions", "")
    try:
        key = _field(form, "key", AUDIENCE_KEY, "1 to 128 letters, digits and _ . : -")
        body = {"name": name or None, "conditions": _json(raw, "conditions")}
        await audiences.save_segment(
            access.console(request).clarion, key, body, actor=visit.operator.actor, roles=visit.api_roles
        )
    except errors.InvalidInput as exc:
        return await _audiences(request, visit, exc.status, key=key, name=name, conditions=raw, error=exc.message)
    return access.see_other("/console/audiences?" + urllib.parse.urlencode({"segment": key, "saved": "1"}))


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(1 << 16):
        yield chunk


@router.post("/audiences/lists")
async def upload_list(request: Request) -> Response:
    """Store an uploaded ID list (``POST /v1/lists``'s use case) and report what matched no user. The page's
    script posts it with upload progress and shows the report fragment; without the script the whole page is
    answered with the report in it."""
    visit = await access.visit(request, roles.AUDIENCES)
    approval.require(visit.api_roles, approval.EDIT)  # refused before the upload is read, as the API does
    await request.form(max_files=1, max_fields=20)  # kept by the request: access.form reads the same parts
    form = await access.form(request, visit.session)
    file = (await request.form()).get("file")
    fragment = request.headers.get(FRAGMENT) == "1"
    clarion = access.console(request).clarion
    try:
        key = _field(form, "key", AUDIENCE_KEY, "1 to 128 letters, digits and _ . : -")
        kind = form.get("kind", "user_id")
        if kind not in KINDS:
            raise errors.InvalidInput(f"kind: one of {', '.join(KINDS)}", details={"field": "kind"})
        region = form.get("region", "").strip().upper() or None
        if region is not None and not re.fullmatch(r"[A-Z]{2}", region):
            raise errors.InvalidInput("region: two letters, e.g. CN", details={"field": "region"})
        if not isinstance(file, UploadFile) or not file.filename:
            raise errors.InvalidInput("file: choose a file to upload", details={"field": "file"})
        is_csv = file.filename.lower().endswith(".csv") or (file.content_type or "").startswith("text/csv")
        upload = await idlists.read(_chunks(file), cast(idlists.Kind, kind), is_csv=is_csv, region=region)
        report = await audiences.save_list(
            clarion,
            key,
            upload,
            name=form.get("name", "").strip() or None,
            actor=visit.operator.actor,
            roles=visit.api_roles,
        )
    except errors.InvalidInput as exc:
        if fragment:
            return access.render(request, "audiences_upload.html", visit, exc.status, error=exc.message, report=None)
        return await _audiences(request, visit, exc.status, error=exc.message)
    finally:
        if isinstance(file, UploadFile):
            await file.close()
    report = {**report, "key": key}
    code = 201 if report["created"] else 200
    if fragment:
        return access.render(request, "audiences_upload.html", visit, code, error=None, report=report)
    return await _audiences(request, visit, code, report=report)


# -- campaigns -----------------------------------------------------------------------------------------------


async def _campaigns(request: Request, visit: access.Visit, code: int = 200, **context: Any) -> Response:
    """The campaigns list with the form that creates one (its templates, segments and ID lists to choose from)."""
    clarion = access.console(request).clarion
    listed = await campaigns.page(clarion, limit=100, after=context.pop("cursor", None))
    async with clarion.db.read() as conn:
        templates = await template_store.template_rows(conn)
        segments = await segment_store.list_segments(conn)
        lists = await segment_store.list_id_lists(conn)
    context.setdefault("error", None)
    context.setdefault("form", {})
    return access.render(
        request,
        "campaigns.html",
        visit,
        code,
        campaigns=listed["campaigns"],
        next_cursor=listed["next_cursor"],
        templates=templates,
        segments=segments,
        lists=lists,
        schedules=SCHEDULES,
        may_edit=approval.may(visit.api_roles, approval.EDIT),
        **context,
    )


@router.get("/campaigns")
async def campaigns_page(request: Request, cursor: str | None = None) -> Response:
    visit = await access.visit(request, roles.CAMPAIGNS)
    return await _campaigns(request, visit, cursor=cursor[:128] if cursor else None)


def _schedule(form: dict[str, str]) -> Any:
    """The schedule a create form asks for: now, at a local time in a time zone, or a cron in a time zone."""
    kind = form.get("schedule", "now")
    if kind not in SCHEDULES:
        raise errors.InvalidInput(f"schedule: one of {', '.join(SCHEDULES)}", details={"field": "schedule"})
    if kind == "now":
        return "now"
    zone = form.get("timezone", "").strip() or "UTC"
    try:
        timewindows.check_zone(zone)
    except ValueError:
        raise errors.InvalidInput(
            "timezone: an IANA time zone, e.g. Asia/Shanghai", details={"field": "timezone"}
        ) from None
    if kind == "cron":
        return {"kind": "cron", "cron": form.get("cron", "").strip(), "timezone": zone}
    try:
        local = datetime.fromisoformat(form.get("at", "").strip())
    except ValueError:
        raise errors.InvalidInput("at: a date and time, e.g. 2026-05-01T10:00", details={"field": "at"}) from None
    return {"kind": "at", "at": local.replace(tzinfo=zoneinfo.ZoneInfo(zone)).isoformat()}


def _definition(form: dict[str, str]) -> dict[str, Any]:
    """The ``PUT /v1/campaigns/{key}`` body a create form stands for (``campaigns.definition`` checks it)."""
    audience = {k: form[k].strip() for k in ("segment", "list") if form.get(k, "").strip()}
    body: dict[str, Any] = {"template": form.get("template", ""), "audience": audience, "schedule": _schedule(form)}
    if form.get("name", "").strip():
        body["name"] = form["name"].strip()
    if form.get("rate", "").strip():
        try:
            body["rate"] = float(form["rate"])
        except ValueError:
            raise errors.InvalidInput("rate: messages per second, a number", details={"field": "rate"}) from None
    return body


@router.post("/campaigns")
async def create_campaign(request: Request) -> Response:
    visit = await access.visit(request, roles.CAMPAIGNS)
    form = await access.form(request, visit.session)
    try:
        key = _field(form, "key", CAMPAIGN_KEY, "1 to 128 letters, digits and _ . : @ -")
        await campaigns.save(access.console(request).clarion, key, _definition(form), _actor(visit))
    except errors.InvalidInput as exc:
        return await _campaigns(request, visit, exc.status, error=exc.message, form=form)
    return access.see_other(f"/console/campaigns/{urllib.parse.quote(key)}")


def _offered(visit: access.Visit, shown: dict[str, Any]) -> list[str]:
    """The lifecycle actions this operator may take on the campaign now, as ``lifecycle.decide`` rules them (a
    rejection is offered even though it still needs its comment)."""
    actor, status = _actor(visit), lifecycle.Status(shown["status"])
    running = shown["run"] is not None and shown["run"]["status"] in ("running", "paused")
    offered = []
    for action in lifecycle.ACTIONS:
        decided = lifecycle.decide(action, status, actor, author=shown["author"], has_run=running)
        if isinstance(decided, lifecycle.Move) or decided.code == "comment_required":
            offered.append(action)
    return offered


async def _campaign(request: Request, visit: access.Visit, key: str, code: int = 200, **context: Any) -> Response:
    clarion = access.console(request).clarion
    shown = await campaigns.show(clarion, key)
    results = await campaigns.funnel(clarion, key) if shown["runs"] else None
    context.setdefault("error", None)
    return access.render(
        request,
        "campaigns_detail.html",
        visit,
        code,
        campaign=shown,
        run=shown["run"],
        live=_live(shown),
        offered=_offered(visit, shown),
        results=results,
        funnel=overview.bars({s: results["stages"].get(s, 0) for s in FUNNEL}) if results else [],
        **context,
    )


def _live(shown: dict[str, Any]) -> bool:
    """Whether the campaign may still move without an operator: it is due or running, or its messages are
    still waiting to be sent."""
    run = shown["run"]
    return shown["status"] in LIVE or (run is not None and run.get("queued", 0) > 0)


@router.get("/campaigns/{key}")
async def campaign_page(request: Request, key: str) -> Response:
    visit = await access.visit(request, roles.CAMPAIGNS)
    return await _campaign(request, visit, key[:128])


@router.get("/campaigns/{key}/progress")
async def campaign_progress(request: Request, key: str) -> Response:
    """The latest run's progress as a fragment (what ``GET /v1/campaigns/{key}`` shows as ``run``); the page's
    script polls it while the campaign is live."""
    visit = await access.visit(request, roles.CAMPAIGNS)
    shown = await campaigns.show(access.console(request).clarion, key[:128])
    return access.render(request, "campaigns_progress.html", visit, campaign=shown, run=shown["run"], live=_live(shown))


@router.get("/campaigns/{key}/estimate")
async def campaign_estimate(request: Request, key: str) -> Response:
    """The dry run (``POST /v1/campaigns/{key}/estimate``) as a fragment: reach, what each policy removes, cost."""
    visit = await access.visit(request, roles.CAMPAIGNS)
    try:
        found = await campaigns.estimate(access.console(request).clarion, key[:128])
    except errors.InvalidInput as exc:
        return access.render(request, "campaigns_estimate.html", visit, exc.status, error=exc.message)
    return access.render(request, "campaigns_estimate.html", visit, error=None, estimate=found)


@router.post("/campaigns/{key}/{action}")
async def campaign_action(request: Request, key: str, action: str) -> Response:
    visit = await access.visit(request, roles.CAMPAIGNS)
    form = await access.form(request, visit.session)
    key = key[:128]
    try:
        if action not in lifecycle.ACTIONS:
            raise errors.InvalidInput(f"action: one of {', '.join(lifecycle.ACTIONS)}", details={"field": "action"})
        comment = form.get("comment", "").strip() or None
        if comment is not None and len(comment) > 2000:
            raise errors.InvalidInput("comment: at most 2000 characters", details={"field": "comment"})
        await campaigns.act(access.console(request).clarion, key, action, _actor(visit), comment=comment)
    except errors.NotFound:
        raise
    except errors.InvalidInput as exc:
        return await _campaign(request, visit, key, exc.status, error=exc.message)
    return access.see_other(f"/console/campaigns/{urllib.parse.quote(key)}")
