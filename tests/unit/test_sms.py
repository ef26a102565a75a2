"""SMS segment counting: encodings, billing units, boundaries and never-split two-unit characters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clarion.domain.sms import Segments, count_segments, is_gsm7

# Written out independently of the module, straight from GSM 03.38 (0x1B, the escape, left out).
BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
EXTENSION = "^{}\\[~]|€\f"
CHINESE_OTP = "【Clarion】您的验证码是123456，5分钟内有效。"


def gsm(characters: int, count: int, per_segment: int, remaining: int) -> Segments:
    return Segments("GSM-7", characters, count, per_segment, remaining)


def ucs(characters: int, count: int, per_segment: int, remaining: int) -> Segments:
    return Segments("UCS-2", characters, count, per_segment, remaining)


# --- alphabet -------------------------------------------------------------------------------------------


def test_basic_alphabet_is_exactly_127_one_septet_characters() -> None:
    assert len(set(BASIC)) == 127
    assert is_gsm7(BASIC)
    for ch in BASIC:
        assert count_segments(ch) == gsm(1, 1, 160, 159), repr(ch)


def test_extension_characters_cost_two_septets() -> None:
    assert is_gsm7(EXTENSION)
    for ch in EXTENSION:
        assert count_segments(ch) == gsm(2, 1, 160, 158), repr(ch)
    assert count_segments(EXTENSION).characters == 20


@pytest.mark.parametrize("ch", ["ç", "á", "`", "\t", "中", "😀", "\u0308", "\u00a0", "«", "—"])
def test_characters_outside_gsm7_switch_to_ucs2(ch: str) -> None:
    assert not is_gsm7(ch)
    assert not is_gsm7("hello " + ch)
    assert count_segments("hello " + ch).encoding == "UCS-2"


def test_empty_text_is_billed_as_one_empty_gsm7_segment() -> None:
    assert is_gsm7("")
    assert count_segments("") == gsm(0, 1, 160, 160)


# --- GSM-7 boundaries -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (1, gsm(1, 1, 160, 159)),
        (159, gsm(159, 1, 160, 1)),
        (160, gsm(160, 1, 160, 0)),
        (161, gsm(161, 2, 153, 145)),
        (306, gsm(306, 2, 153, 0)),
        (307, gsm(307, 3, 153, 152)),
        (459, gsm(459, 3, 153, 0)),
        (460, gsm(460, 4, 153, 152)),
    ],
)
def test_gsm7_boundaries(length: int, expected: Segments) -> None:
    assert count_segments("a" * length) == expected


def test_extension_character_counts_two_at_the_single_segment_limit() -> None:
    assert count_segments("a" * 158 + "€") == gsm(160, 1, 160, 0)
    assert count_segments("a" * 159 + "€") == gsm(161, 2, 153, 145)
    assert count_segments("€" * 80) == gsm(160, 1, 160, 0)
    # 76 euros (152 septets) per concatenated segment, the 153rd septet stays empty
    assert count_segments("€" * 81) == gsm(162, 2, 153, 143)
    assert count_segments("€" * 152) == gsm(304, 2, 153, 1)
    assert count_segments("€" * 153) == gsm(306, 3, 153, 151)


def test_euro_straddling_septet_153_moves_to_the_next_segment() -> None:
    # 306 septets would fit two segments exactly, but the euro cannot sit on septets 153 and 154
    assert count_segments("a" * 152 + "€" + "a" * 152) == gsm(306, 3, 153, 152)
    assert count_segments("a" * 152 + "€" + "a" * 10) == gsm(164, 2, 153, 141)
    # ending exactly on septet 153 is fine
    assert count_segments("a" * 151 + "€" + "a" * 153) == gsm(306, 2, 153, 0)


# --- UCS-2 boundaries -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (1, ucs(1, 1, 70, 69)),
        (70, ucs(70, 1, 70, 0)),
        (71, ucs(71, 2, 67, 63)),
        (134, ucs(134, 2, 67, 0)),
        (135, ucs(135, 3, 67, 66)),
        (201, ucs(201, 3, 67, 0)),
        (202, ucs(202, 4, 67, 66)),
    ],
)
def test_ucs2_boundaries(length: int, expected: Segments) -> None:
    assert count_segments("中" * length) == expected


def test_emoji_outside_the_bmp_counts_two_units() -> None:
    assert count_segments("😀") == ucs(2, 1, 70, 68)
    assert count_segments("😀" * 35) == ucs(70, 1, 70, 0)
    # 33 emoji (66 units) per concatenated segment
    assert count_segments("😀" * 36) == ucs(72, 2, 67, 61)
    assert count_segments("😀" * 66) == ucs(132, 2, 67, 1)
    assert count_segments("😀" * 67) == ucs(134, 3, 67, 65)


def test_surrogate_pair_straddling_unit_67_moves_to_the_next_segment() -> None:
    assert count_segments("中" * 66 + "😀" + "中" * 66) == ucs(134, 3, 67, 66)
    assert count_segments("a" * 66 + "😀" + "a" * 10) == ucs(78, 2, 67, 55)
    assert count_segments("中" * 65 + "😀" + "中" * 67) == ucs(134, 2, 67, 0)


def test_one_non_gsm_character_switches_the_whole_text_to_ucs2() -> None:
    assert count_segments("a" * 100) == gsm(100, 1, 160, 60)
    assert count_segments("a" * 100 + "中") == ucs(101, 2, 67, 33)
    assert count_segments("a" * 159 + "é") == gsm(160, 1, 160, 0)  # é is in the basic table
    assert count_segments("a" * 159 + "á") == ucs(160, 3, 67, 41)  # á is not
    # in UCS-2 an extension character is a single unit again
    assert count_segments("€" * 69 + "中") == ucs(70, 1, 70, 0)


def test_chinese_verification_code() -> None:
    assert not is_gsm7(CHINESE_OTP)
    assert count_segments(CHINESE_OTP) == ucs(29, 1, 70, 41)


# --- properties -----------------------------------------------------------------------------------------

gsm_texts = st.text(alphabet=st.sampled_from(BASIC + EXTENSION), max_size=700)
any_texts = st.text(
    alphabet=st.sampled_from(list(BASIC + EXTENSION + "中😀á")) | st.characters(exclude_categories=["Cs"]),
    max_size=500,
)


def pack(units: list[str], escape: str, single: int, multi: int) -> tuple[int, int, int]:
    """Brute-force packing: cut a flat unit stream every ``multi`` units, backing off one unit whenever the
    cut would separate a two-unit character from its leading unit ``escape``.  Returns count, per segment,
    remaining."""
    if len(units) <= single:
        return 1, single, single - len(units)
    chunks: list[list[str]] = []
    start = 0
    while start < len(units):
        end = start + multi
        if end < len(units) and units[end - 1] == escape:
            end -= 1
        chunks.append(units[start:end])
        start = end
    assert all(len(c) <= multi for c in chunks)
    return len(chunks), multi, multi - len(chunks[-1])


def gsm_septets(text: str) -> list[str]:
    septets: list[str] = []
    for ch in text:
        septets.extend(["ESC", ch] if ch in EXTENSION else [ch])
    return septets


@given(gsm_texts)
def test_gsm7_count_matches_brute_force_packing(text: str) -> None:
    septets = gsm_septets(text)
    count, per_segment, remaining = pack(septets, "ESC", 160, 153)
    assert count_segments(text) == gsm(len(septets), count, per_segment, remaining)


@given(st.text(alphabet=st.sampled_from(list("a€中😀\U00010348")), max_size=400))
def test_ucs2_count_matches_brute_force_packing(text: str) -> None:
    text += "中"
    raw = text.encode("utf-16-le")
    code_units = [int.from_bytes(raw[i : i + 2], "little") for i in range(0, len(raw), 2)]
    tagged = ["HIGH" if 0xD800 <= u <= 0xDBFF else str(u) for u in code_units]
    count, per_segment, remaining = pack(tagged, "HIGH", 70, 67)
    assert count_segments(text) == ucs(len(code_units), count, per_segment, remaining)


@given(gsm_texts, st.sampled_from(BASIC + EXTENSION))
def test_gsm7_count_is_monotonic_when_appending(text: str, ch: str) -> None:
    before, after = count_segments(text), count_segments(text + ch)
    assert after.encoding == "GSM-7"
    assert after.count >= before.count
    assert after.characters == before.characters + (2 if ch in EXTENSION else 1)


@given(any_texts, any_texts.filter(bool))
def test_count_never_decreases_when_text_grows(text: str, suffix: str) -> None:
    assert count_segments(text + suffix).count >= count_segments(text).count


@given(any_texts)
def test_segment_arithmetic_is_consistent(text: str) -> None:
    s = count_segments(text)
    assert s.encoding == ("GSM-7" if is_gsm7(text) else "UCS-2")
    assert 0 <= s.remaining <= s.per_segment
    if s.count == 1:
        assert s.per_segment == (160 if s.encoding == "GSM-7" else 70)
        assert s.characters + s.remaining == s.per_segment
    else:
        assert s.per_segment == (153 if s.encoding == "GSM-7" else 67)
        # each gap left by a moved two-unit character is exactly one unit
        assert (s.count - 1) * (s.per_segment - 1) < s.characters <= s.count * s.per_segment - s.remaining
