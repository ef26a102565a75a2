"""Policy configuration: settings, frequency caps, keyword lists, suppressions.

Configuration documents (settings, caps, keyword lists) are taken as plain JSON and validated by their domain
``from_json``, so the API accepts exactly what the stored form can hold and errors name the offending field
(``{"error": {"code": "invalid_policy", "details": {"field": ...}}}``). Every write forgets the cached
configuration, so this process applies it to the next message; other processes within the catalog's TTL.

Changing settings, caps and keyword lists, and removing a suppression (which lets messages reach someone who
asked to stop), needs the ``admin`` role; recording a suppression needs ``sender`` or ``admin`` (a business
system reporting an unsubscribe or a complaint). Reading needs only a valid key."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Body, Path, Query, Response
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.api import deps, problems, schemas, views
from clarion.domain import approval, errors, phones
from clarion.domain.policy import config
from clarion.pipeline import configuring
from clarion.store import audit as audit_log
from clarion.store import policies

router = APIRouter(prefix="/v1", tags=["policies"], dependencies=deps.AUTH)
KeyPath = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")
Document = Body(..., description="a JSON object; see the fields in the endpoint's description")


# -- settings ------------------------------------------------------------------------------------------------


@router.get("/policies/settings", response_model=views.PolicySettings)
async def get_settings(clarion: deps.Services) -> dict[str, Any]:
    """The operator's policy settings (the defaults until a PUT stores some)."""
    async with clarion.db.read() as conn:
        return (await policies.load_settings(conn)).to_json()


@router.put("/policies/settings", response_model=views.PolicySettings, responses=problems.answers(403))
async def put_settings(
    clarion: deps.Services, caller: deps.Caller, body: schemas.Document = Document
) -> dict[str, Any]:
    """Change some settings (``admin``) — 403 ``forbidden`` otherwise. Each top-level field given replaces the
    stored one (``send_windows`` and ``quiet_hours`` are whole tables: a category left out has no window, and
    quiet hours ``defer``), except ``enabled``, whose switches change one by one. Fields not given keep their
    stored values. Returns the whole document as stored.

    Fields: ``default_timezone`` (IANA name), ``marketing_consent`` (``opt_out``/``opt_in``),
    ``send_windows`` ({category: "HH:MM-HH:MM"}), ``quiet_hours`` ({category: defer|drop|ignore}),
    ``dedup_seconds``, ``safety_valve`` ({limit, window: {unit: day|week} or {seconds}} or null) and
    ``enabled`` ({policy: bool})."""
    approval.require(caller.roles, approval.ADMINISTER)
    return (await configuring.update_settings(clarion, body, actor=caller.name)).to_json()


# -- frequency caps ------------------------------------------------------------------------------------------


@router.put(
    "/policies/caps/{key}", response_model=views.Cap, responses=views.created(views.Cap) | problems.answers(403)
)
async def put_cap(
    clarion: deps.Services,
    caller: deps.Caller,
    response: Response,
    key: str = KeyPath,
    body: schemas.Document = Document,
) -> dict[str, Any]:
    """Create or replace a frequency cap: at most ``limit`` deliveries per user per ``window``
    (``{"unit": "day"|"week"}`` in the user's calendar, or ``{"seconds": n}`` rolling), counting only
    ``channel`` and/or ``category`` when given, each department apart with ``per_department``. Optional:
    ``enabled`` (default true), ``description``. Needs ``admin`` — 403 ``forbidden`` otherwise."""
    approval.require(caller.roles, approval.ADMINISTER)
    cap = config.Cap.from_json(key, body)
    created = await configuring.save_cap(clarion, cap, actor=caller.name)
    response.status_code = 201 if created else 200
    return cap.to_json()


@router.get("/policies/caps/{key}", response_model=views.Cap, responses=problems.answers(404))
async def get_cap(clarion: deps.Services, key: str = KeyPath) -> dict[str, Any]:
    cap = await deps.read_or_404(clarion, policies.get_cap, "cap", key)
    return cap.to_json()


@router.get("/policies/caps", response_model=views.Caps)
async def list_caps(clarion: deps.Services) -> dict[str, Any]:
    """Every cap, disabled ones included, by key."""
    async with clarion.db.read() as conn:
        return {"caps": [cap.to_json() for cap in await policies.load_caps(conn)]}


@router.delete("/policies/caps/{key}", status_code=204, responses=problems.answers(403, 404))
async def delete_cap(clarion: deps.Services, caller: deps.Caller, key: str = KeyPath) -> Response:
    """Delete a frequency cap (``admin``) — 403 ``forbidden`` otherwise."""
    approval.require(caller.roles, approval.ADMINISTER)
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        return await audit_log.delete_recorded(
            conn,
            key,
            read=policies.get_cap,
            delete=policies.delete_cap,
            summary=configuring.cap_summary,
            kind="cap",
            actor=caller.name,
            at=now,
        )

    if not await clarion.db.write(job):
        raise errors.NotFound("cap", key)
    clarion.catalog.invalidate()
    return Response(status_code=204)


# -- keyword lists -------------------------------------------------------------------------------------------


@router.put(
    "/keyword-lists/{key}",
    tags=["keywords"],
    response_model=views.KeywordList,
    responses=views.created(views.KeywordList) | problems.answers(403),
)
async def put_keyword_list(
    clarion: deps.Services,
    caller: deps.Caller,
    response: Response,
    key: str = KeyPath,
    body: schemas.Document = Document,
) -> dict[str, Any]:
    """Create or replace a keyword list: ``action`` (``block`` filters a message containing a word, ``mask``
    replaces the words with ``***``), ``words`` (matched anywhere, case-insensitively unless
    ``case_sensitive``), ``enabled`` (default true), ``description``. Every replacement bumps ``version``.
    Needs ``admin`` — 403 ``forbidden`` otherwise."""
    approval.require(caller.roles, approval.ADMINISTER)
    spec = policies.KeywordListSpec.from_json(key, body)
    stored = await configuring.save_keyword_list(clarion, spec, actor=caller.name)
    response.status_code = 201 if stored.version == 1 else 200
    return configuring.keyword_list_json(stored)


@router.get(
    "/keyword-lists/{key}", tags=["keywords"], response_model=views.KeywordList, responses=problems.answers(404)
)
async def get_keyword_list(clarion: deps.Services, key: str = KeyPath) -> dict[str, Any]:
    return configuring.keyword_list_json(
        await deps.read_or_404(clarion, policies.get_keyword_list, "keyword list", key)
    )


@router.get("/keyword-lists", tags=["keywords"], response_model=views.KeywordLists)
async def list_keyword_lists(clarion: deps.Services) -> dict[str, Any]:
    """Every list by key, with ``word_count`` but without its words (a list can hold 100,000): GET the list
    for them."""
    async with clarion.db.read() as conn:
        specs = await policies.keyword_list_specs(conn)
    return {"keyword_lists": [configuring.keyword_list_json(spec, words=False) for spec in specs]}


@router.delete("/keyword-lists/{key}", status_code=204, tags=["keywords"], responses=problems.answers(403, 404))
async def delete_keyword_list(clarion: deps.Services, caller: deps.Caller, key: str = KeyPath) -> Response:
    """Delete a keyword list (``admin``) — 403 ``forbidden`` otherwise."""
    approval.require(caller.roles, approval.ADMINISTER)
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        return await audit_log.delete_recorded(
            conn,
            key,
            read=policies.get_keyword_list,
            delete=policies.delete_keyword_list,
            summary=configuring.keyword_list_summary,
            kind="keyword_list",
            actor=caller.name,
            at=now,
        )

    if not await clarion.db.write(job):
        raise errors.NotFound("keyword list", key)
    clarion.catalog.invalidate()
    return Response(status_code=204)


# -- suppressions --------------------------------------------------------------------------------------------


@router.post(
    "/suppressions",
    tags=["suppressions"],
    response_model=views.Suppression,
    responses=views.created(views.Suppression) | problems.answers(403),
)
async def add_suppression(
    body: schemas.SuppressionIn, clarion: deps.Services, caller: deps.Caller, response: Response
) -> dict[str, Any]:
    """Stop sending to a user or an address (e-mail compared case-insensitively), on every channel and
    category or only on ``channel``/``category`` (``admin``/``sender``: a business system recording an
    unsubscribe or a complaint) — 403 ``forbidden`` otherwise. With both ``user_id`` and ``address`` the entry
    names the user. Recording one that already exists (same target, channel and category) returns it with 200."""
    approval.require(caller.roles, approval.USER_DATA)

    async def job(conn: AsyncConnection) -> tuple[config.Suppression, bool]:
        return await policies.add_suppression(
            conn,
            user_id=body.user_id,
            address=body.address,
            channel=body.channel,
            category=body.category,
            reason=body.reason,
            source=body.source,
            now=datetime.now(UTC),
        )

    suppression, created = await clarion.db.write(job)
    clarion.catalog.invalidate()
    response.status_code = 201 if created else 200
    return suppression.to_json()


@router.get("/suppressions", tags=["suppressions"], response_model=views.Suppressions)
async def list_suppressions(
    clarion: deps.Services,
    user_id: str | None = Query(default=None, min_length=1, max_length=128),
    address: str | None = Query(default=None, min_length=1, max_length=320),
    limit: int = Query(default=100, ge=1, le=1000),
    after: str | None = Query(default=None, max_length=32, description="``next`` of the previous page"),
) -> dict[str, Any]:
    """Suppressions oldest first, those of ``user_id`` and/or ``address`` when given (a phone as users hold it:
    ``13912345678`` is looked up as ``+86…`` under ``CLARION_DEFAULT_REGION``); ``next`` is the cursor for the
    following page (null on the last)."""
    if address is not None and phones.looks_like_phone(address):
        try:
            address = phones.normalize(address)
        except ValueError as exc:
            raise errors.InvalidInput(f"address: {exc}", details=[{"field": "address", "message": str(exc)}]) from None
    async with clarion.db.read() as conn:
        found = await policies.list_suppressions(conn, user_id=user_id, address=address, limit=limit + 1, after=after)
    page = found[:limit]
    return {
        "suppressions": [s.to_json() for s in page],
        "next": page[-1].id if len(found) > limit else None,
    }


@router.delete(
    "/suppressions/{suppression_id}", status_code=204, tags=["suppressions"], responses=problems.answers(403, 404)
)
async def delete_suppression(
    clarion: deps.Services,
    caller: deps.Caller,
    suppression_id: str = Path(min_length=1, max_length=32),
    reason: str | None = Query(default=None, max_length=500, description="why it is lifted, for the audit log"),
) -> Response:
    """Remove a suppression, so messages reach the user or address again (``admin``) — 403 ``forbidden``
    otherwise. The audit log keeps what was lifted (its target, channel, category, reason and source) and
    ``reason``, why."""
    approval.require(caller.roles, approval.ADMINISTER)
    await configuring.lift_suppression(clarion, suppression_id, reason=reason, actor=caller.name)
    return Response(status_code=204)
