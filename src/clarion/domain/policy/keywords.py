"""Keyword interception on the rendered content of every channel: a block list filters the delivery naming the
word; mask lists replace their words with ``***`` and the delivery goes out. Every string of the content is
screened (subject, text, html, title, body, a webhook's JSON values)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clarion.domain import keywords
from clarion.domain.policy.decision import ALLOW, Decision, Drop

POLICY = "keywords"


def screen(
    content: dict[str, Any], lists: Sequence[keywords.KeywordList]
) -> tuple[Decision, dict[str, Any], list[dict[str, Any]]]:
    """(decision, content to send, masked words with the field they were in)."""
    if not lists:
        return ALLOW, content, []
    masked: list[dict[str, Any]] = []
    try:
        screened = {k: _walk(v, k, lists, masked) for k, v in content.items()}
    except _Blocked as blocked:
        hit = blocked.result.blocked_by
        assert hit is not None
        return (
            Drop(
                POLICY,
                f"keyword: {hit.word!r} (list {hit.list_key}) in {blocked.field}",
                {**blocked.result.detail, "field": blocked.field},
            ),
            content,
            [],
        )
    return ALLOW, screened, masked


def _walk(value: Any, path: str, lists: Sequence[keywords.KeywordList], masked: list[dict[str, Any]]) -> Any:
    if isinstance(value, str):
        result = keywords.screen(value, lists)
        if result.blocked_by is not None:
            raise _Blocked(path, result)
        if result.masks:
            masked.extend({"field": path, "word": m.word, "list": m.list_key} for m in result.masks)
        return result.masked_text
    if isinstance(value, list):
        return [_walk(v, f"{path}.{i}", lists, masked) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _walk(v, f"{path}.{k}" if path else k, lists, masked) for k, v in value.items()}
    return value


class _Blocked(Exception):
    def __init__(self, field: str, result: keywords.Screening) -> None:
        self.field, self.result = field, result
