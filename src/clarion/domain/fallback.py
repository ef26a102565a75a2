"""Channel fallback chains: "if push has not reached the user within 120 s, send an SMS".

A chain is a template's list of steps ``{"from", "to", "when", "within"}``. It is checked when the template is
saved, so what intake and the dispatcher later act on is always bounded, acyclic and on channels the template
has content for. Pure: no I/O here."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from clarion.domain import errors, model

MAX_STEPS = 5  # a chain reaches the user once: a few channels deep at most
MIN_WITHIN = 1  # seconds
MAX_WITHIN = 7 * 24 * 3600  # a week: later than that the message is no longer the same news


class When(enum.StrEnum):
    #: the original failed, was undelivered or bounced: the fallback fires at once
    FAILED = "failed"
    #: the original has no delivery receipt ``within`` seconds of being accepted
    NOT_DELIVERED = "not_delivered"
    #: the original (an inbox item) is not read ``within`` seconds of being accepted
    NOT_READ = "not_read"


#: the statuses of the original that make each kind of step unnecessary (the fallback is cancelled)
REACHED: dict[When, frozenset[model.DeliveryStatus]] = {
    When.FAILED: frozenset(
        {
            model.DeliveryStatus.DELIVERED,
            model.DeliveryStatus.READ,
            model.DeliveryStatus.CLICKED,
        }
    ),
    When.NOT_DELIVERED: frozenset(
        {
            model.DeliveryStatus.DELIVERED,
            model.DeliveryStatus.READ,
            model.DeliveryStatus.CLICKED,
        }
    ),
    When.NOT_READ: frozenset({model.DeliveryStatus.READ, model.DeliveryStatus.CLICKED}),
}

#: the statuses of the original that make a step due at once, whatever its ``when``
FAILED = frozenset(
    {
        model.DeliveryStatus.FAILED,
        model.DeliveryStatus.UNDELIVERED,
        model.DeliveryStatus.BOUNCED,
        model.DeliveryStatus.EXPIRED,
        model.DeliveryStatus.FILTERED,
    }
)


@dataclass(frozen=True, slots=True)
class Step:
    source: model.Channel
    to: model.Channel
    when: When
    #: seconds after the original was accepted; None for ``failed`` (it fires when the failure is known)
    within: int | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"from": self.source.value, "to": self.to.value, "when": self.when.value}
        if self.within is not None:
            out["within"] = self.within
        return out


def _invalid(message: str, index: int | None, **details: Any) -> errors.InvalidInput:
    where = "fallback" if index is None else f"fallback[{index}]"
    return errors.InvalidInput(message, code="invalid_fallback", details={"field": where, **details})


def _channel(value: Any, index: int, key: str) -> model.Channel:
    try:
        return model.Channel(value)
    except ValueError:
        raise _invalid(
            f"fallback step {index}: {key!r} must be a channel, not {value!r}",
            index,
            key=key,
            allowed=[c.value for c in model.Channel],
        ) from None


def _step(raw: Any, index: int) -> Step:
    if not isinstance(raw, Mapping):
        raise _invalid(f"fallback step {index} must be an object", index)
    unknown = sorted(set(raw) - {"from", "to", "when", "within"})
    if unknown:
        raise _invalid(f"fallback step {index}: unknown key(s) {', '.join(unknown)}", index, unknown=unknown)
    for key in ("from", "to", "when"):
        if key not in raw:
            raise _invalid(f"fallback step {index}: {key!r} is required", index, key=key)
    source, to = _channel(raw["from"], index, "from"), _channel(raw["to"], index, "to")
    try:
        when = When(raw["when"])
    except ValueError:
        raise _invalid(
            f"fallback step {index}: 'when' must be one of {', '.join(w.value for w in When)}",
            index,
            key="when",
            allowed=[w.value for w in When],
        ) from None
    within = raw.get("within")
    if when is When.FAILED:
        if within is not None:
            raise _invalid(f"fallback step {index}: 'within' does not apply to 'failed' (it fires at once)", index)
    else:
        if isinstance(within, bool) or not isinstance(within, int):
            raise _invalid(f"fallback step {index}: 'within' (seconds) is required for {when.value!r}", index)
        if not MIN_WITHIN <= within <= MAX_WITHIN:
            raise _invalid(
                f"fallback step {index}: 'within' must be {MIN_WITHIN}..{MAX_WITHIN} seconds",
                index,
                key="within",
            )
    if when is When.NOT_READ and source is not model.Channel.INBOX:
        raise _invalid(f"fallback step {index}: 'not_read' applies to an inbox original only", index, key="when")
    if source is to:
        raise _invalid(f"fallback step {index}: a channel cannot fall back to itself", index, key="to")
    return Step(source, to, when, within)


def parse(raw: Any, channels: Iterable[model.Channel]) -> tuple[Step, ...]:
    """The chain ``raw`` (a JSON list, or None for none), checked against the template's ``channels``; raises
    ``InvalidInput`` (``invalid_fallback``, naming ``fallback[i]``) for a malformed step, a chain longer than
    ``MAX_STEPS``, a channel without content, a channel given two fallbacks, or a cycle."""
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise _invalid("fallback must be a list of steps", None)
    if len(raw) > MAX_STEPS:
        raise _invalid(f"fallback has {len(raw)} steps; at most {MAX_STEPS}", None, max=MAX_STEPS)
    steps = tuple(_step(s, i) for i, s in enumerate(raw))
    available = set(channels)
    seen: set[model.Channel] = set()
    for i, step in enumerate(steps):
        missing = [c.value for c in (step.source, step.to) if c not in available]
        if missing:
            raise _invalid(
                f"fallback step {i}: the template has no content for {', '.join(missing)}",
                i,
                unknown=missing,
                available=sorted(c.value for c in available),
            )
        if step.source in seen:
            raise _invalid(f"fallback step {i}: {step.source.value} already has a fallback", i, key="from")
        seen.add(step.source)
    nxt = {s.source: s.to for s in steps}
    for i, step in enumerate(steps):
        path, at = [step.source], step.to
        while at in nxt:
            if at in path:
                cycle = [c.value for c in (*path, at)]
                raise _invalid(f"fallback forms a cycle: {' → '.join(cycle)}", i, cycle=cycle)
            path.append(at)
            at = nxt[at]
        if at in path:
            cycle = [c.value for c in (*path, at)]
            raise _invalid(f"fallback forms a cycle: {' → '.join(cycle)}", i, cycle=cycle)
    return steps


def first_channels(steps: Sequence[Step], channels: Sequence[model.Channel]) -> list[model.Channel]:
    """The channels sent at once: those of ``channels`` no step falls back *to* (the heads of the chains)."""
    behind = {s.to for s in steps}
    return [c for c in channels if c not in behind]


def reached(step: Step, original: model.DeliveryStatus | str) -> bool:
    """Whether the original's status makes the step unnecessary (its pending fallback is cancelled)."""
    return model.DeliveryStatus(original) in REACHED[step.when]


def due_now(original: model.DeliveryStatus | str) -> bool:
    """Whether the original's status makes a pending fallback due at once (it did not and will not reach)."""
    return model.DeliveryStatus(original) in FAILED


def for_send(steps: Sequence[Step], channels: Sequence[model.Channel], priority: model.Priority) -> tuple[Step, ...]:
    """The steps a send acts on: none for an urgent message (it goes on every channel at once), and of the
    others those whose two channels the send uses, so a send narrowed to some channels still reaches the user."""
    if priority is model.Priority.URGENT:
        return ()
    used = set(channels)
    return tuple(s for s in steps if s.source in used and s.to in used)


def due_at(step: Step, original_due: datetime) -> datetime | None:
    """When a step whose original goes out at ``original_due`` is due: ``within`` seconds after, or None for
    ``failed`` (it is due when the failure is known)."""
    if step.within is None:
        return None
    return original_due + timedelta(seconds=step.within)


Verdict = Literal["cancel", "fire", "wait"]


def judge(when: When | str, original: model.DeliveryStatus | str, *, deadline_passed: bool) -> Verdict:
    """What becomes of a pending step whose original is ``original``: cancelled once it reached the user; fired
    once it failed for good, or when the deadline passed without it reaching them; else it waits."""
    when, status = When(when), model.DeliveryStatus(original)
    if status in REACHED[when]:
        return "cancel"
    if status in FAILED:
        return "fire"
    if deadline_passed and when is not When.FAILED:
        return "fire"
    return "wait"


def describe(when: When | str, within: int | None) -> str:
    """A step's condition in words, for the timeline."""
    when = When(when)
    if when is When.FAILED:
        return "if it fails"
    what = "delivered" if when is When.NOT_DELIVERED else "read"
    return f"if not {what} within {within} s"
