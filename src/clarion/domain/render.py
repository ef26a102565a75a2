"""Rendering: the one function that turns a template's channel content into the text a user receives.

This is the placeholder form: ``{name}``, ``${name}``, ``{user.city}``, ``{data.order.id}``. A bare name is
looked up in the request's data first, then in the user's attributes. A ``{`` that does not open a placeholder
(JSON in a webhook body, a brace in prose) is left alone. A missing value raises ``MissingVariable`` before any
text is produced, so a message is never sent half-filled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from clarion.domain import errors, model

_PLACEHOLDER = re.compile(r"\$?\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\}")
_MISSING = object()


def context_for(user: model.User | None, data: Mapping[str, Any]) -> dict[str, Any]:
    """The values a template may use: ``data.*`` from the request, ``user.*`` from the user's profile."""
    profile: dict[str, Any] = {}
    if user is not None:
        profile = dict(user.attributes)
        profile.update(user_id=user.user_id, id=user.user_id, locale=user.locale, timezone=user.timezone)
    return {"data": data, "user": profile}


def _lookup(path: str, context: Mapping[str, Any]) -> Any:
    parts = path.split(".")
    if parts[0] in ("data", "user") and len(parts) > 1:
        roots: tuple[Any, ...] = (context.get(parts[0], {}),)
        parts = parts[1:]
    else:
        roots = (context.get("data", {}), context.get("user", {}))
    for root in roots:
        value: Any = root
        for part in parts:
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            else:
                value = _MISSING
                break
        if value is not _MISSING and value is not None:
            return value
    return _MISSING


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return str(value)


def render_text(text: str, context: Mapping[str, Any]) -> str:
    if "{" not in text:
        return text

    def substitute(match: re.Match[str]) -> str:
        value = _lookup(match.group(1), context)
        if value is _MISSING:
            raise errors.MissingVariable(match.group(1))
        return _to_text(value)

    return _PLACEHOLDER.sub(substitute, text)


def _render_value(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return render_text(value, context)
    if isinstance(value, list):
        return [_render_value(v, context) for v in value]
    if isinstance(value, dict):
        return {k: _render_value(v, context) for k, v in value.items()}
    return value


def render(channel: model.Channel, content: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Fill one channel's content for one user. Raises ``RenderError`` (never a half-filled result)."""
    return {key: _render_value(value, context) for key, value in content.items()}


def variables(content: Mapping[str, Any]) -> set[str]:
    """The placeholders a channel content uses (shown to operators, checked by later validation)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.update(m.group(1) for m in _PLACEHOLDER.finditer(value))
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)

    walk(content)
    return found
