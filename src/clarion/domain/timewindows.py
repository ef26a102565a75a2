"""Time arithmetic in the recipient's own time zone: daily sending windows and calendar buckets.

The policy stage uses this for quiet hours ("marketing only 09:00-20:00 local", "do not disturb 22:00-08:00")
and for frequency caps counted in the user's calendar day or week. Everything is pure: the only outside
input is the IANA time zone database, read through :mod:`zoneinfo`.

Wall-clock times that do not map to exactly one instant are resolved by one rule, used everywhere (window
starts, window ends, local midnights):

* **Non-existent** local times (the spring-forward gap, e.g. 02:30 on the US spring DST day in
  America/New_York) resolve to the first valid instant after the gap, i.e. the transition itself (03:00 local
  there). A window opening at 02:30 that day opens at 03:00; a window that both opens and closes inside the
  gap does not occur that day. A whole skipped day (Pacific/Apia, 30 December 2011) is a gap like any other.
* **Ambiguous** local times (the fall-back repeat, e.g. 01:30 happens twice) resolve to their FIRST occurrence
  (``fold=0``). A window 01:30-05:00 opens at the first 01:30 and stays open through the repeated hour; a
  window ending at 01:30 closes at the first 01:30 and does not reopen when 01:30 comes round again.

So a daily window is, for every local date, one interval of instants ``[open, close)``; it never opens
twice in a day and never flickers around a transition. Between transitions this is exactly the plain
wall-clock reading ("start <= local time < end").
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["DailyWindow", "calendar_bucket", "check_zone", "quiet_period", "resolve_zone"]

_WINDOW_RE = re.compile(r"\s*([0-9]{1,2}):([0-9]{2})\s*[-–]\s*([0-9]{1,2}):([0-9]{2})\s*")
# Names the system database holds that are not real zones: ``localtime`` is the server's own zone.
_NOT_USER_ZONES = frozenset({"localtime", "posixrules"})
# The shape of an IANA name ("UTC", "Asia/Shanghai", "America/Argentina/Buenos_Aires", "Etc/GMT+8"): only such a
# name is looked up, so no input reaches the file system as a path ("../etc", "/etc/passwd", NUL). The longest
# name in the database has 32 characters; profiles keep at most 64.
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9][A-Za-z0-9_+-]*){0,2}")
MAX_ZONE_NAME = 64
# How many local dates before/after the one `at` falls on can hold the interval that contains it. Transitions
# move wall-clock time by at most a day, so two on either side is generous.
_DAYS_AROUND = 2
# Enough for a skipped calendar day plus a window that falls entirely into a gap on the next one.
_MAX_DAYS_AHEAD = 8


@dataclass(frozen=True, slots=True)
class DailyWindow:
    """An allowed sending window in local wall-clock time, repeated every day.

    ``start`` is inclusive and ``end`` exclusive. ``end < start`` means the window crosses midnight
    (21:00-02:00 opens at 21:00 and closes at 02:00 the next day); ``start == end`` means always open.
    Both are naive :class:`datetime.time` values: the zone is the user's, supplied at each call.
    See the module docstring for how DST gaps and repeats are resolved.
    """

    start: time
    end: time

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, time):
                raise ValueError(f"DailyWindow.{name} must be a datetime.time, got {type(value).__name__}")
            if value.tzinfo is not None:
                raise ValueError(f"DailyWindow.{name} must be a naive wall-clock time, got tzinfo={value.tzinfo}")

    @classmethod
    def parse(cls, text: str) -> DailyWindow:
        """Parse ``"HH:MM-HH:MM"`` (e.g. ``"09:00-20:00"``, ``"21:00-02:00"``).

        Hours 0-23, minutes 0-59; the end may also be ``24:00`` (end of day, same as ``00:00``). Surrounding
        whitespace and an en dash are accepted. Anything else raises ``ValueError`` saying what is wrong.
        """
        if not isinstance(text, str):
            raise ValueError(f"time window must be a string like '09:00-20:00', got {type(text).__name__}")
        match = _WINDOW_RE.fullmatch(text)
        if match is None:
            raise ValueError(f"invalid time window {text!r}: expected 'HH:MM-HH:MM', e.g. '09:00-20:00'")
        sh, sm, eh, em = (int(g) for g in match.groups())
        start = _clock(text, "start", sh, sm, allow_24=False)
        end = _clock(text, "end", eh, em, allow_24=True)
        return cls(start, end)

    def __str__(self) -> str:
        return f"{_fmt(self.start)}-{_fmt(self.end)}"

    @property
    def always_open(self) -> bool:
        return self.start == self.end

    def is_open(self, at: datetime, tz: ZoneInfo) -> bool:
        """Whether the window is open at instant ``at`` (aware, any zone) for a user living in ``tz``."""
        at = _as_utc(at)
        if self.always_open:
            return True
        return any(opens <= at < closes for opens, closes in self._intervals(at, tz, days_after=_DAYS_AROUND))

    def next_open(self, at: datetime, tz: ZoneInfo) -> datetime:
        """``at`` if the window is open then, else the next instant it opens; always an aware UTC datetime.

        "Deferring to the next opening" is ``next_open(now, tz)``; the result is never earlier than ``at``.
        """
        at = _as_utc(at)
        if self.always_open:
            return at
        for opens, closes in self._intervals(at, tz, days_after=_MAX_DAYS_AHEAD):
            if closes <= at:
                continue
            # Intervals come in time order, so the first one still running either contains `at` or is the next.
            return at if opens <= at else opens
        raise ValueError(f"window {self} never opens in {tz} within {_MAX_DAYS_AHEAD} days of {at.isoformat()}")

    def _intervals(self, at: datetime, tz: ZoneInfo, *, days_after: int) -> list[tuple[datetime, datetime]]:
        """The window's non-empty ``[open, close)`` intervals (UTC) for the local dates around ``at``, in order."""
        today = at.astimezone(tz).date()
        crosses = self.end < self.start
        out = []
        for offset in range(-_DAYS_AROUND, days_after + 1):
            day = today + timedelta(days=offset)
            opens = _to_utc(day, self.start, tz)
            closes = _to_utc(day + timedelta(days=1) if crosses else day, self.end, tz)
            if opens < closes:  # empty when the whole window falls into a DST gap that day
                out.append((opens, closes))
        return out


def quiet_period(text: str) -> DailyWindow:
    """A do-not-disturb period such as ``"22:00-08:00"``, turned into its complementary allowed window (08:00-22:00).

    The quiet period's start and end must differ: "00:00-00:00" could mean quiet all day or never, and an
    always-closed window is better expressed by not sending at all.
    """
    quiet = DailyWindow.parse(text)
    if quiet.always_open:
        raise ValueError(f"invalid quiet period {text!r}: start and end must differ")
    return DailyWindow(start=quiet.end, end=quiet.start)


# Every delivery resolves its user's zone, and users share a few dozen zone names (a bad name costs a failed
# file lookup): each (name, default) is resolved once. Bounded, since names come from user profiles.
_RESOLVED: dict[tuple[str | None, str], ZoneInfo] = {}
_MAX_REMEMBERED = 4096


def resolve_zone(name: str | None, default: str) -> ZoneInfo:
    """The user's IANA zone ``name``, or the operator's ``default`` when the user has none or a bad one.

    A missing, empty, unknown or malformed user value never raises: it falls back to ``default``.
    A bad ``default`` is a configuration error and raises ``ValueError``. ``localtime`` and ``posixrules``
    (files in the system database that are not zones) are refused, since they would follow the server.
    """
    key = (name, default)
    found = _RESOLVED.get(key) if isinstance(name, str | None) and isinstance(default, str) else None
    if found is not None:
        return found
    fallback = _load_zone(default)
    if fallback is None:
        raise ValueError(f"invalid default time zone {default!r}: expected an IANA name like 'Europe/Berlin'")
    zone = _load_zone(name.strip()) or fallback if isinstance(name, str) and name.strip() else fallback
    if isinstance(name, str | None):
        if len(_RESOLVED) >= _MAX_REMEMBERED:
            _RESOLVED.clear()
        _RESOLVED[key] = zone
    return zone


def check_zone(name: object) -> str:
    """``name`` when it is an IANA time zone Clarion can use, else ``ValueError`` saying so (never an OS error).

    The operator's and the users' zones are checked with this where they are given: an empty name, a region
    folder such as ``Asia``, a path, or ``localtime`` (the server's own zone) is not a zone."""
    if not isinstance(name, str):
        raise ValueError(f"a time zone is an IANA name like 'Asia/Shanghai', not {type(name).__name__}")
    if _load_zone(name) is None:
        shown = repr(name) if len(name) <= MAX_ZONE_NAME else f"{name[:MAX_ZONE_NAME]!r}…"
        raise ValueError(f"unknown IANA time zone {shown}: expected a name like 'Asia/Shanghai' or 'UTC'")
    return name


# The bucket last given per zone and unit. Buckets tile the time line, so an instant inside it belongs to it:
# every delivery of one day in one zone is answered from here.
_LAST_BUCKET: dict[tuple[ZoneInfo, str], tuple[datetime, datetime, tuple[float, int]]] = {}


def calendar_bucket(at: datetime, tz: ZoneInfo, unit: Literal["day", "week"]) -> tuple[float, int]:
    """The user's local calendar day or week (Monday-based) containing ``at``: ``(start unix time, seconds)``.

    The bucket starts at local midnight (resolved like any wall-clock time: a midnight inside a DST gap
    means the first instant after it) and lasts until the next bucket starts, so its length is the true
    one: 23 h or 25 h on DST change days, 167 h or 169 h for weeks that contain one. Consecutive buckets
    tile the time line: the one after ``(start, seconds)`` starts exactly at ``start + seconds``.
    """
    at = _as_utc(at)
    last = _LAST_BUCKET.get((tz, unit))
    if last is not None and last[0] <= at < last[1]:
        return last[2]
    if unit == "day":
        step = timedelta(days=1)
        first = at.astimezone(tz).date()
    elif unit == "week":
        step = timedelta(days=7)
        local = at.astimezone(tz).date()
        first = local - timedelta(days=local.weekday())
    else:
        raise ValueError(f"invalid calendar unit {unit!r}: expected 'day' or 'week'")
    start, end = _midnights(first, step, tz)
    # `at` is never before its wall-clock date's midnight (first occurrence, or the end of a gap holding it),
    # but a transition that steps the clock back across midnight (00:01 -> 23:01, America/Goose_Bay until
    # 2010) gives instants after the next midnight the previous date again: follow the instants.
    while at >= end:
        first += step
        start, end = _midnights(first, step, tz)
    bucket = start.timestamp(), round((end - start).total_seconds())
    if len(_LAST_BUCKET) >= _MAX_REMEMBERED:
        _LAST_BUCKET.clear()
    _LAST_BUCKET[(tz, unit)] = (start, end, bucket)
    return bucket


@functools.lru_cache(maxsize=4096)
def _midnights(first: date, step: timedelta, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """Local midnight of ``first`` and of ``first + step``, as UTC: the same for every user of a zone on a day,
    so computed once (caps ask for it on every delivery)."""
    return _to_utc(first, time(0), tz), _to_utc(first + step, time(0), tz)


def _to_utc(day: date, clock: time, tz: ZoneInfo) -> datetime:
    """The instant local wall-clock ``day clock`` denotes in ``tz``, as aware UTC.

    Ambiguous times give their first occurrence (fold=0); times inside a gap give the first valid instant
    after it (the transition).
    """
    naive = datetime.combine(day, clock.replace(fold=0))
    first = naive.replace(tzinfo=tz).astimezone(UTC)  # fold=0: the earlier reading of an ambiguous time
    if first.astimezone(tz).replace(tzinfo=None) == naive:
        return first
    # In a gap, fold=0 applies the offset from before the transition (landing after it) and fold=1 the
    # offset from after (landing before it); the transition lies between. Find the first whole second whose
    # wall-clock reading has reached `naive` (transitions fall on whole seconds).
    other = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    lo, hi = sorted((other, first))
    lo_s, hi_s = math.floor(lo.timestamp()), math.ceil(hi.timestamp())
    while lo_s < hi_s:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= naive:
            hi_s = mid
        else:
            lo_s = mid + 1
    return datetime.fromtimestamp(lo_s, UTC)


def _load_zone(name: object) -> ZoneInfo | None:
    if (
        not isinstance(name, str)
        or len(name) > MAX_ZONE_NAME
        or name in _NOT_USER_ZONES
        or not _ZONE_NAME.fullmatch(name)
    ):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # unknown; not a zone file; a folder; unreadable
        return None


def _clock(text: str, which: str, hour: int, minute: int, *, allow_24: bool) -> time:
    if allow_24 and (hour, minute) == (24, 0):
        return time(0)
    if hour > 23:
        raise ValueError(f"invalid time window {text!r}: {which} hour {hour} is out of range 0-23")
    if minute > 59:
        raise ValueError(f"invalid time window {text!r}: {which} minute {minute} is out of range 0-59")
    return time(hour, minute)


def _fmt(clock: time) -> str:
    text = f"{clock.hour:02d}:{clock.minute:02d}"
    if clock.second or clock.microsecond:
        text += f":{clock.second:02d}"
        if clock.microsecond:
            text += f".{clock.microsecond:06d}"
    return text


def _as_utc(at: datetime) -> datetime:
    """``at`` in UTC. Everything compares in UTC: Python never calls an ambiguous local time equal to an
    instant in another zone, and UTC has no ambiguity."""
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"expected an aware datetime, got {at!r}")
    return at.astimezone(UTC)
