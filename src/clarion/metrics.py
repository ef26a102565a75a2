"""Prometheus metrics, one registry per running Clarion (built in bootstrap, never at import)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: the value of ``clarion_provider_breaker_state`` for each breaker state
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "clarion_messages_accepted", "Messages accepted by intake", ["status"], registry=self.registry
        )
        self.sent = Counter(
            "clarion_deliveries_sent",
            "Deliveries handed to a provider",
            ["channel", "provider"],
            registry=self.registry,
        )
        self.failed = Counter(
            "clarion_deliveries_failed",
            "Deliveries failed for good",
            ["channel", "provider"],
            registry=self.registry,
        )
        self.retried = Counter(
            "clarion_deliveries_retried",
            "Transient failures scheduled for retry",
            ["channel", "provider"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "clarion_queue_depth",
            "Deliveries waiting in the outbox, by lane",
            ["lane"],
            registry=self.registry,
        )
        self.send_seconds = Histogram(
            "clarion_provider_send_seconds",
            "Time a provider took for one batch",
            ["provider"],
            registry=self.registry,
        )
        self.accepted_to_sent = Histogram(
            "clarion_accepted_to_sent_seconds",
            "From intake to a provider's acceptance",
            ["channel"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
            registry=self.registry,
        )
        self.provider_outcomes = Counter(
            "clarion_provider_outcomes",
            "Send outcomes per provider account, by kind (ok, transient, permanent, misconfigured)",
            ["provider", "kind"],
            registry=self.registry,
        )
        self.breaker_state = Gauge(
            "clarion_provider_breaker_state",
            "A provider account's circuit breaker, as last seen by this process: 0 closed, 1 half-open, 2 open",
            ["provider"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "clarion_provider_rate_limited",
            "Deliveries put back in the queue to wait for their turn under a provider account's rate limit",
            ["provider"],
            registry=self.registry,
        )
        self.breaker_transitions = Counter(
            "clarion_provider_breaker_transitions",
            "Circuit breaker transitions made by this process's outcomes, by the state entered",
            ["provider", "to"],
            registry=self.registry,
        )
        self.consumed = Counter(
            "clarion_consumer_consumed",
            "Messages taken from a broker (clarion consume), redeliveries included",
            ["broker", "source"],
            registry=self.registry,
        )
        self.consumer_acked = Counter(
            "clarion_consumer_acked",
            "Broker messages acknowledged after their send request was written",
            ["broker", "source"],
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "clarion_consumer_dead_lettered",
            "Broker messages refused and moved to the dead-letter destination, by error code",
            ["broker", "source", "code"],
            registry=self.registry,
        )
        self.consumer_retried = Counter(
            "clarion_consumer_retried",
            "Broker messages handed back for redelivery after a transient failure",
            ["broker", "source"],
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            "clarion_consumer_lag",
            "Messages waiting in a broker source for this consumer, as the broker last told",
            ["broker", "source"],
            registry=self.registry,
        )


def serve(metrics: Metrics, port: int, host: str = "127.0.0.1") -> None:
    """Serve ``metrics`` as Prometheus text on ``http://host:port/metrics`` from a thread of this process (the
    processes without the API — ``clarion worker``, ``clarion consume`` — have no other endpoint)."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=host, registry=metrics.registry)
