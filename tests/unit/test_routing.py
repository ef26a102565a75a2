"""Routing decisions: which route fits a delivery, which routes tie, and which provider is chosen."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from clarion.domain import model, routing

SMS, EMAIL = model.Channel.SMS, model.Channel.EMAIL


def account(name: str, *channels: model.Channel, enabled: bool = True, builtin: bool = False) -> routing.Account:
    return routing.Account(name, frozenset(channels or {SMS}), enabled, builtin)


def route(key: str, providers: dict[str, float], failover: tuple[str, ...] = (), **match: str) -> routing.Route:
    weighted = tuple(routing.Weighted(n, w) for n, w in providers.items())
    return routing.Route(key, SMS, match, weighted, failover)


ACCOUNTS = {a.name: a for a in (account("aliyun-a"), account("tencent-b"), account("twilio"))}
ACCOUNTS["file"] = account("file", SMS, EMAIL, builtin=True)


def test_calling_code_of_e164_numbers() -> None:
    assert routing.calling_code("+8613800138000") == "+86"
    assert routing.calling_code("+14155550100") == "+1"
    assert routing.calling_code("+85291234567") == "+852"
    assert routing.calling_code("+447911123456") == "+44"
    assert routing.calling_code("13800138000") is None
    assert routing.calling_code({"token": "x"}) is None
    assert routing.is_calling_code("+86")
    assert not routing.is_calling_code("+8613")
    assert not routing.is_calling_code("+999")


def test_signature_of_a_rendered_sms() -> None:
    assert routing.signature_of({"text": "【Acme】Your code is 1234"}) == "Acme"
    assert routing.signature_of({"text": "Your code is 1234", "signature": "【Acme】"}) == "Acme"
    assert routing.signature_of({"text": "Your code is 1234"}) is None
    assert routing.signature_of(None) is None


def test_the_most_specific_fitting_route_wins() -> None:
    rest = route("sms-rest", {"twilio": 1})
    china = route("sms-cn", {"aliyun-a": 1}, country_code="+86")
    codes = route("codes-cn", {"tencent-b": 1}, category="verification", country_code="+86")
    routes = [codes, rest, china]
    code_cn = routing.Facts(category="verification", country_code="+86")
    assert routing.route_for(routes, code_cn) is codes
    assert routing.route_for(routes, routing.Facts(category="marketing", country_code="+86")) is china
    assert routing.route_for(routes, routing.Facts(category="verification", country_code="+1")) is rest
    assert routing.route_for([china], routing.Facts(country_code="+1")) is None
    disabled = routing.Route("codes-cn", SMS, codes.match, codes.providers, enabled=False)
    assert routing.route_for([disabled, rest], code_cn) is rest


@pytest.mark.parametrize(
    ("a", "b", "ties"),
    [
        ({"category": "verification"}, {"category": "verification"}, True),
        ({"category": "verification"}, {"country_code": "+86"}, True),  # a +86 verification SMS matches both
        ({"category": "verification"}, {"category": "marketing"}, False),
        (
            {"category": "verification", "country_code": "+86"},
            {"category": "verification", "country_code": "+1"},
            False,
        ),
        ({"category": "verification"}, {"category": "verification", "country_code": "+86"}, False),  # more specific
        ({}, {}, True),
    ],
)
def test_ties(a: dict[str, str], b: dict[str, str], ties: bool) -> None:
    first, second = route("a", {"twilio": 1}, **a), route("b", {"twilio": 1}, **b)
    assert (routing.tie(second, [first]) is first) is ties
    assert (routing.tie(first, [second]) is second) is ties


def test_no_tie_with_itself_a_disabled_route_or_another_channel() -> None:
    mine = route("a", {"twilio": 1}, category="verification")
    disabled = routing.Route("b", SMS, mine.match, mine.providers, enabled=False)
    email = routing.Route("c", EMAIL, mine.match, mine.providers)
    assert routing.tie(mine, [mine, disabled, email]) is None
    assert routing.tie(disabled, [mine]) is None


def test_weights_split_the_traffic() -> None:
    rand = random.Random(1)
    chosen = Counter(
        routing.choose(SMS, route("r", {"aliyun-a": 70, "tencent-b": 30}), ACCOUNTS, rand=rand.random).provider
        for _ in range(10_000)
    )
    assert set(chosen) == {"aliyun-a", "tencent-b"}
    assert 6_700 < chosen["aliyun-a"] < 7_300


def test_weight_zero_gets_nothing_while_another_can_send() -> None:
    rand = random.Random(2)
    r = route("r", {"aliyun-a": 0, "tencent-b": 1})
    assert {routing.choose(SMS, r, ACCOUNTS, rand=rand.random).provider for _ in range(200)} == {"tencent-b"}
    only_zero = route("r", {"aliyun-a": 0, "tencent-b": 0})
    assert routing.choose(SMS, only_zero, ACCOUNTS, rand=rand.random).provider == "aliyun-a"  # all 0: in order


def test_disabled_deleted_and_other_channel_providers_are_skipped() -> None:
    accounts = {**ACCOUNTS, "aliyun-a": account("aliyun-a", enabled=False), "mail": account("mail", EMAIL)}
    r = route("r", {"aliyun-a": 50, "gone": 50, "mail": 50, "tencent-b": 1})
    choice = routing.choose(SMS, r, accounts, rand=random.Random(3).random)
    assert choice.provider == "tencent-b"
    assert choice.skipped == {"aliyun-a": "disabled", "gone": "deleted", "mail": "other_channel"}
    assert choice.detail() == {"provider": "tencent-b", "route": "r", "skipped": dict(choice.skipped)}


def test_failover_in_order_when_none_listed_can_send() -> None:
    accounts = {**ACCOUNTS, "aliyun-a": account("aliyun-a", enabled=False)}
    r = route("r", {"aliyun-a": 1, "gone": 1}, failover=("missing", "twilio", "tencent-b"))
    choice = routing.choose(SMS, r, accounts, rand=random.Random(4).random)
    assert (choice.provider, choice.failover) == ("twilio", True)
    assert choice.skipped == {"aliyun-a": "disabled", "gone": "deleted", "missing": "deleted"}
    retried = routing.choose(SMS, r, accounts, tried=frozenset({"twilio"}), rand=random.Random(4).random)
    assert retried.provider == "tencent-b"


def test_nothing_usable_waits_with_the_reason() -> None:
    accounts = {**ACCOUNTS, "twilio": account("twilio", enabled=False)}
    choice = routing.choose(SMS, route("r", {"gone": 1}, failover=("twilio",)), accounts, rand=random.random)
    assert choice.provider is None
    assert choice.reason == "no provider of route 'r' can send (gone deleted, twilio disabled)"


def test_a_retry_prefers_a_provider_not_tried_yet() -> None:
    rand = random.Random(5)
    r = route("r", {"aliyun-a": 99, "tencent-b": 1, "twilio": 0})
    tried = frozenset({"aliyun-a"})
    assert {routing.choose(SMS, r, ACCOUNTS, tried=tried, rand=rand.random).provider for _ in range(200)} == {
        "tencent-b"
    }
    everything = frozenset({"aliyun-a", "tencent-b", "twilio"})  # all tried: by weight again
    chosen = Counter(routing.choose(SMS, r, ACCOUNTS, tried=everything, rand=rand.random).provider for _ in range(500))
    assert chosen["aliyun-a"] > 450


def test_without_a_route_enabled_accounts_share_equally() -> None:
    rand = random.Random(6)
    accounts = {**ACCOUNTS, "twilio": account("twilio", enabled=False)}
    chosen = Counter(routing.choose(SMS, None, accounts, rand=rand.random).provider for _ in range(4_000))
    assert set(chosen) == {"aliyun-a", "tencent-b"}  # not the first by name only, and not the disabled one
    assert 1_800 < chosen["aliyun-a"] < 2_200


def test_without_an_account_the_builtin_then_no_provider() -> None:
    builtin = {"file": ACCOUNTS["file"], "off": account("off", EMAIL, enabled=False)}
    assert routing.choose(EMAIL, None, builtin, rand=random.random).provider == "file"
    nothing = routing.choose(model.Channel.WECOM, None, builtin, rand=random.random)
    assert (nothing.provider, nothing.reason) == (routing.NO_PROVIDER, "no provider is configured for this channel")


def test_a_choice_counts_the_providers_a_retry_could_still_try_at_once() -> None:
    both = route("r", {"aliyun-a": 1, "tencent-b": 1})
    rand = random.Random(1).random
    first = routing.choose(model.Channel.SMS, both, ACCOUNTS, rand=rand)
    assert first.untried == 1
    second = routing.choose(model.Channel.SMS, both, ACCOUNTS, tried=frozenset({first.provider or ""}), rand=rand)
    assert second.provider != first.provider and second.untried == 0
    alone = routing.choose(model.Channel.SMS, route("r", {"aliyun-a": 1}), ACCOUNTS, rand=rand)
    assert alone.untried == 0
