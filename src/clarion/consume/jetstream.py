"""NATS JetStream (nats-py): a durable pull consumer per subject, a dead-letter subject for refusals.

Each source is a subject some stream already captures (the operator's stream: the consumer does not create it).
The consumer is durable (``CLARION_CONSUME_GROUP`` and the subject name it), explicit-ack, with ``max_ack_pending``
= ``prefetch``: JetStream itself redelivers a message left unacknowledged for ``ack_wait_seconds`` — a crashed
consumer's included. A transient failure is a ``nak`` with the backoff as its delay. The dead-letter subject
needs a stream too: when none captures it, one is made for it (named after it), so a refusal is kept, not dropped.
Pick a dead-letter name outside the source's stream (``CLARION_CONSUME_DEAD_LETTER=dead.{source}`` when the
stream captures ``orders.>``), or the consumer would read its own dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

import nats
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from clarion.consume import handling

log = logging.getLogger(__name__)
BROKER = "nats"


def name_for(subject: str) -> str:
    """A subject as a stream or durable consumer name (which allow no ``.``, ``*``, ``>`` or spaces)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", subject)


def inbound(subject: str, msg: Msg) -> handling.Inbound:
    headers = dict(msg.headers or {})
    own = headers.get("Nats-Msg-Id")
    if own:
        broker_id = f"{BROKER}:{own}"
    else:
        meta = msg.metadata
        broker_id = f"{BROKER}:{meta.stream}:{meta.sequence.stream}"
    return handling.Inbound(subject, msg.data, headers, broker_id)


class Consumer(handling.InFlight):
    async def run(self, stop: asyncio.Event) -> None:
        """Consume every source until ``stop`` is set, then finish the messages in hand and disconnect."""
        connection = await nats.connect(self.settings.broker_url(), error_cb=_broker_error)
        try:
            js = connection.jetstream()
            subscriptions = []
            for subject in self.settings.sources:
                await self._dead_letter_stream(js, self.settings.dead_letter_for(subject))
                config = api.ConsumerConfig(
                    ack_policy=api.AckPolicy.EXPLICIT,
                    ack_wait=self.settings.ack_wait_seconds,
                    max_ack_pending=self.settings.prefetch,
                    filter_subject=subject,
                )
                durable = name_for(f"{self.settings.group}-{subject}")
                subscription = await js.pull_subscribe(subject, durable=durable, config=config)
                subscriptions.append(subscription)
            loops = [
                asyncio.create_task(self._pull(js, s, subject, stop))
                for s, subject in zip(subscriptions, self.settings.sources, strict=True)
            ]
            loops.append(asyncio.create_task(self._watch_lag(subscriptions, stop)))
            await asyncio.gather(*loops)
            await self._finish_in_flight()
        finally:  # the acknowledgements sent, then closed (a drain would wait out its timeout on pull consumers)
            with contextlib.suppress(nats.errors.Error):
                await connection.flush()
            await connection.close()

    async def _dead_letter_stream(self, js: JetStreamContext, subject: str) -> None:
        try:
            await js.find_stream_name_by_subject(subject)
        except NotFoundError:
            await js.add_stream(name=name_for(subject), subjects=[subject])

    async def _pull(
        self, js: JetStreamContext, subscription: JetStreamContext.PullSubscription, subject: str, stop: asyncio.Event
    ) -> None:
        """Fetch as many as there are free slots for, so messages are not held here waiting for one."""
        while not stop.is_set():
            free = self.settings.concurrency - len(self._tasks)
            if free <= 0:
                await asyncio.sleep(0.005)
                continue
            try:
                messages = await subscription.fetch(min(free, self.settings.prefetch), timeout=0.5)
            except TimeoutError:
                continue
            for msg in messages:
                self._spawn(self._handle(js, subject, msg))

    async def _handle(self, js: JetStreamContext, subject: str, msg: Msg) -> None:
        item = inbound(subject, msg)
        async with self._slots:
            outcome = await self.handler.handle(item)
        try:
            if isinstance(outcome, handling.Retry):
                await msg.nak(delay=outcome.delay)
                return
            if isinstance(outcome, handling.DeadLetter):
                dead = self.settings.dead_letter_for(subject)
                await js.publish(dead, msg.data, headers=outcome.headers(item.headers))
            await msg.ack()
        except nats.errors.Error:  # not settled: JetStream redelivers it after ack_wait
            log.warning("could not settle a message from %s; it will be redelivered", subject, exc_info=True)
            return
        self.handler.acked(item)

    async def _watch_lag(self, subscriptions: list[JetStreamContext.PullSubscription], stop: asyncio.Event) -> None:
        """Each durable consumer's pending count (stored, not yet delivered to it), every ``lag_seconds``."""
        while not stop.is_set():
            for subject, subscription in zip(self.settings.sources, subscriptions, strict=True):
                try:
                    info = await subscription.consumer_info()
                except Exception:
                    log.warning("could not read the pending count of %s", subject, exc_info=True)
                    continue
                self.handler.clarion.metrics.consumer_lag.labels(BROKER, subject).set(info.num_pending or 0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.lag_seconds)


async def _broker_error(exc: Exception) -> None:
    """nats-py reports connection trouble here (it reconnects by itself); into the log, not onto stderr."""
    log.warning("nats: %r", exc)
