"""domain.pricing: exact money, price tables, months, bills read from CSV and the reconciliation of a day."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from clarion.domain import errors, pricing

TABLE = pricing.parse({"currency": "CNY", "unit": "segment", "default": 0.05, "countries": {"86": 0.045, "+1": 0.0079}})


@pytest.mark.parametrize(
    ("value", "micros"),
    [(0.1, 100_000), ("0.045", 45_000), (0.0079, 7_900), (3, 3_000_000), ("0.000001", 1), (0, 0), (1e9, 10**15)],
)
def test_amounts_are_read_exactly_into_micro_units(value: object, micros: int) -> None:
    assert pricing.micros(value, "x") == micros


@pytest.mark.parametrize("value", [-0.01, "0.0000001", "abc", True, None, [1], float("nan"), 1e10])
def test_what_is_not_an_amount_is_refused_naming_the_field(value: object) -> None:
    with pytest.raises(errors.InvalidInput) as refused:
        pricing.micros(value, "config.prices.default")
    assert refused.value.details[0]["field"] == "config.prices.default"


def test_a_price_is_per_segment_and_per_country_with_a_default() -> None:
    assert TABLE.cost(1, "+8613800138000") == 45_000
    assert TABLE.cost(3, "+8613800138000") == 135_000
    assert TABLE.cost(None, "+14155550101") == 7_900
    assert TABLE.cost(2, "+447911123456") == 100_000  # not listed: the default
    assert TABLE.cost(1, "not a phone") == 50_000


def test_a_per_message_price_ignores_segments_and_an_unlisted_country_without_default_is_unpriced() -> None:
    table = pricing.parse({"currency": "USD", "countries": {"1": 0.0079}})
    assert table.unit == "message"
    assert table.cost(5, "+14155550101") == 7_900
    assert table.cost(1, "+8613800138000") is None


def test_a_table_reads_back_from_its_json_as_it_was() -> None:
    shown = TABLE.to_json()
    assert shown == {"currency": "CNY", "unit": "segment", "default": 0.05, "countries": {"1": 0.0079, "86": 0.045}}
    assert pricing.parse(shown) == TABLE


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ([], "config.prices"),
        ({"currency": "CNY", "default": 1, "vat": 1}, "config.prices.vat"),
        ({"currency": "CNY", "unit": "sms", "default": 1}, "config.prices.unit"),
        ({"currency": "Yuan", "default": 1}, "config.prices.currency"),
        ({"currency": "CNY", "countries": []}, "config.prices.countries"),
        ({"currency": "CNY", "countries": {"0": 1}}, "config.prices.countries.0"),
        ({"currency": "CNY", "countries": {"86": -1}}, "config.prices.countries.86"),
        ({"currency": "CNY"}, "config.prices.default"),
    ],
)
def test_a_bad_table_names_its_field(document: object, field: str) -> None:
    with pytest.raises(errors.InvalidInput) as refused:
        pricing.parse(document)
    assert refused.value.details[0]["field"] == field


def test_months_and_days_are_utc_bounds() -> None:
    assert pricing.month_bounds("2026-12") == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert pricing.month_bounds("2026-02")[1] == datetime(2026, 3, 1, tzinfo=UTC)
    assert pricing.month_of(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == datetime(2026, 12, 1, tzinfo=UTC)
    assert pricing.day_bounds(date(2026, 12, 31)) == (
        datetime(2026, 12, 31, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    for bad in ("2026-13", "2026-00", "26-12", "2026-1"):
        with pytest.raises(errors.InvalidInput):
            pricing.month_bounds(bad)


def test_a_bill_is_read_under_the_vendors_names_with_the_default_day_and_currency() -> None:
    text = "\ufeffSerialNo,PhoneNumber,ReportStatus,计费条数,费用\nt-1,+8613800138000,SUCCESS,2,0.09\nt-2,,FAIL,,\n\n"
    lines = pricing.read_bill(text, day=date(2026, 12, 2), currency="CNY")
    assert lines == [
        pricing.BillLine(2, date(2026, 12, 2), "t-1", "+8613800138000", "delivered", "SUCCESS", 2, 90_000, "CNY"),
        pricing.BillLine(3, date(2026, 12, 2), "t-2", None, "failed", "FAIL", None, None, "CNY"),
    ]


def test_a_bill_line_s_own_date_and_currency_win() -> None:
    text = "Sid,status,发送时间,currency\nx,成功,2026/12/01 23:59:59,USD\n"
    [line] = pricing.read_bill(text, day=None, currency="CNY")
    assert (line.day, line.currency, line.status) == (date(2026, 12, 1), "USD", "delivered")


def sent(
    vendor_id: str, status: str = "sent", segments: int | None = 1, cost: int | None = 50_000
) -> pricing.SentDelivery:
    return pricing.SentDelivery(f"d-{vendor_id}", vendor_id, "+8613800138000", status, segments, cost, "CNY")


def billed(
    line: int, vendor_id: str, status: str = "delivered", segments: int | None = 1, fee: int | None = 50_000
) -> pricing.BillLine:
    return pricing.BillLine(line, date(2026, 12, 2), vendor_id, None, status, None, segments, fee, None)


def test_reconciling_finds_each_kind_of_difference_once() -> None:
    ours = [
        sent("a", "delivered"),
        sent("b", "delivered"),
        sent("c", segments=2, cost=100_000),
        sent("d", cost=50_000),
        sent("e"),
        sent("f", "undelivered"),
    ]
    theirs = [
        billed(2, "a"),
        billed(3, "b", "failed"),
        billed(4, "c", segments=3, fee=150_000),
        billed(5, "d", fee=60_000),
    ]
    theirs += [billed(6, "z"), billed(7, "f", "pending")]
    done = pricing.reconcile(ours, theirs)
    kinds = [(d.kind, d.vendor_message_id) for d in done.discrepancies]
    assert kinds == [
        ("status_differs", "b"),
        ("segments_differ", "c"),
        ("fee_differs", "c"),
        ("fee_differs", "d"),
        ("billed_not_sent", "z"),
        ("sent_not_billed", "e"),
    ]
    assert done.ours == {"sent": 6, "delivered": 2, "failed": 1, "segments": 7, "cost": {"CNY": 0.35}}
    assert done.theirs == {"lines": 6, "delivered": 4, "failed": 1, "segments": 8, "fee": {"": 0.41}}


def test_a_message_the_other_side_has_on_another_day_is_no_discrepancy() -> None:
    done = pricing.reconcile([sent("late")], [billed(2, "early")], elsewhere=[sent("early")], billed_elsewhere={"late"})
    assert done.discrepancies == []
