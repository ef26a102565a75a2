"""A template's ttl: a delivery not handed to a provider within its ttl of being accepted becomes ``expired`` and
is never sent late — whether a backlog, a stopped worker or an outage's retries held it up.

The dispatcher runs on a clock the tests move (``Dispatcher.clock``), so minutes pass in milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from clarion import bootstrap
from clarion.domain import retry
from tests.acceptance.test_e2e_channels import message, only_delivery, send_one, sms_setup, statuses
from tests.conftest import drain, put_template, put_user
from tests.integration.loopback import LoopbackServer, Reply


class Clock:
    """Real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def to(self, moment: datetime) -> None:
        self.offset = max(self.offset, moment - datetime.now(UTC) + timedelta(milliseconds=1))


@pytest.fixture
def clock(clarion: bootstrap.Clarion) -> Clock:
    clarion.dispatcher.clock = clock = Clock()
    return clock


async def test_the_ttl_is_saved_shown_and_bounded(api: httpx.AsyncClient) -> None:
    saved = await put_template(api, "code", category="verification", ttl_seconds=300, channels={"sms": {"text": "x"}})
    assert saved["ttl_seconds"] == 300
    assert (await api.get("/v1/templates/code")).json()["ttl_seconds"] == 300
    plain = await put_template(api, "note", channels={"inbox": {"title": "t", "body": "b"}})
    assert plain["ttl_seconds"] is None
    for bad in (0, -5, 30 * 86_400 + 1, "five minutes", 1.5):
        body = {"name": "x", "category": "verification", "ttl_seconds": bad, "channels": {"sms": {"text": "x"}}}
        refused = await api.put("/v1/templates/code", json=body)
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["error"]["details"][0]["field"] == "ttl_seconds"
    assert (await api.get("/v1/templates/code")).json()["ttl_seconds"] == 300  # nothing was saved


async def test_a_delivery_held_past_its_ttl_expires_at_claim_and_is_never_sent(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, clock: Clock
) -> None:
    await put_user(api, "u1")
    await put_template(api, "code", ttl_seconds=300, channels={"inbox": {"title": "Code {data.c}", "body": "b"}})
    await put_template(api, "note", ttl_seconds=600, channels={"inbox": {"title": "Note {data.c}", "body": "b"}})
    code = await send_one(api, "code", "u1", {"c": 1})
    note = await send_one(api, "note", "u1", {"c": 2})
    clock.offset = timedelta(seconds=301)  # a backlog (or a stopped worker) held both for five minutes

    assert await drain(clarion) == 2
    expired = await only_delivery(api, code)
    assert (expired["status"], expired["attempts"], expired["sent_at"]) == ("expired", 0, None)
    assert statuses(expired) == ["queued", "expired"]
    assert expired["timeline"][-1]["reason"].startswith("ttl_expired")
    assert expired["last_error"].startswith("ttl_expired")
    assert (await message(api, code))["status"] == "expired"
    assert (await only_delivery(api, note))["status"] in ("sent", "delivered")  # its ttl has not run out
    inbox = (await api.get("/v1/users/u1/inbox")).json()
    assert [item["title"] for item in inbox["items"]] == ["Note 2"]


async def test_without_a_ttl_a_delivery_waits_as_long_as_it_takes(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, clock: Clock
) -> None:
    await put_user(api, "u1")
    await put_template(api, "note", channels={"inbox": {"title": "Note", "body": "b"}})
    note = await send_one(api, "note", "u1")
    clock.offset = timedelta(days=3)
    assert await drain(clarion) == 1
    assert (await only_delivery(api, note))["status"] in ("sent", "delivered")


async def test_a_ttl_runs_out_during_an_outage_the_code_expires_and_is_not_sent_after_recovery(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, clock: Clock
) -> None:
    clarion.dispatcher.retry_policy = retry.RetryPolicy()  # the default schedule: half an hour and more
    down = True
    sent_at: list[datetime] = []

    def vendor(_: Any) -> Reply:
        sent_at.append(clock())
        return Reply(503, {"error": "maintenance"}) if down else Reply(200, {"data": {"id": "v-1"}})

    async with LoopbackServer(handler=vendor) as server:
        await sms_setup(api, server.url)
        await put_template(
            api,
            "code",
            category="verification",
            priority="urgent",
            ttl_seconds=300,
            channels={"sms": {"text": "验证码 {data.code}"}},
        )
        message_id = await send_one(api, "code", "u1", {"code": "4711"})
        accepted = datetime.fromisoformat((await message(api, message_id))["created_at"])
        for _ in range(20):  # each round: wait out the backoff, try again
            assert await drain(clarion) == 1
            delivery = await only_delivery(api, message_id)
            if delivery["status"] != "queued":
                break
            clock.to(datetime.fromisoformat(delivery["run_at"]))
        assert delivery["status"] == "expired", delivery
        assert delivery["last_error"].startswith("ttl_expired: a retry in ")
        assert "http_503" in delivery["last_error"]
        assert statuses(delivery)[-2:] == ["sending", "expired"]
        assert delivery["attempts"] == len(server.requests) >= 5  # it was retried while the ttl allowed
        assert all(at < accepted + timedelta(seconds=300) for at in sent_at)

        down = False  # the vendor is back: the expired code stays expired
        clock.offset += timedelta(hours=1)
        assert await drain(clarion) == 0
        assert len(server.requests) == delivery["attempts"]
    assert (await message(api, message_id))["status"] == "expired"
