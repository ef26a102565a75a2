"""Filling an empty :class:`SegmentIndex` from pages of users and events, through its bulk loaders.

Calling ``upsert`` per user at start would clear every bitmap for every user (quadratic); this collects compact
arrays of rows per tag, value, column and event day while pages stream in, then hands each to a bulk loader once.
It keeps ``upsert``'s rules, with the same code (:class:`~clarion.segments.index.AttributeRules`): an
attribute's kind is its declared one or that of the first value seen (in user-id order), list values are
categories per element, values that do not fit the kind are skipped, an attribute that reaches
``max_categories`` values is dropped. Strings that look like ISO 8601 dates or times are timestamps
(see :func:`prepared`)."""

from __future__ import annotations

import contextlib
import re
from array import array
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import numpy as np

from clarion.segments import index as ix

_ISO = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?")


def prepared(attributes: Mapping[str, Any], kinds: Mapping[str, ix.Kind]) -> dict[str, Any]:
    """Attributes as the index should see them: an ISO 8601 date or date-time string (``2026-03-01``,
    ``2026-03-01T08:00:00+08:00``) becomes a datetime, so an attribute whose first value is one is a timestamp,
    unless the attribute is already known as something else (then the string stays a string)."""
    out = dict(attributes)
    for name, value in attributes.items():
        if isinstance(value, str) and kinds.get(name, "timestamp") == "timestamp" and _ISO.fullmatch(value):
            with contextlib.suppress(ValueError):
                out[name] = datetime.fromisoformat(value)
    return out


class BulkLoad(ix.AttributeRules):
    """Users (in the index's row order: UTF-8 byte order of the ids), their last events and event days."""

    def __init__(self, index: ix.SegmentIndex) -> None:
        if index.rows:
            raise ValueError("a bulk load needs an empty index")
        self.index = index
        self.kinds: dict[str, ix.Kind] = dict(index.kinds)
        self.ids: list[bytes] = []
        self.tags: dict[str, array[int]] = {}
        self.values: dict[str, dict[ix.CategoryKey, tuple[Any, array[int]]]] = {}
        self.columns: dict[str, tuple[array[int], list[int | float]]] = {}
        self.unindexed: set[str] = set(index.unindexed)
        self.max_categories = index.max_categories
        self.last: dict[str, tuple[array[int], array[int]]] = {}
        self.days: dict[tuple[str, int], array[int]] = {}
        self.strays: list[tuple[str, str, datetime]] = []
        self.skipped = 0

    def add_user(self, user_id: str, attributes: Mapping[str, Any], tags: Iterable[str]) -> int:
        row = len(self.ids)
        self.ids.append(user_id.encode())
        for tag in dict.fromkeys(tags):
            self.tags.setdefault(tag, array("I")).append(row)
        for name, value in prepared(attributes, self.kinds).items():
            if value is not None and not self._set(row, name, value):
                self.skipped += 1
        return row

    def add_last_event(self, row: int | None, user_id: str, event: str, at: datetime) -> None:
        """The user's latest ``event`` (``row`` None: an id that is not a user, tracked after the load)."""
        minutes = self._minutes(row, user_id, event, at)
        if minutes is not None and row is not None:
            rows, values = self.last.setdefault(event, (array("I"), array("i")))
            rows.append(row)
            values.append(minutes)

    def add_event(self, row: int | None, user_id: str, event: str, at: datetime) -> None:
        """One event within the horizon, for the per-day bitmaps."""
        minutes = self._minutes(row, user_id, event, at)
        if minutes is not None and row is not None:
            self.days.setdefault((event, minutes // 1440), array("I")).append(row)

    def _minutes(self, row: int | None, user_id: str, event: str, at: datetime) -> int | None:
        """``at`` in minutes, for an event of a loaded user; None for an unusable time, and for an event of an id
        that is not a user (kept to be tracked after the load)."""
        minutes = ix.timestamp_minutes(at)
        if minutes is None:
            return None
        if row is None:
            self.strays.append((user_id, event, at))
            return None
        return minutes

    def _put_number(self, name: str, kind: ix.Kind, row: int, number: int | float) -> None:
        rows, values = self.columns.setdefault(name, (array("I"), []))
        rows.append(row)
        values.append(number)

    def _category_values(self, name: str) -> dict[ix.CategoryKey, Any]:
        return self.values.setdefault(name, {})

    def _drop_categories(self, name: str) -> None:
        del self.values[name]

    def _new_category(self, value: Any) -> tuple[Any, array[int]]:
        return (value, array("I"))

    def _add_row(self, entry: tuple[Any, array[int]], row: int) -> None:
        entry[1].append(row)

    def finish(self) -> ix.SegmentIndex:
        """Load everything collected into the index and return it."""
        index = self.index
        if self.ids:
            index.load_users(np.array(self.ids))
        n = index.rows
        for tag, rows in self.tags.items():
            index.load_tag(tag, _rows(rows))
        for name, values in self.values.items():
            for value, rows in values.values():
                index.load_value(name, value, _rows(rows))
        for name, (rows, numbers) in self.columns.items():
            present = np.zeros(n, dtype=np.bool_)
            present[_rows(rows)] = True
            if self.kinds[name] == "timestamp":
                seconds = np.zeros(n, dtype=np.int64)
                seconds[_rows(rows)] = np.asarray(numbers, dtype=np.int64) * 60
                index.load_timestamps(name, seconds, present)
            else:
                exact = all(isinstance(v, int) and -(2**63) <= v < 2**63 for v in numbers)
                column = np.zeros(n, dtype=np.int64 if exact else np.float64)
                column[_rows(rows)] = numbers
                index.load_numbers(name, column, present)
        index.kinds.update(self.kinds)
        index.unindexed |= self.unindexed
        index.skipped_values += self.skipped
        for event, (rows, minutes) in self.last.items():
            seconds = np.zeros(n, dtype=np.int64)
            seconds[_rows(rows)] = np.frombuffer(minutes, dtype=np.int32).astype(np.int64) * 60
            present = np.zeros(n, dtype=np.bool_)
            present[_rows(rows)] = True
            index.load_event_last(event, seconds, present)
        for (event, day), rows in sorted(self.days.items(), key=lambda item: item[0][1]):
            index.load_event_day(event, day, _rows(rows))
        for user_id, event, at in self.strays:
            index.track(user_id, event, at)
        return index


def _rows(rows: array[int]) -> Any:
    return np.frombuffer(rows, dtype=np.uint32) if len(rows) else np.zeros(0, dtype=np.uint32)
