"""Clarion's template language: placeholders with filters plus FreeMarker-style ``<#if>`` and ``<#list>``.

A template is parsed once (``compile_template`` is cached), validated at save time and compiled into a tree of
small closures; rendering never uses ``eval`` or Jinja.  Conditions and list sources are expressions of the
safe expression language in :mod:`clarion.domain.expr`.

Placeholders::

    {userName}  ${name}  ${user.city}  {data.order.id}  {item.sku}
    ${name!"friend"}  ${name!}  {name|default:"friend"}  {name|upper}  {name|lower}
    {title|truncate:20}  {amount|number:2}  {data.amount|currency:"CNY"}  {data.amount|currency:data.currency}
    {data.paid_at|date}  {data.paid_at|date:"short"}  {data.paid_at|datetime:"yyyy-MM-dd HH:mm"}  {data.at|time}

A bare name is looked up in ``data`` first, then in ``user`` (as in :mod:`clarion.domain.render`); a path may
also start with ``data.``, ``user.`` or a loop variable, and a numeric step indexes a list (``{data.items.0}``).
``None`` counts as missing.  A missing value without a default raises ``MissingVariable`` and no text is
returned.  Filters run left to right; a missing value passes through every filter but ``default``.
``truncate:N`` keeps the result within N characters, ending in "…" when it cut.  ``number:N`` prints fixed
decimals (rounding half away from zero): plain (``1234.50``, as before locales were supported) for a user
without a known locale, with the locale's separators otherwise (``1,234.50``, de ``1.234,50``).
A ``{`` that does not open a placeholder (JSON, ``{ x }``, ``{}``, an unclosed ``{name``) is literal text; a ``${``
with no ``}`` on its line (``Hi ${user.name, welcome``) and a placeholder with a malformed or unknown filter are
save-time errors; a filter that cannot use its value is a ``RenderError`` naming
the placeholder and its line and column.

Locale formats (Babel, CLDR data) follow ``user.locale`` (``zh_CN``, ``zh-CN``, ``de-DE``, ``en``; unknown or
absent: ``DEFAULT_LOCALE``, zh_CN, as Clarion's users mostly read Chinese) and ``user.timezone`` (IANA; unknown or
absent: UTC), both put in the context by ``render.context_for``.  ``currency:CODE`` takes an ISO 4217 code,
literal (checked at save time) or read from a path, and rounds to the currency's digits half away from zero
(``¥1,234.50`` zh_CN, ``CN¥1,234.50`` en).  ``date``, ``datetime`` and ``time`` take a style (``"short"``,
``"medium"`` — the default —, ``"long"``, ``"full"``) or a CLDR pattern (``"yyyy-MM-dd HH:mm"``, literal text
quoted: ``"d 'at' HH:mm"``), checked at save time.  They read ISO 8601 strings (a naive time is UTC), unix seconds
(int or float) and Python dates/datetimes, and print the moment in the user's zone; a date without a time
(``"2024-03-05"``) is a calendar day and is never shifted.

Directives::

    <#if EXPR>…<#elseif EXPR>…<#else>…</#if>
    <#list EXPR as item>… {item.name} {item_index} …</#list>
    <#-- a comment -->

In a directive tag the first ``>`` outside parentheses, brackets and string literals closes the tag, so write
``<#if (user.age > 30)>`` or ``<#if user.age gt 30>``.  Inside conditions a missing value is ``null`` (expr
semantics) and bare names also resolve ``data`` first, then ``user``.  ``item_index`` counts from 0.  A list
source that is ``null`` loops zero times; anything but a list is a ``RenderError``.  Limits (``RenderError``):
``MAX_ITERATIONS`` per loop, ``MAX_TOTAL_ITERATIONS`` per render and ``MAX_OUTPUT`` characters of output.

The work a render does with the data is metered (``domain.budget``): each loop iteration charges the nodes of its
body, conditions and list sources charge what their expressions visit, and a placeholder charges for a long
string or a list or object it prints.  Past the budget — ``RENDER_BUDGET`` for all the fields of one channel's
content, or per ``render`` outside a composer — the render raises ``RenderBudgetExceeded`` naming the directive or
placeholder, before doing the work it could not afford.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, tzinfo
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation, localcontext
from typing import Any

import babel
import babel.dates
import babel.numbers

from clarion.domain import budget, errors, expr, locales
from clarion.domain.expr import Expression, compile_expression

__all__ = [
    "DEFAULT_LOCALE",
    "FILTERS",
    "MAX_ITERATIONS",
    "MAX_NESTING",
    "MAX_OUTPUT",
    "MAX_TOTAL_ITERATIONS",
    "Template",
    "TemplateSyntaxError",
    "compile_template",
    "resolves",
    "unclosed_braces",
]

MAX_ITERATIONS = 1000  # per <#list>
MAX_TOTAL_ITERATIONS = 10_000  # all loops of one render together (nested loops multiply)
MAX_OUTPUT = 64 * 1024  # characters
MAX_NESTING = 32  # directives inside directives
FILTERS = frozenset({"default", "upper", "lower", "truncate", "number", "currency", "date", "datetime", "time"})
DEFAULT_LOCALE = "zh_CN"  # dates and currencies for a user without a locale Babel knows; ``number`` stays plain

Node = Callable[[Mapping[str, Any]], str]
_MISSING: Any = object()
_UNSET: Any = object()
_ITERATIONS = " iterations"  # a scope key no name can spell: loop iterations left
_ROOTS = ("data", "user")
_DECIMAL = Context(prec=400, rounding=ROUND_HALF_UP)


class TemplateSyntaxError(errors.ClarionError):
    """A template that does not compile; ``line`` and ``column`` are 1-based."""

    def __init__(self, message: str, line: int, column: int, *, position: int = 0) -> None:
        super().__init__(f"{message} at line {line}, column {column}")
        self.message = message
        self.line = line
        self.column = column
        self.position = position


# --------------------------------------------------------------------------------------------- values


def _to_text(value: Any) -> str:
    """How a value reads in text: booleans as true/false, lists and dicts as compact JSON."""
    if type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return str(value)


def _step(current: Any, part: str) -> Any:
    if isinstance(current, Mapping):
        return current.get(part, _MISSING)
    if isinstance(current, list | tuple) and part.isdigit():
        index = int(part)
        return current[index] if index < len(current) else _MISSING
    return _MISSING


def _walk(current: Any, parts: tuple[str, ...]) -> Any:
    for part in parts:
        current = _step(current, part)
        if current is _MISSING or current is None:
            return _MISSING
    return current


def _getter(path: str, loop_variables: frozenset[str]) -> Callable[[Mapping[str, Any]], Any]:
    """A closure reading ``path`` from a scope; ``_MISSING`` when absent or null."""
    first, *rest = path.split(".")
    parts = tuple(rest)
    if first in loop_variables or (first in _ROOTS and parts):
        root = first

        def rooted(scope: Mapping[str, Any]) -> Any:
            value = scope.get(root)
            return _MISSING if value is None else _walk(value, parts)

        return rooted
    names = (first, *parts)
    if not parts:  # the common {userName}: data first, then user

        def bare(scope: Mapping[str, Any]) -> Any:
            data = scope.get("data")
            if type(data) is dict:
                value = data.get(first)
                if value is not None:
                    return value
            elif data is not None and (value := _walk(data, names)) is not _MISSING:
                return value
            user = scope.get("user")
            if type(user) is dict:
                value = user.get(first)
                return _MISSING if value is None else value
            return _MISSING if user is None else _walk(user, names)

        return bare

    def dotted(scope: Mapping[str, Any]) -> Any:
        value = _walk(scope.get("data"), names)
        return _walk(scope.get("user"), names) if value is _MISSING else value

    return dotted


class _Scope(dict[str, Any]):
    """The render context plus loop variables; a bare name read by an expression falls back to data, then user."""

    __slots__ = ()

    def get(self, key: str, default: Any = None) -> Any:
        if key in self:
            return self[key]
        for root in _ROOTS:
            value = _walk(dict.get(self, root), (key,))
            if value is not _MISSING:
                return value
        return default


# ------------------------------------------------------------------------------------- locale formats


def _setting(scope: Mapping[str, Any], key: str) -> Any:
    """``user.<key>`` of the render context (``render.context_for`` puts ``locale`` and ``timezone`` there)."""
    user = dict.get(scope, "user") if isinstance(scope, dict) else scope.get("user")
    return user.get(key) if isinstance(user, Mapping) else None


def _user_locale(scope: Mapping[str, Any]) -> babel.Locale | None:
    name = _setting(scope, "locale")
    return locales.parse_locale(name) if isinstance(name, str) and name else None


def _locale_or_default(scope: Mapping[str, Any]) -> babel.Locale:
    locale = _user_locale(scope) or locales.parse_locale(DEFAULT_LOCALE)
    assert locale is not None
    return locale


def _user_zone(scope: Mapping[str, Any]) -> tzinfo:
    name = _setting(scope, "timezone")
    return locales.zone_named(name) if isinstance(name, str) else UTC


# -------------------------------------------------------------------------------------------- filters

Filter = Callable[[Any, Mapping[str, Any]], Any]  # (value, scope) -> value; scope gives the user's locale and zone


class _FilterFailed(Exception):
    """A filter could not use its value; the placeholder turns it into a ``RenderError`` naming itself."""


def _decimal(value: Any, name: str) -> Decimal:
    """``value`` as an exact Decimal: a float reads as its shortest repr, so 0.1 stays 0.1."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise _FilterFailed(f"{name} filter needs a number, not {type(value).__name__}")
    try:
        exact = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        exact = Decimal("NaN")
    if not exact.is_finite():
        raise _FilterFailed(f"{name} filter cannot format {str(value)[:40]!r}")
    return exact


def _round(exact: Decimal, exponent: Decimal, name: str) -> Decimal:
    try:
        return exact.quantize(exponent, context=_DECIMAL)
    except InvalidOperation:
        raise _FilterFailed(f"{name} filter cannot format {str(exact)[:40]!r}") from None


def _number(digits: int) -> Filter:
    exponent = Decimal(1).scaleb(-digits)

    def apply(value: Any, scope: Mapping[str, Any]) -> Any:
        if value is _MISSING:
            return value
        rounded = _round(_decimal(value, "number"), exponent, "number")
        locale = _user_locale(scope)
        if locale is None:
            return f"{rounded:f}"
        with localcontext(_DECIMAL):  # Babel quantizes again, in the current context (28 digits by default)
            return locales.decimal_pattern(locale, digits).apply(rounded, locale)

    return apply


def _code_reader(path: str, get: Callable[[Mapping[str, Any]], Any]) -> Callable[[Mapping[str, Any]], str]:
    def read(scope: Mapping[str, Any]) -> str:
        found = get(scope)
        if found is _MISSING:
            raise errors.MissingVariable(path)
        code = locales.currency_code(found)
        if code is None:
            raise _FilterFailed(f"currency filter needs an ISO 4217 code, not {_to_text(found)[:40]!r}")
        return code

    return read


def _currency(read_code: Callable[[Mapping[str, Any]], str]) -> Filter:
    def apply(value: Any, scope: Mapping[str, Any]) -> Any:
        if value is _MISSING:
            return value
        code = read_code(scope)
        exponent = Decimal(1).scaleb(-babel.numbers.get_currency_precision(code))
        rounded = _round(_decimal(value, "currency"), exponent, "currency")
        with localcontext(_DECIMAL):
            return babel.numbers.format_currency(rounded, code, locale=_locale_or_default(scope))

    return apply


def _when(kind: str, style: str) -> Filter:
    def apply(value: Any, scope: Mapping[str, Any]) -> Any:
        if value is _MISSING:
            return value
        locale = _locale_or_default(scope)
        try:
            return locales.format_when(value, kind, style, locale, _user_zone(scope))
        except ValueError as exc:
            raise _FilterFailed(f"{kind} filter {exc}") from None
        except OverflowError:
            raise _FilterFailed(f"{kind} filter: {_to_text(value)[:40]!r} is out of range") from None

    return apply


def _truncate(limit: int) -> Filter:
    def apply(value: Any, scope: Mapping[str, Any]) -> Any:
        if value is _MISSING:
            return value
        text = _to_text(value)
        return text if len(text) <= limit else text[: limit - 1] + "…"

    return apply


def _case(method: Callable[[str], str]) -> Filter:
    return lambda value, scope: value if value is _MISSING else method(_to_text(value))


def _default(fallback: Any) -> Filter:
    return lambda value, scope: fallback if value is _MISSING else value


# --------------------------------------------------------------------------------------------- parser

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PLACEHOLDER = re.compile(r"\$?\{(" + _NAME + r"(?:\.[A-Za-z0-9_]+)*)([|!][^{}\n]*)?\}")
_SPECIAL = re.compile(r"\$?\{|</?#")
_DIRECTIVE = re.compile(r"<(/?)#(" + _NAME + ")")
_STRING = re.compile(r""""((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'""")
_ESCAPE = re.compile(r"\\(.)")
_FILTER = re.compile(r"\|(" + _NAME + r")(?::(-?\d+))?")
_PATH = re.compile(_NAME + r"(?:\.[A-Za-z0-9_]+)*")
_LIST = re.compile(r"(.*\S)\s+as\s+(" + _NAME + r")\s*\Z", re.DOTALL)


def _unclosed(source: str, after: int) -> bool:
    """Whether the ``${`` ending at ``after`` has no ``}`` before the line (or the text) ends, or before the next
    ``{`` opens: ``${`` only ever opens a placeholder, so a forgotten brace is an error rather than text sent
    verbatim. A bare ``{`` left open stays text, since prose and JSON use braces freely."""
    for i in range(after, len(source)):
        c = source[i]
        if c == "}":
            return False
        if c in "{\n":
            return True
    return True


class _Frame:
    """An open directive while parsing: the nodes of its current branch and what to build when it closes."""

    __slots__ = ("body", "branches", "else_body", "kind", "loop_variables", "nodes", "position", "tag")

    def __init__(self, kind: str, position: int, loop_variables: frozenset[str], tag: str = "") -> None:
        self.kind = kind  # "root" | "if" | "list"
        self.position = position
        self.loop_variables = loop_variables
        self.tag = tag
        self.body: list[Node] = []
        self.branches: list[tuple[Expression, int, list[Node]]] = []
        self.else_body: list[Node] | None = None
        self.nodes = 0  # what one pass costs: its nodes and its branches' (a nested loop's body charges itself)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.variables: set[str] = set()
        self.stack = [_Frame("root", 0, frozenset())]
        self.has_directives = False

    # ----------------------------------------------------------------------------------- positions

    def where(self, position: int) -> tuple[int, int]:
        return expr.line_column(self.source, position)

    def error(self, message: str, position: int) -> TemplateSyntaxError:
        line, column = self.where(position)
        return TemplateSyntaxError(message, line, column, position=position)

    # -------------------------------------------------------------------------------------- driver

    def parse(self) -> list[Node]:
        source, i, text_start = self.source, 0, 0
        while (match := _SPECIAL.search(source, i)) is not None:
            start = match.start()
            if match.group().endswith("{"):
                placeholder = _PLACEHOLDER.match(source, start)
                if placeholder is None:
                    if match.group() == "${" and _unclosed(source, start + 2):
                        raise self.error("unclosed ${: end the placeholder with }", start)
                    i = start + 1
                    continue
                self.text(text_start, start)
                self.emit(self.placeholder(placeholder))
                i = text_start = placeholder.end()
                continue
            if source.startswith("<#--", start):
                end = source.find("-->", start + 4)
                if end < 0:
                    raise self.error("unclosed comment <#--", start)
                self.text(text_start, start)
                i = text_start = end + 3
                continue
            directive = _DIRECTIVE.match(source, start)
            if directive is None:  # "<#" followed by no name is text
                i = start + 2
                continue
            self.text(text_start, start)
            i = text_start = self.directive(directive)
        self.text(text_start, len(source))
        frame = self.stack[-1]
        if frame.kind != "root":
            raise self.error(f"unclosed <#{frame.kind}>", frame.position)
        return frame.body

    def emit(self, node: Node, nodes: int = 1) -> None:
        frame = self.stack[-1]
        frame.nodes += nodes
        if frame.else_body is not None:
            frame.else_body.append(node)
        elif frame.branches:
            frame.branches[-1][2].append(node)
        else:
            frame.body.append(node)

    def text(self, start: int, end: int) -> None:
        if end > start:
            text = self.source[start:end]
            self.emit(lambda scope: text)

    # --------------------------------------------------------------------------------- placeholders

    def placeholder(self, match: re.Match[str]) -> Node:
        path, tail = match.group(1), match.group(2) or ""
        loop_variables = self.stack[-1].loop_variables
        if path.split(".", 1)[0] not in loop_variables:
            self.variables.add(path)
        get = _getter(path, loop_variables)
        filters = self.filters(tail, match.start(2))
        line, column = self.where(match.start())
        meter = _meter(f"placeholder {{{path}}} at line {line}, column {column}", len(filters))
        if not filters:

            def plain(scope: Mapping[str, Any]) -> str:
                value = get(scope)
                if value is _MISSING:
                    raise errors.MissingVariable(path)
                if type(value) is str:
                    if len(value) > budget.LONG_TEXT:
                        meter(value)
                    return value
                if type(value) is list or type(value) is dict:
                    meter(value)
                return _to_text(value)

            return plain

        def filtered(scope: Mapping[str, Any]) -> str:
            value = get(scope)
            if (type(value) is str and len(value) > budget.LONG_TEXT) or type(value) is list or type(value) is dict:
                meter(value)
            try:
                for apply in filters:
                    value = apply(value, scope)
            except _FilterFailed as exc:
                raise errors.RenderError(f"{exc} (placeholder {{{path}}} at line {line}, column {column})") from None
            if value is _MISSING:
                raise errors.MissingVariable(path)
            return _to_text(value)

        return filtered

    def filters(self, tail: str, offset: int) -> list[Filter]:
        result: list[Filter] = []
        i = 0
        while i < len(tail):
            if tail[i] == "!":  # FreeMarker default: name!"x", or name! for an empty default
                string = _STRING.match(tail, i + 1)
                if string is not None:
                    result.append(_default(self.literal(string)))
                    i = string.end()
                else:
                    result.append(_default(""))
                    i += 1
                continue
            match = _FILTER.match(tail, i)
            if match is None:
                raise self.error(f"malformed filter {tail[i:]!r}", offset + i)
            name, number = match.group(1), match.group(2)
            position = offset + i + 1
            i = match.end()
            if name == "default":
                string = _STRING.match(tail, i + 1) if tail.startswith(":", i) else None
                if string is not None:
                    result.append(_default(self.literal(string)))
                    i = string.end()
                elif number is not None:
                    result.append(_default(int(number)))
                else:
                    raise self.error('default needs a value, as in |default:"friend"', position)
            elif name in ("upper", "lower"):
                if number is not None or tail.startswith(":", i):
                    raise self.error(f"{name} takes no argument", position)
                result.append(_case(str.upper if name == "upper" else str.lower))
            elif name == "truncate":
                if number is None or int(number) < 1:
                    raise self.error("truncate needs a length of at least 1, as in |truncate:20", position)
                result.append(_truncate(int(number)))
            elif name == "number":
                digits = 0 if number is None else int(number)
                if not 0 <= digits <= 20:
                    raise self.error("number needs 0 to 20 decimals, as in |number:2", position)
                result.append(_number(digits))
            elif name in ("date", "datetime", "time", "currency"):
                argument = _STRING.match(tail, i + 1) if number is None and tail.startswith(":", i) else None
                if argument is None and name == "currency" and number is None and tail.startswith(":", i):
                    argument = _PATH.match(tail, i + 1)
                if argument is None and (number is not None or tail.startswith(":", i) or name == "currency"):
                    usage = (
                        'a currency code, as in |currency:"CNY" or |currency:data.currency'
                        if name == "currency"
                        else f'a quoted style or pattern, as in |{name}:"short"'
                    )
                    raise self.error(f"{name} needs {usage}", position)
                make = self.currency if name == "currency" else self.when
                result.append(make(name, argument, position))
                i = i if argument is None else argument.end()
            else:
                raise self.error(f"unknown filter '{name}' (known: {', '.join(sorted(FILTERS))})", position)
        return result

    def when(self, name: str, argument: re.Match[str] | None, position: int) -> Filter:
        style = "medium" if argument is None else self.literal(argument)
        problem = locales.pattern_problem(style)
        if problem is not None:
            raise self.error(
                f'{name} format {style[:40]!r} {problem} (styles: "short", "medium", "long", "full"; '
                'or a CLDR pattern like "yyyy-MM-dd HH:mm")',
                position,
            )
        return _when(name, style)

    def currency(self, name: str, argument: re.Match[str] | None, position: int) -> Filter:
        assert argument is not None
        if argument.re is _PATH:  # the code is read from the data, as in |currency:data.currency
            path = argument.group()
            loop_variables = self.stack[-1].loop_variables
            if path.split(".", 1)[0] not in loop_variables:
                self.variables.add(path)
            return _currency(_code_reader(path, _getter(path, loop_variables)))
        code = locales.currency_code(self.literal(argument))
        if code is None:
            literal = self.literal(argument)[:40]
            raise self.error(f'unknown currency code {literal!r} (an ISO 4217 code, as in |currency:"CNY")', position)
        return _currency(lambda scope: code)

    @staticmethod
    def literal(string: re.Match[str]) -> str:
        raw = string.group(1) if string.group(1) is not None else string.group(2)
        return _ESCAPE.sub(lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), raw)

    # ----------------------------------------------------------------------------------- directives

    def tag_end(self, start: int, body_start: int) -> int:
        """The index of the ``>`` closing the tag opened at ``start``: the first one outside (), [] and strings."""
        source, depth, i, n = self.source, 0, body_start, len(self.source)
        while i < n:
            c = source[i]
            if c in "\"'":
                i += 1
                while i < n and source[i] != c:
                    i += 2 if source[i] == "\\" else 1
            elif c in "([":
                depth += 1
            elif c in ")]":
                depth = max(depth - 1, 0)
            elif c == ">" and depth == 0:
                return i
            elif c == "{":
                at = i - 1 if source.startswith("${", i - 1) else i
                raise self.error("a placeholder cannot be used inside a directive: write the bare expression", at)
            i += 1
        raise self.error("directive tag is not closed with '>'", start)

    def expression(self, text: str, offset: int, what: str, tag_start: int) -> Expression:
        if not text.strip():
            raise self.error(f"<#{what}> needs an expression", tag_start)
        try:
            compiled = compile_expression(text)
        except errors.ExpressionError as exc:
            raise self.error(exc.message, offset + exc.position) from None
        loop_variables = self.stack[-1].loop_variables
        self.variables.update(v for v in compiled.variables if v.split(".", 1)[0] not in loop_variables)
        return compiled

    def directive(self, match: re.Match[str]) -> int:
        start, closing, name = match.start(), match.group(1) == "/", match.group(2)
        if name not in ("if", "elseif", "else", "list") or (closing and name not in ("if", "list")):
            raise self.error(f"unknown directive <{'/' if closing else ''}#{name}>", start)
        body_start = match.end()
        end = self.tag_end(start, body_start)
        if self.source.startswith("=", end + 1):
            raise self.error("'>=' closes the tag here: write (a >= b) or 'a gte b'", end)
        body = self.source[body_start:end]
        self.has_directives = True
        frame = self.stack[-1]
        if closing or name == "else":
            if body.strip() and body.strip() != "/":
                raise self.error(f"<{'/' if closing else ''}#{name}> takes nothing after its name", body_start)
        elif body[:1] not in ("", " ", "\t", "\n", "\r", "("):
            raise self.error(f"unknown directive <#{name}{body.split()[0]}>", start)
        if closing:
            if frame.kind != name:
                opened = "" if frame.kind == "root" else f" (the open directive is <#{frame.kind}>)"
                raise self.error(f"</#{name}> without a matching <#{name}>{opened}", start)
            self.stack.pop()
            self.emit(self.close(frame), 1 + frame.nodes if frame.kind == "if" else 1)
        elif name == "if":
            self.open("if", start, frame.loop_variables)
            condition = self.expression(body, body_start, "if", start)
            self.stack[-1].branches.append((condition, start, []))
        elif name in ("elseif", "else"):
            if frame.kind != "if":
                raise self.error(f"<#{name}> outside <#if>", start)
            if frame.else_body is not None:
                raise self.error(f"<#{name}> after <#else>", start)
            if name == "else":
                frame.else_body = []
            else:
                condition = self.expression(body, body_start, "elseif", start)
                frame.branches.append((condition, start, []))
        else:
            found = _LIST.match(body)
            if found is None:
                raise self.error("malformed <#list>: write <#list data.items as item>", start)
            variable = found.group(2)
            if variable in _ROOTS:
                raise self.error(f"'{variable}' cannot name a loop variable", body_start + found.start(2))
            source = self.expression(found.group(1), body_start, "list", start)
            self.open("list", start, frame.loop_variables | {variable, f"{variable}_index"}, variable)
            self.stack[-1].branches.append((source, start, []))
        return end + 1

    def open(self, kind: str, start: int, loop_variables: frozenset[str], tag: str = "") -> None:
        if len(self.stack) > MAX_NESTING:
            raise self.error(f"directives nested more than {MAX_NESTING} deep", start)
        frame = _Frame(kind, start, loop_variables, tag)
        self.stack.append(frame)

    def close(self, frame: _Frame) -> Node:
        if frame.kind == "if":
            branches = [(self.test(condition, at), _block(body)) for condition, at, body in frame.branches]
            otherwise = _block(frame.else_body or [])
            return _conditional(branches, otherwise)
        source, at, body = frame.branches[0]
        return self.loop(source, at, frame.tag, _block(body), max(frame.nodes, 1) * budget.NODE_COST)

    def located(self, at: int, message: str) -> errors.RenderError:
        line, column = self.where(at)
        return errors.RenderError(f"{message} (directive at line {line}, column {column})")

    def over_budget(self, at: int, exc: errors.RenderBudgetExceeded, what: str = "directive") -> Exception:
        line, column = self.where(at)
        return errors.RenderBudgetExceeded(f"{exc.message} ({what} at line {line}, column {column})", limit=exc.limit)

    def test(self, condition: Expression, at: int) -> Callable[[Mapping[str, Any]], bool]:
        def check(scope: Mapping[str, Any]) -> bool:
            try:
                return condition.test(scope)
            except errors.ExpressionError as exc:
                raise self.located(at, f"condition failed: {exc.message}") from None
            except errors.RenderBudgetExceeded as exc:
                raise self.over_budget(at, exc) from None

        return check

    def loop(self, source: Expression, at: int, variable: str, body: Node, pass_cost: int) -> Node:
        index_name = f"{variable}_index"
        located = self.located

        def run(scope: Mapping[str, Any]) -> str:
            assert isinstance(scope, _Scope)
            try:
                items = source.evaluate(scope)
            except errors.ExpressionError as exc:
                raise located(at, f"list source failed: {exc.message}") from None
            except errors.RenderBudgetExceeded as exc:
                raise self.over_budget(at, exc) from None
            if items is None:
                return ""
            if not isinstance(items, list | tuple):
                raise located(at, f"<#list> needs a list, not {type(items).__name__}")
            if len(items) > MAX_ITERATIONS:
                raise located(at, f"<#list> over {len(items)} items (limit {MAX_ITERATIONS})")
            iterations = scope[_ITERATIONS]
            iterations[0] -= len(items)
            if iterations[0] < 0:
                raise located(at, f"more than {MAX_TOTAL_ITERATIONS} loop iterations in one message")
            try:
                budget.charge(len(items) * pass_cost, "<#list>")
            except errors.RenderBudgetExceeded as exc:
                raise self.over_budget(at, exc) from None
            saved = dict.get(scope, variable, _UNSET), dict.get(scope, index_name, _UNSET)
            parts: list[str] = []
            size = 0
            try:
                for index, item in enumerate(items):
                    scope[variable] = item
                    scope[index_name] = index
                    text = body(scope)
                    size += len(text)
                    if size > MAX_OUTPUT:
                        raise located(at, f"output longer than {MAX_OUTPUT} characters")
                    parts.append(text)
            finally:
                for key, value in zip((variable, index_name), saved, strict=True):
                    if value is _UNSET:
                        scope.pop(key, None)
                    else:
                        scope[key] = value
            return "".join(parts)

        return run


def _meter(where: str, filters: int) -> Callable[[Any], None]:
    """What a placeholder charges for a long string (its copy, or each filter's rewrite) or for a list or object
    (printing it as JSON, once per filter), before the work."""
    dumps = max(filters, 1)

    def meter(value: Any) -> None:
        try:
            if type(value) is str:
                cost = budget.rewrite_cost(value) * filters if filters else budget.text_cost(value)
                budget.charge(cost, "printing a long string")
            else:
                budget.measured(value, "printing a list or object", budget.DUMP_COST * dumps)
        except errors.RenderBudgetExceeded as exc:
            raise errors.RenderBudgetExceeded(f"{exc.message} ({where})", limit=exc.limit) from None

    return meter


def _block(nodes: list[Node]) -> Node:
    if not nodes:
        return lambda scope: ""
    if len(nodes) == 1:
        return nodes[0]
    items = tuple(nodes)
    return lambda scope: "".join([node(scope) for node in items])


def _conditional(branches: list[tuple[Callable[[Mapping[str, Any]], bool], Node]], otherwise: Node) -> Node:
    def choose(scope: Mapping[str, Any]) -> str:
        for check, body in branches:
            if check(scope):
                return body(scope)
        return otherwise(scope)

    return choose


# ------------------------------------------------------------------------------------------------ API


class Template:
    """A compiled template: ``render({"data": {...}, "user": {...}})`` returns the text or raises ``RenderError``."""

    __slots__ = ("_node", "_scoped", "source", "variables")

    def __init__(self, source: str, variables: frozenset[str], node: Node, scoped: bool) -> None:
        self.source = source
        self.variables = variables  # placeholder paths and expression variables, loop variables excluded
        self._node = node
        self._scoped = scoped

    def render(self, context: Mapping[str, Any]) -> str:
        """The text for ``context``, within the active budget (the composer's), else a ``RENDER_BUDGET`` of its
        own; raises ``RenderError`` (``RenderBudgetExceeded`` past the budget)."""
        if budget.ACTIVE.get() is None:
            token = budget.ACTIVE.set(budget.Budget(budget.RENDER_BUDGET, errors.RenderBudgetExceeded))
            try:
                return self.render(context)
            finally:
                budget.ACTIVE.reset(token)
        if self._scoped:
            scope = _Scope(context)
            scope[_ITERATIONS] = [MAX_TOTAL_ITERATIONS]
            text = self._node(scope)
        else:
            text = self._node(context)
        if len(text) > MAX_OUTPUT:
            raise errors.RenderError(f"output longer than {MAX_OUTPUT} characters")
        return text

    def __repr__(self) -> str:
        return f"Template({self.source[:40]!r})"


_OPEN_BRACE = re.compile(r"(?<!\$)\{(" + _NAME + r"(?:\.[A-Za-z0-9_]+)*)")


def unclosed_braces(source: str) -> list[tuple[str, int, int]]:
    """The bare ``{name`` openings of ``source`` that have no ``}`` on their line, as (path, line, column): they
    are text to the language (braces are free in prose and JSON), so they are sent as typed, but an editor can
    warn about what is most likely a forgotten brace (``Hi {user.name, welcome``)."""
    found = []
    for match in _OPEN_BRACE.finditer(source):
        if _PLACEHOLDER.match(source, match.start()) is None and _unclosed(source, match.start() + 1):
            line, column = expr.line_column(source, match.start())
            found.append((match.group(1), line, column))
    return found


def resolves(path: str, context: Mapping[str, Any]) -> bool:
    """Whether ``path`` (one of a template's ``variables``) finds a value in ``context`` the way a placeholder
    looks it up, so an editor can name the variables a preview's user and data lack before a send fails."""
    return _getter(path, frozenset())(context) is not _MISSING


@functools.lru_cache(maxsize=1024)
def compile_template(source: str) -> Template:
    """Parse and validate ``source`` once; raise ``TemplateSyntaxError`` with the 1-based line and column."""
    if not isinstance(source, str):
        raise TypeError(f"template source must be a string, not {type(source).__name__}")
    parser = _Parser(source)
    node = _block(parser.parse())
    return Template(source, frozenset(parser.variables), node, parser.has_directives)
