"""The one place Clarion's parts are constructed and wired: ``build(settings)`` returns the running app's
services. Tests wire the same way, with their own settings."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from clarion import apikeys, metrics, opens, owners, sealing, unsubscribe, worker
from clarion.campaigns.runner import CampaignRunner
from clarion.channels import registry, vendor
from clarion.counters import base as counters_base
from clarion.counters.memory import MemoryCounters
from clarion.counters.redis import RedisCounters
from clarion.domain import links, model, phones, retry
from clarion.domain.policy.decision import Candidate
from clarion.pipeline import alerting, catalog, experiments, fallback, intake, policies, polling
from clarion.segments import remote
from clarion.segments.service import SegmentService
from clarion.settings import Settings
from clarion.store import links as store_links
from clarion.store.db import Database

log = logging.getLogger(__name__)


@dataclass
class Clarion:
    settings: Settings
    db: Database
    catalog: catalog.Catalog
    intake: intake.Intake
    providers: registry.ProviderRegistry
    dispatcher: worker.Dispatcher
    metrics: metrics.Metrics
    keys: apikeys.ApiKeys
    counters: counters_base.Counters
    policies: policies.PolicyStage
    secret_key: str
    #: the segment index held here, or the deployment's holder asked for it (CLARION_SEGMENTS_URL)
    segments: SegmentService | remote.RemoteSegments
    campaigns: CampaignRunner
    #: asks polled vendors for receipts (``pipeline.polling``), beside the workers
    poller: polling.ReceiptPoller | None = None
    #: fires or cancels pending channel fallbacks (``pipeline.fallback``), beside the workers
    fallbacks: fallback.Firer | None = None
    #: judges the stored alert rules and sends their notices (``pipeline.alerting``), beside the workers
    alerts: alerting.AlertLoop | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _workers: list[asyncio.Task[None]] = field(default_factory=list)

    def invalidate(self) -> None:
        """Configuration changed through this process: forget cached templates, rules and providers."""
        self.catalog.invalidate()
        self.providers.invalidate()

    async def start(self, *, workers: int | None = None) -> None:
        if self.settings.api_key is not None:
            await self.keys.create("bootstrap", key=self.settings.api_key.get_secret_value())
        count = self.settings.workers if workers is None else workers
        self._stop.clear()
        await self.segments.start()
        if self.settings.tune_gc:
            gc.collect()
            gc.freeze()
            gc.set_threshold(10_000, 20, 100)
        self._workers = [
            asyncio.create_task(self.dispatcher.run(self._stop, index=i), name=f"clarion-worker-{i}")
            for i in range(count)
        ]
        if count:
            urgent = self.dispatcher.run(self._stop, urgent=True)
            self._workers.append(asyncio.create_task(urgent, name="clarion-worker-urgent"))
            self.campaigns.handoff = self.dispatcher  # its batches are sent by this process's dispatcher
            self.intake.handoff = self.dispatcher  # and the urgent sends it accepts
            self._workers.append(asyncio.create_task(self.campaigns.run(self._stop), name="clarion-campaigns"))
            if self.poller is not None:
                self._workers.append(asyncio.create_task(self.poller.run(self._stop), name="clarion-receipt-poll"))
            if self.fallbacks is not None:
                firing = self.fallbacks.run(self._stop, owner=self.dispatcher.host.owner("fallback"))
                self._workers.append(asyncio.create_task(firing, name="clarion-fallbacks"))
            if self.alerts is not None:
                self._workers.append(asyncio.create_task(self.alerts.run(self._stop), name="clarion-alerts"))
            deciding = experiments.run(
                self.db, self.invalidate, self._stop, interval=self.settings.experiment_interval_seconds
            )
            self._workers.append(asyncio.create_task(deciding, name="clarion-experiments"))

    async def close(self) -> None:
        self._stop.set()
        self.dispatcher.wakeup.set()
        if self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*self._workers)
        self._workers = []
        await self.segments.close()
        await self.providers.close()
        await self.counters.close()
        await self.keys.close()  # its last uses not yet written
        await self.db.close()


def secret_key(settings: Settings) -> str:
    """The signing secret: configured, or generated once into the data directory (mode 0600)."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    path = Path(settings.data_dir) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48))
    return path.read_text().strip()


def build(settings: Settings | None = None) -> Clarion:
    settings = settings or Settings()
    phones.set_default_region(settings.default_region)
    db = Database(settings.database_url, batch_max=settings.write_batch_max)
    the_catalog = catalog.Catalog(db)
    the_metrics = metrics.Metrics()
    builtins = [
        registry.Account("file", None, "file", {"directory": settings.outbox_dir}),
        registry.Account("inbox", None, "inbox", {}),
        registry.Account("webhook", None, "webhook", {"secret": secret_key(settings)}),
    ]
    providers = registry.ProviderRegistry(db, builtins, sealer=sealing.Sealer(secret_key(settings)))
    counters: counters_base.Counters = (
        RedisCounters.from_url(settings.redis_url, prefix=settings.redis_prefix)
        if settings.redis_url
        else MemoryCounters()
    )
    # Breakers, health windows and rate limits live in the counters: with CLARION_REDIS_URL they are shared by
    # every process (counters.redis), else kept in this one; each account's thresholds come from its config.
    held = counters if isinstance(counters, MemoryCounters | RedisCounters) else MemoryCounters()
    held.thresholds = providers.thresholds
    providers.breakers = held
    providers.rate_limits = held
    if isinstance(counters, RedisCounters):  # vendor access tokens shared by every process
        providers.context.tokens = vendor.TokenCache(counters.client, prefix=settings.redis_prefix)
    stage = policies.PolicyStage(db, the_catalog, counters)
    host = owners.Host()  # names this process's leases; tells which leases of this host's processes are orphaned
    dispatcher = worker.Dispatcher(
        db,
        providers,
        the_metrics,
        retry_policy=retry.RetryPolicy(settings.max_attempts, settings.retry_base_seconds, settings.retry_max_seconds),
        batch_size=settings.claim_batch,
        max_batch_size=settings.claim_batch_max,
        lease=timedelta(seconds=settings.lease_seconds),
        poll_interval=settings.poll_interval,
        linger=settings.claim_linger,
        recheck=stage.recheck,
        host=host,
    )
    providers.clock = lambda: dispatcher.clock().timestamp()  # breakers keep the dispatcher's time

    secret = secret_key(settings)
    the_intake = intake.Intake(
        db,
        the_catalog,
        policies=stage,
        finishers=[
            _unsubscribe_headers(settings.public_url, secret.encode()),
            *_short_links(settings),
            opens.finisher(settings.public_url, secret.encode()),  # after short links: its URL stays its own
        ],
        idempotency_window=timedelta(hours=settings.idempotency_hours),
        on_queued=dispatcher.notify,
        on_urgent=dispatcher.notify_urgent,
    )
    segments = _segments(settings, db, secret)
    poller = _receipt_poller(settings, db, providers, counters, dispatcher, the_catalog)
    return Clarion(
        settings,
        db,
        the_catalog,
        the_intake,
        providers,
        dispatcher,
        the_metrics,
        apikeys.ApiKeys(db),
        counters,
        stage,
        secret,
        segments,
        CampaignRunner(
            db,
            the_intake,
            segments,  # type: ignore[arg-type]  # it asks only for Audiences
            batch_size=settings.campaign_batch,
            urgent_batch=settings.campaign_urgent_batch,
            lease=timedelta(seconds=settings.campaign_lease_seconds),
            poll_interval=settings.campaign_poll_seconds,
            host=host,
        ),
        poller=poller,
        fallbacks=fallback.Firer(
            db,
            stage,
            poll_interval=settings.fallback_poll_seconds,
            lease=timedelta(seconds=settings.lease_seconds),
            clock=lambda: dispatcher.clock(),
            on_queued=dispatcher.notify,
        ),
        alerts=alerting.AlertLoop(
            db,
            providers,
            interval=timedelta(seconds=settings.alert_interval_seconds),
            clock=lambda: dispatcher.clock(),
        ),
    )


def _segments(settings: Settings, db: Database, secret: str) -> SegmentService | remote.RemoteSegments:
    """The embedded index (built by this process), or, with ``CLARION_SEGMENTS_URL``, the deployment's holder."""
    if settings.segments_url:
        return remote.RemoteSegments(db, settings.segments_url, secret, timeout=settings.segments_timeout_seconds)
    return SegmentService(db)


def build_holder(settings: Settings) -> tuple[Clarion, SegmentService]:
    """The services of ``clarion segments serve``: this process holds the index whatever CLARION_SEGMENTS_URL says."""
    services = build(settings.model_copy(update={"segments_url": None}))
    assert isinstance(services.segments, SegmentService)  # segments_url is unset just above
    return services, services.segments


def _receipt_poller(
    settings: Settings,
    db: Database,
    providers: registry.ProviderRegistry,
    counters: counters_base.Counters,
    dispatcher: worker.Dispatcher,
    the_catalog: catalog.Catalog,
) -> polling.ReceiptPoller:
    """Polled vendors' receipts, one process per account at a time: through Redis when processes share it,
    a PostgreSQL advisory lock otherwise; SQLite is one process."""
    interval = timedelta(seconds=settings.receipt_poll_seconds)
    locks: polling.Locks
    if isinstance(counters, RedisCounters):
        ttl = max(interval * 2, timedelta(minutes=5))  # a process that died mid-round holds others out this long
        locks = polling.RedisLocks(counters.client, prefix=settings.redis_prefix, ttl=ttl)
    elif db.is_sqlite:
        locks = polling.NoLocks()
    else:
        locks = polling.AdvisoryLocks(db)
    return polling.ReceiptPoller(
        db,
        providers,
        locks=locks,
        interval=interval,
        max_age=timedelta(hours=settings.receipt_poll_max_age_hours),
        retention=timedelta(days=settings.pending_receipt_days),
        clock=lambda: dispatcher.clock(),
        on_suppressed=the_catalog.invalidate,
    )


def _short_links(settings: Settings) -> list[intake.Finisher]:
    """URLs become short links on our domain (``CLARION_SHORT_LINKS``), so a click is attributed to its delivery."""
    if settings.short_links == "off":
        return []
    shortener = links.Shortener(
        settings.public_url,
        everywhere=settings.short_links == "all",
        utm=links.utm_template(settings.short_link_utm),
    )
    return [store_links.Finisher(shortener)]


def _unsubscribe_headers(public_url: str, secret: bytes) -> intake.Finisher:
    """Every marketing e-mail carries a one-click unsubscribe (List-Unsubscribe + List-Unsubscribe-Post)."""

    def finish(candidate: Candidate, delivery_id: str, content: dict[str, Any], rows: Any) -> dict[str, Any]:
        if candidate.channel is not model.Channel.EMAIL or candidate.category is not model.Category.MARKETING:
            return content
        links = unsubscribe.links(
            public_url,
            secret,
            user_id=candidate.user.user_id,
            category=candidate.category.value,
            channel=candidate.channel.value,
            address=candidate.address,
            delivery_id=delivery_id,  # an unsubscribe through it is counted on this delivery's funnel
        )
        return {**content, "headers": links["headers"]}

    return finish
