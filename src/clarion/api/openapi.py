"""The OpenAPI document: what FastAPI derives from the routes, completed with what answers outside them.

Routes declare their answers (``response_model=views.…``) and the error statuses their own code raises
(``responses=problems.answers(403, 404)``). Three statuses come from elsewhere and are added here, each to
exactly the operations that can answer it: 401 from ``middleware.Authenticate`` (every ``/v1/`` path), 413
from ``middleware.BodyLimit`` (every operation that takes a body) and 422 from request validation (every
operation with a body or a parameter that can be invalid), declared with the error body ``problems``
answers instead of FastAPI's own validation-error schema, which Clarion never sends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from clarion.api import problems

ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")
#: schema keywords that let a parameter's value be refused
_CONSTRAINTS = {"pattern", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
_CONSTRAINTS |= {"enum", "const", "format", "minItems", "maxItems", "anyOf", "oneOf", "allOf", "$ref"}


def document(app: FastAPI, *, protected: str = "/v1/") -> Callable[[], dict[str, Any]]:
    """``app.openapi``: FastAPI's document, completed once with the answers of the guards in front of
    ``protected``."""
    completed: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not completed:
            completed.update(complete(FastAPI.openapi(app), protected=protected))
            app.openapi_schema = completed
        return completed

    return openapi


def complete(schema: dict[str, Any], *, protected: str) -> dict[str, Any]:
    """``schema`` with 401, 413 and 422 declared where they can be answered, as the error body."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, model in (("ErrorBody", problems.ErrorBody), ("Problem", problems.Problem)):
        if name not in components:
            found = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(found.pop("$defs", {}))
            components[name] = found
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            declared = _declared(responses.pop("422", None))
            if declared or _validates(operation):
                responses["422"] = _error(422)
            if path.startswith(protected):
                responses["401"] = {
                    **_error(401),
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}},
                }
            if "requestBody" in operation:
                responses["413"] = _error(413)
            operation["responses"] = dict(sorted(responses.items()))
    for name in _FASTAPI_VALIDATION:
        components.pop(name, None)
    return schema


def _error(status: int) -> dict[str, Any]:
    return {"description": problems.MEANINGS[status], "content": ERROR}


def _validates(operation: dict[str, Any]) -> bool:
    """Whether the operation can refuse its input: it takes a body, a required query parameter, or a parameter
    whose schema constrains its value (a plain string in the path cannot be wrong). An operation whose own code
    refuses input it reads itself declares 422 in its route."""
    if "requestBody" in operation:
        return True
    for parameter in operation.get("parameters", []):
        if parameter.get("in") != "path" and parameter.get("required"):
            return True
        if _CONSTRAINTS & set(parameter.get("schema", {})) or parameter.get("schema", {}).get("type") != "string":
            return True
    return False


def _declared(response: dict[str, Any] | None) -> bool:
    """Whether a 422 is the route's own (``problems.answers(422)``), not FastAPI's default one."""
    schema = (response or {}).get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/ErrorBody"))


#: the body of ``POST /v1/lists``, which the route reads itself (an upload of any size, streamed)
LIST_UPLOAD = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary", "description": "one value a line"}},
                    "required": ["file"],
                }
            },
            "text/plain": {"schema": {"type": "string", "description": "one value a line"}},
            "text/csv": {"schema": {"type": "string", "description": "the values in the first column"}},
        },
    }
}
