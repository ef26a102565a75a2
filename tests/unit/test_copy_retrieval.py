"""Retrieval for the copy knowledge base: BM25 over a copy's terms, the copy a saved version sent on a channel
and variant, and the brief it was written for."""

from __future__ import annotations

import pytest

from clarion.analytics import copy_terms
from clarion.copywriting import knowledge
from clarion.store import copy_examples


def terms(*texts: str) -> list[list[str]]:
    return [copy_terms.tokens(text) for text in texts]


def test_bm25_scores_the_copies_that_share_the_briefs_words() -> None:
    documents = terms("会员日专享折扣", "包裹已发货，物流信息", "会员积分兑换")
    scores = knowledge.bm25(set(copy_terms.tokens("会员专享活动")), documents)
    assert scores[0] > scores[2] > 0 and scores[1] == 0


def test_bm25_weighs_a_rare_word_above_a_common_one() -> None:
    documents = terms("会员 优惠", "会员 折扣", "会员 包邮", "会员 秒杀")
    rare, common = knowledge.bm25({"秒杀"}, documents), knowledge.bm25({"会员"}, documents)
    assert rare[3] > common[3] > 0 and rare[:3] == [0, 0, 0]


def test_bm25_favours_the_shorter_copy_and_saturates_repeated_words() -> None:
    short, long = knowledge.bm25({"会员"}, [["会员", "福利"], ["会员", "福利", "积分", "兑换", "礼品", "商城"]])
    assert short > long
    once, often, _ = knowledge.bm25({"会员"}, [["会员", "a", "b", "c"], ["会员", "会员", "会员", "会员"], ["x"]])
    assert often > once and often < 3 * once  # four times the word is worth less than four times once


def test_bm25_of_nothing_is_nothing() -> None:
    assert knowledge.bm25({"会员"}, []) == []
    assert knowledge.bm25(set(), terms("会员日")) == [0.0]


BODY = {
    "name": "会员日",
    "category": "marketing",
    "channels": {
        "sms": {"text": "会员日全场五折"},
        "push": {},
        "default": {"title": "会员日", "body": "全场五折"},
    },
    "variants": [
        {"name": "a", "weight": 1},
        {"name": "b", "weight": 1, "channels": {"sms": {"text": "会员专享秒杀"}}},
        {"name": "c", "weight": 1, "channels": {"default": {"title": "秒杀", "body": "会员专享"}}},
    ],
}


@pytest.mark.parametrize(
    ("variant", "channel", "copy"),
    [
        ("", "sms", "会员日全场五折"),  # the template's own content
        ("a", "sms", "会员日全场五折"),  # a variant without content of its own sends the template's
        ("b", "sms", "会员专享秒杀"),  # the variant's content
        ("", "push", "会员日\n全场五折"),  # an empty content is the default it is adapted from
        ("c", "push", "秒杀\n会员专享"),  # ... the variant's default, when it has one
        ("", "email", ""),  # no content on the channel
    ],
)
def test_the_copy_is_what_the_version_sent_on_that_channel_and_variant(variant: str, channel: str, copy: str) -> None:
    assert copy_examples.copy_of(BODY, variant, channel) == copy


@pytest.mark.parametrize(
    ("origin", "brief"),
    [
        (None, "会员日"),  # typed by an operator: the template's name
        ({"kind": "llm", "model": "m"}, "会员日"),
        ({"kind": "llm", "prompt": "双十二会员日，满300减50"}, "会员日\n双十二会员日，满300减50"),
        (
            {"kind": "llm", "prompt": {"brief": {"product": "会员卡", "offer": "五折"}}},
            '会员日\n{"offer": "五折", "product": "会员卡"}',
        ),
        (
            {
                "kind": "llm",
                "prompt": [
                    {"role": "system", "content": "rules"},
                    {"role": "user", "content": "<brief>会员卡</brief>"},
                ],
            },
            "会员日\n会员卡",
        ),
    ],
)
def test_the_brief_is_the_templates_name_and_a_drafted_versions_brief(origin: object, brief: str) -> None:
    assert copy_examples.brief_of(BODY, origin) == brief
