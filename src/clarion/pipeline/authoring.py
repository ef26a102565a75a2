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


async def save_template(
    clarion: bootstrap.Clarion,
    key: str,
    body: schemas.TemplateIn,
    *,
    actor: str,
    roles: tuple[str, ...],
) -> Outcome:
    """Store ``body`` as the template's next version. Needs ``editor`` or ``admin``."""
    approval.require(roles, approval.EDIT)
    values = body.model_dump(mode="json", exclude={"channels", "policy"})
    values["channels"] = body.channels.model_dump(mode="json", exclude_none=True)
    for channel, content in values["channels"].items():
        render.check(content, f"channels.{channel}")
    values["policy"] = config.TemplatePolicy.from_json(body.policy).to_json() if body.policy is not None else None
    warnings = await keyword_warnings(clarion, dict(render.contents(values["channels"], values.get("variants"))))
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> template_store.Saved:
        settings = await template_store.load_settings(conn)
        saved = await template_store.save(conn, key, values, author=actor, settings=settings, now=now)
        await template_store.audit(
            conn,
            actor=actor,
            action="template.save",
            subject=template_store.subject(key, saved.version),
            at=now,
            detail={"status": saved.status.value, "live_version": saved.live_version},
        )
        return saved

    saved = await clarion.db.write(job)
    clarion.invalidate()
    return Outcome(saved, warnings)


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
