"""The template language: placeholders, filters, <#if>/<#list>, save-time errors with positions, limits."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clarion.domain import budget, errors
from clarion.domain.budget import RENDER_BUDGET
from clarion.domain.templating import (
    MAX_ITERATIONS,
    MAX_OUTPUT,
    MAX_TOTAL_ITERATIONS,
    Template,
    TemplateSyntaxError,
    compile_template,
)

CTX: dict[str, Any] = {
    "data": {
        "name": "Han",
        "code": "123456",
        "order": {"id": 42, "total": 1234.5},
        "items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 5}],
        "tags": ["new", "vip"],
        "coupon": None,
        "title": "A very long product title",
    },
    "user": {"name": "Li", "city": "Beijing", "vip": True, "age": 40, "n": 0, "meta": {"k": 1}},
}


def render(source: str, context: dict[str, Any] | None = None) -> str:
    return compile_template(source).render(CTX if context is None else context)


# ------------------------------------------------------------------------------------------ placeholders


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Hi {name}", "Hi Han"),  # data before user
        ("Hi ${name}", "Hi Han"),
        ("{user.name} in ${user.city}", "Li in Beijing"),
        ("{city}", "Beijing"),  # falls back to user
        ("order {data.order.id}", "order 42"),
        ("{order.id}", "42"),
        ("{data.items.1.sku}", "b"),
        ("vip={vip} n={n}", "vip=true n=0"),
        ("{tags} {meta}", '["new","vip"] {"k":1}'),
        ("{coupon|default:'none'}", "none"),  # None counts as missing
    ],
)
def test_placeholders(source: str, expected: str) -> None:
    assert render(source) == expected


def test_data_before_user_and_explicit_roots() -> None:
    context = {"data": {"name": "D"}, "user": {"name": "U"}}
    assert render("{name} {data.name} {user.name}", context) == "D D U"
    assert render("{name}", {"data": {"name": None}, "user": {"name": "U"}}) == "U"
    assert render("{name}", {"data": {}, "user": {"name": "U"}}) == "U"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('${nick!"friend"}', "friend"),
        ('${name!"friend"}', "Han"),
        ("${nick!}", ""),
        ('{nick|default:"friend"}', "friend"),
        ("{nick|default:0}", "0"),
        ('{name|default:"x"}', "Han"),
        ("{name|upper}", "HAN"),
        ("{name|lower}", "han"),
        ('${nick!"pal"|upper}', "PAL"),
        ('{nick|upper|default:"x"}', "x"),  # a missing value passes through other filters
        ("{title|truncate:10}", "A very lo…"),
        ("{title|truncate:100}", "A very long product title"),
        ("{name|truncate:3}", "Han"),
        ("{order.total|number:2}", "1234.50"),
        ("{order.total|number}", "1235"),
        ("{order.id|number:1}", "42.0"),
    ],
)
def test_filters(source: str, expected: str) -> None:
    assert render(source) == expected


@pytest.mark.parametrize(
    ("value", "digits", "expected"),
    [(2.675, 2, "2.68"), (2.5, 0, "3"), (-2.5, 0, "-3"), ("12.345", 1, "12.3"), (10**30, 1, f"{10**30}.0")],
)
def test_number_filter_rounds_half_away_from_zero(value: Any, digits: int, expected: str) -> None:
    assert render(f"{{v|number:{digits}}}", {"data": {"v": value}}) == expected


@pytest.mark.parametrize("value", ["abc", True, [1], float("inf")])
def test_number_filter_rejects_non_numbers(value: Any) -> None:
    with pytest.raises(errors.RenderError, match="number filter"):
        render("{v|number:2}", {"data": {"v": value}})


@pytest.mark.parametrize(
    "text",
    [
        '{"json": 1, "b": [1, 2]}',
        "{ name }",
        "{}",
        "{1abc}",
        "{name:1}",
        "$ {name}x",
        "price: $5 {",
        "a < b <# c </#",
        "{name.}",
    ],
)
def test_literal_braces_and_markers_are_left_alone(text: str) -> None:
    expected = text.replace("{name}", "Han")
    assert render(text) == expected


def test_json_body_with_placeholder_inside() -> None:
    assert render('{"to": "{user.city}", "n": {order.id}}') == '{"to": "Beijing", "n": 42}'


# ------------------------------------------------------------------------------------------- missing


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("{missing}", "missing"),
        ("${data.code2}", "data.code2"),
        ("{user.age.years}", "user.age.years"),
        ("ok {name} then {nope}", "nope"),
        ("{coupon}", "coupon"),
        ("{nick|upper}", "nick"),
        ("<#if vip>{gone}</#if>", "gone"),
        ("<#list data.items as item>{item.price}</#list>", "item.price"),
    ],
)
def test_missing_variable_raises_naming_it(source: str, name: str) -> None:
    with pytest.raises(errors.MissingVariable) as info:
        render(source)
    assert info.value.name == name
    assert info.value.reason == f"missing_variable: {name}"


def test_missing_variable_in_an_untaken_branch_is_fine() -> None:
    assert render("<#if !vip>{gone}<#else>ok</#if>") == "ok"


# ---------------------------------------------------------------------------------------- directives


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ({"age": 70, "vip": False}, "senior"),
        ({"age": 40, "vip": True}, "vip-adult"),
        ({"age": 40, "vip": False}, "adult"),
        ({"age": 10}, "child"),
        ({}, "child"),  # a missing age is null: ordering it is false
    ],
)
def test_nested_if_elseif_else(user: dict[str, Any], expected: str) -> None:
    source = "<#if (user.age > 60)>senior<#elseif user.age gte 18><#if user.vip>vip-</#if>adult<#else>child</#if>"
    assert render(source, {"data": {}, "user": user}) == expected


def test_parenthesised_greater_than_and_strings_with_angle_brackets() -> None:
    assert render("<#if (user.age > 30)>yes<#else>no</#if>") == "yes"
    assert render("<#if (user.age > 50)>yes<#else>no</#if>") == "no"
    assert render('<#if data.name != ">">ok</#if>') == "ok"
    assert render("<#if data.tags[0] == 'new'>first</#if>") == "first"
    assert render("<#if user.age < 50>young</#if>") == "young"  # '<' needs no parentheses
    # as in FreeMarker, an unparenthesised '>' closes the tag: the rest is text
    assert render("<#if user.age > 50>yes</#if>") == " 50>yes"


def test_bare_names_in_conditions_read_data_then_user() -> None:
    assert render("<#if vip>V</#if><#if exists(coupon)>C</#if><#if name == 'Han'>H</#if>") == "VH"


def test_list_binds_item_and_index() -> None:
    source = "<#list data.items as item>{item_index}:{item.sku}x{item.qty}<#if (item.qty > 3)>!</#if>;</#list>"
    assert render(source) == "0:ax2;1:bx5!;"
    assert render("<#list data.xs as x>{x!'-'}</#list>", {"data": {"xs": [None, "a", 0]}}) == "-a0"


def test_nested_lists_and_shadowing_restore_scope() -> None:
    source = "<#list data.tags as t>[<#list data.tags as u>{t}{u},</#list>]</#list>"
    assert render(source) == "[newnew,newvip,][vipnew,vipvip,]"
    source = "<#list data.tags as name>{name}</#list>{name}"  # the loop variable shadows, then goes away
    assert render(source) == "newvipHan"
    source = "<#list data.tags as x>(<#list data.items as x>{x.sku}</#list>{x}:{x_index})</#list>"
    assert render(source) == "(ab new:0)(abvip:1)".replace(" ", "")


def test_list_of_null_is_empty_and_non_list_fails() -> None:
    assert render("<#list data.nothing as x>{x}</#list>.") == "."
    with pytest.raises(errors.RenderError, match="needs a list"):
        render("<#list data.name as x>{x}</#list>")


def test_list_iteration_cap() -> None:
    template = compile_template("<#list data.xs as x>.</#list>")
    assert template.render({"data": {"xs": list(range(MAX_ITERATIONS))}}) == "." * MAX_ITERATIONS
    with pytest.raises(errors.RenderError, match="limit 1000") as info:
        template.render({"data": {"xs": list(range(MAX_ITERATIONS + 1))}})
    assert "line 1, column 1" in str(info.value)


def test_total_iteration_budget_across_nested_loops() -> None:
    template = compile_template("<#list data.xs as x><#list data.xs as y></#list></#list>")
    side = int(MAX_TOTAL_ITERATIONS**0.5)
    assert template.render({"data": {"xs": list(range(side - 1))}}) == ""
    with pytest.raises(errors.RenderError, match="iterations"):
        template.render({"data": {"xs": list(range(side + 1))}})


def test_output_cap() -> None:
    template = compile_template("<#list data.xs as x>{data.chunk}</#list>")
    chunk = "x" * 1024
    assert len(template.render({"data": {"xs": [0] * 64, "chunk": chunk}})) == MAX_OUTPUT
    with pytest.raises(errors.RenderError, match=r"output longer.*\(directive at line 1, column 1\)"):
        template.render({"data": {"xs": [0] * 65, "chunk": chunk}})  # stopped inside the loop
    with pytest.raises(errors.RenderError, match="output longer"):  # one huge value, no loop
        compile_template("{big}").render({"data": {"big": "y" * (MAX_OUTPUT + 1)}})


def test_condition_evaluation_error_is_a_render_error() -> None:
    with pytest.raises(errors.RenderError, match=r"condition failed.*line 2, column 1"):
        render("x\n<#if (data.name > 1)>a</#if>")


def test_comments_are_dropped() -> None:
    assert render("a<#-- {nothing} <#if> -->b") == "ab"


# -------------------------------------------------------------------------------------- save-time errors


@pytest.mark.parametrize(
    ("source", "message", "line", "column"),
    [
        ("Hi\n  <#if vip>yes", "unclosed <#if>", 2, 3),
        ("<#list data.items as i>\n{i}", "unclosed <#list>", 1, 1),
        ("ok\nok </#if>", "</#if> without a matching <#if>", 2, 4),
        ("<#if a>x</#list>", "</#list> without a matching <#list>", 1, 9),
        ("line\n<#else>", "<#else> outside <#if>", 2, 1),
        ("<#list xs as x><#else></#list>", "<#else> outside <#if>", 1, 16),
        ("<#if a>1<#else>2<#elseif b>3</#if>", "<#elseif> after <#else>", 1, 17),
        ("<#if a>1<#else>2<#else>3</#if>", "<#else> after <#else>", 1, 17),
        ("a\nb <#foo x>", "unknown directive <#foo>", 2, 3),
        ("</#foo>", "unknown directive </#foo>", 1, 1),
        ("<#if>x</#if>", "<#if> needs an expression", 1, 1),
        ("x\n<#if a ==>y</#if>", "unexpected end of expression", 2, 10),
        ("<#if a && (b ?? c)>y</#if>", "unexpected character '?'", 1, 14),
        ("\n\n  <#elseif>", "<#elseif> outside <#if>", 3, 3),
        ("{name|bogus}", "unknown filter 'bogus'", 1, 7),
        ("a\n  {name|upper|nope:3}", "unknown filter 'nope'", 2, 15),
        ("{name|truncate}", "truncate needs a length", 1, 7),
        ("{name|number:99}", "number needs 0 to 20 decimals", 1, 7),
        ("{name|upper:1}", "upper takes no argument", 1, 7),
        ("{name|default}", "default needs a value", 1, 7),
        ("{name|upper x}", "malformed filter", 1, 12),
        ("<#if ${user.vip}>x</#if>", "a placeholder cannot be used inside a directive", 1, 6),
        ("<#list {data.items} as x></#list>", "a placeholder cannot be used inside a directive", 1, 8),
        ("<#list data.items>x</#list>", "malformed <#list>", 1, 1),
        ("<#list data.items as data>x</#list>", "'data' cannot name a loop variable", 1, 22),
        ("<#if a >= b>x</#if>", "'>=' closes the tag here", 1, 8),
        ("<#if (a > b>x</#if>", "directive tag is not closed", 1, 1),
        ("<#if a>x</#if junk>", "</#if> takes nothing after its name", 1, 14),
        ("<#-- never closed", "unclosed comment", 1, 1),
    ],
)
def test_save_time_errors_with_positions(source: str, message: str, line: int, column: int) -> None:
    with pytest.raises(TemplateSyntaxError) as info:
        compile_template(source)
    assert info.value.message.startswith(message), info.value.message
    assert (info.value.line, info.value.column) == (line, column)
    assert str(info.value).endswith(f"at line {line}, column {column}")
    assert isinstance(info.value, errors.ClarionError)


def test_nesting_is_bounded() -> None:
    with pytest.raises(TemplateSyntaxError, match="nested more than"):
        compile_template("<#if a>" * 40 + "</#if>" * 40)
    assert compile_template("<#if true>" * 20 + "x" + "</#if>" * 20).render({}) == "x"


# ------------------------------------------------------------------------------------------- variables


def test_variables() -> None:
    source = (
        "{userName} ${user.city} {data.order.id} ${nick!'x'}"
        "<#if (user.age > 30) and vip>{a.b}</#if>"
        "<#list data.items as item>{item.sku} {item_index} {other}<#if (item.qty > 1)>{item}</#if></#list>{item.z}"
    )
    assert compile_template(source).variables == frozenset(
        {"userName", "user.city", "data.order.id", "nick", "user.age", "vip", "a.b", "data.items", "other", "item.z"}
    )
    assert compile_template("plain text").variables == frozenset()


def test_compile_is_cached_and_template_reusable() -> None:
    template = compile_template("Hi {name}")
    assert isinstance(template, Template)
    assert compile_template("Hi {name}") is template
    assert template.render({"data": {"name": "A"}}) == "Hi A"
    assert template.render({"user": {"name": "B"}}) == "Hi B"


def test_render_never_touches_python_attributes() -> None:
    assert render("<#if data.name.__class__>x<#else>safe</#if>") == "safe"
    with pytest.raises(errors.MissingVariable):
        render("{name.__class__}")


# ------------------------------------------------------------------------------------------ properties

_PLAIN = st.text().filter(lambda s: not any(marker in s for marker in ("{", "$", "<#", "</#")))


@settings(max_examples=300)
@given(_PLAIN)
def test_text_without_markers_renders_to_itself(text: str) -> None:
    assert compile_template(text).render(CTX) == text


_PIECES = st.sampled_from(
    ["{", "}", "${", "$", "<#", "</#", "if", "elseif", "else", "list", " as ", "x", "item", ">", "<", "(", ")",
     "|", "!", ":", '"', "'", "upper", "default", "truncate", "number", "20", "name", "data.items", "user.age",
     ".", " ", "\n", "-->", "<#--", "<#if vip>", "<#if (user.age > 3)>", "<#elseif x>", "<#else>", "</#if>", "{name}",
     "<#list data.items as item>", "</#list>", "${item.sku}", "{name|upper}", '${nick!"n"}', "==", "a", "vip", "#", "/"]
)  # fmt: skip


@settings(max_examples=500)
@given(st.lists(st.one_of(_PIECES, st.text(max_size=3)), max_size=30).map("".join))
def test_arbitrary_text_fails_only_with_template_errors(source: str) -> None:
    try:
        template = compile_template(source)
    except TemplateSyntaxError:
        return
    try:
        result = template.render(CTX)
    except errors.RenderError:
        return
    assert isinstance(result, str)


# -- the operation budget of a render ------------------------------------------------------------------------------

HOSTILE = "<#list data.o as o><#list data.a as x><#if -1 in data.b>y</#if></#list></#list>"


class Counted:
    """A list element that counts how often it is compared."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self) -> None:
        self.compared = 0

    def __eq__(self, other: object) -> bool:
        self.compared += 1
        return False


def test_the_issues_nested_list_stops_at_the_budget() -> None:
    """9,999 passes each scanning a 150,000-element list (a 600 KB body) froze the server for 12 s; now the
    render scans what its budget allows and fails naming the directive."""
    counted = Counted()
    data = {"data": {"o": [0] * 99, "a": [0] * 100, "b": [counted] * 150_000}}
    with pytest.raises(
        errors.RenderBudgetExceeded, match=r"'in' over a list .* \(directive at line 1, column 39\)"
    ) as info:
        compile_template(HOSTILE).render(data)
    assert counted.compared <= RENDER_BUDGET  # not 9,999 × 150,000
    assert info.value.reason.startswith("render_budget_exceeded: ")
    assert isinstance(info.value, errors.RenderError)  # the message fails like any render error


def test_the_same_template_over_a_short_list_renders() -> None:
    data = {"data": {"o": [0] * 3, "a": [0] * 4, "b": [-1, 2]}}
    assert compile_template(HOSTILE).render(data) == "y" * 12


def test_a_loop_is_charged_for_its_body_before_it_runs() -> None:
    counted = Counted()
    body = "{x}," * 60 + "<#if x in data.probe>!</#if>"
    template = compile_template("<#list data.xs as x>" + body + "</#list>")
    with pytest.raises(errors.RenderBudgetExceeded, match=r"<#list> needs .* \(directive at line 1, column 1\)"):
        template.render({"data": {"xs": list(range(MAX_ITERATIONS)), "probe": [counted]}})
    assert counted.compared == 0  # refused at the loop, not after running passes
    assert template.render({"data": {"xs": list(range(100)), "probe": [counted]}}).count(",") == 6000


def test_placeholders_charge_long_strings_and_their_filters() -> None:
    long = "é" * 500_000
    template = compile_template("{data.s|upper}{data.s|upper}{data.s|upper}")
    with pytest.raises(
        errors.RenderBudgetExceeded, match=r"printing a long string .*\(placeholder \{data.s\} at line 1, column 15\)"
    ):
        template.render({"data": {"s": long}})
    many = compile_template("{data.s}" * 40)  # each copies 500,000 characters into the output
    with pytest.raises(errors.RenderBudgetExceeded, match="printing a long string"):
        many.render({"data": {"s": long}})
    assert compile_template("{data.s|upper}").render({"data": {"s": "é" * 1000}}) == "É" * 1000


def test_a_placeholder_printing_a_big_list_fails_before_printing_it() -> None:
    with pytest.raises(errors.RenderBudgetExceeded, match=r"printing a list or object .*placeholder \{data.l\}"):
        compile_template("<#list data.xs as x>{data.l|truncate:5}</#list>").render(
            {"data": {"xs": [0] * 10, "l": list(range(100_000))}}
        )
    with pytest.raises(errors.RenderError, match="output longer"):
        compile_template("{data.l}").render({"data": {"l": ["xxxxx"] * 15_000}})  # affordable, but too long
    assert compile_template("{data.l}").render({"data": {"l": [1, 2]}}) == "[1,2]"


def test_each_render_has_its_own_budget() -> None:
    template = compile_template("<#if -1 in data.b>y</#if>")
    data = {"data": {"b": [0] * (RENDER_BUDGET * 2 // 3)}}
    assert template.render(data) == ""
    assert template.render(data) == ""
    with pytest.raises(errors.RenderBudgetExceeded):
        compile_template("<#if -1 in data.b>y</#if><#if -2 in data.b>y</#if>").render(data)


def test_a_large_real_template_renders_within_the_budget() -> None:
    """A receipt of 1,000 rows (the most one <#list> may have) with a condition and filters per row."""
    template = compile_template(
        "<#list data.items as item>\n{item_index}. {item.sku} {item.name|truncate:30} ×{item.qty}"
        " {item.price|number:2}<#if item.qty gt 1> ({item.qty} pieces)</#if></#list>"
    )
    items = [{"sku": f"s{i}", "name": "Widget", "qty": i % 3, "price": 9.5} for i in range(MAX_ITERATIONS)]
    shared = budget.Budget(RENDER_BUDGET, errors.RenderBudgetExceeded)
    token = budget.ACTIVE.set(shared)
    try:
        text = template.render({"data": {"items": items}})
    finally:
        budget.ACTIVE.reset(token)
    assert text.count("\n") == MAX_ITERATIONS
    assert shared.spent < RENDER_BUDGET * 2 // 3  # about half: the longest list a template may loop over
