"""Message-queue intake benchmark: messages/s from RabbitMQ and NATS JetStream into accepted sends.

For each broker and run: a fresh migrated database (SQLite by default, or ``--database-url``), one user and one
SMS template; ``--messages`` single-recipient send requests published to a fresh queue / stream first; then the
consumer (``clarion.consume``, as ``clarion consume`` runs it, no delivery workers) is started and timed until
it has acknowledged them all — each one written (request, message, delivery, timeline) before its ack. Prints
one JSON line: per broker, the accepted sends/s of every run and their median, and the publish rate.

Run: ``.venv/bin/python bench/mq.py`` (RabbitMQ on 127.0.0.1:5672 guest/guest, NATS on 127.0.0.1:4222);
``--runs 3 --messages 10000`` are the defaults."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.consume import jetstream, running
from clarion.consume.config import ConsumeSettings
from clarion.settings import Settings
from clarion.store import migrate

KEY = "clk_bench_key"


class Rabbit:
    name = "rabbitmq"
    url = "amqp://guest:guest@127.0.0.1:5672/"

    async def publish_all(self, source: str, bodies: list[bytes]) -> None:
        import aio_pika

        async with await aio_pika.connect(self.url) as connection:
            channel = await connection.channel(publisher_confirms=True)
            await channel.declare_queue(source, durable=True)
            for start in range(0, len(bodies), 500):
                await asyncio.gather(
                    *(
                        channel.default_exchange.publish(aio_pika.Message(b, message_id=f"m{start + i}"), source)
                        for i, b in enumerate(bodies[start : start + 500])
                    )
                )

    async def remove(self, source: str) -> None:
        import aio_pika

        async with await aio_pika.connect(self.url) as connection:
            channel = await connection.channel()
            for name in (source, f"{source}.dead"):
                await channel.queue_delete(name)


class Nats:
    name = "nats"
    url = "nats://127.0.0.1:4222"

    async def publish_all(self, source: str, bodies: list[bytes]) -> None:
        import nats

        connection = await nats.connect(self.url)
        js = connection.jetstream()
        await js.add_stream(name=jetstream.name_for(source), subjects=[source])
        for start in range(0, len(bodies), 500):
            await asyncio.gather(*(js.publish(source, b) for b in bodies[start : start + 500]))
        await connection.close()

    async def remove(self, source: str) -> None:
        import nats

        connection = await nats.connect(self.url)
        js = connection.jetstream()
        for name in (source, f"{source}.dead"):
            await js.delete_stream(jetstream.name_for(name))
        await connection.close()


async def one_run(broker: Any, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    url = args.database_url or f"sqlite+aiosqlite:///{workdir / 'clarion.db'}"
    if args.database_url:
        await _empty(url)
    await asyncio.to_thread(migrate.upgrade, url)  # it runs its own event loop
    settings = Settings(
        database_url=url, data_dir=str(workdir), outbox_dir=str(workdir / "outbox"), api_key=KEY, secret_key="b"
    )
    clarion = bootstrap.build(settings)
    await clarion.start(workers=0)
    source = f"bench-{uuid.uuid4().hex[:8]}.messages"
    try:
        transport = httpx.ASGITransport(app=create_app(clarion=clarion))
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://b", headers=headers) as api:
            await api.put("/v1/users/u1", json={"addresses": {"sms": "+8613800138000"}})
            template = {"name": "code", "category": "transactional", "channels": {"sms": {"text": "code ${data.n}"}}}
            await api.put("/v1/templates/code", json=template)
        bodies = [orjson.dumps({"template": "code", "to": "u1", "data": {"n": i}}) for i in range(args.messages)]
        since = time.perf_counter()
        await broker.publish_all(source, bodies)
        published = time.perf_counter() - since
        key = await clarion.keys.create("bench-queue", ("sender",))
        consume = ConsumeSettings(
            broker=broker.name,
            url=broker.url,
            sources=[source],
            api_key=key,
            concurrency=args.concurrency,
            prefetch=args.prefetch,
        )
        stop = asyncio.Event()
        since = time.perf_counter()
        task = asyncio.create_task(running.consumer(clarion, consume).run(stop))
        labels = {"broker": broker.name, "source": source}
        while (clarion.metrics.registry.get_sample_value("clarion_consumer_acked_total", labels) or 0) < args.messages:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - since
        stop.set()
        await task
        return {
            "accepted_per_s": round(args.messages / elapsed, 1),
            "published_per_s": round(args.messages / published),
        }
    finally:
        await clarion.close()
        await broker.remove(source)


async def _empty(url: str) -> None:
    """A PostgreSQL database emptied of Clarion's tables, so each run starts as the first."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        await conn.execute(sa.text("CREATE SCHEMA public"))
    await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--broker", choices=["rabbitmq", "nats", "both"], default="both")
    parser.add_argument("--database-url", help="a PostgreSQL database to use (emptied first); default: SQLite")
    args = parser.parse_args()
    brokers = [b for b in (Rabbit(), Nats()) if args.broker in (b.name, "both")]
    result: dict[str, Any] = {"messages": args.messages, "concurrency": args.concurrency, "prefetch": args.prefetch}
    result["database"] = "postgresql" if args.database_url else "sqlite"
    for broker in brokers:
        runs = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(await one_run(broker, args, Path(tmp)))
        result[broker.name] = {
            "accepted_per_s_median": statistics.median(r["accepted_per_s"] for r in runs),
            "published_per_s_median": statistics.median(r["published_per_s"] for r in runs),
            "runs": runs,
        }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
