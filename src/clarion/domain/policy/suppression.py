"""Unsubscribes and blacklists: by user or by address (a phone or e-mail even without a user), scoped to a
channel and/or category or to everything. A push delivery reaching several devices is suppressed only when
every one of its tokens is."""

from __future__ import annotations

from collections.abc import Sequence

from clarion.domain.policy import config
from clarion.domain.policy.decision import ALLOW, Candidate, Decision, Drop, addresses_of

POLICY = "suppression"


def decide(candidate: Candidate, suppressions: Sequence[config.Suppression]) -> Decision:
    if not suppressions:
        return ALLOW
    user_id = candidate.user.user_id
    addresses = [config.normalize_address(a) for a in addresses_of(candidate.address)]
    by_address: dict[str, config.Suppression] = {}
    for s in suppressions:
        if s.user_id is not None and s.applies(user_id, addresses, candidate.channel, candidate.category):
            return _drop(s)
        if (
            s.user_id is None
            and s.address is not None
            and s.applies(user_id, addresses, candidate.channel, candidate.category)
        ):
            by_address.setdefault(s.address, s)
    if addresses and all(a in by_address for a in addresses):
        return _drop(by_address[addresses[0]])
    return ALLOW


def _drop(s: config.Suppression) -> Drop:
    scope = " ".join(p.value for p in (s.category, s.channel) if p is not None) or "everything"
    who = f"user {s.user_id}" if s.user_id else f"address {s.address}"
    return Drop(
        POLICY,
        f"unsubscribed: {who} is suppressed for {scope} ({s.source})",
        {"suppression_id": s.id, "source": s.source, "reason": s.reason, "scope": scope},
    )
