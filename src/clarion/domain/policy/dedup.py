"""Dedup: the same content (or the same caller-given business key) to the same user on the same channel within
a window (300 s by default; per template ``dedup_seconds``, 0 turns it off) goes out once. The key is a hash,
so the counters never hold message text."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from clarion.domain.policy import config
from clarion.domain.policy.decision import Candidate, Drop

POLICY = "dedup"


def window(candidate: Candidate, settings: config.PolicySettings) -> int:
    override = candidate.overrides.dedup_seconds
    return settings.dedup_seconds if override is None else override


def key(candidate: Candidate, content: dict[str, Any] | None) -> str:
    """What two deliveries must share to be duplicates: user, channel, and the business key or the content."""
    basis = (
        b"key\0" + candidate.dedup_key.encode()
        if candidate.dedup_key
        else b"content\0" + orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    )
    digest = hashlib.blake2b(basis, digest_size=16)
    digest.update(f"\0{candidate.user.user_id}\0{candidate.channel.value}".encode())
    return f"dedup:{digest.hexdigest()}"


def duplicate(candidate: Candidate, seconds: int) -> Drop:
    basis = "business key" if candidate.dedup_key else "content"
    detail: dict[str, Any] = {"window_seconds": seconds, "basis": basis}
    if candidate.dedup_key:
        detail["dedup_key"] = candidate.dedup_key
    return Drop(
        POLICY, f"duplicate: the same {basis} reached this user on {candidate.channel.value} within {seconds} s", detail
    )
