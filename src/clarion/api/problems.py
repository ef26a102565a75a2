"""How errors look on the wire: ``{"error": {"code", "message", "details"}}`` with a 4xx status."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from clarion.api.responses import JSON
from clarion.domain import errors


class Problem(BaseModel):
    code: str = Field(description="machine readable: not_found, forbidden, invalid_input, conflict, …")
    message: str = Field(description="for people: what was wrong, naming the field")
    details: Any = Field(description="the fields at fault and what the code needs to say more; often null")


class ErrorBody(BaseModel):
    """Every error Clarion answers, whatever its status."""

    error: Problem


#: what each error status means, as OpenAPI describes it
MEANINGS = {
    400: "the request could not be read (a malformed upload)",
    401: "no API key, or not a valid one (`Authorization: Bearer <key>`)",
    403: "the key's roles do not allow this (`forbidden`), or the rules of review do not",
    404: "the object named in the path (or the body) does not exist",
    409: "the object's state does not allow this now",
    413: "the request body is over the size limit",
    415: "the body's content type is not one this operation reads",
    422: "the input is invalid: `details` names each field and what is wrong with it",
}


def answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of an operation's error statuses (401, 413 and 422 are added to every
    operation that can answer them by ``api.openapi``)."""
    return {status: {"model": ErrorBody, "description": MEANINGS[status]} for status in statuses}


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
