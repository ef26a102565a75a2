"""Saving a template: the use case behind ``PUT /v1/templates/{key}``, kept out of the route so that every
surface that saves a template does the same. It checks every channel's content (syntax, variables), refuses a
block-list word, keeps the mask-list words as warnings, stores the next version (live at once only where the
category needs no approval) and audits it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import approval, errors, render
from clarion.domain.policy import config, decision, keywords
from clarion.store import templates as template_store

if TYPE_CHECKING:
    from clarion import bootstrap
    from clarion.api import schemas


@dataclass(frozen=True, slots=True)
class Outcome:
    saved: template_store.Saved
    warnings: list[dict[str, str]]
    #: the version's status and the template's live version after the save (and the submission, when asked)
    status: approval.Status
    live_version: int | None


async def save_template(
    clarion: bootstrap.Clarion,
    key: str,
    body: schemas.TemplateIn,
    *,
    actor: str,
    roles: tuple[str, ...],
    origin: dict[str, Any] | None = None,
    detail: dict[str, Any] | None = None,
    submit: str | None = None,
) -> Outcome:
    """Store ``body`` as the template's next version. Needs ``editor`` or ``admin``.

    ``origin``: where a machine wrote it (kept with the version); ``detail``: added to the audit entry;
    ``submit``: submit the new version for review in the same transaction, with this comment (a version that
    needs no review is live at once and is not submitted)."""
    approval.require(roles, approval.EDIT)
    values = body.model_dump(mode="json", exclude={"channels", "policy"})
    values["channels"] = body.channels.model_dump(mode="json", exclude_none=True)
    for channel, content in values["channels"].items():
        render.check(content, f"channels.{channel}")
    values["policy"] = config.TemplatePolicy.from_json(body.policy).to_json() if body.policy is not None else None
    warnings = await keyword_warnings(clarion, dict(render.contents(values["channels"], values.get("variants"))))
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> Outcome:
        settings = await template_store.load_settings(conn)
        saved = await template_store.save(conn, key, values, author=actor, settings=settings, now=now, origin=origin)
        subject = template_store.subject(key, saved.version)
        await template_store.audit(
            conn,
            actor=actor,
            action="template.save",
            subject=subject,
            at=now,
            detail={"status": saved.status.value, "live_version": saved.live_version, **(detail or {})},
        )
        status, live = saved.status, saved.live_version
        if submit is not None and status is approval.Status.DRAFT:
            row = await template_store.get_version(conn, key, saved.version)
            decided = approval.submit(template_store.version_of(row), approval.Actor(actor, roles))
            if isinstance(decided, approval.Refusal):
                raise decided.error()
            live = await template_store.record_outcome(conn, key, saved.version, decided, now)
            submitted = {"status": decided.status.value, "level": None, "comment": submit, "live_version": live}
            await template_store.audit(
                conn, actor=actor, action="template.submit", subject=subject, at=now, detail=submitted
            )
            status = decided.status
        return Outcome(saved, warnings, status, live)

    outcome = await clarion.db.write(job)
    clarion.invalidate()
    return outcome


async def keyword_warnings(clarion: bootstrap.Clarion, contents: dict[str, Any]) -> list[dict[str, str]]:
    """The mask-list words in ``contents`` ({field: content}, each once per field); raises for a block-list word."""
    verdict, _, masked = keywords.screen(contents, await clarion.catalog.keyword_lists())
    if isinstance(verdict, decision.Drop):
        hit = {"list": verdict.detail["list"], "word": verdict.detail["word"], "field": verdict.detail["field"]}
        raise errors.InvalidInput(
            f"{hit['field']}: contains {hit['word']!r} from the blocked keyword list {hit['list']!r}",
            code="blocked_keyword",
            details=hit,
        )
    found = {(m["list"], m["word"], m["field"]): None for m in masked}
    return [{"list": k, "word": w, "field": f} for k, w, f in found]
