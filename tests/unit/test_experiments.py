"""A/B experiments: an always-valid rule that keeps its error rate when looked at after every batch."""

from __future__ import annotations

import numpy as np
import pytest

from clarion.analytics import experiments
from clarion.domain import errors

RUNS = 500
BATCH = 200
ALPHA = 0.05
RULE = experiments.Rule("click_rate", min_sample=BATCH, alpha=ALPHA)


def monitored(rate_a: float, rate_b: float, per_arm: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RUNS experiments looked at after every BATCH exposures per arm: exposures per look, and each arm's
    cumulative successes, shaped (runs, looks)."""
    rng = np.random.default_rng(seed)
    looks = per_arm // BATCH
    s_a = np.cumsum(rng.binomial(BATCH, rate_a, size=(RUNS, looks)), axis=1)
    s_b = np.cumsum(rng.binomial(BATCH, rate_b, size=(RUNS, looks)), axis=1)
    n = np.broadcast_to(BATCH * np.arange(1, looks + 1), (RUNS, looks))
    return n, s_a, s_b


def first_winners(n: np.ndarray, s_a: np.ndarray, s_b: np.ndarray) -> list[str | None]:
    """The winner each experiment stops at (None: never decided), found with the vectorised core, and checked
    against decide() itself at the deciding look and at the look before it."""
    p = experiments.msprt_p_values(n, s_a, n, s_b, RULE.mixing_variance())
    decided = p <= ALPHA
    winners: list[str | None] = []
    for run in range(RUNS):
        looks = np.flatnonzero(decided[run])
        if looks.size == 0:
            last = n.shape[1] - 1
            verdict = decide_at(n, s_a, s_b, run, last)
            assert verdict.state == "running"
            winners.append(None)
            continue
        look = int(looks[0])
        verdict = decide_at(n, s_a, s_b, run, look)
        assert verdict.state == "winner"
        if look > 0:
            assert decide_at(n, s_a, s_b, run, look - 1).state == "running"
        winners.append(verdict.winner)
    return winners


def decide_at(n: np.ndarray, s_a: np.ndarray, s_b: np.ndarray, run: int, look: int) -> experiments.Verdict:
    arms = [
        experiments.Arm("A", int(n[run, look]), int(s_a[run, look])),
        experiments.Arm("B", int(n[run, look]), int(s_b[run, look])),
    ]
    return experiments.decide(arms, RULE)


def test_aa_experiments_peeked_after_every_batch_rarely_name_a_winner() -> None:
    winners = first_winners(*monitored(0.05, 0.05, 20_000, seed=20240611))
    false_rate = sum(w is not None for w in winners) / RUNS
    assert false_rate <= ALPHA


def test_a_fixed_horizon_z_test_peeked_as_often_would_not_hold_its_error_rate() -> None:
    """The same data read with a naive z-test after every batch: the reason the rule is sequential."""
    n, s_a, s_b = monitored(0.05, 0.05, 20_000, seed=20240611)
    pooled = (s_a + s_b) / (2 * n)
    z = (s_b - s_a) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    assert (np.abs(z) >= 1.96).any(axis=1).mean() > 2 * ALPHA


def test_a_twenty_percent_lift_is_found_and_the_worse_arm_rarely_wins() -> None:
    winners = first_winners(*monitored(0.05, 0.06, 40_000, seed=7))
    assert winners.count("B") / RUNS >= 0.80
    assert winners.count("A") / RUNS <= ALPHA


def test_three_arms_the_best_must_beat_each_other_arm() -> None:
    clear = [
        experiments.Arm("control", 20_000, 1_000),
        experiments.Arm("bold", 20_000, 1_300),
        experiments.Arm("short", 20_000, 1_020),
    ]
    verdict = experiments.decide(clear, RULE)
    assert verdict.state == "winner"
    assert verdict.winner == "bold"
    by_name = {a.name: a for a in verdict.arms}
    assert by_name["bold"].p_value is None
    assert by_name["control"].p_value is not None and by_name["control"].p_value <= ALPHA
    assert "Bonferroni over 2 comparisons" in verdict.stated

    # bold beats control but not a close runner-up: no winner yet, and the runner-up is the one named
    close = [*clear[:2], experiments.Arm("short", 20_000, 1_290)]
    verdict = experiments.decide(close, RULE)
    assert verdict.state == "running"
    assert verdict.winner is None
    assert "not yet ahead of short" in verdict.stated


def test_bonferroni_makes_more_arms_harder_to_decide() -> None:
    pair = [experiments.Arm("A", 10_000, 500), experiments.Arm("B", 10_000, 590)]
    two = experiments.decide(pair, RULE).arms[0].p_value
    five = experiments.decide([*pair, *(experiments.Arm(f"X{i}", 10_000, 500) for i in range(3))], RULE)
    assert two is not None and five.arms[0].p_value == pytest.approx(min(1.0, 4 * two))


def test_collecting_until_every_arm_has_min_sample() -> None:
    arms = [experiments.Arm("A", 5_000, 50), experiments.Arm("B", 199, 150)]
    verdict = experiments.decide(arms, RULE)
    assert verdict.state == "collecting"
    assert verdict.winner is None
    assert "B has 199" in verdict.stated
    assert "A has" not in verdict.stated
    assert experiments.decide([arms[0], experiments.Arm("B", 200, 150)], RULE).state == "winner"


def test_stated_sentence_names_the_winner_metric_and_error_rate() -> None:
    rule = experiments.Rule("conversion_rate", alpha=0.01)
    verdict = experiments.decide([experiments.Arm("A", 8_000, 400), experiments.Arm("B", 8_000, 600)], rule)
    assert verdict.state == "winner"
    assert verdict.stated.startswith("B wins: its conversion rate of 7.50%")
    assert "at most 1%" in verdict.stated


def test_deadline_without_a_winner_says_so_and_best_so_far_is_not_tested() -> None:
    arms = [experiments.Arm("A", 1_000, 50), experiments.Arm("B", 1_000, 55)]
    verdict = experiments.decide(arms, RULE, final=True)
    assert verdict.state == "no_winner_yet"
    assert "not a tested result" in verdict.stated
    assert experiments.best_so_far(arms) == "B"


def test_best_so_far_ties_go_to_the_first_arm() -> None:
    arms = [experiments.Arm("A", 100, 10), experiments.Arm("B", 200, 20), experiments.Arm("C", 50, 4)]
    assert experiments.best_so_far(arms) == "A"
    assert experiments.best_so_far([experiments.Arm("A", 0, 0), experiments.Arm("B", 0, 0)]) == "A"


def test_intervals_cover_the_rate_and_narrow_with_exposures() -> None:
    small = experiments.decide([experiments.Arm("A", 400, 20), experiments.Arm("B", 400, 24)], RULE).arms[0]
    large = experiments.decide([experiments.Arm("A", 40_000, 2_000), experiments.Arm("B", 400, 24)], RULE).arms[0]
    assert small.low < 0.05 < small.high
    assert large.low < 0.05 < large.high
    assert large.high - large.low < (small.high - small.low) / 5


def test_confidence_sequences_cover_the_true_rate_at_every_look() -> None:
    rng = np.random.default_rng(11)
    s = np.cumsum(rng.binomial(BATCH, 0.05, size=(RUNS, 100)), axis=1)
    n = BATCH * np.arange(1, 101)
    low, high = experiments.confidence_sequences(n, s, RULE.mixing_variance(), ALPHA)
    ever_missed = ((low > 0.05) | (high < 0.05)).any(axis=1).mean()
    assert ever_missed <= ALPHA


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"metric": "open_rate"}, "metric"),
        ({}, "metric"),
        ({"metric": "click_rate", "min_sample": 0}, "min_sample"),
        ({"metric": "click_rate", "min_sample": "200"}, "min_sample"),
        ({"metric": "click_rate", "alpha": 0.9}, "alpha"),
        ({"metric": "click_rate", "alpha": True}, "alpha"),
        ({"metric": "click_rate", "mixing": -1}, "mixing"),
        ({"metric": "click_rate", "horizon": 10}, "horizon"),
    ],
)
def test_rule_validation_names_the_field(document: dict[str, object], field: str) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        experiments.Rule.from_json(document)
    assert caught.value.details["field"] == field
    assert str(caught.value).startswith(f"{field}:")


def test_rule_json_round_trip() -> None:
    rule = experiments.Rule.from_json({"metric": "conversion_rate", "min_sample": 500, "alpha": 0.01, "mixing": 1})
    assert rule == experiments.Rule("conversion_rate", 500, 0.01, 1.0)
    assert experiments.Rule.from_json(rule.to_json()) == rule
    assert experiments.Rule.from_json({"metric": "click_rate"}).to_json() == {
        "metric": "click_rate",
        "min_sample": 200,
        "alpha": 0.05,
        "mixing": None,
    }


def test_bad_arms_are_refused() -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        experiments.Arm("A", 10, 11)
    assert caught.value.details["field"] == "successes"
    with pytest.raises(errors.InvalidInput):
        experiments.decide([experiments.Arm("A", 10, 1)], RULE)
    with pytest.raises(errors.InvalidInput):
        experiments.decide([experiments.Arm("A", 10, 1), experiments.Arm("A", 10, 2)], RULE)
