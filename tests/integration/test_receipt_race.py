"""A receipt and the outcome naming its id written at the same time, on PostgreSQL (SQLite runs one write at a
time): whichever commits first, the receipt is applied — never kept behind an outcome that did not see it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from clarion import bootstrap
from clarion.domain import receipts
from clarion.pipeline import feedback
from clarion.store import outbox
from tests.conftest import put_template, put_user

S = receipts.S
DELIVERED = receipts.Receipt("pm-race", receipts.Event.DELIVERED, "vendor status DELIVRD")


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite serialises write transactions: the interleaving cannot happen")
    engine = create_async_engine(db_url)
    yield engine
    await engine.dispose()


async def claimed_delivery(api: httpx.AsyncClient, engine: AsyncEngine) -> outbox.Claimed:
    await put_user(api, "u1", addresses={"sms": "+8613800138000"})
    await put_template(api, "code", channels={"sms": {"text": "code 1"}})
    assert (await api.post("/v1/messages", json={"template": "code", "to": "u1"})).status_code == 202
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        [claimed] = await outbox.claim(
            conn, owner="w", now=now, lease_until=now + timedelta(minutes=1), limit=10, is_sqlite=False
        )
    return claimed


def sent(claimed: outbox.Claimed) -> outbox.Outcome:
    return outbox.Outcome(claimed.id, claimed.message_id, S.SENT, "accepted by file", "file", "pm-race")


async def status_of(engine: AsyncEngine, claimed: outbox.Claimed) -> tuple[str, int]:
    async with engine.connect() as conn:
        seen = await feedback.store.seen(conn, [claimed.id])
        kept = await feedback.store.take_pending(conn, [("file", "pm-race")])
        await conn.rollback()
    assert (claimed.id, "sent") in seen
    delivered = (claimed.id, "delivered") in seen
    return ("delivered" if delivered else "sent"), len(kept)


async def test_a_receipt_during_the_outcome_s_transaction_waits_for_it(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, engine: AsyncEngine
) -> None:
    claimed = await claimed_delivery(api, engine)
    now = datetime.now(UTC)
    async with engine.connect() as completing, engine.connect() as receiving:
        await completing.begin()
        assert await outbox.complete(completing, owner="w", now=now, outcomes=[sent(claimed)]) == 1

        async def receipt() -> feedback.Tally:
            await receiving.begin()
            tally = await feedback.receive(receiving, "file", [DELIVERED], now)
            await receiving.commit()
            return tally

        task = asyncio.create_task(receipt())
        await asyncio.sleep(0.3)
        assert not task.done(), "the receipt did not wait for the outcome being written"
        await completing.commit()
        tally = await asyncio.wait_for(task, 5)
    assert (tally.accepted, tally.pending) == (1, 0)
    assert await status_of(engine, claimed) == ("delivered", 0)


async def test_an_outcome_during_the_receipt_s_transaction_waits_for_it(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, engine: AsyncEngine
) -> None:
    claimed = await claimed_delivery(api, engine)
    now = datetime.now(UTC)
    async with engine.connect() as completing, engine.connect() as receiving:
        await receiving.begin()
        tally = await feedback.receive(receiving, "file", [DELIVERED], now)
        assert tally.pending == 1

        async def outcome() -> int:
            await completing.begin()
            done = await outbox.complete(completing, owner="w", now=now, outcomes=[sent(claimed)])
            await completing.commit()
            return done

        task = asyncio.create_task(outcome())
        await asyncio.sleep(0.3)
        assert not task.done(), "the outcome did not wait for the receipt being kept"
        await receiving.commit()
        assert await asyncio.wait_for(task, 5) == 1
    assert await status_of(engine, claimed) == ("delivered", 0)
