"""Sending: a template to users, or an event that trigger rules turn into messages; and what became of them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path

from clarion.api import deps, problems, schemas, views
from clarion.api.responses import JSON
from clarion.domain import errors
from clarion.pipeline import intake
from clarion.store import history

router = APIRouter(prefix="/v1", tags=["messages"], dependencies=deps.AUTH)


def _answer(clarion: Any, accepted: intake.Accepted) -> JSON:
    """202 with the messages; a replay of an idempotent request says so in a header and is not counted."""
    if accepted.replayed:
        return JSON(accepted.response, status_code=202, headers={"Idempotent-Replayed": "true"})
    for message in accepted.response["messages"]:
        clarion.metrics.accepted.labels(message["status"]).inc()
    return JSON(accepted.response, status_code=202)


@router.post(
    "/messages",
    status_code=202,
    response_model=views.Accepted,
    responses=views.ACCEPTED | problems.answers(403, 404, 409),
)
async def send(body: schemas.SendIn, clarion: deps.Services) -> JSON:
    """Send a template to one or more users. Durable before the answer: the messages are stored and queued.
    The same ``idempotency_key`` within 24 h returns the first answer and sends nothing again."""
    recipients = body.recipients()
    if not recipients or len(recipients) > clarion.settings.max_recipients:
        raise errors.InvalidInput(
            f"to: between 1 and {clarion.settings.max_recipients} recipients",
            details={"field": "to", "count": len(recipients)},
        )
    accepted = await clarion.intake.send(
        intake.SendCommand(
            template=body.template,
            to=recipients,
            data=body.data,
            channels=body.channels,
            idempotency_key=body.idempotency_key,
            dedup_key=body.dedup_key,
        )
    )
    return _answer(clarion, accepted)


@router.post(
    "/events",
    status_code=202,
    response_model=views.EventAccepted,
    responses=views.ACCEPTED | problems.answers(403, 409),
)
async def event(body: schemas.EventIn, clarion: deps.Services) -> JSON:
    """Report something that happened; trigger rules decide which messages (possibly none) it produces."""
    accepted = await clarion.intake.event(
        intake.EventCommand(name=body.name, user_id=body.user_id, data=body.data, idempotency_key=body.idempotency_key)
    )
    return _answer(clarion, accepted)


@router.get("/messages/{message_id}", response_model=views.MessageDetail, responses=problems.answers(404))
async def get_message(clarion: deps.Services, message_id: str = Path(max_length=32)) -> dict[str, Any]:
    """A message, its deliveries, and every status change each went through, with reasons."""
    return await deps.read_or_404(clarion, history.message_detail, "message", message_id)
