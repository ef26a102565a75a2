"""No request freezes the server: while the most expensive template or condition a ``sender`` key can submit is
being handled, ``GET /healthz`` keeps answering within ``HEALTHY`` on the same ``clarion api`` process.

Each hostile request is the one from the issue that froze the server (for 3.5 s to minutes, growing with the
data): a nested ``<#list>`` testing ``-1 in data.b`` against a 600 KB list, the same for 100 recipients, and a
rule condition ``any_of(data.a, data.b)`` over lists of 10,000 objects and over a 1 MiB event. Each must also
come back with its recorded reason: the message failed with ``render_budget_exceeded`` naming the field, the
rule not matched with ``condition_budget_exceeded``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.processes import api_process

pytestmark = pytest.mark.slow

KEY = "clk_hostile_freeze_bootstrap_key_0"
HEALTHY = 0.100  # seconds: the longest /healthz may take while a hostile request runs
HOSTILE_TEMPLATE = "<#list data.o as o><#list data.a as x><#if -1 in data.b>y</#if></#list></#list>"
BODY_LIMIT = 1_048_576  # CLARION_MAX_BODY_BYTES' default


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[str]:
    """``clarion api`` as its own process on a loopback port: the loop under test is a real server's."""
    env = {
        **os.environ,
        "CLARION_DATABASE_URL": db_url,
        "CLARION_DATA_DIR": str(tmp_path / "var"),
        "CLARION_OUTBOX_DIR": str(tmp_path / "var" / "outbox"),
        "CLARION_SECRET_KEY": "hostile-freeze-secret",
        "CLARION_API_KEY": KEY,  # and the garbage collector tuned as it is by default (CLARION_TUNE_GC)
    }
    with api_process(env, tmp_path / "api.log") as base:
        yield base


@pytest.fixture
async def api(server: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=server, headers=headers, timeout=120) as client:
        yield client


@dataclass
class Probed:
    """What ``/healthz`` did while a hostile request ran, and that request's answer."""

    latencies: list[float]
    duration: float
    response: httpx.Response


async def while_probing(server: str, request: Awaitable[httpx.Response]) -> Probed:
    """Run ``request`` while polling ``/healthz`` back to back on a warm connection of its own."""
    async with httpx.AsyncClient(base_url=server, timeout=60) as probe:
        assert (await probe.get("/healthz")).status_code == 200  # connected before the clock starts
        started = time.perf_counter()
        task = asyncio.ensure_future(request)
        latencies = []
        while not task.done():
            sent = time.perf_counter()
            answer = await probe.get("/healthz")
            latencies.append(time.perf_counter() - sent)
            assert answer.status_code == 200, answer.text
            await asyncio.sleep(0.002)
        response = await task
        return Probed(latencies, time.perf_counter() - started, response)


def post(api: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Awaitable[httpx.Response]:
    payload = orjson.dumps(body)
    assert len(payload) < BODY_LIMIT
    return api.post(path, content=payload)


def list_of_size(kb: int) -> list[int]:
    """Integers whose JSON takes about ``kb`` kilobytes."""
    n = kb * 1024 // 7  # "123456," is 7 bytes
    return list(range(100_000, 100_000 + n))


def objects(n: int, offset: int = 0) -> list[list[int]]:
    """Lists of one integer: unhashable, so ``any_of`` cannot use a set and would compare every pair."""
    return [[offset + i] for i in range(n)]


def assert_healthy(probed: Probed) -> None:
    assert probed.latencies, "the hostile request ended before /healthz was asked once"
    slowest = max(probed.latencies)
    assert slowest < HEALTHY, f"/healthz took {slowest * 1000:.0f} ms while the request ran ({probed.duration:.2f} s)"


async def put(api: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
    response = await api.put(path, content=orjson.dumps(body))
    assert response.status_code in (200, 201), response.text


async def hostile_template(api: httpx.AsyncClient, users: int) -> list[str]:
    await put(
        api,
        "/v1/templates/hostile",
        {
            "name": "hostile",
            "category": "notification",
            "channels": {"inbox": {"title": "T", "body": HOSTILE_TEMPLATE}},
        },
    )
    ids = [f"u{i}" for i in range(users)]
    for user_id in ids:
        await put(api, f"/v1/users/{user_id}", {"attributes": {"name": user_id}})
    return ids


def assert_over_render_budget(response: httpx.Response, recipients: list[str]) -> None:
    assert response.status_code == 202, response.text
    messages = response.json()["messages"]
    assert sorted(m["user_id"] for m in messages) == sorted(recipients)
    for message in messages:
        assert message["status"] == "failed", message
        assert message["reason"].startswith("render_budget_exceeded: inbox.body: "), message


async def test_a_nested_list_over_a_600_kb_body_does_not_stall_healthz(server: str, api: httpx.AsyncClient) -> None:
    recipients = await hostile_template(api, 1)
    data = {"o": [0] * 99, "a": [0] * 100, "b": list_of_size(600)}  # 9,999 loop passes, each scanning b
    probed = await while_probing(
        server, post(api, "/v1/messages", {"template": "hostile", "to": recipients, "data": data})
    )
    assert_over_render_budget(probed.response, recipients)
    assert_healthy(probed)


async def test_the_same_for_100_recipients_does_not_stall_healthz(server: str, api: httpx.AsyncClient) -> None:
    recipients = await hostile_template(api, 100)
    data = {"o": [0] * 99, "a": [0] * 100, "b": list_of_size(600)}
    probed = await while_probing(
        server, post(api, "/v1/messages", {"template": "hostile", "to": recipients, "data": data})
    )
    assert_over_render_budget(probed.response, recipients)
    assert_healthy(probed)


async def any_of_rule(api: httpx.AsyncClient) -> None:
    await put(
        api,
        "/v1/templates/notice",
        {"name": "notice", "category": "notification", "channels": {"inbox": {"title": "T", "body": "B"}}},
    )
    await put(api, "/v1/users/u0", {"attributes": {"name": "u0"}})
    await put(
        api,
        "/v1/rules/overlap",
        {"event": "basket.changed", "template": "notice", "condition": "any_of(data.a, data.b)"},
    )


def assert_over_condition_budget(response: httpx.Response) -> None:
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["messages"] == []
    (outcome,) = answer["rules"]
    assert outcome["rule"] == "overlap" and outcome["matched"] is False, outcome
    assert outcome["reason"].startswith("condition_budget_exceeded: any_of()"), outcome


async def test_any_of_over_two_lists_of_10_000_objects_does_not_stall_healthz(
    server: str, api: httpx.AsyncClient
) -> None:
    await any_of_rule(api)
    data = {"a": objects(10_000), "b": objects(10_000, offset=1_000_000)}
    probed = await while_probing(
        server, post(api, "/v1/events", {"name": "basket.changed", "user_id": "u0", "data": data})
    )
    assert_over_condition_budget(probed.response)
    assert_healthy(probed)


async def test_any_of_over_a_1_mib_event_does_not_stall_healthz(server: str, api: httpx.AsyncClient) -> None:
    await any_of_rule(api)
    n = 52_000  # "[1234567]," is 10 bytes: two such lists fill the 1 MiB body limit
    data = {"a": objects(n, offset=1_000_000), "b": objects(n, offset=2_000_000)}
    body = {"name": "basket.changed", "user_id": "u0", "data": data}
    assert len(orjson.dumps(body)) > 1_000_000
    probed = await while_probing(server, post(api, "/v1/events", body))
    assert_over_condition_budget(probed.response)
    assert_healthy(probed)


async def test_a_condition_within_the_budget_still_matches(server: str, api: httpx.AsyncClient) -> None:
    """The budget stops hostile work only: the same rule over lists of 100 objects sharing one still fires."""
    await any_of_rule(api)
    data = {"a": objects(100), "b": objects(100, offset=99)}
    response = await post(api, "/v1/events", {"name": "basket.changed", "user_id": "u0", "data": data})
    assert response.status_code == 202, response.text
    (outcome,) = response.json()["rules"]
    assert outcome["matched"] is True and "reason" not in outcome, outcome
    assert len(response.json()["messages"]) == 1
