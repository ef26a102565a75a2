"""The public one-click unsubscribe page: ``GET``/``POST /u/{token}``.

The signed token (``clarion.unsubscribe``) is the only authorisation, so these paths sit outside ``/v1/`` and
need no API key, cookie or CSRF token. ``GET`` only shows a confirmation page: link scanners and mail-preview
bots fetch URLs, and a fetch must not unsubscribe anybody. ``POST`` records the unsubscribe; that is what the
page's button does and what a mail client sends for RFC 8058 one-click (body ``List-Unsubscribe=One-Click``).
The body is not read: it carries nothing the signed URL does not, and refusing a client that sends another
body would only lose the user's request.

The suppression has exactly the token's scope (for marketing e-mail: marketing, on e-mail): the user answers
the mail in front of them, and still hears from us on channels they did not ask to leave. Whoever makes the link
decides the scope; the page only carries it out. It is kept per user, not per address, so it survives a change
of address, and recording it twice changes nothing.

A link that names its delivery (``clarion.unsubscribe``: links made since the token carries one) also puts an
``unsubscribed`` event on that delivery's timeline, which the funnel counts, and fires the feedback rules on
unsubscribes (``pipeline.feedback_rules``) with that message's template and campaign; a link without one fires
the rules that match any message. Both happen with the suppression, in its transaction, and only when the
suppression is new: the second click on the button changes nothing.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import unsubscribe
from clarion.api import deps, views
from clarion.domain import errors, model
from clarion.pipeline import feedback_rules
from clarion.store import outbox, policies, rollups
from clarion.store import tables as t

router = APIRouter(tags=["unsubscribe"])

SOURCE = "unsubscribe_link"
REASON = "one-click unsubscribe"
UNSUBSCRIBED = "unsubscribed"

_CHANNEL_NOUNS = {
    model.Channel.EMAIL: "e-mail",
    model.Channel.SMS: "text messages",
    model.Channel.PUSH: "push notifications",
    model.Channel.INBOX: "inbox messages",
    model.Channel.WEBHOOK: "messages",
}
# The token sits in the URL: keep it out of caches, search engines and Referer headers, and the page out of frames.
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}"
    "button{font-size:1rem;padding:.5rem 1.25rem;cursor:pointer}"
)


class _Scope:
    """What a valid token unsubscribes from, as enum values and in words."""

    def __init__(self, request: unsubscribe.Request) -> None:
        try:
            self.category = model.Category(request.category) if request.category is not None else None
            self.channel = model.Channel(request.channel) if request.channel is not None else None
        except ValueError:
            raise errors.InvalidInput("this unsubscribe link is not valid", code="invalid_token") from None
        self.user_id = request.user_id
        self.delivery_id = request.delivery_id

    def describe(self) -> str:
        noun = _CHANNEL_NOUNS.get(self.channel, "messages") if self.channel is not None else "messages"
        if self.category is None:
            return noun if self.channel is not None else "all messages"
        return f"{self.category.value} {noun}"


def _scope(clarion: deps.Services, token: str) -> _Scope:
    return _Scope(unsubscribe.verify(clarion.secret_key.encode(), token))


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    """A self-contained page (no external assets); ``title`` is escaped here, ``body`` by the caller."""
    title = html.escape(title)
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="robots" content="noindex"><title>{title}</title><style>{_STYLE}</style></head>'
        f"<body><h1>{title}</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=_HEADERS)


def _invalid() -> HTMLResponse:
    return _page(
        "Link not valid",
        "<p>This unsubscribe link is not valid. It may have been cut short: try opening it from the e-mail "
        "again, or copy the whole address into your browser.</p>",
        status=400,
    )


@router.get("/u/{token}", response_class=HTMLResponse, responses={400: views.page("the link is not valid")})
async def confirm(token: str, clarion: deps.Services) -> HTMLResponse:
    """Ask the user to confirm; nothing is recorded yet."""
    try:
        scope = _scope(clarion, token)
    except errors.InvalidInput:
        return _invalid()
    what = html.escape(scope.describe())
    return _page(
        "Unsubscribe",
        f"<p>Stop receiving {what} from us?</p>"
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>',
    )


@router.post("/u/{token}", response_class=HTMLResponse, responses={400: views.page("the link is not valid")})
async def unsubscribe_now(token: str, clarion: deps.Services) -> HTMLResponse:
    """Record the unsubscribe (RFC 8058 one-click, or the confirmation page's button); idempotent."""
    try:
        scope = _scope(clarion, token)
    except errors.InvalidInput:
        return _invalid()
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> tuple[bool, list[str]]:
        _, created = await policies.add_suppression(
            conn,
            user_id=scope.user_id,
            address=None,
            channel=scope.channel,
            category=scope.category,
            reason=REASON,
            source=SOURCE,
            now=now,
        )
        if not created:
            return False, []
        message_id = await _on_timeline(conn, scope, now)
        fact = feedback_rules.Fact("unsubscribe", scope.user_id, message_id)
        return True, await feedback_rules.fire(conn, [fact], now=now)

    created, retagged = await clarion.db.write(job)
    clarion.catalog.invalidate()
    if retagged:
        await clarion.segments.users_changed(retagged)
    what = html.escape(scope.describe())
    said = "You are unsubscribed" if created else "You were already unsubscribed"
    return _page("Unsubscribed", f"<p>{said}: you will no longer receive {what} from us.</p>")


async def _on_timeline(conn: AsyncConnection, scope: _Scope, now: datetime) -> str | None:
    """Put the unsubscribe on the timeline of the delivery the link names, when it is the user's; its message."""
    if scope.delivery_id is None:
        return None
    d = t.deliveries
    query = sa.select(d.c.message_id).where(d.c.id == scope.delivery_id, d.c.user_id == scope.user_id)
    message_id = (await conn.execute(query)).scalar_one_or_none()
    if message_id is None:  # not the user's delivery (the token was made by hand): nothing to count it on
        return None
    category, channel = scope.category, scope.channel
    detail = {"category": category.value if category else None, "channel": channel.value if channel else None}
    event = outbox.event_row(message_id, scope.delivery_id, UNSUBSCRIBED, REASON, now, detail)
    await rollups.append(conn, [event])
    return message_id
