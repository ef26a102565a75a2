"""``vendor.TokenCache.call_with_token`` and ``vendor.token_key``: the one way vendor kinds fetch, cache and
refresh an access token (the in-memory cache; the Redis one is covered by the kinds' integration tests)."""

from __future__ import annotations

import pytest

from clarion.channels import vendor


class Vendor:
    """A vendor that issues numbered tokens and refuses every token in ``refused`` (or every one at all)."""

    def __init__(self, *, refuse_all: bool = False) -> None:
        self.issued: list[str] = []
        self.calls: list[str] = []
        self.refused: set[str] = set()
        self.refuse_all = refuse_all

    async def fetch(self) -> tuple[str, float]:
        token = f"token-{len(self.issued) + 1}"
        self.issued.append(token)
        return token, 7200.0

    async def call(self, token: str) -> str:
        self.calls.append(token)
        return "expired" if self.refuse_all or token in self.refused else f"sent with {token}"


def expired(answer: str) -> bool:
    return answer == "expired"


async def test_a_call_reuses_the_cached_token() -> None:
    tokens, vendor_ = vendor.TokenCache(), Vendor()
    answers = [await tokens.call_with_token("k", vendor_.fetch, vendor_.call, expired=expired) for _ in range(3)]
    assert answers == ["sent with token-1"] * 3
    assert vendor_.issued == ["token-1"] and tokens.fetches == 1


async def test_an_expired_token_is_refetched_once_and_the_call_made_again() -> None:
    tokens, vendor_ = vendor.TokenCache(), Vendor()
    await tokens.call_with_token("k", vendor_.fetch, vendor_.call, expired=expired)
    vendor_.refused.add("token-1")
    answer = await tokens.call_with_token("k", vendor_.fetch, vendor_.call, expired=expired)
    assert answer == "sent with token-2"
    assert vendor_.calls == ["token-1", "token-1", "token-2"]
    # the fresh token is cached: the next call does not fetch again
    await tokens.call_with_token("k", vendor_.fetch, vendor_.call, expired=expired)
    assert vendor_.issued == ["token-1", "token-2"] and tokens.fetches == 2


async def test_a_call_that_keeps_reporting_expiry_stops_after_one_refresh() -> None:
    tokens, vendor_ = vendor.TokenCache(), Vendor(refuse_all=True)
    answer = await tokens.call_with_token("k", vendor_.fetch, vendor_.call, expired=expired)
    assert answer == "expired"  # the second refusal goes back to the kind, which turns it into its error
    assert vendor_.calls == ["token-1", "token-2"]
    assert vendor_.issued == ["token-1", "token-2"]


async def test_an_error_raised_by_the_call_is_not_a_refresh() -> None:
    tokens, vendor_ = vendor.TokenCache(), Vendor()

    async def failing(token: str) -> str:
        vendor_.calls.append(token)
        raise TimeoutError("the vendor did not answer")

    with pytest.raises(TimeoutError):
        await tokens.call_with_token("k", vendor_.fetch, failing, expired=expired)
    assert vendor_.calls == ["token-1"] and vendor_.issued == ["token-1"]


def test_the_token_key_holds_the_public_ids_and_a_digest_of_the_secret() -> None:
    key = vendor.token_key("wecom", "ww0123", 1000002, secret="s3cret")
    kind, corp, agent, digest = key.split(":")
    assert (kind, corp, agent) == ("wecom", "ww0123", "1000002")
    assert len(digest) == 16 and "s3cret" not in key
    # a changed secret is another key; the same secret the same key (shared by the account's processes)
    assert vendor.token_key("wecom", "ww0123", 1000002, secret="rotated") != key
    assert vendor.token_key("wecom", "ww0123", 1000002, secret="s3cret") == key


def test_wechat_and_wecom_keys_keep_the_shape_they_had() -> None:
    # sha256("secret")[:16]: a key that changed on upgrade would make WeChat revoke the tokens processes share
    assert (
        vendor.token_key("wechat", "wx0123456789abcdef", secret="secret")
        == "wechat:wx0123456789abcdef:2bb80d537b1da3e3"
    )
