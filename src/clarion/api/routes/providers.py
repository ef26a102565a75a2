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

from clarion.api import deps, problems, schemas, views
from clarion.domain import approval, errors
from clarion.pipeline import provisioning
from clarion.store import audit as audit_log
from clarion.store import records
from clarion.store import tables as t

router = APIRouter(prefix="/v1/providers", tags=["providers"], dependencies=deps.AUTH)
Name = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")


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
    shown, created = await provisioning.save_provider(
        clarion,
        name,
        kind=body.kind,
        channel=body.channel,
        provider_config=body.config,
        enabled=body.enabled,
        actor=caller.name,
    )
    response.status_code = 201 if created else 200
    return shown


@router.get("/{name}", response_model=views.Provider, responses=problems.answers(403, 404))
async def get_provider(clarion: deps.Services, caller: deps.Caller, name: str = Name) -> dict[str, Any]:
    """One provider account, its secrets masked (``admin``)."""
    approval.require(caller.roles, approval.ADMINISTER)
    row = await records.get_one(clarion.db, t.providers, name)
    if row is None:
        raise errors.NotFound("provider", name)
    return provisioning.provider_json(row)


@router.get("", response_model=views.Providers, responses=problems.answers(403))
async def list_providers(clarion: deps.Services, caller: deps.Caller) -> dict[str, Any]:
    """The provider accounts by name, their secrets masked (``admin``)."""
    approval.require(caller.roles, approval.ADMINISTER)
    return {"providers": [provisioning.provider_json(r) for r in await records.list_all(clarion.db, t.providers)]}


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
    return await provisioning.probe_provider(
        clarion, name, address=body.address, content=body.content, channel=body.channel, actor=caller.name
    )
