"""A small, safe expression language for rule conditions, template ``<#if>`` tests and segment filters.

Conditions are typed by operators in the console and evaluated for every event, so the language is
deliberately tiny and closed: a hand-written tokenizer and Pratt parser (never ``eval``, ``compile`` or
``ast``), lookups that walk dicts and lists only (never Python attributes, so ``data.__class__`` is just a
missing key), a fixed whitelist of functions, and hard caps on source length, nesting depth and on the size
of any string, list or integer an expression can build.  A source string is compiled once into a tree of
closures (``compile_expression`` is cached), which makes a typical condition cost about a microsecond.

Precedence, lowest first::

    or ||   <   and &&   <   not !   <   == != < <= > >= lt lte gt gte in "not in"
            <   + -   <   * / %   <   unary -   <   .name [index] call(...)

Semantics worth knowing:

* A missing key anywhere in a path is ``null``; arithmetic with ``null`` is ``null`` and ordering a ``null``
  is false, so ``user.age + 1 > 30`` is simply false for a user without an age.
* Ordering needs two numbers or two strings; anything else (``"a" < 1``, ``true > 0``) is an error, as is
  arithmetic on anything but numbers (``+`` also joins two strings or two lists).  Booleans are not numbers.
* ``==`` and ``in`` use Python equality (``1 == 1.0``); comparisons cannot be chained (``a < b < c``).
* Decimal literals are floats.  ``round`` rounds half away from zero (``round(2.5) == 3``).

What an evaluation does with the data is metered by ``domain.budget``: each evaluation charges its nodes, and
``in``, ``any_of``, ``min``/``max``, ``+``, ``str()``, the string functions and comparisons of collections or long
strings charge the elements and characters they are about to visit.  An evaluation outside any budget (a rule
condition) runs within its own ``CONDITION_BUDGET`` and raises ``ConditionBudgetExceeded`` past it; inside a
render it spends the render's budget.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Callable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple

from clarion.domain import budget
from clarion.domain.errors import ConditionBudgetExceeded, ExpressionError

__all__ = ["MAX_DEPTH", "MAX_SIZE", "MAX_SOURCE_LENGTH", "Expression", "compile_expression"]

MAX_SOURCE_LENGTH = 4096
MAX_DEPTH = 64
MAX_SIZE = 10_000  # elements of a list / characters of a string an expression may build
_MAX_INT_BITS = 33_220  # about 10,000 decimal digits

Fn = Callable[[Mapping[str, Any]], Any]
_NOT_CONSTANT: Any = object()


class _Fail(Exception):
    """An evaluation error; the innermost node that knows its source position fills ``position`` in."""

    def __init__(self, message: str, position: int = -1) -> None:
        super().__init__(message)
        self.message = message
        self.position = position

    def at(self, position: int) -> _Fail:
        if self.position < 0:
            self.position = position
        return self


def line_column(source: str, position: int) -> tuple[int, int]:
    """The 1-based line and column of a 0-based ``position`` in ``source`` (templates use it too)."""
    return source.count("\n", 0, position) + 1, position - source.rfind("\n", 0, position)


def _error(source: str, message: str, position: int) -> ExpressionError:
    line, column = line_column(source, position)
    return ExpressionError(message, position=position, line=line, column=column)


# --------------------------------------------------------------------------------------------- values


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | Decimal) and not isinstance(v, bool)


def _kind(v: Any) -> str:
    """The language's name for a value's type, for error messages."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if _is_number(v):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list | tuple):
        return "list"
    return "object" if isinstance(v, Mapping) else type(v).__name__


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_size(size: int) -> None:
    if size > MAX_SIZE:
        raise _Fail(f"result too large ({size} characters or elements, limit {MAX_SIZE})")


def _step(current: Any, key: Any) -> Any:
    """One lookup step: a key of a mapping or an index into a list; anything else is null."""
    if isinstance(current, Mapping):
        return current.get(key)
    if isinstance(current, list | tuple) and type(key) is int:
        return current[key] if -len(current) <= key < len(current) else None
    return None


def _index(current: Any, key: Any) -> Any:
    if key is None:
        return None
    if isinstance(key, bool) or not isinstance(key, str | int):
        raise _Fail(f"an index must be a string or an integer, not {_kind(key)}")
    return _step(current, key)


def _add(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if _is_number(a) and _is_number(b):
        return a + b
    if isinstance(a, str) and isinstance(b, str):
        _check_size(len(a) + len(b))
        budget.charge(1 + (len(a) + len(b)) // budget.CHARS_PER_OPERATION, "'+' of strings")
        return a + b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        _check_size(len(a) + len(b))
        budget.charge(1 + len(a) + len(b), "'+' of lists")
        return [*a, *b]
    raise _Fail(f"unsupported operands for '+': {_kind(a)} and {_kind(b)}")


def _numeric(symbol: str, compute: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        if not (_is_number(a) and _is_number(b)):
            raise _Fail(f"unsupported operands for '{symbol}': {_kind(a)} and {_kind(b)}")
        return compute(a, b)

    return apply


def _multiply(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int) and a.bit_length() + b.bit_length() > _MAX_INT_BITS:
        raise _Fail("number too large")
    return a * b


def _divide(a: Any, b: Any) -> Any:
    if b == 0:
        raise _Fail("division by zero")
    return a / b


def _modulo(a: Any, b: Any) -> Any:
    if b == 0:
        raise _Fail("division by zero")
    return a % b


_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": _add,
    "-": _numeric("-", operator.sub),
    "*": _numeric("*", _multiply),
    "/": _numeric("/", _divide),
    "%": _numeric("%", _modulo),
}


def _negate(x: Any) -> Any:
    if x is None:
        return None
    if not _is_number(x):
        raise _Fail(f"cannot negate {_kind(x)}")
    return -x


def _order(op: Callable[[Any, Any], bool], symbol: str, a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    if (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str)):
        return op(a, b)
    raise _Fail(f"cannot compare {_kind(a)} with {_kind(b)} using '{symbol}'")


_CHEAP = frozenset({int, float, bool, type(None), Decimal})  # compared with anything in one operation


def _comparison_cost(item: Any) -> int:
    """Operations one ``==`` between ``item`` and any element costs, at most."""
    kind = type(item)
    if kind in _CHEAP:
        return 1
    if kind is str:
        return budget.text_cost(item)
    return 1 + budget.measured(item, "measuring a value to compare")


def _member(item: Any, container: Any) -> bool:
    """``item in container`` for lists, strings (substring) and objects (keys); null contains nothing."""
    if container is None:
        return False
    if isinstance(container, str):
        if isinstance(item, str):
            if len(container) > budget.LONG_TEXT:
                budget.charge(budget.text_cost(container) + budget.text_cost(item), "'in' over a string")
            return item in container
        if item is None:
            return False
        raise _Fail(f"cannot look for {_kind(item)} in a string")
    if isinstance(container, list | tuple):
        budget.charge(len(container) * _comparison_cost(item), "'in' over a list")
        return item in container
    if isinstance(container, Mapping):
        try:
            return item in container
        except TypeError:  # an unhashable item is no key of anything
            return False
    raise _Fail(f"'in' needs a list, string or object on the right, not {_kind(container)}")


# ------------------------------------------------------------------------------------------ functions


def _len(x: Any) -> int:
    if x is None:
        return 0
    if isinstance(x, str | list | tuple | Mapping):
        return len(x)
    raise _Fail(f"len() needs a string, list or object, not {_kind(x)}")


def _string_function(name: str, method: Callable[[str], Any]) -> Callable[[Any], Any]:
    label = f"{name}()"

    def apply(s: Any) -> Any:
        if s is None:
            return None
        if not isinstance(s, str):
            raise _Fail(f"{name}() needs a string, not {_kind(s)}")
        if len(s) > budget.LONG_TEXT:
            budget.charge(budget.rewrite_cost(s), label)
        return method(s)

    return apply


def _affix(name: str, method: Callable[[str, str], bool]) -> Callable[[Any, Any], bool]:
    label = f"{name}()"

    def apply(s: Any, part: Any) -> bool:
        if s is None or part is None:
            return False
        if not (isinstance(s, str) and isinstance(part, str)):
            raise _Fail(f"{name}() needs two strings, not {_kind(s)} and {_kind(part)}")
        if len(part) > budget.LONG_TEXT:
            budget.charge(budget.text_cost(part), label)
        return method(s, part)

    return apply


_NUMBER_TYPES = frozenset({int, float, Decimal})
_STRING_TYPE = frozenset({str})
_EXTREME_COST = 4  # per element: skip the nulls, check the kinds, pick


def _extreme(name: str, pick: Callable[[list[Any]], Any]) -> Callable[..., Any]:
    """min/max over the arguments, or over the elements of a single list argument; nulls are skipped."""
    label = f"{name}()"

    def apply(*args: Any) -> Any:
        values = args[0] if len(args) == 1 and isinstance(args[0], list | tuple) else args
        budget.charge(_EXTREME_COST * len(values), label)
        present = [v for v in values if v is not None]
        if not present:
            return None
        kinds = set(map(type, present))  # in C: an all() over the elements costs ten times as much
        if kinds <= _NUMBER_TYPES or kinds == _STRING_TYPE:
            return pick(present)
        if all(_is_number(v) for v in present) or all(isinstance(v, str) for v in present):  # subclasses
            return pick(present)
        raise _Fail(f"{name}() needs numbers or strings, got {', '.join(sorted({_kind(v) for v in present}))}")

    return apply


def _abs(x: Any) -> Any:
    if x is None:
        return None
    if not _is_number(x):
        raise _Fail(f"abs() needs a number, not {_kind(x)}")
    return abs(x)


def _round(x: Any, digits: Any = None) -> Any:
    if x is None:
        return None
    if not _is_number(x):
        raise _Fail(f"round() needs a number, not {_kind(x)}")
    if digits is not None and (isinstance(digits, bool) or not isinstance(digits, int)):
        raise _Fail(f"round() needs an integer number of digits, not {_kind(digits)}")
    exact = Decimal(str(x)) if isinstance(x, float) else Decimal(x)  # str(): round(2.675, 2) is 2.68
    try:
        rounded = exact.quantize(Decimal(1).scaleb(-(digits or 0)), rounding=ROUND_HALF_UP)
    except ArithmeticError:
        raise _Fail(f"round() cannot round {_short(x)} to {digits or 0} digits") from None
    return int(rounded) if digits is None or isinstance(x, int) else type(x)(rounded)


def _int(x: Any) -> Any:
    if x is None:
        return None
    if isinstance(x, int | float | Decimal):  # booleans become 0 / 1; inf and nan fail
        return int(x)
    if isinstance(x, str):
        if len(x) > budget.LONG_TEXT:
            budget.charge(budget.rewrite_cost(x), "int()")
        try:
            return int(x)
        except ValueError:
            try:
                return int(float(x))
            except ValueError:
                pass
    raise _Fail(f"int() cannot convert {_short(x)}")


def _float(x: Any) -> Any:
    if x is None:
        return None
    if isinstance(x, int | float | Decimal):  # booleans become 0.0 / 1.0
        return float(x)
    if isinstance(x, str):
        if len(x) > budget.LONG_TEXT:
            budget.charge(budget.rewrite_cost(x), "float()")
        try:
            return float(x)
        except ValueError:
            pass
    raise _Fail(f"float() cannot convert {_short(x)}")


def _str(x: Any) -> str:
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, str) or _is_number(x):
        return str(x)
    _check_size(budget.measured(x, "str()", budget.DUMP_COST))  # every element prints at least one character
    text = json.dumps(x, ensure_ascii=False, default=str)
    _check_size(len(text))
    return text


def _any_of(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    if not (isinstance(a, list | tuple) and isinstance(b, list | tuple)):
        raise _Fail(f"any_of() needs two lists, not {_kind(a)} and {_kind(b)}")
    budget.charge(len(a) + len(b), "any_of()")
    try:
        wanted = set(b)
        return any(x in wanted for x in a)
    except TypeError:  # unhashable elements: fall back to pairwise equality, every element of a against all of b
        if a:
            what = "any_of() over lists of lists or objects"
            budget.charge(len(a) * len(b), what)  # at least one operation a pair: refused before measuring b
            budget.charge(len(a) * (1 + budget.measured(b, what) - len(b)), what)
        return any(x in b for x in a)


# name -> (implementation, fewest arguments, most arguments or None for any number)
_FUNCTIONS: dict[str, tuple[Callable[..., Any] | None, int, int | None]] = {
    "len": (_len, 1, 1),
    "lower": (_string_function("lower", str.lower), 1, 1),
    "upper": (_string_function("upper", str.upper), 1, 1),
    "trim": (_string_function("trim", str.strip), 1, 1),
    "contains": (lambda a, b: _member(b, a), 2, 2),
    "starts_with": (_affix("starts_with", str.startswith), 2, 2),
    "ends_with": (_affix("ends_with", str.endswith), 2, 2),
    "min": (_extreme("min", min), 1, None),
    "max": (_extreme("max", max), 1, None),
    "abs": (_abs, 1, 1),
    "round": (_round, 1, 2),
    "int": (_int, 1, 1),
    "float": (_float, 1, 1),
    "str": (_str, 1, 1),
    "any_of": (_any_of, 2, 2),
    "exists": (None, 1, 1),  # compiled inline
    "default": (None, 2, 2),  # compiled inline: the fallback is evaluated only when needed
}


# ------------------------------------------------------------------------------------------- closures


def _constant(value: Any) -> Fn:
    return lambda ctx: value


def _lookup(root: str, keys: tuple[Any, ...]) -> Fn:
    """A path with constant steps, walked in one closure (the hot path of every condition)."""
    if not keys:
        return lambda ctx: ctx.get(root)

    def lookup(ctx: Mapping[str, Any]) -> Any:
        current = ctx.get(root)
        for key in keys:
            current = current.get(key) if type(current) is dict else _step(current, key)
        return current

    return lookup


def _guarded(apply: Callable[..., Any], arguments: list[Fn], position: int, label: str = "") -> Fn:
    """Call ``apply`` on the evaluated arguments, pinning any failure to ``position``."""

    def call(ctx: Mapping[str, Any]) -> Any:
        values = [f(ctx) for f in arguments]
        try:
            return apply(*values)
        except _Fail as exc:
            raise exc.at(position) from None
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise _Fail(f"{label}{exc}", position) from None

    return call


def _arithmetic_chain(first: Fn, steps: list[tuple[Callable[[Any, Any], Any], Fn, int]]) -> Fn:
    """``a + b - c ...`` as one loop, so long chains do not nest closures (or Python frames)."""

    def chain(ctx: Mapping[str, Any]) -> Any:
        value = first(ctx)
        for apply, operand, position in steps:
            right = operand(ctx)
            try:
                value = apply(value, right)
            except _Fail as exc:
                raise exc.at(position) from None
            except (TypeError, ValueError, ArithmeticError) as exc:
                raise _Fail(str(exc), position) from None
        return value

    return chain


def _logic(is_and: bool, operands: list[Fn]) -> Fn:
    if len(operands) == 2:
        a, b = operands
        if is_and:
            return lambda ctx: bool(b(ctx)) if a(ctx) else False
        return lambda ctx: True if a(ctx) else bool(b(ctx))

    def chain(ctx: Mapping[str, Any]) -> bool:
        return all(f(ctx) for f in operands) if is_and else any(f(ctx) for f in operands)

    return chain


def _ordering(op: Callable[[Any, Any], bool], symbol: str, left: Fn, right: Fn, position: int) -> Fn:
    fast = {int, float}

    def compare(ctx: Mapping[str, Any]) -> bool:
        a = left(ctx)
        b = right(ctx)
        if type(a) in fast and type(b) in fast:
            return op(a, b)
        if type(a) is str and type(b) is str:
            if len(a) > budget.LONG_TEXT and len(b) > budget.LONG_TEXT:
                budget.charge(budget.text_cost(min(a, b, key=len)), "comparing long strings")
            return op(a, b)
        try:
            return _order(op, symbol, a, b)
        except _Fail as exc:
            raise exc.at(position) from None

    return compare


def _equal_cost(a: Any, b: Any) -> None:
    """Charge what ``a == b`` costs when neither side is a number, boolean, null or short string: nothing unless
    both are strings, lists or objects of one length (Python answers a length mismatch at once)."""
    kind = type(a)
    if kind is not type(b) or len(a) != len(b):
        return
    if kind is str:
        budget.charge(budget.text_cost(a), "comparing long strings")
    elif kind is list or kind is tuple or kind is dict:
        budget.measured(a, "comparing collections", 1)


def _equality(left: _Node, right: _Node, negate: bool) -> Fn:
    a, b = left.fn, right.fn
    if left.constant is not _NOT_CONSTANT or right.constant is not _NOT_CONSTANT:  # bounded by the source
        return (lambda ctx: a(ctx) != b(ctx)) if negate else (lambda ctx: a(ctx) == b(ctx))
    cheap = _CHEAP

    def equal(ctx: Mapping[str, Any]) -> bool:
        x = a(ctx)
        y = b(ctx)
        if not (type(x) in cheap or type(y) in cheap or (type(x) is str and len(x) <= budget.LONG_TEXT)):
            _equal_cost(x, y)
        return (x != y) if negate else (x == y)

    return equal


def _membership(left: Fn, right: _Node, negate: bool, position: int) -> Fn:
    if isinstance(right.constant, tuple):  # a literal list of scalars: plain tuple membership
        items = right.constant
        return (lambda ctx: left(ctx) not in items) if negate else (lambda ctx: left(ctx) in items)
    found = _guarded(_member, [left, right.fn], position)
    return (lambda ctx: not found(ctx)) if negate else found


# --------------------------------------------------------------------------------------------- parser


class _Token(NamedTuple):
    kind: str  # "num" | "str" | "name" | "op" | "end"
    value: Any
    pos: int
    end: int


class _Node(NamedTuple):
    fn: Fn
    constant: Any = _NOT_CONSTANT  # the value, when known at compile time


_OPERATORS_2 = frozenset({"==", "!=", "<=", ">=", "&&", "||"})
_OPERATORS_1 = frozenset("<>!+-*/%()[],.")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "/": "/"}
_HEX = frozenset("0123456789abcdefABCDEF")
_LITERALS = {"true": True, "false": False, "null": None}
_ORDERINGS = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge,
}  # fmt: skip
_COMPARISONS = frozenset({"==", "!=", "in", *_ORDERINGS})
_KEYWORDS = frozenset({"and", "or", "not", "in", "gt", "gte", "lt", "lte", *_LITERALS})
_INFIX = {"or": 10, "||": 10, "and": 20, "&&": 20, **dict.fromkeys(_COMPARISONS, 40)}
_INFIX |= {"+": 50, "-": 50, "*": 60, "/": 60, "%": 60, ".": 80, "[": 80, "(": 80}
_LEVELS = {
    10: frozenset({"or", "||"}),
    20: frozenset({"and", "&&"}),
    50: frozenset("+-"),
    60: frozenset("*/%"),
}
_PREFIX_NOT, _PREFIX_MINUS = 30, 70


def _is_digit(c: str) -> bool:
    return "0" <= c <= "9"


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(source)
    while i < n:
        c, start = source[i], i
        if c.isspace():
            i += 1
        elif _is_digit(c):
            while i < n and _is_digit(source[i]):
                i += 1
            is_float = i + 1 < n and source[i] == "." and _is_digit(source[i + 1])
            if is_float:
                i += 1
                while i < n and _is_digit(source[i]):
                    i += 1
            if i < n and (source[i].isalnum() or source[i] == "_"):
                raise _error(source, "invalid number", start)
            text = source[start:i]
            tokens.append(_Token("num", float(text) if is_float else int(text), start, i))
        elif c.isalpha() or c == "_":
            while i < n and (source[i].isalnum() or source[i] == "_"):
                i += 1
            tokens.append(_Token("name", source[start:i], start, i))
        elif c in "'\"":
            value, i = _string(source, i)
            tokens.append(_Token("str", value, start, i))
        elif source[i : i + 2] in _OPERATORS_2:
            i += 2
            tokens.append(_Token("op", source[start:i], start, i))
        elif c in _OPERATORS_1:
            i += 1
            tokens.append(_Token("op", c, start, i))
        else:
            hint = " (use '==' to compare)" if c == "=" else ""
            raise _error(source, f"unexpected character {c!r}{hint}", start)
    tokens.append(_Token("end", None, n, n))
    return tokens


def _string(source: str, start: int) -> tuple[str, int]:
    """Read the string literal opening at ``start``; return its value and the index after it."""
    quote, parts, i, n = source[start], [], start + 1, len(source)
    while i < n and source[i] != quote:
        c = source[i]
        if c != "\\":
            parts.append(c)
            i += 1
            continue
        escape = source[i + 1 : i + 2]
        if escape in _ESCAPES:
            parts.append(_ESCAPES[escape])
            i += 2
        elif escape == "u" and len(digits := source[i + 2 : i + 6]) == 4 and set(digits) <= _HEX:
            parts.append(chr(int(digits, 16)))
            i += 6
        elif not escape:
            raise _error(source, "unterminated string", start)
        else:
            raise _error(source, f"invalid escape sequence '\\{escape}'", i)
    if i >= n:
        raise _error(source, "unterminated string", start)
    return "".join(parts), i + 1


class _Parser:
    """Pratt parser emitting closures directly; ``depth`` bounds recursion (and so evaluation depth)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokenize(source)
        self.index = 0
        self.depth = 0
        self.variables: set[str] = set()

    def parse(self) -> Fn:
        node = self.expression(0)
        if self.peek().kind != "end":
            raise self.unexpected(self.peek())
        return node.fn

    # -- token helpers
    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.peek()
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def at_op(self, *values: str) -> bool:
        token = self.peek()
        return token.kind == "op" and token.value in values

    def expect(self, value: str) -> _Token:
        if not self.at_op(value):
            raise self.unexpected(self.peek(), f" (expected '{value}')")
        return self.advance()

    def error(self, message: str, position: int) -> ExpressionError:
        return _error(self.source, message, position)

    def unexpected(self, token: _Token, hint: str = "") -> ExpressionError:
        text = self.source[token.pos : token.end]
        what = {"end": "end of expression", "num": f"number {text}", "str": "string"}.get(token.kind, repr(text))
        return self.error(f"unexpected {what}{hint}", token.pos)

    def infix_power(self, token: _Token) -> int:
        if token.kind not in ("op", "name"):
            return 0
        if token.value == "not":  # only as the start of "not in"
            following = self.peek(1)
            return 40 if following.kind == "name" and following.value == "in" else 0
        return _INFIX.get(token.value, 0)

    # -- grammar
    def expression(self, min_power: int) -> _Node:
        entry = self.depth
        self.deeper(self.peek())
        node = self.prefix()
        while (power := self.infix_power(self.peek())) > min_power:
            token = self.advance()
            if power == 80:  # each postfix step on a computed value nests one closure deeper
                self.deeper(token)
            node = self.infix(node, token, power)
        self.depth = entry
        return node

    def deeper(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"expression nested too deeply (limit {MAX_DEPTH})", token.pos)

    def prefix(self) -> _Node:
        token = self.advance()
        kind, value, position = token.kind, token.value, token.pos
        if kind in ("num", "str"):
            return _Node(_constant(value), value)
        if kind == "name" and value in _LITERALS:
            return _Node(_constant(_LITERALS[value]), _LITERALS[value])
        if (kind == "name" and value == "not") or (kind == "op" and value == "!"):
            negated = self.expression(_PREFIX_NOT).fn
            return _Node(lambda ctx: not negated(ctx))
        if kind == "name" and value not in _KEYWORDS:
            return self.call(token) if self.at_op("(") else self.path(token)
        if kind == "op" and value == "-":
            operand = self.expression(_PREFIX_MINUS)
            if _is_number(operand.constant):
                return _Node(_constant(-operand.constant), -operand.constant)
            return _Node(_guarded(_negate, [operand.fn], position))
        if kind == "op" and value == "(":
            node = self.expression(0)
            self.expect(")")
            return node
        if kind == "op" and value == "[":
            items = self.sequence("]")
            fns = [item.fn for item in items]
            scalars = all(i.constant is not _NOT_CONSTANT and not isinstance(i.constant, tuple) for i in items)
            constant = tuple(i.constant for i in items) if scalars else _NOT_CONSTANT
            return _Node(lambda ctx: [f(ctx) for f in fns], constant)
        raise self.unexpected(token)

    def sequence(self, closing: str) -> list[_Node]:
        """Comma-separated expressions up to ``closing`` (the opening bracket is already consumed)."""
        items: list[_Node] = []
        if not self.at_op(closing):
            items.append(self.expression(0))
            while self.at_op(","):
                self.advance()
                items.append(self.expression(0))
        self.expect(closing)
        return items

    def subscript(self) -> _Node:
        """``[index]`` after its opening bracket; a constant index must be a string or an integer."""
        start = self.peek().pos
        node = self.expression(0)
        self.expect("]")
        constant = node.constant
        if constant is not _NOT_CONSTANT and (isinstance(constant, bool) or not isinstance(constant, str | int)):
            raise self.error("an index must be a string or an integer", start)
        return node

    def path(self, root: _Token) -> _Node:
        """``name.a.b[0]["k"]``: constant steps fold into one lookup; the dotted prefix is the variable."""
        keys: list[Any] = []
        dotted = [root.value]
        while True:
            if self.at_op("."):
                self.advance()
                name = self.advance()
                if name.kind != "name":
                    raise self.unexpected(name, " (expected a name after '.')")
                keys.append(name.value)
                if len(dotted) == len(keys):
                    dotted.append(name.value)
            elif self.at_op("["):
                position = self.advance().pos
                index = self.subscript()
                if index.constant is _NOT_CONSTANT:
                    self.variables.add(".".join(dotted))
                    container, key = _lookup(root.value, tuple(keys)), index.fn
                    return _Node(_guarded(_index, [container, key], position))
                keys.append(index.constant)
            else:
                self.variables.add(".".join(dotted))
                return _Node(_lookup(root.value, tuple(keys)))

    def call(self, name: _Token) -> _Node:
        spec = _FUNCTIONS.get(name.value)
        if spec is None:
            raise self.error(f"unknown function '{name.value}'", name.pos)
        self.advance()  # "("
        arguments = [argument.fn for argument in self.sequence(")")]
        apply, fewest, most = spec
        if len(arguments) < fewest or (most is not None and len(arguments) > most):
            if most is None:
                expected = f"at least {fewest} argument{'s' * (fewest != 1)}"
            elif fewest == most:
                expected = f"{fewest} argument{'s' * (fewest != 1)}"
            else:
                expected = f"{fewest} or {most} arguments"
            raise self.error(f"{name.value}() takes {expected} ({len(arguments)} given)", name.pos)
        if name.value == "exists":
            (value,) = arguments
            return _Node(lambda ctx: value(ctx) is not None)
        if name.value == "default":
            value, fallback = arguments
            return _Node(lambda ctx: fallback(ctx) if (v := value(ctx)) is None else v)
        assert apply is not None
        return _Node(_guarded(apply, arguments, name.pos, f"{name.value}(): "))

    def infix(self, left: _Node, token: _Token, power: int) -> _Node:
        value, position = token.value, token.pos
        if value in (".", "[", "("):
            return self.postfix(left, token)
        if power in (10, 20):  # a flat chain of and / or
            operands = [left.fn, self.expression(power).fn]
            while self.peek().value in _LEVELS[power] and self.peek().kind in ("op", "name"):
                self.advance()
                operands.append(self.expression(power).fn)
            return _Node(_logic(power == 20, operands))
        if power in (50, 60):  # a flat chain of + - or * / %
            steps = [(_ARITHMETIC[value], self.expression(power).fn, position)]
            while self.at_op(*_LEVELS[power]):
                operator_token = self.advance()
                steps.append((_ARITHMETIC[operator_token.value], self.expression(power).fn, operator_token.pos))
            return _Node(_arithmetic_chain(left.fn, steps))
        if value == "not":
            self.advance()  # "in"
        right = self.expression(power)
        following = self.peek()
        if self.infix_power(following) == 40:
            raise self.error("comparisons cannot be chained (use 'and')", following.pos)
        a, b = left.fn, right.fn
        if value in ("==", "!="):
            return _Node(_equality(left, right, value == "!="))
        if value in _ORDERINGS:
            return _Node(_ordering(_ORDERINGS[value], value, a, b, position))
        return _Node(_membership(a, right, value == "not", position))

    def postfix(self, left: _Node, token: _Token) -> _Node:
        target = left.fn
        if token.value == "(":
            raise self.error("only built-in functions such as len() can be called", token.pos)
        if token.value == ".":
            name = self.advance()
            if name.kind != "name":
                raise self.unexpected(name, " (expected a name after '.')")
            key = name.value
            return _Node(lambda ctx: _step(target(ctx), key))
        index = self.subscript()
        return _Node(_guarded(_index, [target, index.fn], token.pos))


# ------------------------------------------------------------------------------------------------ API


class Expression:
    """A compiled expression: evaluate it against a mapping of root variables (``data``, ``user``, ...)."""

    __slots__ = ("_cost", "_fn", "source", "variables")

    def __init__(self, source: str, variables: frozenset[str], fn: Fn, nodes: int = 1) -> None:
        self.source = source
        self.variables = variables  # dotted paths read, up to their first [index]: {"data.items", "user.vip"}
        self._fn = fn
        self._cost = nodes * budget.NODE_COST  # what one evaluation charges before its data-dependent steps

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """The value of the expression; raises ``ExpressionError``, or ``ConditionBudgetExceeded`` when it would
        do more work than one condition may (inside a render: the render's budget and its error)."""
        active = budget.ACTIVE.get()
        if active is not None:
            active.charge(self._cost, "a condition")
            return self._run(context)
        own = budget.Budget(budget.CONDITION_BUDGET, ConditionBudgetExceeded)
        own.left -= self._cost  # at most a few thousand: never past the budget on its own
        token = budget.ACTIVE.set(own)
        try:
            return self._run(context)
        finally:
            budget.ACTIVE.reset(token)

    def _run(self, context: Mapping[str, Any]) -> Any:
        try:
            return self._fn(context)
        except _Fail as exc:
            raise _error(self.source, exc.message, max(exc.position, 0)) from None
        except (TypeError, ValueError, ArithmeticError, RecursionError) as exc:  # a safety net
            raise _error(self.source, f"cannot evaluate: {exc}", 0) from None

    def test(self, context: Mapping[str, Any]) -> bool:
        """Whether the expression holds (its value is truthy), for conditions."""
        return bool(self.evaluate(context))

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


@functools.lru_cache(maxsize=1024)
def compile_expression(source: str) -> Expression:
    """Parse ``source`` once into closures; raise ``ExpressionError`` pointing at the offending token."""
    if not isinstance(source, str):
        raise TypeError(f"expression source must be a string, not {type(source).__name__}")
    if len(source) > MAX_SOURCE_LENGTH:
        raise _error(
            source,
            f"expression too long ({len(source)} characters, limit {MAX_SOURCE_LENGTH})",
            MAX_SOURCE_LENGTH,
        )
    parser = _Parser(source)
    fn = parser.parse()
    return Expression(source, frozenset(parser.variables), fn, len(parser.tokens))
