"""What a consumer reads from the environment (``CLARION_CONSUME_*``); ``clarion consume`` options override it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Broker = Literal["rabbitmq", "nats", "kafka"]
DEFAULT_URLS: dict[str, str] = {
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
    "nats": "nats://127.0.0.1:4222",
    "kafka": "127.0.0.1:9092",
}


class ConsumeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLARION_CONSUME_", extra="ignore")

    broker: Broker | None = Field(default=None, description="unset: no consumer runs (in `clarion serve`)")
    url: str | None = Field(default=None, description="the broker's address; default: its usual port on loopback")
    sources: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="queues (RabbitMQ), subjects (NATS) or topics (Kafka), comma-separated"
    )
    api_key: SecretStr | None = Field(default=None, description="the key the consumer sends as; needs `sender`")
    dead_letter: str = Field(default="{source}.dead", description="where refused messages go; {source} is replaced")
    concurrency: int = Field(default=64, ge=1, le=4096, description="messages handled at once")
    prefetch: int = Field(default=256, ge=1, le=65535, description="messages held unacknowledged at most")
    group: str = Field(default="clarion", description="the durable consumer (NATS) or consumer group (Kafka)")
    ack_wait_seconds: float = Field(default=30.0, gt=0, description="NATS: redelivery after this long without ack")
    backoff_seconds: float = Field(default=0.5, gt=0, description="the first wait after a transient failure")
    backoff_max_seconds: float = Field(default=30.0, gt=0)
    lag_seconds: float = Field(default=5.0, gt=0, description="how often the broker is asked how many wait")
    metrics_port: int | None = Field(default=None, description="`clarion consume` serves /metrics on this port")
    #: a test hook: the process exits abruptly after this many durable writes, before acknowledging the last
    crash_after_writes: int | None = None

    @field_validator("sources", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else value

    def broker_url(self) -> str:
        assert self.broker is not None
        return self.url or DEFAULT_URLS[self.broker]

    def dead_letter_for(self, source: str) -> str:
        return self.dead_letter.replace("{source}", source)
