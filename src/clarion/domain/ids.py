"""Time-ordered, unguessable identifiers (26 chars, Crockford base32: 48-bit milliseconds + 80 random bits).

Ordered by creation so that indexes stay append-mostly and ``ORDER BY id`` means "oldest first". Within one
process ids are strictly increasing even inside one millisecond (the random part of the previous id is
incremented, as monotonic ULIDs do), so paging on the id agrees with creation order."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_lock = threading.Lock()
_last = 0


def new_id(now: float | None = None) -> str:
    global _last
    millis = int((time.time() if now is None else now) * 1000)
    value = (millis << _RANDOM_BITS) | int.from_bytes(os.urandom(10), "big")
    with _lock:
        if value <= _last and (_last >> _RANDOM_BITS) >= millis:
            value = _last + 1
        _last = value
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))
