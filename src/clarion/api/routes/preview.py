"""``POST /v1/templates/{key}/preview``: every channel's rendered output, SMS segments, keyword findings."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import Field, StringConstraints

from clarion.api import deps, problems, views
from clarion.api.schemas import Key, Strict
from clarion.domain import model
from clarion.pipeline import previewing

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
    return await previewing.preview(
        clarion,
        key,
        user_id=body.user_id,
        data=body.data,
        channels=body.channels,
        variant=body.variant,
        version=body.version,
    )
