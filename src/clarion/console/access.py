"""What every console page does before its own work: find the signed-in operator and check the page's role, read
a posted form with its CSRF token, and render a template inside the navigation the operator may use. Page
modules build on these and on the use cases the API routes call."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from clarion.console import operators, roles, sessions
from clarion.domain import approval

if TYPE_CHECKING:
    from clarion.console.app import Console


class LoginRequired(Exception):
    """No valid session: the browser is sent to the login page, to come back after."""


@dataclass(frozen=True, slots=True)
class Visit:
    """The signed-in operator on this request."""

    operator: operators.Operator
    session: sessions.Session

    def may(self, page: str) -> bool:
        return roles.may_open(self.operator.role, page)

    @property
    def api_roles(self) -> tuple[str, ...]:
        """The roles the use cases are asked with on this operator's behalf."""
        return roles.api_roles(self.operator.role)


def console(request: Request) -> Console:
    return request.app.state.console


def next_query(path: str) -> str:
    return urllib.parse.urlencode({"next": path})


def local(path: str | None) -> str | None:
    """A ``next`` that stays in the console (never an open redirect to another site)."""
    if path and path.startswith("/console") and not path.startswith("//") and "\\" not in path:
        return path
    return None


async def visit(request: Request, page: str) -> Visit:
    """The operator of this request's session, allowed to open ``page``: ``LoginRequired`` without a session
    (or for a disabled operator), 403 for a role that may not open it."""
    found = console(request)
    session = found.sessions.read(request)
    if session is None:
        raise LoginRequired
    operator = await found.operators.get(session.operator)
    if operator is None or operator.disabled:
        raise LoginRequired
    current = Visit(operator, session)
    if not current.may(page):
        raise approval.Forbidden(
            f"the role {operator.role!r} may not open this page", code="forbidden", details={"role": operator.role}
        )
    return current


async def form(request: Request, session: sessions.Session | None) -> dict[str, str]:
    """The posted form, refused with 403 unless it carries the CSRF token of this browser (and session)."""
    posted = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    if not console(request).sessions.csrf_valid(request, posted.get("csrf"), session):
        raise approval.Forbidden("the form's CSRF token is missing or wrong; reload the page", code="csrf_failed")
    return posted


def render(request: Request, template: str, visit: Visit | None, code: int = 200, **context: Any) -> Response:
    navigation = [(page, path) for page, path in roles.NAVIGATION if visit and visit.may(page)]
    return console(request).render(request, template, code, visit=visit, navigation=navigation, **context)


def see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)
