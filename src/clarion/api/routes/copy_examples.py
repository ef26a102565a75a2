"""The copy knowledge base over HTTP: what copy generation learns from, and the operators' say in it.

``GET /v1/copy/examples`` shows, per channel and category, the measured copies a generator would be given as
examples (pinned first, then ranked by the Wilson lower bound of their rate) and those it would not, each with
the reason; with ``q`` (a brief's text) it shows exactly what ``copywriting.knowledge.similar`` retrieves for it.
``PUT /v1/copy/examples/{template}@{version}`` pins or bans a template version (``admin``/``editor``; audited).
``GET /v1/copy/dataset`` exports every measured copy as JSON lines for fine-tuning. Reading needs any valid key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.api import deps, problems, schemas, views
from clarion.copywriting import knowledge
from clarion.domain import approval, errors, model
from clarion.store import audit as audit_log
from clarion.store import copy_examples as store
from clarion.store import templates as template_store

router = APIRouter(prefix="/v1/copy", tags=["copy"], dependencies=deps.AUTH)
JSON_LINES = "application/x-ndjson"


class Interval(views.View):
    rate: float = Field(description="per message sent (0 when none was)")
    low: float = Field(description="the Wilson 95 % interval's lower bound")
    high: float


class ExampleRow(views.View):
    template: str
    version: int
    variant: str | None = Field(description="the A/B variant (null: the template's own content)")
    channel: model.Channel
    category: str
    brief: str = Field(description="what the copy was written for: the template's name, and an AI draft's brief")
    text: str = Field(description="the copy as written, in the template language")
    sent: int
    clicked: int
    converted: int
    click_rate: Interval = Field(description="clicked / sent")
    conversion_rate: Interval = Field(description="converted / sent")
    state: Literal["pinned", "banned"] | None = Field(description="an operator's mark on the version, if any")
    rank: int | None = Field(description="1 is the best ranked copy; null when not ranked")
    matched: list[str] = Field(description="the terms of q the copy shares (empty without q)")
    why: str = Field(description="why it is offered, or left out, in words")


class Examples(views.View):
    channel: model.Channel | None
    category: model.Category | None
    q: str | None
    rank_by: Literal["click", "conversion"]
    min_sends: int = Field(description="sends a copy needs to be ranked")
    offered: list[ExampleRow] = Field(description="what the generator is given as examples, in this order")
    left_out: list[ExampleRow] = Field(description="what it is not given, and why")
    hints: list[str] = Field(description="the words that distinguish the top copies from the other ranked ones")


@router.get("/examples", response_model=Examples, responses=problems.answers(422))
async def list_examples(
    clarion: deps.Services,
    channel: model.Channel | None = None,
    category: model.Category | None = None,
    q: str | None = Query(default=None, min_length=1, max_length=4000, description="a brief's text"),
    limit: int = Query(default=3, ge=1, le=20, description="examples offered for q"),
    rank_by: Literal["click", "conversion"] = Query(default="click", description="the rate that orders copies"),
) -> dict[str, Any]:
    """What copy generation would learn from on ``channel`` in ``category`` (any, when not given): without ``q``
    the pinned copies, then the best ranked ones (up to 200); with ``q`` the ``limit`` examples retrieved for
    that brief (BM25 over its words, then ordered by the rate's lower bound). Left out: banned copies, copies
    with too few sends (the 50 most sent), and for ``q`` the ranked copies not retrieved."""
    found = await knowledge.catalogue(
        clarion,
        channel=channel and channel.value,
        category=category and category.value,
        q=q,
        limit=limit,
        rank_by=rank_by,
    )
    return {
        "channel": channel,
        "category": category,
        "q": q,
        "rank_by": rank_by,
        "min_sends": knowledge.MIN_SENDS,
        "offered": [_row(e) for e in found.offered],
        "left_out": [_row(e) for e in found.left_out],
        "hints": found.hints,
    }


def _row(e: knowledge.Example) -> dict[str, Any]:
    return {
        "template": e.template,
        "version": e.version,
        "variant": e.variant or None,
        "channel": e.channel,
        "category": e.category,
        "brief": e.brief,
        "text": e.text,
        "sent": e.sent,
        "clicked": e.clicked,
        "converted": e.converted,
        "click_rate": {"rate": e.click_rate, "low": e.click_interval[0], "high": e.click_interval[1]},
        "conversion_rate": {
            "rate": e.conversion_rate,
            "low": e.conversion_interval[0],
            "high": e.conversion_interval[1],
        },
        "state": "pinned" if e.pinned else "banned" if e.banned else None,
        "rank": e.rank,
        "matched": list(e.matched),
        "why": e.why,
    }


class MarkIn(schemas.Strict):
    state: Literal["pinned", "banned", "none"] = Field(
        description="pinned: always offered first; banned: never offered; none: ranked like any other"
    )
    reason: str | None = Field(default=None, min_length=1, max_length=500, description="shown with the example")


class Mark(views.View):
    template: str
    version: int
    state: Literal["pinned", "banned", "none"]
    reason: str | None
    actor: str | None = Field(description="who marked it (null: no mark)")
    updated_at: views.Timestamp | None


@router.put(
    "/examples/{template}@{version}",
    response_model=Mark,
    responses=problems.answers(403, 404),
)
async def mark_example(
    body: MarkIn,
    clarion: deps.Services,
    caller: deps.Caller,
    template: str = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$"),
    version: int = Path(ge=1, le=2**31 - 1),
) -> dict[str, Any]:
    """Pin a template version's copies (offered first as examples whatever their sends), ban them (never
    offered, nor exported), or clear the mark (``admin``/``editor``; 403 ``forbidden`` otherwise); 404 for a
    version that was never saved. Audited as ``copy_example.pinned|banned|none`` with the mark before."""
    approval.require(caller.roles, approval.EDIT)
    now = datetime.now(UTC)
    state = None if body.state == "none" else body.state
    reason = body.reason if state is not None else None

    async def job(conn: AsyncConnection) -> Any:
        if await template_store.get_version(conn, template, version) is None:
            raise errors.NotFound("template version", f"{template}@{version}")
        before = await store.get(conn, template, version)
        await store.put(conn, template, version, state=state, reason=reason, actor=caller.name, now=now)
        detail = {
            "before": {"state": before.state, "reason": before.reason} if before is not None else None,
            "after": {"state": state, "reason": reason} if state is not None else None,
        }
        await audit_log.record(
            conn,
            actor=caller.name,
            action=f"copy_example.{body.state}",
            subject=template_store.subject(template, version),
            at=now,
            detail=detail,
        )
        return await store.get(conn, template, version)

    row = await clarion.db.write(job)
    return {
        "template": template,
        "version": version,
        "state": row.state if row is not None else "none",
        "reason": row.reason if row is not None else None,
        "actor": row.actor if row is not None else None,
        "updated_at": row.updated_at.isoformat() if row is not None else None,
    }


_DATASET: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "one JSON object a line: template, version, variant, channel, category, brief, copy, "
        "exposures (sends), clicks, conversions, ctr (clicks / exposures), cvr (conversions / exposures)",
        "content": {JSON_LINES: {"schema": {"type": "string", "description": "JSON lines"}}},
    }
}


@router.get(
    "/dataset", response_class=StreamingResponse, responses=_DATASET | problems.answers(422), response_model=None
)
async def export_dataset(
    clarion: deps.Services,
    channel: model.Channel | None = None,
    category: model.Category | None = None,
    min_sends: int = Query(default=1, ge=1, le=1_000_000, description="copies with fewer sends are left out"),
) -> StreamingResponse:
    """Every measured copy (banned ones aside) as a JSON line of (brief, copy, channel, exposures, CTR, CVR), for
    fine-tuning a model on what converted: the brief is the template's name and, for a version drafted by a
    model, the brief it was drafted from."""
    lines = knowledge.dataset(
        clarion, channel=channel and channel.value, category=category and category.value, min_sends=min_sends
    )

    async def body() -> AsyncIterator[bytes]:
        async for line in lines:
            yield orjson.dumps(line) + b"\n"

    return StreamingResponse(body(), media_type=JSON_LINES)
