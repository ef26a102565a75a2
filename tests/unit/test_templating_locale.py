"""Locale-aware filters: date/datetime/time, number separators and currency, per user locale and time zone."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import babel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clarion.domain import errors, model, render
from clarion.domain.templating import DEFAULT_LOCALE, TemplateSyntaxError, compile_template

PAID = "2024-03-05T18:30:00Z"  # 02:30 on March 6 in Shanghai, 13:30 on March 5 in New York


def fill(source: str, data: dict[str, Any], locale: str | None = None, timezone: str | None = None) -> str:
    user = model.User("u1", timezone=timezone, locale=locale)
    return compile_template(source).render(render.context_for(user, data))


# ------------------------------------------------------------------------------------------------ dates


@pytest.mark.parametrize(
    ("source", "locale", "zone", "expected"),
    [
        ("{paid|date}", None, None, "2024年3月5日"),  # zh_CN and UTC when the user has neither
        ("{paid|date}", "zh_CN", "Asia/Shanghai", "2024年3月6日"),
        ("{paid|date}", "zh-CN", "Asia/Shanghai", "2024年3月6日"),
        ("{paid|date}", "en", "America/New_York", "Mar 5, 2024"),
        ("{paid|date}", "de-DE", "Europe/Berlin", "05.03.2024"),
        ('{paid|date:"short"}', "en", None, "3/5/24"),
        ('{paid|date:"long"}', "en", None, "March 5, 2024"),
        ('{paid|date:"full"}', "de", "Europe/Berlin", "Dienstag, 5. März 2024"),
        ('{paid|date:"short"}', "zh_CN", "Asia/Shanghai", "2024/3/6"),
        ('{paid|date:"yyyy-MM-dd HH:mm"}', "en", "Asia/Shanghai", "2024-03-06 02:30"),
        ("{paid|date:'yyyy年M月d日 HH:mm'}", None, "Asia/Shanghai", "2024年3月6日 02:30"),
        ("""{paid|date:"d MMM 'at' HH:mm"}""", "en", None, "5 Mar at 18:30"),
        ("{paid|datetime}", "de", "Europe/Berlin", "05.03.2024, 19:30:00"),
        ("{paid|datetime}", "zh_CN", "Asia/Shanghai", "2024年3月6日 02:30:00"),
        ('{paid|datetime:"short"}', "en", "America/New_York", "3/5/24, 1:30\u202fPM"),
        ("{paid|time}", "de", "Europe/Berlin", "19:30:00"),
        ('{paid|time:"short"}', "zh_CN", "Asia/Shanghai", "02:30"),
        ('{paid|time:"HH:mm"}', None, "America/New_York", "13:30"),
    ],
)
def test_dates_follow_the_users_locale_and_time_zone(
    source: str, locale: str | None, zone: str | None, expected: str
) -> None:
    assert fill(source, {"paid": PAID}, locale, zone) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-03-05T18:30:00Z", "2024-03-06 02:30"),
        ("2024-03-05T18:30:00+00:00", "2024-03-06 02:30"),
        ("2024-03-06T02:30:00+08:00", "2024-03-06 02:30"),
        ("2024-03-05T10:30:00-08:00", "2024-03-06 02:30"),
        ("2024-03-05 18:30", "2024-03-06 02:30"),  # naive: UTC
        ("  2024-03-05T18:30:00.250Z ", "2024-03-06 02:30"),
        (1709663400, "2024-03-06 02:30"),  # unix seconds
        (1709663400.9, "2024-03-06 02:30"),
        (Decimal("1709663400"), "2024-03-06 02:30"),
        (datetime(2024, 3, 5, 18, 30, tzinfo=UTC), "2024-03-06 02:30"),
        (datetime(2024, 3, 5, 18, 30), "2024-03-06 02:30"),  # naive: UTC
        (datetime(2024, 3, 5, 20, 30, tzinfo=timezone(timedelta(hours=2))), "2024-03-06 02:30"),
        ("2024-03-05", "2024-03-05 00:00"),  # a calendar day: not shifted into the zone
        (date(2024, 3, 5), "2024-03-05 00:00"),
    ],
)
def test_date_inputs(value: Any, expected: str) -> None:
    assert fill('{at|datetime:"yyyy-MM-dd HH:mm"}', {"at": value}, "zh_CN", "Asia/Shanghai") == expected


def test_naive_times_are_utc_whatever_the_servers_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        # 12:00 UTC is 20:00 in Shanghai; read as 12:00 in Los Angeles it would be 04:00 on March 6
        for naive in (datetime(2024, 3, 5, 12, 0), "2024-03-05T12:00"):
            assert fill("{at|date}", {"at": naive}, "en", "Asia/Shanghai") == "Mar 5, 2024"
            assert fill('{at|time:"HH:mm"}', {"at": naive}, "en", "Asia/Shanghai") == "20:00"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_calendar_day_stays_the_same_day_in_any_zone() -> None:
    for zone in ("America/Los_Angeles", "Pacific/Kiritimati", "Asia/Shanghai"):
        assert fill("{day|date}", {"day": "2024-03-05"}, "en", zone) == "Mar 5, 2024"
        assert fill("{day|date}", {"day": date(2024, 3, 5)}, "en", zone) == "Mar 5, 2024"
    # the same day as an instant at UTC midnight is still March 4 in Los Angeles
    assert fill("{day|date}", {"day": "2024-03-05T00:00Z"}, "en", "America/Los_Angeles") == "Mar 4, 2024"


def test_unknown_locale_and_zone_fall_back_to_the_defaults() -> None:
    assert DEFAULT_LOCALE == "zh_CN"
    assert fill("{paid|datetime}", {"paid": PAID}, "xx-YY", "Mars/Olympus") == "2024年3月5日 18:30:00"
    assert fill("{paid|datetime}", {"paid": PAID}, "", "") == "2024年3月5日 18:30:00"


def test_locale_and_zone_are_read_from_the_user_inside_directives_too() -> None:
    source = "<#list data.orders as o>{o.paid|date:'short'};</#list>"
    data = {"orders": [{"paid": PAID}, {"paid": "2024-12-31T23:00:00Z"}]}
    assert fill(source, data, "de", "Europe/Berlin") == "05.03.24;01.01.25;"
    # a "user" inside data is not the user
    context = {"data": {"user": {"locale": "de"}, "paid": PAID}}
    assert compile_template("<#if true>{paid|date}</#if>").render(context) == "2024年3月5日"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yesterday", "cannot read 'yesterday' as an ISO 8601 date or time"),
        ("2024-13-01", "cannot read '2024-13-01'"),
        ("", "cannot read ''"),
        (1709663400000, "cannot read 1709663400000 as unix seconds"),  # milliseconds are refused, not misread
        (float("nan"), "as unix seconds"),
        (True, "not bool"),
        ([1, 2], "not list"),
        ({"at": 1}, "not dict"),
    ],
)
def test_unreadable_dates_fail_the_render_naming_the_placeholder(value: Any, message: str) -> None:
    with pytest.raises(errors.RenderError) as info:
        fill("Paid: ok\n  {data.paid|date} thanks", {"paid": value})
    assert not isinstance(info.value, errors.MissingVariable)
    assert message in str(info.value)
    assert str(info.value).startswith("date filter ")
    assert str(info.value).endswith("(placeholder {data.paid} at line 2, column 3)")


def test_a_date_out_of_range_in_the_users_zone_is_a_render_error() -> None:
    with pytest.raises(errors.RenderError, match=r"out of range \(placeholder \{at\}"):
        fill("{at|date}", {"at": "9999-12-31T23:00:00Z"}, "en", "Asia/Shanghai")


def test_missing_dates_pass_through_to_default() -> None:
    assert fill('{paid|date|default:"-"}', {}) == "-"
    with pytest.raises(errors.MissingVariable, match="paid"):
        fill("{paid|date}", {})


# ----------------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        (None, "1234567.50"),  # no locale: the output templates had before, no separators
        ("xx", "1234567.50"),  # an unknown locale is no locale
        ("en", "1,234,567.50"),
        ("de", "1.234.567,50"),
        ("de-DE", "1.234.567,50"),
        ("zh_CN", "1,234,567.50"),
        ("zh-CN", "1,234,567.50"),
        ("fr", "1\u202f234\u202f567,50"),
        ("en_IN", "12,34,567.50"),  # the locale's own grouping, not a fixed #,##0
    ],
)
def test_number_uses_the_locales_separators_when_the_user_has_one(locale: str | None, expected: str) -> None:
    assert fill("{v|number:2}", {"v": 1234567.5}, locale) == expected


@pytest.mark.parametrize(
    ("value", "digits", "expected"),
    [
        ("2.675", 2, "2,68"),
        (2.675, 2, "2,68"),
        (-1234.5, 0, "-1.235"),
        (Decimal("0.125"), 2, "0,13"),
        (7, 3, "7,000"),
        (1e26, 4, "100.000.000.000.000.000.000.000.000,0000"),
    ],
)
def test_localized_number_still_rounds_half_away_from_zero(value: Any, digits: int, expected: str) -> None:
    assert fill(f"{{v|number:{digits}}}", {"v": value}, "de") == expected


def test_number_error_names_the_placeholder() -> None:
    with pytest.raises(errors.RenderError, match=r"number filter cannot format 'abc' \(placeholder \{v\} at line 1"):
        fill("{v|number:2}", {"v": "abc"}, "de")


# ---------------------------------------------------------------------------------------------- currency


@pytest.mark.parametrize(
    ("source", "locale", "expected"),
    [
        ('{amount|currency:"CNY"}', "zh_CN", "¥1,234.50"),
        ('{amount|currency:"CNY"}', "zh-CN", "¥1,234.50"),
        ('{amount|currency:"CNY"}', None, "¥1,234.50"),  # DEFAULT_LOCALE
        ('{amount|currency:"CNY"}', "en", "CN¥1,234.50"),
        ('{amount|currency:"CNY"}', "de-DE", "1.234,50\xa0CN¥"),
        ('{amount|currency:"USD"}', "en", "$1,234.50"),
        ('{amount|currency:"USD"}', "zh_CN", "US$1,234.50"),
        ("{amount|currency:'cny'}", "zh_CN", "¥1,234.50"),
        ('{amount|currency:"JPY"}', "ja", "￥1,235"),  # the currency's own digits, half away from zero
        ("{amount|currency:data.code}", "en", "€1,234.50"),
        ("{amount|currency:user.currency}", "en", "£1,234.50"),
    ],
)
def test_currency(source: str, locale: str | None, expected: str) -> None:
    user = model.User("u1", attributes={"currency": "GBP"}, locale=locale)
    context = render.context_for(user, {"amount": "1234.5", "code": "eur"})
    assert compile_template(source).render(context) == expected


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (0.1 + 0.2, "¥0.30"),
        ("2.675", "¥2.68"),
        (2.675, "¥2.68"),  # read as "2.675", not as the float just below it
        (" 19.9 ", "¥19.90"),
        (Decimal("0.005"), "¥0.01"),
        (-3, "-¥3.00"),
        (10**20, "¥100,000,000,000,000,000,000.00"),
        (1e26, "¥100,000,000,000,000,000,000,000,000.00"),  # beyond Decimal's default 28 digits
    ],
)
def test_currency_amounts_are_exact(amount: Any, expected: str) -> None:
    assert fill('{amount|currency:"CNY"}', {"amount": amount}, "zh_CN") == expected


def test_currency_from_the_data_is_checked_when_sending() -> None:
    with pytest.raises(errors.RenderError, match=r"needs an ISO 4217 code, not 'ZZZ' \(placeholder \{amount\}"):
        fill("{amount|currency:data.code}", {"amount": 1, "code": "ZZZ"})
    with pytest.raises(errors.RenderError, match="not '7'"):
        fill("{amount|currency:data.code}", {"amount": 1, "code": 7})
    with pytest.raises(errors.MissingVariable, match=r"missing_variable: data\.code"):
        fill("{amount|currency:data.code}", {"amount": 1})
    assert compile_template("{o.amount|currency:o.code} {x|currency:'CNY'}").variables == {"o.amount", "o.code", "x"}
    loop = compile_template("<#list data.items as i>{i.amount|currency:i.code}</#list>")
    assert loop.variables == {"data.items"}
    assert loop.render({"data": {"items": [{"amount": 1, "code": "USD"}]}, "user": {"locale": "en"}}) == "$1.00"


@pytest.mark.parametrize("amount", ["abc", "NaN", "Infinity", True, None, [1]])
def test_currency_refuses_what_is_not_an_amount(amount: Any) -> None:
    try:
        fill('{amount|currency:"CNY"}', {"amount": amount})
    except errors.MissingVariable:
        assert amount is None  # null is missing, as everywhere
    except errors.RenderError as exc:
        assert str(exc).startswith("currency filter ")
        assert "(placeholder {amount} at line 1, column 1)" in str(exc)
    else:
        pytest.fail("rendered")


# ---------------------------------------------------------------------------------------- save-time errors


@pytest.mark.parametrize(
    ("source", "message", "line", "column"),
    [
        ('x\n {a|date:"mediun"}', "date format 'mediun' has an unknown field 'i'", 2, 5),
        ('{a|date:"yyyy-MM-dd hh:mm tt"}', "date format 'yyyy-MM-dd hh:mm tt' has an unknown field 't'", 1, 4),
        ("""{a|date:"HH 'o clock"}""", 'date format "HH \'o clock" has an unclosed quote', 1, 4),
        ('{a|date:"yyyyy-MMMMMM"}', "date format 'yyyyy-MMMMMM' cannot repeat field 'M' 6 times", 1, 4),
        ('{a|time:"h:mm b"}', "time format 'h:mm b' uses field 'b'", 1, 4),
        ('{a|date:""}', "date format '' has no date or time field", 1, 4),
        ('{a|datetime:"--"}', "datetime format '--' has no date or time field", 1, 4),
        ("{a|date:2}", "date needs a quoted style or pattern", 1, 4),
        ("{a|time:}", "time needs a quoted style or pattern", 1, 4),
        ('{a|upper|currency:"XYZ"}', "unknown currency code 'XYZ'", 1, 10),
        ('{a|currency:"yuan"}', "unknown currency code 'yuan'", 1, 4),
        ("{a|currency}", "currency needs a currency code", 1, 4),
        ("{a|currency:2}", "currency needs a currency code", 1, 4),
        ("{a|currency:}", "currency needs a currency code", 1, 4),
        ("{a|dates}", "unknown filter 'dates' (known: currency, date, datetime, default, lower, number, time,", 1, 4),
    ],
)
def test_save_time_errors(source: str, message: str, line: int, column: int) -> None:
    with pytest.raises(TemplateSyntaxError) as info:
        compile_template(source)
    assert info.value.message.startswith(message), info.value.message
    assert (info.value.line, info.value.column) == (line, column)


def test_the_save_check_reports_the_field_and_position() -> None:
    with pytest.raises(errors.InvalidInput) as info:
        render.check({"text": 'Total {data.amount|currency:"RMB"}'}, "channels.sms")
    assert info.value.details["line"] == 1
    assert info.value.details["column"] == 20
    assert "unknown currency code 'RMB'" in info.value.details["message"]


# ------------------------------------------------------------------------------------------ performance


def test_locales_are_parsed_once_and_plain_templates_never_touch_babel(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    parse = babel.Locale.parse

    def counting(identifier: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(identifier, str):  # Babel passes Locale objects through parse too, which costs nothing
            calls.append(identifier)
        return parse(identifier, *args, **kwargs)

    monkeypatch.setattr(babel.Locale, "parse", counting)
    plain = compile_template("Hi {name|upper} {n|truncate:5}<#if vip>!</#if>")
    context = render.context_for(model.User("u1", locale="pt-BR", timezone="America/Sao_Paulo"), {"name": "a"})
    for _ in range(50):
        assert plain.render({**context, "data": {"name": "a", "n": 1, "vip": True}}) == "Hi A 1!"
    assert calls == []
    dated = compile_template("{a|number:1} {a|currency:'BRL'} {b|date:'short'}")
    for _ in range(50):
        assert dated.render({**context, "data": {"a": 1234.5, "b": PAID}}) == "1.234,5 R$\xa01.234,50 05/03/2024"
    assert len(calls) <= 1


# ------------------------------------------------------------------------------------------- properties

_PIECES = st.sampled_from(
    ["{", "}", "|", ":", '"', "'", "date", "datetime", "time", "currency", "number", "upper", "default", "short",
     "full", "yyyy", "MM", "b", "'at'", "CNY", "cny", "XYZ", "data.code", "x", "a", "2", " ", "\n", "{a|date}",
     '{a|currency:"CNY"}', "{a|currency:data.code}", "{a|datetime:'HH:mm'}", "{a|number:2}", "<#if a>", "</#if>"]
)  # fmt: skip
_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30), st.datetimes(), st.dates(),
    st.decimals(), st.sampled_from(["2024-03-05", PAID, "1234.5", "CNY", "usd", "-0", "1e999", "9999-12-31T23:59Z"]),
)  # fmt: skip


@settings(max_examples=500)
@given(
    st.lists(st.one_of(_PIECES, st.text(max_size=3)), max_size=20).map("".join),
    st.fixed_dictionaries({"a": _VALUES, "code": _VALUES}),
    st.sampled_from([None, "en", "de-DE", "zh_CN", "xx", "ar-EG", "a b"]),
    st.sampled_from([None, "Asia/Shanghai", "Pacific/Kiritimati", "Etc/GMT+12", "nope", "../etc"]),
)
def test_any_template_and_values_fail_only_with_template_errors(
    source: str, data: dict[str, Any], locale: str | None, zone: str | None
) -> None:
    try:
        template = compile_template(source)
    except TemplateSyntaxError:
        return
    try:
        result = template.render(render.context_for(model.User("u1", locale=locale, timezone=zone), data))
    except errors.RenderError:
        return
    assert isinstance(result, str)
