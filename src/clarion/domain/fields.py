"""Checks of a configuration document read field by field (policy settings, alert rules): each refusal is an
``InvalidInput`` naming the field, with the document's own error code."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clarion.domain import errors


@dataclass(frozen=True, slots=True)
class Fields:
    code: str  # e.g. "invalid_policy"

    def bad(self, field: str, message: str, **details: Any) -> errors.InvalidInput:
        return errors.InvalidInput(f"{field}: {message}", code=self.code, details={"field": field, **details})

    def obj(self, value: Any, field: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.bad(field, "must be an object")
        return value

    def known(self, value: Mapping[str, Any], field: str, allowed: set[str]) -> None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.bad(field, f"unknown field(s) {', '.join(unknown)}", allowed=sorted(allowed))

    def int(self, value: Any, field: str, *, minimum: int, maximum: int = 10**9) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise self.bad(field, f"must be an integer from {minimum} to {maximum}")
        return value

    def number(self, value: Any, field: str, *, minimum: float, maximum: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not minimum <= value <= maximum:
            raise self.bad(field, f"must be a number from {minimum:g} to {maximum:g}")
        return float(value)

    def bool(self, value: Any, field: str) -> bool:
        if not isinstance(value, bool):
            raise self.bad(field, "must be true or false")
        return value
