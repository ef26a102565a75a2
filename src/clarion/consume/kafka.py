"""Kafka (aiokafka): a consumer group over the source topics, a ``<topic>.dead`` topic for refusals.

Kafka has no per-message acknowledgement: a partition's committed offset says "everything before this is done".
Records are handled ``concurrency`` at a time, so they finish out of order; ``Offsets`` commits only up to the
oldest record still in hand, and a crash redelivers from there (the records after it that did finish are
replayed, harmlessly, by their idempotency key ``kafka:<topic>:<partition>:<offset>``). Kafka cannot redeliver
one record later either, so a transient failure is retried in place after the backoff, holding its partition's
commit (not its other records) until it goes through.

``KafkaClient`` and ``KafkaProducer`` are the parts of aiokafka's consumer and producer this module uses, so the
tests can drive it with an in-process stand-in: no Kafka server runs on the test machines."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka.structs import ConsumerRecord, TopicPartition

from clarion.consume import handling
from clarion.consume.config import ConsumeSettings

log = logging.getLogger(__name__)
BROKER = "kafka"


class KafkaClient(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]: ...
    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None: ...
    def assignment(self) -> set[TopicPartition]: ...
    def highwater(self, partition: TopicPartition) -> int | None: ...


class KafkaProducer(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, *, headers: Any = None
    ) -> Any: ...


class Offsets:
    """Per partition, the offset that may be committed: that of the oldest record still being handled, or one
    past the newest finished when none is. Records start in offset order (Kafka hands them so)."""

    def __init__(self) -> None:
        self._handling: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def started(self, tp: TopicPartition, offset: int) -> None:
        self._handling.setdefault(tp, set()).add(offset)

    def finished(self, tp: TopicPartition, offset: int) -> None:
        self._handling[tp].discard(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def committable(self, tp: TopicPartition) -> int | None:
        handling = self._handling.get(tp)
        if handling:
            return min(handling)
        return self._next.get(tp)

    def to_commit(self) -> dict[TopicPartition, int]:
        """What moved since the last ``committed`` (a partition where nothing finished yet has nothing to say)."""
        offsets = {tp: self.committable(tp) for tp in self._next}
        return {tp: o for tp, o in offsets.items() if o is not None and o > self._committed.get(tp, -1)}

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        self._committed.update(offsets)

    def in_hand(self) -> int:
        return sum(len(s) for s in self._handling.values())


def inbound(record: ConsumerRecord[Any, Any]) -> handling.Inbound:
    headers = {k: v.decode(errors="replace") if isinstance(v, bytes) else str(v) for k, v in record.headers or ()}
    broker_id = f"{BROKER}:{record.topic}:{record.partition}:{record.offset}"
    return handling.Inbound(record.topic, record.value or b"", headers, broker_id)


class Consumer:
    def __init__(
        self,
        handler: handling.Handler,
        settings: ConsumeSettings,
        *,
        client: KafkaClient | None = None,
        producer: KafkaProducer | None = None,
    ) -> None:
        self.handler = handler
        self.settings = settings
        self.client = client
        self.producer = producer
        self.offsets = Offsets()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume the source topics until ``stop`` is set, then finish the records in hand, commit, disconnect."""
        client, producer = self.client, self.producer
        if client is None or producer is None:
            client, producer = _connect(self.settings)
        await client.start()
        await producer.start()
        try:
            while not stop.is_set():
                free = self.settings.concurrency - self.offsets.in_hand()
                if free > 0:
                    batches = await client.getmany(timeout_ms=200, max_records=min(free, self.settings.prefetch))
                    for records in batches.values():
                        self._start(records, producer, stop)
                else:
                    await asyncio.sleep(0.005)
                await self._commit(client)
                self._lag(client)
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._commit(client)
        finally:
            await producer.stop()
            await client.stop()

    def _start(self, records: Sequence[ConsumerRecord[Any, Any]], producer: KafkaProducer, stop: asyncio.Event) -> None:
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            self.offsets.started(tp, record.offset)
            task = asyncio.create_task(self._handle(record, tp, producer, stop))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(
        self, record: ConsumerRecord[Any, Any], tp: TopicPartition, producer: KafkaProducer, stop: asyncio.Event
    ) -> None:
        item = inbound(record)
        outcome = await self.handler.handle(item)
        while isinstance(outcome, handling.Retry):
            if stop.is_set():  # left uncommitted: the next consumer of the partition gets it again
                return
            await handling.pause(outcome)
            outcome = await self.handler.handle(item)
        if isinstance(outcome, handling.DeadLetter):
            headers = [(k, v.encode()) for k, v in outcome.headers(item.headers).items()]
            await producer.send_and_wait(
                self.settings.dead_letter_for(record.topic), item.body, record.key, headers=headers
            )
        self.offsets.finished(tp, record.offset)
        self.handler.acked(item)

    async def _commit(self, client: KafkaClient) -> None:
        offsets = self.offsets.to_commit()
        if not offsets:
            return
        try:
            await client.commit(offsets)
        except Exception:  # a rebalance took the partition: its new owner starts from the last commit
            log.warning("could not commit %s", offsets, exc_info=True)
            return
        self.offsets.committed(offsets)

    def _lag(self, client: KafkaClient) -> None:
        """Per topic, the records after the committable offset, from the high-water marks of the last fetch."""
        lag: dict[str, int] = {}
        for tp in client.assignment():
            high = client.highwater(tp)
            if high is None:
                continue
            done = self.offsets.committable(tp)
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, high - (done or 0))
        for topic, count in lag.items():
            self.handler.clarion.metrics.consumer_lag.labels(BROKER, topic).set(count)


def _connect(settings: ConsumeSettings) -> tuple[KafkaClient, KafkaProducer]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    client = AIOKafkaConsumer(
        *settings.sources,
        bootstrap_servers=settings.broker_url(),
        group_id=settings.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.prefetch,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.broker_url(), acks="all", enable_idempotence=True)
    return client, producer
