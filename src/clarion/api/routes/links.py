"""Short links: ``GET /s/{code}`` records the click and redirects (302) to the link's target.

The code is the only thing needed, so the path sits outside ``/v1/`` and takes no API key. What a click records
is described in ``clarion.store.links``. ``HEAD`` requests and fetches by link previewers and crawlers (chat apps
unfurling the link, mail scanners; ``domain.links.is_bot``) are redirected the same way but not counted: they
are not the user. An unknown or malformed code gets a small HTML page with status 404, never an error in JSON:
whoever follows it is a person with a phone, not an API client.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.api import deps, views
from clarion.domain import links
from clarion.store import links as store_links

router = APIRouter(tags=["links"])

# Each click must reach us (no caching), and the target must not learn the code from the Referer.
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex, nofollow"}
_NOT_FOUND = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    '<meta name="robots" content="noindex"><title>Link not found</title>'
    "<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}"
    "</style></head><body><h1>Link not found</h1><p>This link does not exist or is no longer available. "
    "If you copied it, check that the whole address was copied.</p></body></html>"
)


def _not_found() -> HTMLResponse:
    return HTMLResponse(
        _NOT_FOUND,
        status_code=404,
        headers={
            **_HEADERS,
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        },
    )


@router.get(
    "/s/{code}",
    response_class=RedirectResponse,
    status_code=302,
    responses={
        302: {"description": "to the link's target", "headers": {"Location": {"schema": {"type": "string"}}}},
        404: views.page("a page saying the link does not exist"),
    },
)
@router.head("/s/{code}", response_class=RedirectResponse, status_code=302, include_in_schema=False)  # as GET
async def follow(code: str, request: Request, clarion: deps.Services) -> Response:
    """Redirect to the link's target; a GET by a person counts as a click on the delivery."""
    if not links.is_code(code):
        return _not_found()
    # read first: an unknown code (a typo, a guess) costs no write
    async with clarion.db.read() as conn:
        url = await store_links.target(conn, code)
    if url is None:
        return _not_found()
    user_agent = request.headers.get("user-agent")
    if request.method == "GET" and not links.is_bot(user_agent):
        now = datetime.now(UTC)

        async def job(conn: AsyncConnection) -> store_links.Click | None:
            return await store_links.record_click(conn, code, now=now, user_agent=user_agent)

        click = await clarion.db.write(job)
        if click is not None and click.retagged:  # a feedback rule changed the user: segments see it at once
            await clarion.segments.users_changed(click.retagged)
    return RedirectResponse(url, status_code=302, headers=_HEADERS)
