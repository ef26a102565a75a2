"""The configuration pages: provider accounts and routes, policies and suppressions, the audit log, API keys, and
the operator's own account. Every write calls the use case the API's routes call, with the same roles and audit;
each page parses its form into what those use cases take and renders what they answer."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

import pydantic
from fastapi import APIRouter, Request
from fastapi.responses import Response

from clarion import bootstrap
from clarion.api import schemas
from clarion.api.routes import api_keys as api_keys_api
from clarion.api.routes import routes as routes_api
from clarion.channels import base, registry
from clarion.console import access, operators, roles
from clarion.domain import approval, errors, model, phones
from clarion.domain.policy import config
from clarion.pipeline import configuring, provisioning
from clarion.store import policies, records
from clarion.store import routes as store_routes
from clarion.store import tables as t

router = APIRouter(include_in_schema=False)
KEY = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
CHANNELS = tuple(c.value for c in model.Channel)
CATEGORIES = tuple(c.value for c in model.Category)
AUDIT_PAGE = 50
SUPPRESSION_PAGE = 50
Schema = TypeVar("Schema", bound=pydantic.BaseModel)


def _key(value: str, field: str) -> str:
    if not KEY.match(value):
        raise errors.InvalidInput(f"{field}: 1 to 128 letters, digits or _ . : @ -", details={"field": field})
    return value


def _json_object(text: str, field: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise errors.InvalidInput(
            f"{field}: not JSON ({exc.msg}, line {exc.lineno})", details={"field": field}
        ) from None
    if not isinstance(value, dict):
        raise errors.InvalidInput(f"{field}: must be a JSON object", details={"field": field})
    return value


def _valid(schema: type[Schema], data: dict[str, Any]) -> Schema:
    """``data`` as the API's own schema validates it; the first error names its field."""
    try:
        return schema.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(map(str, first["loc"])) or "form"
        raise errors.InvalidInput(f"{field}: {first['msg']}", details={"field": field}) from None


def _number(value: str, field: str) -> int | None:
    if not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise errors.InvalidInput(f"{field}: a whole number", details={"field": field}) from None


# -- providers and routes (admin) ----------------------------------------------------------------------------


async def _secrets(clarion: bootstrap.Clarion, kind: str, name: str | None) -> list[tuple[str, bool]]:
    """The secret fields of ``kind``, each with whether account ``name`` (of that kind) has it stored."""
    row = await records.get_one(clarion.db, t.providers, name) if name else None
    shown = registry.public_config(row.kind, row.config) if row is not None and row.kind == kind else {}
    return [(f, bool(shown.get(f))) for f in provisioning.secret_fields(kind)]


@router.get("/providers")
async def providers_page(request: Request, route: str = "") -> Response:
    """The accounts with their health, the routes, and the forms; ``route`` fills the route form with that
    route, to change it."""
    visit = await access.visit(request, roles.PROVIDERS)
    clarion = access.console(request).clarion
    accounts = [provisioning.provider_json(r) for r in await records.list_all(clarion.db, t.providers)]
    names = sorted({*clarion.providers.builtins, *(a["name"] for a in accounts)})
    health = {n: await provisioning.provider_health(clarion, n) for n in names}
    routes = [store_routes.route_json(r) for r in await records.list_all(clarion.db, t.routes)]
    editing = next((r for r in routes if r["key"] == route), None)
    kind = sorted(registry.KINDS)[0]
    return access.render(
        request,
        "providers.html",
        visit,
        accounts=accounts,
        builtins=sorted(clarion.providers.builtins),
        health=health,
        routes=routes,
        editing=editing,
        kinds=sorted(registry.KINDS),
        channels=CHANNELS,
        secrets=await _secrets(clarion, kind, None),
        saved=request.query_params.get("saved"),
    )


@router.get("/provider-secrets")
async def provider_secrets(request: Request, kind: str, name: str = "") -> Response:
    """The secret inputs of a kind (a fragment, swapped in when the form's kind changes)."""
    visit = await access.visit(request, roles.PROVIDERS)
    if kind not in registry.KINDS:
        raise errors.InvalidInput(f"kind: unknown provider kind {kind!r}", details={"field": "kind"})
    secrets = await _secrets(access.console(request).clarion, kind, name or None)
    return access.render(request, "providers_secrets.html", visit, secrets=secrets)


async def _edit_page(request: Request, visit: access.Visit, name: str, probe: dict[str, Any] | None) -> Response:
    clarion = access.console(request).clarion
    row = await records.get_one(clarion.db, t.providers, name)
    if row is None:
        raise errors.NotFound("provider", name)
    account = provisioning.provider_json(row)
    secrets = await _secrets(clarion, row.kind, name)
    public = {k: v for k, v in account["config"].items() if k not in dict(secrets)}
    return access.render(
        request,
        "providers_edit.html",
        visit,
        account=account,
        config_text=json.dumps(public, ensure_ascii=False, indent=2),
        kinds=sorted(registry.KINDS),
        channels=CHANNELS,
        secrets=secrets,
        probe=probe,
    )


@router.get("/providers/{name}")
async def provider_page(request: Request, name: str) -> Response:
    visit = await access.visit(request, roles.PROVIDERS)
    return await _edit_page(request, visit, name, None)


@router.post("/providers")
async def save_provider(request: Request) -> Response:
    """Create or change an account. Secrets are write-only: a secret input left blank keeps the stored one (it is
    sent to the use case masked, which stands for "keep"), one filled in replaces it."""
    visit = await access.visit(request, roles.PROVIDERS)
    form = await access.form(request, visit.session)
    approval.require(visit.api_roles, approval.ADMINISTER)
    clarion = access.console(request).clarion
    name, kind = _key(form.get("name", "").strip(), "name"), form.get("kind", "")
    if form.get("channel") not in CHANNELS:
        raise errors.InvalidInput(f"channel: one of {', '.join(CHANNELS)}", details={"field": "channel"})
    provider_config = _json_object(form.get("config", ""), "config")
    for field, stored in await _secrets(clarion, kind, name):
        given = form.get(f"secret.{field}", "")
        if given:
            provider_config[field] = given
        elif stored and field not in provider_config:
            provider_config[field] = base.MASK
    await provisioning.save_provider(
        clarion,
        name,
        kind=kind,
        channel=model.Channel(form["channel"]),
        provider_config=provider_config,
        enabled=form.get("enabled") == "on",
        actor=visit.operator.actor,
    )
    return access.see_other(f"/console/providers?saved={name}")


@router.post("/providers/{name}/test")
async def test_provider(request: Request, name: str) -> Response:
    """Send a probe and show the vendor's answer on the account's page (nothing is stored but the audit entry)."""
    visit = await access.visit(request, roles.PROVIDERS)
    form = await access.form(request, visit.session)
    approval.require(visit.api_roles, approval.ADMINISTER)
    address = form.get("address", "").strip()
    if not address:
        raise errors.InvalidInput("address: a probe needs an address", details={"field": "address"})
    clarion = access.console(request).clarion
    answer = await provisioning.probe_provider(
        clarion, name, address=address, content=None, channel=None, actor=visit.operator.actor
    )
    return await _edit_page(request, visit, name, answer)


@router.post("/routes")
async def save_route(request: Request) -> Response:
    """Create or replace a route from its form: providers as ``name:weight, …``, failover as ``name, …``."""
    visit = await access.visit(request, roles.PROVIDERS)
    form = await access.form(request, visit.session)
    approval.require(visit.api_roles, approval.ADMINISTER)
    key = _key(form.get("key", "").strip(), "key")
    listed = []
    for part in filter(None, (p.strip() for p in form.get("providers", "").split(","))):
        provider, _, weight = part.partition(":")
        listed.append({"name": provider.strip(), "weight": _number(weight, "providers") if weight else 1})
    body = _valid(
        routes_api.RouteIn,
        {
            "channel": form.get("channel", ""),
            "match": _json_object(form.get("match", ""), "match"),
            "providers": listed,
            "failover": [p.strip() for p in form.get("failover", "").split(",") if p.strip()],
            "enabled": form.get("enabled") == "on",
        },
    )
    clarion = access.console(request).clarion
    await provisioning.save_route(clarion, key, routes_api.change_of(body), actor=visit.operator.actor)
    return access.see_other(f"/console/providers?saved={key}")


# -- policies (admin, editor) --------------------------------------------------------------------------------


@router.get("/policies")
async def policies_page(
    request: Request, text: str = "", user_id: str = "", address: str = "", after: str | None = None
) -> Response:
    visit = await access.visit(request, roles.POLICIES)
    clarion = access.console(request).clarion
    user_id, address, text = user_id.strip()[:128], address.strip()[:320], text[:10_000]
    try:  # a phone as users hold it: 13912345678 is looked up as +86…
        wanted = phones.normalize(address) if address and phones.looks_like_phone(address) else address
    except ValueError as exc:
        raise errors.InvalidInput(f"address: {exc}", details={"field": "address"}) from None
    async with clarion.db.read() as conn:
        settings = (await policies.load_settings(conn)).to_json()
        caps = [c.to_json() for c in await policies.load_caps(conn)]
        lists = [configuring.keyword_list_json(s, words=False) for s in await policies.keyword_list_specs(conn)]
        found = await policies.list_suppressions(
            conn,
            user_id=user_id or None,
            address=wanted or None,
            limit=SUPPRESSION_PAGE + 1,
            after=after[:32] if after else None,
        )
    return access.render(
        request,
        "policies.html",
        visit,
        settings=settings,
        caps=caps,
        keyword_lists=lists,
        text=text,
        screening=await configuring.screen_text(clarion, text) if text else None,
        suppressions=[s.to_json() for s in found[:SUPPRESSION_PAGE]],
        next_after=found[SUPPRESSION_PAGE - 1].id if len(found) > SUPPRESSION_PAGE else None,
        user_id=user_id,
        address=address,
        categories=CATEGORIES,
        channels=CHANNELS,
        behaviours=config.QUIET_BEHAVIOURS,
        may_administer=approval.may(visit.api_roles, approval.ADMINISTER),
        may_suppress=approval.may(visit.api_roles, approval.USER_DATA),
        done=request.query_params.get("done"),
    )


@router.get("/policies/keyword-test")
async def keyword_test(request: Request, text: str = "") -> Response:
    """What the keyword lists do to a text (a fragment, fetched as the operator tests)."""
    visit = await access.visit(request, roles.POLICIES)
    screening = await configuring.screen_text(access.console(request).clarion, text[:10_000]) if text else None
    return access.render(request, "policies_keywords.html", visit, text=text, screening=screening)


def _window(form: dict[str, str], prefix: str) -> dict[str, Any]:
    unit = form.get(f"{prefix}_unit", "")
    if unit in ("day", "week"):
        return {"unit": unit}
    return {"seconds": _number(form.get(f"{prefix}_seconds", ""), f"{prefix}_seconds")}


@router.post("/policies/settings")
async def save_settings(request: Request) -> Response:
    """Sending windows and quiet hours by category, the dedup window, the default zone and the safety valve."""
    visit = await access.visit(request, roles.POLICIES)
    form = await access.form(request, visit.session)
    approval.require(visit.api_roles, approval.ADMINISTER)
    limit = _number(form.get("valve_limit", ""), "valve_limit")
    change = {
        "default_timezone": form.get("default_timezone", "").strip(),
        "send_windows": {c: form[f"window.{c}"].strip() for c in CATEGORIES if form.get(f"window.{c}", "").strip()},
        "quiet_hours": {c: form[f"quiet.{c}"] for c in CATEGORIES if form.get(f"quiet.{c}")},
        "dedup_seconds": _number(form.get("dedup_seconds", ""), "dedup_seconds"),
        "safety_valve": None if limit is None else {"limit": limit, "window": _window(form, "valve")},
    }
    await configuring.update_settings(access.console(request).clarion, change, actor=visit.operator.actor)
    return access.see_other("/console/policies?done=settings")


@router.post("/policies/caps")
async def save_cap(request: Request) -> Response:
    visit = await access.visit(request, roles.POLICIES)
    form = await access.form(request, visit.session)
    approval.require(visit.api_roles, approval.ADMINISTER)
    document: dict[str, Any] = {
        "limit": _number(form.get("limit", ""), "limit"),
        "window": _window(form, "window"),
        "enabled": form.get("enabled") == "on",
    }
    document.update({f: form[f] for f in ("channel", "category") if form.get(f)})
    cap = config.Cap.from_json(_key(form.get("key", "").strip(), "key"), document)
    await configuring.save_cap(access.console(request).clarion, cap, actor=visit.operator.actor)
    return access.see_other("/console/policies?done=cap")


@router.post("/policies/keyword-lists")
async def save_keyword_list(request: Request) -> Response:
    """A keyword list from its form: one word a line."""
    visit = await access.visit(request, roles.POLICIES)
    form = await access.form(request, visit.session)
    approval.require(visit.api_roles, approval.ADMINISTER)
    document = {
        "action": form.get("action", ""),
        "words": form.get("words", "").splitlines(),
        "enabled": form.get("enabled") == "on",
        "case_sensitive": form.get("case_sensitive") == "on",
    }
    spec = policies.KeywordListSpec.from_json(_key(form.get("key", "").strip(), "key"), document)
    await configuring.save_keyword_list(access.console(request).clarion, spec, actor=visit.operator.actor)
    return access.see_other("/console/policies?done=keywords")


@router.post("/policies/suppressions")
async def add_suppression(request: Request) -> Response:
    visit = await access.visit(request, roles.POLICIES)
    form = await access.form(request, visit.session)
    approval.require(visit.api_roles, approval.USER_DATA)
    body = _valid(
        schemas.SuppressionIn,
        {
            "user_id": form.get("user_id", "").strip() or None,
            "address": form.get("address", "").strip() or None,
            "channel": form.get("channel") or None,
            "category": form.get("category") or None,
            "reason": form.get("reason", "").strip() or None,
            "source": "admin",
        },
    )
    await configuring.add_suppression(
        access.console(request).clarion,
        user_id=body.user_id,
        address=body.address,
        channel=body.channel,
        category=body.category,
        reason=body.reason,
        source=body.source,
        actor=visit.operator.actor,
    )
    return access.see_other("/console/policies?done=suppressed#suppressions")


@router.post("/policies/suppressions/{suppression_id}/lift")
async def lift_suppression(request: Request, suppression_id: str) -> Response:
    """Lift a suppression, with the reason the audit log keeps (required: lifting lets messages reach someone who
    asked to stop)."""
    visit = await access.visit(request, roles.POLICIES)
    form = await access.form(request, visit.session)
    approval.require(visit.api_roles, approval.ADMINISTER)
    reason = form.get("reason", "").strip()
    if not reason or len(reason) > 500:
        raise errors.InvalidInput("reason: between 1 and 500 characters", details={"field": "reason"})
    clarion = access.console(request).clarion
    await configuring.lift_suppression(clarion, suppression_id[:32], reason=reason, actor=visit.operator.actor)
    return access.see_other("/console/policies?done=lifted#suppressions")


# -- a user's preferences (from the send record) ---------------------------------------------------------------


def _may_edit_preferences(visit: access.Visit) -> bool:
    """The API's ``sender``/``admin`` right over user data; ``support`` only reads them (its console rights stop
    at re-sends and suppressions)."""
    return visit.operator.role != roles.SUPPORT and approval.may(visit.api_roles, approval.USER_DATA)


@router.get("/users/{user_id}/preferences")
async def preferences_page(request: Request, user_id: str) -> Response:
    visit = await access.visit(request, roles.RECORD)
    row = await records.get_one(access.console(request).clarion.db, t.users, user_id[:128])
    if row is None:
        raise errors.NotFound("user", user_id)
    chosen = config.Preferences.from_json(row.preferences) if row.preferences else config.NO_PREFERENCES
    return access.render(
        request,
        "policies_preferences.html",
        visit,
        user_id=row.user_id,
        preferences=chosen,
        categories=tuple(model.Category),
        channels=tuple(model.Channel),
        may_edit=_may_edit_preferences(visit),
        saved=request.query_params.get("saved") == "1",
    )


@router.post("/users/{user_id}/preferences")
async def save_preferences(request: Request, user_id: str) -> Response:
    """The whole preferences document from the form's switches: a channel, a category, or a category on one
    channel left unticked is off; marketing consent yes, no or not given; a do-not-disturb period."""
    visit = await access.visit(request, roles.RECORD)
    form = await access.form(request, visit.session)
    if not _may_edit_preferences(visit):
        raise approval.Forbidden(
            f"the role {visit.operator.role!r} may not change a user's preferences", code="forbidden"
        )
    categories: dict[str, Any] = {}
    for category in CATEGORIES:
        if form.get(f"category.{category}") != "on":
            categories[category] = False
            continue
        off = {c: False for c in CHANNELS if form.get(f"pair.{category}.{c}") != "on"}
        if off:
            categories[category] = {"channels": off}
    consent = {"yes": True, "no": False}.get(form.get("marketing_consent", ""))
    document = {
        "channels": {c: False for c in CHANNELS if form.get(f"channel.{c}") != "on"},
        "categories": categories,
        "marketing_consent": consent,
        "do_not_disturb": form.get("do_not_disturb", "").strip() or None,
    }
    chosen = config.Preferences.from_json(document)
    clarion = access.console(request).clarion
    await configuring.save_preferences(clarion, user_id[:128], chosen, actor=visit.operator.actor)
    return access.see_other(f"/console/users/{user_id}/preferences?saved=1")


# -- audit log (admin) ---------------------------------------------------------------------------------------


@router.get("/audit")
async def audit_page(
    request: Request, actor: str = "", action: str = "", subject: str = "", after: str = ""
) -> Response:
    visit = await access.visit(request, roles.AUDIT)
    cursor = _number(after, "after")
    if cursor is not None and cursor < 1:
        raise errors.InvalidInput("after: a positive number", details={"field": "after"})
    filters = {"actor": actor.strip()[:128], "action": action.strip()[:40], "subject": subject.strip()[:300]}
    found = await configuring.audit_page(
        access.console(request).clarion,
        subject=filters["subject"] or None,
        actor=filters["actor"] or None,
        action=filters["action"] or None,
        limit=AUDIT_PAGE,
        after=cursor,
    )
    return access.render(
        request, "audit.html", visit, entries=found["entries"], next_cursor=found["next_cursor"], filters=filters
    )


# -- API keys (admin) ----------------------------------------------------------------------------------------


async def _keys_page(request: Request, visit: access.Visit, issued: Any = None, code: int = 200) -> Response:
    keys = await access.console(request).clarion.keys.described()
    return access.render(request, "api_keys.html", visit, code, keys=keys, roles=approval.ROLES, issued=issued)


@router.get("/api-keys")
async def api_keys_page(request: Request) -> Response:
    visit = await access.visit(request, roles.API_KEYS)
    return await _keys_page(request, visit)


@router.post("/api-keys")
async def create_api_key(request: Request) -> Response:
    """Issue a key and show it in this answer only (it is never in a URL, a redirect or a later page)."""
    visit = await access.visit(request, roles.API_KEYS)
    form = await access.form(request, visit.session)
    approval.require(visit.api_roles, approval.ADMINISTER)
    days = form.get("expires_in_days", "").strip()
    body = _valid(
        api_keys_api.KeyIn,
        {
            "name": form.get("name", "").strip(),
            "roles": [r for r in approval.ROLES if form.get(f"role.{r}") == "on"],
            "expires_in_days": days or None,
        },
    )
    issued = await configuring.issue_key(
        access.console(request).clarion,
        body.name,
        body.roles,
        expires_at=None,
        expires_in_days=body.expires_in_days,
        actor=visit.operator.actor,
    )
    return await _keys_page(request, visit, issued, 201)


@router.post("/api-keys/{key_id}/revoke")
async def revoke_api_key(request: Request, key_id: str) -> Response:
    visit = await access.visit(request, roles.API_KEYS)
    await access.form(request, visit.session)
    approval.require(visit.api_roles, approval.ADMINISTER)
    await access.console(request).clarion.keys.revoke(key_id[:64], actor=visit.operator.actor)
    return access.see_other("/console/api-keys")


# -- my account (every role) ---------------------------------------------------------------------------------


@router.get("/account")
async def account_page(request: Request) -> Response:
    visit = await access.visit(request, roles.ACCOUNT)
    changed = request.query_params.get("changed") == "1"
    return access.render(request, "account.html", visit, error=None, field=None, changed=changed)


@router.post("/account/password")
async def change_password(request: Request) -> Response:
    """Change one's own password: the current one, and the new one twice. A refusal is shown on the page,
    naming the field; the password fields are never filled back in."""
    visit = await access.visit(request, roles.ACCOUNT)
    form = await access.form(request, visit.session)
    _ = access.console(request).gettext(request)
    new = form.get("password", "")
    try:
        if new != form.get("password_again", ""):
            raise errors.InvalidInput(
                _("The new password and its repetition differ."), details={"field": "password_again"}
            )
        await access.console(request).operators.change_password(visit.operator.name, form.get("old_password", ""), new)
    except errors.InvalidInput as exc:
        field = exc.details.get("field") if isinstance(exc.details, dict) else None
        messages = {
            "old_password": _("The current password is wrong."),
            "password": _("The new password needs between {min} and {max} characters.").format(
                min=operators.MIN_PASSWORD, max=operators.MAX_PASSWORD
            ),
        }
        error = messages.get(str(field), exc.message)
        return access.render(request, "account.html", visit, 422, error=error, field=field, changed=False)
    return access.see_other("/console/account?changed=1")
