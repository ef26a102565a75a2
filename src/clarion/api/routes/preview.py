"""``POST /v1/templates/{key}/preview``: every channel's rendered output, SMS segments, keyword findings."""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Path
from pydantic import Field, StringConstraints

from clarion.api import deps, problems, views
from clarion.api.schemas import Key, Strict
from clarion.domain import errors, model, render, sms, variants
from clarion.domain.policy import decision, keywords
from clarion.store import records, templates
from clarion.store import tables as t

router = APIRouter(prefix="/v1", tags=["templates"], dependencies=deps.AUTH)
KeyPath = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")


class PreviewIn(Strict):
    user_id: Key | None = Field(default=None, description="fills user.* and chooses the user's A/B variant")
    data: dict[str, Any] = Field(default_factory=dict, description="sample data, as a send's data")
    channels: list[model.Channel] | None = Field(default=None, min_length=1, description="default: all")
    variant: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="the variant to show; default: the user's, or the first without a user"
    )
    version: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="a saved version to show; default: the latest"
    )


@router.post("/templates/{key}/preview", response_model=views.Preview, responses=problems.answers(404))
async def preview(body: PreviewIn, clarion: deps.Services, key: str = KeyPath) -> dict[str, Any]:
    """What each channel of the template would send, without sending anything: the content as it would go out
    (keyword-list words masked), for SMS its billing (``segments``: encoding, characters, count — counted before
    links are shortened), the keyword findings (``masked`` words, or the ``blocked`` word that would filter the
    delivery) and the A/B variant used. A channel that cannot be rendered (a missing variable) reports its
    ``error`` and the others are still shown. It shows the template as last saved (the version under review,
    when approval is pending), or the saved ``version`` asked for."""
    template = await _template(clarion, key, body.version)
    user = None
    if body.user_id is not None:
        user = (await clarion.intake.users.load_many([body.user_id])).get(body.user_id)
        if user is None:
            raise errors.NotFound("user", body.user_id)
    channels = template.channels_for(body.channels)
    variant = _variant(template, body.variant, body.user_id)
    context = render.context_for(user, body.data)
    lists = await clarion.catalog.keyword_lists()
    return {
        "template": template.key,
        "version": template.version,
        "user_id": body.user_id,
        "variant": variant,
        "variants": [{"name": v.name, "weight": v.weight} for v in template.variants],
        "channels": {c.value: _channel(template, c, context, variant, lists) for c in channels},
    }


async def _template(clarion: deps.Services, key: str, version: int | None) -> model.Template:
    async with clarion.db.read() as conn:
        row = (await conn.execute(sa.select(t.templates).where(t.templates.c.key == key))).first()
        if row is None:
            raise errors.NotFound("template", key)
        if version is None or version == row.version:
            return records.template_from_row(row)
        v = t.template_versions.c
        query = sa.select(v.body).where(v.template_key == key, v.version == version)
        saved = (await conn.execute(query)).scalar()
    if saved is None:
        raise errors.NotFound("template version", f"{key}@{version}")
    return templates.template_at(row, saved, version)


def _variant(template: model.Template, asked: str | None, user_id: str | None) -> str | None:
    if asked is not None:
        if variants.find(template, asked) is None:
            raise errors.InvalidInput(
                f"template {template.key!r} has no variant {asked!r}",
                details={"field": "variant", "known": [v.name for v in template.variants]},
            )
        return asked
    if user_id is not None:
        return variants.choose(template, user_id)
    return template.variants[0].name if template.variants else None


def _channel(
    template: model.Template,
    channel: model.Channel,
    context: dict[str, Any],
    variant: str | None,
    lists: list[Any],
) -> dict[str, Any]:
    try:
        content = render.compose(template, channel, context, variant)
    except errors.RenderError as exc:
        code = exc.reason.split(":", 1)[0] if ":" in exc.reason else "render_error"
        error: dict[str, Any] = {"code": code, "message": exc.reason}
        if isinstance(exc, errors.MissingVariable):
            error["variable"] = exc.name
        return {"content": None, "error": error}
    verdict, screened, masked = keywords.screen(content, lists)
    findings: dict[str, Any] = {"masked": masked, "blocked": None}
    if isinstance(verdict, decision.Drop):
        findings["blocked"] = {k: verdict.detail.get(k) for k in ("list", "word", "field")}
    out: dict[str, Any] = {"content": screened, "keywords": findings}
    if channel is model.Channel.SMS and isinstance(screened.get("text"), str):
        segments = sms.count_segments(screened["text"])
        out["segments"] = {"encoding": segments.encoding, "characters": segments.characters, "count": segments.count}
    return out
