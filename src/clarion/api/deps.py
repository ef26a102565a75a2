"""What route functions receive: the running services and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from clarion import apikeys, bootstrap


async def services(request: Request) -> bootstrap.Clarion:
    return request.app.state.clarion


Services = Annotated[bootstrap.Clarion, Depends(services)]


def caller(request: Request) -> apikeys.Caller:
    """The API key's owner; ``middleware.Authenticate`` has already refused requests without a valid key."""
    return request.state.caller


Caller = Annotated[apikeys.Caller, Depends(caller)]
#: documents the bearer scheme in OpenAPI; enforcement is the middleware's, before any body is parsed
AUTH = [Depends(HTTPBearer(auto_error=False, description="an API key: `clarion apikey create NAME`"))]
