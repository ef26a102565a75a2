"""Intake gives the event loop back while it composes a large request: 100 messages whose renders each spend a
whole budget (a few milliseconds) must not hold the loop for their sum. Composing is measured on its own through
``prepare_campaign_batch``, which plans, screens and renders a batch without writing it."""

from __future__ import annotations

import asyncio
import itertools
import time

from clarion import bootstrap
from clarion.pipeline import intake
from tests.conftest import put_template, put_user

HOSTILE = "<#list data.o as o><#list data.a as x><#if -1 in data.b>y</#if></#list></#list>"
LONGEST_HOLD = 0.050  # seconds; 100 renders at a few ms each would hold the loop for several hundred


async def test_composing_100_renders_over_budget_gives_the_loop_back(api, clarion: bootstrap.Clarion) -> None:
    await put_template(api, "hostile", category="notification", channels={"inbox": {"title": "T", "body": HOSTILE}})
    users = [f"u{i}" for i in range(100)]
    for user_id in users:
        await put_user(api, user_id)
    template = await clarion.intake.catalog.template("hostile")
    assert template is not None
    data = {"o": [0] * 99, "a": [0] * 100, "b": list(range(90_000))}
    batch = intake.CampaignBatch("c", "run-1", template, list(template.channels), users, data)

    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0)

    beating = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    prepared = await clarion.intake.prepare_campaign_batch(batch)
    ended = time.perf_counter()
    beating.cancel()

    assert prepared.tally.failed == {"render_budget_exceeded": 100}
    beats = [started, *(t for t in ticks if started < t < ended), ended]
    longest = max(b - a for a, b in itertools.pairwise(beats))
    assert longest < LONGEST_HOLD, f"the loop was held {longest * 1000:.0f} ms of {(ended - started) * 1000:.0f} ms"
    assert ended - started > LONGEST_HOLD  # the work itself is long: only pausing keeps the holds short
