"""The alert loop on a real database: the figures it reads from the rollups (the 7-day same-hour baseline
included), breakers and the round lease, with notices posted to a loopback webhook receiver that checks
Clarion's signature. Rollup cells are written with ``store.rollups.add``, as the timeline writes them, so a
week of history takes no week of sends. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from clarion import bootstrap
from clarion.analytics import alerts
from clarion.channels import webhook
from clarion.domain import breaker, pricing
from clarion.pipeline import alerting
from clarion.settings import Settings
from clarion.store import alerts as store
from clarion.store import rollups
from clarion.store import tables as t
from tests.acceptance.test_e2e_channels import put_provider
from tests.integration.loopback import LoopbackServer, Recorded, Reply

SECRET = "whsec-alerts-0123456789"
NOW = datetime(2026, 3, 10, 10, 20, tzinfo=UTC)


@pytest.fixture
async def receiver(api: httpx.AsyncClient) -> AsyncIterator[LoopbackServer]:
    """A webhook receiver that takes only requests signed with the ``ops-hook`` account's secret."""

    def check(request: Recorded) -> Reply:
        signature = request.headers.get("Clarion-Signature", "")
        if not webhook.verify(SECRET, request.headers.get("Clarion-Timestamp", ""), request.body, signature):
            return Reply(401, {"error": "bad signature"})
        return Reply(200, {"ok": True})

    async with LoopbackServer(handler=check) as server:
        await put_provider(api, "ops-hook", "webhook", "webhook", {"secret": SECRET, "allow_private_networks": True})
        yield server


def cells(at: datetime, provider: str, **stages: int) -> dict[tuple[Any, ...], list[float]]:
    return {
        (rollups.floor_hour(at), "note", 1, "", "", "", "transactional", "ops", "sms", provider, stage, ""): [n, 0.0]
        for stage, n in stages.items()
    }


async def add_cells(clarion: bootstrap.Clarion, *groups: dict[tuple[Any, ...], list[float]]) -> None:
    async def job(conn: Any) -> None:
        for group in groups:
            await rollups.add(conn, t.funnel_hourly, group)

    await clarion.db.write(job)


async def put_rule(api: httpx.AsyncClient, key: str, body: dict[str, Any]) -> None:
    answer = await api.put(f"/v1/alert-rules/{key}", json=body)
    assert answer.status_code in (200, 201), answer.text


def loop(clarion: bootstrap.Clarion, at: datetime) -> alerting.AlertLoop:
    assert clarion.alerts is not None
    clarion.alerts.clock = lambda: at
    return clarion.alerts


async def test_a_rate_points_below_its_same_hour_baseline_fires_a_signed_webhook_notice(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, receiver: LoopbackServer
) -> None:
    week = [cells(NOW - timedelta(days=d), "aliyun", sent=100, delivered=95) for d in (1, 3, 7)]
    other_hour = cells(NOW - timedelta(days=2, hours=5), "aliyun", sent=100, delivered=10)  # not the same hour
    await add_cells(clarion, *week, other_hour, cells(NOW, "aliyun", sent=100, delivered=80, failed=4))
    await put_rule(
        api,
        "aliyun-drop",
        {
            "kind": "delivery_rate",
            "condition": {"scope": {"provider": "aliyun"}, "drop_points": 10, "window_minutes": 15},
            "notify": {"provider": "ops-hook", "to": f"{receiver.url}/alerts"},
        },
    )
    async with clarion.db.read() as conn:
        window = await store.rate_window(conn, alerts.Subject("provider", "aliyun"), 15, NOW)
    assert window == alerts.RateWindow(100, 80, 4, baseline_rate=0.95, baseline_failed=0.0)

    done = await loop(clarion, NOW).run_once()
    assert [(n["action"], n["notified"]) for n in done.notices] == [("fire", "sent")]
    [request] = receiver.requests
    alert = request.json()["alert"]
    assert (alert["rule"], alert["subject"], alert["action"], alert["value"]) == (
        "aliyun-drop",
        "provider:aliyun",
        "fire",
        0.8,
    )
    assert "15.0 points below its baseline 95.0% (limit 10.0)" in alert["text"]
    assert request.json()["title"] == "[Clarion] Alert: aliyun-drop"


async def test_a_failure_spike_is_judged_against_the_mean_of_the_days_with_history(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, receiver: LoopbackServer
) -> None:
    history = [cells(NOW - timedelta(days=d), "aliyun", sent=50, failed=4) for d in (1, 2)]
    await add_cells(clarion, *history, cells(NOW, "aliyun", sent=50, failed=6, undelivered=5, bounced=1))
    rule = {
        "kind": "failure_spike",
        "condition": {"scope": {"channel": "sms"}, "min_failures": 10, "factor": 3},
        "notify": {"provider": "ops-hook", "to": f"{receiver.url}/alerts"},
    }
    await put_rule(api, "sms-failures", rule)
    done = await loop(clarion, NOW).run_once()
    [notice] = done.notices
    assert notice["text"].startswith("failures of channel sms 12 over 15 min, baseline 4.0, at or above")
    assert notice["notified"] == "sent"


async def test_an_open_breaker_fires_for_its_account_and_a_disabled_rule_goes_quiet_without_a_notice(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, receiver: LoopbackServer
) -> None:
    await put_provider(api, "vendor", "sms", "sms_http", {"url": "https://sms.example.com/send"})
    rule = {"kind": "breaker_opened", "notify": {"provider": "ops-hook", "to": f"{receiver.url}/alerts"}}
    await put_rule(api, "breakers", rule)
    breakers = clarion.providers.breakers
    assert breakers is not None
    at = clarion.providers.clock()
    await breakers.record("vendor", [breaker.Outcome(at, "transient", reason="HTTP 503")] * 5)
    now = datetime.now(UTC)

    done = await loop(clarion, now).run_once()
    assert [(n["subject"], n["action"]) for n in done.notices] == [("provider:vendor", "fire")]
    assert done.judged == len(clarion.providers.builtins) + 2  # every account: the built-ins, vendor, ops-hook
    assert "breaker of provider vendor open" in receiver.requests[0].json()["alert"]["text"]

    await put_rule(api, "breakers", {**rule, "enabled": False})
    quiet = await loop(clarion, now + timedelta(minutes=2)).run_once()
    assert quiet.notices == [] and len(receiver.requests) == 1
    async with clarion.db.read() as conn:
        assert (await store.states(conn))[("breakers", "provider:vendor")].firing_since is None


async def test_a_subject_the_rule_no_longer_watches_is_quieted_and_the_new_one_judged(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, receiver: LoopbackServer
) -> None:
    await add_cells(
        clarion, cells(NOW, "aliyun", sent=100, delivered=50), cells(NOW, "tencent", sent=100, delivered=99)
    )
    rule = {
        "kind": "delivery_rate",
        "condition": {"scope": {"provider": "aliyun"}, "threshold": 0.9},
        "notify": {"provider": "ops-hook", "to": f"{receiver.url}/alerts"},
    }
    await put_rule(api, "rate", rule)
    assert [n["action"] for n in (await loop(clarion, NOW).run_once()).notices] == ["fire"]
    await put_rule(api, "rate", {**rule, "condition": {"scope": {"provider": "tencent"}, "threshold": 0.9}})
    done = await loop(clarion, NOW + timedelta(minutes=1)).run_once()
    assert done.notices == [] and done.judged == 1
    async with clarion.db.read() as conn:
        states = await store.states(conn)
    assert states[("rate", "provider:aliyun")].firing_since is None
    assert states[("rate", "provider:tencent")].firing_since is None


async def test_one_process_judges_a_round_and_the_next_is_due_an_interval_after_it_started(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, receiver: LoopbackServer
) -> None:
    await add_cells(clarion, cells(NOW, "aliyun", sent=100, delivered=50))
    rule = {
        "kind": "delivery_rate",
        "condition": {"threshold": 0.9},
        "notify": {"provider": "ops-hook", "to": f"{receiver.url}/alerts"},
    }
    await put_rule(api, "rate", rule)
    other = alerting.AlertLoop(
        clarion.db, clarion.providers, interval=timedelta(seconds=60), clock=lambda: NOW, lease=timedelta(minutes=5)
    )

    async def hold(conn: Any) -> bool:  # a process that took the round and died in it
        return await store.take_round(clarion.db, conn, token=7.0, now=NOW, until=NOW + timedelta(minutes=5))

    assert await clarion.db.write(hold)
    assert (await other.run_once()).taken is False
    assert (await loop(clarion, NOW + timedelta(minutes=4)).run_once()).taken is False
    taken = await loop(clarion, NOW + timedelta(minutes=5)).run_once()  # its lease ran out
    assert taken.taken and [n["action"] for n in taken.notices] == ["fire"]

    other.clock = lambda: NOW + timedelta(minutes=5, seconds=30)
    assert (await other.run_once()).taken is False  # the next round is due 60 s after the last one started
    other.clock = lambda: NOW + timedelta(minutes=6)
    again = await other.run_once()
    assert again.taken and again.notices == [] and again.judged == 1
    assert len(receiver.requests) == 1


async def test_a_budget_rule_judges_each_budgeted_department_s_month_spend(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, receiver: LoopbackServer
) -> None:
    now = datetime.now(UTC)

    async def budget(conn: Any) -> None:
        row = {"department": "ops", "monthly": 100 * pricing.MICROS, "currency": "CNY", "refuse_marketing": False}
        await conn.execute(t.budgets.insert().values(**row, created_at=now, updated_at=now))

    await clarion.db.write(budget)
    rule = {"kind": "budget", "notify": {"provider": "ops-hook", "to": f"{receiver.url}/alerts"}}
    await put_rule(api, "budgets", rule)
    await put_rule(api, "sales-budget", {**rule, "condition": {"scope": {"department": "sales"}}})
    done = await loop(clarion, now).run_once()
    assert (done.judged, done.notices) == (2, [])
    async with clarion.db.read() as conn:
        states = await store.states(conn)
    assert states[("budgets", "department:ops")].value == 0.0  # nothing spent of 100 this month: judged, quiet
    assert ("sales-budget", "department:sales") not in states  # no budget: nothing to judge


async def test_a_started_clarion_runs_the_loop_beside_its_workers(
    api: httpx.AsyncClient, settings: Settings, receiver: LoopbackServer
) -> None:
    rule = {
        "kind": "delivery_rate",
        "condition": {"threshold": 0.9},
        "notify": {"provider": "ops-hook", "to": f"{receiver.url}/alerts"},
    }
    await put_rule(api, "rate", rule)
    running = bootstrap.build(settings.model_copy(update={"alert_interval_seconds": 0.05}))
    await add_cells(running, cells(datetime.now(UTC), "aliyun", sent=100, delivered=50))
    await running.start(workers=1)
    try:
        for _ in range(200):
            if receiver.requests:
                break
            await asyncio.sleep(0.025)
    finally:
        await running.close()
    [request] = receiver.requests
    assert request.json()["alert"]["action"] == "fire"
