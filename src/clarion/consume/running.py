"""A consumer for the configured broker, built and run beside a Clarion's services (``clarion consume``, and
``clarion serve`` when ``CLARION_CONSUME_BROKER`` is set)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from clarion import bootstrap
from clarion.consume import handling
from clarion.consume.config import ConsumeSettings
from clarion.domain import approval, errors


class Consumer(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...


def consumer(clarion: bootstrap.Clarion, settings: ConsumeSettings) -> Consumer:
    """The broker's consumer, handling messages on ``clarion``; ``InvalidInput`` naming the setting that is
    missing."""
    if settings.broker is None:
        raise errors.InvalidInput("broker: one of rabbitmq, nats, kafka", details={"field": "broker"})
    if not settings.sources:
        raise errors.InvalidInput("sources: at least one queue, subject or topic", details={"field": "sources"})
    if settings.api_key is None:
        raise errors.InvalidInput(
            "api_key: the API key to send as (with the sender role)", details={"field": "api_key"}
        )
    handler = handling.Handler(
        clarion,
        settings.api_key.get_secret_value(),
        broker=settings.broker,
        backoff=handling.Backoff(settings.backoff_seconds, settings.backoff_max_seconds),
        crash_after_writes=settings.crash_after_writes,
    )
    if settings.broker == "rabbitmq":
        from clarion.consume import rabbitmq

        return rabbitmq.Consumer(handler, settings)
    if settings.broker == "nats":
        from clarion.consume import jetstream

        return jetstream.Consumer(handler, settings)
    from clarion.consume import kafka

    return kafka.Consumer(handler, settings)


async def authorized(clarion: bootstrap.Clarion, settings: ConsumeSettings) -> str:
    """The name of the key's owner, checked before consuming starts: a key that is unknown, revoked or expired,
    or may not send, is a configuration error to report now, not a stream of retries."""
    assert settings.api_key is not None
    caller = await clarion.keys.verify(settings.api_key.get_secret_value())
    if caller is None:
        raise errors.InvalidInput("api_key: unknown, revoked or expired", details={"field": "api_key"})
    approval.require(caller.roles, approval.SEND)
    return caller.name
