"""A template's versions and their review: the use cases behind ``/v1/templates/{key}/versions…`` and
``POST /v1/templates/{key}/test``, kept out of the routes so that the API and the console list, compare,
submit, approve, reject and test-send a version the same way, with the same checks and the same audit.

The rules themselves are ``domain.approval``'s: who may act, in which state, at which level; here they are
applied to the stored version in one transaction, and every action — a refused one too — is audited under the
actor's name (an API key's name, or ``operator:<name>`` from the console)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import approval, errors, model
from clarion.pipeline import intake
from clarion.store import templates as template_store

if TYPE_CHECKING:
    from clarion import bootstrap

ACTIONS = ("submit", "approve", "reject")


def version_json(row: Any, settings: approval.Settings, *, body: bool = False) -> dict[str, Any]:
    """A version's state; ``awaiting`` names the review level a pending version waits for. ``origin`` says who
    wrote it: null for an operator, ``{"kind": "llm", "model": …}`` for AI copy — with ``body``, the whole record
    (the prompt, the model's raw answer, the regenerations)."""
    awaiting = None
    if row.status == approval.Status.PENDING_REVIEW:
        levels = settings.levels_for(model.Category(row.body["category"])) or ("review",)
        awaiting = levels[min(len(row.approvals), len(levels) - 1)]
    found = {
        "template": row.template_key,
        "version": row.version,
        "status": row.status,
        "author": row.author,
        "approvals": row.approvals,
        "awaiting": awaiting,
        "comment": row.comment,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "origin": _origin(row.origin, whole=body),
    }
    return {**found, "body": row.body} if body else found


def _origin(origin: Any, *, whole: bool) -> dict[str, Any] | None:
    if not origin:
        return None
    return dict(origin) if whole else {"kind": origin.get("kind"), "model": origin.get("model")}


@dataclass(frozen=True, slots=True)
class NextReview:
    """Who may act next on a pending version: the level it waits for (its place among the category's levels),
    and the people who may not approve it (its author, and whoever approved an earlier level)."""

    level: str
    position: int  # 1-based
    levels: tuple[str, ...]
    excluded: tuple[str, ...]


async def next_review(clarion: bootstrap.Clarion, key: str, number: int) -> NextReview | None:
    """The review version ``number`` waits for, as ``approval.approve`` will decide it; None unless pending."""
    async with clarion.db.read() as conn:
        row = await stored_version(conn, key, number)
        settings = await template_store.load_settings(conn)
    if row.status != approval.Status.PENDING_REVIEW:
        return None
    levels = settings.levels_for(model.Category(row.body["category"])) or ("review",)
    index = min(len(row.approvals), len(levels) - 1)
    approvers = [a["by"] for a in row.approvals]
    excluded = tuple(dict.fromkeys([*([row.author] if row.author else []), *approvers]))
    return NextReview(levels[index], index + 1, levels, excluded)


async def stored_version(conn: AsyncConnection, key: str, number: int) -> Any:
    """The version's row; ``NotFound`` naming ``key@number`` when there is none."""
    row = await template_store.get_version(conn, key, number)
    if row is None:
        raise errors.NotFound("template version", f"{key}@{number}")
    return row


async def versions(
    clarion: bootstrap.Clarion, key: str, *, limit: int = 100, before: int | None = None
) -> dict[str, Any]:
    """The template's saved versions, newest first, a page of ``limit`` (also those of a deleted template)."""
    async with clarion.db.read() as conn:
        rows = await template_store.list_versions(conn, key, limit=limit + 1, before=before)
        settings = await template_store.load_settings(conn)
        if not rows and before is None:
            raise errors.NotFound("template", key)
    page = rows[:limit]
    return {
        "versions": [version_json(r, settings) for r in page],
        "next_cursor": page[-1].version if len(rows) > limit else None,
    }


async def version(clarion: bootstrap.Clarion, key: str, number: int) -> dict[str, Any]:
    """One version with its ``body``: the template exactly as that save stored it."""
    async with clarion.db.read() as conn:
        row = await stored_version(conn, key, number)
        return version_json(row, await template_store.load_settings(conn), body=True)


async def diff(clarion: bootstrap.Clarion, key: str, number: int, against: int | None = None) -> dict[str, Any]:
    """What changed from version ``against`` (default ``number - 1``; 0: nothing) to ``number``: per changed
    field path the old and new value, and for texts a unified diff."""
    against = number - 1 if against is None else against
    async with clarion.db.read() as conn:
        new = await stored_version(conn, key, number)
        old = await stored_version(conn, key, against) if against else None
    changes = approval.diff(
        old.body if old is not None else {}, new.body, old_label=f"{key}@{against}", new_label=f"{key}@{number}"
    )
    return {"template": key, "version": number, "against": against, "changes": changes}


async def review(
    clarion: bootstrap.Clarion, actor: approval.Actor, key: str, number: int, action: str, comment: str | None
) -> dict[str, Any]:
    """Apply ``action`` (one of ``ACTIONS``) to a version as the domain decides, and audit it — a refusal too,
    with its reason, before raising it. Returns the version's new state with the template's ``live_version``."""
    if action not in ACTIONS:
        raise errors.InvalidInput(f"action: one of {', '.join(ACTIONS)}", details={"field": "action"})
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> approval.Outcome | approval.Refusal:
        template = await template_store.template_rows(conn, key=key)
        if not template:
            raise errors.NotFound("template", key)
        row = await template_store.get_version(conn, key, number, lock=True)
        if row is None:
            raise errors.NotFound("template version", f"{key}@{number}")
        found = template_store.version_of(row)
        settings = await template_store.load_settings(conn)
        decided: approval.Outcome | approval.Refusal
        if action == "submit":
            decided = approval.submit(found, actor)
        elif action == "approve":
            decided = approval.approve(
                found, actor, settings, at=now, comment=comment, live_version=template[0].live_version
            )
        else:
            decided = approval.reject(found, actor, comment=comment)
        subject = template_store.subject(key, number)
        if isinstance(decided, approval.Refusal):
            refused = {"refused": decided.code, "message": decided.message, "comment": comment}
            await template_store.audit(
                conn, actor=actor.name, action=f"template.{action}.refused", subject=subject, at=now, detail=refused
            )
            return decided
        live = await template_store.record_outcome(conn, key, number, decided, now)
        detail = {"status": decided.status.value, "level": decided.level, "comment": comment, "live_version": live}
        await template_store.audit(
            conn, actor=actor.name, action=f"template.{action}", subject=subject, at=now, detail=detail
        )
        return decided

    decided = await clarion.db.write(job)
    if isinstance(decided, approval.Refusal):
        raise decided.error()
    clarion.invalidate()
    async with clarion.db.read() as conn:
        row = await stored_version(conn, key, number)
        found = version_json(row, await template_store.load_settings(conn))
        live = (await template_store.template_rows(conn, key=key))[0].live_version
    return {**found, "live_version": live}


async def test_send(
    clarion: bootstrap.Clarion,
    actor: approval.Actor,
    key: str,
    *,
    to: Sequence[str],
    version: int | None = None,
    data: dict[str, Any] | None = None,
    channels: list[model.Channel] | None = None,
) -> dict[str, Any]:
    """Send one version (default the latest; a draft or one under review too) to whitelisted users only, every
    text prefixed with the approval settings' ``test_prefix``. A recipient not on the whitelist refuses the whole
    request (403 ``not_a_test_recipient`` naming them) and nothing is sent. Needs ``editor``, ``approver`` or
    ``admin``; audited as ``template.test``. Returns the send's answer with the ``version`` and ``prefix``."""
    approval.require(actor.roles, approval.TEST)
    recipients = list(dict.fromkeys(to))
    if not recipients:
        raise errors.InvalidInput("to: at least one recipient", details={"field": "to"})
    async with clarion.db.read() as conn:
        template = await template_store.template_rows(conn, key=key)
        if not template:
            raise errors.NotFound("template", key)
        chosen = await stored_version(conn, key, version or template[0].version)
        outsiders = await template_store.not_test_recipients(conn, recipients)
        settings = await template_store.load_settings(conn)
    if outsiders:
        raise approval.Forbidden(
            f"not on the test whitelist: {', '.join(outsiders)} (PUT /v1/test-recipients)",
            code="not_a_test_recipient",
            details={"field": "to", "user_ids": outsiders},
        )
    accepted = await clarion.intake.send(
        intake.SendCommand(template=key, to=recipients, data=data or {}, channels=channels),
        template=template_store.template_at(template[0], chosen.body, chosen.version),
        prefix=settings.test_prefix,
    )
    now = datetime.now(UTC)
    detail = {"to": recipients, "request_id": accepted.response.get("request_id"), "status": chosen.status}

    async def job(conn: AsyncConnection) -> None:
        subject = template_store.subject(key, chosen.version)
        await template_store.audit(
            conn, actor=actor.name, action="template.test", subject=subject, at=now, detail=detail
        )

    await clarion.db.write(job)
    return {**accepted.response, "version": chosen.version, "prefix": settings.test_prefix}
