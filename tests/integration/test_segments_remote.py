"""The segment index held once per deployment: a real ``clarion segments serve`` process over the test database,
and a second Clarion in the test process built with ``segments_url``, which builds no index and asks the holder.
The suite's own Clarion (``clarion``/``api``) keeps its local index over the same database: every answer through
the holder is compared with it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.segments import query, remote
from clarion.segments.service import SegmentService
from clarion.settings import Settings
from tests.conftest import API_KEY, drain, put_template, put_user, set_approval, set_policies, sink
from tests.integration.loopback import free_port
from tests.processes import segments_process

VIP = {"tag": "vip"}
BEIJING = {"attr": "city", "op": "=", "value": "Beijing"}
ANA_KEY = "clk_ana_the_approver_000000000000"


def holder_env(settings: Settings) -> dict[str, str]:
    """The holder's environment: this test's database, data directory and secret key, nothing else of ours."""
    assert settings.secret_key is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    return {
        **env,
        "CLARION_DATABASE_URL": settings.database_url,
        "CLARION_SECRET_KEY": settings.secret_key.get_secret_value(),
        "CLARION_DATA_DIR": settings.data_dir,
        "CLARION_OUTBOX_DIR": settings.outbox_dir,
        "CLARION_TUNE_GC": "false",
    }


def vip(i: int) -> bool:
    """Every fourth user is a VIP, every third lives in Beijing: the two conditions overlap on 3 users only, so
    a side that dropped either condition would count 8 or 10, not 3."""
    return i % 4 == 0


async def seed(api: httpx.AsyncClient) -> None:
    """30 users, a saved segment and an ID list, written through the suite's Clarion (the local index)."""
    cities = ("Beijing", "Shanghai", "Hangzhou")
    for i in range(30):
        attributes = {"city": cities[i % 3], "age": 20 + i}
        phone = {"sms": f"+861380013{i:04d}"}
        await put_user(api, f"u{i:02d}", tags=["vip"] if vip(i) else [], attributes=attributes, addresses=phone)
    saved = await api.put("/v1/segments/vip", json={"conditions": VIP})
    assert saved.status_code == 201, saved.text
    uploaded = await api.post("/v1/lists", params={"key": "winners"}, content=b"u00\nu01\nu04\nu06\nnobody\n")
    assert uploaded.status_code == 201, uploaded.text


@pytest.fixture
async def holder(settings: Settings, api: httpx.AsyncClient, tmp_path: Path) -> AsyncIterator[str]:
    await seed(api)
    with segments_process(holder_env(settings), tmp_path / "holder.log") as url:
        yield url


@pytest.fixture
async def asking(settings: Settings, holder: str) -> AsyncIterator[bootstrap.Clarion]:
    """A second Clarion that asks the holder: it builds no index of its own."""
    services = bootstrap.build(settings.model_copy(update={"segments_url": holder}))
    await services.start(workers=0)
    yield services
    await services.close()


@contextlib.asynccontextmanager
async def client_of(services: bootstrap.Clarion, key: str = API_KEY) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(clarion=services))
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test", headers=headers) as client:
        yield client


@pytest.fixture
async def asking_api(asking: bootstrap.Clarion) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(asking) as client:
        yield client


async def eventually(check: Any, *, within: float = 15.0) -> float:
    """Wait until ``check()`` holds; returns the seconds it took."""
    began = time.monotonic()
    while not await check():
        assert time.monotonic() - began < within, "not seen in time"
        await asyncio.sleep(0.1)
    return time.monotonic() - began


async def test_the_asking_process_answers_as_the_local_index(
    clarion: bootstrap.Clarion, asking: bootstrap.Clarion, api: httpx.AsyncClient, asking_api: httpx.AsyncClient
) -> None:
    assert isinstance(asking.segments, remote.RemoteSegments) and isinstance(clarion.segments, SegmentService)
    node = query.parse({"and": [VIP, BEIJING]})
    assert await clarion.segments.count(node) == 3
    assert await asking.segments.count(node) == 3
    for seed_value in (None, 7):
        assert await asking.segments.sample(node, 2, seed_value) == await clarion.segments.sample(node, 2, seed_value)

    for path, field in (
        ("/v1/segments/vip/count", "count"),
        ("/v1/segments/vip/sample?n=5", "users"),
        ("/v1/segments/vip/sample?n=4&seed=3", "users"),
    ):
        here, there = await api.get(path), await asking_api.get(path)
        assert there.status_code == 200, there.text
        assert there.json()[field] == here.json()[field]  # the answers' timings differ
    for conditions in (BEIJING, {"not": VIP}, {"list": "winners"}, {"and": [VIP, {"not": {"list": "winners"}}]}):
        here = await api.post("/v1/segments:count", json={"conditions": conditions})
        there = await asking_api.post("/v1/segments:count", json={"conditions": conditions})
        assert (there.status_code, there.json()["count"]) == (200, here.json()["count"]), conditions

    spec = {"segment": "vip", "exclude": {"list": "winners"}}
    audience = await asking.campaigns.audiences.audience(spec)
    assert audience == await clarion.campaigns.audiences.audience(spec)
    assert audience == ["u08", "u12", "u16", "u20", "u24", "u28"]
    assert await asking.campaigns.audiences.count_audience(spec) == 6
    assert await asking.segments.audience({"list": "winners"}) == ["u00", "u01", "u04", "u06"]


async def test_a_campaign_audience_of_many_users_streams_whole(
    clarion: bootstrap.Clarion, asking: bootstrap.Clarion, api: httpx.AsyncClient
) -> None:
    """More ids than one streamed chunk holds (``holder.LINES_PER_CHUNK``), loaded through the bulk path of the
    suite's Clarion: the holder's poll finds them, and the audience comes back whole and sorted."""
    for start in range(0, 25_000, 10_000):  # the bulk path's most a call
        items = range(start, min(start + 10_000, 25_000))
        ndjson = b"".join(orjson.dumps({"user_id": f"m{i:05d}", "tags": ["many"]}) + b"\n" for i in items)
        headers = {"Content-Type": "application/x-ndjson"}
        loaded = await api.post("/v1/users:batch", content=ndjson, headers=headers)
        assert loaded.status_code == 200, loaded.text
    saved = await api.put("/v1/segments/many", json={"conditions": {"tag": "many"}})
    assert saved.status_code == 201, saved.text
    spec = {"segment": "many"}

    async def complete() -> bool:
        return await asking.segments.count_audience(spec) == 25_000

    await eventually(complete)
    audience = await asking.segments.audience(spec)
    assert audience == await clarion.segments.audience(spec)
    assert audience == [f"m{i:05d}" for i in range(25_000)]


async def test_a_user_change_is_seen_through_the_holder(
    api: httpx.AsyncClient, asking: bootstrap.Clarion, asking_api: httpx.AsyncClient
) -> None:
    """A write through the asking process is passed on at once (as this process's own writes reach its local
    index today); a write through another process is found by the holder's poll (as today's local index finds
    it: within ``poll_seconds``, 2 s)."""
    node = query.parse(VIP)
    assert await asking.segments.count(node) == 8
    await put_user(asking_api, "u02", tags=["vip"])
    assert (await asking_api.get("/v1/segments/vip/count")).json()["count"] == 9
    deleted = await asking_api.delete("/v1/users/u04")
    assert deleted.status_code == 204, deleted.text
    assert (await asking_api.get("/v1/segments/vip/count")).json()["count"] == 8

    await put_user(api, "u01", tags=["vip"], attributes={"city": "Shanghai"})  # not through the asking process

    async def polled() -> bool:
        return await asking.segments.count(node) == 9

    assert await eventually(polled, within=10.0) < 6.0


async def test_bad_definitions_come_back_as_the_same_422(api: httpx.AsyncClient, asking_api: httpx.AsyncClient) -> None:
    for conditions in (
        {"attr": "age", "op": ">", "value": "old"},  # a number attribute compared with text: the index refuses it
        {"list": "nope"},  # no such ID list: the index refuses it
        {"attr": "age", "op": "nearly", "value": 3},  # refused by the parser before any index is asked
    ):
        here = await api.post("/v1/segments:count", json={"conditions": conditions})
        there = await asking_api.post("/v1/segments:count", json={"conditions": conditions})
        assert here.status_code == 422, here.text
        assert (there.status_code, there.json()) == (here.status_code, here.json())
    saved = await asking_api.put("/v1/segments/old", json={"conditions": {"attr": "age", "op": ">", "value": "old"}})
    assert saved.status_code == 422
    assert (await asking_api.get("/v1/segments/old")).status_code == 404  # refused before anything was written


async def test_calls_without_the_deployment_key_are_refused(settings: Settings, holder: str) -> None:
    assert settings.secret_key is not None
    right = remote.holder_key(settings.secret_key.get_secret_value())
    body = orjson.dumps({"conditions": VIP})

    def signed(path: str, payload: bytes, key: bytes = right, **override: str) -> dict[str, str]:
        return {**remote.signed_headers(key, "POST", path, payload), **override}

    async with httpx.AsyncClient(base_url=holder) as client:
        assert (await client.post("/count", content=body, headers=signed("/count", body))).json() == {"count": 8}
        refusals = {
            "unsigned": await client.post("/count", content=body),
            "another key": await client.post(
                "/count", content=body, headers=signed("/count", body, remote.holder_key("another deployment"))
            ),
            "another body": await client.post(
                "/count", content=orjson.dumps({"conditions": BEIJING}), headers=signed("/count", body)
            ),
            "another path": await client.post("/audience:count", content=body, headers=signed("/count", body)),
            "stale": await client.post(
                "/count",
                content=body,
                headers={
                    remote.TIMESTAMP_HEADER: "1000",
                    remote.SIGNATURE_HEADER: remote.signature(right, "1000", "POST", "/count", body),
                },
            ),
        }
        for why, refused in refusals.items():
            assert refused.status_code == 401, why
            assert refused.json()["error"]["code"] == "unauthorized", why

        bad = orjson.dumps({"conditions": VIP, "n": 0})
        refused = await client.post("/sample", content=bad, headers=signed("/sample", bad))
        assert refused.status_code == 422
        assert refused.json()["error"]["details"] == {"field": "n"}

    elsewhere = {"segments_url": holder, "secret_key": SecretStr("not ours")}
    stranger = bootstrap.build(settings.model_copy(update=elsewhere))
    try:
        with pytest.raises(remote.SegmentsUnavailable, match="CLARION_SECRET_KEY differs"):
            await stranger.segments.count(query.parse(VIP))
    finally:
        await stranger.close()


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A loopback server that accepts connections and never answers: a holder that hangs."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


async def test_a_stopped_or_hanging_holder_is_a_quick_503_naming_it(settings: Settings, api: httpx.AsyncClient) -> None:
    await seed(api)
    stopped = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with silent_server() as hanging:
        for url, says in ((stopped, "cannot be reached"), (hanging, "did not answer in time")):
            asking = bootstrap.build(settings.model_copy(update={"segments_url": url, "segments_timeout_seconds": 1}))
            await asking.start(workers=0)  # a holder that is down does not stop the process from starting
            try:
                async with client_of(asking) as client:
                    began = time.monotonic()
                    response = await client.get("/v1/segments/vip/count")
                    assert time.monotonic() - began < 6.0  # the 1 s timeout, and slack for a loaded machine
                    assert response.status_code == 503, response.text
                    error = response.json()["error"]
                    assert error["code"] == "segments_unavailable"
                    assert says in error["message"] and url in error["message"]
                    assert error["details"]["url"] == url
                    written = await client.put("/v1/users/u99", json={"tags": ["vip"]})  # a write still succeeds
                    assert written.status_code in (200, 201), written.text
            finally:
                await asking.close()


async def test_a_campaign_fans_out_through_the_remote_audience(
    clarion: bootstrap.Clarion, asking: bootstrap.Clarion, asking_api: httpx.AsyncClient
) -> None:
    """A campaign created, approved, started and fanned out by the asking process: its audience comes from the
    holder, and exactly those users get their message. An unknown list in its audience is the same 422 as
    the local index answers."""
    await set_policies(clarion, send_windows={})
    await set_approval(clarion, levels={})
    await clarion.keys.create("ana", ("approver",), key=ANA_KEY)
    await put_template(asking_api, "promo", category="marketing", channels={"sms": {"text": "Hi, spring sale"}})
    audience = {"segment": "vip", "exclude": {"list": "winners"}}
    created = await asking_api.put("/v1/campaigns/spring", json={"template": "promo", "audience": audience})
    assert created.status_code == 201, created.text
    async with client_of(asking, ANA_KEY) as ana:
        for action, client in (("submit", asking_api), ("approve", ana), ("start", asking_api)):
            response = await client.post(f"/v1/campaigns/spring/{action}")
            assert response.status_code == 200, response.text
    while await asking.campaigns.run_once("asking-runner"):
        pass
    await drain(asking)
    sent = sorted(line["user_id"] for line in sink(asking))
    assert sent == ["u08", "u12", "u16", "u20", "u24", "u28"]

    bad = {"template": "promo", "audience": {"segment": "vip", "list": "nope"}}
    assert (await asking_api.put("/v1/campaigns/autumn", json=bad)).status_code == 201  # a draft, not yet checked
    async with client_of(clarion) as local:
        here = await local.post("/v1/campaigns/autumn/estimate")
    there = await asking_api.post("/v1/campaigns/autumn/estimate")
    assert here.status_code == 422, here.text
    assert (there.status_code, there.json()) == (here.status_code, here.json())
    assert there.json()["error"]["details"] == {"field": "audience.list"}


async def test_a_due_campaign_waits_while_the_holder_is_down(
    clarion: bootstrap.Clarion, settings: Settings, api: httpx.AsyncClient
) -> None:
    """A campaign that falls due while the holder cannot answer is not refused: no failed run, not paused; it
    starts on a later poll, once its audience can be read."""
    await seed(api)
    await set_policies(clarion, send_windows={})
    await set_approval(clarion, levels={})
    await clarion.keys.create("ana", ("approver",), key=ANA_KEY)
    await put_template(api, "promo", category="marketing", channels={"sms": {"text": "Hi, spring sale"}})
    created = await api.put("/v1/campaigns/spring", json={"template": "promo", "audience": {"segment": "vip"}})
    assert created.status_code == 201, created.text
    async with client_of(clarion, ANA_KEY) as ana:
        for action, client in (("submit", api), ("approve", ana), ("start", api)):
            response = await client.post(f"/v1/campaigns/spring/{action}")
            assert response.status_code == 200, response.text
    down = f"http://127.0.0.1:{free_port()}"
    asking = bootstrap.build(settings.model_copy(update={"segments_url": down, "segments_timeout_seconds": 1}))
    await asking.start(workers=0)
    try:
        assert await asking.campaigns.start_due() == []
    finally:
        await asking.close()
    campaign = (await api.get("/v1/campaigns/spring")).json()
    assert campaign["status"] != "paused" and not campaign.get("runs"), campaign
    assert len(await clarion.campaigns.start_due()) == 1  # the audience readable again: it starts
