"""Sealing provider secrets: what is sealed opens only under its key and for its context, and says why not."""

from __future__ import annotations

import pytest

from clarion import sealing


def test_a_sealed_value_opens_under_its_key_and_hides_the_value() -> None:
    sealer = sealing.Sealer("the-secret-key")
    sealed = sealer.seal({"password": "s3cret!", "n": 1}, context="provider:mail")
    assert sealed.startswith(f"sealed:v1:{sealer.key_id}:")
    assert "s3cret" not in sealed
    assert sealing.is_sealed(sealed) and sealing.key_id_of(sealed) == sealer.key_id
    assert sealing.Sealer("the-secret-key").open(sealed, context="provider:mail") == {"password": "s3cret!", "n": 1}
    assert sealer.seal("x", context="c") != sealer.seal("x", context="c")  # a fresh nonce each time


def test_another_key_is_recognised_by_its_id_and_refused_clearly() -> None:
    sealed = sealing.Sealer("old-key").seal("s3cret!", context="provider:mail")
    new = sealing.Sealer("new-key")
    assert new.key_id != sealing.Sealer("old-key").key_id and not new.opens(sealed)
    with pytest.raises(sealing.Unreadable, match="another secret key") as caught:
        new.open(sealed, context="provider:mail")
    assert caught.value.key_id == sealing.key_id_of(sealed)
    assert "clarion secrets rotate" in caught.value.message


@pytest.mark.parametrize("change", ["context", "tamper"])
def test_a_moved_or_altered_value_does_not_open(change: str) -> None:
    sealer = sealing.Sealer("k")
    sealed = sealer.seal("s3cret!", context="provider:a")
    context = "provider:a"
    if change == "context":
        context = "provider:b"
    else:
        sealed = sealed[:-3] + ("AAA" if sealed[-3:] != "AAA" else "BBB")
    with pytest.raises(sealing.Unreadable, match="altered or moved"):
        sealer.open(sealed, context=context)


def test_not_sealed_and_empty_key() -> None:
    assert not sealing.is_sealed("plain") and sealing.key_id_of("plain") is None
    with pytest.raises(sealing.Unreadable):
        sealing.Sealer("k").open("plain", context="c")
    with pytest.raises(ValueError):
        sealing.Sealer("")
