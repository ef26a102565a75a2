"""Campaigns through the API: review by someone else, a run to completion with its progress, the estimate, pause
and resume, a crash in the middle of the fan-out, a cron campaign's second run, and the send rate.

Audiences come from ``clarion.segments``; here its ``audience`` is replaced by a fake that returns a fixed list
of user ids (in order), so each test states exactly who is targeted — the segment engine has its own tests.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.campaigns import runner as runner_module
from clarion.campaigns.runner import CampaignRunner
from clarion.pipeline import intake
from clarion.store import campaigns as campaign_store
from clarion.store import tables as t
from tests.conftest import drain, put_template, put_user, set_approval, set_policies, sink

PHONE = "+86138001380{:02d}"
ANA_KEY = "clk_ana_the_approver_000000000000"
ANA = {"Authorization": f"Bearer {ANA_KEY}"}


@pytest.fixture(autouse=True)
async def _setup(clarion: bootstrap.Clarion) -> None:
    """Sending windows are not the point here (except where a test sets them), nor template review."""
    await set_policies(clarion, send_windows={})
    await set_approval(clarion, levels={})
    await clarion.keys.create("ana", ("approver",), key=ANA_KEY)


@pytest.fixture
def audience(clarion: bootstrap.Clarion, monkeypatch: pytest.MonkeyPatch) -> Callable[[Sequence[str]], None]:
    """Set who the (fake) segment engine returns for every audience spec."""

    def set_ids(ids: Sequence[str]) -> None:
        async def fake(spec: Any) -> list[str]:
            return list(ids)

        monkeypatch.setattr(clarion.segments, "audience", fake)

    return set_ids


async def users(api: httpx.AsyncClient, n: int, prefix: str = "u") -> list[str]:
    ids = [f"{prefix}{i}" for i in range(n)]
    for i, user_id in enumerate(ids):
        await put_user(api, user_id, attributes={"name": f"N{i}"}, addresses={"sms": PHONE.format(i % 100)})
    return ids


async def campaign(api: httpx.AsyncClient, key: str, **body: Any) -> dict[str, Any]:
    body.setdefault("template", "promo")
    body.setdefault("audience", {"segment": "everyone"})
    response = await api.put(f"/v1/campaigns/{key}", json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def act(api: httpx.AsyncClient, key: str, action: str, *, headers: Any = None, **body: Any) -> httpx.Response:
    return await api.post(f"/v1/campaigns/{key}/{action}", json=body or None, headers=headers)


async def launch(api: httpx.AsyncClient, key: str) -> dict[str, Any]:
    """submit (the suite's key wrote it) → approve (ana) → start."""
    for action, headers in (("submit", None), ("approve", ANA), ("start", None)):
        response = await act(api, key, action, headers=headers)
        assert response.status_code == 200, response.text
    return response.json()


async def run_all(runner: CampaignRunner, owner: str = "test-runner", *, rounds: int = 10_000) -> int:
    total = 0
    for _ in range(rounds):
        done = await runner.run_once(owner)
        if done == 0:
            break
        total += done
    return total


async def launch_in_batches(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, audience: Any, n: int, batch: int, *, one_per_turn: bool
) -> list[str]:
    """Campaign "spring" to ``n`` new users, launched, fanned out in batches of ``batch`` (one batch per turn of
    the runner with ``one_per_turn``); returns the users."""
    ids = await users(api, n)
    audience(ids)
    clarion.campaigns.batch_size = batch
    if one_per_turn:
        clarion.campaigns.slice_seconds = 0
    await campaign(api, "spring")
    await launch(api, "spring")
    return ids


async def campaign_messages(clarion: bootstrap.Clarion, key: str) -> list[Any]:
    m = t.messages
    async with clarion.db.read() as conn:
        query = sa.select(m.c.user_id, m.c.campaign_run, m.c.status).where(m.c.campaign_key == key)
        return list((await conn.execute(query)).all())


@pytest.fixture
async def promo(api: httpx.AsyncClient) -> None:
    await put_template(api, "promo", category="marketing", channels={"sms": {"text": "Hi {name}, spring sale"}})


# -- lifecycle -------------------------------------------------------------------------------------------------


async def test_a_campaign_is_approved_by_someone_other_than_its_author(
    api: httpx.AsyncClient, promo: None, audience: Any
) -> None:
    created = await campaign(api, "spring", rate=100, department="growth", goal="order_paid")
    assert created["status"] == "draft" and created["author"] == "bootstrap"
    assert created["goal"] == "order_paid" and created["department"] == "growth"

    assert (await act(api, "spring", "start")).json()["error"]["code"] == "invalid_transition"
    assert (await act(api, "spring", "approve", headers=ANA)).status_code == 409  # not submitted yet
    assert (await act(api, "spring", "submit", headers=ANA)).status_code == 403  # an approver does not submit
    assert (await act(api, "spring", "submit")).json()["status"] == "pending_review"

    own = await act(api, "spring", "approve")
    assert own.status_code == 403 and own.json()["error"]["code"] == "own_campaign"
    assert (await act(api, "spring", "reject", headers=ANA)).json()["error"]["code"] == "comment_required"
    rejected = await act(api, "spring", "reject", headers=ANA, comment="say which stores")
    assert rejected.json()["status"] == "draft"
    assert rejected.json()["approvals"][-1]["decision"] == "rejected"

    await act(api, "spring", "submit")
    approved = await act(api, "spring", "approve", headers=ANA, comment="ok")
    assert approved.json()["status"] == "approved"
    assert approved.json()["approvals"][-1] == {
        "level": "campaign",
        "by": "ana",
        "at": approved.json()["approvals"][-1]["at"],
        "comment": "ok",
        "decision": "approved",
    }
    assert (await act(api, "spring", "start", headers=ANA)).status_code == 403  # approvers do not send
    started = await act(api, "spring", "start")
    assert started.json()["status"] == "scheduled" and started.json()["next_run_at"] is not None

    changed = await api.put("/v1/campaigns/spring", json={"template": "promo", "audience": {"list": "x"}})
    assert changed.status_code == 409  # a scheduled campaign is cancelled before it changes
    assert (await act(api, "spring", "cancel")).json()["status"] == "cancelled"
    assert (await campaign(api, "spring", audience={"list": "x"}))["status"] == "draft"

    audit = (await api.get("/v1/audit", params={"subject": "campaign:spring"})).json()
    actions = [e["action"] for e in audit["entries"]]
    assert actions.count("campaign.approve") == 1 and "campaign.cancel" in actions


async def test_bad_definitions_are_refused_with_the_field(api: httpx.AsyncClient, promo: None) -> None:
    cases = [
        ({"template": "nope", "audience": {"segment": "s"}}, "template"),
        ({"template": "promo", "audience": {}}, "audience"),
        ({"template": "promo", "audience": {"segment": "s"}, "channels": ["email"]}, "channels"),
        ({"template": "promo", "audience": {"segment": "s"}, "schedule": {"kind": "cron", "cron": "61 * * * *"}}, None),
        (
            {"template": "promo", "audience": {"segment": "s"}, "schedule": {"kind": "at", "at": "2026-01-01T10:00"}},
            None,
        ),
        ({"template": "promo", "audience": {"segment": "s"}, "rate": 0}, "rate"),
    ]
    for body, field in cases:
        response = await api.put("/v1/campaigns/bad", json=body)
        assert response.status_code == 422, (body, response.text)
        if field is not None:
            assert response.json()["error"]["details"]["field"] == field
    assert (await api.get("/v1/campaigns/bad")).status_code == 404


async def test_a_campaign_needs_its_template_approved_before_it_goes_ahead(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, audience: Any
) -> None:
    await set_approval(clarion, levels={"marketing": ["business"]})
    await put_template(api, "promo", category="marketing", channels={"sms": {"text": "sale"}})
    await campaign(api, "spring")
    refused = await act(api, "spring", "submit")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_approved"


# -- a run -----------------------------------------------------------------------------------------------------


async def test_a_now_campaign_reaches_its_audience_once_with_progress(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, promo: None, audience: Any
) -> None:
    ids = await users(api, 12)
    await put_user(api, "nophone", attributes={"name": "X"})
    audience([*ids, "ghost", "nophone", ids[0]])  # an unknown user, one without a phone, a repeat
    clarion.campaigns.batch_size = 5
    await campaign(api, "spring")
    await launch(api, "spring")

    assert await run_all(clarion.campaigns) == 14
    running = (await api.get("/v1/campaigns/spring")).json()
    assert running["status"] == "completed"
    run = running["run"]
    assert (run["audience"], run["processed"], run["messages"]) == (14, 14, 14)
    assert run["filtered"] == {"address": 1} and run["failed_at_intake"] == {"unknown_user": 1}
    assert (run["queued"], run["sent"]) == (12, 0)

    assert await drain(clarion) == 12
    done = (await api.get("/v1/campaigns/spring")).json()["run"]
    assert (done["queued"], done["sent"], done["failed"]) == (0, 12, 1)
    assert done["statuses"] == {"sent": 12, "filtered": 1, "failed": 1}
    sent = sink(clarion, "sms")
    assert sorted(line["user_id"] for line in sent) == sorted(ids)
    assert {line["content"]["text"] for line in sent} == {f"Hi N{i}, spring sale" for i in range(12)}
    messages = await campaign_messages(clarion, "spring")
    assert len(messages) == 14 and {m.campaign_run for m in messages} == {run["id"]}
    assert await clarion.campaigns.run_once("test-runner") == 0  # nothing runs twice


async def test_an_at_campaign_waits_for_its_time(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, promo: None, audience: Any
) -> None:
    audience(await users(api, 3))
    at = datetime.now(UTC) + timedelta(hours=2)
    await campaign(api, "later", schedule={"kind": "at", "at": at.isoformat()})
    assert (await launch(api, "later"))["next_run_at"] == at.isoformat()
    assert await run_all(clarion.campaigns) == 0
    clarion.campaigns.clock = lambda: at + timedelta(seconds=1)
    assert await run_all(clarion.campaigns) == 3
    assert (await api.get("/v1/campaigns/later")).json()["status"] == "completed"


async def test_a_turn_pipelines_batches_and_each_commits_in_order(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, promo: None, audience: Any
) -> None:
    """Batch N+1 is composed while N is written; N+1 is written only after N committed."""
    ids = await launch_in_batches(api, clarion, audience, 20, 4, one_per_turn=False)
    events: list[str] = []
    prepare, write = clarion.intake.prepare_campaign_batch, clarion.intake.write_campaign_batch

    async def preparing(batch: intake.CampaignBatch) -> intake.PreparedBatch:
        events.append(f"compose {batch.user_ids[0]}")
        return await prepare(batch)

    async def writing(
        prepared: intake.PreparedBatch, progress: intake.Progress, counted: intake.Progress | None = None
    ) -> intake.Tally:
        first = prepared.rows[t.messages][0]["user_id"]
        events.append(f"write {first}")
        await asyncio.sleep(0.01)  # the transaction takes a while: the next batch is composed meanwhile
        tally = await write(prepared, progress, counted)
        events.append(f"committed {first}")
        return tally

    clarion.intake.prepare_campaign_batch = preparing  # type: ignore[method-assign]
    clarion.intake.write_campaign_batch = writing  # type: ignore[method-assign]
    assert await clarion.campaigns.run_once("r") == 20  # one turn, five batches
    firsts = [e.split()[1] for e in events if e.startswith("compose")]
    assert firsts == ["u0", "u4", "u8", "u12", "u16"]
    for earlier, later in itertools.pairwise(firsts):
        assert events.index(f"compose {later}") < events.index(f"committed {earlier}")  # overlapped
        assert events.index(f"committed {earlier}") < events.index(f"write {later}")  # in order
    shown = (await api.get("/v1/campaigns/spring")).json()
    assert shown["status"] == "completed" and shown["run"]["processed"] == 20
    assert sorted(m.user_id for m in await campaign_messages(clarion, "spring")) == sorted(ids)


async def test_pause_stops_the_fan_out_and_resume_continues_it(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, promo: None, audience: Any
) -> None:
    await launch_in_batches(api, clarion, audience, 20, 4, one_per_turn=True)
    assert await clarion.campaigns.run_once("r") == 4
    assert await clarion.campaigns.run_once("r") == 4
    paused = await act(api, "spring", "pause")
    assert paused.json()["status"] == "paused" and paused.json()["run"]["status"] == "paused"
    assert await run_all(clarion.campaigns) == 0
    assert len(await campaign_messages(clarion, "spring")) == 8

    resumed = await act(api, "spring", "resume")
    assert resumed.json()["status"] == "running"
    assert await run_all(clarion.campaigns) == 12
    shown = (await api.get("/v1/campaigns/spring")).json()
    assert shown["status"] == "completed" and shown["run"]["processed"] == 20
    assert Counter(m.user_id for m in await campaign_messages(clarion, "spring")).most_common(1)[0][1] == 1


async def test_cancel_stops_a_run_and_what_it_had_queued(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, promo: None, audience: Any
) -> None:
    await launch_in_batches(api, clarion, audience, 10, 4, one_per_turn=True)
    assert await clarion.campaigns.run_once("r") == 4
    cancelled = (await act(api, "spring", "cancel")).json()
    assert cancelled["status"] == "cancelled" and cancelled["run"]["status"] == "cancelled"
    assert await run_all(clarion.campaigns) == 0
    assert await drain(clarion) == 0
    assert sink(clarion, "sms") == []
    assert cancelled["run"]["failed"] == 4


async def test_a_crash_in_the_middle_of_the_fan_out_resumes_without_sending_anyone_twice(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, settings: Any, promo: None, audience: Any
) -> None:
    ids = await launch_in_batches(api, clarion, audience, 23, 5, one_per_turn=False)

    # the third batch dies inside its transaction, after its messages were written: none of it may stay
    real = clarion.intake.write_campaign_batch
    calls = 0

    async def crashing(
        prepared: intake.PreparedBatch, progress: intake.Progress, counted: intake.Progress | None = None
    ) -> intake.Tally:
        nonlocal calls
        calls += 1
        if calls < 3:
            return await real(prepared, progress, counted)

        async def dying(conn: Any, tally: intake.Tally) -> None:
            await progress(conn, tally)
            raise RuntimeError("power cut")

        return await real(prepared, dying, counted)

    clarion.intake.write_campaign_batch = crashing  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="power cut"):
        await run_all(clarion.campaigns, "dead-runner")
    assert len(await campaign_messages(clarion, "spring")) == 10
    run = (await api.get("/v1/campaigns/spring")).json()["run"]
    assert (run["status"], run["processed"]) == ("running", 10)

    # a restarted process: its runner waits for the dead one's lease, then takes the run over
    restarted = bootstrap.build(settings)
    await restarted.start(workers=0)
    try:
        restarted.segments.audience = clarion.segments.audience  # type: ignore[method-assign]
        runner = restarted.campaigns
        runner.batch_size = 5
        assert await run_all(runner, "new-runner") == 0  # the lease is still the dead runner's
        later = datetime.now(UTC) + runner.lease + timedelta(seconds=1)
        runner.clock = lambda: later
        assert await run_all(runner, "new-runner") == 13
        assert await drain(restarted) == 23
    finally:
        await restarted.close()
    messages = await campaign_messages(clarion, "spring")
    assert sorted(m.user_id for m in messages) == sorted(ids)  # everyone exactly once
    assert sorted(line["user_id"] for line in sink(clarion, "sms")) == sorted(ids)
    done = (await api.get("/v1/campaigns/spring")).json()
    assert done["status"] == "completed"
    assert (done["run"]["processed"], done["run"]["messages"], done["run"]["sent"]) == (23, 23, 23)


async def test_two_runners_fan_one_run_out_together_each_user_once(
    api: httpx.AsyncClient,
    clarion: bootstrap.Clarion,
    promo: None,
    audience: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run's audience is cut into parts: two runners (as the campaign loops of two worker processes) lease
    different parts and advance them at the same time; the run's counts are the sum of both."""
    monkeypatch.setattr(runner_module, "PART_BATCHES", 2)  # parts of 2 batches of 4: five parts of 40 users
    ids = await launch_in_batches(api, clarion, audience, 40, 4, one_per_turn=True)
    other = CampaignRunner(clarion.db, clarion.intake, clarion.segments, batch_size=4, slice_seconds=0)
    (run_id,) = await clarion.campaigns.start_due()
    async with clarion.db.read() as conn:
        parts = await campaign_store.parts_of(conn, run_id)
    assert [(p.start, p.stop) for p in parts] == [(0, 8), (8, 16), (16, 24), (24, 32), (32, 40)]

    turns: Counter[str] = Counter()

    async def turn(runner: CampaignRunner, owner: str) -> int:
        done = await runner.run_once(owner)
        turns[owner] += done
        return done

    for _ in range(40):
        done = await asyncio.gather(turn(clarion.campaigns, "runner-a"), turn(other, "runner-b"))
        if done == [0, 0]:
            break
    assert turns["runner-a"] > 0 and turns["runner-b"] > 0 and turns.total() == 40
    messages = await campaign_messages(clarion, "spring")
    assert sorted(m.user_id for m in messages) == sorted(ids)  # everyone exactly once
    shown = (await api.get("/v1/campaigns/spring")).json()
    assert shown["status"] == "completed"
    assert (shown["run"]["processed"], shown["run"]["messages"], shown["run"]["queued"]) == (40, 40, 40)
    async with clarion.db.read() as conn:
        assert await campaign_store.parts_of(conn, run_id) == []  # a finished run's parts go


async def test_batches_are_short_while_urgent_sends_arrive(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, promo: None, audience: Any
) -> None:
    """An urgent send's write waits for the transaction in flight: while codes are being accepted, the fan-out's
    transactions are short."""
    await put_template(api, "code", category="verification", priority="urgent", channels={"sms": {"text": "{code}"}})
    clarion.campaigns.urgent_batch = 3
    await launch_in_batches(api, clarion, audience, 20, 10, one_per_turn=True)
    sizes: list[int] = []
    prepare = clarion.intake.prepare_campaign_batch

    async def preparing(batch: intake.CampaignBatch) -> intake.PreparedBatch:
        sizes.append(len(batch.user_ids))
        return await prepare(batch)

    clarion.intake.prepare_campaign_batch = preparing  # type: ignore[method-assign]
    assert await clarion.campaigns.run_once("r") == 10
    r = await api.post("/v1/messages", json={"template": "code", "to": ["u19"], "data": {"code": "1234"}})
    assert r.status_code == 202, r.text
    assert await run_all(clarion.campaigns, "r") == 10
    assert sizes == [10, 3, 3, 3, 1]
    assert len(await campaign_messages(clarion, "spring")) == 20


async def test_a_cron_campaign_runs_again_and_skips_users_reached_recently(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, promo: None, audience: Any
) -> None:
    first = await users(api, 6)
    audience(first[:4])
    schedule = {"kind": "cron", "cron": "0 10 * * *", "timezone": "Asia/Shanghai"}  # 02:00 UTC daily
    await campaign(api, "daily", schedule=schedule, exclude_reached_days=3)
    start = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)
    clarion.campaigns.clock = lambda: start
    launched = await launch(api, "daily")
    assert launched["status"] == "scheduled"
    day1 = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    # started with the real clock: put the first fire where the test wants it
    await _set_next_run(clarion, "daily", day1)
    assert await run_all(clarion.campaigns) == 0  # not due yet
    clarion.campaigns.clock = lambda: day1 + timedelta(minutes=1)
    assert await run_all(clarion.campaigns) == 4
    after_first = (await api.get("/v1/campaigns/daily")).json()
    assert after_first["status"] == "scheduled"
    assert after_first["next_run_at"] == datetime(2026, 3, 11, 2, 0, tzinfo=UTC).isoformat()
    assert await drain(clarion) == 4

    audience(first)  # the segment grew: two new users, four reached yesterday
    clarion.campaigns.clock = lambda: datetime(2026, 3, 11, 2, 0, 30, tzinfo=UTC)
    assert await run_all(clarion.campaigns) == 2
    shown = (await api.get("/v1/campaigns/daily")).json()
    assert len(shown["runs"]) == 2
    assert (shown["run"]["audience"], shown["run"]["excluded"]) == (2, 4)
    by_run = Counter(m.campaign_run for m in await campaign_messages(clarion, "daily"))
    assert sorted(by_run.values()) == [2, 4]
    assert sorted(m.user_id for m in await campaign_messages(clarion, "daily")) == sorted(first)

    # four days later the first four are no longer "recent": the third run reaches everyone again
    # (the fires of the 12th and 13th were missed: one run catches up, then the schedule moves on)
    clarion.campaigns.clock = lambda: datetime(2026, 3, 14, 2, 0, 30, tzinfo=UTC)
    assert await run_all(clarion.campaigns) == 4  # the two reached on the 11th are still excluded
    shown = (await api.get("/v1/campaigns/daily")).json()
    assert shown["run"]["excluded"] == 2
    assert shown["next_run_at"] == datetime(2026, 3, 15, 2, 0, tzinfo=UTC).isoformat()


async def _set_next_run(clarion: bootstrap.Clarion, key: str, at: datetime) -> None:
    async def job(conn: Any) -> None:
        await conn.execute(t.campaigns.update().where(t.campaigns.c.key == key).values(next_run_at=at))

    await clarion.db.write(job)


class _FakeTime:
    """A monotonic clock that only moves when the runner sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_the_rate_paces_the_fan_out(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, promo: None, audience: Any
) -> None:
    audience(await users(api, 30))
    elapsed = {}
    for rate in (10, 30):
        clock = _FakeTime()
        runner = CampaignRunner(
            clarion.db, clarion.intake, clarion.segments, monotonic=clock.monotonic, sleep=clock.sleep
        )
        key = f"paced{rate}"
        await campaign(api, key, rate=rate)
        await launch(api, key)
        assert await run_all(runner) == 30
        elapsed[rate] = clock.now
        assert (await api.get(f"/v1/campaigns/{key}")).json()["run"]["processed"] == 30
    assert elapsed[10] == pytest.approx(3.0, rel=0.05)
    assert elapsed[30] == pytest.approx(1.0, rel=0.05)


# -- estimate --------------------------------------------------------------------------------------------------

NIGHT_IN_SHANGHAI = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)  # 22:00 there, 14:00 in London


async def test_the_estimate_counts_what_each_policy_would_do_and_the_cost(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, audience: Any
) -> None:
    await set_policies(clarion)  # the defaults: marketing only 09:00-20:00 local
    long_text = "Hi {name}, " + "spring sale " * 14  # 2 GSM-7 segments
    await put_template(api, "promo", category="marketing", channels={"sms": {"text": long_text}})
    await put_template(api, "other", category="marketing", channels={"sms": {"text": "another offer"}})
    for i in range(4):
        await put_user(
            api, f"ok{i}", timezone="Europe/London", attributes={"name": "A"}, addresses={"sms": PHONE.format(i)}
        )
    await put_user(
        api, "night", timezone="Asia/Shanghai", attributes={"name": "B"}, addresses={"sms": PHONE.format(10)}
    )
    await put_user(api, "nophone", timezone="Europe/London", attributes={"name": "C"})
    await put_user(api, "gone", timezone="Europe/London", attributes={"name": "D"}, addresses={"sms": PHONE.format(11)})
    suppressed = await api.post("/v1/suppressions", json={"user_id": "gone", "category": "marketing"})
    assert suppressed.status_code in (200, 201), suppressed.text
    capped = await api.put("/v1/policies/caps/one", json={"limit": 1, "window": {"unit": "day"}, "channel": "sms"})
    assert capped.status_code in (200, 201), capped.text
    clarion.intake.clock = lambda: NIGHT_IN_SHANGHAI - timedelta(hours=1)
    sent = await api.post("/v1/messages", json={"template": "other", "to": "ok3"})
    assert sent.status_code == 202
    audience(["ok0", "ok1", "ok2", "ok3", "night", "nophone", "gone", "ghost"])
    await campaign(api, "spring", channels=["sms"])

    response = await api.post("/v1/campaigns/spring/estimate", json={"at": NIGHT_IN_SHANGHAI.isoformat()})
    assert response.status_code == 200, response.text
    found = response.json()
    assert found["exact"] is True and found["intervals"] == {}
    assert found["audience"] == {"size": 8, "excluded": 0, "eligible": 8, "unknown_users": 1, "reached": 4}
    sms = found["channels"]["sms"]
    assert sms["deliveries"] == 7
    assert sms["dropped"] == {"address": 1, "suppression": 1, "caps": 1}
    assert sms["deferred"] == {"quiet_hours": 1}
    assert sms["send"] == 4  # three now, one in the Shanghai morning
    assert sms["segments"] == 8 and sms["segments_per_message"] == 2.0
    assert sms["cost"] == pytest.approx(8 * 0.045)
    assert found["cost"] == {"total": pytest.approx(8 * 0.045), "currency": "CNY"}
    assert found["policies"]["quiet_hours"] == {"drop": 0, "defer": 1}
    assert found["policies"]["suppression"]["drop"] == 1
    assert found["policies"]["caps"]["drop"] == 1

    # nothing was counted: the capped user is still capped once, the others can still be sent to
    again = (await api.post("/v1/campaigns/spring/estimate", json={"at": NIGHT_IN_SHANGHAI.isoformat()})).json()
    assert again["channels"] == found["channels"]


async def test_a_large_audience_is_estimated_from_a_sample_with_bounds(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, promo: None, audience: Any
) -> None:
    ids = await users(api, 60)
    for i in range(0, 60, 3):  # a third have no phone
        await put_user(api, ids[i], attributes={"name": "N"})
    audience(ids)
    clarion.settings.campaign_estimate_exact = 20
    clarion.settings.campaign_estimate_sample = 100  # more than the audience: capped to it → exact again
    await campaign(api, "spring")
    exact = (await api.post("/v1/campaigns/spring/estimate")).json()
    assert exact["exact"] is True and exact["channels"]["sms"]["dropped"] == {"address": 20}

    clarion.settings.campaign_estimate_sample = 30
    sampled = (await api.post("/v1/campaigns/spring/estimate")).json()
    assert sampled["exact"] is False and sampled["judged"] == 30 and sampled["confidence"] == 0.95
    dropped = sampled["channels"]["sms"]["dropped"]["address"]
    low, high = sampled["intervals"]["channels.sms.dropped.address"]
    assert low <= dropped <= high and low <= 20 <= high
    assert sampled["channels"]["sms"]["send"] + dropped == 60


# -- the command line ------------------------------------------------------------------------------------------


async def test_the_cli_saves_reviews_starts_and_runs_a_campaign(
    api: httpx.AsyncClient,
    clarion: bootstrap.Clarion,
    settings: Any,
    promo: None,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio
    import json

    from typer.testing import CliRunner

    from clarion import cli
    from clarion.segments.service import SegmentService

    ids = await users(api, 7)

    async def fake(self: Any, spec: Any) -> list[str]:
        return ids

    monkeypatch.setattr(SegmentService, "audience", fake)
    env = {
        "CLARION_DATABASE_URL": settings.database_url,
        "CLARION_DATA_DIR": settings.data_dir,
        "CLARION_OUTBOX_DIR": settings.outbox_dir,
        "CLARION_SECRET_KEY": "test-secret-key",
    }
    body = tmp_path / "spring.json"
    body.write_text(json.dumps({"template": "promo", "audience": {"segment": "everyone"}}))

    async def clarion_cli(*args: str) -> dict[str, Any]:
        result = await asyncio.to_thread(CliRunner().invoke, cli.app, ["campaign", *args], env=env)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    assert (await clarion_cli("put", "spring", str(body), "--as", "ed"))["status"] == "draft"
    await clarion_cli("submit", "spring", "--as", "ed")
    refused = await asyncio.to_thread(
        CliRunner().invoke, cli.app, ["campaign", "approve", "spring", "--as", "ed"], env=env
    )
    assert refused.exit_code == 2 and "someone else" in refused.output
    await clarion_cli("approve", "spring", "--as", "ana")
    assert (await clarion_cli("start", "spring"))["status"] == "scheduled"
    estimate = await clarion_cli("estimate", "spring")
    assert estimate["channels"]["sms"]["send"] == 7
    done = await clarion_cli("run", "spring")
    assert done["status"] == "completed"
    assert (done["run"]["processed"], done["run"]["sent"], done["run"]["queued"]) == (7, 7, 0)
    assert sorted(line["user_id"] for line in sink(clarion, "sms")) == sorted(ids)


# -- real audiences: the segment engine and ID lists, no stand-in ------------------------------------------------


async def test_a_campaign_to_a_segment_minus_an_id_list_reaches_exactly_those_users(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, promo: None
) -> None:
    for i in range(8):
        await put_user(
            api,
            f"r{i}",
            attributes={"name": f"R{i}", "city": "Beijing" if i % 2 == 0 else "Shanghai"},
            tags=["vip"] if i < 6 else [],
            addresses={"sms": PHONE.format(i)},
        )
    segment = {"conditions": {"and": [{"tag": "vip"}, {"attr": "city", "op": "=", "value": "Beijing"}]}}
    assert (await api.put("/v1/segments/beijing-vip", json=segment)).status_code in (200, 201)
    listed = await api.post(
        "/v1/lists?key=complained&kind=user_id", content=b"r2\n", headers={"content-type": "text/plain"}
    )
    assert listed.status_code in (200, 201), listed.text
    audience = {"segment": "beijing-vip", "exclude": {"list": "complained"}}
    await campaign(api, "spring", audience=audience)
    estimate = (await api.post("/v1/campaigns/spring/estimate")).json()
    assert estimate["audience"]["size"] == 2  # r0 and r4: vip in Beijing, r2 excluded
    await launch(api, "spring")
    assert await run_all(clarion.campaigns) == 2
    assert await drain(clarion) == 2
    assert sorted(line["user_id"] for line in sink(clarion, "sms")) == ["r0", "r4"]
