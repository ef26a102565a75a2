"""Configuring Clarion's policies and access: policy settings, caps and keyword lists (and what the lists do to a
text), suppressions added and lifted with a reason, a user's preferences, API keys, and the audit log's pages
(provider accounts and routes: ``pipeline.provisioning``).

These are the use cases the API's routes and the console's configuration pages share, so both faces check the
same things, write the same rows and leave the same audit entries; the caller has checked the role and names
the ``actor`` (an API key's name, or ``operator:<name>``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import apikeys, bootstrap
from clarion.domain import errors, model
from clarion.domain.policy import config
from clarion.domain.policy import decision as verdicts
from clarion.domain.policy import keywords as keyword_policy
from clarion.store import audit as audit_log
from clarion.store import policies
from clarion.store import tables as t
from clarion.store import templates as template_store

# -- policies ------------------------------------------------------------------------------------------------


def merged_settings(current: config.PolicySettings, change: dict[str, Any]) -> config.PolicySettings:
    """``change``'s top-level fields over ``current``; ``enabled`` switch by switch."""
    stored = current.to_json()
    merged = {**stored, **change}
    if isinstance(change.get("enabled"), dict):
        merged["enabled"] = {**stored["enabled"], **change["enabled"]}
    return config.PolicySettings.from_json(merged)


async def update_settings(clarion: bootstrap.Clarion, change: dict[str, Any], *, actor: str) -> config.PolicySettings:
    """Change some policy settings (see ``merged_settings``), refused before queueing behind other writes when
    invalid; audited as ``policy_settings.update`` with what changed."""
    async with clarion.db.read() as conn:
        merged_settings(await policies.load_settings(conn), change)
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> config.PolicySettings:
        stored = await policies.load_settings(conn)
        settings = merged_settings(stored, change)  # onto what is stored at write time
        await policies.save_settings(conn, settings, now)
        detail = audit_log.changes(stored.to_json(), settings.to_json())
        await audit_log.record(
            conn, actor=actor, action="policy_settings.update", subject="policy_settings", at=now, detail=detail
        )
        return settings

    settings = await clarion.db.write(job)
    clarion.catalog.invalidate()
    return settings


def cap_summary(cap: config.Cap | None) -> dict[str, Any] | None:
    """A cap as its audit entry shows it: the stored definition, without the key the subject names."""
    return {k: v for k, v in cap.to_json().items() if k != "key"} if cap is not None else None


async def save_cap(clarion: bootstrap.Clarion, cap: config.Cap, *, actor: str) -> bool:
    """Create or replace a frequency cap (True: created); audited as ``cap.put`` with before and after."""
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        before = await policies.get_cap(conn, cap.key)
        created = await policies.put_cap(conn, cap, now)
        detail = {"key": cap.key, "before": cap_summary(before), "after": cap_summary(cap)}
        await audit_log.record(conn, actor=actor, action="cap.put", subject=f"cap:{cap.key}", at=now, detail=detail)
        return created

    created = await clarion.db.write(job)
    clarion.catalog.invalidate()
    return created


def keyword_list_json(spec: policies.KeywordListSpec, *, words: bool = True) -> dict[str, Any]:
    shown = spec.to_json()
    shown["word_count"] = len(spec.words)
    if not words:
        del shown["words"]
    return shown


def keyword_list_summary(spec: policies.KeywordListSpec | None) -> dict[str, Any] | None:
    """A list as its audit entry shows it: everything but the words (a list can hold 100,000), which it counts."""
    return keyword_list_json(spec, words=False) if spec is not None else None


async def save_keyword_list(
    clarion: bootstrap.Clarion, spec: policies.KeywordListSpec, *, actor: str
) -> policies.KeywordListSpec:
    """Create or replace a keyword list, bumping its version; audited as ``keyword_list.put`` with how many words
    came and went (never the words)."""
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> policies.KeywordListSpec:
        before = await policies.get_keyword_list(conn, spec.key)
        stored = await policies.put_keyword_list(conn, spec, now)
        old = set(before.words) if before is not None else set()
        detail = {
            "key": spec.key,
            "before": keyword_list_summary(before),
            "after": keyword_list_summary(stored),
            "words_added": len(set(stored.words) - old),
            "words_removed": len(old - set(stored.words)),
        }
        await audit_log.record(
            conn, actor=actor, action="keyword_list.put", subject=f"keyword_list:{spec.key}", at=now, detail=detail
        )
        return stored

    stored = await clarion.db.write(job)
    clarion.catalog.invalidate()
    return stored


async def screen_text(clarion: bootstrap.Clarion, text: str) -> dict[str, Any]:
    """What the enabled keyword lists would do to ``text`` if a message said it: ``blocked`` (the word, its list
    and the reason) or the text as it would go out with the ``masked`` words — nothing is sent or recorded."""
    lists = await clarion.catalog.keyword_lists()
    decision, screened, masked = keyword_policy.screen({"text": text}, lists)
    blocked = {"reason": decision.reason, **decision.detail} if isinstance(decision, verdicts.Drop) else None
    return {"blocked": blocked, "text": screened.get("text", text), "masked": masked}


async def add_suppression(
    clarion: bootstrap.Clarion,
    *,
    user_id: str | None,
    address: str | None,
    channel: model.Channel | None,
    category: model.Category | None,
    reason: str | None,
    source: str,
    actor: str,
) -> tuple[config.Suppression, bool]:
    """Stop sending to a user or an address (on one channel or category, or on all): (the suppression, whether
    it is new). A new one is audited as ``suppression.add``; recording an existing one changes nothing."""
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> tuple[config.Suppression, bool]:
        found, created = await policies.add_suppression(
            conn,
            user_id=user_id,
            address=address,
            channel=channel,
            category=category,
            reason=reason,
            source=source,
            now=now,
        )
        if created:
            subject = f"user:{user_id}" if user_id is not None else f"suppression:{found.id}"
            await audit_log.record(
                conn, actor=actor, action="suppression.add", subject=subject, at=now, detail=found.to_json()
            )
        return found, created

    answer = await clarion.db.write(job)
    clarion.catalog.invalidate()
    return answer


async def lift_suppression(clarion: bootstrap.Clarion, suppression_id: str, *, reason: str | None, actor: str) -> None:
    """Remove a suppression, so messages reach its user or address again; the audit log's ``suppression.lift``
    keeps what was lifted and ``reason``. ``NotFound`` for an unknown id."""
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        table = t.suppressions
        row = (await conn.execute(table.select().where(table.c.id == suppression_id))).first()
        if row is None or not await policies.delete_suppression(conn, suppression_id):
            return False
        lifted = {c: getattr(row, c) for c in ("user_id", "address", "channel", "category", "reason", "source")}
        detail = {"suppression": {**lifted, "created_at": row.created_at.isoformat()}, "reason": reason}
        await audit_log.record(
            conn, actor=actor, action="suppression.lift", subject=f"suppression:{suppression_id}", at=now, detail=detail
        )
        return True

    if not await clarion.db.write(job):
        raise errors.NotFound("suppression", suppression_id)
    clarion.catalog.invalidate()


async def save_preferences(
    clarion: bootstrap.Clarion, user_id: str, chosen: config.Preferences, *, actor: str
) -> config.Preferences:
    """Replace a user's preferences (the whole document: what is left out is on); ``NotFound`` for an unknown
    user. Audited as ``user.preferences`` with what changed, since it decides what reaches the user."""
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        row = (await conn.execute(sa.select(t.users.c.preferences).where(t.users.c.user_id == user_id))).first()
        if row is None:
            return False
        before = config.Preferences.from_json(row.preferences) if row.preferences else config.NO_PREFERENCES
        await conn.execute(
            t.users.update().where(t.users.c.user_id == user_id).values(preferences=chosen.to_json(), updated_at=now)
        )
        detail = audit_log.changes(before.to_json(), chosen.to_json())
        await audit_log.record(
            conn, actor=actor, action="user.preferences", subject=f"user:{user_id}", at=now, detail=detail
        )
        return True

    if not await clarion.db.write(job):
        raise errors.NotFound("user", user_id)
    return chosen


# -- API keys ------------------------------------------------------------------------------------------------


async def issue_key(
    clarion: bootstrap.Clarion,
    name: str,
    roles: Sequence[str],
    *,
    expires_at: datetime | None,
    expires_in_days: float | None,
    actor: str,
) -> apikeys.Issued:
    """A new API key with ``roles``, expiring at ``expires_at`` or ``expires_in_days`` from now (not both), shown
    in clear in this answer only; audited as ``api_key.create``."""
    if expires_in_days is not None:
        if expires_at is not None:
            raise errors.InvalidInput(
                "give expires_at or expires_in_days, not both", details={"fields": ["expires_at", "expires_in_days"]}
            )
        expires_at = datetime.now(UTC) + timedelta(days=expires_in_days)
    return await clarion.keys.issue(name, roles, expires_at=expires_at, actor=actor)


# -- the audit log -------------------------------------------------------------------------------------------


async def audit_page(
    clarion: bootstrap.Clarion,
    *,
    subject: str | None,
    actor: str | None,
    action: str | None,
    limit: int,
    after: int | None,
) -> dict[str, Any]:
    """A page of the audit log, newest first, filtered by subject, actor and action; ``next_cursor`` is what
    ``after`` takes for the next page (None on the last)."""
    async with clarion.db.read() as conn:
        rows = await template_store.audit_entries(
            conn, subject=subject, actor=actor, action=action, limit=limit + 1, before=after
        )
    page = rows[:limit]
    return {
        "entries": [
            {
                "id": r.id,
                "at": r.at.isoformat(),
                "actor": r.actor,
                "action": r.action,
                "subject": r.subject,
                "detail": r.detail,
            }
            for r in page
        ],
        "next_cursor": page[-1].id if len(rows) > limit else None,
    }
