"""What JSON Clarion can store: 64-bit integers, finite numbers, valid Unicode without NUL, bounded nesting."""

from __future__ import annotations

from typing import Any

import pytest

from clarion.domain import jsonvalues


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"a": 1, "b": [1.5, -0.0, True, None, "中文 \U0001f600"], "c": {"d": "x"}},
        2**63 - 1,
        -(2**63),
        1e308,
        nested(jsonvalues.MAX_DEPTH),
        {"tuple": (1, 2)},
    ],
)
def test_storable_values_have_no_problem(value: Any) -> None:
    assert jsonvalues.problem(value) is None


@pytest.mark.parametrize(
    ("value", "path", "words"),
    [
        ({"n": 2**63}, ("n",), "integer out of range"),
        ({"n": -(2**63) - 1}, ("n",), "integer out of range"),
        ({"a": [1, {"b": float("nan")}]}, ("a", 1, "b"), "NaN"),
        ({"a": float("inf")}, ("a",), "Infinity"),
        ([float("-inf")], (0,), "Infinity"),
        ({"a": "x\ud800"}, ("a",), "lone surrogate"),
        ({"a": ["\udfff"]}, ("a", 0), "lone surrogate"),
        ({"a": "x\x00"}, ("a",), "NUL"),
        ({"k\ud800": 1}, ("k\\ud800",), "in the key: a lone surrogate"),
        ({"k\x00": 1}, ("k\\x00",), "in the key: a NUL"),
        ({1: "x"}, ("1",), "keys must be strings"),
        ({"a": object()}, ("a",), "not a JSON value"),
    ],
)
def test_each_problem_is_named_by_its_path(value: Any, path: tuple[Any, ...], words: str) -> None:
    found = jsonvalues.problem(value)
    assert found is not None
    assert found.path == path
    assert words in found.message


def test_nesting_beyond_the_limit_is_refused_where_it_goes_too_deep() -> None:
    found = jsonvalues.problem({"n": nested(jsonvalues.MAX_DEPTH)})
    assert found is not None
    assert found.path == ("n", *[0] * (jsonvalues.MAX_DEPTH - 1))
    assert found.field("attributes").startswith("attributes.n.0.0")
    assert "nested deeper than 32" in found.message


def test_the_path_shown_for_a_bad_key_is_itself_storable() -> None:
    found = jsonvalues.problem({"ok": {"\ud800\x00": 1}})
    assert found is not None
    assert jsonvalues.problem(list(found.path)) is None
