"""Health and metrics: for load balancers and Prometheus, no API key needed."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from clarion.api import deps, views
from clarion.api.responses import JSON
from clarion.store import outbox

router = APIRouter(tags=["system"])


@router.get(
    "/healthz",
    response_model=views.Health,
    responses={503: {"model": views.Health, "description": "the database cannot be reached"}},
)
async def healthz(clarion: deps.Services) -> Any:
    try:
        async with clarion.db.read() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        return JSON({"status": "unavailable", "database": repr(exc)}, status_code=503)
    return {"status": "ok", "database": clarion.db.dialect}


@router.get("/metrics", response_class=PlainTextResponse, responses={200: {"description": "Prometheus text format"}})
async def metrics(clarion: deps.Services) -> Response:
    async with clarion.db.read() as conn:
        depth = await outbox.queue_depth(conn)
    for lane in range(4):
        clarion.metrics.queue_depth.labels(str(lane)).set(depth.get(lane, 0))
    return Response(generate_latest(clarion.metrics.registry), media_type=CONTENT_TYPE_LATEST)
