"""Template approval as values: which categories need review and by how many levels, the states a version goes
through, who may move it, and what a reviewer reads (the diff). Pure: routes load a version, ask here, and store
the answer — or raise the refusal it returns.

    draft ──submit──▶ pending_review ──approve (last level)──▶ approved  (becomes the live version)
                        │  ▲
                        │  └── approve (an earlier level): one more approval recorded
                        └──── reject (with a comment) ──▶ rejected

A version of a category that needs no approval is ``approved`` the moment it is saved. Someone other than the
author approves, one level each: the same key name cannot approve two levels of one version.

Roles (carried by API keys): ``admin`` may do everything (providers, policy settings, caps, keyword lists, lifting
a suppression, keys); ``editor`` saves and submits templates and rules and defines segments and ID lists;
``approver`` approves and rejects; ``sender`` sends and writes user data (profiles, preferences, tags, tracked
events, new suppressions, inbox reads). Reading needs only a valid key, except provider accounts (``admin``).
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clarion.domain import errors, model

ROLES = ("admin", "editor", "approver", "sender")
EDIT = "edit"  # save or delete templates, rules, segments and ID lists; submit a version for review
REVIEW = "review"  # approve or reject a version
TEST = "test"  # send a version to the test whitelist
SEND = "send"  # send to anyone (what /v1/messages does)
ADMINISTER = "administer"  # API keys, approval settings, the test whitelist, providers, policy configuration
USER_DATA = "user_data"  # write users' profiles, preferences, tags, events, new suppressions, inbox reads
PERMISSIONS: Mapping[str, tuple[str, ...]] = {
    EDIT: ("admin", "editor"),
    REVIEW: ("admin", "approver"),
    TEST: ("admin", "editor", "approver"),
    SEND: ("admin", "sender"),
    ADMINISTER: ("admin",),
    USER_DATA: ("admin", "sender"),
}
DEFAULT_LEVELS: Mapping[model.Category, tuple[str, ...]] = {model.Category.MARKETING: ("business", "compliance")}
DEFAULT_TEST_PREFIX = "[TEST] "
MAX_LEVELS = 5


class Status(enum.StrEnum):
    DRAFT = "draft"
    PENDING_REVIEW = "pending_review"
    APPROVED = "approved"
    REJECTED = "rejected"


class Forbidden(errors.InvalidInput):
    """The caller's key may not do this (its roles, or who it is)."""

    status = 403


class NotApproved(errors.InvalidInput):
    """The template's category needs approval and no version of it is approved yet: nothing can be sent."""

    status = 409

    def __init__(self, key: str) -> None:
        super().__init__(
            f"template {key!r} has no approved version yet; submit one for review and have it approved",
            code="not_approved",
            details={"template": key},
        )


def check_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """The roles, deduplicated, if every one is known; raises ``InvalidInput`` (``unknown_role``) otherwise."""
    roles = tuple(dict.fromkeys(roles))
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise errors.InvalidInput(
            f"unknown role(s) {', '.join(map(repr, unknown))}; roles are {', '.join(ROLES)}"
            if unknown
            else f"a key needs at least one role of {', '.join(ROLES)}",
            code="unknown_role",
            details={"field": "roles", "unknown": unknown, "allowed": list(ROLES)},
        )
    return roles


def may(roles: Iterable[str], permission: str) -> bool:
    return any(r in PERMISSIONS[permission] for r in roles)


def require(roles: Iterable[str], permission: str) -> None:
    """Raise ``Forbidden`` (403 ``forbidden``) unless one of ``roles`` grants ``permission``."""
    roles = tuple(roles)
    if not may(roles, permission):
        needed = PERMISSIONS[permission]
        raise Forbidden(
            f"this key's roles ({', '.join(roles) or 'none'}) do not allow it; it needs one of {', '.join(needed)}",
            code="forbidden",
            details={"needs": list(needed), "roles": list(roles)},
        )


# -- settings ------------------------------------------------------------------------------------------------


def _bad(field: str, message: str) -> errors.InvalidInput:
    return errors.InvalidInput(f"{field}: {message}", code="invalid_approval_settings", details={"field": field})


@dataclass(frozen=True, slots=True)
class Settings:
    """The operator's approval configuration: the review levels each category needs, in order (none: a saved
    version is live at once), and the prefix of test sends."""

    levels: Mapping[model.Category, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_LEVELS))
    test_prefix: str = DEFAULT_TEST_PREFIX

    def levels_for(self, category: model.Category) -> tuple[str, ...]:
        return self.levels.get(category, ())

    def needs_approval(self, category: model.Category) -> bool:
        return bool(self.levels_for(category))

    @classmethod
    def from_json(cls, value: Any, base: Settings | None = None) -> Settings:
        """Validate a (partial) document: the fields given replace those of ``base`` (the defaults if None);
        ``levels`` is a whole table — a category left out needs no approval."""
        base = base or cls()
        if not isinstance(value, Mapping):
            raise _bad("body", "must be an object")
        unknown = sorted(set(value) - {"levels", "test_prefix"})
        if unknown:
            raise _bad(unknown[0], "unknown field; the fields are levels and test_prefix")
        levels = base.levels
        if "levels" in value:
            levels = {}
            if not isinstance(value["levels"], Mapping):
                raise _bad("levels", 'must be an object like {"marketing": ["business", "compliance"]}')
            for name, names in value["levels"].items():
                where = f"levels.{name}"
                try:
                    category = model.Category(name)
                except ValueError:
                    raise _bad(
                        where, f"unknown category; one of {', '.join(c.value for c in model.Category)}"
                    ) from None
                if not isinstance(names, list) or len(names) > MAX_LEVELS:
                    raise _bad(where, f"must be a list of at most {MAX_LEVELS} level names")
                if not all(isinstance(n, str) and 0 < len(n.strip()) <= 40 for n in names):
                    raise _bad(where, "level names are non-empty strings of at most 40 characters")
                if len(set(names)) != len(names):
                    raise _bad(where, "level names must differ")
                if names:
                    levels[category] = tuple(n.strip() for n in names)
        prefix = value.get("test_prefix", base.test_prefix)
        if not isinstance(prefix, str) or len(prefix) > 50:
            raise _bad("test_prefix", "must be a string of at most 50 characters")
        return cls(levels, prefix)

    def to_json(self) -> dict[str, Any]:
        return {
            "levels": {c.value: list(names) for c, names in sorted(self.levels.items())},
            "test_prefix": self.test_prefix,
        }


# -- versions and the state machine --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Approval:
    level: str
    by: str
    at: datetime
    comment: str | None = None

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Approval:
        return cls(value["level"], value["by"], datetime.fromisoformat(value["at"]), value.get("comment"))

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "by": self.by, "at": self.at.isoformat(), "comment": self.comment}


@dataclass(frozen=True, slots=True)
class Version:
    """What the rules need to know of one saved version of a template."""

    template: str
    number: int
    category: model.Category
    status: Status
    author: str | None
    approvals: tuple[Approval, ...] = ()


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: an API key's name (the identity compared with a version's author) and its roles."""

    name: str
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    """An allowed action: the version's new state, and whether it becomes the version sends use."""

    status: Status
    approvals: tuple[Approval, ...]
    comment: str | None
    live: bool = False
    level: str | None = None  # the level this action approved


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str
    message: str
    status: int  # 403: not this caller; 409: not in this state; 422: missing input
    details: Mapping[str, Any] = field(default_factory=dict)

    def error(self) -> errors.InvalidInput:
        exc = errors.InvalidInput(self.message, code=self.code, details=dict(self.details))
        exc.status = self.status
        return exc


def initial_status(settings: Settings, category: model.Category) -> Status:
    """A saved version is live at once where its category needs no review; otherwise it starts as a draft."""
    return Status.DRAFT if settings.needs_approval(category) else Status.APPROVED


#: the fields of a template body that steer traffic between its variants without changing what users read
_TRAFFIC = frozenset({"variants", "experiment"})


def weights_only(approved: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether ``new`` differs from the ``approved`` body only in its A/B variants' weights (and how its
    experiment is decided): the same words, variant names and order. Such a version needs no new review —
    reviewers approve what users read, and an operator or the experiment's rule shifting traffic between approved
    variants of a running template must not wait for them."""
    old_variants, new_variants = approved.get("variants") or [], new.get("variants") or []
    if not old_variants or len(old_variants) != len(new_variants):
        return False
    if any(k not in _TRAFFIC and approved.get(k) != new.get(k) for k in set(approved) | set(new)):
        return False
    strip = [{k: v for k, v in variant.items() if k != "weight"} for variant in old_variants]
    return strip == [{k: v for k, v in variant.items() if k != "weight"} for variant in new_variants] and any(
        a.get("weight") != b.get("weight") for a, b in zip(old_variants, new_variants, strict=True)
    )


def _wrong_state(version: Version, action: str, expected: Status) -> Refusal:
    return Refusal(
        "invalid_transition",
        f"version {version.number} is {version.status.value}; only a {expected.value} version can be {action}",
        409,
        {"status": version.status.value, "action": action},
    )


def _not_reviewer(version: Version, actor: Actor, action: str) -> Refusal | None:
    if not may(actor.roles, REVIEW):
        return Refusal(
            "forbidden",
            f"only an approver or admin may {action} a version",
            403,
            {"needs": list(PERMISSIONS[REVIEW]), "roles": list(actor.roles)},
        )
    if version.author is not None and actor.name == version.author:
        return Refusal(
            "own_version",
            f"{actor.name!r} wrote version {version.number}; someone else must {action} it",
            403,
            {"author": version.author},
        )
    return None


def submit(version: Version, actor: Actor) -> Outcome | Refusal:
    if not may(actor.roles, EDIT):
        return Refusal("forbidden", "only an editor or admin may submit a version", 403, {"roles": list(actor.roles)})
    if version.status is not Status.DRAFT:
        return _wrong_state(version, "submitted", Status.DRAFT)
    return Outcome(Status.PENDING_REVIEW, version.approvals, None)


def approve(
    version: Version,
    actor: Actor,
    settings: Settings,
    *,
    at: datetime,
    comment: str | None = None,
    live_version: int | None = None,
) -> Outcome | Refusal:
    """Record the next level's approval; the last one makes the version approved and live. A version older than
    the live one cannot be approved: it would take a newer approved text off the air."""
    refused = _not_reviewer(version, actor, "approve")
    if refused is not None:
        return refused
    if version.status is not Status.PENDING_REVIEW:
        return _wrong_state(version, "approved", Status.PENDING_REVIEW)
    if any(a.by == actor.name for a in version.approvals):
        level = next(a.level for a in version.approvals if a.by == actor.name)
        return Refusal(
            "already_approved",
            f"{actor.name!r} already approved level {level!r} of version {version.number}; "
            "each level needs a different approver",
            403,
            {"level": level},
        )
    if live_version is not None and version.number < live_version:
        return Refusal(
            "superseded",
            f"version {version.number} is older than the live version {live_version}",
            409,
            {"live_version": live_version},
        )
    # a category whose levels were removed while a version waited still needs one review to finish it
    levels = settings.levels_for(version.category) or ("review",)
    index = len(version.approvals)
    level = levels[index] if index < len(levels) else levels[-1]
    approvals = (*version.approvals, Approval(level, actor.name, at, comment))
    done = len(approvals) >= len(levels)
    return Outcome(Status.APPROVED if done else Status.PENDING_REVIEW, approvals, comment, live=done, level=level)


def reject(version: Version, actor: Actor, *, comment: str | None) -> Outcome | Refusal:
    refused = _not_reviewer(version, actor, "reject")
    if refused is not None:
        return refused
    if version.status is not Status.PENDING_REVIEW:
        return _wrong_state(version, "rejected", Status.PENDING_REVIEW)
    if not comment or not comment.strip():
        return Refusal("comment_required", "a rejection needs a comment saying what to change", 422)
    return Outcome(Status.REJECTED, version.approvals, comment.strip())


# -- what a reviewer reads -----------------------------------------------------------------------------------


def _flatten(value: Any, path: str, into: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        for k, v in value.items():
            _flatten(v, f"{path}.{k}" if path else str(k), into)
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            _flatten(v, f"{path}.{i}" if path else str(i), into)
    else:
        into[path] = value
    return into


_ABSENT = object()


def diff(old: Mapping[str, Any], new: Mapping[str, Any], *, old_label: str, new_label: str) -> list[dict[str, Any]]:
    """Field-level changes between two saved bodies, by dotted path (``channels.sms.text``), in path order: each
    with ``change`` (added | removed | changed), ``old`` and ``new``; a changed string also has a unified
    ``text_diff`` (lines), the way reviewers read it."""
    before, after = _flatten(old, "", {}), _flatten(new, "", {})
    changes = []
    for path in sorted(before.keys() | after.keys()):
        was, now = before.get(path, _ABSENT), after.get(path, _ABSENT)
        if was == now and type(was) is type(now):
            continue
        change = "added" if was is _ABSENT else "removed" if now is _ABSENT else "changed"
        entry: dict[str, Any] = {
            "path": path,
            "change": change,
            "old": None if was is _ABSENT else was,
            "new": None if now is _ABSENT else now,
        }
        if isinstance(was, str) or isinstance(now, str):
            lines = difflib.unified_diff(
                was.splitlines() if isinstance(was, str) else [],
                now.splitlines() if isinstance(now, str) else [],
                fromfile=f"{old_label}:{path}",
                tofile=f"{new_label}:{path}",
                lineterm="",
            )
            entry["text_diff"] = "\n".join(lines)
        changes.append(entry)
    return changes
