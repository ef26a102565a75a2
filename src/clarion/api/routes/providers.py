"""Provider accounts: the SMTP servers, SMS vendors and webhook signers Clarion sends through. Reading and
changing them needs the ``admin`` role. Their secrets are never returned (every place a credential can sit is
masked: secret fields, URL userinfo and query values, header values, a request template's literals), are
stored sealed under a key derived from ``CLARION_SECRET_KEY``, and every change is in the audit log naming the
fields changed, never their values."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Response
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import bootstrap, sealing
from clarion.api import deps, problems, schemas, views
from clarion.channels import masking, registry
from clarion.domain import approval, errors, model
from clarion.store import audit as audit_log
from clarion.store import records
from clarion.store import tables as t

router = APIRouter(prefix="/v1/providers", tags=["providers"], dependencies=deps.AUTH)
Name = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")


def provider_json(row: Any) -> dict[str, Any]:
    return {
        "name": row.name,
        "channel": row.channel,
        "kind": row.kind,
        "config": registry.public_config(row.kind, row.config),
        "enabled": row.enabled,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


class SecretsUnreadable(errors.InvalidInput):
    """The stored secrets a masked value stands for cannot be opened with this server's key."""

    status = 409


def _sealer(clarion: bootstrap.Clarion) -> sealing.Sealer:
    """The registry's, which opens what is sealed here; derived from the same secret key when it has none."""
    return clarion.providers.sealer or sealing.Sealer(clarion.secret_key)


def _opened(clarion: bootstrap.Clarion, name: str, stored: dict[str, Any], needed: bool) -> dict[str, Any] | None:
    """The current config in clear, to keep masked secrets; None when it cannot be opened and is not ``needed``."""
    try:
        return registry.unseal(name, stored, _sealer(clarion))
    except sealing.Unreadable as exc:
        if not needed:
            return None
        raise SecretsUnreadable(
            f"the stored secrets of provider {name!r} cannot be read ({exc.message}); give them again instead of "
            "the masked value",
            code="secrets_unreadable",
            details={"field": "config", "key_id": exc.key_id},
        ) from None


@router.put(
    "/{name}",
    response_model=views.Provider,
    responses={**views.created(views.Provider), **problems.answers(403, 409)},
)
async def put_provider(
    body: schemas.ProviderIn, clarion: deps.Services, caller: deps.Caller, response: Response, name: str = Name
) -> dict[str, Any]:
    """Configure a provider account (``admin``) — 403 ``forbidden`` otherwise. Secrets in ``config`` are stored
    sealed and used, never returned; sending back a masked value (``********``) in a secret's place keeps the
    stored secret, as long as its destination (SMTP host, vendor URL origin) stays the same. The built-in names
    are reserved. Written to the audit log as ``provider.create`` or ``provider.update``."""
    approval.require(caller.roles, approval.ADMINISTER)
    if name in clarion.providers.builtins:
        raise errors.InvalidInput(
            f"{name!r} is a built-in provider; choose another name (a configured account takes over its channel)",
            code="reserved_name",
            details={"field": "name", "reserved": sorted(clarion.providers.builtins)},
        )
    current = await records.get_one(clarion.db, t.providers, name)
    previous = None
    if current is not None and current.kind == body.kind:
        previous = _opened(clarion, name, current.config, needed=masking.has_mask(body.config))
    config = registry.validate(body.kind, body.channel, body.config, previous)
    if previous is None and current is not None:  # another kind, or unreadable: compare with what was shown
        previous = registry.public_config(current.kind, current.config)
    stored = registry.seal(name, body.kind, config, _sealer(clarion))
    values = {"channel": body.channel.value, "kind": body.kind, "config": stored, "enabled": body.enabled}
    detail = {
        "kind": body.kind,
        "channel": body.channel.value,
        "enabled": body.enabled,
        "changed": [
            *(f for f in ("kind", "channel", "enabled") if current is None or getattr(current, f) != values[f]),
            *registry.changed_fields(previous, config),
        ],
    }
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        created = await records.upsert(clarion.db, conn, t.providers, name, values, now)
        action = "provider.create" if created else "provider.update"
        await audit_log.record(
            conn, actor=caller.name, action=action, subject=f"provider:{name}", at=now, detail=detail
        )
        return created

    created = await clarion.db.write(job)
    clarion.invalidate()
    response.status_code = 201 if created else 200
    return provider_json(await records.get_one(clarion.db, t.providers, name))


@router.get("/{name}", response_model=views.Provider, responses=problems.answers(403, 404))
async def get_provider(clarion: deps.Services, caller: deps.Caller, name: str = Name) -> dict[str, Any]:
    """One provider account, its secrets masked (``admin``)."""
    approval.require(caller.roles, approval.ADMINISTER)
    row = await records.get_one(clarion.db, t.providers, name)
    if row is None:
        raise errors.NotFound("provider", name)
    return provider_json(row)


@router.get("", response_model=views.Providers, responses=problems.answers(403))
async def list_providers(clarion: deps.Services, caller: deps.Caller) -> dict[str, Any]:
    """The provider accounts by name, their secrets masked (``admin``)."""
    approval.require(caller.roles, approval.ADMINISTER)
    return {"providers": [provider_json(r) for r in await records.list_all(clarion.db, t.providers)]}


@router.delete("/{name}", status_code=204, responses=problems.answers(403, 404))
async def delete_provider(clarion: deps.Services, caller: deps.Caller, name: str = Name) -> Response:
    """Remove a provider account (``admin``) — 403 ``forbidden`` otherwise. The row goes, and with it the only
    copy of its (sealed) secrets; the audit log's ``provider.delete`` entry names the account, not its config."""
    approval.require(caller.roles, approval.ADMINISTER)
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        row = (
            await conn.execute(sa.select(t.providers.c.kind, t.providers.c.channel).where(t.providers.c.name == name))
        ).first()
        if row is None:
            return False
        await conn.execute(t.providers.delete().where(t.providers.c.name == name))
        detail = {"kind": row.kind, "channel": row.channel}
        await audit_log.record(
            conn, actor=caller.name, action="provider.delete", subject=f"provider:{name}", at=now, detail=detail
        )
        return True

    if not await clarion.db.write(job):
        raise errors.NotFound("provider", name)
    clarion.invalidate()
    return Response(status_code=204)


#: what a probe sends on each channel when the request gives no ``content`` (WeChat needs a registered template)
PROBE_TEXT = "Clarion test message"
PROBE_CONTENT: dict[model.Channel, dict[str, Any]] = {
    model.Channel.SMS: {"text": PROBE_TEXT},
    model.Channel.EMAIL: {"subject": "Clarion test", "text": PROBE_TEXT},
    model.Channel.PUSH: {"title": "Clarion test", "body": PROBE_TEXT},
    model.Channel.INBOX: {"title": "Clarion test", "body": PROBE_TEXT},
    model.Channel.WEBHOOK: {"body": {"test": True, "text": PROBE_TEXT}},
    model.Channel.WECOM: {"title": "Clarion test", "markdown": PROBE_TEXT},
    model.Channel.DINGTALK: {"title": "Clarion test", "markdown": PROBE_TEXT},
    model.Channel.FEISHU: {"title": "Clarion test", "markdown": PROBE_TEXT},
}


@router.post("/{name}/test", response_model=views.ProbeResult, responses=problems.answers(403, 404))
async def test_provider(
    body: schemas.ProbeIn, clarion: deps.Services, caller: deps.Caller, name: str = Name
) -> dict[str, Any]:
    """Send one probe through this account to ``address`` and report the vendor's answer (``admin``): the
    provider message id, or the error with the vendor's code, whether it would be retried, and whether it means
    the account is misconfigured. The probe is not a message: it is not stored, no policy judges it, and it does
    not count toward the breaker. A disabled account can be tested before it is enabled. Audited as
    ``provider.test`` (the address is not recorded)."""
    approval.require(caller.roles, approval.ADMINISTER)
    row = await records.get_one(clarion.db, t.providers, name)
    if row is None and name not in clarion.providers.builtins:
        raise errors.NotFound("provider", name)
    channel = model.Channel(row.channel) if row is not None else body.channel
    if channel is None:
        raise errors.InvalidInput(
            f"{name!r} is a built-in serving several channels: say which", details={"field": "channel"}
        )
    content = body.content if body.content is not None else PROBE_CONTENT.get(channel)
    if content is None:
        raise errors.InvalidInput(
            f"a probe on channel {channel.value!r} needs its content (e.g. a registered template id)",
            details={"field": "content"},
        )
    probe_id = "probe_" + secrets.token_hex(8)
    outgoing = model.Outgoing(
        delivery_id=probe_id,
        message_id=probe_id,
        user_id="probe",
        channel=channel,
        address=body.address,
        content=content,
    )
    started = time.perf_counter()
    try:
        provider = await clarion.providers.get(name)
        [result] = await provider.send([outgoing])
        error = result.error
    except Exception as exc:  # a probe reports what went wrong, whatever it was
        result, error = None, exc
    took = time.perf_counter() - started
    answer: dict[str, Any] = {
        "provider": name,
        "channel": channel.value,
        "ok": error is None,
        "seconds": round(took, 4),
        "provider_message_id": result.provider_message_id if result is not None and error is None else None,
        "status": (result.status.value if result is not None and result.status else "sent") if error is None else None,
        "error": None,
    }
    if error is not None:
        answer["error"] = {
            "code": getattr(error, "code", None) or type(error).__name__,
            "message": getattr(error, "message", None) or str(error) or repr(error),
            "transient": not isinstance(error, errors.PermanentSendError),
            "misconfigured": bool(getattr(error, "misconfigured", False)),
            "dead_address": bool(getattr(error, "dead_address", False)),
        }
    now = datetime.now(UTC)
    detail = {"channel": channel.value, "ok": answer["ok"], "error": (answer["error"] or {}).get("code")}

    async def job(conn: AsyncConnection) -> None:
        await audit_log.record(
            conn, actor=caller.name, action="provider.test", subject=f"provider:{name}", at=now, detail=detail
        )

    await clarion.db.write(job)
    return answer
