"""The Kafka consumer's mapping and commit logic. No Kafka server runs on the test machines, so these drive
``consume.kafka.Consumer`` through the two aiokafka interfaces it depends on (``KafkaClient``, ``KafkaProducer``)
with an in-process partition log: records, offsets, commits, high-water marks. What they do not show: aiokafka's
own behaviour against a real broker (group rebalances, the wire protocol) — that was not run."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import sqlalchemy as sa
from aiokafka.structs import ConsumerRecord, TopicPartition

from clarion import bootstrap
from clarion.consume import kafka, running
from clarion.consume.config import ConsumeSettings
from clarion.store import tables as t
from tests.acceptance.test_consume_brokers import eventually, messages_stored, send, setup_sms
from tests.conftest import drain, sink

TOPIC = "orders.messages"


class Log:
    """Topics of partitions of records, and each group's committed offsets: what a Kafka cluster keeps."""

    def __init__(self, partitions: int = 2) -> None:
        self.partitions = partitions
        self.records: dict[TopicPartition, list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]] = {}
        self.committed: dict[TopicPartition, int] = {}

    def append(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: Any = (), partition: int = 0
    ) -> None:
        self.records.setdefault(TopicPartition(topic, partition), []).append((key, value, list(headers)))


class Client:
    """``kafka.KafkaClient`` over a ``Log``: starts each partition at the committed offset."""

    def __init__(self, log: Log, topics: list[str], *, fail_commits: bool = False) -> None:
        self.log = log
        self.topics = topics
        self.fail_commits = fail_commits
        self.position: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        for topic in self.topics:
            for p in range(self.log.partitions):
                tp = TopicPartition(topic, p)
                self.position[tp] = self.log.committed.get(tp, 0)

    async def stop(self) -> None:
        pass

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
        batches: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = {}
        budget = max_records or 500
        for tp, start in self.position.items():
            entries = self.log.records.get(tp, [])[start : start + budget]
            if not entries:
                continue
            batches[tp] = [
                ConsumerRecord(tp.topic, tp.partition, start + i, 0, 0, k, v, None, 0, len(v), h)
                for i, (k, v, h) in enumerate(entries)
            ]
            self.position[tp] = start + len(entries)
            budget -= len(entries)
        if not batches:
            await asyncio.sleep(timeout_ms / 1000)
        return batches

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        if self.fail_commits:
            raise RuntimeError("CommitFailedError: the group rebalanced")
        assert offsets is not None
        for tp, offset in offsets.items():
            assert offset >= self.log.committed.get(tp, 0), "a commit never goes back"
            self.log.committed[tp] = offset

    def assignment(self) -> set[TopicPartition]:
        return set(self.position)

    def highwater(self, partition: TopicPartition) -> int | None:
        return len(self.log.records.get(partition, []))


class Producer:
    def __init__(self, log: Log) -> None:
        self.log = log

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, *, headers: Any = None
    ) -> Any:
        assert value is not None
        self.log.append(topic, value, key=key, headers=headers or ())


def settings_for(key: str) -> ConsumeSettings:
    return ConsumeSettings(broker="kafka", sources=[TOPIC], api_key=key, backoff_seconds=0.05, concurrency=8)


@contextlib.asynccontextmanager
async def consuming(
    clarion: bootstrap.Clarion, log: Log, key: str, **client: Any
) -> AsyncIterator[tuple[kafka.Consumer, asyncio.Task[None]]]:
    consumer = running.consumer(clarion, settings_for(key))
    assert isinstance(consumer, kafka.Consumer)
    consumer.client = Client(log, [TOPIC], **client)
    consumer.producer = Producer(log)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        yield consumer, task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def committed(log: Log, partition: int = 0) -> int:
    return log.committed.get(TopicPartition(TOPIC, partition), 0)


async def test_records_become_sends_keyed_by_topic_partition_offset_and_are_committed(api, clarion) -> None:
    await setup_sms(api)
    log = Log()
    log.append(TOPIC, send("1"), partition=0)
    log.append(TOPIC, send("2"), partition=1)
    log.append(TOPIC, send("3"), partition=1)
    key = await clarion.keys.create("orders-topic", ("sender",))
    async with consuming(clarion, log, key) as (_, task):
        await eventually(lambda: committed(log, 0) == 1 and committed(log, 1) == 2, task)
    async with clarion.db.read() as conn:
        keys = sorted((await conn.execute(sa.select(t.send_requests.c.idempotency_key))).scalars())
    assert keys == [f"kafka:{TOPIC}:0:0", f"kafka:{TOPIC}:1:0", f"kafka:{TOPIC}:1:1"]
    assert await drain(clarion) == 3
    assert sorted(r["content"]["text"] for r in sink(clarion)) == ["code 1", "code 2", "code 3"]
    lag = clarion.metrics.registry.get_sample_value("clarion_consumer_lag", {"broker": "kafka", "source": TOPIC})
    assert lag == 0


async def test_a_refused_record_goes_to_the_dead_topic_with_its_error_and_is_committed(api, clarion) -> None:
    await setup_sms(api)
    log = Log(partitions=1)
    log.append(TOPIC, b"[1, 2]", key=b"order-9", headers=[("trace", b"t9")])
    log.append(TOPIC, orjson.dumps({"template": "code", "to": "u1", "channels": ["fax"]}))
    log.append(TOPIC, send())
    key = await clarion.keys.create("orders-topic", ("sender",))
    async with consuming(clarion, log, key) as (_, task):
        await eventually(lambda: committed(log) == 3, task)
    dead = log.records[TopicPartition(f"{TOPIC}.dead", 0)]
    assert [(k, v) for k, v, _ in dead] == [
        (b"order-9", b"[1, 2]"),
        (None, orjson.dumps({"template": "code", "to": "u1", "channels": ["fax"]})),
    ]
    headers = [dict(h) for _, _, h in dead]
    assert headers[0] == {
        "trace": b"t9",
        "clarion-error-code": b"invalid_input",
        "clarion-error-message": b"body: Input should be a valid dictionary",
    }
    assert headers[1]["clarion-error-code"] == b"invalid_input"
    assert headers[1]["clarion-error-message"].startswith(b"channels.0: Input should be")
    assert await messages_stored(clarion) == 1


async def test_records_handled_but_not_committed_are_redelivered_and_sent_once(api, clarion) -> None:
    await setup_sms(api)
    log = Log(partitions=1)
    for i in range(5):
        log.append(TOPIC, send(str(i)))
    key = await clarion.keys.create("orders-topic", ("sender",))
    async with consuming(clarion, log, key, fail_commits=True) as (consumer, task):  # a consumer that dies
        await eventually(lambda: consumer.offsets.committable(TopicPartition(TOPIC, 0)) == 5, task)
    assert committed(log) == 0 and await messages_stored(clarion) == 5
    async with consuming(clarion, log, key) as (_, task):  # the partition's next owner starts over
        await eventually(lambda: committed(log) == 5, task)
    assert await messages_stored(clarion) == 5
    replayed = clarion.metrics.registry.get_sample_value(
        "clarion_consumer_acked_total", {"broker": "kafka", "source": TOPIC}
    )
    assert replayed == 10  # each record acknowledged twice, written once
    assert await drain(clarion) == 5
    assert len(sink(clarion)) == 5
