"""The keyword table of SMS replies: a reply matches a keyword only when it is the keyword itself."""

from __future__ import annotations

import pytest

from clarion.domain import errors, replies

TABLE = replies.table_from_json(
    {"keywords": [{"word": "TD"}, {"word": "退订"}, {"word": "0", "scope": "106900"}, {"word": "TD", "scope": "【A】"}]}
)


@pytest.mark.parametrize("text", ["TD", "td", " Td。", "ＴＤ", "td!!", "退订", "退订。"])
def test_the_keyword_itself_matches_in_any_case_width_and_trailing_punctuation(text: str) -> None:
    assert replies.match(TABLE, text, ["999"]) is not None


@pytest.mark.parametrize("text", ["I will not TD", "TD me", "", "。", "退订吧谢谢"])
def test_a_sentence_holding_a_keyword_does_not_match(text: str) -> None:
    assert replies.match(TABLE, text, []) is None


def test_a_senders_own_keyword_wins_and_stays_its_own() -> None:
    assert replies.match(TABLE, "0", ["106900"]) == replies.Keyword("0", "106900")
    assert replies.match(TABLE, "0", ["106901"]) is None
    own = replies.match(TABLE, "td", [None, "【A】"])
    assert own is not None and own.scope == "【A】"


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"keywords": [{"word": ""}]}, "keywords.0.word"),
        ({"keywords": [{"word": "x" * 33}]}, "keywords.0.word"),
        ({"keywords": [{"word": "TD", "scope": ""}]}, "keywords.0.scope"),
        ({"keywords": [{"word": "TD", "confirmation": ""}]}, "keywords.0.confirmation"),
        ({"keywords": [{"word": "TD", "extra": 1}]}, "keywords.0"),
        ({"keywords": [{"word": "td"}, {"word": "TD。"}]}, "keywords.1.word"),
        ({"words": []}, "keywords"),
    ],
)
def test_a_bad_table_is_refused_naming_the_entry(document: object, field: str) -> None:
    with pytest.raises(errors.InvalidInput) as refused:
        replies.table_from_json(document)
    assert field in str(refused.value.details)
