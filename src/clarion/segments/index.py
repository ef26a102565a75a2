"""The in-memory audience index that segments are evaluated against: bitmaps and columns over dense row numbers.

Every user gets a dense **row** number (0, 1, 2 …) for the life of the process; a row never changes owner.
The ``user_id ↔ row`` map is a sorted NumPy array of fixed-width UTF-8 bytes for the users bulk-loaded at start
(binary search; one width for all, so keep ids short — 10^8 ids of 10 bytes take 1 GB) plus a dict for the users
inserted later. ``live`` is the bitmap of rows that exist; deleting a user clears its row everywhere and removes it
from ``live``; upserting it again reuses the row.

Per attribute the index keeps one of three shapes, fixed per attribute by the ``schema`` given at construction or,
for undeclared attributes, by the type of the first value seen:

* ``category`` (strings, booleans, lists of those; declared low-cardinality numbers such as ``level``): one
  :class:`BitMap` per distinct value. A list value puts the row in the bitmap of each element, and every condition
  then means "some element satisfies it" (``!=`` means "has the attribute and no element equals"). An attribute
  that reaches ``max_categories`` distinct values is dropped from the index; conditions on it are refused.
* ``number`` (undeclared ints and floats): a NumPy column (the bulk loader's dtype is kept; a value the dtype
  cannot hold promotes the column to float64) plus a presence bitmap.
* ``timestamp`` (``datetime`` values; ISO 8601 strings or epoch seconds when declared): an int32 column of
  **minutes** since the epoch, floored, plus a presence bitmap. All time conditions compare at minute resolution.

Tags are one bitmap each; ID lists are bitmaps registered by name (ids not known yet get a row that is not live, so
a user created later is in the list). Behaviour, per event name: ``last_at`` (int32 minutes, ``NEVER`` when never)
answers "at least once within the last N hours/days" exactly, and one bitmap per UTC day for ``horizon_days`` days
answers "at least k times within N days" **approximately: k counts distinct UTC days with the event**, among the
days from the one holding ``now - N`` up to the newest. Events at or after ``now - N`` count, including any dated
after ``now`` (clock skew). Days older than the horizon (counted from the newest day seen) are dropped.

Loading: on start, fill an empty index with the bulk loaders (``load_users`` first; every array after it is aligned
to row order, or is an array of rows), then keep it current with ``upsert``, ``delete``, ``track`` and
``register_list``. Not thread-safe: mutations and evaluations are plain synchronous calls meant for one event loop;
if evaluation is moved to a thread (a 10^8 count blocks for up to half a second), guard it and the mutations with
one lock.
"""

from __future__ import annotations

import abc
import array
import bisect
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal, TypeAlias

import numpy as np
from numpy.typing import NDArray
from pyroaring import BitMap

from clarion.domain import errors

Kind = Literal["category", "number", "timestamp"]
CategoryKey: TypeAlias = tuple[str, Any]
KINDS: tuple[Kind, ...] = ("category", "number", "timestamp")
NEVER = int(np.iinfo(np.int32).min)
_I32 = np.iinfo(np.int32)
_CHUNK = 1 << 16
_NO_RUN_COOKIE = 12346


def rows_to_bitmap(rows: NDArray[Any]) -> BitMap:
    """A bitmap of the given rows (any order); far faster than ``BitMap(ndarray)``, which iterates in Python."""
    out = array.array("I")
    out.frombytes(np.ascontiguousarray(rows, dtype=np.uint32).tobytes())
    return BitMap(out)


def bitmap_rows(bitmap: BitMap) -> NDArray[np.uint32]:
    return np.frombuffer(bitmap.to_array(), dtype=np.uint32)


def mask_to_bitmap(mask: NDArray[np.bool_]) -> BitMap:
    """The rows where ``mask`` is true, without listing them one by one: 10-40 ms for 10^7 rows.

    The mask is bit-packed into roaring's portable format and deserialized. Chunks of 2^16 rows holding more than
    4096 rows are written as they are (bitset containers); sparser chunks are written *inverted* (so they too are
    bitsets) and flipped back inside CRoaring by one XOR with their full ranges."""
    n = len(mask)
    if n == 0:
        return BitMap()
    packed = np.packbits(mask, bitorder="little")
    chunks = -(-n // _CHUNK)
    words = np.zeros(chunks * 1024, dtype=np.uint64)
    words.view(np.uint8)[: len(packed)] = packed
    table = words.reshape(chunks, 1024)
    cards = np.bitwise_count(table).sum(axis=1, dtype=np.int64)
    keys = np.flatnonzero(cards)
    sparse = keys[cards[keys] <= 4096]
    table[sparse] = ~table[sparse]
    cards[sparse] = _CHUNK - cards[sparse]
    size = len(keys)
    descriptive = np.empty(size * 2, dtype="<u2")
    descriptive[0::2] = keys
    descriptive[1::2] = cards[keys] - 1
    offsets = (8 + size * 8 + 8192 * np.arange(size, dtype=np.int64)).astype("<u4")
    head = struct.pack("<II", _NO_RUN_COOKIE, size)
    found = BitMap.deserialize(b"".join([head, descriptive.tobytes(), offsets.tobytes(), table[keys].tobytes()]))
    if len(sparse):
        flips = BitMap()
        for key in sparse.tolist():
            flips.add_range(key << 16, (key + 1) << 16)
        found ^= flips
    return found


def timestamp_minutes(value: Any) -> int | None:
    """Minutes since the epoch (floored) of a datetime, an ISO 8601 string (no zone: UTC) or epoch seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime):
        value = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, int | float) and math.isfinite(value):
        minutes = math.floor(value / 60)
        return minutes if _I32.min < minutes <= _I32.max else None
    return None


def column_value(kind: Kind, value: Any) -> int | float | None:
    """What a number or timestamp column holds for ``value`` (minutes since the epoch for a timestamp); None for
    a value the column cannot hold."""
    if kind == "timestamp":
        return timestamp_minutes(value)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return value if ok else None


def category_key(value: Any) -> CategoryKey | None:
    """Dictionary key of a categorical value: booleans, numbers and strings never collide (``True != 1``)."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value) if math.isfinite(value) else None
    if isinstance(value, str):
        return ("s", value)
    return None


def _detect(value: Any) -> Kind | None:
    if isinstance(value, datetime):
        return "timestamp"
    if isinstance(value, bool | str | list | tuple):
        return "category"
    if isinstance(value, int | float):
        return "number"
    return None


def _grown(values: NDArray[Any], need: int, fill: int) -> NDArray[Any]:
    if need <= len(values):
        return values
    bigger = np.full(max(need, len(values) + len(values) // 8 + 1024), fill, dtype=values.dtype)
    bigger[: len(values)] = values
    return bigger


class _UserIds:
    """user_id ↔ row: a bulk-loaded sorted bytes array (binary search) plus a dict for later inserts."""

    def __init__(self) -> None:
        self.base: NDArray[Any] = np.empty(0, dtype="S1")
        self.extra: dict[str, int] = {}
        self.extra_ids: list[str] = []

    def __len__(self) -> int:
        return len(self.base) + len(self.extra_ids)

    def load(self, ids: NDArray[Any] | Sequence[str]) -> None:
        base = np.asarray(ids)
        if base.dtype.kind == "U" or base.dtype == object:
            base = np.char.encode(base.astype(str), "utf-8")
        if base.dtype.kind != "S":
            raise errors.InvalidInput("user ids must be strings", code="invalid_index_load")
        if len(base) > 1 and not bool(np.all(base[1:] > base[:-1])):
            raise errors.InvalidInput(
                'bulk-loaded user ids must be unique and sorted by their UTF-8 bytes (ORDER BY user_id COLLATE "C")',
                code="invalid_index_load",
            )
        self.base = base

    def row(self, user_id: str) -> int | None:
        row = self.extra.get(user_id)
        if row is not None:
            return row
        key = user_id.encode()
        if not key or len(key) > self.base.dtype.itemsize or key.endswith(b"\0"):
            return None
        i = int(np.searchsorted(self.base, key))
        return i if i < len(self.base) and self.base[i] == key else None

    def add(self, user_id: str) -> int:
        row = len(self)
        self.extra[user_id] = row
        self.extra_ids.append(user_id)
        return row

    def rows(self, user_ids: Iterable[str]) -> NDArray[np.int64]:
        """Rows of many ids at once (-1 for unknown ids)."""
        return np.fromiter((-1 if (r := self.row(u)) is None else r for u in user_ids), dtype=np.int64)

    def ids(self, rows: NDArray[Any]) -> list[str]:
        cut = int(np.searchsorted(rows, len(self.base)))
        found = [b.decode() for b in self.base[rows[:cut]].tolist()]
        return found + [self.extra_ids[r - len(self.base)] for r in rows[cut:].tolist()]


@dataclass
class Column:
    """A number or timestamp attribute: values by row (garbage where absent) and the rows that have one."""

    kind: Kind
    values: NDArray[Any]
    present: BitMap = field(default_factory=BitMap)

    def set(self, row: int, value: int | float) -> None:
        self.values = _grown(self.values, row + 1, 0)
        dtype = self.values.dtype
        if dtype.kind in "iu" and not (isinstance(value, int) and np.iinfo(dtype).min <= value <= np.iinfo(dtype).max):
            self.values = self.values.astype(np.float64)
        self.values[row] = value
        self.present.add(row)


@dataclass
class EventLog:
    """One event name: last time per row (minutes, NEVER when never) and the rows active on each UTC day."""

    last_at: NDArray[np.int32] = field(default_factory=lambda: np.empty(0, dtype=np.int32))
    days: dict[int, BitMap] = field(default_factory=dict)


class AttributeRules(abc.ABC):
    """How an attribute value becomes index entries, shared by ``SegmentIndex.upsert`` and the bulk load
    (``clarion.segments.bulk``), which keep the entries differently: an attribute's kind is its declared one or
    that of the first value seen; list values are categories per element; a value that does not fit the kind is
    skipped; an attribute that reaches ``max_categories`` values is dropped (``unindexed``). Subclasses say
    where categories and column values go."""

    kinds: dict[str, Kind]
    unindexed: set[str]
    max_categories: int

    def _set(self, row: int, name: str, value: Any) -> bool:
        """Index ``value`` of attribute ``name`` for ``row``; False when (part of) it was skipped."""
        kind = self.kinds.get(name) or _detect(value)
        if kind is None or name in self.unindexed:
            return kind is not None
        self.kinds[name] = kind
        if kind == "category":
            return all([self._add_category(row, name, v) for v in (value if isinstance(value, list) else [value])])
        number = column_value(kind, value)
        if number is None:
            return False
        self._put_number(name, kind, row, number)
        return True

    def _add_category(self, row: int, name: str, value: Any) -> bool:
        key = category_key(value)
        if key is None:
            return False
        if name in self.unindexed:
            return True
        values = self._category_values(name)
        if key not in values:
            if len(values) >= self.max_categories:
                self.unindexed.add(name)
                self._drop_categories(name)
                return True
            values[key] = self._new_category(value)
        self._add_row(values[key], row)
        return True

    @abc.abstractmethod
    def _put_number(self, name: str, kind: Kind, row: int, number: int | float) -> None:
        """Store ``row``'s number (or date/time as a number) for column ``name``."""

    @abc.abstractmethod
    def _category_values(self, name: str) -> dict[CategoryKey, Any]:
        """The entries of ``name``'s values (created empty when missing)."""

    @abc.abstractmethod
    def _drop_categories(self, name: str) -> None:
        """Forget every entry of ``name`` (it has become unindexed)."""

    @abc.abstractmethod
    def _new_category(self, value: Any) -> Any:
        """A new, empty entry for ``value``."""

    @abc.abstractmethod
    def _add_row(self, entry: Any, row: int) -> None:
        """Add ``row`` to a category entry."""


class SegmentIndex(AttributeRules):
    """Tags, attributes, behaviour and ID lists of every user, laid out for fast segment evaluation."""

    def __init__(
        self, schema: Mapping[str, Kind] | None = None, *, horizon_days: int = 90, max_categories: int = 10_000
    ) -> None:
        for name, kind in (schema or {}).items():
            if kind not in KINDS:
                raise errors.InvalidInput(f"attribute {name!r}: unknown kind {kind!r}", code="invalid_index_schema")
        self.kinds: dict[str, Kind] = dict(schema or {})
        self.horizon_days = horizon_days
        self.max_categories = max_categories
        self.live = BitMap()
        self.tags: dict[str, BitMap] = {}
        self.categories: dict[str, dict[CategoryKey, BitMap]] = {}
        self.columns: dict[str, Column] = {}
        self.events: dict[str, EventLog] = {}
        self.lists: dict[str, BitMap] = {}
        self.unindexed: set[str] = set()
        self.newest_day = -(2**31)
        self.skipped_values = 0
        self._ids = _UserIds()

    @property
    def rows(self) -> int:
        return len(self._ids)

    def user_ids_of(self, rows: NDArray[Any]) -> list[str]:
        """The user ids of ascending rows."""
        return self._ids.ids(rows)

    def row_of(self, user_id: str) -> int | None:
        return self._ids.row(user_id)

    # -- bulk loading (start-up) ------------------------------------------------------------------------------------

    def load_users(self, user_ids: NDArray[Any] | Sequence[str]) -> None:
        """Create rows 0..n-1 for unique ids sorted by their UTF-8 bytes (an ``S`` array is the cheapest input)."""
        if self.rows:
            raise errors.InvalidInput("load_users needs an empty index", code="invalid_index_load")
        self._ids.load(user_ids)
        self.live = BitMap(range(self.rows))
        self.live.run_optimize()

    def rows_for(self, user_ids: Iterable[str]) -> NDArray[np.int64]:
        return self._ids.rows(user_ids)

    def load_tag(self, tag: str, rows: NDArray[Any]) -> None:
        """Tag the given rows (an array of rows, or a bool mask by row)."""
        self.tags[tag] = self._bitmap(rows) | self.tags.get(tag, BitMap())

    def load_categories(self, attr: str, codes: NDArray[Any], categories: Sequence[Any]) -> None:
        """A categorical attribute by row: ``categories[codes[row]]``, code -1 where absent."""
        self.kinds.setdefault(attr, "category")
        codes = np.asarray(codes)
        order = np.argsort(codes, kind="stable")
        counts = np.bincount(codes.astype(np.int64) + 1, minlength=len(categories) + 1)
        bounds = np.cumsum(counts).tolist()
        for code, value in enumerate(categories):
            if bounds[code] < bounds[code + 1]:
                self.load_value(attr, value, order[bounds[code] : bounds[code + 1]])

    def load_value(self, attr: str, value: Any, rows: NDArray[Any]) -> None:
        """Give the rows (or mask) one more value of a categorical attribute (call once per element of a list)."""
        key = category_key(value)
        if key is None:
            raise errors.InvalidInput(f"attribute {attr!r}: {value!r} is not a category", code="invalid_index_load")
        self.kinds.setdefault(attr, "category")
        values = self.categories.setdefault(attr, {})
        values[key] = self._bitmap(rows) | values.get(key, BitMap())

    def load_numbers(self, attr: str, values: NDArray[Any], present: NDArray[np.bool_] | None = None) -> None:
        """A number attribute by row (its dtype is kept); ``present`` masks the rows that have it."""
        self.kinds.setdefault(attr, "number")
        self.columns[attr] = Column("number", np.ascontiguousarray(values), self._present(values, present))

    def load_timestamps(self, attr: str, seconds: NDArray[Any], present: NDArray[np.bool_] | None = None) -> None:
        """A timestamp attribute by row, as epoch seconds."""
        self.kinds.setdefault(attr, "timestamp")
        minutes = np.floor_divide(seconds, 60).astype(np.int32)
        self.columns[attr] = Column("timestamp", minutes, self._present(seconds, present))

    def load_event_last(self, event: str, seconds: NDArray[Any], present: NDArray[np.bool_] | None = None) -> None:
        """The last time of ``event`` by row, as epoch seconds (``present`` masks rows that ever did it)."""
        minutes = np.floor_divide(seconds, 60).astype(np.int32)
        if present is not None:
            minutes[~present] = NEVER
        self.events.setdefault(event, EventLog()).last_at = minutes

    def load_event_day(self, event: str, day: date | int, rows: NDArray[Any]) -> None:
        """The rows that did ``event`` on a UTC day (a date, or days since 1970-01-01)."""
        number = day if isinstance(day, int) else (day - date(1970, 1, 1)).days
        log = self.events.setdefault(event, EventLog())
        log.days[number] = self._bitmap(rows) | log.days.get(number, BitMap())
        self._advance(number)

    def _bitmap(self, rows: NDArray[Any]) -> BitMap:
        rows = np.asarray(rows)
        bitmap = mask_to_bitmap(rows) if rows.dtype == np.bool_ else rows_to_bitmap(rows)
        if bitmap and bitmap.max() >= self.rows:
            raise errors.InvalidInput(f"row {bitmap.max()} does not exist", code="invalid_index_load")
        bitmap.run_optimize()
        bitmap.shrink_to_fit()
        return bitmap

    def _present(self, values: NDArray[Any], present: NDArray[np.bool_] | None) -> BitMap:
        if len(values) != self.rows:
            raise errors.InvalidInput("a column needs one value per row", code="invalid_index_load")
        return self._bitmap(present) if present is not None else self.live.copy()

    # -- incremental updates ----------------------------------------------------------------------------------------

    def upsert(self, user_id: str, attributes: Mapping[str, Any], tags: Iterable[str]) -> None:
        """Replace a user's attributes and tags (its behaviour and list memberships stay)."""
        row = self._row(user_id)
        self._clear(row, behaviour=False)
        self.live.add(row)
        for tag in tags:
            self.tags.setdefault(tag, BitMap()).add(row)
        for name, value in attributes.items():
            if value is not None and not self._set(row, name, value):
                self.skipped_values += 1

    def delete(self, user_id: str) -> None:
        row = self._ids.row(user_id)
        if row is not None:
            self._clear(row, behaviour=True)
            self.live.discard(row)

    def track(self, user_id: str, event: str, at: datetime | float) -> None:
        """Record that the user did ``event`` at ``at`` (a datetime or epoch seconds)."""
        minutes = timestamp_minutes(at)
        if minutes is None:
            raise errors.InvalidInput(f"event time {at!r} is out of range", code="invalid_event")
        row = self._row(user_id)
        log = self.events.setdefault(event, EventLog())
        log.last_at = _grown(log.last_at, row + 1, NEVER)
        log.last_at[row] = max(int(log.last_at[row]), minutes)
        day = minutes // 1440
        self._advance(day)
        if day > self.newest_day - self.horizon_days:
            log.days.setdefault(day, BitMap()).add(row)

    def register_list(self, name: str, user_ids: Iterable[str]) -> None:
        """Register (or replace) an ID list; unknown ids get a row, so users created later are members too."""
        self.lists[name] = BitMap(self._row(u) for u in user_ids)

    def drop_list(self, name: str) -> None:
        self.lists.pop(name, None)

    def _row(self, user_id: str) -> int:
        row = self._ids.row(user_id)
        return self._ids.add(user_id) if row is None else row

    def _advance(self, day: int) -> None:
        if day <= self.newest_day:
            return
        self.newest_day = day
        for log in self.events.values():
            for old in [d for d in log.days if d <= day - self.horizon_days]:
                del log.days[old]

    def _clear(self, row: int, *, behaviour: bool) -> None:
        for bitmap in self.tags.values():
            bitmap.discard(row)
        for values in self.categories.values():
            for bitmap in values.values():
                bitmap.discard(row)
        for column in self.columns.values():
            column.present.discard(row)
        if behaviour:
            for log in self.events.values():
                if row < len(log.last_at):
                    log.last_at[row] = NEVER
                for bitmap in log.days.values():
                    bitmap.discard(row)

    def _put_number(self, name: str, kind: Kind, row: int, number: int | float) -> None:
        dtype = np.int32 if kind == "timestamp" else (np.int64 if isinstance(number, int) else np.float64)
        self.columns.setdefault(name, Column(kind, np.zeros(0, dtype=dtype))).set(row, number)

    def _category_values(self, name: str) -> dict[CategoryKey, Any]:
        return self.categories.setdefault(name, {})

    def _drop_categories(self, name: str) -> None:
        del self.categories[name]

    def _new_category(self, value: Any) -> BitMap:
        return BitMap()

    def _add_row(self, entry: BitMap, row: int) -> None:
        entry.add(row)

    # -- introspection ------------------------------------------------------------------------------------------------

    def memory(self) -> dict[str, int]:
        """Bytes held: roaring containers (from their statistics), NumPy arrays, and the user-id map."""
        bitmaps = [self.live, *self.tags.values(), *self.lists.values()]
        bitmaps += [b for values in self.categories.values() for b in values.values()]
        bitmaps += [c.present for c in self.columns.values()]
        bitmaps += [b for log in self.events.values() for b in log.days.values()]
        bitmap_bytes = 0
        for bitmap in bitmaps:
            stats = bitmap.get_statistics()
            held = stats["n_bytes_array_containers"] + stats["n_bytes_run_containers"]
            bitmap_bytes += held + stats["n_bytes_bitset_containers"] + 8 * stats["n_containers"]
        arrays = sum(c.values.nbytes for c in self.columns.values()) + sum(
            log.last_at.nbytes for log in self.events.values()
        )
        ids = self._ids.base.nbytes + sum(100 + len(u) for u in self._ids.extra_ids)
        return {"bitmaps": bitmap_bytes, "arrays": arrays, "user_ids": ids, "total": bitmap_bytes + arrays + ids}


def day_bounds(days: Mapping[int, BitMap], first_day: int) -> list[BitMap]:
    """The day bitmaps from ``first_day`` on, oldest first."""
    ordered = sorted(days)
    return [days[d] for d in ordered[bisect.bisect_left(ordered, first_day) :]]
