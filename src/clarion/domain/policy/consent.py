"""Consent and preferences: the user's own opt-outs, and marketing consent where the operator requires opt-in.

Verification codes ignore preferences (the user just asked for the code). Transactional messages ignore a
category opt-out (an order update is not something one unsubscribes from) but honour channel choices: a user
who turned SMS off gets the update in the inbox or by e-mail instead.
"""

from __future__ import annotations

from clarion.domain import model
from clarion.domain.policy import config
from clarion.domain.policy.decision import ALLOW, Candidate, Decision, Drop

POLICY = "consent"


def decide(candidate: Candidate, settings: config.PolicySettings) -> Decision:
    category, channel = candidate.category, candidate.channel
    if category is model.Category.VERIFICATION:
        return ALLOW
    prefs = candidate.preferences
    scope = {"category": category.value, "channel": channel.value}
    if channel in prefs.channels_off:
        return Drop(POLICY, f"opted_out: the user turned {channel.value} off", {**scope, "preference": "channel"})
    if category is not model.Category.TRANSACTIONAL and category in prefs.categories_off:
        return Drop(POLICY, f"opted_out: the user turned {category.value} off", {**scope, "preference": "category"})
    if (category, channel) in prefs.pairs_off:
        return Drop(
            POLICY,
            f"opted_out: the user turned {category.value} on {channel.value} off",
            {**scope, "preference": "category_channel"},
        )
    if category is model.Category.MARKETING:
        consent = prefs.marketing_consent
        if consent is False or (settings.marketing_consent == "opt_in" and consent is not True):
            return Drop(
                POLICY,
                "no_consent: marketing needs the user's consent" if consent is None else "no_consent: refused",
                {**scope, "mode": settings.marketing_consent, "marketing_consent": consent},
            )
    return ALLOW
