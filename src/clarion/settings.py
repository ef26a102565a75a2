"""Clarion's configuration: ``CLARION_*`` environment variables. The defaults give the embedded mode:
SQLite under ./var, API and workers in one process, the file provider for email, sms and push."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from clarion.domain import links


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLARION_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///var/clarion.db"
    #: counters (caps, dedup, the safety valve) shared by several Clarion processes; in-process when unset
    redis_url: str | None = None
    #: the prefix of Clarion's Redis keys, so several deployments can share one Redis
    redis_prefix: str = "clarion:"
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = "http://127.0.0.1:8000"
    #: the country (ISO 3166 alpha-2, e.g. ``CN``) of phone numbers written without ``+``: ``13912345678`` and
    #: ``0086 139…`` are stored as ``+86139…``; unset, such numbers are refused with a 422
    default_region: str | None = Field(default=None, pattern=r"^[A-Za-z]{2}$")
    #: a bootstrap API key (automation, the demo); stored hashed like any other
    api_key: SecretStr | None = None
    #: signs webhooks of the built-in webhook provider, unsubscribe links …; generated into ./var when unset
    secret_key: SecretStr | None = None
    data_dir: str = "var"
    outbox_dir: str = "var/outbox"

    #: delivery workers in this process (serve runs API + workers)
    workers: int = Field(default=1, ge=0, le=64)
    claim_batch: int = Field(default=200, ge=1, le=5000)
    #: while a backlog lasts, each full claim doubles the next one up to this (see ``Dispatcher``)
    claim_batch_max: int = Field(default=1000, ge=1, le=5000)
    lease_seconds: float = Field(default=60.0, gt=0)
    poll_interval: float = Field(default=0.05, gt=0)
    #: after a claim that took every due delivery, the next claim waits this long so that a steady flow of sends
    #: is claimed in batches (an idle worker still claims a new send at once); 0 claims again at once
    claim_linger: float = Field(default=0.01, ge=0, le=1)
    #: the retry schedule (``domain.retry``): the wait after attempt n is min(max, base * 2^(n-1)), between half of
    #: it and all of it (equal jitter). The defaults wait 10 s, 20 s, … 640 s, then 20 min twice: the nine retries
    #: span 30.6 to 61.2 minutes, so an outage of a channel's only provider shorter than 30 min loses nothing.
    #: A template's ttl bounds it: a retry that would come after the ttl expires the delivery instead.
    max_attempts: int = Field(default=10, ge=1, le=50)
    retry_base_seconds: float = Field(default=10.0, gt=0)
    #: also the longest vendor Retry-After honoured
    retry_max_seconds: float = Field(default=1200.0, gt=0)

    #: receipt polling (``pipeline.polling``): every this many seconds, the vendors of provider kinds that are
    #: polled rather than calling back are asked about their deliveries still ``sent``
    receipt_poll_seconds: float = Field(default=60.0, gt=0)
    #: a delivery ``sent`` longer ago than this is no longer polled (it stays ``sent``)
    receipt_poll_max_age_hours: float = Field(default=72.0, gt=0)
    #: a receipt kept because no delivery carried its id yet is deleted after this many days if none ever does
    pending_receipt_days: float = Field(default=7.0, gt=0)

    #: how often pending channel fallbacks are looked at (``pipeline.fallback``): a fallback fires at most this
    #: long after its window ends or its original fails
    fallback_poll_seconds: float = Field(default=0.5, gt=0)

    #: how often the stored alert rules are judged (``pipeline.alerting``); one process judges each round
    alert_interval_seconds: float = Field(default=60.0, gt=0)
    #: how often templates' experiments are looked at, a decided winner applied (``pipeline.experiments``)
    experiment_interval_seconds: float = Field(default=300.0, gt=0)

    #: request bodies larger than this are refused with 413
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    #: the limit of the bulk paths (user batches, events, ID-list uploads)
    max_upload_bytes: int = Field(default=64 * 1_048_576, ge=1024)
    max_recipients: int = Field(default=1000, ge=1)
    idempotency_hours: float = Field(default=24.0, gt=0)
    write_batch_max: int = Field(default=256, ge=1)
    #: tune Python's cyclic garbage collector for a server: once started (modules loaded, the segment index
    #: built) move everything alive out of its way (``gc.freeze``: a full collection then scans only what came
    #: later, not the whole heap), and collect the young generation every 10,000 allocations rather than 700
    #: (a campaign batch allocates hundreds of thousands of short-lived objects)
    tune_gc: bool = True

    #: rewrite URLs to short links on ``public_url`` (``/s/{code}``, one per URL per delivery) so clicks are
    #: attributed: "sms" in SMS text; "all" also in push/inbox url and body and e-mail text and html links
    #: (never in webhook bodies); "off" leaves every URL as written
    short_links: Literal["off", "sms", "all"] = "sms"
    #: query parameters added to a short link's target, e.g.
    #: "utm_source=clarion&utm_medium={channel}&utm_campaign={template}" ({channel}, {template}, {category});
    #: a parameter the URL already has is kept as it is; unset adds none
    short_link_utm: str | None = None

    #: campaigns: audience users per fan-out batch (one transaction each: messages, deliveries and progress)
    campaign_batch: int = Field(default=1000, ge=1, le=20_000)
    #: campaigns: users per batch while urgent sends are arriving (one in the last 10 s): an urgent send's write
    #: waits for the transaction in flight, so smaller is faster for codes and slower for the campaign
    campaign_urgent_batch: int = Field(default=250, ge=1, le=20_000)
    #: a campaign run's lease: another runner takes a run over this long after its runner stopped renewing it
    campaign_lease_seconds: float = Field(default=60.0, gt=0)
    #: how often an idle campaign runner looks for due runs and for parts of running ones to advance
    campaign_poll_seconds: float = Field(default=1.0, gt=0)
    #: the estimate judges every user of audiences up to this size, a random sample of larger ones
    campaign_estimate_exact: int = Field(default=10_000, ge=1)
    campaign_estimate_sample: int = Field(default=5_000, ge=100)
    #: the estimate's price per delivery of each channel (per segment for sms), e.g. '{"sms": 0.045}'
    campaign_prices: dict[str, float] = Field(default_factory=lambda: {"sms": 0.045, "email": 0.0005})
    campaign_currency: str = "CNY"

    #: the segment holder (``clarion segments serve``) this process asks for segment counts, samples and
    #: audiences, e.g. ``http://10.0.0.5:8090``; unset, this process builds and follows its own index
    #: (docs/segments-deployment.md)
    segments_url: str | None = Field(default=None, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    #: where ``clarion segments serve`` listens
    segments_host: str = "127.0.0.1"
    segments_port: int = Field(default=8090, ge=1, le=65535)
    #: how long one answer of the holder may take (a count over 10^8 users takes up to ~0.4 s; an audience of
    #: 10^7 ids streams in seconds); connecting takes at most 3 s, so a holder that is down is a 503 at once
    segments_timeout_seconds: float = Field(default=60.0, gt=0, le=600)

    #: AI copy (``POST /v1/copy:generate``): an OpenAI-compatible Chat Completions endpoint (OpenAI, DeepSeek,
    #: Qwen's compatible mode, Moonshot, a local Ollama or vLLM), e.g. ``https://api.deepseek.com/v1``; unset,
    #: generation answers 503 saying how to configure one
    llm_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str | None = None
    llm_timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    #: tries of one call on 429/5xx/timeouts, with exponential backoff (the server's Retry-After honoured)
    llm_max_attempts: int = Field(default=3, ge=1, le=10)
    #: per department, what differs from the above,
    #: e.g. '{"growth": {"url": "https://dashscope.aliyuncs.com/compatible-mode/v1", "model": "qwen-plus"}}'
    llm_departments: dict[str, dict[str, str]] = Field(default_factory=dict)

    @field_validator("short_link_utm")
    @classmethod
    def _utm(cls, v: str | None) -> str | None:
        links.utm_template(v)  # a typo stops the start-up, not every link
        return v

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
