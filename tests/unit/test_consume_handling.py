"""The broker-independent parts of ``clarion consume``: which kind a message is, the backoff, the dead-letter
headers, the Kafka commit arithmetic, the settings — and a database that is away making a retry, not a refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.structs import TopicPartition

from clarion import bootstrap
from clarion.consume import handling, kafka
from clarion.consume.config import ConsumeSettings
from clarion.settings import Settings


def inbound(source: str, **headers: str) -> handling.Inbound:
    return handling.Inbound(source, b"{}", headers, "rabbitmq:1")


@pytest.mark.parametrize(
    ("source", "headers", "kind"),
    [
        ("orders.messages", {}, "message"),
        ("orders.events", {}, "event"),
        ("billing-events", {}, "event"),
        ("orders.events", {"clarion-kind": "message"}, "message"),  # the header wins over the name
        ("anything", {"clarion-kind": "event"}, "event"),
        ("anything", {}, None),
        ("orders.messages", {"clarion-kind": "sms"}, None),  # a header that says something else is not guessed
    ],
)
def test_the_kind_comes_from_the_header_else_the_source_name(source, headers, kind) -> None:
    assert handling.kind_of(inbound(source, **headers)) == kind


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_success() -> None:
    backoff = handling.Backoff(0.5, 3)
    assert [backoff.failed() for _ in range(5)] == [0.5, 1, 2, 3, 3]
    backoff.succeeded()
    assert backoff.failed() == 0.5


def test_a_dead_letter_keeps_the_headers_and_adds_the_error() -> None:
    dead = handling.DeadLetter("not_found", "template 'x' not found")
    assert dead.headers({"trace": "t"}) == {
        "trace": "t",
        "clarion-error-code": "not_found",
        "clarion-error-message": "template 'x' not found",
    }
    assert len(handling.DeadLetter("invalid_input", "x" * 5000).headers({})["clarion-error-message"]) == 1000


def test_kafka_commits_stop_at_the_oldest_record_in_hand() -> None:
    offsets = kafka.Offsets()
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    for o in range(10, 14):
        offsets.started(a, o)
    offsets.started(b, 0)
    offsets.finished(a, 12)
    offsets.finished(a, 11)
    assert offsets.to_commit() == {a: 10}  # 10 is still being handled
    offsets.committed({a: 10})
    assert offsets.to_commit() == {}
    offsets.finished(a, 10)
    offsets.finished(b, 0)
    assert offsets.to_commit() == {a: 13, b: 1}
    offsets.finished(a, 13)
    assert offsets.to_commit() == {a: 14, b: 1}
    assert offsets.in_hand() == 0


def test_settings_read_comma_separated_sources_and_place_the_dead_letter(monkeypatch) -> None:
    monkeypatch.setenv("CLARION_CONSUME_SOURCES", "orders.messages, orders.events")
    monkeypatch.setenv("CLARION_CONSUME_DEAD_LETTER", "dead.{source}")
    settings = ConsumeSettings(broker="nats")
    assert settings.sources == ["orders.messages", "orders.events"]
    assert settings.dead_letter_for("orders.events") == "dead.orders.events"
    assert settings.broker_url() == "nats://127.0.0.1:4222"


async def test_a_database_that_is_away_is_retried_with_a_growing_backoff_not_dead_lettered(tmp_path: Path) -> None:
    unreachable = "postgresql+asyncpg://postgres@127.0.0.1:9/nowhere"  # the discard port: nothing listens
    clarion = bootstrap.build(Settings(database_url=unreachable, data_dir=str(tmp_path), secret_key="s"))
    handler = handling.Handler(clarion, "clk_any", broker="rabbitmq", backoff=handling.Backoff(0.1, 10))
    try:
        outcomes = [await handler.handle(inbound("orders.messages")) for _ in range(3)]
    finally:
        await clarion.db.close()
    assert [type(o) for o in outcomes] == [handling.Retry] * 3
    assert [o.delay for o in outcomes if isinstance(o, handling.Retry)] == [0.1, 0.2, 0.4]
    retried = clarion.metrics.registry.get_sample_value(
        "clarion_consumer_retried_total", {"broker": "rabbitmq", "source": "orders.messages"}
    )
    assert retried == 3


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"sources": ["q.messages"], "api_key": "k"}, "broker"),
        ({"broker": "rabbitmq", "api_key": "k"}, "sources"),
        ({"broker": "nats", "sources": ["s.messages"]}, "api_key"),
    ],
)
def test_a_consumer_without_its_settings_names_the_one_missing(tmp_path: Path, given, field) -> None:
    from clarion.consume import running
    from clarion.domain import errors

    clarion = bootstrap.build(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/c.db", data_dir=str(tmp_path)))
    with pytest.raises(errors.InvalidInput) as refused:
        running.consumer(clarion, ConsumeSettings(**given))
    assert refused.value.details == {"field": field}
