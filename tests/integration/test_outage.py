"""Outages must not lose messages: the default retry schedule rides out half an hour of a channel's only provider
answering 503, and a template's ttl bounds it.

The outage test drives the real dispatcher against a real HTTP vendor on loopback, on a clock it moves from one
due retry to the next, so forty minutes of outage pass in a second or two."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.domain import errors, retry
from clarion.settings import Settings
from clarion.store import tables as t
from tests.conftest import API_KEY, drain, put_template, put_user
from tests.integration.loopback import LoopbackServer, Reply

DEFAULTS = {
    name: Settings.model_fields[name].default for name in ("max_attempts", "retry_base_seconds", "retry_max_seconds")
}
TRANSIENT = errors.TransientSendError("HTTP 503", code="http_503")


def default_policy() -> retry.RetryPolicy:
    return retry.RetryPolicy(DEFAULTS["max_attempts"], DEFAULTS["retry_base_seconds"], DEFAULTS["retry_max_seconds"])


# -- the schedule ------------------------------------------------------------------------------------------------


def test_the_default_schedule_spans_at_least_half_an_hour() -> None:
    policy = default_policy()
    assert retry.RetryPolicy() == policy  # the policy's own defaults are the settings'
    shortest, longest = policy.span()
    assert 30 * 60 <= shortest <= longest <= 2 * 60 * 60
    assert policy.max_attempts <= 12  # not by retrying every few seconds


@pytest.mark.parametrize("seed", range(20))
def test_no_draw_of_the_jitter_gives_up_within_half_an_hour(seed: int) -> None:
    policy, rand, waited, attempts = default_policy(), random.Random(seed), 0.0, 1
    while (decision := policy.decide(attempts, TRANSIENT, rand)).retry:
        waited += decision.delay
        attempts += 1
    assert attempts == policy.max_attempts
    assert waited >= 30 * 60


def test_the_span_is_what_equal_jitter_gives_at_either_extreme() -> None:
    policy = retry.RetryPolicy(max_attempts=4, base_seconds=10, max_seconds=25)
    assert policy.span() == ((10 + 20 + 25) / 2, 10 + 20 + 25)


def test_a_ttl_caps_the_schedule() -> None:
    policy = default_policy()
    assert policy.decide(1, TRANSIENT, remaining=3600).retry is True
    capped = policy.decide(6, TRANSIENT, random.Random(1), remaining=100)  # the nominal wait is 320 s
    assert (capped.retry, capped.expired) == (False, True)
    assert capped.delay >= 160
    after = policy.decide(1, errors.TransientSendError("429", code="http_429", retry_after=60), remaining=30)
    assert after.expired is True  # a Retry-After beyond the ttl ends it too
    assert policy.decide(1, errors.PermanentSendError("bad"), remaining=1).expired is False  # failed, not expired


# -- an outage, end to end ---------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[bootstrap.Clarion]:
    """Clarion with the default retry schedule (the suite's settings shorten it)."""
    clarion = bootstrap.build(settings.model_copy(update=DEFAULTS))
    clarion.providers.breakers = None  # the retry schedule alone rides out the outage; breakers: test_breaker_dispatch
    await clarion.start(workers=0)
    yield clarion
    await clarion.close()


@pytest.fixture
async def client(services: bootstrap.Clarion) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(clarion=services))
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test", headers=headers) as client:
        yield client


async def next_due(clarion: bootstrap.Clarion) -> datetime | None:
    d = t.deliveries
    async with clarion.db.read() as conn:
        return (await conn.execute(sa.select(sa.func.min(d.c.run_at)).where(d.c.status == "queued"))).scalar()


async def test_the_only_sms_vendor_down_for_29_minutes_loses_nothing(
    services: bootstrap.Clarion, client: httpx.AsyncClient
) -> None:
    clock = services.dispatcher.clock = Clock()
    outage = timedelta(minutes=29)  # today's defaults gave up after 31 to 62 s
    start = clock()
    answered: list[tuple[datetime, int]] = []

    def vendor(_: Any) -> Reply:
        now = clock()
        status = 503 if now < start + outage else 200
        answered.append((now, status))
        return Reply(status, {"error": "maintenance"} if status == 503 else {"data": {"id": f"v-{len(answered)}"}})

    async with LoopbackServer(handler=vendor) as server:
        config = {"url": f"{server.url}/v1/sms", "allow_private_networks": True, "message_id_path": "data.id"}
        made = await client.put("/v1/providers/vendor", json={"channel": "sms", "kind": "sms_http", "config": config})
        assert made.status_code == 201, made.text
        await put_template(client, "notice", channels={"sms": {"text": "Order {data.n} shipped"}})
        users = [f"u{i}" for i in range(50)]
        for user in users:
            await put_user(client, user, addresses={"sms": f"+86138001{int(user[1:]):05d}"})
        for n, user in enumerate(users):
            sent = await client.post("/v1/messages", json={"template": "notice", "to": user, "data": {"n": n}})
            assert sent.status_code == 202, sent.text

        for _ in range(1000):  # from one due retry to the next (at most 50 messages x 10 attempts)
            await drain(services, rounds=5)
            due = await next_due(services)
            if due is None:
                break
            clock.offset = max(clock.offset, due - datetime.now(UTC) + timedelta(milliseconds=1))

    d = t.deliveries
    async with services.db.read() as conn:
        rows = (await conn.execute(sa.select(d.c.status, d.c.attempts, d.c.sent_at))).all()
    assert len(rows) == 50
    assert sorted({r.status for r in rows}) == ["sent"], [r.status for r in rows]
    assert all(r.attempts > 1 for r in rows)  # each rode out the outage, retried
    assert all(r.sent_at >= start + outage - timedelta(seconds=1) for r in rows)  # recorded after recovery
    assert sum(1 for _, status in answered if status == 200) == 50
    # the vendor was seen down for far longer than the 62 s the former defaults could ride out
    assert max(at for at, status in answered if status == 503) - start > timedelta(minutes=20)
