"""``GET /v1/providers/{name}/health`` over real vendors on loopback, and a misconfigured account (an SMTP server
offering no AUTH while credentials are configured) opening its breaker at once: the mail goes to the route's
other account, not failed, and no attempt is spent on the wall."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from clarion import bootstrap
from tests.conftest import drain, put_template, put_user
from tests.integration.loopback import LoopbackServer, Reply, free_port
from tests.integration.test_routing_dispatch import quiet, sms_account, until_settled, users


class Accepting:
    def __init__(self) -> None:
        self.received: list[list[str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(list(envelope.rcpt_tos))
        return "250 Message accepted"


@pytest.fixture
def smtp() -> Iterator[tuple[Accepting, int]]:
    handler, port = Accepting(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)  # offers no AUTH
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


async def test_health_shows_outcomes_latency_breaker_and_last_errors(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    assert (await api.get("/v1/providers/nobody/health")).status_code == 404
    idle = (await api.get("/v1/providers/file/health")).json()
    assert idle["attempts"] == 0 and idle["breaker"]["state"] == "closed" and idle["success_rate"] is None

    async with LoopbackServer(Reply(200, {"message_id": "m"}), default=Reply(503, {"error": "busy"})) as vendor:
        await sms_account(api, "vendor", vendor.url)
        await quiet(clarion)
        await put_template(api, "code", channels={"sms": {"text": "code {n}"}})
        recipients = await users(api, 6)
        await api.post("/v1/messages", json={"template": "code", "to": recipients, "data": {"n": 1}})
        await drain(clarion)

    response = await api.get("/v1/providers/vendor/health")
    assert response.status_code == 200, response.text
    view = response.json()
    assert (view["attempts"], view["succeeded"], view["transient"], view["permanent"]) == (6, 1, 5, 0)
    assert view["success_rate"] == pytest.approx(1 / 6)
    assert view["latency_p50"] > 0 and view["latency_p99"] >= view["latency_p50"]
    assert view["breaker"]["state"] == "open"
    assert view["breaker"]["reason"].startswith("5 transient failures in a row: http_503")
    assert len(view["last_errors"]) == 5 and view["last_errors"][-1]["kind"] == "transient"
    metrics = (await api.get("/metrics")).text
    assert 'clarion_provider_breaker_state{provider="vendor"} 2.0' in metrics
    assert 'clarion_provider_outcomes_total{kind="transient",provider="vendor"} 5.0' in metrics


async def test_a_misconfigured_account_opens_its_breaker_at_once_and_mail_goes_elsewhere(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, smtp: tuple[Accepting, int]
) -> None:
    handler, port = smtp
    base = {"host": "127.0.0.1", "port": port, "sender": "Clarion <no-reply@example.com>", "timeout": 5}
    for name, config in {"wrong": {**base, "username": "me", "password": "pw"}, "right": base}.items():
        body = {"channel": "email", "kind": "smtp", "config": config}
        assert (await api.put(f"/v1/providers/{name}", json=body)).status_code == 201
    route = {"channel": "email", "providers": [{"name": "wrong", "weight": 1000}, {"name": "right", "weight": 1}]}
    assert (await api.put("/v1/routes/email", json=route)).status_code == 201
    await quiet(clarion)
    await put_user(api, "u1", addresses={"email": "u1@example.com"})
    await put_template(api, "hello", channels={"email": {"subject": "hi", "text": "hello"}})
    response = await api.post("/v1/messages", json={"template": "hello", "to": ["u1"]})
    message_id = response.json()["messages"][0]["id"]
    clarion.providers.rand.seed(3)
    await until_settled(clarion)

    [delivery] = (await api.get(f"/v1/messages/{message_id}")).json()["deliveries"]
    assert (delivery["status"], delivery["provider"], delivery["attempts"]) == ("sent", "right", 1), delivery
    assert handler.received == [["u1@example.com"]]
    view = (await api.get("/v1/providers/wrong/health")).json()
    assert view["breaker"]["state"] == "open"
    assert view["breaker"]["reason"].startswith("misconfigured: smtp_no_auth: credentials are configured")
    assert view["attempts"] == 1 and view["permanent"] == 1
