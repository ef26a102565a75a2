"""The copy knowledge base: tokens of a copy, the terms that set top copies apart, and Wilson-ranked rates."""

from __future__ import annotations

import pytest

from clarion.analytics import copy_terms as ct


def test_a_chinese_marketing_sentence_is_segmented_into_its_words() -> None:
    words = ct.tokens("限时优惠券今天领取")
    assert {"限时", "优惠券", "领取"} <= set(words)
    assert "限时优惠券今天领取" not in words
    assert ct.tokens("限时优惠券今天领取", language="en") == ["限时优惠券今天领取"]


def test_template_syntax_is_removed_before_tokenising() -> None:
    words = ct.tokens("亲爱的{userName}，${user.name}您好 <#if user.vip>VIP专享</#if><#else>新人礼</#if>")
    assert not any(w in words for w in ("username", "userName", "user", "name", "if", "else", "{", "}", "$"))
    assert "专享" in words and "vip" in words
    # a placeholder separates the words around it: no bigram across it
    assert "hello world" not in ct.tokens("Hello {name} world")
    assert "hello world" in ct.tokens("Hello world")


def test_punctuation_numbers_and_stop_words_are_dropped() -> None:
    words = ct.tokens("Get the FREE shipping deal today — save 20% on limited-time offers! 满100减20，的了是")
    assert "the" not in words and "on" not in words and "20" not in words and "100" not in words
    assert not {"的", "了", "是", "!", "—", "%", "，"} & set(words)
    assert {"free", "free shipping", "shipping deal", "limited time", "满", "减"} <= set(words)
    assert "get the" not in words and "save on" not in words  # bigrams never span a stop word or a number


def test_a_term_only_in_top_copies_ranks_first() -> None:
    top = ["限时秒杀 free gift today", "限时秒杀 new arrivals", "限时秒杀 weekend offers", "new arrivals today"]
    rest = ["new arrivals today", "weekend offers today", "new arrivals", "today only offers", "weekend sale"]
    terms = ct.distinguishing_terms(top, rest)
    assert terms[0].term == "秒杀" or terms[0].term == "限时"
    first = terms[0]
    assert (first.top_count, first.rest_count) == (3, 0) and first.z > 0
    assert [t.z for t in terms] == sorted((t.z for t in terms), reverse=True)
    by_term = {t.term: t for t in terms}
    assert by_term["today"].z < 0  # more common in the rest


def test_min_count_and_limit_are_honoured() -> None:
    top = ["rare word here", "common common", "common"]
    rest = ["common", "common thing"]
    terms = ct.distinguishing_terms(top, rest, min_count=3)
    assert [t.term for t in terms] == ["common"]
    assert len(ct.distinguishing_terms(top, rest, min_count=1, limit=2)) == 2
    assert {t.term for t in ct.distinguishing_terms(top, rest, min_count=1)} >= {"rare", "rare word"}


def test_wilson_bounds_match_known_values() -> None:
    assert ct.wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert ct.wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert ct.wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert ct.wilson(10, 10)[1] == pytest.approx(1.0)
    assert ct.wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        ct.wilson(11, 10)


def test_rank_orders_by_lower_bound_and_leaves_small_items_unranked() -> None:
    ranking = ct.rank([("a", 1000, 100), ("b", 12, 6), ("c", 100, 16), ("d", 5000, 600)], min_trials=100)
    # c has the highest rate (16 %) on 100 sends; d's 12 % on 5,000 sends has the higher lower bound
    assert [r.key for r in ranking.ranked] == ["d", "c", "a"]
    assert [r.key for r in ranking.not_enough_data] == ["b"]
    assert ranking.not_enough_data[0].rate == 0.5
    low, high = ranking.ranked[0].low, ranking.ranked[0].high
    assert low < 0.12 < high and high - low < 0.02


def test_copy_text_keeps_the_words_a_user_reads() -> None:
    content = {"title": "会员日", "body": "member day", "url": "https://x.example/a", "signature": "Shop"}
    assert ct.copy_text(content) == "会员日\nmember day"
    assert ct.copy_text({}) == ""


def test_knowledge_compares_the_top_third_of_the_ranked_copies_with_the_rest() -> None:
    copies = [
        ct.Copy("限时秒杀 free shipping", 1000, 120, 5),
        ct.Copy("限时秒杀 free shipping now", 1000, 110, 30),
        ct.Copy("weekly picks", 1000, 40, 10),
        ct.Copy("new arrivals", 1000, 30, 1),
        ct.Copy("member picks", 1000, 20, 2),
        ct.Copy("限时 lucky", 10, 9, 9),
    ]
    found = ct.knowledge(copies, min_sends=100)
    assert [r.key for r in found.clicks.ranked] == ["0", "1", "2", "3", "4"]
    assert [r.key for r in found.clicks.not_enough_data] == ["5"]
    assert found.top == [0, 1]
    terms = {t.term: t for t in found.terms}
    assert {"秒杀", "free shipping"} <= set(terms) and all(t.z > 0 for t in found.terms)
    assert "picks" not in terms
    by_conversion = ct.knowledge(copies, by="conversion", min_sends=100)
    assert by_conversion.top == [1, 2]
    assert ct.knowledge(copies[:1], min_sends=100).terms == []  # one ranked copy: nothing to compare
