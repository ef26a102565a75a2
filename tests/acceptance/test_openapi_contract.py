"""The OpenAPI document is a contract a generated client can trust.

schemathesis reads ``/openapi.json`` and sends every operation valid and invalid requests built from it, with
an admin key, against an API on SQLite seeded with one object of each kind (so that lists and reads answer
something). Every answer must be no server error, carry a status the operation declares, and match the schema
declared for that status. The run is bounded (``EXAMPLES`` a phase per operation) and derandomized, so CI sees
the same requests every time. A plain test checks the whole document: each operation's success answer is a
declared model, and each error status it declares is the API's error body."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, settings
from schemathesis import checks
from schemathesis.python import asgi
from starlette.types import ASGIApp, Receive, Scope, Send

from clarion import bootstrap
from clarion.api import views
from clarion.api.app import create_app
from clarion.settings import Settings
from tests.conftest import API_KEY

#: examples a phase per operation: bounded for CI (about a minute); CLARION_CONTRACT_EXAMPLES=500 digs deeper
EXAMPLES = int(os.environ.get("CLARION_CONTRACT_EXAMPLES", "25"))
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.response_schema_conformance]
#: operations whose documented answer, on this suite's settings, is a 5xx: generation with no model configured
#: answers 503 saying how to configure one
SERVER_ERRORS_DOCUMENTED = {"POST /v1/copy:generate"}


def _settings(root: Path) -> Settings:
    return Settings(
        database_url=f"sqlite+aiosqlite:///{root / 'clarion.db'}",
        data_dir=str(root / "var"),
        outbox_dir=str(root / "var" / "outbox"),
        api_key=API_KEY,
        secret_key="test-secret-key",
        tune_gc=False,
    )


def _fastapi(app: Any) -> FastAPI:
    """The FastAPI application inside the ASGI guards."""
    while not isinstance(app, FastAPI):
        app = app.app
    return app


class _Served:
    """The application schemathesis calls: the module's API, once ``served`` has seeded it (the operations are
    collected from the document before any database exists)."""

    app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "the served fixture has not started the API"
        await self.app(scope, receive, send)


SERVED = _Served()
# the document as /openapi.json serves it; building it starts nothing
DOCUMENT = _fastapi(create_app(_settings(Path("unused")))).openapi()
# JSON lines (the bulk routes' other body) are text: one JSON value a line, documented as a string
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.app = SERVED


async def _seed(settings: Settings) -> None:
    """One object of each kind, made through the API itself."""
    services = bootstrap.build(settings)
    await services.start(workers=0)
    transport = httpx.ASGITransport(app=create_app(clarion=services))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test", headers=AUTH) as api:

            async def ok(method: str, url: str, **kwargs: Any) -> None:
                response = await api.request(method, url, **kwargs)
                assert response.status_code < 300, (method, url, response.text)

            await ok("PUT", "/v1/approval/settings", json={"levels": {}})
            user = {"attributes": {"plan": "pro"}, "tags": ["vip"], "addresses": {"sms": "+8613800138000"}}
            await ok("PUT", "/v1/users/u1", json=user)
            channels = {"sms": {"text": "Hi {name}, code {code}"}, "inbox": {"title": "Hi", "body": "Code {code}"}}
            template = {"name": "Welcome", "category": "transactional", "channels": channels}
            await ok("PUT", "/v1/templates/welcome", json=template)
            await ok("PUT", "/v1/rules/on-signup", json={"event": "signup", "template": "welcome"})
            send = {"template": "welcome", "to": "u1", "data": {"name": "A", "code": "1"}}
            await ok("POST", "/v1/messages", json=send)
            await ok("PUT", "/v1/test-recipients", json={"recipients": ["u1"]})
            await ok("PUT", "/v1/policies/caps/daily", json={"limit": 5, "window": {"unit": "day"}})
            await ok("PUT", "/v1/keyword-lists/banned", json={"action": "mask", "words": ["spam"]})
            await ok("POST", "/v1/suppressions", json={"address": "nobody@example.com"})
            await ok("POST", "/v1/lists?key=vips", content=b"u1\n", headers={"Content-Type": "text/plain"})
            await ok("PUT", "/v1/segments/pro", json={"name": "Pro", "conditions": {"tag": "vip"}})
            campaign = {"template": "welcome", "audience": {"segment": "pro"}, "schedule": "now"}
            await ok("PUT", "/v1/campaigns/spring", json=campaign)
            await ok("POST", "/v1/track", json={"user_id": "u1", "event": "login"})
    finally:
        await services.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[ASGIApp]:
    """The API on a seeded SQLite database, with no delivery workers, served to schemathesis."""
    root = tmp_path_factory.mktemp("contract")
    (root / "clarion.db").write_bytes(sqlite_template.read_bytes())
    settings = _settings(root)
    asyncio.run(_seed(settings))
    SERVED.app = create_app(settings, workers=0)
    yield SERVED.app
    asgi.shutdown_lifespans()  # schemathesis started the API's lifespan on its own loop: close its services
    SERVED.app = None


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_matches_the_document(case: Any, served: ASGIApp) -> None:
    documented = case.operation.label in SERVER_ERRORS_DOCUMENTED
    chosen = [c for c in CHECKS if not documented or c is not checks.not_a_server_error]
    case.call_and_validate(headers=AUTH, checks=chosen)


# -- the document itself -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The document as a client downloads it."""

    async def fetch() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=create_app(_settings(Path("unused"))))
        async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
            return (await client.get("/openapi.json")).json()

    return asyncio.run(fetch())


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            yield f"{method.upper()} {path}", operation


def test_every_success_answer_is_a_declared_model(document: dict[str, Any]) -> None:
    """No operation is documented as answering ``{"type": "string"}`` JSON: each 2xx JSON body is a model of
    ``components``, a 204 has no body, and pages, metrics and the open pixel say they are HTML, text and GIF."""
    wrong = []
    for name, operation in _operations(document):
        successes = {s: r for s, r in operation["responses"].items() if s.startswith(("2", "3"))}
        if not successes:
            wrong.append(f"{name}: no success answer")
        for status, response in successes.items():
            content = response.get("content", {})
            if status in ("204", "302"):
                if content:
                    wrong.append(f"{name} {status}: has a body")
                continue
            if not content:
                wrong.append(f"{name} {status}: no body described")
            for media_type, body in content.items():
                if media_type == "application/json" and "$ref" not in body.get("schema", {}):
                    wrong.append(f"{name} {status}: {body.get('schema')}")
                elif media_type != "application/json" and media_type not in (
                    "text/html",
                    "text/plain",
                    "image/gif",
                    "application/x-ndjson",
                ):
                    wrong.append(f"{name} {status}: {media_type}")
    assert not wrong, "\n".join(wrong)


def test_every_error_status_is_the_error_body(document: dict[str, Any]) -> None:
    """Each 4xx an operation declares is ``{"error": {"code", "message", "details"}}`` (the pages' own HTML
    aside); every ``/v1/`` operation declares 401, every one that takes a body 413 and 422."""
    error = {"$ref": "#/components/schemas/ErrorBody"}
    wrong = []
    for name, operation in _operations(document):
        responses = operation["responses"]
        path = name.split(" ", 1)[1]
        expected = {"401"} if path.startswith("/v1/") else set()
        if "requestBody" in operation:
            expected |= {"413", "422"}
        wrong += [f"{name}: {status} not declared" for status in sorted(expected - set(responses))]
        for status, response in responses.items():
            if not status.startswith("4"):
                continue
            content = response.get("content", {})
            if path.startswith(("/s/", "/u/")):
                if set(content) != {"text/html"}:
                    wrong.append(f"{name} {status}: {content}")
            elif content.get("application/json", {}).get("schema") != error or len(content) != 1:
                wrong.append(f"{name} {status}: {content}")
    assert not wrong, "\n".join(wrong)
    assert not {"HTTPValidationError", "ValidationError"} & set(document["components"]["schemas"])


def test_the_error_body_has_code_message_and_details(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert schemas["ErrorBody"]["required"] == ["error"]
    problem = schemas["ErrorBody"]["properties"]["error"]["$ref"].rsplit("/", 1)[1]
    assert sorted(schemas[problem]["required"]) == ["code", "details", "message"]


def test_a_view_with_fields_given_only_sometimes_leaves_them_out() -> None:
    """A view with a defaulted field is a ``Partial``: a field its route left out stays out of the answer."""
    plain = [
        name
        for name, view in vars(views).items()
        if isinstance(view, type)
        and issubclass(view, views.View)
        and not issubclass(view, views.Partial)
        and any(not field.is_required() for field in view.model_fields.values())
    ]
    assert not plain
    shown = views.AcceptedMessage.model_validate({"id": "m", "user_id": "u", "template": "t", "status": "queued"})
    assert shown.model_dump(mode="json") == {"id": "m", "user_id": "u", "template": "t", "status": "queued"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "/v1/policies/settings"), ("PUT", "/v1/users/u1"), ("POST", "/v1/messages"), ("POST", "/v1/track")],
)
async def test_a_body_that_is_not_utf8_is_malformed_json_everywhere(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    """The same 422 whichever code reads the body (FastAPI, the fast lane, a bulk route), not a 400 from some."""
    response = await api.request(method, path, content=b'{"a": "\xff"}', headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    assert "malformed JSON" in response.json()["error"]["message"]
