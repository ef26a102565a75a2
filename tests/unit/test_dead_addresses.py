"""Which addresses leave a user when a vendor declares some dead (``store.addresses.without``)."""

from __future__ import annotations

from clarion.store import addresses

SUB = {"endpoint": "https://push.example/e/1", "keys": {"p256dh": "k", "auth": "a"}}


def test_only_the_dead_tokens_leave_a_push_list() -> None:
    kept, removed = addresses.without(["a", {"platform": "apns", "token": "b"}, "c"], ["b", "c"])
    assert (kept, removed) == (["a"], [{"platform": "apns", "token": "b"}, "c"])


def test_a_web_push_subscription_is_matched_by_its_endpoint() -> None:
    kept, removed = addresses.without([SUB, "t1"], [{"endpoint": "https://push.example/e/1"}])
    assert (kept, removed) == (["t1"], [SUB])


def test_a_list_emptied_and_a_single_address_go_entirely() -> None:
    assert addresses.without(["a"], ["a"]) == (None, ["a"])
    assert addresses.without("openid-1", ["openid-1"]) == (None, ["openid-1"])


def test_an_address_changed_meanwhile_is_kept() -> None:
    assert addresses.without("openid-2", ["openid-1"]) == ("openid-2", [])
    assert addresses.without(["x"], ["y"]) == (["x"], [])
    assert addresses.without(None, ["y"]) == (None, [])


def test_a_suppression_matches_a_typed_push_item_by_its_token() -> None:
    from clarion.domain.policy import decision

    typed = [{"platform": "apns", "token": "ab" * 32}, {"platform": "webpush", "token": SUB}, SUB, "bare"]
    assert decision.addresses_of(typed) == ["ab" * 32, SUB["endpoint"], SUB["endpoint"], "bare"]
