"""Which facts a feedback rule matches, and what its actions add up to for a user: pure, no database."""

from __future__ import annotations

import pytest

from clarion import unsubscribe
from clarion.pipeline import feedback_rules as fr

CLICK = fr.Fact("click", "u1", "m1", template="spring", campaign="sale", link="https://shop.example.com/vip?x=1")


@pytest.mark.parametrize(
    ("on", "match", "fact", "expected"),
    [
        ("click", {}, CLICK, True),
        ("convert", {}, CLICK, False),
        ("click", {"template": "spring"}, CLICK, True),
        ("click", {"template": "autumn"}, CLICK, False),
        ("click", {"campaign": "sale"}, CLICK, True),
        ("click", {"campaign": "sale"}, fr.Fact("click", "u1", "m1", template="spring"), False),
        ("click", {"link": "https://shop.example.com/vip"}, CLICK, True),
        ("click", {"link": "https://shop.example.com/new"}, CLICK, False),
        ("convert", {"event": "coupon.claimed"}, fr.Fact("convert", "u1", event="coupon.claimed"), True),
        ("convert", {"event": "coupon.claimed"}, fr.Fact("convert", "u1", event="order.paid"), False),
        ("convert", {"template": "spring"}, fr.Fact("convert", "u1", event="coupon.claimed"), False),
        ("unsubscribe", {}, fr.Fact("unsubscribe", "u1"), True),
    ],
)
def test_a_rule_matches_the_facts_of_its_trigger_on_every_field_it_names(
    on: str, match: dict[str, str], fact: fr.Fact, expected: bool
) -> None:
    rule = fr.Rule.of("r", {"on": on, "match": match, "actions": [{"add_tag": "x"}]})
    assert rule.matches(fact) is expected


def test_actions_add_up_in_order_the_last_word_on_a_tag_or_attribute_wins() -> None:
    first = fr.Rule.of("a", {"on": "click", "actions": [{"add_tag": "x"}, {"set": {"n": 1, "k": "v"}}]})
    second = fr.Rule.of("b", {"on": "click", "actions": [{"remove_tag": "x"}, {"add_tag": "y"}, {"set": {"n": 2}}]})
    other = fr.Rule.of("c", {"on": "click", "actions": [{"set": {"k": None}}]})
    changes = fr._changes([(first, CLICK), (second, CLICK), (other, fr.Fact("click", "u2"))])
    assert changes["u1"].tags == {"x": False, "y": True}
    assert changes["u1"].attributes == {"n": 2, "k": "v"}
    assert changes["u2"].attributes == {"k": None} and changes["u2"].tags == {}


def test_a_token_carries_its_delivery_and_one_made_without_stays_valid() -> None:
    secret = b"k"
    with_delivery = unsubscribe.Request("u1", "marketing", "email", None, "d1")
    assert unsubscribe.verify(secret, unsubscribe.token(secret, with_delivery)) == with_delivery
    old = unsubscribe.token(secret, unsubscribe.Request("u1", "marketing", "email", "a@b.io"))
    assert unsubscribe.verify(secret, old).delivery_id is None
    link = unsubscribe.links("https://c.example", secret, user_id="u1", category=None, channel=None, delivery_id="d9")
    assert unsubscribe.verify(secret, link["url"].rsplit("/", 1)[1]).delivery_id == "d9"
