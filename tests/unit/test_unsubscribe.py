"""Unsubscribe tokens: what a link carries comes back intact, and nothing forged or altered is accepted."""

from __future__ import annotations

import base64
import hashlib
import hmac

import orjson
import pytest

from clarion import unsubscribe
from clarion.domain import errors

SECRET = b"the-signing-secret"
MARKETING_EMAIL = unsubscribe.Request("u1", "marketing", "email", "li@example.com")


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def signed(payload: str, secret: bytes = SECRET) -> str:
    """A token signed the way Clarion signs, for payloads ``unsubscribe.token`` would never make."""
    signature = b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest()[:16])
    return f"{payload}.{signature}"


def refused(value: str, secret: bytes = SECRET) -> errors.InvalidInput:
    with pytest.raises(errors.InvalidInput) as caught:
        unsubscribe.verify(secret, value)
    assert caught.value.code == "invalid_token"
    return caught.value


@pytest.mark.parametrize(
    "request_",
    [
        MARKETING_EMAIL,
        unsubscribe.Request("u1", "marketing", "email", None),
        unsubscribe.Request("user:42@tenant", None, None, None),
        unsubscribe.Request("李雷", "notification", "sms", "+8613800138000"),
    ],
)
def test_a_token_gives_back_what_it_was_made_from(request_: unsubscribe.Request) -> None:
    value = unsubscribe.token(SECRET, request_)

    assert unsubscribe.verify(SECRET, value) == request_


def test_a_token_fits_in_a_url_path_segment() -> None:
    value = unsubscribe.token(SECRET, unsubscribe.Request("u/1?&#", "marketing", "email", "a+b@example.com"))

    assert set(value) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def test_the_same_request_always_makes_the_same_token() -> None:
    assert unsubscribe.token(SECRET, MARKETING_EMAIL) == unsubscribe.token(SECRET, MARKETING_EMAIL)


def test_another_users_payload_under_the_old_signature_is_refused() -> None:
    _, _, signature = unsubscribe.token(SECRET, MARKETING_EMAIL).partition(".")
    other = b64(orjson.dumps({"u": "u2", "c": "marketing", "ch": "email"}))

    refused(f"{other}.{signature}")


def test_a_changed_signature_is_refused() -> None:
    payload, _, signature = unsubscribe.token(SECRET, MARKETING_EMAIL).partition(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]

    refused(f"{payload}.{flipped}")
    refused(f"{payload}.{signature[:-1]}")
    refused(f"{payload}.{signature}A")


def test_a_token_made_with_another_secret_is_refused() -> None:
    value = unsubscribe.token(b"some-other-secret", MARKETING_EMAIL)

    refused(value)
    assert unsubscribe.verify(b"some-other-secret", value) == MARKETING_EMAIL


@pytest.mark.parametrize(
    "value",
    ["", ".", "no-dot", "payload.", ".signature", "a.b.c", "é.x", "💥.💥"],
)
def test_malformed_tokens_are_refused(value: str) -> None:
    refused(value)


@pytest.mark.parametrize(
    "payload",
    [b64(b"not json"), b64(orjson.dumps({"c": "marketing"})), b64(orjson.dumps(["u1"])), "!!!"],
)
def test_a_correctly_signed_payload_that_names_nobody_is_refused(payload: str) -> None:
    refused(signed(payload))


def test_links_give_the_page_url_and_the_one_click_headers() -> None:
    links = unsubscribe.links(
        "https://push.example.com/",
        SECRET,
        user_id="u1",
        category="marketing",
        channel="email",
        address="li@example.com",
    )

    url = links["url"]
    prefix = "https://push.example.com/u/"
    assert url.startswith(prefix)
    assert unsubscribe.verify(SECRET, url.removeprefix(prefix)) == MARKETING_EMAIL
    assert links["headers"] == {
        "List-Unsubscribe": f"<{url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def test_links_under_a_base_path_keep_it() -> None:
    links = unsubscribe.links("https://example.com/clarion", SECRET, user_id="u1", category=None, channel=None)

    assert links["url"].startswith("https://example.com/clarion/u/")
    assert unsubscribe.verify(SECRET, links["url"].rpartition("/")[2]) == unsubscribe.Request("u1", None, None, None)
