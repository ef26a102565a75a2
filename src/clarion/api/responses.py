"""JSON responses serialised with orjson (fast, and it handles datetimes and non-str keys).

Input is checked before it is stored, but an error that names what it refused may quote it: a key holding a lone
surrogate, which UTF-8 cannot carry, is then written as its ``\\ud800`` escape instead of failing the answer."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import JSONResponse


class JSON(JSONResponse):
    """A JSONResponse, so that FastAPI documents a route's ``response_model`` as its body (for any other response
    class OpenAPI says only ``{"type": "string"}``)."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError:
            return json.dumps(content, ensure_ascii=True, default=str, separators=(",", ":")).encode()
