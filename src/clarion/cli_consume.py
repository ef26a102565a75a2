"""``clarion consume``: send requests and events from RabbitMQ, NATS JetStream or Kafka (``clarion.consume``).

Every option falls back to its ``CLARION_CONSUME_*`` variable; the database and the rest come from ``CLARION_*``
as for every other command. ``python -m clarion.cli_consume`` runs the same command."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated, Any

import typer
from rich.console import Console

from clarion import bootstrap, metrics
from clarion.consume import running
from clarion.consume.config import Broker, ConsumeSettings
from clarion.domain import errors
from clarion.settings import Settings

app = typer.Typer(add_completion=False)
console = Console(stderr=True)


@app.command()
def consume(
    broker: Annotated[Broker | None, typer.Option(help="rabbitmq, nats or kafka (CLARION_CONSUME_BROKER)")] = None,
    url: Annotated[str | None, typer.Option(help="the broker's address (CLARION_CONSUME_URL)")] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(help="a queue, subject or topic to consume; repeat for several (CLARION_CONSUME_SOURCES)"),
    ] = None,
    dead_letter: Annotated[
        str | None, typer.Option(help="where refusals go, {source} replaced (default {source}.dead)")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, max=4096, help="messages handled at once")] = None,
    prefetch: Annotated[int | None, typer.Option(min=1, max=65535, help="messages held unacknowledged")] = None,
    group: Annotated[str | None, typer.Option(help="durable consumer (NATS) / consumer group (Kafka)")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="serve Prometheus /metrics on this port")] = None,
    workers: Annotated[int, typer.Option(min=0, max=64, help="delivery workers in this process too")] = 0,
    log_level: Annotated[str, typer.Option(help="log level")] = "info",
) -> None:
    """Take send requests (the body of POST /v1/messages) and events (of POST /v1/events) from a message broker,
    as the owner of CLARION_CONSUME_API_KEY (role sender). Acknowledged once written; refusals go to the
    dead-letter destination with clarion-error-code / clarion-error-message headers. Stops on SIGTERM/SIGINT."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    given: dict[str, Any] = {
        "broker": broker,
        "url": url,
        "sources": source,
        "dead_letter": dead_letter,
        "concurrency": concurrency,
        "prefetch": prefetch,
        "group": group,
        "metrics_port": metrics_port,
    }
    settings = ConsumeSettings(**{k: v for k, v in given.items() if v is not None})
    try:
        asyncio.run(_consume(Settings(), settings, workers))
    except errors.InvalidInput as exc:
        console.print(f"[red]{exc.message}[/]")
        raise typer.Exit(2) from None


async def _consume(settings: Settings, consume_settings: ConsumeSettings, workers: int) -> None:
    services = bootstrap.build(settings)
    consumer = running.consumer(services, consume_settings)  # a missing setting is reported before connecting
    await services.start(workers=workers)
    try:
        name = await running.authorized(services, consume_settings)
        if consume_settings.metrics_port is not None:
            metrics.serve(services.metrics, consume_settings.metrics_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        console.print(
            f"consuming {', '.join(consume_settings.sources)} from {consume_settings.broker} as [bold]{name}[/]"
        )
        await consumer.run(stop)
    finally:
        await services.close()


if __name__ == "__main__":
    app()
