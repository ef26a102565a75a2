"""``clarion consume`` against the real RabbitMQ (127.0.0.1:5672) and NATS JetStream (127.0.0.1:4222) of this
machine: sends and events taken from a queue or subject become accepted messages, refusals are dead-lettered with
their error, a crash before the acknowledgement redelivers without a second send, and a burst is taken whole.
Each test uses its own queues or streams and removes them. With ``CI=true`` a broker that is not there fails."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.consume import jetstream, running
from clarion.consume.config import ConsumeSettings
from clarion.store import tables as t
from tests.conftest import _unavailable, drain, put_template, put_user, sink


class Rabbit:
    name = "rabbitmq"
    url = "amqp://guest:guest@127.0.0.1:5672/"

    async def open(self) -> None:
        import aio_pika

        self.connection = await aio_pika.connect(self.url, timeout=3)
        self.channel = await self.connection.channel(publisher_confirms=True)
        self.queues: list[str] = []

    async def prepare(self, source: str) -> None:
        await self.channel.declare_queue(source, durable=True)
        self.queues += [source, f"{source}.dead"]

    async def publish(self, source: str, body: bytes, *, message_id: str | None, headers: dict[str, str]) -> None:
        import aio_pika

        message = aio_pika.Message(body, headers=headers, message_id=message_id)  # type: ignore[arg-type]
        await self.channel.default_exchange.publish(message, routing_key=source)

    async def dead(self, source: str, count: int) -> list[tuple[bytes, dict[str, str]]]:
        queue = await self.channel.declare_queue(f"{source}.dead", durable=True)
        found = []
        deadline = time.monotonic() + 20
        while len(found) < count and time.monotonic() < deadline:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            found.append((message.body, {k: str(v) for k, v in message.headers.items()}))
        return found

    async def close(self) -> None:
        for name in self.queues:
            await self.channel.queue_delete(name)
        await self.connection.close()


class Nats:
    name = "nats"
    url = "nats://127.0.0.1:4222"

    async def open(self) -> None:
        import nats

        self.connection = await nats.connect(self.url, connect_timeout=3, max_reconnect_attempts=0)
        self.js = self.connection.jetstream()
        self.streams: list[str] = []

    async def prepare(self, source: str) -> None:
        name = jetstream.name_for(source)
        await self.js.add_stream(name=name, subjects=[source])
        self.streams += [name, jetstream.name_for(f"{source}.dead")]

    async def publish(self, source: str, body: bytes, *, message_id: str | None, headers: dict[str, str]) -> None:
        if message_id is not None:
            headers = {**headers, "Nats-Msg-Id": message_id}
        await self.js.publish(source, body, headers=headers or None)

    async def dead(self, source: str, count: int) -> list[tuple[bytes, dict[str, str]]]:
        subscription = await self.js.pull_subscribe(f"{source}.dead")
        found: list[tuple[bytes, dict[str, str]]] = []
        deadline = time.monotonic() + 20
        while len(found) < count and time.monotonic() < deadline:
            try:
                messages = await subscription.fetch(count - len(found), timeout=1)
            except TimeoutError:
                continue
            found += [(m.data, dict(m.headers or {})) for m in messages]
        await subscription.unsubscribe()
        return found

    async def close(self) -> None:
        from nats.js.errors import NotFoundError

        for name in self.streams:
            with contextlib.suppress(NotFoundError):
                await self.js.delete_stream(name)
        await self.connection.close()


@pytest.fixture(params=[Rabbit, Nats], ids=["rabbitmq", "nats"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    broker = request.param()
    try:
        await broker.open()
    except Exception as exc:
        _unavailable(broker.name, exc)
    yield broker
    await broker.close()


async def sender_key(clarion: bootstrap.Clarion) -> str:
    return await clarion.keys.create(f"queue-{uuid.uuid4().hex[:6]}", ("sender",))


def source_name(kind: str) -> str:
    return f"clarion-test-{uuid.uuid4().hex[:10]}.{kind}"


def consume_settings(broker: Any, source: str, key: str, **extra: Any) -> ConsumeSettings:
    return ConsumeSettings(
        broker=broker.name,
        url=broker.url,
        sources=[source],
        api_key=key,
        backoff_seconds=0.05,
        lag_seconds=0.1,
        ack_wait_seconds=1,
        **extra,
    )


@contextlib.asynccontextmanager
async def consuming(clarion: bootstrap.Clarion, settings: ConsumeSettings) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(running.consumer(clarion, settings).run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], task: asyncio.Task[None] | None, within: float = 60
) -> None:
    """Wait until ``check()`` holds, failing at once if the consumer stopped on an error."""
    deadline = time.monotonic() + within
    while not await _value(check()):
        if task is not None and task.done():
            task.result()  # the consumer's own error, if it stopped
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def messages_stored(clarion: bootstrap.Clarion) -> int:
    async with clarion.db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(t.messages))).scalar_one())


async def _all_stored(clarion: bootstrap.Clarion, count: int) -> bool:
    return await messages_stored(clarion) >= count


def acked(clarion: bootstrap.Clarion, broker: Any, source: str) -> float:
    labels = {"broker": broker.name, "source": source}
    return clarion.metrics.registry.get_sample_value("clarion_consumer_acked_total", labels) or 0.0


async def setup_sms(api: Any) -> None:
    await put_user(api, "u1", attributes={"name": "Li"}, addresses={"sms": "+8613800138000"})
    await put_template(api, "code", category="verification", channels={"sms": {"text": "code ${data.code}"}})


def send(code: str = "4711", **extra: Any) -> bytes:
    return orjson.dumps({"template": "code", "to": "u1", "data": {"code": code}, **extra})


async def test_a_published_send_is_accepted_and_delivered(api, clarion, broker) -> None:
    await setup_sms(api)
    source = source_name("messages")
    await broker.prepare(source)
    await broker.publish(source, send(), message_id="order-1", headers={})
    async with consuming(clarion, consume_settings(broker, source, await sender_key(clarion))) as task:
        await eventually(lambda: acked(clarion, broker, source) >= 1, task)
    async with clarion.db.read() as conn:
        request = (await conn.execute(sa.select(t.send_requests))).one()
    assert request.idempotency_key == f"{broker.name}:order-1"  # the broker's message id, by default
    [message] = request.response["messages"]
    detail = (await api.get(f"/v1/messages/{message['id']}")).json()
    assert detail["status"] == "queued"
    (accepted,) = [e for e in detail["timeline"] if e["status"] == "accepted"]
    assert accepted["reason"].startswith(f"{broker.name} {source} (")  # the timeline names the broker, not the API
    assert await drain(clarion) == 1
    assert [r["content"]["text"] for r in sink(clarion)] == ["code 4711"]


async def test_an_event_by_header_with_the_headers_idempotency_key(api, clarion, broker) -> None:
    await setup_sms(api)
    response = await api.put("/v1/rules/paid", json={"event": "order.paid", "template": "code"})
    assert response.status_code in (200, 201), response.text
    source = source_name("intake")  # the name says nothing: the header does
    await broker.prepare(source)
    event = orjson.dumps({"name": "order.paid", "user_id": "u1", "data": {"code": "9"}})
    headers = {"clarion-kind": "event", "idempotency-key": "paid-42"}
    await broker.publish(source, event, message_id="m1", headers=headers)
    await broker.publish(source, event, message_id="m2", headers=headers)  # the same event again: replayed
    async with consuming(clarion, consume_settings(broker, source, await sender_key(clarion))) as task:
        await eventually(lambda: acked(clarion, broker, source) >= 2, task)
    async with clarion.db.read() as conn:
        [request] = (await conn.execute(sa.select(t.send_requests))).all()
    assert (request.kind, request.idempotency_key) == ("event", "paid-42")
    assert await messages_stored(clarion) == 1
    assert await drain(clarion) == 1
    assert [r["content"]["text"] for r in sink(clarion)] == ["code 9"]


async def test_refusals_are_dead_lettered_with_their_error_and_the_stream_goes_on(api, clarion, broker) -> None:
    await setup_sms(api)
    source = source_name("messages")
    await broker.prepare(source)
    await broker.publish(source, b"{not json", message_id="bad-json", headers={"trace": "t1"})
    await broker.publish(source, orjson.dumps({"to": "u1"}), message_id="no-template", headers={})
    await broker.publish(source, orjson.dumps({"template": "nope", "to": "u1"}), message_id="unknown", headers={})
    await broker.publish(source, send(), message_id="good", headers={})
    async with consuming(clarion, consume_settings(broker, source, await sender_key(clarion))) as task:
        await eventually(lambda: acked(clarion, broker, source) >= 4, task)
        dead = await broker.dead(source, 3)
    assert await messages_stored(clarion) == 1  # the good one, after three refusals
    errors = sorted((body, h["clarion-error-code"], h["clarion-error-message"]) for body, h in dead)
    assert [e[:2] for e in errors] == [
        (b'{"template":"nope","to":"u1"}', "not_found"),
        (b'{"to":"u1"}', "invalid_input"),
        (b"{not json", "invalid_input"),
    ]
    assert [e[2].split(":")[0:2] for e in errors] == [
        ["template 'nope' not found"],
        ["template", " Field required"],
        ["body", " malformed JSON"],  # the messages the API answers the same bodies with
    ]
    assert any(h.get("trace") == "t1" for _, h in dead)  # the message's own headers are kept
    labels = {"broker": broker.name, "source": source, "code": "invalid_input"}
    assert clarion.metrics.registry.get_sample_value("clarion_consumer_dead_lettered_total", labels) == 2


async def test_a_key_without_the_sender_role_is_dead_lettered_as_forbidden(api, clarion, broker) -> None:
    await setup_sms(api)
    source = source_name("messages")
    await broker.prepare(source)
    await broker.publish(source, send(), message_id="m", headers={})
    key = await clarion.keys.create("editor", ("editor",))
    async with consuming(clarion, consume_settings(broker, source, key)) as task:
        await eventually(lambda: acked(clarion, broker, source) >= 1, task)
        [(_, headers)] = await broker.dead(source, 1)
    assert headers["clarion-error-code"] == "forbidden"
    assert await messages_stored(clarion) == 0


async def test_lag_is_on_metrics_while_messages_wait(api, clarion, public, broker) -> None:
    await setup_sms(api)
    source = source_name("messages")
    await broker.prepare(source)
    for i in range(60):
        await broker.publish(source, send(str(i)), message_id=f"m{i}", headers={})
    settings = consume_settings(broker, source, await sender_key(clarion), concurrency=1, prefetch=1)
    seen: list[float] = []

    async def lag_reported(at_most: float) -> bool:
        text = (await public.get("/metrics")).text
        line = next((x for x in text.splitlines() if x.startswith("clarion_consumer_lag{") and source in x), None)
        if line is not None:
            seen.append(float(line.rsplit(" ", 1)[1]))
        return bool(seen) and seen[-1] <= at_most

    async with consuming(clarion, settings) as task:
        await eventually(lambda: lag_reported(-1) if acked(clarion, broker, source) < 60 else True, task)
        await eventually(lambda: lag_reported(0), task)
    assert max(seen) >= 10  # messages were reported waiting, then none


async def test_a_crash_after_the_write_before_the_ack_redelivers_and_sends_once(
    api, clarion, broker, settings, tmp_path
) -> None:
    await setup_sms(api)
    source = source_name("messages")
    await broker.prepare(source)
    key = await sender_key(clarion)
    await broker.publish(source, send(), message_id="once", headers={})
    env = {
        **os.environ,
        "CLARION_DATABASE_URL": settings.database_url,
        "CLARION_DATA_DIR": settings.data_dir,
        "CLARION_OUTBOX_DIR": settings.outbox_dir,
        "CLARION_SECRET_KEY": "test-secret-key",
        "CLARION_CONSUME_BROKER": broker.name,
        "CLARION_CONSUME_URL": broker.url,
        "CLARION_CONSUME_SOURCES": source,
        "CLARION_CONSUME_API_KEY": key,
        "CLARION_CONSUME_ACK_WAIT_SECONDS": "1",
        "CLARION_CONSUME_CRASH_AFTER_WRITES": "1",  # the test hook: exit after the write, before the ack
    }
    log = tmp_path / "consume.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "clarion.cli_consume", "--log-level", "warning", env=env, stdout=out, stderr=out
        )
        await asyncio.wait_for(process.wait(), 120)
    assert process.returncode == 70, log.read_text()
    assert await messages_stored(clarion) == 1  # written, never acknowledged

    async with consuming(clarion, consume_settings(broker, source, key)) as task:
        await eventually(lambda: acked(clarion, broker, source) >= 1, task)  # redelivered, replayed
    assert await messages_stored(clarion) == 1
    assert await drain(clarion) == 1
    assert len(sink(clarion)) == 1


async def test_a_burst_of_ten_thousand_is_all_accepted(api, clarion, broker) -> None:
    await setup_sms(api)
    source = source_name("messages")
    await broker.prepare(source)
    count = 10_000
    for start in range(0, count, 500):
        await asyncio.gather(
            *(broker.publish(source, send(str(i)), message_id=f"b{i}", headers={}) for i in range(start, start + 500))
        )
    async with consuming(clarion, consume_settings(broker, source, await sender_key(clarion))) as task:
        # every message written (acks alone may count a redelivery's replay before a slow original is written)
        await eventually(lambda: _all_stored(clarion, count), task, within=240)
        await eventually(lambda: acked(clarion, broker, source) >= count, task)
    assert await messages_stored(clarion) == count
    async with clarion.db.read() as conn:
        keys = (await conn.execute(sa.select(sa.func.count(sa.distinct(t.send_requests.c.idempotency_key))))).scalar()
    assert keys == count


async def _value(value: bool | Awaitable[bool]) -> bool:
    return await value if inspect.isawaitable(value) else value


async def test_clarion_api_consumes_when_a_broker_is_configured(db_url: str, tmp_path: Any, broker: Any) -> None:
    """``clarion api`` (as ``clarion serve``) with ``CLARION_CONSUME_*`` set runs the consumer beside the API: a
    published send becomes a message the API shows, its timeline naming the broker."""
    import httpx

    from tests.processes import api_process

    key = "clk_consume_in_serve_bootstrap_key0"
    source = source_name("messages")
    await broker.prepare(source)
    env = {
        **os.environ,
        "CLARION_DATABASE_URL": db_url,
        "CLARION_DATA_DIR": str(tmp_path / "var"),
        "CLARION_OUTBOX_DIR": str(tmp_path / "var" / "outbox"),
        "CLARION_SECRET_KEY": "consume-in-serve-secret",
        "CLARION_API_KEY": key,
        "CLARION_CONSUME_BROKER": broker.name,
        "CLARION_CONSUME_URL": broker.url,
        "CLARION_CONSUME_SOURCES": source,
        "CLARION_CONSUME_API_KEY": key,
    }
    with api_process(env, tmp_path / "api.log") as base:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as api:
            await setup_sms(api)
            await broker.publish(source, send(), message_id="served-1", headers={})
            messages: list[Any] = []
            for _ in range(100):
                messages = (await api.get("/v1/users/u1/messages")).json()["messages"]
                if messages:
                    break
                await asyncio.sleep(0.1)
            assert len(messages) == 1, messages
            detail = (await api.get(f"/v1/messages/{messages[0]['id']}")).json()
    (accepted,) = [e for e in detail["timeline"] if e["status"] == "accepted"]
    assert accepted["reason"].startswith(f"{broker.name} {source} (bootstrap)")
