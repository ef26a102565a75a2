"""Provider accounts: the SMTP servers, SMS vendors and webhook signers Clarion sends through. Changing them
needs the ``admin`` role; reading them only a valid key."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Path, Response

from clarion.api import deps, schemas
from clarion.channels import registry
from clarion.domain import approval, errors
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


@router.put("/{name}")
async def put_provider(
    body: schemas.ProviderIn, clarion: deps.Services, caller: deps.Caller, response: Response, name: str = Name
) -> dict[str, Any]:
    """Configure a provider account (``admin``) — 403 ``forbidden`` otherwise. Secrets in ``config`` are stored
    and used, never returned; sending back the masked value (``********``) keeps the stored secret. The built-in
    names are reserved."""
    approval.require(caller.roles, approval.ADMINISTER)
    if name in clarion.providers.builtins:
        raise errors.InvalidInput(
            f"{name!r} is a built-in provider; choose another name (a configured account takes over its channel)",
            code="reserved_name",
            details={"field": "name", "reserved": sorted(clarion.providers.builtins)},
        )
    current = await records.get_one(clarion.db, t.providers, name)
    stored = current.config if current is not None and current.kind == body.kind else None
    config = registry.validate(body.kind, body.channel, body.config, stored)
    values = {"channel": body.channel.value, "kind": body.kind, "config": config, "enabled": body.enabled}
    now = datetime.now(UTC)
    created = await clarion.db.write(lambda conn: records.upsert(clarion.db, conn, t.providers, name, values, now))
    clarion.invalidate()
    response.status_code = 201 if created else 200
    return provider_json(await records.get_one(clarion.db, t.providers, name))


@router.get("/{name}")
async def get_provider(clarion: deps.Services, name: str = Name) -> dict[str, Any]:
    row = await records.get_one(clarion.db, t.providers, name)
    if row is None:
        raise errors.NotFound("provider", name)
    return provider_json(row)


@router.get("")
async def list_providers(clarion: deps.Services) -> dict[str, Any]:
    return {"providers": [provider_json(r) for r in await records.list_all(clarion.db, t.providers)]}


@router.delete("/{name}", status_code=204)
async def delete_provider(clarion: deps.Services, caller: deps.Caller, name: str = Name) -> Response:
    """Remove a provider account (``admin``) — 403 ``forbidden`` otherwise."""
    approval.require(caller.roles, approval.ADMINISTER)
    if not await records.delete_one(clarion.db, t.providers, name):
        raise errors.NotFound("provider", name)
    clarion.invalidate()
    return Response(status_code=204)
