"""Phone numbers: the usual separators are read, letters and control characters refused."""

from __future__ import annotations

import pytest

from clarion.domain import phones


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+86 138 0013 8000", None, "+8613800138000"),
        ("+86-138-0013-8000", None, "+8613800138000"),
        ("(+86) 138.0013.8000", None, "+8613800138000"),
        ("＋８６１３８００１３８０００", None, "+8613800138000"),
        ("138 0013 8000", "CN", "+8613800138000"),
        ("+1 (800) 356-9377", None, "+18003569377"),
    ],
)
def test_numbers_with_the_usual_separators_become_e164(raw: str, region: str | None, e164: str) -> None:
    assert phones.normalize(raw, region) == e164


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("+1-800-FLOWERS", "letters"),
        ("+1 800 356 9377 ext. 5", "letters"),
        ("+86 138 0013 8000\x00", "unprintable character"),
        ("+86\t138 0013 8000", "unprintable character"),
        ("+86 138 0013 8000\ud800", "unprintable character"),
        ("+86 138+0013 8000", "'+'"),
        ("+86 138 0013 8000;", "';'"),
        ("1" * 100, "longer than"),
        ("13800138000", "E.164"),
        ("+1 555", "not a valid phone number"),
    ],
)
def test_anything_else_is_refused_with_the_reason(raw: str, words: str) -> None:
    with pytest.raises(ValueError) as refused:
        phones.normalize(raw)
    assert words in str(refused.value)
