"""A process that sends (``clarion serve``, ``clarion worker``) hands its campaign batches to its own dispatcher:
their due deliveries are written already leased (``outbox.lease_new``) and sent from memory once committed, never
claimed back from the outbox. The timeline reads as for a claimed delivery; a batch written but never sent (the
process killed) is taken back like any lease and sent once, under the same ids; one that waited is judged again;
and the runner goes no faster than its batches are sent. An urgent triggered send is handed over the same way
as it is accepted."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from clarion import bootstrap
from clarion.store import outbox
from clarion.store import tables as t
from tests.acceptance import test_campaigns as campaigns
from tests.acceptance.test_campaigns import launch_in_batches, run_all
from tests.conftest import drain, put_template, put_user, sink

# the campaign tests' fixtures: policies and review out of the way, a fake audience, the "promo" template
_setup, audience, promo = campaigns._setup, campaigns.audience, campaigns.promo


@dataclass
class Holding:
    """A hand-off that keeps the batches it is given and sends none: the process dies before sending them."""

    handoff_owner: str
    lease: timedelta
    batches: list[list[outbox.Claimed]] = field(default_factory=list)

    async def take(self, batch: list[outbox.Claimed]) -> None:
        self.batches.append(batch)

    async def drain_handed(self) -> None:
        return None


async def rows(clarion: bootstrap.Clarion) -> list[Any]:
    d, m = t.deliveries, t.messages
    query = (
        sa.select(d.c.id, m.c.id.label("message_id"), m.c.user_id, d.c.status, d.c.attempts, d.c.lease_owner)
        .join(m, m.c.id == d.c.message_id)
        .where(m.c.campaign_key == "spring")
        .order_by(m.c.user_id)
    )
    async with clarion.db.read() as conn:
        return list((await conn.execute(query)).all())


async def timeline(api: httpx.AsyncClient, message_id: str) -> list[dict[str, Any]]:
    [sms] = (await api.get(f"/v1/messages/{message_id}")).json()["deliveries"]
    return list(sms["timeline"])


async def test_a_handed_batch_is_sent_from_memory_and_reads_as_claimed(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, promo: None, audience: Any
) -> None:
    ids = await launch_in_batches(api, clarion, audience, 10, 4, one_per_turn=False)
    clarion.campaigns.handoff = clarion.dispatcher
    claims = 0
    real_claim = outbox.claim

    async def counting(*args: Any, **kwargs: Any) -> list[outbox.Claimed]:
        nonlocal claims
        claims += 1
        return await real_claim(*args, **kwargs)

    outbox.claim = counting  # type: ignore[assignment]
    try:
        assert await run_all(clarion.campaigns) == 10
        await clarion.dispatcher.drain_handed()
    finally:
        outbox.claim = real_claim  # type: ignore[assignment]
    assert claims == 0  # nothing was claimed back from the outbox
    assert time.monotonic() - clarion.intake.fanout_at < 5  # urgent sends are handed over meanwhile
    sent = await rows(clarion)
    assert [r.user_id for r in sent] == sorted(ids)
    assert {(r.status, r.attempts, r.lease_owner) for r in sent} == {("sent", 1, None)}
    assert sorted(line["delivery_id"] for line in sink(clarion)) == sorted(r.id for r in sent)
    entries = await timeline(api, sent[0].message_id)
    assert [e["status"] for e in entries] == ["queued", "sending", "sent"]
    assert entries[1]["reason"] == "attempt 1"
    assert entries[1]["detail"] == {"worker": clarion.dispatcher.handoff_owner}
    assert (await api.get(f"/v1/messages/{sent[0].message_id}")).json()["status"] == "sent"
    shown = (await api.get("/v1/campaigns/spring")).json()
    assert shown["status"] == "completed" and shown["run"]["processed"] == 10


async def test_a_handed_batch_never_sent_is_taken_back_and_sent_once_under_its_ids(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, promo: None, audience: Any
) -> None:
    ids = await launch_in_batches(api, clarion, audience, 10, 4, one_per_turn=False)
    dead = Holding("gone-process", timedelta(0))  # its leases have run out as soon as they are written
    clarion.campaigns.handoff = dead
    assert await run_all(clarion.campaigns) == 10
    assert sum(len(b) for b in dead.batches) == 10
    written = await rows(clarion)
    assert {(r.status, r.lease_owner) for r in written} == {("sending", "gone-process")}
    assert sink(clarion) == []

    assert await drain(clarion) == 10  # the dispatcher reaps the expired leases first, then sends them
    after = await rows(clarion)
    assert {r.status for r in after} == {"sent"}
    lines = sink(clarion)
    assert Counter(line["delivery_id"] for line in lines) == Counter(r.id for r in written)  # once each, same ids
    assert sorted(r.user_id for r in after) == sorted(ids)
    statuses = [e["status"] for e in await timeline(api, written[0].message_id)]
    assert statuses == ["queued", "sending", "queued", "sending", "sent"]
    reasons = [e["reason"] for e in await timeline(api, written[0].message_id)]
    assert reasons[2].startswith("lease_expired")


async def test_a_handed_batch_that_waited_is_judged_again_before_it_goes(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, promo: None, audience: Any
) -> None:
    await launch_in_batches(api, clarion, audience, 6, 6, one_per_turn=False)
    held = Holding(clarion.dispatcher.handoff_owner, clarion.dispatcher.lease)
    clarion.campaigns.handoff = held
    assert await run_all(clarion.campaigns) == 6
    [batch] = held.batches
    response = await api.post("/v1/suppressions", json={"user_id": "u0", "category": "marketing", "source": "admin"})
    assert response.status_code in (200, 201), response.text

    later = datetime.now(UTC) + timedelta(seconds=5)  # it waited behind other batches: longer than WAITED
    clarion.dispatcher.clock = lambda: later
    await clarion.dispatcher.take(batch)
    await clarion.dispatcher.drain_handed()
    by_user = {r.user_id: r for r in await rows(clarion)}
    assert by_user.pop("u0").status == "filtered"
    assert {r.status for r in by_user.values()} == {"sent"}
    [u0] = [c for c in batch if c.user_id == "u0"]
    last = (await timeline(api, u0.message_id))[-1]
    assert last["status"] == "filtered" and last["detail"]["judged"] == "at dispatch"
    assert sorted(line["user_id"] for line in sink(clarion)) == [f"u{i}" for i in range(1, 6)]


async def test_take_waits_while_two_handed_batches_are_being_sent(clarion: bootstrap.Clarion) -> None:
    release = asyncio.Event()
    started: list[int] = []

    async def slow(batch: list[outbox.Claimed], recorder: Any) -> None:
        started.append(len(batch))
        await release.wait()

    clarion.dispatcher.stage.send = slow  # type: ignore[method-assign]
    now = datetime.now(UTC)

    def batch(n: int) -> list[outbox.Claimed]:
        return [outbox.Claimed(f"d{n}", f"m{n}", "u", "sms", None, None, {}, 1, 2, now)]

    await asyncio.wait_for(clarion.dispatcher.take(batch(1)), 1)
    await asyncio.wait_for(clarion.dispatcher.take(batch(2)), 1)
    third = asyncio.ensure_future(clarion.dispatcher.take(batch(3)))
    await asyncio.sleep(0.05)
    assert not third.done() and started == [1, 1]  # the writer waits: two batches are being sent
    release.set()
    await asyncio.wait_for(third, 1)
    await clarion.dispatcher.drain_handed()
    assert started == [1, 1, 1]


# -- urgent triggered sends --------------------------------------------------------------------------------------


async def test_an_urgent_send_is_handed_over_as_accepted_and_a_normal_one_is_left_to_the_queue(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await put_template(api, "code", category="verification", priority="urgent", channels={"sms": {"text": "{code}"}})
    await put_template(api, "note", category="transactional", channels={"sms": {"text": "shipped"}})
    await put_user(api, "u1", addresses={"sms": "+8613800138001"})
    clarion.intake.handoff = clarion.dispatcher
    clarion.intake.fanout_at = time.monotonic()  # a campaign batch was just written
    code = await api.post("/v1/messages", json={"template": "code", "to": ["u1"], "data": {"code": "4321"}})
    note = await api.post("/v1/messages", json={"template": "note", "to": ["u1"]})
    assert code.status_code == note.status_code == 202, (code.text, note.text)
    await clarion.dispatcher.drain_handed()  # nothing was claimed: the code was sent from memory

    [code_id] = [m["id"] for m in code.json()["messages"]]
    entries = await timeline(api, code_id)
    assert [e["status"] for e in entries] == ["queued", "sending", "sent"]
    assert entries[1]["detail"] == {"worker": clarion.dispatcher.urgent_owner}
    assert [line["content"]["text"] for line in sink(clarion)] == ["4321"]
    [note_id] = [m["id"] for m in note.json()["messages"]]
    assert [e["status"] for e in await timeline(api, note_id)] == ["queued"]  # the dispatch loops' to claim
    assert await drain(clarion) == 1
    assert [e["status"] for e in await timeline(api, note_id)] == ["queued", "sending", "sent"]


async def test_an_urgent_send_handed_over_but_never_sent_is_taken_back(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await put_template(api, "code", category="verification", priority="urgent", channels={"sms": {"text": "{code}"}})
    await put_user(api, "u1", addresses={"sms": "+8613800138001"})
    handed: list[list[outbox.Claimed]] = []

    class Dead:  # accepts the hand-off and dies before sending
        urgent_owner = "gone-process"
        lease = timedelta(0)
        urgent_idle = True

        def take_urgent(self, batch: list[outbox.Claimed]) -> None:
            handed.append(batch)

    clarion.intake.handoff = Dead()
    clarion.intake.fanout_at = time.monotonic()
    code = await api.post("/v1/messages", json={"template": "code", "to": ["u1"], "data": {"code": "4321"}})
    assert code.status_code == 202, code.text
    [[claimed]] = handed
    assert sink(clarion) == []
    assert await drain(clarion) == 1  # its lease reaped first, then claimed and sent
    assert [line["delivery_id"] for line in sink(clarion)] == [claimed.id]
    statuses = [e["status"] for e in await timeline(api, claimed.message_id)]
    assert statuses == ["queued", "sending", "queued", "sending", "sent"]


async def test_urgent_sends_accepted_while_handed_ones_are_being_sent_go_to_the_urgent_loop(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    """A flood of codes: while a round handed over is being sent, the next ones are left queued for the urgent
    loop, which claims them in batches, rather than each handed over on its own."""
    await put_template(api, "code", category="verification", priority="urgent", channels={"sms": {"text": "{code}"}})
    for i in range(3):
        await put_user(api, f"u{i}", addresses={"sms": f"+861380013800{i}"})
    clarion.intake.handoff = clarion.dispatcher
    clarion.intake.fanout_at = time.monotonic()  # a campaign batch was just written
    release = asyncio.Event()
    real_send = clarion.dispatcher.stage.send

    async def slow(batch: list[outbox.Claimed], recorder: Any) -> None:
        await release.wait()
        await real_send(batch, recorder)

    clarion.dispatcher.stage.send = slow  # type: ignore[method-assign]
    ids = []
    for i in range(3):
        r = await api.post("/v1/messages", json={"template": "code", "to": [f"u{i}"], "data": {"code": f"{i}"}})
        assert r.status_code == 202, r.text
        ids.append(r.json()["messages"][0]["id"])
        assert not clarion.dispatcher.urgent_idle  # the first is being sent
    assert [e["status"] for e in await timeline(api, ids[0])] == ["queued", "sending"]
    for later in ids[1:]:
        assert [e["status"] for e in await timeline(api, later)] == ["queued"]  # left to the urgent loop
    release.set()
    await clarion.dispatcher.drain_handed()
    assert clarion.dispatcher.urgent_idle
    assert await drain(clarion) == 2
    assert sorted(line["content"]["text"] for line in sink(clarion)) == ["0", "1", "2"]


async def test_an_urgent_send_with_no_fan_out_under_way_is_left_to_the_urgent_loop(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    """With no backlog to overtake, the urgent loop claims a code within milliseconds, and a few at a time."""
    await put_template(api, "code", category="verification", priority="urgent", channels={"sms": {"text": "{code}"}})
    await put_user(api, "u1", addresses={"sms": "+8613800138001"})
    clarion.intake.handoff = clarion.dispatcher
    clarion.intake.fanout_at = time.monotonic() - 60  # the last campaign batch was written a minute ago
    code = await api.post("/v1/messages", json={"template": "code", "to": ["u1"], "data": {"code": "4321"}})
    assert code.status_code == 202, code.text
    await clarion.dispatcher.drain_handed()
    [code_id] = [m["id"] for m in code.json()["messages"]]
    assert [e["status"] for e in await timeline(api, code_id)] == ["queued"]
    assert sink(clarion) == []
    assert await drain(clarion) == 1
    assert [line["content"]["text"] for line in sink(clarion)] == ["4321"]
