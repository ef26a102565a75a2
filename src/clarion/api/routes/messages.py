"""Sending: a template to users, or an event that trigger rules turn into messages; and what became of them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Path
from pydantic import Field

from clarion.api import deps, problems, schemas, views
from clarion.api.responses import JSON
from clarion.domain import errors, model
from clarion.pipeline import intake, resend
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


class ResendIn(schemas.Strict):
    channels: list[model.Channel] | None = Field(
        default=None,
        min_length=1,
        max_length=len(model.Channel),
        description="the channels to re-send on (of those the message used); all of them when left out",
    )
    reason: str = Field(min_length=1, max_length=500, description="why: kept on the timeline and in the audit log")


class ResentDelivery(views.View):
    id: str
    channel: model.Channel
    status: model.DeliveryStatus = Field(description="queued, or filtered/deferred by the policies (see reason)")
    reason: str | None
    resend_of: str = Field(description="the delivery whose content and address this one copies")


class Resent(views.View):
    message_id: str
    deliveries: list[ResentDelivery]
    skipped: list[str] = Field(description="channels asked for on which the message has no rendered content")


@router.post(
    "/messages/{message_id}/resend",
    status_code=202,
    response_model=Resent,
    responses=problems.answers(403, 404, 409),
)
async def resend_message(
    body: ResendIn, clarion: deps.Services, caller: deps.Caller, message_id: str = Path(max_length=32)
) -> JSON:
    """Re-send (补发) a message: new deliveries of the content it already rendered, on its channels (or
    ``channels``), each copying the latest delivery of its channel (content and address), queued now with the
    template's ttl from now. Needs ``sender`` or ``admin``; a marketing message, ``admin``. Dedup does not swallow
    a re-send; consent, suppressions, quiet hours and the safety valve still apply (a refused one is answered
    ``filtered`` with the reason). On the new delivery's timeline: ``resend: <reason>``, who asked and the
    delivery it re-sends; in the audit log: ``message.resend`` (subject ``message:<id>``). Unknown message: 404;
    nothing rendered to re-send, or the user deleted: 409."""
    command = resend.Command(message_id, body.reason, caller.name, tuple(caller.roles), body.channels)
    answer = await resend.resend_message(
        clarion.db, clarion.policies, command, now=datetime.now(UTC), on_queued=clarion.dispatcher.notify
    )
    return JSON(answer, status_code=202)
