"""A/B variants: a deterministic, weighted choice per user that survives weight changes for most users."""

from __future__ import annotations

from collections import Counter

import pytest

from clarion.domain import model, variants

USERS = [f"user-{i}" for i in range(10_000)]


def template(*weights: tuple[str, int], key: str = "promo") -> model.Template:
    return model.Template(
        key,
        "Promo",
        model.Category.MARKETING,
        model.Priority.NORMAL,
        {model.Channel.SMS: {"text": "x"}},
        variants=tuple(model.Variant(name, weight) for name, weight in weights),
    )


def shares(t: model.Template) -> Counter[str | None]:
    return Counter(variants.choose(t, u) for u in USERS)


def test_no_variants_is_none() -> None:
    assert variants.choose(template(), "u1") is None


def test_the_same_user_always_gets_the_same_variant() -> None:
    t = template(("A", 50), ("B", 50))
    first = [variants.choose(t, u) for u in USERS[:500]]
    assert [variants.choose(t, u) for u in USERS[:500]] == first
    assert set(first) == {"A", "B"}
    # a new version of the same template (new wording) keeps everyone where they were
    edited = model.Template(t.key, t.name, t.category, t.priority, {}, version=7, variants=t.variants)
    assert [variants.choose(edited, u) for u in USERS[:500]] == first


def test_the_hash_is_stable_across_processes_and_releases() -> None:
    """Pinned values: changing the hash would silently move every user of every running test."""
    assert variants.point("promo", "u1") == 0x430FD8DB77B8E4AF
    t = template(("A", 50), ("B", 50))
    assert [variants.choose(t, f"u{i}") for i in range(1, 9)] == ["A", "B", "B", "B", "A", "B", "B", "B"]
    assert variants.pick((model.Variant("A", 1), model.Variant("B", 1)), 0) == "A"
    assert variants.pick((model.Variant("A", 1), model.Variant("B", 1)), 2**64 - 1) == "B"
    assert variants.pick((model.Variant("A", 1), model.Variant("B", 1)), 2**63 - 1) == "A"
    assert variants.pick((model.Variant("A", 1), model.Variant("B", 1)), 2**63) == "B"


@pytest.mark.parametrize("weights", [(50, 50), (90, 10), (1, 2, 7), (30, 0, 70)])
def test_shares_follow_the_weights(weights: tuple[int, ...]) -> None:
    names = "ABC"[: len(weights)]
    counts = shares(template(*zip(names, weights, strict=True)))
    total = sum(weights)
    for name, weight in zip(names, weights, strict=True):
        expected = len(USERS) * weight / total
        assert abs(counts[name] - expected) < 0.03 * len(USERS), (name, counts)
    if 0 in weights:
        assert counts[names[weights.index(0)]] == 0


def test_changing_weights_moves_only_the_users_whose_span_changed_hands() -> None:
    before = {u: variants.choose(template(("A", 50), ("B", 50)), u) for u in USERS}
    after = {u: variants.choose(template(("A", 60), ("B", 40)), u) for u in USERS}
    moved = [u for u in USERS if before[u] != after[u]]
    assert all(before[u] == "B" and after[u] == "A" for u in moved)
    assert 0.07 * len(USERS) < len(moved) < 0.13 * len(USERS)


def test_templates_split_users_independently() -> None:
    a = [variants.choose(template(("A", 1), ("B", 1), key="one"), u) for u in USERS]
    b = [variants.choose(template(("A", 1), ("B", 1), key="two"), u) for u in USERS]
    same = sum(x == y for x, y in zip(a, b, strict=True))
    assert 0.45 * len(USERS) < same < 0.55 * len(USERS)


def test_find() -> None:
    t = template(("A", 1), ("B", 1))
    assert variants.find(t, "B") == model.Variant("B", 1)
    assert variants.find(t, "Z") is None
    assert variants.find(t, None) is None
