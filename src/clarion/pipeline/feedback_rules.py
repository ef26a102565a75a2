"""Tag feedback (the brief's 标签反馈): what a click, a conversion or an unsubscribe does to the user who made it.

A rule says ``on`` which fact it fires (``click``, ``convert``, ``unsubscribe``), what the fact must ``match``
(the message's ``template`` and ``campaign``, the tracked ``event`` for a conversion, a ``link`` target prefix for
a click; a field left out matches anything) and which ``actions`` follow, in order: ``add_tag``, ``remove_tag``,
``set`` (attributes; a ``null`` value removes one). ``fire`` runs in the transaction of the fact itself
(``store.links.record_click``, ``pipeline.conversions.convert``, the unsubscribe page), so the fact and what it
did to the user commit together or not at all.

A rule fires at most once per message: a second link clicked, or a second goal event, of a message a rule has
already fired for does nothing more. A conversion rule that names only an ``event`` also fires on tracked events
that converted no message (buying a full-price membership); those have no message, so it fires each time.
Users are changed through the user store (``store.bulk``), so ``updated_at`` moves and the segment index, which
follows it, sees the change; ``fire`` returns the users it changed so that the caller can tell this process's
index at once (``SegmentService.users_changed``). Firings are kept on the user's record (``feedback_firings``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from clarion.store import bulk
from clarion.store import feedback_rules as store
from clarion.store.driver import Conn

TRIGGERS = ("click", "convert", "unsubscribe")
MATCH_FIELDS = ("template", "campaign", "event", "link")


@dataclass(frozen=True, slots=True)
class Fact:
    """Something a user did that rules may answer: ``trigger`` is one of :data:`TRIGGERS`; the message (with its
    template and campaign, looked up by ``fire`` when not given) is None for a tracked event that converted none,
    or an unsubscribe link that names no delivery."""

    trigger: str
    user_id: str
    message_id: str | None = None
    template: str | None = None
    campaign: str | None = None
    event: str | None = None
    link: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    key: str
    on: str
    match: Mapping[str, str]
    actions: tuple[Mapping[str, Any], ...]

    @classmethod
    def of(cls, key: str, definition: Mapping[str, Any]) -> Rule:
        return cls(key, definition["on"], definition.get("match") or {}, tuple(definition["actions"]))

    def matches(self, fact: Fact) -> bool:
        if fact.trigger != self.on:
            return False
        given = {"template": fact.template, "campaign": fact.campaign, "event": fact.event}
        if any(given[f] != self.match[f] for f in ("template", "campaign", "event") if f in self.match):
            return False
        return "link" not in self.match or (fact.link or "").startswith(self.match["link"])


@dataclass(slots=True)
class _Change:
    """What the fired rules do to one user: each tag's last word (add or remove), and the attributes set."""

    tags: dict[str, bool]
    attributes: dict[str, Any]


async def fire(conn: Conn, facts: Sequence[Fact], *, now: datetime) -> list[str]:
    """Fire the enabled rules that ``facts`` match, in the caller's transaction; returns the users changed.
    One query for the rules whatever the number of facts; the rest only when some rule matches."""
    triggers = {fact.trigger for fact in facts}
    rules = [Rule.of(row.key, row.definition) for row in await store.enabled(conn) if row.definition["on"] in triggers]
    if not rules:
        return []
    facts = await _with_messages(conn, facts)
    hits = [(rule, fact) for fact in facts for rule in rules if rule.matches(fact)]
    if not hits:
        return []
    known = await bulk.known_users(conn, {fact.user_id for _, fact in hits})
    hits = [(rule, fact) for rule, fact in hits if fact.user_id in known]
    bound = [(rule.key, (fact.user_id, fact.message_id)) for rule, fact in hits if fact.message_id is not None]
    done = await store.fired(conn, {key for key, _ in bound}, {pair for _, pair in bound})
    chosen = []
    for rule, fact in hits:
        if fact.message_id is not None:
            if (rule.key, fact.message_id) in done:
                continue
            done.add((rule.key, fact.message_id))
        chosen.append((rule, fact))
    if not chosen:
        return []
    changed = await _apply(conn, _changes(chosen), now)
    await store.record_firings(conn, [_firing(rule, fact, now) for rule, fact in chosen])
    return changed


async def _with_messages(conn: Conn, facts: Sequence[Fact]) -> list[Fact]:
    """``facts`` with the template and campaign of the messages they name (one look-up for those missing)."""
    missing = {fact.message_id for fact in facts if fact.message_id is not None and fact.template is None}
    if not missing:
        return list(facts)
    found = await store.messages(conn, missing)
    out = []
    for fact in facts:
        if fact.message_id in missing and fact.message_id in found:
            template, campaign = found[fact.message_id]
            fact = replace(fact, template=template, campaign=campaign)
        out.append(fact)
    return out


def _changes(chosen: Sequence[tuple[Rule, Fact]]) -> dict[str, _Change]:
    """Each user's change, the rules' actions taken in order (a later action on the same tag or attribute wins)."""
    out: dict[str, _Change] = {}
    for rule, fact in chosen:
        change = out.setdefault(fact.user_id, _Change({}, {}))
        for action in rule.actions:
            if "add_tag" in action:
                change.tags[action["add_tag"]] = True
            elif "remove_tag" in action:
                change.tags[action["remove_tag"]] = False
            else:
                change.attributes.update(action["set"])
    return out


async def _apply(conn: Conn, changes: Mapping[str, _Change], now: datetime) -> list[str]:
    """Write ``changes`` through the user store: one retag per tag and direction, one merge of attributes."""
    by_tag: dict[tuple[str, bool], list[str]] = {}
    for user_id, change in changes.items():
        for tag, add in change.tags.items():
            by_tag.setdefault((tag, add), []).append(user_id)
    changed: set[str] = set()
    for (tag, add), user_ids in by_tag.items():
        changed.update((await bulk.retag(conn, tag, user_ids, add=add, now=now)).changed)
    profiles = [bulk.Profile(u, {"attributes": c.attributes}) for u, c in changes.items() if c.attributes]
    if profiles:
        changed.update((await bulk.upsert_users(conn, profiles, bulk.Mode.MERGE, now)).updated)
    return sorted(changed)


def _firing(rule: Rule, fact: Fact, now: datetime) -> dict[str, Any]:
    what = {"template": fact.template, "campaign": fact.campaign, "event": fact.event, "link": fact.link}
    detail = {k: v for k, v in what.items() if v is not None} | {"actions": [dict(a) for a in rule.actions]}
    return {
        "rule_key": rule.key,
        "user_id": fact.user_id,
        "message_id": fact.message_id,
        "trigger": fact.trigger,
        "detail": detail,
        "at": now,
    }
