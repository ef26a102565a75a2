"""Secrets sealed at rest: what the database holds of a provider's credentials is ciphertext.

A copied database file must not hand over every vendor account, so each provider's secrets are stored sealed
with a key derived from ``CLARION_SECRET_KEY`` (HKDF-SHA256, one derived key per purpose) and encrypted with
AES-256-GCM. A sealed value reads ``sealed:v1:<key id>:<base64url(nonce + ciphertext)>``:

- ``v1`` names this format, so a later one can be read next to it;
- the key id is derived from the secret key by its own HKDF label (it says nothing about the key itself), so a
  value sealed under another key is recognised as such and refused with a clear message instead of a
  decryption error, and ``clarion secrets rotate`` can tell what is already sealed under the new key;
- the ``context`` (e.g. ``provider:sms-main``) is authenticated with the ciphertext: a sealed value copied into
  another provider's row does not open there.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "sealed:v1:"
_NONCE = 12


class Unreadable(Exception):
    """A sealed value that this key cannot open: sealed under another key, or altered."""

    def __init__(self, message: str, *, key_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key_id = key_id


def _derive(secret_key: str, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"clarion/" + label).derive(secret_key.encode())


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def key_id_of(value: str) -> str | None:
    """The id of the key ``value`` was sealed under, or None if it is not a sealed value."""
    if not is_sealed(value):
        return None
    return value[len(PREFIX) :].partition(":")[0] or None


class Sealer:
    """Seals and opens JSON values under one secret key."""

    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise ValueError("the secret key is empty")
        self._aead = AESGCM(_derive(secret_key, b"provider-secrets/v1"))
        self.key_id = _derive(secret_key, b"provider-secrets/key-id")[:6].hex()

    def seal(self, value: Any, *, context: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, orjson.dumps(value), context.encode())
        return f"{PREFIX}{self.key_id}:{base64.urlsafe_b64encode(nonce + sealed).decode().rstrip('=')}"

    def opens(self, value: str) -> bool:
        """Whether ``value`` was sealed under this key (by its key id; ``open`` still checks it whole)."""
        return key_id_of(value) == self.key_id

    def open(self, value: str, *, context: str) -> Any:
        """The value sealed in ``value``; ``Unreadable`` if it was sealed under another key or was altered."""
        key_id = key_id_of(value)
        if key_id is None:
            raise Unreadable("not a sealed value")
        if key_id != self.key_id:
            raise Unreadable(
                f"sealed under another secret key (key id {key_id}; the configured key's id is {self.key_id}); "
                "configure that key again, or re-seal with 'clarion secrets rotate --old-key-file FILE'",
                key_id=key_id,
            )
        encoded = value[len(PREFIX) + len(key_id) + 1 :]
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            return orjson.loads(self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode()))
        except (InvalidTag, ValueError) as exc:
            raise Unreadable(
                f"the sealed value does not open under its key for {context}: it was altered or moved", key_id=key_id
            ) from exc
