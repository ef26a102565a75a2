"""Quiet hours and calendar buckets in the user's time zone: parsing, boundaries, DST, date line, properties."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clarion.domain import timewindows
from clarion.domain.timewindows import DailyWindow, calendar_bucket, quiet_period, resolve_zone

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
SHANGHAI = ZoneInfo("Asia/Shanghai")
KOLKATA = ZoneInfo("Asia/Kolkata")
KATHMANDU = ZoneInfo("Asia/Kathmandu")
KIRITIMATI = ZoneInfo("Pacific/Kiritimati")
PAGO_PAGO = ZoneInfo("Pacific/Pago_Pago")
HOUR = 3600
US = timedelta(microseconds=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def w(text: str) -> DailyWindow:
    return DailyWindow.parse(text)


def bucket_dt(at: datetime, tz: ZoneInfo, unit: str) -> tuple[datetime, float]:
    start, seconds = calendar_bucket(at, tz, unit)  # type: ignore[arg-type]
    assert isinstance(seconds, int)
    return datetime.fromtimestamp(start, UTC), seconds / HOUR


# --- parsing --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("09:00-20:00", time(9), time(20)),
        ("22:00-08:00", time(22), time(8)),
        (" 9:05 – 17:30 ", time(9, 5), time(17, 30)),
        ("20:00-24:00", time(20), time(0)),
        ("00:00-00:00", time(0), time(0)),
    ],
)
def test_parse_accepts(text: str, start: time, end: time) -> None:
    assert DailyWindow.parse(text) == DailyWindow(start, end)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected 'HH:MM-HH:MM'"),
        ("09:00", "expected 'HH:MM-HH:MM'"),
        ("9-17", "expected 'HH:MM-HH:MM'"),
        ("09:00_20:00", "expected 'HH:MM-HH:MM'"),
        ("09:00-20:00-21:00", "expected 'HH:MM-HH:MM'"),
        ("09:0-20:00", "expected 'HH:MM-HH:MM'"),
        ("ab:cd-ef:gh", "expected 'HH:MM-HH:MM'"),
        ("٠٩:٠٠-٢٠:٠٠", "expected 'HH:MM-HH:MM'"),  # non-ASCII digits are not hours
        ("25:00-08:00", "start hour 25 is out of range"),
        ("24:00-08:00", "start hour 24 is out of range"),
        ("09:00-24:01", "end hour 24 is out of range"),
        ("09:60-10:00", "start minute 60 is out of range"),
        ("09:00-10:75", "end minute 75 is out of range"),
    ],
)
def test_parse_rejects_with_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DailyWindow.parse(text)


@pytest.mark.parametrize("value", [None, 900, b"09:00-20:00"])
def test_parse_rejects_non_strings(value: object) -> None:
    with pytest.raises(ValueError, match="must be a string"):
        DailyWindow.parse(value)  # type: ignore[arg-type]


def test_window_times_must_be_naive_times() -> None:
    with pytest.raises(ValueError, match="naive"):
        DailyWindow(time(9, tzinfo=UTC), time(17))
    with pytest.raises(ValueError, match=r"datetime\.time"):
        DailyWindow("09:00", time(17))  # type: ignore[arg-type]


def test_str_round_trips() -> None:
    assert str(w("9:05-17:30")) == "09:05-17:30"
    assert w(str(w("21:00-02:00"))) == w("21:00-02:00")
    assert str(DailyWindow(time(9, 0, 30), time(17, 0, 0, 5))) == "09:00:30-17:00:00.000005"


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        w("09:00-20:00").is_open(datetime(2025, 1, 1, 12), BERLIN)
    with pytest.raises(ValueError, match="aware"):
        w("09:00-20:00").next_open(datetime(2025, 1, 1, 12), BERLIN)
    with pytest.raises(ValueError, match="aware"):
        calendar_bucket(datetime(2025, 1, 1, 12), BERLIN, "day")


# --- is_open --------------------------------------------------------------------------------------------------


def berlin(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0, us: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (berlin(2025, 7, 1, 8, 59, 59, 999999), False),
        (berlin(2025, 7, 1, 9, 0), True),  # start inclusive
        (berlin(2025, 7, 1, 14, 0), True),
        (berlin(2025, 7, 1, 19, 59, 59, 999999), True),
        (berlin(2025, 7, 1, 20, 0), False),  # end exclusive
        (berlin(2025, 7, 1, 23, 0), False),
        (berlin(2025, 7, 1, 0, 0), False),
    ],
)
def test_is_open_daytime_boundaries(at: datetime, expected: bool) -> None:
    assert w("09:00-20:00").is_open(at, BERLIN) is expected


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (berlin(2025, 7, 1, 20, 59, 59), False),
        (berlin(2025, 7, 1, 21, 0), True),  # start inclusive
        (berlin(2025, 7, 1, 23, 59, 59), True),
        (berlin(2025, 7, 2, 0, 0), True),  # across midnight
        (berlin(2025, 7, 2, 1, 59, 59, 999999), True),
        (berlin(2025, 7, 2, 2, 0), False),  # end exclusive
        (berlin(2025, 7, 2, 12, 0), False),
    ],
)
def test_is_open_crossing_midnight_boundaries(at: datetime, expected: bool) -> None:
    assert w("21:00-02:00").is_open(at, BERLIN) is expected


def test_is_open_reads_the_users_zone_whatever_zone_at_is_in() -> None:
    at = datetime(2025, 7, 1, 16, 30, tzinfo=ZoneInfo("Asia/Tokyo"))  # 09:30 in Berlin, 03:30 in New York
    assert w("09:00-20:00").is_open(at, BERLIN)
    assert not w("09:00-20:00").is_open(at, NY)
    assert w("09:00-20:00").is_open(at.astimezone(UTC), BERLIN)


def test_equal_start_and_end_is_always_open() -> None:
    window = w("08:00-08:00")
    for hour in range(24):
        at = berlin(2025, 3, 30, hour) if hour != 2 else utc(2025, 3, 30, 1)
        assert window.is_open(at, BERLIN)
        assert window.next_open(at, BERLIN) == at
    assert w("00:00-24:00").is_open(berlin(2025, 1, 1, 23, 59), BERLIN)


# --- next_open ------------------------------------------------------------------------------------------------


def test_next_open_same_day() -> None:
    got = w("09:00-20:00").next_open(berlin(2025, 7, 1, 6, 15), BERLIN)
    assert got == utc(2025, 7, 1, 7, 0)
    assert got.tzinfo is UTC


def test_next_open_when_open_is_at_itself_in_utc() -> None:
    at = berlin(2025, 7, 1, 12, 34, 56, 789)
    got = w("09:00-20:00").next_open(at, BERLIN)
    assert got == at
    assert got.tzinfo is UTC


def test_next_open_next_day() -> None:
    assert w("09:00-20:00").next_open(berlin(2025, 7, 1, 20, 0), BERLIN) == berlin(2025, 7, 2, 9, 0)
    assert w("09:00-20:00").next_open(berlin(2025, 12, 31, 23, 30), BERLIN) == berlin(2026, 1, 1, 9, 0)


def test_next_open_crossing_midnight_window() -> None:
    window = w("21:00-02:00")
    assert window.next_open(berlin(2025, 7, 1, 3, 0), BERLIN) == berlin(2025, 7, 1, 21, 0)
    assert window.next_open(berlin(2025, 7, 1, 20, 0), BERLIN) == berlin(2025, 7, 1, 21, 0)
    assert window.next_open(berlin(2025, 7, 2, 1, 0), BERLIN) == berlin(2025, 7, 2, 1, 0)
    assert window.next_open(berlin(2025, 7, 2, 2, 0), BERLIN) == berlin(2025, 7, 2, 21, 0)


def test_next_open_in_offset_zones_without_dst() -> None:
    window = w("09:00-20:00")
    assert window.next_open(utc(2025, 7, 1, 0, 0), KATHMANDU) == utc(2025, 7, 1, 3, 15)  # +05:45
    assert window.next_open(utc(2025, 7, 1, 0, 0), KOLKATA) == utc(2025, 7, 1, 3, 30)  # +05:30
    assert window.next_open(utc(2025, 7, 1, 0, 0), SHANGHAI) == utc(2025, 7, 1, 1, 0)  # +08:00
    assert window.next_open(utc(2025, 7, 1, 12, 0), SHANGHAI) == utc(2025, 7, 2, 1, 0)  # 20:00 local: closed


def test_date_line_users_see_different_windows_at_the_same_instant() -> None:
    window = w("09:00-20:00")
    at = utc(2025, 6, 15, 20, 0)  # Kiritimati 06-16 10:00, Pago Pago 06-15 09:00
    assert window.is_open(at, KIRITIMATI)
    assert window.is_open(at, PAGO_PAGO)
    at = utc(2025, 6, 15, 7, 0)  # Kiritimati 21:00 (closed), Pago Pago 20:00 (end exclusive: closed)
    assert not window.is_open(at, KIRITIMATI)
    assert not window.is_open(at, PAGO_PAGO)
    assert window.next_open(at, KIRITIMATI) == utc(2025, 6, 15, 19, 0)  # 06-16 09:00 +14
    assert window.next_open(at, PAGO_PAGO) == utc(2025, 6, 15, 20, 0)  # 06-15 09:00 -11


# --- quiet periods --------------------------------------------------------------------------------------------


def test_quiet_period_is_the_complementary_window() -> None:
    allowed = quiet_period("22:00-08:00")
    assert allowed == DailyWindow(time(8), time(22))
    assert not allowed.is_open(berlin(2025, 7, 1, 23, 0), BERLIN)
    assert not allowed.is_open(berlin(2025, 7, 2, 7, 59), BERLIN)
    assert allowed.is_open(berlin(2025, 7, 2, 8, 0), BERLIN)
    assert allowed.next_open(berlin(2025, 7, 1, 22, 0), BERLIN) == berlin(2025, 7, 2, 8, 0)
    assert quiet_period("01:00-05:00") == DailyWindow(time(5), time(1))


@pytest.mark.parametrize("text", ["12:00-12:00", "00:00-24:00", "nonsense"])
def test_quiet_period_rejects_empty_or_malformed(text: str) -> None:
    with pytest.raises(ValueError, match=text):
        quiet_period(text)


# --- DST: next_open -------------------------------------------------------------------------------------------

# America/New_York 2025: spring forward 03-09 02:00 EST -> 03:00 EDT (07:00 UTC);
#                        fall back    11-02 02:00 EDT -> 01:00 EST (06:00 UTC), so 01:xx happens twice.
# Europe/Berlin 2025:    spring forward 03-30 02:00 CET -> 03:00 CEST (01:00 UTC);
#                        fall back    10-26 03:00 CEST -> 02:00 CET (01:00 UTC), so 02:xx happens twice.


def test_ny_spring_forward_window_opening_in_the_gap_opens_at_0300() -> None:
    window = w("02:30-05:00")
    assert window.next_open(utc(2025, 3, 9, 5, 0), NY) == utc(2025, 3, 9, 7, 0)  # 03:00 EDT
    assert not window.is_open(utc(2025, 3, 9, 6, 59, 59), NY)  # 01:59:59 EST
    assert window.is_open(utc(2025, 3, 9, 7, 0), NY)
    assert window.next_open(utc(2025, 3, 9, 10, 0), NY) == utc(2025, 3, 10, 6, 30)  # next day, 02:30 EDT


def test_ny_spring_forward_window_closing_in_the_gap_closes_at_0300() -> None:
    window = w("01:00-02:30")
    assert window.is_open(utc(2025, 3, 9, 6, 59, 59), NY)
    assert not window.is_open(utc(2025, 3, 9, 7, 0), NY)
    assert window.next_open(utc(2025, 3, 9, 7, 0), NY) == utc(2025, 3, 10, 5, 0)  # 01:00 EDT


def test_ny_spring_forward_window_entirely_in_the_gap_skips_that_day() -> None:
    window = w("02:10-02:50")
    assert window.next_open(utc(2025, 3, 9, 5, 0), NY) == utc(2025, 3, 10, 6, 10)
    assert not any(window.is_open(utc(2025, 3, 9, 6, 0) + timedelta(minutes=m), NY) for m in range(0, 120, 5))


def test_ny_fall_back_window_opens_at_first_occurrence_and_stays_open() -> None:
    window = w("01:30-05:00")
    # (compare in UTC: Python never calls an ambiguous local time equal to an instant in another zone)
    first = datetime(2025, 11, 2, 1, 30, fold=0, tzinfo=NY).astimezone(UTC)
    assert first == utc(2025, 11, 2, 5, 30)
    assert window.next_open(utc(2025, 11, 2, 4, 0), NY) == first
    assert not window.is_open(utc(2025, 11, 2, 5, 29, 59), NY)
    assert window.is_open(utc(2025, 11, 2, 6, 10), NY)  # 01:10 EST, the repeated hour: still open
    assert window.is_open(utc(2025, 11, 2, 9, 59), NY)  # 04:59 EST
    assert not window.is_open(utc(2025, 11, 2, 10, 0), NY)  # 05:00 EST


def test_ny_fall_back_window_closing_at_ambiguous_time_does_not_reopen() -> None:
    window = w("00:00-01:30")
    assert window.is_open(utc(2025, 11, 2, 5, 29), NY)  # 01:29 EDT
    assert not window.is_open(utc(2025, 11, 2, 5, 30), NY)  # first 01:30
    assert not window.is_open(utc(2025, 11, 2, 6, 10), NY)  # 01:10 EST, second time round
    assert window.next_open(utc(2025, 11, 2, 6, 10), NY) == utc(2025, 11, 3, 5, 0)  # 00:00 EST
    crossing = w("22:00-01:30")
    assert crossing.is_open(utc(2025, 11, 2, 5, 29), NY)
    assert not crossing.is_open(utc(2025, 11, 2, 6, 10), NY)


def test_berlin_spring_forward_window_opening_in_the_gap() -> None:
    window = w("02:30-06:00")
    assert window.next_open(berlin(2025, 3, 30, 0, 0), BERLIN) == utc(2025, 3, 30, 1, 0)  # 03:00 CEST
    assert not window.is_open(utc(2025, 3, 30, 0, 59, 59), BERLIN)
    assert window.next_open(berlin(2025, 3, 31, 0, 0), BERLIN) == utc(2025, 3, 31, 0, 30)  # 02:30 CEST


def test_berlin_fall_back_window_opens_at_first_occurrence() -> None:
    window = w("02:30-06:00")
    first = datetime(2025, 10, 26, 2, 30, fold=0, tzinfo=BERLIN).astimezone(UTC)
    assert first == utc(2025, 10, 26, 0, 30)  # 02:30 CEST
    assert window.next_open(utc(2025, 10, 25, 22, 0), BERLIN) == first
    assert window.is_open(utc(2025, 10, 26, 1, 10), BERLIN)  # 02:10 CET, the repeat: still open
    assert not window.is_open(utc(2025, 10, 26, 0, 29), BERLIN)
    assert quiet_period("22:00-02:30").next_open(utc(2025, 10, 25, 21, 0), BERLIN) == first


def test_window_across_a_skipped_calendar_day() -> None:
    apia = ZoneInfo("Pacific/Apia")  # jumped from 2011-12-29 23:59:59 -10 straight to 2011-12-31 00:00 +14
    at = datetime(2011, 12, 29, 18, 0, tzinfo=apia)
    got = w("09:00-17:00").next_open(at, apia)
    assert got.astimezone(apia).replace(tzinfo=None) == datetime(2011, 12, 31, 9, 0)
    assert got - at == timedelta(hours=15)


# --- DST and the date line: calendar_bucket -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "at", "unit", "start", "hours"),
    [
        (NY, utc(2025, 3, 9, 12), "day", utc(2025, 3, 9, 5), 23),
        (NY, utc(2025, 3, 9, 12), "week", utc(2025, 3, 3, 5), 167),
        (NY, utc(2025, 11, 2, 12), "day", utc(2025, 11, 2, 4), 25),
        (NY, utc(2025, 11, 2, 12), "week", utc(2025, 10, 27, 4), 169),
        (NY, utc(2025, 7, 2, 12), "day", utc(2025, 7, 2, 4), 24),
        (NY, utc(2025, 7, 2, 12), "week", utc(2025, 6, 30, 4), 168),
        (BERLIN, utc(2025, 3, 30, 12), "day", utc(2025, 3, 29, 23), 23),
        (BERLIN, utc(2025, 3, 30, 12), "week", utc(2025, 3, 23, 23), 167),
        (BERLIN, utc(2025, 10, 26, 12), "day", utc(2025, 10, 25, 22), 25),
        (BERLIN, utc(2025, 10, 26, 12), "week", utc(2025, 10, 19, 22), 169),
        (SHANGHAI, utc(2025, 3, 30, 12), "day", utc(2025, 3, 29, 16), 24),
        (KOLKATA, utc(2025, 3, 30, 12), "day", datetime(2025, 3, 29, 18, 30, tzinfo=UTC), 24),
        (KATHMANDU, utc(2025, 3, 30, 12), "day", datetime(2025, 3, 29, 18, 15, tzinfo=UTC), 24),
        (KATHMANDU, utc(2025, 3, 30, 12), "week", datetime(2025, 3, 23, 18, 15, tzinfo=UTC), 168),
    ],
)
def test_calendar_bucket_true_lengths(tz: ZoneInfo, at: datetime, unit: str, start: datetime, hours: int) -> None:
    assert bucket_dt(at, tz, unit) == (start, hours)


def test_calendar_bucket_edges_of_a_short_day() -> None:
    assert bucket_dt(datetime(2025, 3, 9, 23, 59, 59, tzinfo=NY), NY, "day") == (utc(2025, 3, 9, 5), 23)
    assert bucket_dt(datetime(2025, 3, 10, 0, 0, tzinfo=NY), NY, "day") == (utc(2025, 3, 10, 4), 24)
    assert bucket_dt(utc(2025, 3, 9, 5) - US, NY, "day") == (utc(2025, 3, 8, 5), 24)


def test_user_day_differs_from_utc_day_across_the_date_line() -> None:
    at = utc(2025, 6, 15, 10, 30)  # Sunday in UTC; Monday 00:30 in Kiritimati; Saturday 23:30 in Pago Pago
    assert bucket_dt(at, KIRITIMATI, "day") == (utc(2025, 6, 15, 10), 24)  # 06-16 00:00 +14
    assert bucket_dt(at, PAGO_PAGO, "day") == (utc(2025, 6, 14, 11), 24)  # 06-14 00:00 -11
    assert bucket_dt(at, ZoneInfo("UTC"), "day") == (utc(2025, 6, 15), 24)
    assert bucket_dt(at, KIRITIMATI, "week") == (utc(2025, 6, 15, 10), 168)  # Monday 06-16
    assert bucket_dt(at, PAGO_PAGO, "week") == (utc(2025, 6, 9, 11), 168)  # Monday 06-09


def test_calendar_bucket_midnight_in_a_gap_starts_at_the_transition() -> None:
    santiago = ZoneInfo("America/Santiago")  # 2024-09-08 00:00 -04 -> 01:00 -03: that midnight never happens
    start, hours = bucket_dt(datetime(2024, 9, 8, 12, tzinfo=santiago), santiago, "day")
    assert start == utc(2024, 9, 8, 4)
    assert start.astimezone(santiago).time() == time(1, 0)
    assert hours == 23


def test_calendar_bucket_ambiguous_midnight_starts_at_first_occurrence() -> None:
    havana = ZoneInfo("America/Havana")  # 2024-11-03 01:00 CDT -> 00:00 CST: midnight happens twice
    assert bucket_dt(datetime(2024, 11, 3, 12, tzinfo=havana), havana, "day") == (utc(2024, 11, 3, 4), 25)
    second_midnight = datetime(2024, 11, 3, 0, 30, fold=1, tzinfo=havana)
    assert bucket_dt(second_midnight, havana, "day") == (utc(2024, 11, 3, 4), 25)


def test_calendar_bucket_follows_the_instant_when_the_clock_steps_back_across_midnight() -> None:
    goose_bay = ZoneInfo("America/Goose_Bay")  # 2009-11-01 00:01 ADT -> 2009-10-31 23:01 AST
    at = utc(2009, 11, 1, 3, 30)
    assert at.astimezone(goose_bay).date().isoformat() == "2009-10-31"  # the wall clock says the 31st again...
    assert bucket_dt(at, goose_bay, "day") == (utc(2009, 11, 1, 3), 25)  # ...but the 1st began at 03:00 UTC
    assert bucket_dt(utc(2009, 11, 1, 2, 59), goose_bay, "day") == (utc(2009, 10, 31, 3), 24)
    assert bucket_dt(at, goose_bay, "week") == (utc(2009, 10, 26, 3), 169)


def test_calendar_bucket_across_a_skipped_calendar_day() -> None:
    apia = ZoneInfo("Pacific/Apia")
    before = bucket_dt(datetime(2011, 12, 29, 12, tzinfo=apia), apia, "day")
    assert before == (utc(2011, 12, 29, 10), 24)
    after = bucket_dt(utc(2011, 12, 30, 10), apia, "day")  # 2011-12-31 00:00 +14
    assert after == (utc(2011, 12, 30, 10), 24)


def test_calendar_bucket_rejects_unknown_unit() -> None:
    with pytest.raises(ValueError, match="'month'"):
        calendar_bucket(utc(2025, 1, 1), BERLIN, "month")  # type: ignore[arg-type]


# --- resolve_zone ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", [None, "", "   ", "Mars/Olympus_Mons", "Europe", "../../etc/passwd", "/etc/localtime", "localtime",
             "posixrules", "Europe/\x00", "x" * 300, 42]
)  # fmt: skip
def test_resolve_zone_falls_back_to_default_for_bad_user_values(name: object) -> None:
    assert resolve_zone(name, "Asia/Shanghai") == SHANGHAI  # type: ignore[arg-type]


def test_resolve_zone_uses_the_users_zone() -> None:
    assert resolve_zone("Asia/Kolkata", "Asia/Shanghai") == KOLKATA
    assert resolve_zone(" Pacific/Kiritimati ", "Asia/Shanghai") == KIRITIMATI


@pytest.mark.parametrize("default", ["", "Nowhere/Zone", "localtime", "../etc/passwd", None])
def test_resolve_zone_bad_default_raises(default: object) -> None:
    with pytest.raises(ValueError, match="default time zone"):
        resolve_zone("Europe/Berlin", default)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="default time zone"):
        resolve_zone(None, default)  # type: ignore[arg-type]


# --- properties -----------------------------------------------------------------------------------------------

ZONES = [
    "America/New_York",
    "Europe/Berlin",
    "Asia/Shanghai",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "Australia/Lord_Howe",  # 30-minute DST shift
    "America/Santiago",  # DST changes at midnight
    "America/Havana",  # fall back to an ambiguous midnight
    "Pacific/Chatham",  # +12:45 / +13:45
]
LO, HI = datetime(2000, 1, 1, tzinfo=UTC), datetime(2037, 12, 31, tzinfo=UTC)


@cache
def transitions(name: str) -> list[datetime]:
    """Instants (2023-2026) where the zone's UTC offset changes, found by scanning and bisecting."""
    tz = ZoneInfo(name)
    out = []
    at, end = datetime(2023, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    step = timedelta(hours=6)
    while at < end:
        if (at + step).astimezone(tz).utcoffset() != at.astimezone(tz).utcoffset():
            lo, hi = int(at.timestamp()), int((at + step).timestamp())
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if datetime.fromtimestamp(mid, tz).utcoffset() == datetime.fromtimestamp(lo, tz).utcoffset():
                    lo = mid
                else:
                    hi = mid
            out.append(datetime.fromtimestamp(hi, UTC))
        at += step
    return out


def test_transition_finder_sees_dst() -> None:
    assert utc(2025, 3, 9, 7) in transitions("America/New_York")
    assert transitions("Asia/Kolkata") == []


@st.composite
def zone_and_instant(draw: st.DrawFn, zones: list[str] = ZONES) -> tuple[ZoneInfo, datetime]:
    name = draw(st.sampled_from(zones))
    near = transitions(name) if name in ZONES else []
    use_near = draw(st.booleans())
    if near and use_near:
        # Most trouble lives within a day or two of a transition: bias towards it.
        at = draw(st.sampled_from(near)) + timedelta(seconds=draw(st.integers(-2 * 86400, 2 * 86400)))
    else:
        at = draw(st.datetimes(min_value=LO.replace(tzinfo=None), max_value=HI.replace(tzinfo=None)))
        at = at.replace(tzinfo=UTC)
    return ZoneInfo(name), at


minutes_of_day = st.one_of(
    st.integers(0, 24 * 60 - 1),
    st.sampled_from([0, 30, 60, 90, 120, 150, 165, 180, 23 * 60 + 30]),  # where DST transitions happen
)
windows = st.builds(
    lambda a, b: DailyWindow(time(a // 60, a % 60), time(b // 60, b % 60)), minutes_of_day, minutes_of_day
)


def check_next_open(window: DailyWindow, tz: ZoneInfo, at: datetime) -> None:
    got = window.next_open(at, tz)
    assert got.tzinfo is UTC
    assert got >= at
    assert window.is_open(got, tz)
    assert got - at < timedelta(days=3)
    if got == at:
        return
    assert not window.is_open(at, tz)
    assert not window.is_open(got - US, tz)
    probe = at + timedelta(minutes=15)
    while probe < got:
        assert not window.is_open(probe, tz), probe
        probe += timedelta(minutes=15)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(zone_and_instant(), windows)
def test_property_next_open_is_the_first_open_instant(zone_at: tuple[ZoneInfo, datetime], window: DailyWindow) -> None:
    tz, at = zone_at
    check_next_open(window, tz, at)


@settings(max_examples=300, deadline=None)
@given(zone_and_instant(), windows)
def test_property_is_open_is_the_wall_clock_reading_away_from_transitions(
    zone_at: tuple[ZoneInfo, datetime], window: DailyWindow
) -> None:
    tz, at = zone_at
    offsets = {(at + timedelta(hours=h)).astimezone(tz).utcoffset() for h in (-50, 0, 50)}
    if len(offsets) != 1:
        return  # a transition nearby; the DST-specific tests cover those
    local = at.astimezone(tz).time()
    start, end = window.start, window.end
    if start == end:
        expected = True
    elif start < end:
        expected = start <= local < end
    else:
        expected = local >= start or local < end
    assert window.is_open(at, tz) is expected


def check_bucket(at: datetime, tz: ZoneInfo, unit: str) -> None:
    start, seconds = calendar_bucket(at, tz, unit)  # type: ignore[arg-type]
    assert start <= at.timestamp() < start + seconds
    first = datetime.fromtimestamp(start, tz)
    assert first.time() == time(0) or first.utcoffset() != (first - timedelta(seconds=1)).utcoffset()
    if unit == "week":
        assert first.weekday() == 0
        assert 160 * HOUR <= seconds <= 176 * HOUR
    else:
        assert 20 * HOUR <= seconds <= 28 * HOUR
    nxt_start, _ = calendar_bucket(datetime.fromtimestamp(start + seconds, UTC), tz, unit)  # type: ignore[arg-type]
    assert nxt_start == start + seconds
    assert calendar_bucket(datetime.fromtimestamp(start, UTC), tz, unit) == (start, seconds)  # type: ignore[arg-type]
    prev_start, prev_seconds = calendar_bucket(datetime.fromtimestamp(start - 1, UTC), tz, unit)  # type: ignore[arg-type]
    assert prev_start + prev_seconds == start


@settings(max_examples=400, deadline=None)
@given(zone_and_instant(), st.sampled_from(["day", "week"]))
def test_property_calendar_bucket_contains_at_and_tiles(zone_at: tuple[ZoneInfo, datetime], unit: str) -> None:
    tz, at = zone_at
    check_bucket(at, tz, unit)


@settings(max_examples=200, deadline=None)
@given(st.lists(zone_and_instant(), min_size=1, max_size=8), st.sampled_from(["day", "week"]))
def test_property_a_remembered_bucket_is_the_one_computed_afresh(
    zones_at: list[tuple[ZoneInfo, datetime]], unit: str
) -> None:
    # calendar_bucket remembers the last bucket per zone and answers instants inside it from memory.
    for tz, at in zones_at:
        for instant in (at, at + timedelta(hours=13), at - timedelta(hours=1)):
            answered = calendar_bucket(instant, tz, unit)  # type: ignore[arg-type]
            timewindows._LAST_BUCKET.clear()
            assert calendar_bucket(instant, tz, unit) == answered  # type: ignore[arg-type]
            calendar_bucket(at, tz, unit)  # type: ignore[arg-type]


def test_a_remembered_bucket_when_the_clock_steps_back_across_midnight() -> None:
    # The 31st is remembered; then comes an instant whose wall clock says the 31st again, after the 1st began.
    goose_bay = ZoneInfo("America/Goose_Bay")  # 2009-11-01 00:01 ADT -> 2009-10-31 23:01 AST
    calendar_bucket(utc(2009, 11, 1, 2, 59), goose_bay, "day")
    assert bucket_dt(utc(2009, 11, 1, 3, 30), goose_bay, "day") == (utc(2009, 11, 1, 3), 25)
    assert bucket_dt(utc(2009, 11, 1, 2, 59), goose_bay, "day") == (utc(2009, 10, 31, 3), 24)


ALL_ZONES = sorted(available_timezones() - {"localtime", "posixrules", "Factory"})


@settings(max_examples=300, deadline=None)
@given(zone_and_instant(ALL_ZONES), windows, st.sampled_from(["day", "week"]))
def test_property_every_zone_in_the_database(
    zone_at: tuple[ZoneInfo, datetime], window: DailyWindow, unit: str
) -> None:
    tz, at = zone_at
    check_next_open(window, tz, at)
    check_bucket(at, tz, unit)


def test_every_day_of_a_dst_year_tiles_exactly() -> None:
    for tz in (NY, BERLIN, ZoneInfo("Australia/Lord_Howe")):
        start, _ = calendar_bucket(utc(2025, 1, 1, 12), tz, "day")
        lengths = []
        for _ in range(365):
            nxt, seconds = calendar_bucket(datetime.fromtimestamp(start, UTC), tz, "day")
            assert nxt == start
            lengths.append(seconds)
            start += seconds
        assert sum(lengths) == 365 * 24 * HOUR
        assert sorted(set(lengths)) in (
            [23 * HOUR, 24 * HOUR, 25 * HOUR],
            [int(23.5 * HOUR), 24 * HOUR, int(24.5 * HOUR)],
        )
        assert datetime.fromtimestamp(start, tz).replace(tzinfo=None) == datetime(2026, 1, 1)
