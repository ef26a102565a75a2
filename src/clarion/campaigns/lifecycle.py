"""A campaign's life as values: which action moves it from which status, and who may take it. Pure.

    draft ──submit──▶ pending_review ──approve──▶ approved ──start──▶ scheduled ──(due)──▶ running ──▶ completed
      ▲                    │                                            ▲   │                 │
      └─────reject─────────┘                          (cron: next fire) └───┼─────────────────┘
                                                                             pause ⇄ resume: paused
    cancel: from any status but completed and cancelled. Saving (PUT) sends it back to draft.

Approval reuses the template review rules (``domain.approval``): an ``approver`` or ``admin`` who is not the
campaign's author (whoever saved it last) approves it; one level is enough — the template's words were
reviewed on their own. Starting, pausing and cancelling need ``sender`` (or ``admin``); stopping may also be
done by an ``editor``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from clarion.domain import approval


class Status(enum.StrEnum):
    DRAFT = "draft"
    PENDING_REVIEW = "pending_review"
    APPROVED = "approved"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


ACTIONS = ("submit", "approve", "reject", "start", "pause", "resume", "cancel")
EDITABLE = (Status.DRAFT, Status.PENDING_REVIEW, Status.APPROVED, Status.COMPLETED, Status.CANCELLED)
_FROM: dict[str, tuple[Status, ...]] = {
    "submit": (Status.DRAFT,),
    "approve": (Status.PENDING_REVIEW,),
    "reject": (Status.PENDING_REVIEW,),
    "start": (Status.APPROVED,),
    "pause": (Status.SCHEDULED, Status.RUNNING),
    "resume": (Status.PAUSED,),
    "cancel": (Status.DRAFT, Status.PENDING_REVIEW, Status.APPROVED, Status.SCHEDULED, Status.RUNNING, Status.PAUSED),
}
_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "submit": (approval.EDIT,),
    "approve": (approval.REVIEW,),
    "reject": (approval.REVIEW,),
    "start": (approval.SEND,),
    "pause": (approval.SEND, approval.EDIT),
    "resume": (approval.SEND,),
    "cancel": (approval.SEND, approval.EDIT),
}


@dataclass(frozen=True, slots=True)
class Move:
    """An allowed action: the campaign's new status."""

    status: Status


def _forbidden(action: str, roles: tuple[str, ...]) -> approval.Refusal:
    needed = sorted({r for p in _PERMISSIONS[action] for r in approval.PERMISSIONS[p]})
    return approval.Refusal(
        "forbidden",
        f"this key's roles ({', '.join(roles) or 'none'}) may not {action} a campaign; it needs one of "
        f"{', '.join(needed)}",
        403,
        {"needs": needed, "roles": list(roles)},
    )


def decide(
    action: str,
    status: Status,
    actor: approval.Actor,
    *,
    author: str | None,
    comment: str | None = None,
    has_run: bool = False,
) -> Move | approval.Refusal:
    """Whether ``actor`` may take ``action`` on a campaign in ``status``; ``has_run``: a run is unfinished
    (resume continues it rather than waiting for the schedule)."""
    if action not in _FROM:
        raise ValueError(action)
    if not any(approval.may(actor.roles, p) for p in _PERMISSIONS[action]):
        return _forbidden(action, actor.roles)
    if status not in _FROM[action]:
        allowed = ", ".join(s.value for s in _FROM[action])
        return approval.Refusal(
            "invalid_transition",
            f"the campaign is {status.value}; it can be {_past(action)} only when {allowed}",
            409,
            {"status": status.value, "action": action},
        )
    if action in ("approve", "reject") and author is not None and actor.name == author:
        return approval.Refusal(
            "own_campaign",
            f"{actor.name!r} wrote this campaign; someone else must {action} it",
            403,
            {"author": author},
        )
    if action == "reject" and not (comment and comment.strip()):
        return approval.Refusal("comment_required", "a rejection needs a comment saying what to change", 422)
    target = {
        "submit": Status.PENDING_REVIEW,
        "approve": Status.APPROVED,
        "reject": Status.DRAFT,
        "start": Status.SCHEDULED,
        "pause": Status.PAUSED,
        "resume": Status.RUNNING if has_run else Status.SCHEDULED,
        "cancel": Status.CANCELLED,
    }[action]
    return Move(target)


def editable(status: Status) -> approval.Refusal | None:
    """A scheduled, running or paused campaign is changed by cancelling it first: a run never changes under way."""
    if status in EDITABLE:
        return None
    return approval.Refusal(
        "invalid_transition",
        f"the campaign is {status.value}; cancel it before changing it",
        409,
        {"status": status.value, "action": "save"},
    )


def _past(action: str) -> str:
    return {"submit": "submitted", "approve": "approved", "reject": "rejected", "start": "started"}.get(
        action, f"{action}d" if action.endswith("e") else f"{action}ed"
    )
