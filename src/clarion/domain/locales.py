"""Dates, times, numbers and currencies the way a user's locale writes them (Babel, CLDR data).

What the template filters ``date``/``datetime``/``time``, ``number`` and ``currency`` need, without the
template language around it: locale and zone look-ups are cached, so a render only formats."""

from __future__ import annotations

import copy
import functools
import re
from datetime import UTC, date, datetime, time, tzinfo
from decimal import Decimal
from typing import Any

import babel
import babel.dates
import babel.numbers

from clarion.domain import timewindows

STYLES = ("short", "medium", "long", "full")
_PATTERN_PART = re.compile(r"''|'(?:[^']|'')*'|([A-Za-z])\1*|[^'A-Za-z]+|'")
_UNSUPPORTED_FIELDS = {"b": "which Babel cannot format in every locale (use 'a' or 'B')"}


@functools.lru_cache(maxsize=256)
def parse_locale(name: str) -> babel.Locale | None:
    """``zh_CN``, ``zh-CN``, ``de-DE``, ``en``, ``zh_CN.UTF-8``; None for what Babel does not know."""
    try:
        return babel.Locale.parse(name.strip().replace("-", "_"))
    except (ValueError, TypeError, babel.UnknownLocaleError):
        return None


@functools.lru_cache(maxsize=256)
def zone_named(name: str) -> tzinfo:
    return timewindows.resolve_zone(name, "UTC")


@functools.lru_cache(maxsize=256)
def decimal_pattern(locale: babel.Locale, digits: int) -> babel.numbers.NumberPattern:
    """The locale's own decimal pattern (grouping included) with exactly ``digits`` decimals."""
    pattern = copy.copy(locale.decimal_formats[None])
    pattern.frac_prec = (digits, digits)
    return pattern


@functools.lru_cache(maxsize=512)
def _known_currency(code: str) -> bool:
    return babel.numbers.is_currency(code)


def currency_code(value: Any) -> str | None:
    """An ISO 4217 code Babel knows (any case, as in "cny"), upper-cased; None for anything else."""
    if not isinstance(value, str):
        return None
    code = value.strip().upper()
    return code if _known_currency(code) else None


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a date style or a usable CLDR date pattern; None when it is one."""
    if pattern in STYLES:
        return None
    fields = 0
    for part in _PATTERN_PART.finditer(pattern):
        letter, size = part.group(1), len(part.group())
        if part.group() == "'":
            return "has an unclosed quote"
        if letter is None:
            continue
        if letter in _UNSUPPORTED_FIELDS:
            return f"uses field {letter!r}, {_UNSUPPORTED_FIELDS[letter]}"
        if letter not in babel.dates.PATTERN_CHARS:
            return f"has an unknown field {letter!r} (quote literal text, as in \"d 'at' HH:mm\")"
        sizes = babel.dates.PATTERN_CHARS[letter]
        if sizes is not None and size not in sizes:
            return f"cannot repeat field {letter!r} {size} times"
        fields += 1
    return None if fields else "has no date or time field"


def to_moment(value: Any) -> date | datetime:
    """A calendar date, or an aware datetime (a naive one is UTC); ``ValueError`` for anything else."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return value
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"cannot read {value!r} as unix seconds") from None
    if not isinstance(value, str):
        raise ValueError(f"needs an ISO 8601 string or unix seconds, not {type(value).__name__}")
    text = value.strip()
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"cannot read {text[:40]!r} as an ISO 8601 date or time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def format_when(value: Any, kind: str, style: str, locale: babel.Locale, zone: tzinfo) -> str:
    """``value`` as a ``kind`` ("date", "datetime" or "time") in ``zone``; a calendar date is not shifted."""
    moment = to_moment(value)
    if kind == "date" and style in STYLES:
        day = moment.astimezone(zone).date() if isinstance(moment, datetime) else moment
        return babel.dates.format_date(day, style, locale=locale)
    if not isinstance(moment, datetime):
        moment = datetime.combine(moment, time(), tzinfo=zone)
    if kind == "time" and style in STYLES:
        return babel.dates.format_time(moment, style, tzinfo=zone, locale=locale)
    return babel.dates.format_datetime(moment, style, tzinfo=zone, locale=locale)
