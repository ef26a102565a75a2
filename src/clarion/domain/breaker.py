"""The circuit breaker of a provider account, as values: its thresholds, its state, and what one outcome or one
admission does to it (``observe``, ``admit``). The counters layer stores the state (in process, or in Redis so
that every process shares it) and calls these functions; the registry consults the state when choosing.

- **closed** → **open** after ``consecutive`` transient failures in a row, or when at least ``min_attempts``
  attempts within the last ``window`` seconds failed at a rate of ``error_rate`` or more, or at once on a
  configuration error (authentication refused, a missing template code: retrying cannot help).
- **open** → **half_open** once ``cool_down`` seconds have passed: one probe at a time is let through.
- **half_open** → **closed** when the probe succeeds, → **open** again (a new cool-down) when it fails.

Every change is a ``Transition`` with its reason, which the caller logs and puts on the timelines it affects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

StateName = Literal["closed", "open", "half_open"]
OutcomeKind = Literal["ok", "transient", "permanent", "misconfigured"]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a breaker opens, and for how long. The defaults: 5 transient failures in a row, or ≥ 50% errors over
    ≥ 20 attempts in 60 s; 30 s cool-down; a half-open probe that has not reported within ``probe_timeout``
    seconds (its process died) lets the next one through."""

    consecutive: int = 5
    error_rate: float = 0.5
    min_attempts: int = 20
    window: float = 60.0
    cool_down: float = 30.0
    probe_timeout: float = 30.0
    max_window: int = 500  # outcomes kept per window at most: the health view of a busy account is its latest 500


DEFAULT = Thresholds()


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's result: when, what kind, how long it took (seconds), and the error's reason if any."""

    at: float
    kind: OutcomeKind
    latency: float = 0.0
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class State:
    """A breaker's state. ``window`` holds the outcomes of the last ``Thresholds.window`` seconds."""

    name: StateName = "closed"
    since: float = 0.0
    reason: str | None = None
    consecutive: int = 0  # transient failures in a row
    probe_at: float | None = None  # half-open: when the probe in flight was let through
    window: tuple[Outcome, ...] = ()


@dataclass(frozen=True, slots=True)
class Transition:
    account: str
    before: StateName
    after: StateName
    at: float
    reason: str


def _to(account: str, state: State, after: StateName, at: float, reason: str) -> tuple[State, Transition]:
    moved = replace(state, name=after, since=at, reason=reason, probe_at=None)
    if after == "closed":
        moved = replace(moved, consecutive=0, window=())  # a fresh start: the old errors are what opened it
    return moved, Transition(account, state.name, after, at, reason)


def prune(state: State, now: float, limits: Thresholds = DEFAULT) -> State:
    cut = now - limits.window
    if state.window and state.window[0].at <= cut:
        return replace(state, window=tuple(o for o in state.window if o.at > cut))
    return state


def observe(
    account: str, state: State, outcome: Outcome, limits: Thresholds = DEFAULT
) -> tuple[State, Transition | None]:
    """``state`` after ``outcome``, and the transition it caused if any."""
    now = outcome.at
    state = prune(state, now, limits)
    window = state.window if len(state.window) < limits.max_window else state.window[1:]
    state = replace(
        state,
        window=(*window, outcome),
        consecutive=state.consecutive + 1 if outcome.kind == "transient" else 0,
    )
    failed = outcome.kind != "ok"
    if outcome.kind == "misconfigured" and state.name != "open":
        return _to(account, state, "open", now, f"misconfigured: {outcome.reason}")
    if state.name == "half_open":
        if not failed:
            return _to(account, state, "closed", now, "half-open probe succeeded")
        if outcome.kind == "transient":
            return _to(account, state, "open", now, f"half-open probe failed: {outcome.reason}")
        return replace(state, probe_at=None), None  # a permanent error is the message's fault, not the vendor's
    if state.name == "closed":
        if state.consecutive >= limits.consecutive:
            return _to(
                account, state, "open", now, f"{state.consecutive} transient failures in a row: {outcome.reason}"
            )
        attempts = len(state.window)
        if outcome.kind == "transient" and attempts >= limits.min_attempts:  # a success never opens it
            errors = sum(1 for o in state.window if o.kind == "transient")
            if errors / attempts >= limits.error_rate:
                rate = f"{errors}/{attempts} attempts failed in {limits.window:.0f}s"
                return _to(account, state, "open", now, f"error rate {errors / attempts:.0%} ({rate})")
    return state, None


def observe_many(
    account: str, state: State, outcomes: Sequence[Outcome], limits: Thresholds = DEFAULT
) -> tuple[State, list[Transition]]:
    """``observe`` over a batch's outcomes; a closed breaker and nothing but successes (the hot path) costs one
    copy of the window rather than one per outcome."""
    if state.name == "closed" and outcomes and all(o.kind == "ok" for o in outcomes):
        state = prune(state, outcomes[-1].at, limits)
        return replace(state, window=(*state.window, *outcomes)[-limits.max_window :], consecutive=0), []
    transitions = []
    for outcome in outcomes:
        state, transition = observe(account, state, outcome, limits)
        if transition is not None:
            transitions.append(transition)
    return state, transitions


def admit(
    account: str, state: State, now: float, limits: Thresholds = DEFAULT
) -> tuple[bool, State, Transition | None]:
    """Whether the account may send one delivery now; an open breaker past its cool-down turns half-open and
    lets this one through as the probe; a half-open one lets another through only once the probe is stale."""
    if state.name == "closed":
        return True, state, None
    if state.name == "open":
        if now - state.since < limits.cool_down:
            return False, state, None
        moved, transition = _to(account, state, "half_open", now, f"cool-down of {limits.cool_down:.0f}s over")
        return True, replace(moved, probe_at=now), transition
    if state.probe_at is None or now - state.probe_at >= limits.probe_timeout:
        return True, replace(state, probe_at=now), None
    return False, state, None


def release(state: State, granted_at: float) -> State:
    """``state`` with the probe granted at ``granted_at`` handed back unsent (the batch it was granted to chose
    other accounts), so the next batch may carry it rather than waiting out ``probe_timeout``."""
    if state.name == "half_open" and state.probe_at == granted_at:
        return replace(state, probe_at=None)
    return state


def why_closed_to(state: State) -> str:
    """The skip reason of an account that ``admit`` refused."""
    if state.name == "half_open":
        return "breaker half-open: a probe is in flight"
    return f"breaker open: {state.reason}"


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def health(state: State, now: float, limits: Thresholds = DEFAULT, *, last_errors: int = 5) -> dict[str, object]:
    """The health view of one account: counts over the window, latency percentiles, breaker state."""
    state = prune(state, now, limits)
    window = state.window
    ok = sum(1 for o in window if o.kind == "ok")
    latencies = [o.latency for o in window]
    return {
        "window_seconds": limits.window,
        "attempts": len(window),
        "succeeded": ok,
        "transient": sum(1 for o in window if o.kind == "transient"),
        "permanent": sum(1 for o in window if o.kind in ("permanent", "misconfigured")),
        "success_rate": ok / len(window) if window else None,
        "latency_p50": percentile(latencies, 0.5),
        "latency_p99": percentile(latencies, 0.99),
        "breaker": {"state": state.name, "since": state.since, "reason": state.reason},
        "last_errors": [{"at": o.at, "kind": o.kind, "reason": o.reason} for o in window if o.kind != "ok"][
            -last_errors:
        ],
    }
