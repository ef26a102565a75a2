"""A/B experiments that pick a winner by themselves and may be looked at as often as anyone likes.

A fixed-horizon z-test is only valid when read once, at a sample size chosen in advance; read every few minutes as
counts grow, it names a false winner far more often than its stated error rate. Clarion's rule is instead a
mixture sequential probability ratio test (mSPRT, Johari, Koomen, Pekelis and Walsh, "Always valid inference"):

* Each pair of arms is compared on the difference of their rates. The estimated difference is standardised by the
  pooled per-exposure standard deviation, and the likelihood ratio of "some difference" against "no difference"
  is averaged over a normal mixing distribution ``N(0, mixing)`` of the standardised difference. The mixture
  ratio is (asymptotically) a martingale under "no difference", so by Ville's inequality the chance that it *ever*
  reaches ``1/alpha`` is at most ``alpha``: ``p = min(1, 1/ratio)`` is an always-valid p-value, and stopping at the
  first look where ``p <= alpha`` keeps the false-winner rate at ``alpha`` however often one looks.
* With ``k`` arms, the arm with the best observed rate is compared with each of the other ``k - 1``; it is the
  winner when every one of those comparisons is decided, each at ``alpha / (k - 1)`` (Bonferroni). The p-values
  shown are Bonferroni-adjusted (``min(1, (k - 1) * p)``), so each is read against ``alpha`` directly.
* Each arm's interval is an always-valid confidence sequence for that arm's own rate (the normal-mixture boundary
  with a plug-in variance, an asymptotic confidence sequence): at every look it covers the arm's true rate with
  probability at least ``1 - alpha``, each arm on its own.

The rule ends the experiment at its first "winner": the caller keeps that verdict instead of deciding again.
Until every arm has ``min_sample`` exposures the rule only collects, so a handful of early clicks cannot decide.
At a campaign's deadline without a winner, ``decide(..., final=True)`` says so, and ``best_so_far`` gives the arm
with the highest observed rate, which the caller presents as such — not as a tested result.

Pure: NumPy and the standard library. ``msprt_p_values`` is the vectorised core ``decide`` uses, so a simulation of
thousands of experiments runs the very arithmetic a single decision does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from clarion.domain import errors

Metric = Literal["click_rate", "conversion_rate"]
State = Literal["collecting", "running", "winner", "no_winner_yet"]
METRICS: tuple[str, ...] = get_args(Metric)
METRIC_WORDS = {"click_rate": "click rate", "conversion_rate": "conversion rate"}
RULE_FIELDS = frozenset({"metric", "min_sample", "alpha", "mixing"})
#: with ``mixing`` left out, the mixture is tuned to be sharpest at this many times ``min_sample`` per arm
DESIGN_SAMPLES = 10

FloatArray = npt.NDArray[np.float64]


def _bad(field: str, message: str, **details: Any) -> errors.InvalidInput:
    return errors.InvalidInput(f"{field}: {message}", code="invalid_experiment", details={"field": field, **details})


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


@dataclass(frozen=True)
class Arm:
    """One variant's counts: ``exposures`` (the rate's denominator) and ``successes`` (its numerator)."""

    name: str
    exposures: int
    successes: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise _bad("name", "must be a non-empty string")
        for field in ("exposures", "successes"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise _bad(field, "must be a non-negative integer", arm=self.name)
        if self.successes > self.exposures:
            raise _bad("successes", "cannot exceed exposures", arm=self.name)

    @property
    def rate(self) -> float:
        return self.successes / self.exposures if self.exposures else 0.0


@dataclass(frozen=True)
class Rule:
    """How an experiment decides: the ``metric`` it compares (``click_rate``: clicks per delivered message;
    ``conversion_rate``: conversions per the funnel's denominator — the caller brings the matching counts),
    the exposures every arm needs before deciding, the error rate ``alpha``, and ``mixing``: the variance of the
    normal mixing distribution over the standardised difference (difference of rates divided by the pooled
    per-exposure standard deviation). ``None`` tunes it to be sharpest at ``DESIGN_SAMPLES * min_sample``
    exposures per arm; a larger value favours detecting large lifts early, a smaller one small lifts late."""

    metric: Metric
    min_sample: int = 200
    alpha: float = 0.05
    mixing: float | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise _bad("metric", f"must be one of {', '.join(METRICS)}", allowed=list(METRICS))
        if isinstance(self.min_sample, bool) or not isinstance(self.min_sample, int) or self.min_sample < 1:
            raise _bad("min_sample", "must be a positive integer")
        if not _number(self.alpha) or not 0 < self.alpha <= 0.5:
            raise _bad("alpha", "must be a number above 0 and at most 0.5")
        if self.mixing is not None and (not _number(self.mixing) or self.mixing <= 0):
            raise _bad("mixing", "must be a positive number, or null for the default")

    @classmethod
    def from_json(cls, value: Any) -> Rule:
        if not isinstance(value, Mapping):
            raise _bad("rule", "must be an object")
        unknown = sorted(set(value) - RULE_FIELDS)
        if unknown:
            raise _bad(unknown[0], "unknown field", allowed=sorted(RULE_FIELDS))
        if "metric" not in value:
            raise _bad("metric", "is required", allowed=list(METRICS))
        min_sample = value.get("min_sample", 200)
        if isinstance(min_sample, bool) or not isinstance(min_sample, int):
            raise _bad("min_sample", "must be a positive integer")
        alpha = value.get("alpha", 0.05)
        mixing: Any = value.get("mixing")
        return cls(
            metric=value["metric"],
            min_sample=min_sample,
            alpha=float(alpha) if _number(alpha) else alpha,
            mixing=float(mixing) if _number(mixing) else mixing,
        )

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "min_sample": self.min_sample, "alpha": self.alpha, "mixing": self.mixing}

    def mixing_variance(self) -> float:
        """The mixing variance in use: ``mixing``, or the one whose two-arm boundary is lowest at the design size.

        For a pair with ``h = 1/n_a + 1/n_b`` the test decides when ``z**2 >= (1 + 1/r) * (2 log(1/alpha) +
        log(1 + r))`` with ``r = mixing / h``; that is lowest at the ``r`` solving ``r = 2 log(1/alpha) +
        log(1 + r)``, found here by fixed-point iteration (it converges in a few steps)."""
        if self.mixing is not None:
            return self.mixing
        two_log = 2.0 * math.log(1.0 / self.alpha)
        r = two_log
        for _ in range(50):
            r = two_log + math.log1p(r)
        return r * 2.0 / (DESIGN_SAMPLES * self.min_sample)


@dataclass(frozen=True)
class ArmResult:
    """One arm in a verdict: its counts and rate, the always-valid interval ``[low, high]`` for its rate, and the
    Bonferroni-adjusted always-valid p-value of its comparison with the best arm (None for the best arm)."""

    name: str
    exposures: int
    successes: int
    rate: float
    low: float
    high: float
    p_value: float | None


@dataclass(frozen=True)
class Verdict:
    """What the rule concluded at this look; ``stated`` says it in one English sentence with its error rate."""

    state: State
    winner: str | None
    arms: list[ArmResult]
    stated: str


def msprt_p_values(
    n_a: npt.ArrayLike, s_a: npt.ArrayLike, n_b: npt.ArrayLike, s_b: npt.ArrayLike, mixing: float
) -> FloatArray:
    """Always-valid two-sided p-values for "arm a and arm b have the same rate", elementwise over arrays of
    exposures ``n`` and successes ``s``. ``mixing`` is the variance of the normal mixing distribution over the
    standardised difference. A pair where either arm has no exposures gets 1.

    With ``z`` the difference of rates over its pooled standard error and ``h = 1/n_a + 1/n_b``, the mixture
    likelihood ratio is ``sqrt(h / (h + mixing)) * exp(z**2 * mixing / (2 * (h + mixing)))``. The pooled rate is
    smoothed by one success and one failure, so a pair with no successes yet has a positive variance."""
    na = np.asarray(n_a, dtype=np.float64)
    nb = np.asarray(n_b, dtype=np.float64)
    sa = np.asarray(s_a, dtype=np.float64)
    sb = np.asarray(s_b, dtype=np.float64)
    seen = (na > 0) & (nb > 0)
    na_safe = np.where(seen, na, 1.0)
    nb_safe = np.where(seen, nb, 1.0)
    diff = sb / nb_safe - sa / na_safe
    pooled = (sa + sb + 1.0) / (na + nb + 2.0)
    h = 1.0 / na_safe + 1.0 / nb_safe
    z2 = diff * diff / (pooled * (1.0 - pooled) * h)
    log_ratio = 0.5 * np.log(h / (h + mixing)) + z2 * mixing / (2.0 * (h + mixing))
    p: FloatArray = np.where(seen, np.exp(-np.maximum(log_ratio, 0.0)), 1.0)
    return p


def confidence_sequences(
    n: npt.ArrayLike, s: npt.ArrayLike, mixing: float, alpha: float
) -> tuple[FloatArray, FloatArray]:
    """Always-valid intervals ``(low, high)`` for each arm's rate, elementwise: the normal-mixture boundary
    ``rate ± sd * sqrt((1 + 1/(n*mixing)) * (2 log(1/alpha) + log(1 + n*mixing)) / n)``, with ``sd`` from the
    rate smoothed by one success and one failure, clipped to ``[0, 1]``; an arm with no exposures gets ``[0, 1]``."""
    nn = np.asarray(n, dtype=np.float64)
    ss = np.asarray(s, dtype=np.float64)
    seen = nn > 0
    n_safe = np.where(seen, nn, 1.0)
    rate = ss / n_safe
    smoothed = (ss + 1.0) / (nn + 2.0)
    nm = n_safe * mixing
    half = np.sqrt(
        smoothed * (1.0 - smoothed) * (1.0 + 1.0 / nm) * (2.0 * math.log(1.0 / alpha) + np.log1p(nm)) / n_safe
    )
    low: FloatArray = np.where(seen, np.clip(rate - half, 0.0, 1.0), 0.0)
    high: FloatArray = np.where(seen, np.clip(rate + half, 0.0, 1.0), 1.0)
    return low, high


def best_so_far(arms: Sequence[Arm]) -> str:
    """The arm with the highest observed rate (ties: the first listed). Not a tested result: what a campaign
    sends at its deadline when the rule has not decided, stated by the caller as the best so far."""
    if not arms:
        raise _bad("arms", "at least one arm is needed")
    best = arms[0]
    for arm in arms[1:]:
        if arm.rate > best.rate:
            best = arm
    return best.name


def _check_arms(arms: Sequence[Arm]) -> None:
    if len(arms) < 2:
        raise _bad("arms", "an experiment needs at least two arms")
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise _bad("arms", "arm names must be unique", names=names)


def _percent(x: float) -> str:
    return f"{100 * x:.2f}%"


def decide(arms: Sequence[Arm], rule: Rule, *, final: bool = False) -> Verdict:
    """The rule's verdict at this look. ``final``: the campaign's deadline has come, so a verdict that is not a
    winner is ``no_winner_yet`` (the caller then falls back to ``best_so_far``) rather than ``running``."""
    _check_arms(arms)
    k = len(arms)
    mixing = rule.mixing_variance()
    n = np.array([a.exposures for a in arms], dtype=np.float64)
    s = np.array([a.successes for a in arms], dtype=np.float64)
    low, high = confidence_sequences(n, s, mixing, rule.alpha)
    best = next(i for i, a in enumerate(arms) if a.name == best_so_far(arms))
    others = np.array([i for i in range(k) if i != best])
    raw = msprt_p_values(n[others], s[others], n[best], s[best], mixing)
    adjusted = np.minimum(1.0, raw * (k - 1))
    p_of = dict(zip(others.tolist(), adjusted.tolist(), strict=True))
    results = [
        ArmResult(a.name, a.exposures, a.successes, a.rate, float(low[i]), float(high[i]), p_of.get(i))
        for i, a in enumerate(arms)
    ]
    metric = METRIC_WORDS[rule.metric]
    error = f"{rule.alpha * 100:g}%"
    comparisons = f"{k - 1} comparison{'s' if k > 2 else ''}"
    short = [a for a in arms if a.exposures < rule.min_sample]
    if short:
        stated = (
            f"Collecting: every arm needs {rule.min_sample} exposures before the rule decides "
            f"({', '.join(f'{a.name} has {a.exposures}' for a in short)})."
        )
        return Verdict("collecting", None, results, stated)
    champion = arms[best]
    weakest = float(adjusted.max())
    if weakest <= rule.alpha:
        stated = (
            f"{champion.name} wins: its {metric} of {_percent(champion.rate)} beats every other arm "
            f"(always-valid p ≤ {weakest:.3g}, Bonferroni over {comparisons}); the chance this rule names a "
            f"wrong winner is at most {error}."
        )
        return Verdict("winner", champion.name, results, stated)
    closest = arms[int(others[int(np.argmax(adjusted))])]
    if final:
        stated = (
            f"No winner at the deadline: at error rate {error} no arm's {metric} beat the others; "
            f"{champion.name} has the highest so far ({_percent(champion.rate)}), which is not a tested result."
        )
        return Verdict("no_winner_yet", None, results, stated)
    stated = (
        f"Running: {champion.name} leads with a {metric} of {_percent(champion.rate)}, but is not yet ahead of "
        f"{closest.name} at error rate {error} (p = {weakest:.3g}); looking again later is safe."
    )
    return Verdict("running", None, results, stated)
