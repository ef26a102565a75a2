"""How errors look on the wire: ``{"error": {"code", "message", "details"}}`` with a 4xx status."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clarion.api.responses import JSON
from clarion.domain import errors


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def invalid_input(exc: errors.InvalidInput) -> JSON:
    return JSON(error_body(exc.code, exc.message, exc.details), status_code=exc.status)


def validation_failed(problems: Sequence[Any]) -> JSON:
    """422 for pydantic/FastAPI validation errors, each named by its dotted field path in the body or query."""
    details = []
    for e in problems:
        loc = [str(p) for p in e.get("loc", ())]
        if e.get("type") == "json_invalid":
            field = "body"
            message = f"malformed JSON: {e.get('ctx', {}).get('error', 'invalid')}"
        else:
            field = ".".join(loc[1:] if loc and loc[0] == "body" else loc) or "body"
            message = e.get("msg", "invalid")
        details.append({"field": field, "message": message})
    first = details[0] if details else {"field": "body", "message": "invalid"}
    return JSON(error_body("invalid_input", f"{first['field']}: {first['message']}", details), status_code=422)
