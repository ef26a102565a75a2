"""What route functions receive: the running services and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from clarion import apikeys, bootstrap


async def services(request: Request) -> bootstrap.Clarion:
    return request.app.state.clarion


Services = Annotated[bootstrap.Clarion, Depends(services)]


async def caller(request: Request, clarion: Services) -> apikeys.Caller:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(
            401, "missing API key: send 'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"}
        )
    found = await clarion.keys.verify(token.strip())
    if found is None:
        raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
    return found


Caller = Annotated[apikeys.Caller, Depends(caller)]
AUTH = [Depends(caller)]
