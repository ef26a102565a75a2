"""What a JSON value must be for Clarion to store it, checked once at the door.

Free-form JSON (user attributes, a send's ``data``, a webhook body, tracked properties, a campaign's data …) is
written as it came, so whatever the JSON codec or a database cannot hold must be refused before the write, not
discovered by it:

* **integers** from -2^63 to 2^63-1. The JSON codec stops at 64 bits, SQLite's JSON functions read larger
  integers as inexact reals, and the segment index keeps numbers as 64-bit values; beyond that, send a string.
* **numbers** that are finite. ``NaN`` and ``Infinity`` are not JSON (some parsers take them anyway) and would be
  stored as null.
* **strings and object keys** that are valid Unicode without NUL: a lone surrogate (``"\\ud800"``) cannot be
  encoded as UTF-8, and PostgreSQL's JSONB refuses ``\\u0000``.
* **nesting** of at most ``MAX_DEPTH`` arrays and objects, the outermost counted (a request body is one level,
  its ``attributes`` a second …). The codec's own limit is 254, and rows wrap the value in a few more levels;
  business data rarely nests beyond five.

``problem(value)`` names the first thing wrong, with its path inside the value, or says nothing. It is on the
path of every send, so it visits each value once and does no work for what is plainly fine (ASCII text, small
integers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_INT", "MIN_INT", "Problem", "dotted", "problem", "text_problem"]

MAX_DEPTH = 32
MIN_INT = -(2**63)
MAX_INT = 2**63 - 1

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a value cannot be stored: ``path`` leads to the offending part (keys shown printable), ``message``
    says what is wrong with it."""

    path: Path
    message: str

    def field(self, prefix: str = "") -> str:
        """The dotted field name, e.g. ``attributes.a.0`` for the path ``("a", 0)`` under ``attributes``."""
        return dotted((prefix, *self.path) if prefix else self.path)


def dotted(path: Path) -> str:
    return ".".join(str(p) for p in path)


def problem(value: Any) -> Problem | None:
    """The first part of ``value`` that cannot be stored, or None when all of it can."""
    found = _walk(value, 1)
    if found is None:
        return None
    reversed_path, message = found
    return Problem(tuple(reversed(reversed_path)), message)


def text_problem(text: str) -> str | None:
    """What makes ``text`` unstorable (a lone surrogate, a NUL), or None."""
    if text.isascii():
        return _NUL if "\x00" in text else None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE
    return _NUL if "\x00" in text else None


_INT = f"integer out of range: from {MIN_INT} to {MAX_INT} (send larger numbers as strings)"
_FLOAT = "NaN and Infinity are not JSON numbers: give a finite number"
_DEEP = f"nested deeper than {MAX_DEPTH} levels"
_SURROGATE = "a lone surrogate (\\ud800-\\udfff) is not valid Unicode"
_NUL = "a NUL character (\\u0000) is not allowed"

_Found = tuple[list[str | int], str]


def _walk(value: Any, depth: int) -> _Found | None:
    kind = type(value)
    if kind is dict:
        return _object(value, depth)
    if kind is list or kind is tuple:
        return _array(value, depth)
    if kind is str:
        return _text(value)
    if kind is int:
        return None if MIN_INT <= value <= MAX_INT else ([], _INT)
    if kind is float:
        return None if value - value == 0.0 else ([], _FLOAT)  # inf - inf and nan - nan are nan
    if value is None or kind is bool:
        return None
    return _subclass(value, depth)


# Containers look at their plain members in place (ASCII text, 64-bit integers, finite floats, true/false/null:
# nearly everything) and call _walk only for the rest, since a call costs more than the check.


def _object(value: dict[Any, Any], depth: int) -> _Found | None:
    if depth > MAX_DEPTH:
        return [], _DEEP
    for key, item in value.items():
        if type(key) is not str or not key.isascii() or "\x00" in key:
            if type(key) is not str:
                return [_shown(key)], "object keys must be strings"
            wrong = text_problem(key)
            if wrong is not None:
                return [_shown(key)], f"in the key: {wrong}"
        kind = type(item)
        if kind is str:
            if item.isascii() and "\x00" not in item:
                continue
        elif kind is int:
            if MIN_INT <= item <= MAX_INT:
                continue
        elif kind is float:
            if item - item == 0.0:
                continue
        elif item is None or kind is bool:
            continue
        found = _walk(item, depth + 1)
        if found is not None:
            found[0].append(key)
            return found
    return None


def _array(value: list[Any] | tuple[Any, ...], depth: int) -> _Found | None:
    if depth > MAX_DEPTH:
        return [], _DEEP
    for index, item in enumerate(value):
        kind = type(item)
        if kind is str:
            if item.isascii() and "\x00" not in item:
                continue
        elif kind is int:
            if MIN_INT <= item <= MAX_INT:
                continue
        elif kind is float:
            if item - item == 0.0:
                continue
        elif item is None or kind is bool:
            continue
        found = _walk(item, depth + 1)
        if found is not None:
            found[0].append(index)
            return found
    return None


def _text(value: str) -> _Found | None:
    wrong = text_problem(value)
    return None if wrong is None else ([], wrong)


def _subclass(value: Any, depth: int) -> _Found | None:
    """Values of a subclass of a JSON type (an enum member, a ``str`` subclass) are checked as their base."""
    bases: tuple[type[Any], ...] = (str, int, float, dict, list, tuple)
    for base in bases:
        if isinstance(value, base):
            return _walk(base(value), depth)
    return [], f"not a JSON value ({type(value).__name__})"


def _shown(key: object) -> str:
    """A key as it can be shown in an error (which is itself JSON): unprintable characters escaped."""
    text = str(key)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
