"""RabbitMQ (AMQP 0-9-1, aio-pika): durable queues in, a ``<queue>.dead`` queue for refusals.

The channel's prefetch (``basic.qos``) bounds the messages held unacknowledged; ``concurrency`` bounds those
handled at once. The dead-letter copy is published with publisher confirms before the original is acknowledged,
so a crash between the two leaves a duplicate in the dead-letter queue, never a lost message. RabbitMQ's own
dead-lettering (``x-dead-letter-exchange``) is not used: it cannot add the error to the message."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from clarion.consume import handling

log = logging.getLogger(__name__)
BROKER = "rabbitmq"


def inbound(queue: str, message: AbstractIncomingMessage) -> handling.Inbound:
    headers = {k: v.decode(errors="replace") if isinstance(v, bytes) else str(v) for k, v in message.headers.items()}
    broker_id = f"{BROKER}:{message.message_id}" if message.message_id else None
    return handling.Inbound(queue, message.body, headers, broker_id)


class Consumer(handling.InFlight):
    async def run(self, stop: asyncio.Event) -> None:
        """Consume every source until ``stop`` is set, then finish the messages in hand and disconnect."""
        connection = await aio_pika.connect_robust(self.settings.broker_url())
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=self.settings.prefetch)
            queues = []
            for source in self.settings.sources:
                queue = await channel.declare_queue(source, durable=True)
                await channel.declare_queue(self.settings.dead_letter_for(source), durable=True)
                tag = await queue.consume(functools.partial(self._received, channel, source))
                queues.append((queue, tag))
            await self._watch_lag([q for q, _ in queues], stop)  # until stopped
            for queue, tag in queues:
                await queue.cancel(tag)
            await self._finish_in_flight()

    async def _received(self, channel: AbstractChannel, source: str, message: AbstractIncomingMessage) -> None:
        self._spawn(self._handle(channel, source, message))

    async def _handle(self, channel: AbstractChannel, source: str, message: AbstractIncomingMessage) -> None:
        item = inbound(source, message)
        async with self._slots:
            outcome = await self.handler.handle(item)
        try:
            await self._settle(channel, source, message, item, outcome)
        except (aio_pika.exceptions.AMQPError, ConnectionError):  # the channel is gone: the broker redelivers
            log.warning("could not settle a message from %s; it will be redelivered", source, exc_info=True)

    async def _settle(
        self,
        channel: AbstractChannel,
        source: str,
        message: AbstractIncomingMessage,
        item: handling.Inbound,
        outcome: handling.Outcome,
    ) -> None:
        if isinstance(outcome, handling.Retry):
            await handling.pause(outcome)
            await message.nack(requeue=True)
            return
        if isinstance(outcome, handling.DeadLetter):
            copy = aio_pika.Message(
                message.body,
                headers=outcome.headers(item.headers),  # type: ignore[arg-type]
                message_id=message.message_id,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await channel.default_exchange.publish(copy, routing_key=self.settings.dead_letter_for(source))
        await message.ack()
        self.handler.acked(item)

    async def _watch_lag(self, queues: list[AbstractQueue], stop: asyncio.Event) -> None:
        """Each queue's ready messages, every ``lag_seconds``: the count its (idempotent) re-declaration reports,
        which a passive declare on a robust channel would not refresh."""
        while not stop.is_set():
            for queue in queues:
                try:
                    declared = await queue.declare()
                except aio_pika.exceptions.AMQPError:
                    log.warning("could not read the depth of queue %s", queue.name, exc_info=True)
                    continue
                self.handler.clarion.metrics.consumer_lag.labels(BROKER, queue.name).set(declared.message_count or 0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.lag_seconds)
