"""The console's session and its CSRF token, in cookies signed with the installation's secret key.

- ``clarion_session``: the operator's name and the CSRF token, signed and dated (itsdangerous), HttpOnly,
  SameSite=Lax, refused after ``MAX_AGE``. The operator is read again on every request, so disabling one ends
  its sessions at once; logging out deletes the cookie.
- ``clarion_csrf``: a random token, HttpOnly, SameSite=Strict, set with the first page. Every form carries it in a
  hidden ``csrf`` field; a POST whose field differs from the cookie (or, signed in, from the session's) is
  refused with 403. The login form is protected the same way, before there is a session.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

import itsdangerous
from starlette.requests import Request
from starlette.responses import Response

SESSION = "clarion_session"
CSRF = "clarion_csrf"
LANGUAGE = "clarion_lang"
MAX_AGE = 12 * 3600


@dataclass(frozen=True, slots=True)
class Session:
    operator: str
    csrf: str


class Sessions:
    def __init__(self, secret_key: str, *, secure: bool = False) -> None:
        self._signer = itsdangerous.URLSafeTimedSerializer(secret_key, salt="clarion.console.session")
        self.secure = secure

    def read(self, request: Request) -> Session | None:
        cookie = request.cookies.get(SESSION)
        if not cookie:
            return None
        try:
            data = self._signer.loads(cookie, max_age=MAX_AGE)
        except itsdangerous.BadData:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("op"), str) or not isinstance(data.get("csrf"), str):
            return None
        return Session(data["op"], data["csrf"])

    def start(self, response: Response, operator: str, csrf: str) -> None:
        value = self._signer.dumps({"op": operator, "csrf": csrf})
        response.set_cookie(
            SESSION, value, max_age=MAX_AGE, path="/console", httponly=True, samesite="lax", secure=self.secure
        )

    def end(self, response: Response) -> None:
        response.delete_cookie(SESSION, path="/console", httponly=True, samesite="lax", secure=self.secure)

    def csrf_token(self, request: Request) -> str:
        """The token forms carry: the cookie's, or a new one that ``keep_csrf`` sets with the page."""
        token = request.cookies.get(CSRF) or getattr(request.state, "new_csrf", None)
        if token is None:
            token = request.state.new_csrf = secrets.token_urlsafe(24)
        return token

    def keep_csrf(self, request: Request, response: Response) -> None:
        new = getattr(request.state, "new_csrf", None)
        if new and not request.cookies.get(CSRF):
            response.set_cookie(CSRF, new, path="/console", httponly=True, samesite="strict", secure=self.secure)

    def csrf_valid(self, request: Request, sent: object, session: Session | None) -> bool:
        cookie = request.cookies.get(CSRF)
        if not isinstance(sent, str) or not sent or not cookie or not hmac.compare_digest(sent, cookie):
            return False
        return session is None or hmac.compare_digest(sent, session.csrf)
