"""Consent and preferences: the user's own opt-outs, and marketing consent where the operator requires opt-in.

Verification codes ignore preferences (the user just asked for the code). Transactional messages ignore a
category opt-out (an order update is not something one unsubscribes from) but honour channel choices: a user
who turned SMS off gets the update in the inbox or by e-mail instead.
"""

from __future__ import annotations

from typing import Any

from clarion.domain import model
from clarion.domain.policy import config
from clarion.domain.policy.decision import ALLOW, Candidate, Decision, Drop

POLICY = "consent"


def decide(candidate: Candidate, settings: config.PolicySettings) -> Decision:
    category, channel = candidate.category, candidate.channel
    if category is model.Category.VERIFICATION:
        return ALLOW
    prefs = candidate.preferences
    if channel in prefs.channels_off:
        return Drop(POLICY, f"opted_out: the user turned {channel.value} off", _scope(candidate, preference="channel"))
    if category is not model.Category.TRANSACTIONAL and category in prefs.categories_off:
        return Drop(
            POLICY, f"opted_out: the user turned {category.value} off", _scope(candidate, preference="category")
        )
    if (category, channel) in prefs.pairs_off:
        return Drop(
            POLICY,
            f"opted_out: the user turned {category.value} on {channel.value} off",
            _scope(candidate, preference="category_channel"),
        )
    if category is model.Category.MARKETING:
        consent = prefs.marketing_consent
        if consent is False or (settings.marketing_consent == "opt_in" and consent is not True):
            return Drop(
                POLICY,
                "no_consent: marketing needs the user's consent" if consent is None else "no_consent: refused",
                _scope(candidate, mode=settings.marketing_consent, marketing_consent=consent),
            )
    return ALLOW


def _scope(candidate: Candidate, **more: Any) -> dict[str, Any]:
    """What a drop's detail names: the category and channel (built only for a drop: most deliveries pass)."""
    return {"category": candidate.category.value, "channel": candidate.channel.value, **more}
