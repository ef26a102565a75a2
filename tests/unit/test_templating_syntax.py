"""Unclosed placeholders: a ``${`` without its ``}`` is refused at its line and column, at compile and at save;
a bare ``{`` left open stays text, as braces in prose and JSON do."""

from __future__ import annotations

import pytest

from clarion.domain import errors, render
from clarion.domain.templating import TemplateSyntaxError, compile_template, resolves, unclosed_braces

CTX = {"data": {}, "user": {"name": "Li"}}


@pytest.mark.parametrize(
    ("source", "line", "column"),
    [
        ("Hi ${user.name, welcome", 1, 4),
        ("${user.name", 1, 1),
        ("${", 1, 1),
        ("Dear customer,\n  your code is ${data.code.", 2, 16),
        ("${user.name\n}", 1, 1),
        ("Hi ${user.name and {data.city}", 1, 4),
        ("${user.name|upper", 1, 1),
    ],
)
def test_an_unclosed_dollar_brace_is_a_syntax_error_at_its_position(source: str, line: int, column: int) -> None:
    with pytest.raises(TemplateSyntaxError) as raised:
        compile_template(source)
    assert (raised.value.line, raised.value.column) == (line, column)
    assert "unclosed ${" in raised.value.message


def test_the_save_time_check_names_the_field_line_and_column() -> None:
    with pytest.raises(errors.InvalidInput) as raised:
        render.check({"text": "ok", "body": "line one\nHi ${user.name, welcome"}, "channels.inbox")
    assert raised.value.details == {
        "field": "channels.inbox.body",
        "message": "unclosed ${: end the placeholder with }",
        "line": 2,
        "column": 4,
    }


@pytest.mark.parametrize(
    "source",
    [
        "Hi {user.name, welcome",
        "{user.name",
        "sets look like {a, b",
        '{"json": "open',
        "a lone { brace",
    ],
)
def test_an_open_bare_brace_is_text(source: str) -> None:
    assert compile_template(source).render(CTX) == source


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("${}", "${}"),
        ("${ name }", "${ name }"),
        ("price $5 {", "price $5 {"),
        ("Hi ${user.name}, welcome", "Hi Li, welcome"),
        ("${user.name} and ${user.name}", "Li and Li"),
    ],
)
def test_closed_dollar_braces_keep_their_meaning(source: str, expected: str) -> None:
    assert compile_template(source).render(CTX) == expected


def test_an_unclosed_dollar_brace_inside_a_branch_is_found() -> None:
    with pytest.raises(TemplateSyntaxError) as raised:
        compile_template("<#if user.vip>\nHello ${user.name\n<#else>Hi</#if>")
    assert (raised.value.line, raised.value.column) == (2, 7)


@pytest.mark.parametrize(
    ("path", "found"),
    [("name", True), ("user.name", True), ("data.name", False), ("city", True), ("user.city", False), ("x.y", False)],
)
def test_resolves_looks_a_variable_up_as_a_placeholder_does(path: str, found: bool) -> None:
    context = {"data": {"city": "Hangzhou"}, "user": {"name": "Li"}}
    assert resolves(path, context) is found


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("Hi {user.name, welcome", [("user.name", 1, 4)]),
        ("Total:\n  {data.amount is due", [("data.amount", 2, 3)]),
        ('{"json": {"a": 1}}', []),
        ("{user.name} and {a, b}", []),
        ("{ name", []),
        ("${user.name}", []),
    ],
)
def test_an_open_bare_brace_before_a_name_is_reported_for_the_editor(
    source: str, found: list[tuple[str, int, int]]
) -> None:
    assert unclosed_braces(source) == found
    if found:  # reported, and still sent as typed
        assert compile_template(source).render(CTX) == source
