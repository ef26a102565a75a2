"""Time-ordered, unguessable identifiers: 48-bit milliseconds + 80 random bits, as 32 lowercase hex digits
(fixed width, so ids sort as their numbers do; formatting is one C call, which matters at three ids a send).

Ordered by creation so that indexes stay append-mostly and ``ORDER BY id`` means "oldest first". Within one
process ids are strictly increasing even inside one millisecond (the random part of the previous id is
incremented, as monotonic ULIDs do), so paging on the id agrees with creation order."""

from __future__ import annotations

import os
import threading
import time

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
    return f"{value:032x}"
