"""The breaker's state machine, as values: when it opens, how it probes, when it closes."""

from __future__ import annotations

from clarion.domain import breaker

LIMITS = breaker.Thresholds(consecutive=5, error_rate=0.5, min_attempts=20, window=60, cool_down=30)


def feed(state: breaker.State, kinds: str, start: float = 0.0) -> tuple[breaker.State, list[breaker.Transition]]:
    """``kinds``: one letter per outcome, o(k) t(ransient) p(ermanent) m(isconfigured), one a second."""
    names = {"o": "ok", "t": "transient", "p": "permanent", "m": "misconfigured"}
    outcomes = [breaker.Outcome(start + i, names[k], 0.01, None if k == "o" else "503") for i, k in enumerate(kinds)]  # type: ignore[arg-type]
    return breaker.observe_many("a", state, outcomes, LIMITS)


def test_five_transient_failures_in_a_row_open_it() -> None:
    state, moves = feed(breaker.State(), "tttt")
    assert state.name == "closed" and moves == []
    state, moves = feed(state, "t", start=4)
    assert state.name == "open"
    assert [(m.before, m.after) for m in moves] == [("closed", "open")]
    assert "5 transient failures in a row" in moves[0].reason


def test_a_success_resets_the_run() -> None:
    state, moves = feed(breaker.State(), "ttttottttoo")
    assert state.name == "closed" and moves == []


def test_error_rate_over_min_attempts_opens_it() -> None:
    state, moves = feed(breaker.State(), "o" + "to" * 9)  # 9/19: not enough attempts yet
    assert state.name == "closed"
    state, moves = feed(state, "t", start=19)  # 10/20 = 50%
    assert state.name == "open" and "error rate 50%" in moves[0].reason


def test_permanent_errors_do_not_open_it_but_a_misconfiguration_does_at_once() -> None:
    state, moves = feed(breaker.State(), "p" * 30)
    assert state.name == "closed"
    state, moves = feed(state, "m", start=30)
    assert state.name == "open" and moves[0].reason.startswith("misconfigured: ")


def test_cool_down_then_one_probe_then_closed_on_success() -> None:
    state, _ = feed(breaker.State(), "ttttt")  # opens at t=4
    allowed, state, move = breaker.admit("a", state, 20, LIMITS)
    assert not allowed and move is None
    allowed, state, move = breaker.admit("a", state, 34, LIMITS)
    assert allowed and state.name == "half_open" and move is not None and move.after == "half_open"
    allowed, state, _ = breaker.admit("a", state, 35, LIMITS)
    assert not allowed  # one probe at a time
    assert breaker.why_closed_to(state) == "breaker half-open: a probe is in flight"
    state, moves = feed(state, "o", start=36)
    assert state.name == "closed" and moves[0].reason == "half-open probe succeeded"


def test_a_failed_probe_opens_it_again_for_a_new_cool_down() -> None:
    state, _ = feed(breaker.State(), "ttttt")
    _, state, _ = breaker.admit("a", state, 40, LIMITS)
    state, moves = feed(state, "t", start=41)
    assert state.name == "open" and state.since == 41 and moves[0].reason.startswith("half-open probe failed")
    assert not breaker.admit("a", state, 60, LIMITS)[0]


def test_health_counts_the_window() -> None:
    state, _ = feed(breaker.State(), "ooop")
    view = breaker.health(state, 10, LIMITS)
    assert view["attempts"] == 4 and view["succeeded"] == 3 and view["permanent"] == 1
    assert view["success_rate"] == 0.75 and view["latency_p50"] == 0.01
    assert view["last_errors"] == [{"at": 3.0, "kind": "permanent", "reason": "503"}]
    assert breaker.health(state, 100, LIMITS)["attempts"] == 0  # the window has moved on
