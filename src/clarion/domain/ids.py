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
_RANDOM_BYTES = _RANDOM_BITS // 8
_POOL_IDS = 512  # random bytes are read from the OS for this many ids at once: one system call, not one each
_lock = threading.Lock()
_last = 0
_pool = b""
_offset = 0


def _forget_pool() -> None:
    """A forked child must not hand out the random bytes its parent will also use."""
    global _pool, _offset
    _pool, _offset = b"", 0


os.register_at_fork(after_in_child=_forget_pool)


def new_id(now: float | None = None) -> str:
    global _last, _pool, _offset
    millis = int((time.time() if now is None else now) * 1000)
    with _lock:
        if _offset >= len(_pool):
            _pool, _offset = os.urandom(_RANDOM_BYTES * _POOL_IDS), 0
        random = int.from_bytes(_pool[_offset : _offset + _RANDOM_BYTES], "big")
        _offset += _RANDOM_BYTES
        value = (millis << _RANDOM_BITS) | random
        if value <= _last and (_last >> _RANDOM_BITS) >= millis:
            value = _last + 1
        _last = value
    return f"{value:032x}"
