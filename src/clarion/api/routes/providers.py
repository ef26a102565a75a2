"""Provider accounts: the SMTP servers, SMS vendors and webhook signers Clarion sends through. Reading and
changing them needs the ``admin`` role. Their secrets are never returned (every place a credential can sit is
masked: secret fields, URL userinfo and query values, header values, a request template's literals), are
stored sealed under a key derived from ``CLARION_SECRET_KEY``, and every change is in the audit log naming the
fields changed, never their values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Response
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import bootstrap, sealing
from clarion.api import deps, problems, schemas, views
from clarion.channels import masking, registry
from clarion.domain import approval, errors
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
