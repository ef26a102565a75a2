"""A real ``clarion worker`` process killed with SIGKILL mid-batch loses nothing, and its restart does not wait.

The outbox promises at-least-once delivery under a stable delivery id: a killed worker's leases name its host,
pid and process start, so the worker started after it sees that process is gone and takes them back at once —
well within the 60-second lease — and re-sends them; a receiver can spot the re-send by its
``Clarion-Delivery-Id``. The webhook receiver here answers slowly so the kill lands while a batch is on the wire.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.store import rollups
from clarion.store import tables as t
from tests.conftest import put_template, put_user
from tests.integration.loopback import LoopbackServer, Reply

pytestmark = pytest.mark.slow

MESSAGES = 40
BATCH = 10
LEASE = 60.0  # as deployed: a restart that waited for the dead worker's leases would wait this long
RESTART_WITHIN = 15.0  # from starting the new process to every delivery sent: its start-up, then a few batches
CLARION = str(Path(sys.executable).parent / "clarion")


def worker_env(clarion: bootstrap.Clarion, tmp_path: Path) -> dict[str, str]:
    """The worker shares the test's database and secret key (provider secrets are sealed under it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env.update(
        CLARION_DATABASE_URL=clarion.settings.database_url,
        CLARION_LEASE_SECONDS=str(LEASE),
        CLARION_CLAIM_BATCH=str(BATCH),
        CLARION_POLL_INTERVAL="0.05",
        CLARION_DATA_DIR=str(tmp_path / "worker-var"),
        CLARION_OUTBOX_DIR=str(tmp_path / "worker-var" / "outbox"),
        CLARION_SECRET_KEY=clarion.secret_key,
        PYTHONUNBUFFERED="1",
    )
    return env


def start_worker(clarion: bootstrap.Clarion, tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    log = (tmp_path / f"{name}.log").open("wb")
    try:
        return subprocess.Popen(
            [CLARION, "worker", "--workers", "1", "--log-level", "info"],
            env=worker_env(clarion, tmp_path),
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()  # the child has its own descriptor


def log_tail(tmp_path: Path, name: str, lines: int = 30) -> str:
    path = tmp_path / f"{name}.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return f"--- {name}.log ---\n" + "\n".join(text.splitlines()[-lines:])


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    *,
    within: float,
    what: str,
    alive: subprocess.Popen[bytes],
    diagnostics: Callable[[], str],
) -> None:
    """Poll ``check`` (bounded), failing early if the worker that should be doing the work has exited."""
    deadline = time.monotonic() + within
    while not await check():
        if alive.poll() is not None:
            pytest.fail(f"worker exited with {alive.returncode} while waiting for {what}\n{diagnostics()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}\n{diagnostics()}")
        await asyncio.sleep(0.02)


async def wait_exit(proc: subprocess.Popen[bytes], seconds: float) -> int | None:
    """The exit code, waiting at most ``seconds`` (in a thread: the loopback server keeps serving)."""
    try:
        return await asyncio.to_thread(proc.wait, seconds)
    except subprocess.TimeoutExpired:
        return None


async def delivery_rows(clarion: bootstrap.Clarion) -> list[Any]:
    async with clarion.db.read() as conn:
        return list((await conn.execute(sa.select(t.deliveries).order_by(t.deliveries.c.id))).all())


async def queue_webhooks(api: httpx.AsyncClient, clarion: bootstrap.Clarion, server: LoopbackServer) -> set[str]:
    """A webhook provider allowed onto loopback, MESSAGES users pointing at ``server``, one message each."""
    config = {"secret": "s3cret", "allow_private_networks": True, "timeout": 10}
    response = await api.put("/v1/providers/hooks", json={"channel": "webhook", "kind": "webhook", "config": config})
    assert response.status_code == 201, response.text
    users = [f"u{i:02d}" for i in range(MESSAGES)]
    for user in users:
        await put_user(api, user, addresses={"webhook": f"{server.url}/hook/{user}"})
    await put_template(api, "ping", channels={"webhook": {"body": {"user": "{user.user_id}", "order": "{data.order}"}}})
    response = await api.post("/v1/messages", json={"template": "ping", "to": users, "data": {"order": "A-7"}})
    assert response.status_code == 202, response.text
    assert [m["status"] for m in response.json()["messages"]] == ["queued"] * MESSAGES
    everything = {r.id for r in await delivery_rows(clarion)}
    assert len(everything) == MESSAGES
    return everything


async def test_worker_killed_mid_batch_loses_nothing(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, tmp_path: Path
) -> None:
    procs: list[subprocess.Popen[bytes]] = []
    async with LoopbackServer(default=Reply(200, {"ok": True}, delay=0.3)) as server:
        try:
            await _scenario(api, clarion, tmp_path, server, procs)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    await wait_exit(proc, 10)


async def _scenario(
    api: httpx.AsyncClient,
    clarion: bootstrap.Clarion,
    tmp_path: Path,
    server: LoopbackServer,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    everything = await queue_webhooks(api, clarion, server)

    def diagnostics() -> str:
        return "\n".join(log_tail(tmp_path, name) for name in ("worker1", "worker2"))

    # -- the first worker is killed while its second batch waits on the slow receiver
    first = start_worker(clarion, tmp_path, "worker1")
    procs.append(first)

    async def second_batch_on_the_wire() -> bool:
        return len(server.requests) > BATCH

    await wait_until(second_batch_on_the_wire, within=60, what="the second batch", alive=first, diagnostics=diagnostics)
    first.kill()
    assert await wait_exit(first, 10) == -signal.SIGKILL
    received_before_kill = {r.headers["Clarion-Delivery-Id"] for r in server.requests}
    assert len(received_before_kill) < MESSAGES, "the kill came too late to land mid-batch"
    in_flight = {r.id for r in await delivery_rows(clarion) if r.status == "sending"}
    assert in_flight, "the kill did not land mid-batch: no delivery was left leased"
    assert in_flight <= everything

    # -- a second worker takes back the dead worker's leases at once and finishes the job
    second = start_worker(clarion, tmp_path, "worker2")
    restarted = time.monotonic()
    procs.append(second)

    async def all_final() -> bool:
        return all(r.status in ("delivered", "failed") for r in await delivery_rows(clarion))

    await wait_until(all_final, within=LEASE, what="every delivery to finish", alive=second, diagnostics=diagnostics)
    took = time.monotonic() - restarted
    assert took < RESTART_WITHIN, f"the restart took {took:.1f}s to send everything: it waited for the leases"
    second.send_signal(signal.SIGTERM)
    assert await wait_exit(second, 20) == 0, diagnostics()

    # -- nothing lost, nothing failed, and only the in-flight batch was sent twice, under the same id
    rows = await delivery_rows(clarion)
    assert {r.status for r in rows} == {"delivered"}, [
        (r.id, r.status, r.last_error) for r in rows if r.status != "delivered"
    ]
    bodies: dict[str, list[bytes]] = defaultdict(list)
    for request in server.requests:
        bodies[request.headers["Clarion-Delivery-Id"]].append(request.body)
    assert set(bodies) == everything, "some delivery never reached the receiver"
    resent = {delivery_id for delivery_id, seen in bodies.items() if len(seen) > 1}
    assert resent <= in_flight, "a delivery whose send had been recorded was sent again"
    assert in_flight & received_before_kill <= resent, "a delivery on the wire at the kill was not re-sent"
    assert resent, "nothing was re-sent"
    for delivery_id in resent:
        assert len(bodies[delivery_id]) == 2
        assert len(set(bodies[delivery_id])) == 1, "a re-send must carry the same body"

    by_id = {r.id: r for r in rows}
    assert all(by_id[i].attempts == (2 if i in in_flight else 1) for i in everything)
    e = t.delivery_events
    async with clarion.db.read() as conn:
        taken_back = (
            await conn.execute(sa.select(e.c.delivery_id, e.c.reason).where(e.c.reason.like("lease_%")))
        ).all()
    assert sorted(delivery_id for delivery_id, _ in taken_back) == sorted(in_flight)
    host = socket.gethostname()
    assert {reason for _, reason in taken_back} == {f"lease_reclaimed: worker {host}:{first.pid} is not running"}
    async with clarion.db.read() as conn:
        statuses = (await conn.execute(sa.select(t.messages.c.status))).scalars().all()
    assert statuses == ["delivered"] * MESSAGES

    # -- the funnel rollups, written with the killed worker's and the second worker's batches, equal a recount
    # from the timeline: each delivery counted once sent and once delivered, though the in-flight ones were sent
    # twice
    live = await rollup_rows(clarion)
    assert {(stage, n) for stage, n in _stage_totals(live).items()} == {
        ("requested", MESSAGES),
        ("sent", MESSAGES),
        ("delivered", MESSAGES),
    }

    async def recount(conn: Any) -> int:
        return await rollups.rebuild(conn)

    await clarion.db.write(recount)
    assert await rollup_rows(clarion) == live


async def rollup_rows(clarion: bootstrap.Clarion) -> list[tuple[Any, ...]]:
    """Every cell of both funnel rollups, without their ids, in one order."""
    out: list[tuple[Any, ...]] = []
    async with clarion.db.read() as conn:
        for table in rollups.TABLES:
            columns = [c for c in table.c if c.name != "id"]
            rows = (await conn.execute(sa.select(*columns))).all()
            out.extend(sorted((table.name, *row) for row in rows))
    return out


def _stage_totals(rows: list[tuple[Any, ...]]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    stage_at, count_at = 2 + len(t.FUNNEL_DIMS), 4 + len(t.FUNNEL_DIMS)
    for row in rows:
        if row[0] == "funnel_hourly":
            totals[row[stage_at]] += row[count_at]
    return dict(totals)


async def test_sigterm_mid_batch_finishes_and_records_the_batch(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, tmp_path: Path
) -> None:
    """A graceful stop is not a crash: the batch on the wire is completed and recorded, nothing is left leased."""
    async with LoopbackServer(default=Reply(200, {"ok": True}, delay=0.5)) as server:
        everything = await queue_webhooks(api, clarion, server)
        proc = start_worker(clarion, tmp_path, "worker")
        try:

            async def first_batch_on_the_wire() -> bool:
                return len(server.requests) > 0

            await wait_until(
                first_batch_on_the_wire,
                within=60,
                what="the first batch",
                alive=proc,
                diagnostics=lambda: log_tail(tmp_path, "worker"),
            )
            proc.send_signal(signal.SIGTERM)
            assert await wait_exit(proc, 20) == 0, log_tail(tmp_path, "worker")
        finally:
            if proc.poll() is None:
                proc.kill()
                await wait_exit(proc, 10)

    received = {r.headers["Clarion-Delivery-Id"] for r in server.requests}
    assert 0 < len(received) < MESSAGES
    assert len(server.requests) == len(received)  # nothing sent twice
    rows = {r.id: r for r in await delivery_rows(clarion)}
    assert set(rows) == everything
    assert {i for i, r in rows.items() if r.status == "sending"} == set(), "a graceful stop left leases behind"
    assert {i for i, r in rows.items() if r.status == "delivered"} == received
    assert all(rows[i].status == "queued" and rows[i].attempts == 0 for i in everything - received)
