"""Receipt polling: the vendor of a polled kind is asked about the deliveries still ``sent``, and its answers move
them to ``delivered`` / ``undelivered`` exactly as a callback's would.

The kind is a test-only one (``polled_sms``, registered for the test): it sends like ``sms_http`` and polls a
loopback vendor at ``POST /status`` (``{"ids": [...]}`` → ``{"statuses": [{"id", "status", "err"}]}``, behind a
bearer token the vendor checks). Statuses are read back through ``GET /v1/messages/{id}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any, ClassVar

import httpx
import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.channels import registry
from clarion.channels.sms_http import SmsHttpProvider
from clarion.channels.webhook import http_status_error
from clarion.domain import receipts
from clarion.settings import Settings
from clarion.store import tables as t
from tests.acceptance.test_e2e_channels import message, put_provider, send_one, statuses
from tests.conftest import API_KEY, REDIS_URL, _truncate, connect_redis, disconnect_redis, drain, put_template, put_user
from tests.integration.loopback import LoopbackServer, Recorded, Reply

TOKEN = "status-api-token-0123456789"
_EVENTS = {"DELIVRD": receipts.Event.DELIVERED, "UNDELIV": receipts.Event.UNDELIVERED}


class PolledSms(SmsHttpProvider):
    """Sends like ``sms_http``; its vendor is asked for statuses, two ids a request."""

    kind: ClassVar[str] = "polled_sms"
    poll_batch: ClassVar[int] = 2

    class Config(SmsHttpProvider.Config):
        status_url: str
        status_token: str

    config: PolledSms.Config

    async def poll_receipts(self, provider_message_ids: Sequence[str]) -> list[receipts.Receipt]:
        response = await self._client.post(
            self.config.status_url,
            json={"ids": list(provider_message_ids)},
            headers={"Authorization": f"Bearer {self.config.status_token}"},
        )
        error = http_status_error(response)
        if error is not None:
            raise error
        found = []
        for item in response.json()["statuses"]:
            event = _EVENTS.get(item["status"])
            if event is not None:
                reason = " ".join(part for part in (item["status"], item.get("err")) if part)
                found.append(receipts.Receipt(item["id"], event, reason, {"vendor_status": item["status"]}))
        return found


class Vendor:
    """The polled vendor: ids it hands out on send, what it says of each, and a switch to answer 503."""

    def __init__(self) -> None:
        self.sent = 0
        self.states: dict[str, tuple[str, str | None]] = {}
        self.foreign: list[dict[str, Any]] = []  # answers about ids nobody asked for
        self.failing = 0  # how many status requests still answer 503
        self.delay = 0.0
        self.asked: list[list[str]] = []

    async def __call__(self, request: Recorded) -> Reply:
        if request.path == "/send":
            self.sent += 1
            return Reply(200, {"data": {"id": f"v-{self.sent}"}})
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return Reply(401, {"error": "bad token"})
        ids = request.json()["ids"]
        self.asked.append(ids)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failing:
            self.failing -= 1
            return Reply(503, {"error": "busy"})
        answers = [{"id": i, "status": self.states.get(i, ("UNKNOWN", None))[0]} for i in ids]
        for answer in answers:
            err = self.states.get(answer["id"], ("", None))[1]
            if err:
                answer["err"] = err
        return Reply(200, {"statuses": answers + self.foreign})


@pytest.fixture(autouse=True)
def polled_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.KINDS, PolledSms.kind, PolledSms)


@pytest.fixture
async def vendor() -> AsyncIterator[tuple[Vendor, str]]:
    fake = Vendor()
    async with LoopbackServer(handler=fake) as server:
        yield fake, server.url


def config(url: str) -> dict[str, Any]:
    return {
        "url": f"{url}/send",
        "status_url": f"{url}/status",
        "status_token": TOKEN,
        "allow_private_networks": True,
        "message_id_path": "data.id",
        "timeout": 5,
    }


async def sent_messages(api: httpx.AsyncClient, clarion: bootstrap.Clarion, url: str, count: int) -> list[str]:
    """``count`` verification SMS handed to the vendor (ids v-1 …), one user each."""
    await put_provider(api, "vendor", "sms", "polled_sms", config(url))
    await put_template(api, "code", category="verification", channels={"sms": {"text": "code {data.code}"}})
    ids = []
    for i in range(count):
        await put_user(api, f"u{i}", addresses={"sms": f"+861380013800{i}"})
        ids.append(await send_one(api, "code", f"u{i}", {"code": str(i)}))
    assert await drain(clarion) == count
    return ids


async def delivery(api: httpx.AsyncClient, message_id: str) -> dict[str, Any]:
    [only] = (await message(api, message_id))["deliveries"]
    return only


async def test_polling_makes_sent_sms_delivered_and_undelivered_in_pages_of_the_kind_s_batch(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor: tuple[Vendor, str]
) -> None:
    fake, url = vendor
    first, second, third = await sent_messages(api, clarion, url, 3)
    fake.states = {"v-1": ("DELIVRD", None), "v-2": ("UNDELIV", "MK:0001")}
    assert clarion.poller is not None

    done = await clarion.poller.run_once()
    assert fake.asked == [["v-1", "v-2"], ["v-3"]]
    assert (done.asked, done.tally.accepted, done.failed) == (3, 2, [])

    delivered = await delivery(api, first)
    assert delivered["status"] == "delivered"
    assert statuses(delivered) == ["queued", "sending", "sent", "delivered"]
    assert delivered["timeline"][-1]["detail"]["provider"] == "vendor"
    assert (await message(api, first))["status"] == "delivered"
    undelivered = await delivery(api, second)
    assert undelivered["status"] == "undelivered"
    assert "UNDELIV MK:0001" in undelivered["timeline"][-1]["reason"]
    assert (await delivery(api, third))["status"] == "sent"

    # the next round asks only about what is still sent
    fake.states["v-3"] = ("DELIVRD", None)
    await clarion.poller.run_once()
    assert fake.asked[2:] == [["v-3"]]
    assert (await delivery(api, third))["status"] == "delivered"
    assert statuses(await delivery(api, first)) == ["queued", "sending", "sent", "delivered"]


async def test_an_id_the_vendor_does_not_know_or_did_not_get_asked_about_changes_nothing(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor: tuple[Vendor, str]
) -> None:
    fake, url = vendor
    [only] = await sent_messages(api, clarion, url, 1)
    fake.foreign = [{"id": "v-999", "status": "DELIVRD"}]  # v-1 answers UNKNOWN
    assert clarion.poller is not None
    done = await clarion.poller.run_once()
    assert fake.asked == [["v-1"]]
    assert (done.tally.accepted, done.tally.pending) == (0, 0)
    sent = await delivery(api, only)
    assert (sent["status"], statuses(sent)) == ("sent", ["queued", "sending", "sent"])
    async with clarion.db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(t.receipts))).scalar() == 0
    await clarion.poller.run_once()
    assert fake.asked == [["v-1"], ["v-1"]]  # still sent: still asked


async def test_a_vendor_503_while_polling_is_retried_and_applied_next_round(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor: tuple[Vendor, str]
) -> None:
    fake, url = vendor
    [only] = await sent_messages(api, clarion, url, 1)
    fake.states = {"v-1": ("DELIVRD", None)}
    fake.failing = 1
    assert clarion.poller is not None
    failed = await clarion.poller.run_once()
    assert (failed.failed, failed.tally.accepted) == (["vendor"], 0)
    assert (await delivery(api, only))["status"] == "sent"
    again = await clarion.poller.run_once()
    assert (again.failed, again.tally.accepted) == ([], 1)
    assert (await delivery(api, only))["status"] == "delivered"


async def test_deliveries_sent_longer_ago_than_the_max_age_are_no_longer_polled(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor: tuple[Vendor, str]
) -> None:
    fake, url = vendor
    [only] = await sent_messages(api, clarion, url, 1)
    fake.states = {"v-1": ("DELIVRD", None)}
    assert clarion.poller is not None
    real = clarion.dispatcher.clock
    clarion.dispatcher.clock = lambda: real() + timedelta(hours=72, minutes=1)
    done = await clarion.poller.run_once()
    assert (done.asked, fake.asked) == (0, [])
    assert (await delivery(api, only))["status"] == "sent"


async def test_a_started_clarion_polls_on_its_own_and_outlives_a_vendor_outage(
    settings: Settings, vendor: tuple[Vendor, str]
) -> None:
    fake, url = vendor
    fake.states = {"v-1": ("DELIVRD", None)}
    fake.failing = 2
    services = bootstrap.build(settings.model_copy(update={"receipt_poll_seconds": 0.05}))
    await services.start(workers=1)
    try:
        transport = httpx.ASGITransport(app=create_app(clarion=services))
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test", headers=headers) as api:
            await put_provider(api, "vendor", "sms", "polled_sms", config(url))
            await put_template(api, "code", category="verification", channels={"sms": {"text": "code {data.code}"}})
            await put_user(api, "u1", addresses={"sms": "+8613800138000"})
            message_id = await send_one(api, "code", "u1", {"code": "1"})
            status = None
            for _ in range(200):
                status = (await message(api, message_id))["status"]
                if status == "delivered":
                    break
                await asyncio.sleep(0.05)
            assert status == "delivered"
            assert len(fake.asked) >= 3  # two 503s, then the answer
    finally:
        await services.close()


# -- one poller per account across processes ----------------------------------------------------------------


@pytest.fixture(params=["postgres", "redis"])
async def two_processes(
    request: pytest.FixtureRequest, settings: Settings, pg_database: str
) -> AsyncIterator[tuple[bootstrap.Clarion, bootstrap.Clarion]]:
    """Two Clarions on one PostgreSQL database, locking through it or through Redis."""
    url = pg_database
    await _truncate(url)
    update: dict[str, Any] = {"database_url": url}
    redis = None
    if request.param == "redis":
        redis = await connect_redis()
        update["redis_url"] = REDIS_URL
    shared = settings.model_copy(update=update)
    one, two = bootstrap.build(shared), bootstrap.build(shared)
    await one.start(workers=0)
    await two.start(workers=0)
    yield one, two
    await one.close()
    await two.close()
    if redis is not None:
        await disconnect_redis(redis)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True, ids=["shared-pg"])  # replaced by two_processes
async def test_two_processes_never_poll_one_account_at_once(
    two_processes: tuple[bootstrap.Clarion, bootstrap.Clarion], vendor: tuple[Vendor, str]
) -> None:
    one, two = two_processes
    fake, url = vendor
    app = create_app(clarion=one)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://clarion.test", headers=headers
    ) as api:
        [only] = await sent_messages(api, one, url, 1)
        fake.states = {"v-1": ("DELIVRD", None)}
        fake.delay = 0.3
        assert one.poller is not None and two.poller is not None
        rounds = await asyncio.gather(one.poller.run_once(), two.poller.run_once())
        assert fake.asked == [["v-1"]]
        assert sorted(r.busy for r in rounds) == [[], ["vendor"]]
        assert sum(r.tally.accepted for r in rounds) == 1
        assert (await delivery(api, only))["status"] == "delivered"
        # the lock is released after each round: alone, either process takes the account
        assert [(await one.poller.run_once()).busy, (await two.poller.run_once()).busy] == [[], []]
