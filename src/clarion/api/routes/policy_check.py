"""``POST /v1/policies/check``: what the policies would decide for a user, a template and a moment — without
sending, counting or marking anything. The first tool support and operators reach for."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import Field, StringConstraints

from clarion.api import deps, problems, views
from clarion.api.schemas import Strict
from clarion.domain import errors, model, render, variants
from clarion.domain.policy import config
from clarion.domain.policy.decision import Candidate

router = APIRouter(prefix="/v1/policies", tags=["policies"], dependencies=deps.AUTH)
Key = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class CheckIn(Strict):
    user_id: Key
    template: Key
    channels: list[model.Channel] | None = Field(default=None, min_length=1, description="default: all")
    at: datetime | None = Field(default=None, description="the moment to judge (ISO with zone); default now")
    data: dict[str, Any] = Field(default_factory=dict)
    dedup_key: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None


@router.post("/check", response_model=views.PolicyCheck, responses=problems.answers(404, 409))
async def check(body: CheckIn, clarion: deps.Services) -> dict[str, Any]:
    """Each channel's decision, every policy's own answer (with the parameters and counter values it saw), and
    the rendered content the keyword lists judged. Caps are reported as they stand: nothing is consumed."""
    if body.at is not None and body.at.tzinfo is None:
        raise errors.InvalidInput("at needs a time zone (e.g. 2026-01-01T21:00:00+08:00)", details={"field": "at"})
    at = (body.at or datetime.now(UTC)).astimezone(UTC)
    template = await clarion.catalog.template(body.template)
    if template is None:
        raise errors.NotFound("template", body.template)
    user = (await clarion.intake.users.load_many([body.user_id])).get(body.user_id)
    if user is None:
        raise errors.NotFound("user", body.user_id)
    channels = template.channels_for(body.channels)
    prefs = user.preferences or config.NO_PREFERENCES
    candidates = [
        Candidate("check", user, template, c, at, user.address_for(c), body.dedup_key, prefs) for c in channels
    ]
    context = render.context_for(user, body.data)
    contents: list[dict[str, Any] | None] = []
    render_error = None
    for c in channels:
        try:
            contents.append(render.compose(template, c, context, variants.choose(template, user.user_id)))
        except errors.RenderError as exc:
            render_error = exc.reason
            contents.append(None)
    reports = await clarion.policies.check(candidates, contents)
    for report, content in zip(reports, contents, strict=True):
        report["content"] = content
    answer: dict[str, Any] = {
        "user_id": user.user_id,
        "template": template.key,
        "category": template.category.value,
        "priority": template.priority.value,
        "at": at.isoformat(),
        "channels": reports,
    }
    if render_error:
        answer["render_error"] = render_error
    return answer
