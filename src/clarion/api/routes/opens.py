"""The e-mail open pixel: ``GET /o/{token}.gif`` (``clarion.opens``).

Outside ``/v1/`` and without a key: a mail client fetches it. The image is answered whatever happens (a token that
is not ours, a delivery deleted since, a second fetch), never an error a mail client would show as a broken image;
only a valid token of an e-mail delivery records the open, once. Link scanners fetching images are not told apart:
an e-mail open is a fetched image, as the module says.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import opens
from clarion.api import deps
from clarion.pipeline import feedback

router = APIRouter(tags=["links"])
_HEADERS = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}


@router.get(
    "/o/{token}",
    response_class=Response,
    responses={200: {"description": "a transparent 1x1 GIF", "content": {"image/gif": {"schema": {"type": "string"}}}}},
)
async def pixel(token: str, clarion: deps.Services) -> Response:
    """The open pixel: records the open of the e-mail the token names (signed), and answers the image."""
    delivery_id = opens.verify(clarion.secret_key.encode(), token)
    if delivery_id is not None:
        now = datetime.now(UTC)

        async def job(conn: AsyncConnection) -> None:
            await feedback.open_email(conn, delivery_id, now)

        await clarion.db.write(job)
    return Response(opens.PIXEL, media_type="image/gif", headers=_HEADERS)
