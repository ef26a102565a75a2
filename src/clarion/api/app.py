"""The HTTP API's application factory. Routes are thin: parse, call a use case, serialise."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from clarion import __version__, bootstrap
from clarion.api import openapi, problems
from clarion.api.fastlane import FastLane
from clarion.api.middleware import Authenticate, BodyLimit
from clarion.api.problems import error_body
from clarion.api.responses import JSON
from clarion.api.routes import (
    alerts,
    analytics,
    api_keys,
    audit,
    bulk,
    campaigns,
    copy,
    copy_examples,
    costs,
    deliveries,
    experiments,
    feedback_rules,
    inbox,
    links,
    messages,
    opens,
    policies,
    policy_check,
    preview,
    provider_health,
    providers,
    receipts,
    routes,
    segments,
    sms,
    system,
    template_versions,
    templates,
    unsubscribe,
    users,
)
from clarion.console import app as console
from clarion.domain import errors
from clarion.settings import Settings

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, *, clarion: bootstrap.Clarion | None = None, workers: int | None = None
) -> ASGIApp:
    """Build the API: an ASGI application in which FastAPI serves everything but the send fast lane.
    With ``clarion`` given the caller owns its lifecycle; otherwise the app builds one from
    ``settings`` and runs ``workers`` delivery workers in-process (``settings.workers`` by default)."""
    settings = settings or (clarion.settings if clarion else Settings())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if clarion is not None:
            yield
            return
        services = bootstrap.build(settings)
        await services.start(workers=workers)
        app.state.clarion = services
        stop = asyncio.Event()
        consuming = await _consumer(services, stop)  # CLARION_CONSUME_BROKER: sends taken from a queue too
        try:
            yield
        finally:
            stop.set()
            if consuming is not None:
                await consuming
            await services.close()

    app = FastAPI(
        title="Clarion",
        version=__version__,
        description="Message push platform: triggered sends, templates, inbox, delivery timeline.",
        default_response_class=JSON,
        lifespan=lifespan,
    )

    @app.exception_handler(errors.InvalidInput)
    async def _invalid(_: Request, exc: errors.InvalidInput) -> JSON:
        return problems.invalid_input(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSON:
        return problems.validation_failed(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSON:
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
            # FastAPI could not read a JSON body (not UTF-8, say): malformed JSON, as the fast lane and the
            # bulk routes answer it
            return problems.validation_failed([{"type": "json_invalid", "ctx": {"error": str(exc.__cause__)}}])
        code = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSON(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    if clarion is not None:
        app.state.clarion = clarion
    for module in (
        users,
        inbox,
        preview,
        templates,
        template_versions,
        messages,
        deliveries,
        provider_health,
        providers,
        routes,
        policy_check,
        policies,
        bulk,
        segments,
        campaigns,
        audit,
        analytics,
        costs,
        copy,
        copy_examples,
        experiments,
        feedback_rules,
        alerts,
        api_keys,
        unsubscribe,
        links,
        opens,
        receipts,
        sms,
        system,
    ):
        app.include_router(module.router)
    app.include_router(sms.callbacks)

    app.openapi = openapi.document(app)  # type: ignore[method-assign]

    def services() -> bootstrap.Clarion:
        return app.state.clarion

    app.mount("/console", console.create(services))  # its own app: HTML pages, outside the OpenAPI document

    # Outside FastAPI, in this order: authenticate, limit the body, then serve sends in the fast lane.
    limited = BodyLimit(
        FastLane(app, services),
        limit=settings.max_body_bytes,
        uploads=UPLOADS,
        upload_limit=settings.max_upload_bytes,
    )
    return Authenticate(limited, services)


async def _consumer(services: bootstrap.Clarion, stop: asyncio.Event) -> asyncio.Task[None] | None:
    """The message-queue consumer ``CLARION_CONSUME_*`` configures, started beside the workers (its key checked
    first, so a bad one stops the start with its reason); None when no broker is configured."""
    from clarion.consume import running
    from clarion.consume.config import ConsumeSettings

    configured = ConsumeSettings()
    if configured.broker is None:
        return None
    await running.authorized(services, configured)
    return asyncio.create_task(running.consumer(services, configured).run(stop), name="clarion-consume")


#: bulk paths whose bodies may reach ``max_upload_bytes``: 10,000 users or events a call, ID-list files
UPLOADS = frozenset({"/v1/users:batch", "/v1/track", "/v1/lists"})
