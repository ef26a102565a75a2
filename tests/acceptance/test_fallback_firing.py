"""A pending fallback fires exactly once: through a rolled-back claim, a firer that dies holding it, a restart,
and two firers at once; and a chain fires (or is cancelled) step by step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from clarion import bootstrap
from clarion.domain import model
from clarion.store import fallbacks
from tests.acceptance.test_e2e_channels import message, statuses
from tests.acceptance.test_fallback_send import PHONE, Clock, fire, on, send, steps
from tests.conftest import drain, put_template, put_user, sink

CHANNELS = {"push": {"title": "Order", "body": "Order {data.code}"}, "sms": {"text": "Order {data.code}"}}
CHAIN = [{"from": "push", "to": "sms", "when": "not_delivered", "within": 60}]


@pytest.fixture
def clock(clarion: bootstrap.Clarion) -> Clock:
    controlled = Clock()
    for part in (clarion.intake, clarion.dispatcher, clarion.fallbacks):
        part.clock = controlled  # type: ignore[union-attr]
    return controlled


@pytest.fixture
async def second(clarion: bootstrap.Clarion, clock: Clock) -> AsyncIterator[bootstrap.Clarion]:
    """Another Clarion process on the same database (a restart, or a second worker host)."""
    other = bootstrap.build(clarion.settings)
    await other.start(workers=0)
    assert other.fallbacks is not None
    other.fallbacks.clock = clock
    yield other
    await other.close()


async def sent_pushes(api: httpx.AsyncClient, clarion: bootstrap.Clarion, count: int) -> list[str]:
    await put_user(api, "u1", addresses={"push": ["token-1"], "sms": PHONE})
    await put_template(api, "order", category="notification", channels=CHANNELS, fallback=CHAIN)
    ids = [(await send(api, "order", str(i)))["id"] for i in range(count)]
    assert await drain(clarion) == count
    return ids


def queued_lines(delivery: dict[str, Any]) -> int:
    return statuses(delivery).count("queued")


async def test_a_claim_rolled_back_leaves_the_step_to_fire_once(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, clock: Clock
) -> None:
    [message_id] = await sent_pushes(api, clarion, 1)
    clock.advance(61)

    async def crash(conn: Any) -> None:
        claimed = await fallbacks.claim(
            conn, owner="crashing", now=clock(), lease=timedelta(seconds=600), limit=10, is_sqlite=clarion.db.is_sqlite
        )
        assert len(claimed) == 1
        raise RuntimeError("the process died before its transaction committed")

    with pytest.raises(RuntimeError):
        await clarion.db.write(crash)
    assert await fire(clarion) == 1  # the claim was rolled back with its transaction: free at once
    assert await fire(clarion) == 0
    sms = on(await message(api, message_id), "sms")
    assert (sms["status"], queued_lines(sms)) == ("queued", 1)


async def test_a_firer_that_dies_holding_a_step_leaves_it_to_fire_once_after_a_restart(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, clock: Clock, second: bootstrap.Clarion
) -> None:
    [message_id] = await sent_pushes(api, clarion, 1)
    clock.advance(61)
    lease = timedelta(seconds=clarion.settings.lease_seconds)

    async def take(conn: Any) -> list[fallbacks.Due]:
        return await fallbacks.claim(
            conn, owner="dead", now=clock(), lease=lease, limit=10, is_sqlite=clarion.db.is_sqlite
        )

    [due] = await clarion.db.write(take)  # ... and the firer is killed here
    assert await fire(clarion) == 0  # its lease holds the step
    assert on(await message(api, message_id), "sms")["status"] == "accepted"

    clock.advance(clarion.settings.lease_seconds + 1)
    assert second.fallbacks is not None
    assert await second.fallbacks.run_once("restarted") == 1  # the lease ran out: another process fires it
    assert await second.fallbacks.run_once("restarted") == 0

    # the dead firer's decision, written late, changes nothing
    late = fallbacks.Placed(due, model.DeliveryStatus.QUEUED, "late", clock(), PHONE, {"text": "x"})
    written = await clarion.db.write(
        lambda conn: fallbacks.finish(conn, owner="dead", now=clock(), placed=[late], cancels={})
    )
    assert written == []
    sms = on(await message(api, message_id), "sms")
    assert (sms["status"], queued_lines(sms)) == ("queued", 1)
    assert "late" not in [e["reason"] for e in sms["timeline"]]
    assert await drain(clarion) == 1 and len(sink(clarion, "sms")) == 1


async def test_two_firers_at_once_fire_each_step_once(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, clock: Clock, second: bootstrap.Clarion
) -> None:
    ids = await sent_pushes(api, clarion, 12)
    clock.advance(61)
    assert clarion.fallbacks is not None and second.fallbacks is not None
    for firer in (clarion.fallbacks, second.fallbacks):
        firer.batch_size = 5
    taken = 0
    while True:
        rounds = await asyncio.gather(clarion.fallbacks.run_once("one"), second.fallbacks.run_once("two"))
        taken += sum(rounds)
        if not any(rounds):
            break
    assert taken == 12
    for message_id in ids:
        sms = on(await message(api, message_id), "sms")
        assert (sms["status"], queued_lines(sms)) == ("queued", 1)
        assert [s for s, _ in await steps(clarion, message_id)] == ["fired"]
    assert await drain(clarion) == 12 and len(sink(clarion, "sms")) == 12


# -- chains -----------------------------------------------------------------------------------------------------

THREE = {**CHANNELS, "email": {"subject": "Order", "text": "Order {data.code}"}}


async def test_a_chain_fires_step_by_step_each_window_from_the_one_before(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, clock: Clock
) -> None:
    await put_user(api, "u1", addresses={"push": ["token-1"], "sms": PHONE, "email": "li@example.com"})
    chain = [*CHAIN, {"from": "sms", "to": "email", "when": "not_delivered", "within": 60}]
    await put_template(api, "order", category="notification", channels=THREE, fallback=chain)
    message_id = (await send(api, "order"))["id"]
    assert await drain(clarion) == 1
    clock.advance(61)
    assert await fire(clarion) == 1  # push → sms; the email's window starts now
    assert await drain(clarion) == 1
    clock.advance(30)
    assert await fire(clarion) == 0
    clock.advance(31)
    assert await fire(clarion) == 1
    assert await drain(clarion) == 1
    detail = await message(api, message_id)
    push, sms, email = (on(detail, c) for c in ("push", "sms", "email"))
    assert (sms["fallback_of"], email["fallback_of"]) == (push["id"], sms["id"])
    assert [d["status"] for d in (push, sms, email)] == ["sent", "sent", "sent"]
    assert [s for s, _ in await steps(clarion, message_id)] == ["fired", "fired"]


async def test_a_read_in_time_cancels_the_whole_chain_behind_it(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, clock: Clock
) -> None:
    await put_user(api, "u1", addresses={"sms": PHONE, "email": "li@example.com"})
    chain = [
        {"from": "inbox", "to": "sms", "when": "not_read", "within": 60},
        {"from": "sms", "to": "email", "when": "failed"},
    ]
    channels = {
        "inbox": {"title": "Bill", "body": "Bill"},
        "sms": {"text": "Bill"},
        "email": {"subject": "Bill", "text": "Bill"},
    }
    await put_template(api, "bill", category="notification", channels=channels, fallback=chain)
    message_id = (await send(api, "bill"))["id"]
    assert await drain(clarion) == 1
    assert (await api.post(f"/v1/users/u1/inbox/{message_id}/read")).status_code == 200
    detail = await message(api, message_id)
    assert [on(detail, c)["status"] for c in ("inbox", "sms", "email")] == ["read", "cancelled", "cancelled"]
    assert [s for s, _ in await steps(clarion, message_id)] == ["cancelled", "cancelled"]
    assert detail["status"] == "read"
    clock.advance(120)
    assert await fire(clarion) == 0


# -- originals that never go out --------------------------------------------------------------------------------


async def test_an_original_filtered_at_intake_lets_its_fallback_fire_at_once(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, clock: Clock
) -> None:
    await put_user(api, "u1", addresses={"sms": PHONE})  # no app installed: no push token
    await put_template(api, "order", category="notification", channels=CHANNELS, fallback=CHAIN)
    message_id = (await send(api, "order"))["id"]
    assert on(await message(api, message_id), "push")["status"] == "filtered"
    assert await fire(clarion) == 1  # without waiting out the window
    assert await drain(clarion) == 1
    detail = await message(api, message_id)
    assert (detail["status"], on(detail, "sms")["status"]) == ("sent", "sent")
    assert "is filtered" in on(detail, "sms")["timeline"][1]["reason"]


async def test_a_fallback_fired_after_the_template_s_ttl_expires_instead_of_going_out_late(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, clock: Clock
) -> None:
    await put_user(api, "u1", addresses={"push": ["token-1"], "sms": PHONE})
    chain = [{"from": "push", "to": "sms", "when": "not_delivered", "within": 120}]
    await put_template(api, "code", category="verification", channels=CHANNELS, fallback=chain, ttl_seconds=60)
    message_id = (await send(api, "code"))["id"]
    assert await drain(clarion) == 1
    clock.advance(121)
    assert await fire(clarion) == 1
    assert await drain(clarion) == 1
    sms = on(await message(api, message_id), "sms")
    assert sms["status"] == "expired" and sink(clarion, "sms") == []
