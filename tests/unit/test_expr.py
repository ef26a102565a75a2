"""The condition expression language: semantics, errors with positions, limits and safety."""

from __future__ import annotations

import operator
from decimal import Decimal
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clarion.domain import budget, errors
from clarion.domain.errors import ClarionError, ConditionBudgetExceeded, ExpressionError
from clarion.domain.expr import MAX_DEPTH, MAX_SIZE, MAX_SOURCE_LENGTH, Expression, compile_expression

CTX: dict[str, Any] = {
    "data": {
        "amount": 150,
        "price": 9.5,
        "name": "Order #7",
        "order": {"amount": 250, "currency": "EUR"},
        "items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 5}],
        "tags": ["new", "vip"],
        "key with space": "spaced",
        "0": "string zero",
        "coupon": None,
        "flag": True,
        "empty": "",
        "nested": {"in": {"gt": 5}},
        "idx": 1,
    },
    "user": {"vip_level": 3, "country": "FR", "tags": ["b", "c"]},
    "event": "order.paid",
}


def ev(source: str, context: Any = None) -> Any:
    return compile_expression(source).evaluate(CTX if context is None else context)


def compile_error(source: str) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    return info.value


def eval_error(source: str, context: Any = None) -> ExpressionError:
    expression = compile_expression(source)
    with pytest.raises(ExpressionError) as info:
        expression.evaluate(CTX if context is None else context)
    return info.value


# ------------------------------------------------------------------------------------------ literals


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("42", 42),
        ("0", 0),
        ("007", 7),
        ("1.5", 1.5),
        ("-3", -3),
        ("-0.25", -0.25),
        ("'single'", "single"),
        ('"double"', "double"),
        ("''", ""),
        (r"'it\'s'", "it's"),
        (r'"say \"hi\""', 'say "hi"'),
        (r"'a\nb\tc\\d\/e'", "a\nb\tc\\d/e"),
        (r"'\u00e9t\u00E9'", "été"),
        ("'日本'", "日本"),
        ("true", True),
        ("false", False),
        ("null", None),
        ("[1, 2, 'a']", [1, 2, "a"]),
        ("[]", []),
        ("[[1], [2, [3]]]", [[1], [2, [3]]]),
        ("[data.amount, null]", [150, None]),
    ],
)
def test_literals(source: str, expected: Any) -> None:
    result = ev(source)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("source", ["True", "False", "None"])
def test_python_spellings_of_constants_are_ordinary_variables(source: str) -> None:
    assert ev(source) is None
    assert ev(source, {source: "looked up"}) == "looked up"


def test_list_literals_are_fresh_on_every_evaluation() -> None:
    expression = compile_expression("[1, 2]")
    first = expression.evaluate({})
    first.append(3)
    assert expression.evaluate({}) == [1, 2]


# ------------------------------------------------------------------------------------------- lookups


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("data.amount", 150),
        ("data.order.amount", 250),
        ("user.vip_level", 3),
        ("event", "order.paid"),
        ("data.items[0].sku", "a"),
        ("data.items[1]['qty']", 5),
        ("data.items[-1].sku", "b"),
        ("data.items[-2].sku", "a"),
        ("data.items[2]", None),
        ("data.items[-3]", None),
        ('data["key with space"]', "spaced"),
        ("data['order']['currency']", "EUR"),
        ("data['0']", "string zero"),
        ("data[0]", None),  # an integer is not the string key "0"
        ("data.items[data.idx].sku", "b"),
        ("data.items[data.missing]", None),
        ("data.items[user.vip_level - 3].qty", 2),
        ("data[user.country]", None),
        ("data.nested.in.gt", 5),  # keywords are fine after a dot
        ("(data.order).currency", "EUR"),
        ("[10, 20, 30][1]", 20),
        ("default(data.order, 1).amount", 250),
    ],
)
def test_lookups(source: str, expected: Any) -> None:
    assert ev(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        "nobody",
        "user.age",
        "data.coupon",
        "data.coupon.code",
        "data.missing.deeper.still",
        "data.items.sku",  # a name on a list
        "data.name[0]",  # strings are not indexable
        "data.amount.value",  # a name on a number
        "data.items[0].sku.x",
        "data.tags[5]",
    ],
)
def test_missing_keys_anywhere_are_null(source: str) -> None:
    assert ev(source) is None


def test_missing_roots_are_null_in_an_empty_context() -> None:
    assert ev("data.order.amount", {}) is None


def test_lookup_walks_any_mapping_not_only_dicts() -> None:
    context = MappingProxyType({"data": MappingProxyType({"a": MappingProxyType({"b": [7, 8]})})})
    assert ev("data.a.b[1]", context) == 8
    assert ev("data.a.missing", context) is None


def test_lookup_never_reads_object_attributes() -> None:
    context = {"data": SimpleNamespace(secret="s3cret", amount=10)}
    assert ev("data.secret", context) is None
    assert ev("data.amount > 5", context) is False


@pytest.mark.parametrize(
    "source",
    [
        "data.__class__",
        "data.__class__.__mro__",
        "data['__class__']",
        "data.__dict__",
        "data.items.__len__",
        "data.__class__.__base__.__subclasses__",
        "user.__init__.__globals__",
        "__builtins__",
        "__import__",
        "len(data.items).__class__",
        "'abc'.__class__",
        "[1].__class__",
        "(data).__class__.__name__",
        "data[str(data)]",
    ],
)
def test_dunder_names_are_just_missing_keys(source: str) -> None:
    context = {**CTX, "user": SimpleNamespace(name="x")}
    assert ev(source, context) is None


def test_dunder_names_are_ordinary_keys_when_present() -> None:
    assert ev("data.__class__", {"data": {"__class__": "mine"}}) == "mine"


def test_calling_anything_but_a_builtin_is_impossible() -> None:
    assert compile_error("__import__('os')").message == "unknown function '__import__'"
    assert compile_error("data.__class__('x')").message.startswith("only built-in functions")
    assert compile_error("(len)(data)").message.startswith("only built-in functions")


# --------------------------------------------------------------------------------------- comparisons


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("data.amount == 150", True),
        ("data.amount == 150.0", True),
        ("data.amount != 150", False),
        ("data.name == 'Order #7'", True),
        ("data.name == 7", False),  # equality across types is simply false
        ("data.tags == ['new', 'vip']", True),
        ("data.order == data.order", True),
        ("data.coupon == null", True),
        ("data.coupon != null", False),
        ("data.amount != null", True),
        ("1 < 2", True),
        ("2 < 2", False),
        ("2 <= 2", True),
        ("3 > 2", True),
        ("2 >= 3", False),
        ("1.5 < 2", True),
        ("'abc' < 'abd'", True),
        ("'b' >= 'a'", True),
        ("data.amount gt 100", True),
        ("data.amount gte 150", True),
        ("data.amount lt 150", False),
        ("data.amount lte 150", True),
        ("user.vip_level gte 3", True),
        ("'new' in data.tags", True),
        ("'old' in data.tags", False),
        ("'old' not in data.tags", True),
        ("'new' not in data.tags", False),
        ("'der' in data.name", True),
        ("'xyz' in data.name", False),
        ("'amount' in data.order", True),
        ("'price' in data.order", False),
        ("[1] in data.order", False),  # an unhashable key is in no object
        ("user.country in ['FR', 'DE']", True),
        ("user.country not in ['FR', 'DE']", False),
        ("data.amount in [100, 150]", True),
        ("null in [1, null]", True),
        ("1 in data.missing", False),
        ("1 not in data.missing", True),
        ("null in 'abc'", False),
        ("[1, 2] in [[1, 2], [3]]", True),
        ("data.amount in [data.order.amount, 150]", True),
        ("Decimal_value > 2", True),
    ],
)
def test_comparisons(source: str, expected: bool) -> None:
    context = {**CTX, "Decimal_value": Decimal("2.5")}
    assert ev(source, context) is expected


@pytest.mark.parametrize(
    "source",
    ["user.age > 30", "user.age < 30", "user.age >= 0", "user.age <= 0", "30 < user.age", "null gt null", "null lt 1"],
)
def test_ordering_with_null_is_false(source: str) -> None:
    assert ev(source) is False


@pytest.mark.parametrize(
    ("source", "message", "position"),
    [
        ("'a' < 1", "cannot compare string with number using '<'", 4),
        ("data.amount gte 'x'", "cannot compare number with string using 'gte'", 12),
        ("true > 0", "cannot compare boolean with number using '>'", 5),
        ("data.tags <= data.tags", "cannot compare list with list using '<='", 10),
        ("data.order > 1", "cannot compare object with number using '>'", 11),
        ("1 in 'abc'", "cannot look for number in a string", 2),
        ("1 in 5", "'in' needs a list, string or object on the right, not number", 2),
        ("1 not in true", "'in' needs a list, string or object on the right, not boolean", 2),
        ("contains(5, 1)", "'in' needs a list, string or object on the right, not number", 0),
    ],
)
def test_incompatible_comparisons_fail_at_evaluation(source: str, message: str, position: int) -> None:
    error = eval_error(source)
    assert error.message == message
    assert error.position == position
    assert (error.line, error.column) == (1, position + 1)


# ------------------------------------------------------------------------------------------ booleans


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("true and true", True),
        ("true and false", False),
        ("false or true", True),
        ("false or false", False),
        ("true && false", False),
        ("false || true", True),
        ("not true", False),
        ("not null", True),
        ("!false", True),
        ("!!data.amount", True),
        ("1 and 'x'", True),
        ("0 or ''", False),
        ("[] or [1]", True),
        ("data.empty or data.coupon", False),
        ("data.amount and data.name", True),
        ("true and true and 0", False),
        ("false or false or 'x'", True),
        ("true and 1 && 'a' and [0]", True),
        ("false || 0 or null || ''", False),
    ],
)
def test_boolean_operators_return_bools(source: str, expected: bool) -> None:
    assert ev(source) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("false and 1 / 0 == 1", False),
        ("true or 1 / 0 == 1", True),
        ("false && 'a' < 1", False),
        ("true || 'a' < 1", True),
        ("data.coupon != null and data.coupon.value > 1 / 0", False),
        ("false and false and 1 / 0", False),
        ("true or true or 1 / 0", True),
        ("default(1, 1 / 0)", 1),
    ],
)
def test_short_circuit_skips_the_failing_operand(source: str, expected: Any) -> None:
    assert ev(source) == expected


@pytest.mark.parametrize("source", ["true and 1 / 0 == 1", "false or 1 / 0", "default(null, 1 / 0)"])
def test_the_failing_operand_does_fail_when_reached(source: str) -> None:
    assert eval_error(source).message == "division by zero"


# ---------------------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2", 3),
        ("5 - 8", -3),
        ("6 * 7", 42),
        ("7 / 2", 3.5),
        ("6 / 3", 2.0),
        ("7 % 3", 1),
        ("-7 % 3", 2),
        ("7.5 % 2", 1.5),
        ("1.5 + 1", 2.5),
        ("-data.amount", -150),
        ("- -3", 3),
        ("--3", 3),
        ("data.amount * 2 + data.price", 309.5),
        ("'ab' + \"cd\"", "abcd"),
        ("data.name + '!'", "Order #7!"),
        ("data.tags + ['x']", ["new", "vip", "x"]),
        ("[] + []", []),
        ("Decimal_value * 2", Decimal("5.0")),
    ],
)
def test_arithmetic(source: str, expected: Any) -> None:
    result = ev(source, {**CTX, "Decimal_value": Decimal("2.5")})
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    "source", ["user.age + 1", "1 - data.coupon", "null * 2", "data.missing / 0", "null % 2", "-user.age"]
)
def test_arithmetic_with_null_is_null(source: str) -> None:
    assert ev(source) is None


def test_arithmetic_on_a_missing_value_makes_the_condition_false() -> None:
    assert ev("user.age + 1 > 30") is False


@pytest.mark.parametrize(
    ("source", "message", "position"),
    [
        ("'abc' - 1", "unsupported operands for '-': string and number", 6),
        ("'ab' * 3", "unsupported operands for '*': string and number", 5),
        ("3 * 'ab'", "unsupported operands for '*': number and string", 2),
        ("'a' + 1", "unsupported operands for '+': string and number", 4),
        ("data.tags + 'x'", "unsupported operands for '+': list and string", 10),
        ("true + 1", "unsupported operands for '+': boolean and number", 5),
        ("data.order + data.order", "unsupported operands for '+': object and object", 11),
        ("[1] * 2", "unsupported operands for '*': list and number", 4),
        ("1 / 0", "division by zero", 2),
        ("1.5 / 0.0", "division by zero", 4),
        ("data.amount % 0", "division by zero", 12),
        ("1 + 2 + 3 / (2 - 2)", "division by zero", 10),
        ("1 + 2 - 'x'", "unsupported operands for '-': number and string", 6),
        ("-'a'", "cannot negate string", 0),
        ("1 + -true", "cannot negate boolean", 4),
    ],
)
def test_arithmetic_errors(source: str, message: str, position: int) -> None:
    error = eval_error(source)
    assert (error.message, error.position) == (message, position)


# ---------------------------------------------------------------------------------------- precedence


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("100 / 10 / 5", 2.0),
        ("2 * 3 % 4", 2),
        ("2 + 3 % 2", 3),
        ("-2 * 3", -6),
        ("2 * -3", -6),
        ("1 - -1", 2),
        ("-(2 + 3)", -5),
        ("-[5][0]", -5),  # postfix binds tighter than unary minus
        ("1 + 2 == 3", True),
        ("1 + 2 in [3]", True),
        ("not 1 == 2", True),
        ("not 'a' in ['a']", False),
        ("!1 == 2", True),
        ("not true and false", False),
        ("not (true and false)", True),
        ("true or false and false", True),
        ("false and true or true", True),
        ("true || false && false", True),
        ("(true or false) and false", False),
        ("1 < 2 and 2 < 3", True),
        ("data.amount > 100 and user.vip_level gte 3", True),
        ("len('ab' + 'c') * 2", 6),
        ("[1, 2][1] + 1", 3),
        ("not data.coupon and data.amount > 1", True),
    ],
)
def test_precedence(source: str, expected: Any) -> None:
    assert ev(source) == expected


# ----------------------------------------------------------------------------------------- functions


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("len('abc')", 3),
        ("len(data.tags)", 2),
        ("len(data.order)", 2),
        ("len(data.missing)", 0),
        ("len('')", 0),
        ("lower('AbC')", "abc"),
        ("upper(user.country + 'x')", "FRX"),
        ("trim('  a b \\n')", "a b"),
        ("lower(data.missing)", None),
        ("contains(data.tags, 'vip')", True),
        ("contains(data.name, 'der')", True),
        ("contains(data.order, 'currency')", True),
        ("contains(data.missing, 'x')", False),
        ("starts_with(data.name, 'Order')", True),
        ("starts_with(data.name, 'order')", False),
        ("ends_with(data.name, '#7')", True),
        ("ends_with(data.missing, 'x')", False),
        ("min(3, 1, 2)", 1),
        ("max(3, 1.5, 2)", 3),
        ("min([4, 2, 8])", 2),
        ("max(data.tags)", "vip"),
        ("min(5)", 5),
        ("max(null, 2, data.missing)", 2),
        ("max([])", None),
        ("min(null)", None),
        ("abs(-4)", 4),
        ("abs(2.5)", 2.5),
        ("abs(null)", None),
        ("round(2.5)", 3),
        ("round(-2.5)", -3),
        ("round(2.4)", 2),
        ("round(2.675, 2)", 2.68),
        ("round(1234, -2)", 1200),
        ("round(7, 1)", 7),
        ("round(null)", None),
        ("int(3.9)", 3),
        ("int(-3.9)", -3),
        ("int('42')", 42),
        ("int(' 7 ')", 7),
        ("int('3.7')", 3),
        ("int(true)", 1),
        ("int(null)", None),
        ("float(2)", 2.0),
        ("float('2.5')", 2.5),
        ("float(false)", 0.0),
        ("float(null)", None),
        ("str(42)", "42"),
        ("str(1.5)", "1.5"),
        ("str('x')", "x"),
        ("str(true)", "true"),
        ("str(null)", "null"),
        ("str([1, 'a', null])", '[1, "a", null]'),
        ("str(data.order)", '{"amount": 250, "currency": "EUR"}'),
        ("exists(data.amount)", True),
        ("exists(data.coupon)", False),
        ("exists(data.empty)", True),
        ("exists(user.age)", False),
        ("default(user.age, 18)", 18),
        ("default(data.amount, 18)", 150),
        ("default(data.empty, 'x')", ""),  # only null falls back
        ("any_of(data.tags, ['vip', 'gold'])", True),
        ("any_of(data.tags, user.tags)", False),
        ("any_of([], data.tags)", False),
        ("any_of(data.missing, data.tags)", False),
        ("any_of([[1], [2]], [[2]])", True),  # unhashable elements still compare
        ("len(str(123)) + int('1')", 4),
    ],
)
def test_functions(source: str, expected: Any) -> None:
    result = ev(source)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("len(5)", "len() needs a string, list or object, not number"),
        ("lower(5)", "lower() needs a string, not number"),
        ("upper(data.tags)", "upper() needs a string, not list"),
        ("trim(true)", "trim() needs a string, not boolean"),
        ("starts_with(1, 'a')", "starts_with() needs two strings, not number and string"),
        ("ends_with('a', [1])", "ends_with() needs two strings, not string and list"),
        ("min(1, 'a')", "min() needs numbers or strings, got number, string"),
        ("max([true, 1])", "max() needs numbers or strings, got boolean, number"),
        ("abs('x')", "abs() needs a number, not string"),
        ("round('x')", "round() needs a number, not string"),
        ("round(1.5, 1.5)", "round() needs an integer number of digits, not number"),
        ("round(1.5, 1000000)", "round() cannot round 1.5 to 1000000 digits"),
        ("int('abc')", "int() cannot convert 'abc'"),
        ("int([1])", "int() cannot convert [1]"),
        ("float('x')", "float() cannot convert 'x'"),
        ("any_of(1, [1])", "any_of() needs two lists, not number and list"),
    ],
)
def test_function_errors_point_at_the_function(source: str, message: str) -> None:
    error = eval_error("true and " + source)
    assert error.message == message
    assert error.position == len("true and ")


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_int_of_a_non_finite_float_is_an_expression_error(value: float) -> None:
    error = eval_error("int(data.x)", {"data": {"x": value}})
    assert error.message.startswith("int(): cannot convert float")
    assert error.position == 0


# ------------------------------------------------------------------------------------------ variables


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("data.order.amount > 100 and user.vip_level gte 3", {"data.order.amount", "user.vip_level"}),
        ("data.items[0].sku == 'a'", {"data.items"}),
        ("data['key with space']", {"data"}),
        ("data.items[user.idx].qty", {"data.items", "user.idx"}),
        ("len(data.x) + max(a, b.c)", {"data.x", "a", "b.c"}),
        ("default(data.a, data.b)", {"data.a", "data.b"}),
        ("'x' in user.tags", {"user.tags"}),
        ("data.nested.in.gt", {"data.nested.in.gt"}),
        ("(data).x", {"data"}),
        ("foo", {"foo"}),
        ("data.a == data.a", {"data.a"}),
        ("1 + 2", set()),
        ("len('abc') > 1", set()),
    ],
)
def test_variables(source: str, expected: set[str]) -> None:
    variables = compile_expression(source).variables
    assert isinstance(variables, frozenset)
    assert variables == expected


# ------------------------------------------------------------------------------------- compile errors


@pytest.mark.parametrize(
    ("source", "message", "position", "line", "column"),
    [
        ("data.x >", "unexpected end of expression", 8, 1, 9),
        ("data.x === 3", "unexpected character '=' (use '==' to compare)", 9, 1, 10),
        ("data.x = 3", "unexpected character '=' (use '==' to compare)", 7, 1, 8),
        ("'abc", "unterminated string", 0, 1, 1),
        ("x == 'abc", "unterminated string", 5, 1, 6),
        ('x == "abc\\"', "unterminated string", 5, 1, 6),
        ("'abc\\", "unterminated string", 0, 1, 1),
        ("foo(1)", "unknown function 'foo'", 0, 1, 1),
        ("data.x > 1 and\n  bar(2)", "unknown function 'bar'", 17, 2, 3),
        ("len(1, 2)", "len() takes 1 argument (2 given)", 0, 1, 1),
        ("x and contains(1)", "contains() takes 2 arguments (1 given)", 6, 1, 7),
        ("round()", "round() takes 1 or 2 arguments (0 given)", 0, 1, 1),
        ("min()", "min() takes at least 1 argument (0 given)", 0, 1, 1),
        ("a < b < c", "comparisons cannot be chained (use 'and')", 6, 1, 7),
        ("a == b in c", "comparisons cannot be chained (use 'and')", 7, 1, 8),
        ("1 +\n  * 2", "unexpected '*'", 6, 2, 3),
        ("", "unexpected end of expression", 0, 1, 1),
        ("  \n ", "unexpected end of expression", 4, 2, 2),
        ("(1 + 2", "unexpected end of expression (expected ')')", 6, 1, 7),
        ("[1, 2", "unexpected end of expression (expected ']')", 5, 1, 6),
        ("[1, 2,]", "unexpected ']'", 6, 1, 7),
        ("len(1,", "unexpected end of expression", 6, 1, 7),
        ("data.", "unexpected end of expression (expected a name after '.')", 5, 1, 6),
        ("data.1", "unexpected number 1 (expected a name after '.')", 5, 1, 6),
        ("[1].'a'", "unexpected string (expected a name after '.')", 4, 1, 5),
        ("data x", "unexpected 'x'", 5, 1, 6),
        ("1 2", "unexpected number 2", 2, 1, 3),
        ("1abc", "invalid number", 0, 1, 1),
        ("x == 12.5kg", "invalid number", 5, 1, 6),
        ("'a\\qb'", "invalid escape sequence '\\q'", 2, 1, 3),
        ("'\\u12G4'", "invalid escape sequence '\\u'", 1, 1, 2),
        ("x @ 1", "unexpected character '@'", 2, 1, 3),
        ("x & y", "unexpected character '&'", 2, 1, 3),
        ("x | y", "unexpected character '|'", 2, 1, 3),
        ("x.f(1)", "only built-in functions such as len() can be called", 3, 1, 4),
        ("data[1.5]", "an index must be a string or an integer", 5, 1, 6),
        ("data[true]", "an index must be a string or an integer", 5, 1, 6),
        ("data[null]", "an index must be a string or an integer", 5, 1, 6),
        ("[1][[0]]", "an index must be a string or an integer", 4, 1, 5),
        ("and x", "unexpected 'and'", 0, 1, 1),
        ("x not y", "unexpected 'not'", 2, 1, 3),
        ("x in", "unexpected end of expression", 4, 1, 5),
        ("gt", "unexpected 'gt'", 0, 1, 1),
        ("\tx ==", "unexpected end of expression", 5, 1, 6),
        ("x ==\r\n\t", "unexpected end of expression", 7, 2, 2),
        ("a and\nb or\nc +", "unexpected end of expression", 14, 3, 4),
        ("+1", "unexpected '+'", 0, 1, 1),
        ("x)", "unexpected ')'", 1, 1, 2),
    ],
)
def test_compile_errors(source: str, message: str, position: int, line: int, column: int) -> None:
    error = compile_error(source)
    assert error.message == message
    assert (error.position, error.line, error.column) == (position, line, column)
    assert str(error) == f"{message} at line {line}, column {column}"


def test_errors_are_clarion_errors_and_are_not_cached() -> None:
    for _ in range(2):
        error = compile_error("data.x >")
        assert isinstance(error, ClarionError)


def test_evaluation_errors_report_line_and_column() -> None:
    error = eval_error("data.amount > 1 and\n    data.name - 1 > 0")
    assert error.message == "unsupported operands for '-': string and number"
    assert (error.line, error.column, error.position) == (2, 15, 34)


# ---------------------------------------------------------------------------------------------- limits


def test_source_length_limit() -> None:
    longest = "1" + " " * (MAX_SOURCE_LENGTH - 1)
    assert ev(longest) == 1
    error = compile_error(longest + " ")
    assert error.message == f"expression too long ({MAX_SOURCE_LENGTH + 1} characters, limit {MAX_SOURCE_LENGTH})"
    assert error.position == MAX_SOURCE_LENGTH


def test_nesting_depth_limit_is_exact_for_prefix_operators() -> None:
    deepest = "not " * (MAX_DEPTH - 1) + "x"
    assert ev(deepest) is (MAX_DEPTH % 2 == 0)
    error = compile_error("not " * MAX_DEPTH + "x")
    assert error.message == f"expression nested too deeply (limit {MAX_DEPTH})"
    assert error.position == 4 * MAX_DEPTH


def test_nesting_depth_limit_for_parentheses() -> None:
    deepest = "(" * (MAX_DEPTH - 1) + "1" + ")" * (MAX_DEPTH - 1)
    assert ev(deepest) == 1
    error = compile_error("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH)
    assert error.message.startswith("expression nested too deeply")
    assert error.position == MAX_DEPTH


def test_postfix_chains_on_computed_values_count_towards_depth() -> None:
    value: Any = "leaf"
    for _ in range(42):
        value = {"a": value}
    assert ev("(data)" + ".a" * 40, {"data": value}) == {"a": {"a": "leaf"}}
    assert compile_error("(data)" + ".a" * 100).message.startswith("expression nested too deeply")
    assert compile_error("[1]" + "[0]" * 100).message.startswith("expression nested too deeply")


def test_mixed_deep_nesting_evaluates_without_hitting_python_limits() -> None:
    source = "-(" * 31 + "data.amount" + ")" * 31
    assert ev(source) == -150


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1" + " + 1" * 999, 1000),
        ("2" + " * 1" * 999, 2),
        ("100" + " - 1" * 99, 1),
        ("x == 0 or " * 300 + "true", True),
        ("true and " * 400 + "false", False),
    ],
)
def test_long_flat_chains_are_not_nesting(source: str, expected: Any) -> None:
    assert len(source) <= MAX_SOURCE_LENGTH
    assert ev(source) == expected


@pytest.mark.parametrize(
    ("source", "context"),
    [
        ("data.s + data.s", {"data": {"s": "x" * (MAX_SIZE // 2 + 1)}}),
        ("data.s + 'y'", {"data": {"s": "x" * MAX_SIZE}}),
        ("data.l + data.l", {"data": {"l": [0] * (MAX_SIZE // 2 + 1)}}),
        ("str(data.l)", {"data": {"l": [0] * MAX_SIZE}}),
    ],
)
def test_built_strings_and_lists_are_capped(source: str, context: dict[str, Any]) -> None:
    message = eval_error(source, context).message
    assert message.startswith("result too large (")
    assert message.endswith(f"characters or elements, limit {MAX_SIZE})")


def test_results_up_to_the_cap_are_fine() -> None:
    assert len(ev("data.s + data.s", {"data": {"s": "x" * (MAX_SIZE // 2)}})) == MAX_SIZE
    assert len(ev("data.l + data.l", {"data": {"l": [0] * (MAX_SIZE // 2)}})) == MAX_SIZE


def test_integer_growth_is_capped() -> None:
    context = {"data": {"big": 10**6000}}
    assert ev("data.big + 1 > data.big", context) is True
    assert eval_error("data.big * data.big", context).message == "number too large"


# ------------------------------------------------------------------------------------------------ API


def test_compiled_expressions_are_cached() -> None:
    source = "data.amount > 100 and user.vip_level gte 3"
    expression = compile_expression(source)
    assert isinstance(expression, Expression)
    assert compile_expression(source) is expression
    assert expression.source == source
    assert repr(expression) == f"Expression({source!r})"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("data.tags", True),
        ("data.missing", False),
        ("data.empty", False),
        ("0", False),
        ("0.5", True),
        ("data.amount > 100", True),
        ("[]", False),
    ],
)
def test_test_is_truthiness(source: str, expected: bool) -> None:
    assert compile_expression(source).test(CTX) is expected


def test_evaluation_is_repeatable_and_independent_of_context() -> None:
    expression = compile_expression("data.amount > 100 and user.vip_level gte 3")
    assert expression.test({"data": {"amount": 101}, "user": {"vip_level": 3}}) is True
    assert expression.test({"data": {"amount": 101}, "user": {"vip_level": 2}}) is False
    assert expression.test({"data": {"amount": 100}, "user": {"vip_level": 9}}) is False
    assert expression.test({}) is False


# ------------------------------------------------------------------------------------------- properties

_OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "%": operator.mod}
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "%": 2}

trees = st.recursive(
    st.integers(min_value=0, max_value=1000),
    lambda children: st.one_of(
        st.tuples(st.just("neg"), children),
        st.tuples(st.sampled_from(sorted(_OPERATORS)), children, children),
    ),
    max_leaves=12,
)


def _render(tree: Any) -> tuple[str, int]:
    """Source text with only the parentheses precedence requires, and the text's own precedence."""
    if isinstance(tree, int):
        return str(tree), 4
    if tree[0] == "neg":
        text, inner = _render(tree[1])
        return "-" + (text if inner >= 3 else f"({text})"), 3
    symbol, left, right = tree
    precedence = _PRECEDENCE[symbol]
    left_text, left_precedence = _render(left)
    right_text, right_precedence = _render(right)
    if left_precedence < precedence:
        left_text = f"({left_text})"
    if right_precedence <= precedence:  # left-associative
        right_text = f"({right_text})"
    return f"{left_text} {symbol} {right_text}", precedence


def _compute(tree: Any) -> Any:
    if isinstance(tree, int):
        return tree
    if tree[0] == "neg":
        return -_compute(tree[1])
    return _OPERATORS[tree[0]](_compute(tree[1]), _compute(tree[2]))


@settings(max_examples=300)
@given(trees)
def test_integer_arithmetic_matches_python(tree: Any) -> None:
    source, _ = _render(tree)
    expression = compile_expression(source)
    try:
        expected = _compute(tree)
    except ZeroDivisionError:
        with pytest.raises(ExpressionError, match="division by zero"):
            expression.evaluate({})
        return
    result = expression.evaluate({})
    assert result == expected
    assert type(result) is type(expected)


_FRAGMENTS = [
    "data", "user", ".", "amount", "[", "]", "(", ")", ",", "0", "1", "-1", "2.5", "'s'", '"t"', "'", '"', "\\",
    "true", "false", "null", "and", "or", "not", "in", "gt", "gte", "lt", "lte", "&&", "||", "!", "==", "!=",
    "<", "<=", ">", ">=", "=", "+", "-", "*", "/", "%", "len", "lower", "min", "round", "int", "str", "default",
    "exists", "any_of", "foo", "__class__", "\n", " ", "@", "é", "1e5",
]  # fmt: skip

sources = st.one_of(st.text(max_size=200), st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map("".join))
FUZZ_CONTEXT = {"data": {"amount": 5, "x": [1, "a", None, {"k": 2.5}]}, "user": {"amount": "s"}, "x": 0}


@settings(max_examples=1000)
@given(sources)
def test_arbitrary_text_compiles_or_raises_expression_error(source: str) -> None:
    try:
        expression = compile_expression(source)
    except ExpressionError as error:
        assert 0 <= error.position <= len(source)
        assert error.line == source.count("\n", 0, error.position) + 1
        assert error.column == error.position - source.rfind("\n", 0, error.position)
        return
    assert expression.source == source
    try:  # whatever compiles also evaluates to a value or to an ExpressionError
        expression.evaluate(FUZZ_CONTEXT)
    except ExpressionError as error:
        assert 0 <= error.position <= len(source)


# -- the operation budget: work that depends on the data is charged before it is done ------------------------------


class Counted:
    """A list element that counts how often it is compared: a refused evaluation must not have scanned at all."""

    __hash__ = None  # type: ignore[assignment]  # unhashable, like the JSON lists and objects of an event

    def __init__(self) -> None:
        self.compared = 0

    def __eq__(self, other: object) -> bool:
        self.compared += 1
        return False


def test_in_over_a_list_longer_than_the_budget_is_refused_before_scanning() -> None:
    counted = Counted()
    with pytest.raises(ConditionBudgetExceeded, match="'in' over a list needs") as info:
        compile_expression("-1 in data.b").evaluate({"data": {"b": [counted] * (budget.CONDITION_BUDGET + 1)}})
    assert counted.compared == 0
    assert info.value.reason.startswith("condition_budget_exceeded: 'in' over a list needs")
    assert "line" not in str(info.value)  # the whole condition is too costly, not one token of it
    assert isinstance(info.value, ExpressionError)  # callers that catch ExpressionError stay safe


def test_in_within_the_budget_scans_as_before() -> None:
    counted = Counted()
    assert compile_expression("-1 in data.b").test({"data": {"b": [counted] * 1000}}) is False
    assert counted.compared == 1000


def test_each_evaluation_has_its_own_budget() -> None:
    data = {"data": {"b": list(range(budget.CONDITION_BUDGET * 2 // 3))}}
    once = compile_expression("-1 in data.b")
    assert once.test(data) is False
    assert once.test(data) is False  # the first evaluation's spending is not carried over
    with pytest.raises(ConditionBudgetExceeded):
        compile_expression("-1 in data.b or -2 in data.b").test(data)  # one evaluation, twice the work


def test_any_of_over_lists_of_objects_is_refused_before_comparing_pairs() -> None:
    """The issue's condition: 10,000 × 10,000 pairwise comparisons (a set cannot hold lists) took 3.5 s."""
    counted = Counted()
    data = {"data": {"a": [[i] for i in range(10_000)], "b": [counted] * 10_000}}
    with pytest.raises(ConditionBudgetExceeded, match=r"any_of\(\) over lists of lists or objects"):
        compile_expression("any_of(data.a, data.b)").test(data)
    assert counted.compared == 0


def test_any_of_within_the_budget_still_compares_lists_of_objects() -> None:
    counted = Counted()
    assert (
        compile_expression("any_of(data.a, data.b)").test({"data": {"a": [[1]] * 100, "b": [counted] * 100}}) is False
    )
    assert counted.compared == 100 * 100
    overlap = {"data": {"a": [{"sku": "a"}, {"sku": "b"}], "b": [{"sku": "b"}]}}
    assert compile_expression("any_of(data.a, data.b)").test(overlap) is True


def test_any_of_over_hashable_lists_costs_their_lengths() -> None:
    data = {"data": {"a": list(range(100_000)), "b": list(range(100_000, 200_000))}}
    assert compile_expression("any_of(data.a, data.b)").test(data) is False
    data = {"data": {"a": list(range(200_000)), "b": list(range(200_000))}}
    with pytest.raises(ConditionBudgetExceeded, match=r"any_of\(\)"):
        compile_expression("any_of(data.a, data.b)").test(data)


def test_comparing_deep_collections_is_charged_all_the_way_down() -> None:
    deep = {"data": {"p": [[0] * 10 for _ in range(40_000)], "q": [[0] * 10 for _ in range(40_000)]}}
    with pytest.raises(ConditionBudgetExceeded, match="comparing collections"):
        compile_expression("data.p == data.q").test(deep)
    small = {"data": {"p": [[0] * 10 for _ in range(100)], "q": [[0] * 10 for _ in range(100)]}}
    assert compile_expression("data.p == data.q").test(small) is True
    assert compile_expression("data.p != data.q").test(small) is False
    # lengths that differ answer at once, whatever the size
    assert compile_expression("data.p == data.q").test({"data": {"p": deep["data"]["p"], "q": [0]}}) is False


def test_looking_for_a_list_in_a_list_is_charged_by_the_sought_list() -> None:
    data = {"data": {"q": [0] * 100, "l": [[0] * 100] * 10_000}}
    with pytest.raises(ConditionBudgetExceeded, match="'in' over a list"):
        compile_expression("data.q in data.l").test(data)
    assert compile_expression("data.q in data.l").test({"data": {"q": [0] * 100, "l": [[0] * 100] * 10}}) is True


def test_string_functions_on_long_strings_are_charged() -> None:
    huge = {"data": {"s": "A" * (1 << 20)}}
    for source in ('lower(data.s) == "x"', 'upper(data.s) == "x"', 'trim(data.s) == "x"'):
        with pytest.raises(ConditionBudgetExceeded):
            compile_expression(source).test(huge)
    assert compile_expression('lower(data.s) == "x"').test({"data": {"s": "A" * 10_000}}) is False


def test_min_max_and_str_over_long_lists_are_charged() -> None:
    with pytest.raises(ConditionBudgetExceeded, match=r"max\(\)"):
        compile_expression("max(data.l) > 0").test({"data": {"l": list(range(100_000))}})
    assert compile_expression("max(data.l) > 0").test({"data": {"l": list(range(10_000))}}) is True
    with pytest.raises(ConditionBudgetExceeded, match=r"str\(\)"):
        compile_expression("str(data.l) == ''").test({"data": {"l": list(range(100_000))}})


def test_comparing_long_strings_is_charged() -> None:
    same = "a" * (budget.CONDITION_BUDGET * budget.CHARS_PER_OPERATION)
    data = {"data": {"s": same, "t": "a" * len(same)}}
    with pytest.raises(ConditionBudgetExceeded, match="comparing long strings"):
        compile_expression("data.s == data.t").test(data)
    with pytest.raises(ConditionBudgetExceeded, match="comparing long strings"):
        compile_expression("data.s < data.t").test(data)
    assert compile_expression("data.s == data.t").test({"data": {"s": "a" * 10_000, "t": "a" * 10_000}}) is True


def test_inside_an_active_budget_an_evaluation_spends_it() -> None:
    """A template's conditions share the render's budget (and raise the render's error)."""
    shared = budget.Budget(1_000, errors.RenderBudgetExceeded)
    token = budget.ACTIVE.set(shared)
    try:
        assert compile_expression("-1 in data.b").test({"data": {"b": [0] * 500}}) is False
        assert 500 < shared.spent < 1_000
        with pytest.raises(errors.RenderBudgetExceeded):
            compile_expression("-1 in data.b").test({"data": {"b": [0] * 500}})
    finally:
        budget.ACTIVE.reset(token)


def test_a_real_condition_spends_a_small_part_of_the_budget() -> None:
    shared = budget.Budget(budget.CONDITION_BUDGET, errors.ConditionBudgetExceeded)
    token = budget.ACTIVE.set(shared)
    context = {
        "data": {"amount": 250, "sku": "a-17", "promoted": [f"a-{i}" for i in range(1000)], "tags": ["x"] * 20},
        "user": {"vip_level": 3, "tags": ["y"] * 49 + ["x"], "city": "Hangzhou"},
    }
    condition = (
        "data.amount > 100 and user.vip_level gte 3 and data.sku in data.promoted and any_of(user.tags, data.tags) "
        'and lower(user.city) in ["hangzhou", "shanghai"]'
    )
    try:
        assert compile_expression(condition).test(context) is True
    finally:
        budget.ACTIVE.reset(token)
    assert shared.spent < budget.CONDITION_BUDGET // 50
