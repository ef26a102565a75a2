"""What route functions receive: the running services and the authenticated caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from clarion import apikeys, bootstrap
from clarion.domain import errors

T = TypeVar("T")


async def services(request: Request) -> bootstrap.Clarion:
    return request.app.state.clarion


Services = Annotated[bootstrap.Clarion, Depends(services)]


def caller(request: Request) -> apikeys.Caller:
    """The API key's owner; ``middleware.Authenticate`` has already refused requests without a valid key."""
    return request.state.caller


Caller = Annotated[apikeys.Caller, Depends(caller)]
#: documents the bearer scheme in OpenAPI; enforcement is the middleware's, before any body is parsed
AUTH = [Depends(HTTPBearer(auto_error=False, description="an API key: `clarion apikey create NAME`"))]


async def read_or_404(
    clarion: bootstrap.Clarion, read: Callable[[Any, str], Awaitable[T | None]], what: str, key: str
) -> T:
    """``read(conn, key)`` on a read connection; a 404 naming ``what`` when it finds nothing."""
    async with clarion.db.read() as conn:
        found = await read(conn, key)
    if found is None:
        raise errors.NotFound(what, key)
    return found
