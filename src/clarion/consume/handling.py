"""One broker message → one send request, and what the broker should do with the message after it.

The broker modules turn their message into an ``Inbound`` and apply the ``Outcome`` this returns: ``Ack`` (the
send request is written, or was already), ``DeadLetter`` (refused: move it aside with the error) or ``Retry``
(try again later; nothing was written). The request goes through ``api.fastlane.ROUTES`` — the route functions
and request models of ``POST /v1/messages`` and ``POST /v1/events`` — so a message is checked and answered
exactly as the same body sent over HTTP would be, and its refusal carries the same code and message."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pydantic
import sqlalchemy.exc

from clarion import bootstrap
from clarion.api import fastlane, problems
from clarion.consume.config import ConsumeSettings
from clarion.domain import approval, errors
from clarion.pipeline import intake

log = logging.getLogger(__name__)
KIND_HEADER = "clarion-kind"
KEY_HEADER = "idempotency-key"
ERROR_CODE_HEADER = "clarion-error-code"
ERROR_MESSAGE_HEADER = "clarion-error-message"
PATHS = {"message": "/v1/messages", "event": "/v1/events"}
#: failures that say nothing about the message itself: the database or a connection is away for now
TRANSIENT: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    OSError,
)


@dataclass(frozen=True, slots=True)
class Inbound:
    """A broker message as the intake sees it. ``broker_id`` is the broker's stable id of the message (stable
    across redeliveries), already prefixed by the broker; None when the broker has none."""

    source: str
    body: bytes
    headers: Mapping[str, str]
    broker_id: str | None


@dataclass(frozen=True, slots=True)
class Ack:
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class DeadLetter:
    code: str
    message: str

    def headers(self, original: Mapping[str, str]) -> dict[str, str]:
        """The message's own headers and the error, for the dead-letter copy."""
        return {**original, ERROR_CODE_HEADER: self.code, ERROR_MESSAGE_HEADER: self.message[:1000]}


@dataclass(frozen=True, slots=True)
class Retry:
    delay: float
    error: str


Outcome = Ack | DeadLetter | Retry


class Backoff:
    """The wait before a transient failure is retried: doubling while failures follow each other, from ``base``
    up to ``cap``, and back to ``base`` after any message goes through. Shared by a consumer's messages, since a
    database that is away is away for all of them."""

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = cap
        self._failures = 0

    def failed(self) -> float:
        delay = min(self.cap, self.base * 2**self._failures)
        self._failures = min(self._failures + 1, 32)
        return delay

    def succeeded(self) -> None:
        self._failures = 0


def kind_of(inbound: Inbound) -> str | None:
    """``message`` or ``event``: the ``clarion-kind`` header, else the source's name; None when neither says."""
    header = inbound.headers.get(KIND_HEADER)
    if header is not None:
        return header if header in PATHS else None
    name = inbound.source.lower()
    if name.endswith("events"):
        return "event"
    if name.endswith("messages"):
        return "message"
    return None


class InFlight:
    """What a consumer of ``handler`` keeps of the messages it is handling: at most ``concurrency`` at once
    (``slots``), each a task of its own, all of them awaited when it stops."""

    def __init__(self, handler: Handler, settings: ConsumeSettings) -> None:
        self.handler = handler
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, handling: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(handling)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_in_flight(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class Handler:
    """Sends each ``Inbound`` as the caller whose API key the consumer holds, on ``clarion``'s intake."""

    def __init__(
        self,
        clarion: bootstrap.Clarion,
        api_key: str,
        *,
        broker: str,
        backoff: Backoff,
        crash_after_writes: int | None = None,
    ) -> None:
        self.clarion = clarion
        self.api_key = api_key
        self.broker = broker
        self.backoff = backoff
        self.crash_after_writes = crash_after_writes
        self._writes = 0

    async def handle(self, inbound: Inbound) -> Outcome:
        metrics = self.clarion.metrics
        metrics.consumed.labels(self.broker, inbound.source).inc()
        try:
            outcome = await self._handle(inbound)
        except TRANSIENT as exc:
            outcome = Retry(self.backoff.failed(), f"{type(exc).__name__}: {exc}")
        except Exception:
            log.exception("%s message from %s failed", self.broker, inbound.source)
            outcome = DeadLetter("internal_error", "internal error; it was logged")
        if isinstance(outcome, Retry):
            log.warning(
                "%s message from %s will be retried in %.1fs: %s",
                self.broker,
                inbound.source,
                outcome.delay,
                outcome.error,
            )
            metrics.consumer_retried.labels(self.broker, inbound.source).inc()
            return outcome
        self.backoff.succeeded()
        if isinstance(outcome, DeadLetter):
            metrics.dead_lettered.labels(self.broker, inbound.source, outcome.code).inc()
        return outcome

    def acked(self, inbound: Inbound) -> None:
        """Called by the broker module once the broker has the acknowledgement (or the dead-letter copy)."""
        self.clarion.metrics.consumer_acked.labels(self.broker, inbound.source).inc()

    async def _handle(self, inbound: Inbound) -> Outcome:
        caller = await self.clarion.keys.verify(self.api_key)
        if caller is None:  # the consumer's own configuration, not the message: keep it until the key is fixed
            return Retry(self.backoff.failed(), "the consumer's API key is unknown, revoked or expired")
        kind = kind_of(inbound)
        if kind is None:
            return DeadLetter(
                "invalid_input", f"{KIND_HEADER}: 'message' or 'event' (or a source named ...messages / ...events)"
            )
        model, route = fastlane.ROUTES[PATHS[kind]]
        try:
            approval.require(caller.roles, approval.SEND)
            document = _document(inbound.body)
            if document.get("idempotency_key") is None:
                key = inbound.headers.get(KEY_HEADER) or inbound.broker_id
                if key is None:
                    return DeadLetter(
                        "invalid_input",
                        f"idempotency_key: required (the body's field, an {KEY_HEADER} header "
                        "or the broker's message id), so that a redelivery is not a second send",
                    )
                document["idempotency_key"] = key
            token = intake.SOURCE.set(f"{self.broker} {inbound.source} ({caller.name})")
            try:
                response = await route(model.model_validate(document), self.clarion)
            finally:
                intake.SOURCE.reset(token)
        except pydantic.ValidationError as exc:
            response = problems.validation_failed([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()])
        except errors.InvalidInput as exc:
            response = problems.invalid_input(exc)
        if response.status_code >= 400:
            error = orjson.loads(response.body)["error"]
            return DeadLetter(error["code"], error["message"])
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        if not replayed:
            self._wrote()
        return Ack(replayed=replayed)

    def _wrote(self) -> None:
        self._writes += 1
        if self.crash_after_writes is not None and self._writes >= self.crash_after_writes:
            log.warning("test hook: exiting after %d durable writes, before the acknowledgement", self._writes)
            os._exit(70)


def _document(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; otherwise the validation error the API gives for a malformed body."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        error = {"type": "json_invalid", "loc": (), "msg": "invalid JSON", "input": None, "ctx": {"error": str(exc)}}
        raise pydantic.ValidationError.from_exception_data("body", [error]) from None  # type: ignore[list-item]
    if not isinstance(document, dict):
        error = {"type": "dict_type", "loc": (), "input": document}
        raise pydantic.ValidationError.from_exception_data("body", [error]) from None  # type: ignore[list-item]
    return document


async def pause(outcome: Retry) -> None:
    """Wait out a retry's backoff (for brokers that cannot delay a redelivery themselves)."""
    await asyncio.sleep(outcome.delay)
