"""``clarion worker --metrics-port`` serves the Prometheus metrics of the sends it makes: in a deployment of
``clarion api`` and ``clarion worker`` processes the API runs no dispatch loop, so the delivery and provider
metrics are only in the workers."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx

from clarion import bootstrap
from tests.conftest import put_template, put_user, sink
from tests.integration.loopback import free_port
from tests.processes import worker_process


def sent_count(text: str) -> float:
    """The sum of ``clarion_deliveries_sent_total`` over its labels, in a Prometheus text page."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("clarion_deliveries_sent_total{") and 'channel="sms"' in line
    )


async def test_a_worker_serves_the_metrics_of_its_own_sends(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, tmp_path: Path
) -> None:
    await put_template(api, "notice", channels={"sms": {"text": "Your order shipped"}})
    await put_user(api, "u1", addresses={"sms": "+8613800138000"})
    settings = clarion.settings
    assert settings.secret_key is not None
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CLARION_")},
        "CLARION_DATABASE_URL": settings.database_url,
        "CLARION_DATA_DIR": str(tmp_path / "worker-var"),
        "CLARION_OUTBOX_DIR": settings.outbox_dir,
        "CLARION_SECRET_KEY": settings.secret_key.get_secret_value(),
        "CLARION_TUNE_GC": "false",
    }
    port = free_port()
    with worker_process(env, tmp_path / "worker.log", loops=1, args=["--metrics-port", str(port)]):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as scrape:
            assert sent_count((await scrape.get("/metrics")).text) == 0
            r = await api.post("/v1/messages", json={"template": "notice", "to": ["u1"]})
            assert r.status_code == 202, r.text
            deadline = time.monotonic() + 30
            while not sink(clarion):
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
                await asyncio.sleep(0.05)
            page = (await scrape.get("/metrics")).text
    assert sent_count(page) == 1
    assert "clarion_accepted_to_sent_seconds_count" in page
    assert [line["user_id"] for line in sink(clarion)] == ["u1"]
