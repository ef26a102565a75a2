"""Operation budgets: a bound on the work one render or one condition evaluation may do.

Templates and conditions run on the event loop that answers every request, and what they cost depends on the
caller's data: ``-1 in data.b`` scans the whole list, ``any_of`` over lists of objects compares every pair, a
loop multiplies its body. The syntax limits (source length, nesting, iterations) bound the tree; a budget bounds
the data-dependent rest. Every metered step charges what it is *about* to do, before doing it, so a request
over budget stops after the work it was allowed, never after the work it asked for.

An operation is about the cost of visiting one element in C (~10 ns); the charges are, per evaluation:

* one per element an operator or function visits (``in``, ``any_of``, ``min``/``max``, ``+``), and for a
  comparison of collections (``==``, ``in`` looking for a list) every element all the way down;
* one per ``CHARS_PER_OPERATION`` characters a string operation reads (``==`` of long strings, ``in``), and
  ``REWRITE_COST`` for those it rebuilds (``lower``, the ``number`` filter …); ``DUMP_COST`` per element printed
  as JSON;
* ``WALK_COST`` per element measured by ``weight`` (a walk in Python is dearer than the C work it prices);
* ``NODE_COST`` per template node a loop iteration runs, and per node of a condition each time it is tested.

``RENDER_BUDGET`` is per channel content of one message (all its fields together); ``CONDITION_BUDGET`` per
evaluation of a rule condition. Both are sized so that spending all of it takes a few milliseconds on one
core (about 2 to 5 ms, whichever step spends it), while a typical message or condition spends a few hundred
operations and a receipt listing 1,000 rows (the most one ``<#list>`` may run) about half of ``RENDER_BUDGET``.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from clarion.domain import errors

__all__ = [
    "ACTIVE",
    "CONDITION_BUDGET",
    "RENDER_BUDGET",
    "Budget",
    "charge",
    "measured",
    "rewrite_cost",
    "text_cost",
    "weight",
]

RENDER_BUDGET = 300_000
CONDITION_BUDGET = 300_000
CHARS_PER_OPERATION = 8  # reading: comparing, searching
REWRITE_COST = 4  # operations per CHARS_PER_OPERATION characters rebuilt one by one (case mapping, parsing)
DUMP_COST = 10  # per element printed as JSON
NODE_COST = 8
WALK_COST = 6
LONG_TEXT = 256  # characters: a string shorter than this is read in about one operation

#: the budget of the render or condition being evaluated in this context: what metered steps charge. Whoever
#: starts an evaluation sets it (``token = ACTIVE.set(Budget...)``) and resets it in a ``finally``; evaluations
#: never await, so one context evaluates one thing at a time.
ACTIVE: ContextVar[Budget | None] = ContextVar("clarion_budget", default=None)


class Budget:
    """Operations left to one evaluation."""

    __slots__ = ("exceeded", "left", "limit")

    def __init__(
        self,
        limit: int,
        exceeded: type[errors.RenderBudgetExceeded] | type[errors.ConditionBudgetExceeded],
    ) -> None:
        self.limit = limit
        self.left = limit
        self.exceeded = exceeded

    def charge(self, operations: int, what: str) -> None:
        """Spend ``operations`` on ``what`` (a short phrase: "'in' over a list"), or raise the budget's error."""
        self.left -= operations
        if self.left < 0:
            raise self.exceeded(
                f"{what} needs {operations:,} operations, more than the {self.left + operations:,} left of a "
                f"budget of {self.limit:,}",
                limit=self.limit,
            )

    @property
    def spent(self) -> int:
        return self.limit - self.left


def charge(operations: int, what: str) -> None:
    """Charge the active budget (a step evaluated outside any budget is not metered)."""
    active = ACTIVE.get()
    if active is not None:
        active.charge(operations, what)


def text_cost(text: str) -> int:
    """Operations reading ``text`` costs (comparing or searching it)."""
    return 1 + len(text) // CHARS_PER_OPERATION


def rewrite_cost(text: str) -> int:
    """Operations building a new string from ``text`` character by character costs (``upper``, ``number``)."""
    return 1 + REWRITE_COST * (len(text) // CHARS_PER_OPERATION)


def weight(value: Any, cap: int) -> int:
    """The operations reading ``value`` all the way down takes: one per element (and per object entry), long
    strings by their length. Stops soon after passing ``cap``, so the walk itself stays within the budget."""
    total = 0
    stack = [value]
    while stack:
        current = stack.pop()
        kind = type(current)
        total += 1
        if kind is str:
            total += len(current) // CHARS_PER_OPERATION
        elif kind is list or kind is tuple or kind is dict:
            if total + len(current) > cap:
                return total + len(current)
            stack.extend(current.values() if kind is dict else current)
        if total > cap:
            return total
    return total


def measured(value: Any, what: str, per_element: int = 0) -> int:
    """The weight of ``value``, charging the walk that measures it and ``per_element`` for each element (what
    the caller will do with them); the walk stops where the charge would exceed the budget."""
    active = ACTIVE.get()
    if active is None:
        return weight(value, 1 << 62)
    found = weight(value, max(active.left // (WALK_COST + per_element), 0))
    active.charge(found * (WALK_COST + per_element), what)
    return found
