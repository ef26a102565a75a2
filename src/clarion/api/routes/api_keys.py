"""API keys: who may call the API, with which roles, until when. Creating, listing and revoking keys needs the
``admin`` role; every creation and revocation is in the audit log (``api_key.create``, ``api_key.revoke``, subject
``api_key:<id>``), naming the caller — never the key."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response
from pydantic import AwareDatetime, Field, StringConstraints

from clarion.api import deps, problems, schemas, views
from clarion.api.responses import JSON
from clarion.domain import approval
from clarion.pipeline import configuring

router = APIRouter(prefix="/v1", tags=["api-keys"], dependencies=deps.AUTH)


class KeyIn(schemas.Strict):
    name: schemas.Key = Field(description="who or what uses the key; the identity approvals are compared by")
    roles: list[Annotated[str, StringConstraints(max_length=40)]] = Field(
        default_factory=lambda: ["admin"], min_length=1, max_length=len(approval.ROLES)
    )
    expires_at: AwareDatetime | None = Field(
        default=None, description="refused from then on (ISO 8601 with a time zone); none: never expires"
    )
    expires_in_days: float | None = Field(
        default=None, gt=0, le=36_500, description="instead of expires_at: this many days from now"
    )


class NewApiKey(views.View):
    id: str
    name: str
    roles: list[str]
    prefix: str
    created_at: views.Timestamp
    expires_at: views.Timestamp | None
    key: str = Field(description="the key itself: shown in this answer only")


class ApiKey(views.View):
    id: str
    name: str
    prefix: str = Field(description="the key's first characters, to recognise it by")
    roles: list[str]
    status: Literal["active", "expired", "revoked"]
    created_at: views.Timestamp
    expires_at: views.Timestamp | None
    revoked_at: views.Timestamp | None
    last_used_at: views.Timestamp | None


class ApiKeyList(views.View):
    keys: list[ApiKey]


@router.post("/api-keys", status_code=201, response_model=NewApiKey, responses=problems.answers(403))
async def create_key(body: KeyIn, clarion: deps.Services, caller: deps.Caller) -> JSON:
    """Create an API key with roles (``admin`` only): ``admin``, ``editor``, ``approver``, ``sender``; optionally
    expiring (``expires_at``, or ``expires_in_days``; not both). The key is in this answer only; it is stored
    hashed. Use its ``id`` to revoke it."""
    approval.require(caller.roles, approval.ADMINISTER)
    issued = await configuring.issue_key(
        clarion,
        body.name,
        body.roles,
        expires_at=body.expires_at,
        expires_in_days=body.expires_in_days,
        actor=caller.name,
    )
    return JSON(
        {
            "id": issued.id,
            "name": issued.name,
            "roles": list(issued.roles),
            "prefix": issued.prefix,
            "created_at": issued.created_at.isoformat(),
            "expires_at": issued.expires_at.isoformat() if issued.expires_at else None,
            "key": issued.key,
        },
        status_code=201,
    )


@router.get("/api-keys", response_model=ApiKeyList, responses=problems.answers(403))
async def list_keys(clarion: deps.Services, caller: deps.Caller) -> dict[str, Any]:
    """The keys (never the keys themselves), revoked ones included (``admin`` only): id, name, prefix, roles,
    ``status`` (``active``, ``expired``, ``revoked``), when created, expiring, revoked and last used.
    ``last_used_at`` may be up to about a minute behind for uses served by other processes."""
    approval.require(caller.roles, approval.ADMINISTER)
    return {"keys": await clarion.keys.described()}


@router.delete("/api-keys/{key_id}", status_code=204, responses=problems.answers(403, 404))
async def revoke_key(
    clarion: deps.Services, caller: deps.Caller, key_id: str = Path(max_length=64, description="the key's id")
) -> Response:
    """Revoke a key (``admin`` only): refused from now on — at once by this process, within half a second by
    every other. The key stays listed, as revoked. Revoking a revoked key answers 204 again and changes nothing;
    revoking the key of this very request is allowed (its next request is refused). Unknown id: 404."""
    approval.require(caller.roles, approval.ADMINISTER)
    await clarion.keys.revoke(key_id, actor=caller.name)
    return Response(status_code=204)
