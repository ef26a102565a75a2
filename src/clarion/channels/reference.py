"""The provider reference, generated from the kinds themselves: each kind's channels, its ``Config`` fields (type,
default, whether secret, description), its default rate limit and the callback paths it takes.

``docs/providers.md`` holds these tables beside the prose of each kind (how callbacks are verified, what each
vendor status maps to); a test checks that every table in it is the one generated here, so the reference
cannot drift from the code. ``clarion providers reference`` prints them."""

from __future__ import annotations

import inspect
import re
import types
import typing
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from clarion.channels import base

BEGIN = "<!-- generated: {kind} -->"
END = "<!-- end generated: {kind} -->"


def _type_name(annotation: Any) -> str:
    if annotation is None or annotation is type(None):
        return "null"
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation))


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        value: Any = info.default_factory()  # type: ignore[call-arg]
    else:
        value = info.default
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, base.ProviderConfig):
        return "{…}"
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return f"`{text}`" if len(text) <= 60 else "`…`"


def _secret(spec: type[base.ProviderConfig], name: str) -> str:
    if name in spec.secret_fields:
        return "secret"
    if name in spec.url_fields:
        return "userinfo and query values secret"
    if name in spec.header_fields:
        return "values secret"
    if name in spec.template_fields:
        return "literals secret"
    return ""


def _comments(spec: type) -> dict[str, str]:
    """Field descriptions from the ``#:`` comments above each field, in ``spec`` and its bases (the kinds document
    their fields so, beside the code)."""
    found: dict[str, str] = {}
    for cls in reversed(spec.__mro__):
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            continue
        pending: list[str] = []
        for line in source.splitlines():
            text = line.strip()
            if text.startswith("#:"):
                pending.append(text[2:].strip())
                continue
            match = _FIELD.match(text)
            if match and pending:
                found[match.group(1)] = " ".join(pending)
            pending = []
    return found


_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:")


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def callbacks(cls: Any) -> list[str]:
    """The callback paths a kind takes (relative to the public URL), and polling when it polls."""
    paths = []
    if isinstance(cls, type):
        if hasattr(cls, "receipts") and hasattr(cls, "takes_receipts"):
            paths.append("`POST /r/{name}` (receipts)")
        if hasattr(cls, "bounces") and hasattr(cls, "takes_bounces"):
            paths.append("`POST /r/{name}/bounces` (bounces)")
        if hasattr(cls, "replies") and hasattr(cls, "takes_replies"):
            paths.append("`POST /r/{name}/replies` (SMS replies)")
        if hasattr(cls, "poll_receipts"):
            paths.append("receipts polled from the vendor")
    return paths


def table(cls: Any) -> str:
    """The generated part of one kind's reference, between its markers."""
    spec: type[base.ProviderConfig] = cls.Config
    channels = ", ".join(sorted(f"`{c.value}`" for c in cls.channels))
    rate = getattr(cls, "default_rate", None)
    lines = [BEGIN.format(kind=cls.kind), "", f"Channels: {channels}."]
    if rate and any(rate):
        per_second, per_minute = rate
        parts = [f"{per_second:g}/s" if per_second else "", f"{per_minute:g}/min" if per_minute else ""]
        lines.append(f"Default rate limit: {' and '.join(p for p in parts if p)}.")
    found = callbacks(cls)
    lines.append(f"Receipts: {'; '.join(found)}." if found else "Receipts: none.")
    lines += ["", "| field | type | default | secret | description |", "|---|---|---|---|---|"]
    comments = _comments(spec)
    for name, info in spec.model_fields.items():
        description = _escape(info.description or comments.get(name, ""))
        kind = _escape(_type_name(info.annotation))
        lines.append(f"| `{name}` | {kind} | {_escape(_default(info))} | {_secret(spec, name)} | {description} |")
    lines += ["", END.format(kind=cls.kind)]
    return "\n".join(lines)


def tables(kinds: dict[str, Any]) -> dict[str, str]:
    return {kind: table(cls) for kind, cls in sorted(kinds.items())}


def generated_part(document: str, kind: str) -> str | None:
    """The text between ``kind``'s markers in ``document`` (markers included), or None when it has none."""
    begin, end = BEGIN.format(kind=kind), END.format(kind=kind)
    start = document.find(begin)
    if start < 0:
        return None
    stop = document.find(end, start)
    return None if stop < 0 else document[start : stop + len(end)]


def refresh(document: str, kinds: dict[str, Any]) -> str:
    """``document`` with each kind's generated part replaced by the current one (kinds without markers are left
    for a human to place)."""
    for kind, text in tables(kinds).items():
        old = generated_part(document, kind)
        if old is not None:
            document = document.replace(old, text)
    return document
