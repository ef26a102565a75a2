"""Evaluate a parsed segment query against a :class:`SegmentIndex`: a bitmap of rows, then counts, samples, ids.

Leaves become bitmaps (tags, category values, ID lists, day bitmaps) or vectorized NumPy comparisons over a column
(numbers, timestamps, last event time). ``and`` evaluates its bitmap leaves first and hands the rows still in play to
the column leaves: when those are under 1/8 of all rows the column is read only at those rows, otherwise the whole
column is compared and the mask turned into a bitmap at once. ``not`` is "live users minus the child".

``now`` (for time-relative conditions) is injectable and defaults to the current time; it is floored to the minute
like every stored time. Conditions on attributes, tags or events the index has never seen match nobody; a condition
whose value does not fit the attribute (a string against a number column, ``contains`` on a timestamp, ``within_next``
on a number …) or an unknown ID list is refused with InvalidInput naming the path.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pyroaring import BitMap

from clarion.segments import index as ix
from clarion.segments import query as q

_ORDERING: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_GATHER_FRACTION = 8


def evaluate(index: ix.SegmentIndex, node: q.Node, now: datetime | None = None) -> BitMap:
    """The rows of the live users the query selects."""
    minutes = ix.timestamp_minutes(now or datetime.now(UTC))
    assert minutes is not None
    return _Evaluation(index, minutes).node(node, "conditions", None) & index.live


def count(index: ix.SegmentIndex, node: q.Node, now: datetime | None = None) -> int:
    return len(evaluate(index, node, now))


def sample(
    index: ix.SegmentIndex, node: q.Node, n: int, now: datetime | None = None, seed: int | None = None
) -> list[str]:
    """Up to ``n`` matching user ids in row order: evenly spread over the result (stable while an operator edits)
    or, with a ``seed``, drawn at random."""
    rows = evaluate(index, node, now)
    total = len(rows)
    if n >= total:
        return index.user_ids_of(ix.bitmap_rows(rows))
    if seed is None:
        picks = [i * total // n for i in range(n)]
    else:
        picks = sorted(np.random.default_rng(seed).choice(total, size=n, replace=False).tolist())
    return index.user_ids_of(np.array([rows[i] for i in picks], dtype=np.int64))


def user_ids(
    index: ix.SegmentIndex, node: q.Node, now: datetime | None = None, chunk_size: int = 10_000
) -> Iterator[list[str]]:
    """Every matching user id in row order, in chunks, for fan-out. The query is evaluated once, now; users deleted
    while the chunks are consumed are still yielded (the caller's pipeline re-checks each user anyway)."""
    rows = ix.bitmap_rows(evaluate(index, node, now))

    def chunks() -> Iterator[list[str]]:
        for start in range(0, len(rows), chunk_size):
            yield index.user_ids_of(rows[start : start + chunk_size])

    return chunks()


class _Evaluation:
    def __init__(self, index: ix.SegmentIndex, now: int) -> None:
        self.index = index
        self.now = now

    def node(self, node: q.Node, path: str, within: BitMap | None) -> BitMap:
        """Rows matching ``node``; only exact inside ``within`` (when given), which may be used to skip work."""
        match node:
            case q.And(children):
                return self.both(children, path, within)
            case q.Or(children):
                return BitMap.union(*(self.node(c, f"{path}.or[{i}]", within) for i, c in enumerate(children)))
            case q.Not(child):
                base = self.index.live if within is None else within
                return base - self.node(child, f"{path}.not", within)
            case q.HasTag(tag):
                return self.index.tags.get(tag, BitMap())
            case q.InList(name):
                if name not in self.index.lists:
                    raise q.invalid(f"{path}.list", f"no ID list named {name!r}")
                return self.index.lists[name]
            case q.Event():
                return self.event(node, path, within)
            case q.AttrWithin():
                return self.attr_within(node, path, within)
            case q.Attr():
                return self.attr(node, path, within)
        raise TypeError(f"not a segment node: {node!r}")

    def both(self, children: tuple[q.Node, ...], path: str, within: BitMap | None) -> BitMap:
        ranked = sorted(range(len(children)), key=lambda i: self.cost(children[i]))
        rows = within
        for i in ranked:
            found = self.node(children[i], f"{path}.and[{i}]", rows)
            rows = found if rows is None else rows & found
            if not rows:
                break
        assert rows is not None
        return rows

    def cost(self, node: q.Node) -> tuple[int, int]:
        """Bitmap leaves first (smallest first), then day-bitmap counts, compound conditions and column scans."""
        match node:
            case q.HasTag(tag):
                return 0, len(self.index.tags.get(tag, ()))
            case q.InList(name):
                return 0, len(self.index.lists.get(name, ()))
            case q.Attr(attr, "=" | "in", value) if self.index.kinds.get(attr) == "category":
                values = self.index.categories.get(attr, {})
                wanted = {ix.category_key(v) for v in (value if isinstance(value, tuple) else (value,))}
                return 0, sum(len(values[k]) for k in wanted if k in values)
            case q.Attr(attr) if self.index.kinds.get(attr) == "category":
                return 1, 0
            case q.Event(count=count) if count > 1:
                return 2, 0
            case q.And() | q.Or() | q.Not():
                return 3, 0
        return 4, 0

    def event(self, node: q.Event, path: str, within: BitMap | None) -> BitMap:
        log = self.index.events.get(node.event)
        if log is None:
            return BitMap()
        if node.span is None:
            return self.scan(log.last_at, None, lambda v: v != ix.NEVER, within)
        if node.count == 1:
            since = self.now - node.span.minutes
            return self.scan(log.last_at, None, lambda v: v >= since, within)
        if node.span.minutes > self.index.horizon_days * 1440:
            raise q.invalid(path, f"counts look back at most {self.index.horizon_days} days")
        days = ix.day_bounds(log.days, (self.now - node.span.minutes) // 1440)
        if within is not None and len(within) * _GATHER_FRACTION < self.index.rows:
            days = [d & within for d in days]
        at_least: list[BitMap] = [BitMap() for _ in range(node.count + 1)]
        for i, day in enumerate(days):
            for k in range(min(node.count, i + 1), 1, -1):
                at_least[k] |= at_least[k - 1] & day
            at_least[1] |= day
        return at_least[node.count]

    def attr_within(self, node: q.AttrWithin, path: str, within: BitMap | None) -> BitMap:
        kind = self.kind(node.attr, path)
        if kind is None:
            return BitMap()
        if kind != "timestamp":
            raise q.invalid(f"{path}.op", f"{node.op} needs a timestamp attribute; {node.attr!r} is a {kind}")
        column = self.index.columns.get(node.attr)
        if column is None:
            return BitMap()
        if node.op == "within_next":
            low, high = self.now, self.now + node.span.minutes
        else:
            low, high = self.now - node.span.minutes, self.now
        return self.scan(column.values, column.present, lambda v: (v >= low) & (v <= high), within)

    def attr(self, node: q.Attr, path: str, within: BitMap | None) -> BitMap:
        kind = self.kind(node.attr, path)
        if kind is None:
            return BitMap()
        if kind == "category":
            return self.category(node)
        column = self.index.columns.get(node.attr)
        if column is None:
            return BitMap()
        if node.op == "exists":
            return column.present
        if node.op == "contains":
            raise q.invalid(f"{path}.op", f"contains needs a text attribute; {node.attr!r} is a {kind}")
        value = self.column_value(node, kind, path)
        predicate: Callable[[NDArray[Any]], NDArray[np.bool_]]
        if node.op == "in":
            predicate = lambda v: np.isin(v, value)  # noqa: E731
        elif node.op == "between":
            low, high = value
            predicate = lambda v: (v >= low) & (v <= high)  # noqa: E731
        else:
            compare, target = _ORDERING[node.op], value
            predicate = lambda v: compare(v, target)  # noqa: E731
        return self.scan(column.values, column.present, predicate, within)

    def kind(self, attr: str, path: str) -> ix.Kind | None:
        if attr in self.index.unindexed:
            raise q.invalid(f"{path}.attr", f"{attr!r} has too many distinct values to be indexed")
        return self.index.kinds.get(attr)

    def column_value(self, node: q.Attr, kind: ix.Kind, path: str) -> Any:
        values = node.value if isinstance(node.value, tuple) else (node.value,)
        out: list[int | float] = []
        for i, value in enumerate(values):
            where = f"{path}.value[{i}]" if isinstance(node.value, tuple) else f"{path}.value"
            if kind == "timestamp":
                minutes = ix.timestamp_minutes(value)
                if minutes is None:
                    raise q.invalid(where, f"{node.attr!r} is a timestamp: give ISO 8601 text or epoch seconds")
                out.append(minutes)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out.append(value)
            else:
                raise q.invalid(where, f"{node.attr!r} is a number: give a number")
        if node.op == "in":
            return np.array(out)
        return tuple(out) if isinstance(node.value, tuple) else out[0]

    def category(self, node: q.Attr) -> BitMap:
        values = self.index.categories.get(node.attr, {})
        if node.op == "exists":
            return BitMap.union(*values.values()) if values else BitMap()
        if node.op == "!=":
            key = ix.category_key(node.value)
            equal = values.get(key, BitMap()) if key is not None else BitMap()
            return BitMap.union(*values.values()) - equal if values else BitMap()
        if node.op in ("=", "in"):
            wanted = node.value if isinstance(node.value, tuple) else (node.value,)
            found = [values[k] for k in {ix.category_key(v) for v in wanted} if k in values]
            return BitMap.union(*found) if found else BitMap()
        matches = [bitmap for key, bitmap in values.items() if _category_matches(node, key)]
        return BitMap.union(*matches) if matches else BitMap()

    def scan(
        self,
        values: NDArray[Any],
        present: BitMap | None,
        predicate: Callable[[NDArray[Any]], NDArray[np.bool_]],
        within: BitMap | None,
    ) -> BitMap:
        """Rows (with a value, when ``present`` is given) whose value satisfies ``predicate``."""
        if within is not None and len(within) * _GATHER_FRACTION < self.index.rows:
            candidates = within & present if present is not None else within
            rows = ix.bitmap_rows(candidates)
            rows = rows[: int(np.searchsorted(rows, len(values)))]
            return ix.rows_to_bitmap(rows[predicate(values[rows])])
        found = ix.mask_to_bitmap(predicate(values))
        return found & present if present is not None else found


def _category_matches(node: q.Attr, key: ix.CategoryKey) -> bool:
    """Ordering, ``between`` and ``contains`` over one categorical value: numbers with numbers, text with text."""
    tag, stored = key
    if node.op == "contains":
        return tag == "s" and isinstance(node.value, str) and node.value in stored
    if node.op == "between":
        assert isinstance(node.value, tuple)
        low, high = node.value
        return tag == ("s" if isinstance(low, str) else "n") and bool(low <= stored <= high)
    target = node.value
    if tag == "b" or tag != ("s" if isinstance(target, str) else "n"):
        return False
    return bool(_ORDERING[node.op](stored, target))
