"""A/B variants: which variant of a template's content a user gets.

The choice is deterministic and needs no stored assignment: a stable hash of (template key, user id) places the
user at a point of ``[0, 1)``, and the variants share that interval in their declared order, each a span
proportional to its weight. The same user therefore gets the same variant on every send, from every process,
for as long as the weights stay as they are; the template's version is not hashed, so editing the wording keeps
everyone where they were, and different templates split users independently.

Changing the weights moves only the users whose point falls in a span that changed hands: going from 50/50 to
60/40 moves 10% of the users (from B to A) and keeps the other 90% on the variant they had. A variant with
weight 0 gets nobody (a way to stop it without forgetting it). Reordering or renaming variants reshuffles users.
"""

from __future__ import annotations

import hashlib

from clarion.domain import model

_SPACE = 1 << 64


def point(template_key: str, user_id: str) -> int:
    """The user's place in ``[0, 2**64)`` for this template: the first 8 bytes of SHA-256, stable everywhere."""
    digest = hashlib.sha256(f"{template_key}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def pick(variants: tuple[model.Variant, ...], at: int) -> str | None:
    """The variant whose span holds ``at`` (``0 <= at < 2**64``); None when there are none or no weight."""
    total = sum(max(v.weight, 0) for v in variants)
    if total <= 0:
        return None
    scaled = at * total // _SPACE  # exact integer arithmetic: the same answer on every platform
    upper = 0
    for variant in variants:
        upper += max(variant.weight, 0)
        if scaled < upper:
            return variant.name
    return None  # unreachable: scaled < total


def choose(template: model.Template, user_id: str) -> str | None:
    """The variant ``user_id`` gets of ``template``, or None when the template has no variants."""
    if not template.variants:
        return None
    return pick(template.variants, point(template.key, user_id))


def find(template: model.Template, name: str | None) -> model.Variant | None:
    """The variant called ``name`` (None for None or an unknown name)."""
    return next((v for v in template.variants if v.name == name), None) if name is not None else None
