"""Which time zone names Clarion takes: IANA zones only, never a folder, a path or the server's own zone."""

from __future__ import annotations

from zoneinfo import available_timezones

import pytest

from clarion.domain import timewindows


def test_every_iana_zone_is_taken() -> None:
    zones = available_timezones() - {"localtime", "posixrules"}
    assert {"UTC", "Asia/Shanghai", "America/Argentina/Buenos_Aires", "Etc/GMT+8"} <= zones
    for name in zones:
        assert timewindows.check_zone(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "Asia",
        "America/Argentina",
        "",
        " UTC",
        "utc ",
        "../etc",
        "Asia/../Europe/Paris",
        "/etc/localtime",
        "UTC\x00",
        "localtime",
        "posixrules",
        "zone.tab",
        "Asia/Shanghai/",
        "Asia\\Shanghai",
        "x" * 300,
        "Asia/" + "y" * 100,
    ],
)
def test_anything_else_is_refused_without_reaching_the_file_system(name: str) -> None:
    with pytest.raises(ValueError, match="unknown IANA time zone"):
        timewindows.check_zone(name)


@pytest.mark.parametrize("value", [None, 8, ["UTC"]])
def test_a_zone_is_a_string(value: object) -> None:
    with pytest.raises(ValueError, match="IANA name"):
        timewindows.check_zone(value)


def test_a_bad_user_zone_still_falls_back_to_the_default() -> None:
    assert timewindows.resolve_zone("Asia", "Europe/Berlin").key == "Europe/Berlin"
    assert timewindows.resolve_zone("x" * 300, "UTC").key == "UTC"
    with pytest.raises(ValueError):
        timewindows.resolve_zone(None, "Asia")
