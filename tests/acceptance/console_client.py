"""A browser's part, over httpx, for the console's acceptance tests: cookies kept, forms posted with the token
the page carried, operators made through the same use case the CLI calls."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.console import operators

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@asynccontextmanager
async def browser(app: Any, *, language: str = "en") -> AsyncIterator[httpx.AsyncClient]:
    """A client without an API key, like a browser: cookies kept, redirects not followed."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://clarion.test", headers={"Accept-Language": language}
    ) as client:
        yield client


def console_app(clarion: bootstrap.Clarion) -> Any:
    return create_app(clarion=clarion)


async def make_operator(clarion: bootstrap.Clarion, name: str, role: str) -> None:
    await operators.Operators(clarion.db).create(name, role, PASSWORD, actor="test")


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found[1]


async def page(client: httpx.AsyncClient, path: str, status: int = 200) -> str:
    response = await client.get(path)
    assert response.status_code == status, (response.status_code, response.text[:2000])
    return response.text


async def post(client: httpx.AsyncClient, path: str, form: dict[str, str], *, from_page: str) -> httpx.Response:
    """Post ``form`` as the page at ``from_page`` would: with the CSRF token it carries."""
    token = csrf_of(await page(client, from_page))
    return await client.post(path, data={"csrf": token, **form})


async def login(client: httpx.AsyncClient, name: str, password: str = PASSWORD) -> httpx.Response:
    return await post(client, "/console/login", {"name": name, "password": password}, from_page="/console/login")


@asynccontextmanager
async def signed_in(clarion: bootstrap.Clarion, name: str, role: str, **kw: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A browser with ``name`` (made with ``role``) signed in."""
    await make_operator(clarion, name, role)
    async with browser(console_app(clarion), **kw) as client:
        answer = await login(client, name)
        assert answer.status_code == 303, answer.text
        yield client
