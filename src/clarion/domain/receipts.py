"""Outside signals about a delivery after it was sent — a vendor's receipt, a bounce, a read, a click — and what
each does to the delivery's status. Pure: ``judge`` decides, ``pipeline.feedback`` applies and records.

A delivery only moves forward: ``sent`` (or ``failed``, which a vendor may yet prove wrong) → ``undelivered`` /
``bounced`` → ``delivered`` → ``read`` → ``clicked``. A signal that would move it back (an ``undelivered``
arriving after ``delivered``) is kept on the timeline and leaves the status alone; a signal that skips a step
(``read`` straight after ``sent``) implies the steps before it. A delivery that has not been sent yet (its
outcome not recorded: queued, sending …) cannot take a signal now: it is held until the outcome is written. A
delivery that was never handed to a provider (filtered, expired, cancelled) takes none.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

from clarion.domain import model

S = model.DeliveryStatus


class Event(enum.StrEnum):
    """What an outside signal says happened; each but ``delayed`` names the status it moves a delivery to."""

    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    BOUNCED = "bounced"
    #: a soft bounce (4.x.x, or a DSN whose action is "delayed"): on the timeline, the status stays
    DELAYED = "delayed"
    READ = "read"
    CLICKED = "clicked"


@dataclass(frozen=True, slots=True)
class Receipt:
    """One signal about the delivery a provider knows as ``provider_message_id``.

    ``reason`` is what the vendor said, in its own words and codes (a carrier's ``DELIVRD``/``UNDELIV`` and error
    code, a DSN's ``5.1.1`` and diagnostic), so "why didn't it arrive" has the vendor's answer. ``address`` is
    the recipient the signal names (a bounce's Final-Recipient), when it names one."""

    provider_message_id: str
    event: Event
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    address: str | None = None
    #: a hard bounce: the address cannot take mail, so it is suppressed (source ``bounce``)
    suppress: bool = False


#: how far a delivery got; a signal moves it only to a higher rank
RANK: dict[str, int] = {
    S.FAILED: 0,
    S.SENT: 0,
    S.UNDELIVERED: 1,
    S.BOUNCED: 1,
    S.DELIVERED: 2,
    S.READ: 3,
    S.CLICKED: 4,
}
#: not sent yet: a signal waits until the outcome is recorded
WAITING = frozenset({S.ACCEPTED, S.QUEUED, S.DEFERRED, S.SENDING})
#: never handed to a provider: no signal can be about it
NEVER_SENT = frozenset({S.FILTERED, S.EXPIRED, S.CANCELLED})
#: the statuses after which a fallback on another channel may be due (see ``pipeline.feedback``)
NOT_REACHED = frozenset({S.UNDELIVERED, S.BOUNCED})

Action = Literal["move", "note", "hold", "ignore"]


@dataclass(frozen=True, slots=True)
class Judgement:
    """What a signal does to a delivery: ``move`` it to ``status``; ``note`` it on the timeline only; ``hold`` it
    until the delivery's outcome is recorded; ``ignore`` it (nothing to record). ``why`` is the timeline's
    reason (or why nothing was recorded)."""

    action: Action
    why: str
    status: model.DeliveryStatus | None = None
    implied: tuple[str, ...] = ()  # the statuses a move skips over, reached all the same (``delivered``)


def judge(current: str, event: Event) -> Judgement:
    """What ``event`` does to a delivery whose status is ``current``."""
    if current in WAITING:
        return Judgement("hold", f"{event.value} before the outcome of the send was recorded ({current})")
    if current in NEVER_SENT or current not in RANK:
        return Judgement("ignore", f"{event.value} for a delivery that was never sent ({current})")
    if event is Event.DELAYED:
        return Judgement("note", f"delivery delayed, status stays {current}")
    target = S(event.value)
    if target.value == current:
        return Judgement("ignore", f"already {current}")
    if RANK[target] > RANK[current]:
        implied = _implied(current, target)
        why = event.value if not implied else f"{event.value} (implies {', '.join(implied)})"
        return Judgement("move", why, target, tuple(implied))
    return Judgement("note", f"late {event.value}: status stays {current}")


def _implied(current: str, target: model.DeliveryStatus) -> list[str]:
    """The steps ``target`` skips over from ``current``: it was ``delivered`` if it was read or clicked."""
    if RANK[current] < RANK[S.DELIVERED] < RANK[target]:
        return [S.DELIVERED.value]
    return []


def may_fall_back(before: str, after: model.DeliveryStatus) -> bool:
    """Whether a change leaves the delivery known not to have reached its user (a fallback may be due)."""
    return after in NOT_REACHED and before not in NOT_REACHED


# -- DSN status codes (RFC 3463) -------------------------------------------------------------------------


def bounce_event(status: str | None, action: str | None) -> Event | None:
    """What a delivery status notification says, from its ``Status`` (``5.1.1``) and ``Action`` (``failed``):
    ``bounced`` for a permanent failure, ``delayed`` for a transient one, ``delivered`` when the receiving
    system says it delivered; None when it says nothing Clarion acts on (relayed, expanded)."""
    action = (action or "").strip().lower()
    code = (status or "").strip()
    klass = code.split(".", 1)[0] if code else ""
    if action == "delivered" or (not action and klass == "2"):
        return Event.DELIVERED
    if action == "delayed" or klass == "4":
        return Event.DELAYED
    if action == "failed" or klass == "5":
        return Event.BOUNCED
    return None
