"""The console as an ASGI application of its own, mounted by the API at ``/console`` and kept out of the API's
OpenAPI document: its pages answer HTML (errors included), its forms are posted by browsers, not by clients of
the API."""

from __future__ import annotations

import gettext
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from clarion import bootstrap
from clarion.console import (
    access,
    i18n,
    operators,
    pages,
    pages_admin,
    pages_campaigns,
    pages_copy,
    pages_templates,
    sessions,
    throttle,
)
from clarion.domain import errors

HERE = Path(__file__).parent


class Console:
    """What every page shares: the running services, the operators, the sessions, the login throttle and one
    template environment per language."""

    def __init__(self, services: Callable[[], bootstrap.Clarion]) -> None:
        self._services = services
        self.throttle = throttle.Throttle()
        self._operators: operators.Operators | None = None
        self._sessions: sessions.Sessions | None = None
        self._environments: dict[str, jinja2.Environment] = {}
        self._catalogues: dict[str, gettext.GNUTranslations] = {}

    @property
    def clarion(self) -> bootstrap.Clarion:
        return self._services()

    @property
    def operators(self) -> operators.Operators:
        if self._operators is None:
            self._operators = operators.Operators(self.clarion.db)
        return self._operators

    @property
    def sessions(self) -> sessions.Sessions:
        if self._sessions is None:
            self._sessions = sessions.Sessions(self.clarion.secret_key)
        return self._sessions

    def environment(self, locale: str) -> jinja2.Environment:
        found = self._environments.get(locale)
        if found is None:
            found = jinja2.Environment(
                loader=jinja2.FileSystemLoader(HERE / "templates"),
                autoescape=True,
                extensions=["jinja2.ext.i18n"],
                undefined=jinja2.StrictUndefined,
            )
            found.install_gettext_translations(self.catalogue(locale), newstyle=True)  # type: ignore[attr-defined]
            self._environments[locale] = found
        return found

    def render(self, request: Request, template: str, code: int = 200, **context: Any) -> HTMLResponse:
        locale = language(request)
        page = self.environment(locale).get_template(template)
        html = page.render(
            request=request,
            locale=locale,
            html_lang=i18n.HTML_LANG[locale],
            languages=i18n.NAMES,
            csrf=self.sessions.csrf_token(request),
            **context,
        )
        response = HTMLResponse(html, status_code=code, headers={"Cache-Control": "no-store"})
        self.sessions.keep_csrf(request, response)
        return response

    def catalogue(self, locale: str) -> gettext.GNUTranslations:
        found = self._catalogues.get(locale)
        if found is None:
            found = self._catalogues[locale] = i18n.catalogue(locale)
        return found

    def gettext(self, request: Request) -> Callable[[str], str]:
        """The request's language's ``gettext``, for the sentences pages make in Python."""
        return self.catalogue(language(request)).gettext


def language(request: Request) -> str:
    return i18n.negotiate(request.cookies.get(sessions.LANGUAGE), request.headers.get("accept-language"))


def create(services: Callable[[], bootstrap.Clarion]) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    console = Console(services)
    app.state.console = console
    for area in (pages, pages_templates, pages_copy, pages_campaigns, pages_admin):
        app.include_router(area.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(access.LoginRequired)
    async def _login(request: Request, _: access.LoginRequired) -> Response:
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/console/login?{access.next_query(back)}", status_code=303)

    @app.exception_handler(errors.InvalidInput)
    async def _refused(request: Request, exc: errors.InvalidInput) -> Response:
        return console.render(request, "error.html", exc.status, status=exc.status, message=exc.message, visit=None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return console.render(
            request, "error.html", exc.status_code, status=exc.status_code, message=str(exc.detail), visit=None
        )

    return app
