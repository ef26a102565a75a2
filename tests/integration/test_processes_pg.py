"""Several processes, one PostgreSQL and one Redis, proven correct together: two ``clarion api`` processes take a
burst of triggered sends (every idempotency key given to both at once) while two ``clarion worker`` processes run
a campaign and deliver everything through the file provider; one worker is SIGKILLed in the middle and the
other finishes its work once the dead one's leases expire. Afterwards nothing accepted is lost, a delivery
handed over twice carries its one delivery id both times, no user got more than the cap, and each key made one
message."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from clarion import bootstrap, owners
from clarion.settings import Settings
from clarion.store import tables as t
from tests.conftest import API_KEY, put_template, set_approval, shared_redis
from tests.processes import api_process, worker_process

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.parametrize("db_url", ["postgres"], indirect=True),
]

USERS = 3000  # the campaign's audience
CAPPED = 50  # the users the burst is sent to, three messages each: one more than the cap
KEYS = 150  # the burst's idempotency keys, each sent to both API processes at once
CAP = 2  # messages per user an hour, counted in the shared Redis
LEASE = 5.0  # seconds: how soon the surviving worker takes over the killed one's deliveries and campaign run
RATE = 400  # the campaign's messages a second, so that its fan-out is still going when the burst is over
ANA_KEY = "clk_ana_the_approver_000000000000"
UNFINISHED = ("accepted", "queued", "sending", "deferred")


@pytest.fixture
def settings(settings: Settings, redis_db: None) -> Settings:
    """The suite's settings with the Redis every process shares (a prefix of this test's own)."""
    return shared_redis(settings)


def process_env(settings: Settings) -> dict[str, str]:
    """What every API and worker process is started with: this test's database, Redis, outbox and keys."""
    assert settings.secret_key is not None and settings.redis_url is not None
    return {
        **os.environ,
        "CLARION_DATABASE_URL": settings.database_url,
        "CLARION_REDIS_URL": settings.redis_url,
        "CLARION_REDIS_PREFIX": settings.redis_prefix,
        "CLARION_DATA_DIR": settings.data_dir,
        "CLARION_OUTBOX_DIR": settings.outbox_dir,
        "CLARION_SECRET_KEY": settings.secret_key.get_secret_value(),
        "CLARION_API_KEY": API_KEY,
        "CLARION_LEASE_SECONDS": str(LEASE),
        "CLARION_CAMPAIGN_LEASE_SECONDS": str(LEASE),
        "CLARION_POLL_INTERVAL": "0.05",
        "CLARION_CLAIM_BATCH": "50",  # each worker takes its share of the backlog, not all of it at once
        "CLARION_CLAIM_BATCH_MAX": "100",
        "CLARION_TUNE_GC": "false",
    }


async def prepare(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    """Users, templates, the cap and the campaign, saved before the processes start (so each one's segment index
    and catalog begin with them)."""
    await set_approval(clarion, levels={})
    await clarion.keys.create("ana", ("approver",), key=ANA_KEY)
    for path, body in (
        ("/v1/policies/settings", {"send_windows": {}}),
        ("/v1/policies/caps/hourly", {"limit": CAP, "window": {"seconds": 3600}}),
    ):
        response = await api.put(path, json=body)
        assert response.status_code in (200, 201), response.text
    users = [{"user_id": f"u{i}", "addresses": {"sms": f"+86138{i:08d}"}} for i in range(USERS)]
    response = await api.post("/v1/users:batch", json=users)
    assert response.status_code == 200 and response.json()["created"] == USERS, response.text
    members = "".join(f"u{i}\n" for i in range(USERS)).encode()
    response = await api.post("/v1/lists", params={"key": "everyone"}, content=members)
    assert response.status_code == 201, response.text
    await put_template(api, "notice", category="notification", channels={"sms": {"text": "notice {n}"}})
    await put_template(api, "promo", category="marketing", channels={"sms": {"text": "spring sale"}})
    response = await api.put(
        "/v1/campaigns/spring", json={"template": "promo", "audience": {"list": "everyone"}, "rate": RATE}
    )
    assert response.status_code in (200, 201), response.text


async def launch(api: httpx.AsyncClient) -> None:
    for action, key in (("submit", API_KEY), ("approve", ANA_KEY), ("start", API_KEY)):
        response = await api.post(f"/v1/campaigns/spring/{action}", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text


async def burst(clients: list[httpx.AsyncClient]) -> list[list[httpx.Response]]:
    """Each key's send posted to every API process at once; the answers, by key."""
    gate = asyncio.Semaphore(16)

    async def post(client: httpx.AsyncClient, n: int) -> httpx.Response:
        body = {"template": "notice", "to": f"u{n % CAPPED}", "data": {"n": n}, "idempotency_key": f"burst-{n}"}
        async with gate:
            return await client.post("/v1/messages", json=body, timeout=60)

    async def both(n: int) -> list[httpx.Response]:
        return list(await asyncio.gather(*(post(client, n) for client in clients)))

    return list(await asyncio.gather(*(both(n) for n in range(KEYS))))


async def count(clarion: bootstrap.Clarion, *where: Any) -> int:
    async with clarion.db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(t.deliveries).where(*where))).scalar())


async def until(clarion: bootstrap.Clarion, done: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await done():
        assert time.monotonic() < deadline, f"{what} not within {within}s"
        await asyncio.sleep(0.2)


async def test_two_apis_and_two_workers_one_killed_lose_nothing_and_keep_caps_and_keys(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, settings: Settings, tmp_path: Path
) -> None:
    await prepare(api, clarion)
    env = process_env(settings)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        bases = [stack.enter_context(api_process(env, tmp_path / f"api-{n}.log")) for n in "ab"]
        workers = {w.pid: w for w in (stack.enter_context(worker_process(env, tmp_path / f"w{n}.log")) for n in "ab")}
        clients = [httpx.AsyncClient(base_url=b, headers={"Authorization": f"Bearer {API_KEY}"}) for b in bases]
        try:
            ready = time.monotonic()
            await launch(clients[0])
            kill = asyncio.create_task(kill_the_campaigns_worker(clarion, workers))
            answers = await burst(clients)
            burst_done = time.monotonic()
            killed, killed_at, progress = await kill
            await until(clarion, lambda: _finished(clarion), 60, "every delivery final")
            finished = time.monotonic()
        finally:
            for client in clients:
                await client.aclose()
    [survivor] = [w for pid, w in workers.items() if pid != killed]
    assert survivor.returncode == 0, "the surviving worker did not stop cleanly"

    # each idempotency key: one message; both API processes gave the same answer, one of them a replay
    for n, pair in enumerate(answers):
        assert [r.status_code for r in pair] == [202, 202], [r.text for r in pair]
        assert pair[0].json() == pair[1].json(), n
        assert sorted(r.headers.get("idempotent-replayed", "") for r in pair) == ["", "true"], n
    async with clarion.db.read() as conn:
        r, m = t.send_requests, t.messages
        per_campaign_user = (
            await conn.execute(
                sa.select(m.c.user_id, sa.func.count()).where(m.c.campaign_key == "spring").group_by(m.c.user_id)
            )
        ).all()
        per_key = (
            await conn.execute(
                sa.select(r.c.idempotency_key, sa.func.count(m.c.id))
                .join(m, m.c.request_id == r.c.id)
                .where(r.c.idempotency_key.like("burst-%"))
                .group_by(r.c.idempotency_key)
            )
        ).all()
        burst_messages = (
            await conn.execute(sa.select(sa.func.count()).select_from(m).where(m.c.template_key == "notice"))
        ).scalar()
        run = (await conn.execute(sa.select(t.campaign_runs))).one()
        d = t.deliveries
        rows = (await conn.execute(sa.select(d.c.id, d.c.message_id, d.c.user_id, d.c.status))).all()
    assert len(per_key) == KEYS and {c for _, c in per_key} == {1}
    assert burst_messages == KEYS

    # nothing accepted is lost: the campaign reached everyone, every delivery is final, every sent one is in the file
    assert run.status == "completed", run
    assert len(per_campaign_user) == USERS and {n for _, n in per_campaign_user} == {1}  # resumed, nobody twice
    statuses = collections.Counter(row.status for row in rows)
    assert not set(statuses) & set(UNFINISHED), statuses
    sent = {row.id: row for row in rows if row.status == "sent"}
    lines = [orjson.loads(line) for line in (Path(settings.outbox_dir) / "sms.jsonl").read_bytes().splitlines()]
    handed = collections.Counter(line["delivery_id"] for line in lines)
    assert set(handed) == set(sent)

    # a re-send is the same delivery handed over again: same id, same message, a later attempt
    by_message: dict[str, set[str]] = collections.defaultdict(set)
    attempts: dict[str, list[int]] = collections.defaultdict(list)
    for line in lines:
        by_message[line["message_id"]].add(line["delivery_id"])
        attempts[line["delivery_id"]].append(line["attempt"])
        assert sent[line["delivery_id"]].message_id == line["message_id"]
    assert all(len(ids) == 1 for ids in by_message.values())
    resent = {d: n for d, n in handed.items() if n > 1}
    assert all(len(set(attempts[d])) == n for d, n in resent.items())  # each hand-over under a new attempt

    # no user got more than the cap, across both API processes and the campaign's runners
    per_user = collections.Counter(row.user_id for row in sent.values())
    assert max(per_user.values()) <= CAP
    assert all(per_user[f"u{i}"] == CAP for i in range(CAPPED))  # the cap was reached, and it held
    assert statuses["filtered"] >= CAPPED * 2  # each capped user's third notice and the campaign's message

    print(
        f"\nburst: {KEYS} keys × 2 APIs ({KEYS * 2} requests) to {CAPPED} users; campaign: {USERS} users; "
        f"deliveries sent {len(sent)}, filtered {statuses['filtered']}; re-sends after the kill: "
        f"{sum(n - 1 for n in resent.values())} ({len(resent)} deliveries); "
        f"processes up {ready - started:.1f}s; burst {burst_done - ready:.1f}s; killed at {killed_at - ready:.1f}s "
        f"(campaign {progress}); killed → all final {finished - killed_at:.1f}s; "
        f"launch → all final {finished - ready:.1f}s"
    )


async def kill_the_campaigns_worker(
    clarion: bootstrap.Clarion, workers: dict[int, subprocess.Popen[bytes]]
) -> tuple[int, float, str]:
    """SIGKILL the worker process fanning the campaign out (a paced run is one part, so one runner's) once a
    third of its audience is written, while both workers are sending; returns its pid, when, and how far the
    campaign was."""
    deadline = time.monotonic() + 60
    while True:
        async with clarion.db.read() as conn:
            run = (await conn.execute(sa.select(t.campaign_runs))).first()
            leased = (
                await conn.execute(
                    sa.select(t.campaign_run_parts.c.lease_owner).where(t.campaign_run_parts.c.lease_owner.is_not(None))
                )
            ).scalars()
            runners = [o for o in map(owners.parse, leased) if o is not None and o.pid in workers]
        sent = await count(clarion, t.deliveries.c.status == "sent")
        if run is not None and runners and run.processed >= USERS // 3 and sent:
            pid = runners[0].pid
            os.kill(pid, signal.SIGKILL)
            workers[pid].wait()
            return pid, time.monotonic(), f"{run.processed}/{USERS} written, {sent} deliveries sent"
        assert time.monotonic() < deadline, "the campaign did not get a third of the way"
        await asyncio.sleep(0.05)


async def _finished(clarion: bootstrap.Clarion) -> bool:
    async with clarion.db.read() as conn:
        run = (await conn.execute(sa.select(t.campaign_runs.c.status))).scalar()
    return run == "completed" and await count(clarion, t.deliveries.c.status.in_(UNFINISHED)) == 0
