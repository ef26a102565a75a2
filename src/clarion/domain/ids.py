"""Time-ordered, unguessable identifiers (26 chars, Crockford base32: 48-bit milliseconds + 80 random bits).

Ordered by creation so that indexes stay append-mostly and ``ORDER BY id`` means "oldest first"."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(now: float | None = None) -> str:
    millis = int((time.time() if now is None else now) * 1000)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))
