"""The segment query: a JSON tree of conditions, parsed into typed nodes and validated with the path of each error.

A segment is a saved audience query. Its ``conditions`` is one node; a node is a JSON object with exactly one of
the keys ``and``, ``or``, ``not``, ``tag``, ``attr``, ``event`` or ``list``::

    {"and": [node, ...]}                 every child holds (1..50 children)
    {"or": [node, ...]}                  at least one child holds
    {"not": node}                        the child does not hold (among existing users)
    {"tag": "vip"}                       the user has the tag
    {"list": "incident-42"}              the user is in the ID list registered under that name
    {"attr": "city", "op": "=", "value": "Beijing"}
        op  "=", "!=", ">", ">=", "<", "<="  a string or number (or a boolean for "=" and "!=")
            "in"          a list of 1..1000 values:  {"attr": "city", "op": "in", "value": ["Beijing", "Shanghai"]}
            "between"     [low, high], both included: {"attr": "age", "op": "between", "value": [18, 30]}
            "contains"    a string found inside the value: {"attr": "email", "op": "contains", "value": "@corp"}
            "exists"      no value: the user has the attribute
            "within_next", "within_last"  "days" or "hours": a timestamp attribute lies between now and now ± that
                          span, both ends included: {"attr": "membership_expires_at", "op": "within_next", "days": 3}
    {"event": "login", "op": "at_least", "count": 1, "within_days": 3}
        the user did the event at least ``count`` times (default 1) in the last ``within_days`` or
        ``within_hours``; ``op`` may be left out (it is always "at_least"); with neither window the event ever
        happened (only for count 1). The index documents how counts above 1 are measured (distinct days).

Examples::

    {"and": [{"tag": "vip"},
             {"attr": "city", "op": "in", "value": ["Beijing", "Shanghai"]},
             {"attr": "membership_expires_at", "op": "within_next", "days": 3},
             {"event": "login", "op": "at_least", "count": 1, "within_days": 3},
             {"not": {"event": "pay", "within_hours": 24}},
             {"list": "incident-42"}]}

    "add_to_cart but not pay in the last 24 h":
    {"and": [{"event": "add_to_cart", "within_hours": 24}, {"not": {"event": "pay", "within_hours": 24}}]}

Timestamp attributes take ISO 8601 strings (a missing zone means UTC) or epoch seconds as values.
A tree holds at most :data:`MAX_NODES` nodes and :data:`MAX_DEPTH` levels. Errors are
:class:`clarion.domain.errors.InvalidInput` with code ``invalid_segment`` and ``details["path"]`` naming the node,
e.g. ``conditions.and[2].op``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from clarion.domain import errors, jsonvalues

MAX_NODES = 200
MAX_DEPTH = 12
MAX_CHILDREN = 50
MAX_IN_VALUES = 1000
MAX_STRING = 256
MAX_DAYS = 3650
MAX_EVENT_DAYS = 365
MAX_COUNT = 1000

Scalar: TypeAlias = str | int | float | bool
Unit = Literal["days", "hours"]
COMPARISONS = ("=", "!=", ">", ">=", "<", "<=")
ATTR_OPS = (*COMPARISONS, "in", "between", "contains", "exists", "within_next", "within_last")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}")
_KINDS = ("and", "or", "not", "tag", "attr", "event", "list")


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: Node


@dataclass(frozen=True, slots=True)
class HasTag:
    tag: str


@dataclass(frozen=True, slots=True)
class InList:
    name: str


@dataclass(frozen=True, slots=True)
class Attr:
    """A comparison of one attribute. ``value`` is a scalar, a tuple (``in``; ``between`` as ``(low, high)``) or
    None (``exists``)."""

    attr: str
    op: str
    value: Scalar | tuple[Scalar, ...] | None = None


@dataclass(frozen=True, slots=True)
class Span:
    """A length of time as the operator wrote it."""

    amount: int
    unit: Unit

    @property
    def minutes(self) -> int:
        return self.amount * (1440 if self.unit == "days" else 60)


@dataclass(frozen=True, slots=True)
class AttrWithin:
    """A timestamp attribute between now and now + span (``within_next``) or now - span and now (``within_last``)."""

    attr: str
    op: Literal["within_next", "within_last"]
    span: Span


@dataclass(frozen=True, slots=True)
class Event:
    """The user did ``event`` at least ``count`` times within ``span`` (None: ever)."""

    event: str
    count: int = 1
    span: Span | None = None


Node: TypeAlias = And | Or | Not | HasTag | InList | Attr | AttrWithin | Event


def invalid(path: str, problem: str) -> errors.InvalidInput:
    return errors.InvalidInput(f"{path}: {problem}", code="invalid_segment", details={"path": path})


def parse(data: Any, path: str = "conditions") -> Node:
    """Parse and validate a JSON condition tree; raise InvalidInput naming the path of the first bad node."""
    budget = [MAX_NODES]
    return _parse(data, path, 1, budget)


def _parse(data: Any, path: str, depth: int, budget: list[int]) -> Node:
    if depth > MAX_DEPTH:
        raise invalid(path, f"conditions are nested deeper than {MAX_DEPTH} levels")
    budget[0] -= 1
    if budget[0] < 0:
        raise invalid(path, f"a segment holds at most {MAX_NODES} conditions")
    if not isinstance(data, dict):
        raise invalid(path, "a condition must be an object")
    kinds = [k for k in _KINDS if k in data]
    if len(kinds) != 1:
        raise invalid(path, f"a condition needs exactly one of {', '.join(_KINDS)}")
    kind = kinds[0]
    if kind in ("and", "or"):
        _only(data, path, {kind})
        children = data[kind]
        if not isinstance(children, list) or not 1 <= len(children) <= MAX_CHILDREN:
            raise invalid(f"{path}.{kind}", f"must be a list of 1 to {MAX_CHILDREN} conditions")
        parsed = tuple(_parse(c, f"{path}.{kind}[{i}]", depth + 1, budget) for i, c in enumerate(children))
        return And(parsed) if kind == "and" else Or(parsed)
    if kind == "not":
        _only(data, path, {"not"})
        return Not(_parse(data["not"], f"{path}.not", depth + 1, budget))
    if kind == "tag":
        _only(data, path, {"tag"})
        return HasTag(_tag(data["tag"], f"{path}.tag"))
    if kind == "list":
        _only(data, path, {"list"})
        return InList(_name(data["list"], f"{path}.list"))
    if kind == "event":
        return _parse_event(data, path)
    return _parse_attr(data, path)


def _parse_attr(data: dict[str, Any], path: str) -> Node:
    attr = _name(data["attr"], f"{path}.attr")
    op = data.get("op")
    if op not in ATTR_OPS:
        raise invalid(f"{path}.op", f"must be one of {', '.join(ATTR_OPS)}")
    if op in ("within_next", "within_last"):
        _only(data, path, {"attr", "op", "days", "hours"})
        return AttrWithin(attr, op, _span(data, path, MAX_DAYS, required=True) or Span(0, "days"))
    if op == "exists":
        _only(data, path, {"attr", "op"})
        return Attr(attr, op)
    _only(data, path, {"attr", "op", "value"})
    if "value" not in data:
        raise invalid(f"{path}.value", f"is required for {op!r}")
    value, vpath = data["value"], f"{path}.value"
    if op == "in":
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_IN_VALUES:
            raise invalid(vpath, f"must be a list of 1 to {MAX_IN_VALUES} values")
        return Attr(attr, op, tuple(_scalar(v, f"{vpath}[{i}]") for i, v in enumerate(value)))
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise invalid(vpath, "must be a list [low, high]")
        low, high = (_scalar(v, f"{vpath}[{i}]", ordered=True) for i, v in enumerate(value))
        if isinstance(low, str) != isinstance(high, str):
            raise invalid(vpath, "low and high must both be numbers or both be strings")
        return Attr(attr, op, (low, high))
    if op == "contains":
        if not isinstance(value, str) or not value:
            raise invalid(vpath, "must be a non-empty string")
        return Attr(attr, op, _scalar(value, vpath))
    return Attr(attr, op, _scalar(value, vpath, ordered=op not in ("=", "!=")))


def _parse_event(data: dict[str, Any], path: str) -> Node:
    _only(data, path, {"event", "op", "count", "within_days", "within_hours"})
    name = _name(data["event"], f"{path}.event")
    if data.get("op", "at_least") != "at_least":
        raise invalid(f"{path}.op", "must be 'at_least' (use not for absence)")
    count = data.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise invalid(f"{path}.count", f"must be an integer from 1 to {MAX_COUNT}")
    renamed = {("days" if k == "within_days" else "hours"): v for k, v in data.items() if k.startswith("within_")}
    span = _span(renamed, path, MAX_EVENT_DAYS, required=False, prefix="within_")
    if span is None and count > 1:
        raise invalid(f"{path}.count", "a count above 1 needs within_days or within_hours")
    return Event(name, count, span)


def _span(data: dict[str, Any], path: str, max_days: int, *, required: bool, prefix: str = "") -> Span | None:
    units = [u for u in ("days", "hours") if u in data]
    if len(units) > 1:
        raise invalid(path, f"give either {prefix}days or {prefix}hours, not both")
    if not units:
        if required:
            raise invalid(f"{path}.{prefix}days", "is required")
        return None
    unit: Unit = "days" if units[0] == "days" else "hours"
    amount, limit = data[unit], max_days * (1 if unit == "days" else 24)
    if isinstance(amount, bool) or not isinstance(amount, int) or not 1 <= amount <= limit:
        raise invalid(f"{path}.{prefix}{unit}", f"must be an integer from 1 to {limit}")
    return Span(amount, unit)


def _only(data: dict[str, Any], path: str, allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            raise invalid(f"{path}.{key}", "unknown field")


def _name(value: Any, path: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise invalid(path, "must be a name of 1 to 128 letters, digits or _ . : -")
    return value


def _tag(value: Any, path: str) -> str:
    """A tag as users carry them (``PUT /v1/users``: any printable text of 1 to 100 characters, 价格敏感用户
    included), not only the ASCII names attributes and events have."""
    if not isinstance(value, str) or not 1 <= len(value) <= 100 or not value.isprintable():
        raise invalid(path, "must be a tag: 1 to 100 printable characters")
    return value


def _scalar(value: Any, path: str, *, ordered: bool = False) -> Scalar:
    if isinstance(value, bool):
        if ordered:
            raise invalid(path, "must be a number or a string (booleans have no order)")
        return value
    if isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) > 2**53:
            raise invalid(path, "must be a finite number within ±2^53")
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise invalid(path, f"must be at most {MAX_STRING} characters")
        unstorable = jsonvalues.text_problem(value)
        if unstorable is not None:
            raise invalid(path, unstorable)
        return value
    raise invalid(path, "must be a string, a number or a boolean")


def to_json(node: Node) -> dict[str, Any]:
    """The JSON form of a node; ``parse(to_json(node)) == node``."""
    match node:
        case And(children):
            return {"and": [to_json(c) for c in children]}
        case Or(children):
            return {"or": [to_json(c) for c in children]}
        case Not(child):
            return {"not": to_json(child)}
        case HasTag(tag):
            return {"tag": tag}
        case InList(name):
            return {"list": name}
        case AttrWithin(attr, op, span):
            return {"attr": attr, "op": op, span.unit: span.amount}
        case Attr(attr, op, value):
            if op == "exists":
                return {"attr": attr, "op": op}
            return {"attr": attr, "op": op, "value": list(value) if isinstance(value, tuple) else value}
        case Event(event, count, span):
            out: dict[str, Any] = {"event": event, "op": "at_least", "count": count}
            if span is not None:
                out[f"within_{span.unit}"] = span.amount
            return out
    raise TypeError(f"not a segment node: {node!r}")
