"""One idempotency key given to two processes at once is composed once: the key is claimed in the database
before the policies run, so the caps and dedup marks kept in the shared Redis are spent by one request only.

Each "process" is a ``bootstrap.Clarion`` of its own over the same database and the same Redis counters, as two
``clarion api`` processes are; what they share is only what two processes share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.domain import ids
from clarion.pipeline import intake
from clarion.settings import Settings
from clarion.store import idempotency
from clarion.store import tables as t
from tests.conftest import put_template, put_user, record_writes, set_approval, shared_redis

COMMAND = intake.SendCommand(template="notice", to=["u1"], data={"n": 1}, idempotency_key="order-7")


@pytest.fixture
def settings(settings: Settings, redis_db: None) -> Settings:
    """The suite's settings with caps counted in Redis (a prefix of this test's own), as several processes count."""
    return shared_redis(settings)


@pytest.fixture
async def setup(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    """A user, a notification template, and a cap of one message per user an hour."""
    await set_approval(clarion, levels={})
    await put_user(api, "u1", addresses={"sms": "+8613800138000"})
    await put_template(api, "notice", category="notification", channels={"sms": {"text": "notice {n}"}})
    response = await api.put("/v1/policies/caps/one", json={"limit": 1, "window": {"seconds": 3600}})
    assert response.status_code in (200, 201), response.text


@pytest.fixture
async def other(settings: Settings, setup: None) -> AsyncIterator[bootstrap.Clarion]:
    """A second process's services: same database, same Redis, built after the setup (its caches start cold)."""
    services = bootstrap.build(settings)
    await services.start(workers=0)
    yield services
    await services.close()


async def _nothing() -> None:
    return None


def slowed(
    clarion: bootstrap.Clarion,
    before: Callable[[], Awaitable[None]] = _nothing,
    after: Callable[[], Awaitable[None]] = _nothing,
) -> None:
    """Make ``clarion``'s counted policies (dedup, caps: ``after_render``) await ``before()`` first and
    ``after()`` once counted: a request held while it is being composed."""
    stage = clarion.intake.policies
    judge = stage.after_render

    async def judged(screened: Any, contents: Any) -> Any:
        await before()
        verdicts = await judge(screened, contents)
        await after()
        return verdicts

    stage.after_render = judged  # type: ignore[method-assign]


def held(clarion: bootstrap.Clarion) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold ``clarion``'s requests in the policy stage (past their claim) until the second event is set; the first
    is set once one is held there."""
    inside, release = asyncio.Event(), asyncio.Event()

    async def wait() -> None:
        inside.set()
        await release.wait()

    slowed(clarion, before=wait)
    return inside, release


async def messages(clarion: bootstrap.Clarion) -> list[Any]:
    async with clarion.db.read() as conn:
        return list((await conn.execute(sa.select(t.messages))).all())


async def cap_count(api: httpx.AsyncClient) -> int:
    """How many messages the user's cap has counted, as the next message's refusal reports it."""
    response = await api.post("/v1/messages", json={"template": "notice", "to": "u1", "data": {"n": "next"}})
    assert response.status_code == 202, response.text
    [message] = response.json()["messages"]
    assert message["status"] == "filtered"
    detail = (await api.get(f"/v1/messages/{message['id']}")).json()["deliveries"][0]["decided_by"]
    assert detail["policy"] == "caps"
    return int(detail["detail"]["count"])


async def test_two_processes_racing_one_key_send_one_message_and_spend_the_cap_once(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, other: bootstrap.Clarion
) -> None:
    # If both were let through: the first to take the cap's one slot is the last to write, so the database's
    # unique key would keep the other request's answer, a message the cap refused.
    slowed(clarion, after=lambda: asyncio.sleep(0.6))
    slowed(other, before=lambda: asyncio.sleep(0.2))
    first, second = await asyncio.gather(clarion.intake.send(COMMAND), other.intake.send(COMMAND))
    assert first.response == second.response
    assert sorted([first.replayed, second.replayed]) == [False, True]
    [row] = await messages(clarion)
    assert row.status == "queued"
    assert first.response["messages"] == [{"id": row.id, "user_id": "u1", "template": "notice", "status": "queued"}]
    assert await cap_count(api) == 1


async def test_a_claim_whose_holder_died_is_taken_over(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, other: bootstrap.Clarion
) -> None:
    # what a process killed between its claim and its commit leaves behind: the claim, and nothing else
    fingerprint = intake._fingerprint(COMMAND)
    claimed = datetime.now(UTC) - clarion.intake.claim_lease - timedelta(seconds=1)
    dead = idempotency.Claim(ids.new_id(), "message", "order-7", fingerprint, claimed)
    assert await idempotency.claim(clarion.db, dead)

    taken = await other.intake.send(COMMAND)
    assert not taken.replayed
    assert taken.response["request_id"] != dead.id
    assert [m.id for m in await messages(clarion)] == [m["id"] for m in taken.response["messages"]]
    again = await clarion.intake.send(COMMAND)
    assert again.replayed and again.response == taken.response
    assert await cap_count(api) == 1


async def test_a_holder_that_outlives_its_lease_writes_nothing_and_answers_as_its_successor(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, other: bootstrap.Clarion
) -> None:
    inside, stuck = held(clarion)
    holder = asyncio.create_task(clarion.intake.send(COMMAND))
    await inside.wait()
    other.intake.claim_lease = timedelta(seconds=0.3)

    successor = await other.intake.send(COMMAND)  # waits for the claim's lease, then takes the key over
    assert not successor.replayed
    stuck.set()
    late = await holder
    assert late.replayed and late.response == successor.response
    assert [m.id for m in await messages(clarion)] == [m["id"] for m in successor.response["messages"]]
    assert await cap_count(api) == 1


async def test_a_second_process_waits_for_the_claims_answer_and_replays_it(
    clarion: bootstrap.Clarion, other: bootstrap.Clarion
) -> None:
    inside, release = held(clarion)
    holder = asyncio.create_task(clarion.intake.send(COMMAND))
    await inside.wait()
    waiter = asyncio.create_task(other.intake.send(COMMAND))
    await asyncio.sleep(0.3)
    assert not waiter.done()  # the claim is fresh: no answer to replay yet, and not free to take
    release.set()
    first, replayed = await holder, await waiter
    assert replayed.replayed and replayed.response == first.response
    assert len(await messages(clarion)) == 1


async def test_another_body_with_a_claimed_key_is_409_in_another_process(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, other: bootstrap.Clarion
) -> None:
    inside, release = held(clarion)
    holder = asyncio.create_task(clarion.intake.send(COMMAND))
    await inside.wait()
    transport = httpx.ASGITransport(app=create_app(clarion=other))
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test", headers=api.headers) as client:
        body = {"template": "notice", "to": "u1", "data": {"n": 2}, "idempotency_key": "order-7"}
        response = await client.post("/v1/messages", json=body)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "conflict"
    assert error["details"] == {"idempotency_key": "order-7"}
    release.set()
    await holder
    assert len(await messages(clarion)) == 1


async def test_a_request_that_fails_gives_its_claim_up(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, setup: None
) -> None:
    command = intake.SendCommand(template="later", to=["u1"], idempotency_key="k-later")
    refused = await api.post("/v1/messages", json={"template": "later", "to": "u1", "idempotency_key": "k-later"})
    assert refused.status_code == 404
    assert await idempotency.find(clarion.db, "k-later") == idempotency.Found(answer=None, claim=None)
    await put_template(api, "later", channels={"sms": {"text": "later"}})
    accepted = await asyncio.wait_for(clarion.intake.send(command), timeout=5)  # no lease to wait out
    assert not accepted.replayed


async def test_a_send_without_a_key_is_one_write_and_a_keyed_one_leaves_only_its_answer(
    clarion: bootstrap.Clarion, setup: None
) -> None:
    writes = record_writes(clarion)
    await clarion.intake.send(intake.SendCommand(template="notice", to=["u1"], data={"n": 1}))
    assert len(writes) == 1
    keyed = await clarion.intake.send(intake.SendCommand(template="notice", to=["u1"], idempotency_key="k"))
    assert len(writes) == 4  # the claim, the answer with the messages, the claim's removal
    async with clarion.db.read() as conn:
        rows = (await conn.execute(sa.select(t.send_requests))).all()
    assert len(rows) == 2 and all(r.claimed_key is None and r.response["messages"] for r in rows)
    assert {r.idempotency_key for r in rows} == {None, "k"}
    assert keyed.response["request_id"] in {r.id for r in rows}


async def test_a_key_past_the_window_is_free_again_once(clarion: bootstrap.Clarion, other: bootstrap.Clarion) -> None:
    first = await clarion.intake.send(COMMAND)
    for services in (clarion, other):
        services.intake.idempotency_window = timedelta(seconds=1)
    await asyncio.sleep(1.1)
    changed = intake.SendCommand(template="notice", to=["u1"], data={"n": 2}, idempotency_key="order-7")
    a, b = await asyncio.gather(clarion.intake.send(changed), other.intake.send(changed))
    assert a.response == b.response and a.response["request_id"] != first.response["request_id"]
    assert sorted([a.replayed, b.replayed]) == [False, True]
    assert len(await messages(clarion)) == 2
    found = await idempotency.find(clarion.db, "order-7")
    assert found.answer.id == a.response["request_id"] and found.claim is None
