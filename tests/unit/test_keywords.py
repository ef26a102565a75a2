from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clarion.domain import keywords
from clarion.domain.keywords import MAX_WORD_LENGTH, MAX_WORDS, KeywordList, Match, screen


def spans(matches: list[Match]) -> list[tuple[str, int, int]]:
    return [(m.word, m.start, m.end) for m in matches]


def block(words: list[str], key: str = "b", **kw: bool) -> KeywordList:
    return KeywordList(key, words, action="block", **kw)


def mask(words: list[str], key: str = "m", **kw: bool) -> KeywordList:
    return KeywordList(key, words, action="mask", **kw)


# --- the automaton ---------------------------------------------------------------------------------------------


def test_classic_ushers() -> None:
    kl = block(["he", "she", "his", "hers"])
    assert spans(kl.find("ushers")) == [("she", 1, 4), ("hers", 2, 6), ("he", 2, 4)]
    assert all(m.list_key == "b" for m in kl.find("ushers"))
    assert kl.find("his hers") == [
        Match("his", 0, 3, "b"),
        Match("hers", 4, 8, "b"),
        Match("he", 4, 6, "b"),
    ]


def test_overlapping_and_nested_matches() -> None:
    kl = block(["a", "aa", "aaa"])
    assert spans(kl.find("aaaa")) == [
        ("aaa", 0, 3),
        ("aa", 0, 2),
        ("a", 0, 1),
        ("aaa", 1, 4),
        ("aa", 1, 3),
        ("a", 1, 2),
        ("aa", 2, 4),
        ("a", 2, 3),
        ("a", 3, 4),
    ]
    nested = block(["abcd", "bc", "b", "cdx", "d"])
    assert spans(nested.find("xabcdxy")) == [("abcd", 1, 5), ("bc", 2, 4), ("b", 2, 3), ("cdx", 3, 6), ("d", 4, 5)]


def test_failure_links_recover_after_a_partial_match() -> None:
    kl = block(["abcx", "bcd", "cde"])  # after "abc" + "d" the automaton must fall back to "bcd", then "cde"
    assert spans(kl.find("abcde")) == [("bcd", 1, 4), ("cde", 2, 5)]
    assert spans(kl.find("ababcx")) == [("abcx", 2, 6)]


def test_chinese_words_inside_chinese_sentences() -> None:
    kl = mask(["赌博", "博彩", "发票"])
    text = "代开发票，网络赌博彩票"
    assert spans(kl.find(text)) == [("发票", 2, 4), ("赌博", 7, 9), ("博彩", 8, 10)]
    assert [text[m.start : m.end] for m in kl.find(text)] == ["发票", "赌博", "博彩"]
    assert kl.mask(text)[0] == "代开***，网络***票"
    assert kl.find("彩票发行") == []


def test_mixed_chinese_and_english() -> None:
    kl = block(["VPN", "翻墙"])
    assert spans(kl.find("免费vpn翻墙软件")) == [("VPN", 2, 5), ("翻墙", 5, 7)]


def test_words_are_stripped_and_blank_words_ignored() -> None:
    kl = mask(["", "   ", "\t\n", " spam \n", "spam", "\u200b"])
    assert kl.words == frozenset({"spam"})
    assert spans(kl.find("no spam here")) == [("spam", 3, 7)]
    assert mask(["", " "]).find("anything at all") == []


def test_words_must_be_a_collection_of_strings() -> None:
    with pytest.raises(TypeError):
        mask("spam")  # type: ignore[arg-type]  # one string would become one word per character
    with pytest.raises(TypeError):
        mask(["ok", 3])  # type: ignore[list-item]


def test_attributes_and_immutability() -> None:
    kl = KeywordList("violence", ("kill", "KILL", "刀"), action="mask", version=7)
    assert (kl.key, kl.action, kl.version) == ("violence", "mask", 7)
    assert kl.words == frozenset({"kill", "KILL", "刀"})
    assert isinstance(kl.words, frozenset)
    with pytest.raises(AttributeError):
        kl.action = "block"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        kl._goto = []
    assert kl.action == "mask"
    assert spans(kl.find("Kill")) == [("kill", 0, 4)]  # same folded word: the first listed one is named


@pytest.mark.parametrize(("key", "action"), [("", "block"), ("k", "drop"), ("k", "")])
def test_bad_key_or_action(key: str, action: str) -> None:
    with pytest.raises(ValueError):
        KeywordList(key, ["x"], action=action)  # type: ignore[arg-type]


# --- case folding and normalization, offsets into the original text -------------------------------------------


def test_case_insensitive_by_default() -> None:
    kl = block(["Free Money"])
    assert spans(kl.find("get FREE money, free MONEY")) == [("Free Money", 4, 14), ("Free Money", 16, 26)]
    assert block(["free"], case_sensitive=True).find("FREE Free") == []
    assert spans(block(["free"], case_sensitive=True).find("FREE free")) == [("free", 5, 9)]
    sensitive = block(["Straße", "FREE"], case_sensitive=True)  # still NFKC-normalized, just not case folded
    assert spans(sensitive.find("straße STRASSE Straße ｆｒｅｅ ＦＲＥＥ")) == [("Straße", 15, 21), ("FREE", 27, 31)]
    assert spans(sensitive.find("免费 free FREE")) == [("FREE", 8, 12)]


def test_sharp_s_folds_to_ss_with_offsets_into_the_original() -> None:
    kl = block(["strasse"])
    assert spans(kl.find("Hauptstraße 1")) == [("strasse", 5, 11)]  # 6 original characters, 7 folded
    assert spans(kl.find("HAUPTSTRASSE")) == [("strasse", 5, 12)]
    assert spans(block(["STRAẞE"]).find("die strasse")) == [("STRAẞE", 4, 11)]  # capital sharp s
    # a match after the length change still points at the right characters
    after = block(["free"])
    text = "ßßß free"
    assert spans(after.find(text)) == [("free", 4, 8)]
    assert text[4:8] == "free"
    # a word that covers half of a folded character covers the whole character, once
    assert spans(block(["s"]).find("aßb")) == [("s", 1, 2)]
    assert spans(block(["s", "ss"]).find("ß")) == [("ss", 0, 1), ("s", 0, 1)]


def test_sharp_s_without_normalization_uses_the_casefold_path() -> None:
    kl = block(["strasse", "x"], normalize=False)
    assert spans(kl.find("Straße x")) == [("strasse", 0, 6), ("x", 7, 8)]


def test_turkish_i_is_folded_without_locale_rules() -> None:
    # Documented: casefold is locale independent. 'İ' folds to 'i' + U+0307, dotless 'ı' stays itself.
    assert spans(block(["İSTANBUL"]).find("Welcome to İstanbul!")) == [("İSTANBUL", 11, 19)]
    assert block(["istanbul"]).find("İstanbul") == []  # the combining dot is in the way
    assert spans(block(["istanbul"]).find("ISTANBUL")) == [("istanbul", 0, 8)]
    assert block(["ısparta"]).find("ISPARTA isparta") == []
    assert spans(block(["ısparta"]).find("ıSPARTA")) == [("ısparta", 0, 7)]


def test_fullwidth_forms_match_with_nfkc() -> None:
    kl = block(["free"])
    text = "限时ｆｒｅｅ领取"
    assert spans(kl.find(text)) == [("free", 2, 6)]
    assert spans(kl.find("ＦＲＥＥ")) == [("free", 0, 4)]
    assert spans(block(["ＦＲＥＥ"]).find("free")) == [("ＦＲＥＥ", 0, 4)]  # the word is normalized too
    assert spans(block(["第1名"]).find("第１名")) == [("第1名", 0, 3)]
    assert spans(block(["发票,网"]).find("代开发票，网络")) == [("发票,网", 2, 6)]  # full-width comma
    assert block(["free"], normalize=False).find(text) == []


def test_zero_width_characters_are_ignored_and_kept_in_the_span() -> None:
    kl = mask(["free", "赌博"])
    text = "\u200bf\u200br\u200dee\ufeff 赌\u2060博"
    assert spans(kl.find(text)) == [("free", 1, 7), ("赌博", 9, 12)]
    assert kl.mask(text)[0] == "\u200b***\ufeff ***"
    assert mask(["free"], normalize=False).find("f\u200bree") == []


def test_combining_marks_compose_with_their_base() -> None:
    kl = block(["café"])
    assert spans(kl.find("un cafe\u0301 noir")) == [("café", 3, 8)]  # decomposed é: 5 original characters
    assert spans(block(["cafe\u0301"]).find("café")) == [("cafe\u0301", 0, 4)]
    assert block(["cafe"]).find("un cafe\u0301 noir") == []  # the accent is part of the last letter


# --- first, mask, screen ---------------------------------------------------------------------------------------


def test_first_returns_the_earliest_ending_match() -> None:
    kl = block(["hers", "she", "he", "sh"])
    assert kl.first("ushers") == Match("sh", 1, 3, "b")
    assert kl.first("xhers") == Match("he", 1, 3, "b")
    assert block(["bcd", "abcd"]).first("abcd") == Match("abcd", 0, 4, "b")  # longest of those ending together
    assert kl.first("nothing to see") is None
    assert kl.first("") is None
    assert block(["free"]).first("ßß ｆｒｅｅ") == Match("free", 3, 7, "b")


class _CountingStates(list):
    def __init__(self, states: list[dict[str, int]]) -> None:
        super().__init__(states)
        self.lookups = 0

    def __getitem__(self, index):
        self.lookups += 1
        return super().__getitem__(index)


@pytest.mark.parametrize("text", ["he" + "x he" * 50_000, "赌博" + "正常的短信内容" * 10_000])
def test_first_stops_at_the_first_match(text: str) -> None:
    kl = block(["he", "赌博"])
    spy = _CountingStates(kl._goto)
    object.__setattr__(kl, "_goto", spy)  # test-only instrumentation of the frozen list

    assert kl.first(text) == Match(text[:2], 0, 2, "b")
    assert spy.lookups <= 4
    assert len(kl.find(text)) >= 1
    assert spy.lookups > len(text)  # find scans it all


def test_mask_merges_overlapping_and_touching_spans() -> None:
    kl = mask(["赌博", "博彩", "ab", "cd", "xyz"])
    assert kl.mask("网络赌博彩票") == ("网络***票", [Match("赌博", 2, 4, "m"), Match("博彩", 3, 5, "m")])
    assert kl.mask("abcd abxcd")[0] == "*** ***x***"  # touching spans are one replacement
    assert kl.mask("xyz", replacement="[x]")[0] == "[x]"
    nested = mask(["aaa", "a"])
    masked, found = nested.mask("baaab")
    assert masked == "b***b"
    assert spans(found) == [("aaa", 1, 4), ("a", 1, 2), ("a", 2, 3), ("a", 3, 4)]


def test_mask_without_matches_returns_the_text() -> None:
    assert mask(["x"]).mask("clean prose") == ("clean prose", [])


def test_mask_keeps_unmatched_text_around_normalized_matches() -> None:
    text = "Straße，ｆｒｅｅ！"
    assert mask(["strasse", "free"]).mask(text)[0] == "***，***！"


def test_empty_replacement_can_leave_a_word_behind() -> None:
    # Why the masking guarantee needs a replacement that shares no character with the words.
    kl = mask(["ab"])
    assert kl.mask("aabb", replacement="")[0] == "ab"
    assert kl.find(kl.mask("aabb", replacement="")[0]) != []
    assert kl.find(kl.mask("aabb")[0]) == []


def test_screen_blocks_before_masking() -> None:
    masks = mask(["发票"], key="ads")
    blocks = block(["赌博"], key="illegal")
    text = "代开发票，网络赌博"
    result = screen(text, [masks, blocks])  # the block list wins even when listed after the mask list
    assert result.blocked_by == Match("赌博", 7, 9, "illegal")
    assert result.masked_text == text
    assert result.masks == []
    assert result.blocked and result.reason == "keyword"
    assert result.detail == {"word": "赌博", "list": "illegal", "start": 7, "end": 9}


def test_screen_first_block_list_in_order_wins() -> None:
    lists = [block(["late"], key="first"), block(["early"], key="second")]
    assert screen("early then late", lists).blocked_by == Match("late", 11, 15, "first")
    assert screen("early then late", lists[::-1]).blocked_by == Match("early", 0, 5, "second")


def test_screen_applies_every_mask_list_with_offsets_into_the_original() -> None:
    lists = [mask(["发票"], key="ads"), block(["赌博"], key="illegal"), mask(["ｖｐｎ", "票据"], key="tools")]
    result = screen("代开发票据，VPN", lists)
    assert result.blocked_by is None and not result.blocked and result.reason is None and result.detail == {}
    assert result.masked_text == "代开***，***"
    assert result.masks == [Match("发票", 2, 4, "ads"), Match("票据", 3, 5, "tools"), Match("ｖｐｎ", 6, 9, "tools")]


def test_screen_with_nothing_to_do() -> None:
    assert screen("hello", []) == keywords.Screening(None, "hello", [])
    assert screen("hello", [mask(["bye"]), block(["ciao"])]) == keywords.Screening(None, "hello", [])


# --- limits ----------------------------------------------------------------------------------------------------


def test_word_length_limit() -> None:
    longest = "长" * MAX_WORD_LENGTH
    assert block([f"  {longest} "]).words == frozenset({longest})
    with pytest.raises(ValueError, match="200"):
        block(["ok", longest + "长"])


def test_word_count_limit() -> None:
    words = [f"w{i}" for i in range(MAX_WORDS)]
    kl = block([*words, "w0", " w1 "])  # repeats are not more words
    assert len(kl.words) == MAX_WORDS
    assert spans(kl.find("w99999")) == [("w99999", 0, 6), ("w9999", 0, 5), ("w999", 0, 4), ("w99", 0, 3), ("w9", 0, 2)]
    with pytest.raises(ValueError, match="100000"):
        block([*words, "one more"])


# --- properties ------------------------------------------------------------------------------------------------

# Folding is the identity on these (apart from upper → lower case for A/B), so a brute force over the
# lower-cased text is the specification.
SMALL = "abc赌博彩"
word_st = st.text(alphabet=SMALL + " ", min_size=0, max_size=4)
text_st = st.text(alphabet=SMALL + "AB ", max_size=40)


def brute_force(text: str, words: list[str], key: str) -> list[Match]:
    named: dict[str, str] = {}
    for word in words:
        if word.strip():
            named.setdefault(word.strip().lower(), word.strip())
    folded = text.lower()
    found = [
        Match(name, i, i + len(pattern), key)
        for pattern, name in named.items()
        for i in range(len(folded))
        if folded.startswith(pattern, i)
    ]
    return sorted(found, key=lambda m: (m.start, -m.end, -len(m.word), m.word))


@settings(max_examples=300, deadline=None)
@given(words=st.lists(word_st, max_size=8), text=text_st, normalize=st.booleans())
def test_find_equals_brute_force(words: list[str], text: str, normalize: bool) -> None:
    kl = block(words, normalize=normalize)
    assert kl.find(text) == brute_force(text, words, "b")


@settings(max_examples=300, deadline=None)
@given(words=st.lists(word_st, max_size=8), text=text_st)
def test_first_is_the_earliest_ending_longest_match(words: list[str], text: str) -> None:
    kl = block(words)
    expected = brute_force(text, words, "b")
    assert kl.first(text) == (min(expected, key=lambda m: (m.end, m.start)) if expected else None)


@settings(max_examples=300, deadline=None)
@given(words=st.lists(word_st, max_size=8), text=text_st, replacement=st.sampled_from(["***", "*", "【屏蔽】", "#"]))
def test_masked_text_contains_no_word(words: list[str], text: str, replacement: str) -> None:
    # Property: when the replacement is non-empty and none of its (folded) characters occurs in any word, the
    # masked text contains no listed word at all, and everything outside the merged spans is unchanged.
    kl = mask(words)
    masked, found = kl.mask(text, replacement)
    assert found == kl.find(text)
    assert kl.find(masked) == []
    if not found:
        assert masked == text
    else:
        assert replacement in masked
    kept = [ch for i, ch in enumerate(text) if not any(m.start <= i < m.end for m in found)]
    assert [ch for ch in masked.replace(replacement, "")] == kept


@settings(max_examples=200, deadline=None)
@given(
    words=st.lists(st.text(alphabet="abAB ", max_size=4), max_size=6),
    text=st.text(alphabet="abAB ", max_size=30),
    mode=st.sampled_from([(True, "中"), (True, "ｃ"), (True, "ß"), (True, "\u200b"), (False, "İ"), (False, "ß")]),
)
def test_fast_and_unit_by_unit_folding_agree(words: list[str], text: str, mode: tuple[bool, str]) -> None:
    # An ASCII text takes the fast path. One leading character sends the same text down another path: with
    # normalize=True, "中" and "ｃ" the one-to-one translation, "ß" (folds to two) and a zero-width space (to none)
    # the unit-by-unit path with offset maps; with normalize=False, "İ" and "ß" the casefold-with-maps path.
    normalize, prefix = mode
    kl = block(words, normalize=normalize)
    shifted = [Match(m.word, m.start + 1, m.end + 1, m.list_key) for m in kl.find(text)]
    assert kl.find(prefix + text) == shifted
    assert kl.find(text) == brute_force(text, words, "b")


TRICKY = "abßsSİiı\u0307\u0301é\u200bｆｓＡ赌博"


@settings(max_examples=300, deadline=None)
@given(
    words=st.lists(st.text(alphabet=TRICKY, min_size=1, max_size=3), max_size=6),
    text=st.text(alphabet=TRICKY, max_size=30),
    normalize=st.booleans(),
)
def test_every_span_holds_its_word(words: list[str], text: str, normalize: bool) -> None:
    # Offsets stay valid through length-changing folds: cut out on its own, a match's span matches the same word
    # from end to end, and the span never starts or ends inside what was matched.
    kl = block(words, normalize=normalize)
    for m in kl.find(text):
        assert 0 <= m.start < m.end <= len(text)
        assert Match(m.word, 0, m.end - m.start, "b") in kl.find(text[m.start : m.end])
    found, first = kl.find(text), kl.first(text)
    assert (first is None) == (not found)
    if first is not None:
        assert first in found
        assert first.end == min(m.end for m in found)


# --- the presence check ------------------------------------------------------------------------------------------

# Characters the regular expression must take literally, next to ones that fold.
SPECIAL = "ab.*+?()[]{}|^$\\-赌博ßİＡ\u200b"


@settings(max_examples=400, deadline=None)
@given(
    words=st.lists(st.text(alphabet=SPECIAL, min_size=1, max_size=4), max_size=8),
    text=st.text(alphabet=SPECIAL + "AB ", max_size=30),
    normalize=st.booleans(),
    case_sensitive=st.booleans(),
)
def test_the_presence_check_agrees_with_the_automaton(
    words: list[str], text: str, normalize: bool, case_sensitive: bool
) -> None:
    # A text is scanned only when the list's regular expression finds a word in it: it must find one exactly
    # when the automaton does, or a word would slip through.
    kl = KeywordList("b", words, action="block", normalize=normalize, case_sensitive=case_sensitive)
    folded = kl._fold(text)[0]
    assert kl._occurs(folded) == bool(kl._scan(folded, first=False))


def test_the_presence_check_of_long_nested_words_and_its_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every word a prefix of the next: the deepest trie the length limit allows still compiles.
    words = ["a" * n + "b" for n in range(MAX_WORD_LENGTH)]
    kl = block(words)
    assert kl._present is not None
    assert kl.first("x" + "a" * 150 + "b") == Match("a" * 150 + "b", 1, 152, "b")
    assert kl.find("aa") == []

    def refuse(pattern: str, flags: int = 0) -> None:
        raise RecursionError

    monkeypatch.setattr(keywords.re, "compile", refuse)
    scanned = block(["赌博", "a" * 3])
    assert scanned._present is None  # no presence check: every text is scanned
    assert scanned.first("网络赌博") == Match("赌博", 2, 4, "b")
    assert scanned.find("ok") == []


def test_screen_folds_once_per_folding_and_agrees_with_each_list() -> None:
    lists = [
        mask(["ＶＰＮ"], key="default"),
        mask(["VPN"], key="exact", case_sensitive=True),
        mask(["vpn", "ｖ"], key="raw", normalize=False),
        block(["Casino"], key="casino", case_sensitive=True),
    ]
    for text in ["VPN ｖｐｎ vpn", "casino ＶＰＮ", "Casino vpn", "nothing here"]:
        expected_block = next((kl.first(text) for kl in lists if kl.action == "block" and kl.first(text)), None)
        result = screen(text, lists)
        assert result.blocked_by == expected_block
        if expected_block is None:
            expected = sorted(
                (m for kl in lists if kl.action == "mask" for m in kl.find(text)), key=lambda m: (m.start, -m.end)
            )
            assert result.masks == expected
