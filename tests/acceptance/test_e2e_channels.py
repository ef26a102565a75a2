"""Every outside channel end to end: the HTTP API → outbox → dispatcher → a real server on loopback.

Providers are configured through ``PUT /v1/providers/{name}``, messages sent through ``POST /v1/messages``,
and what happened is read back from ``GET /v1/messages/{id}`` — the same path an operator takes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from clarion import bootstrap
from clarion.channels.webhook import verify
from tests.conftest import drain, put_template, put_user
from tests.integration.loopback import LoopbackServer, Recorded, Reply, free_port

PHONE = "+8613800138000"


# -- helpers ---------------------------------------------------------------------------------------------


async def put_provider(api: httpx.AsyncClient, name: str, channel: str, kind: str, config: dict[str, Any]) -> None:
    response = await api.put(f"/v1/providers/{name}", json={"channel": channel, "kind": kind, "config": config})
    assert response.status_code in (200, 201), response.text


async def send_one(api: httpx.AsyncClient, template: str, user: str, data: dict[str, Any] | None = None) -> str:
    response = await api.post("/v1/messages", json={"template": template, "to": user, "data": data or {}})
    assert response.status_code == 202, response.text
    [message] = response.json()["messages"]
    assert message["status"] == "queued", message
    return message["id"]


async def message(api: httpx.AsyncClient, message_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/messages/{message_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def only_delivery(api: httpx.AsyncClient, message_id: str) -> dict[str, Any]:
    [delivery] = (await message(api, message_id))["deliveries"]
    return delivery


def statuses(delivery: dict[str, Any]) -> list[str]:
    return [e["status"] for e in delivery["timeline"]]


async def drain_until_final(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, message_id: str, *, within: float = 15
) -> dict[str, Any]:
    """Drain, waiting out backoffs, until the message's one delivery is sent or failed (bounded)."""
    deadline = time.monotonic() + within
    while True:
        await drain(clarion)
        delivery = await only_delivery(api, message_id)
        if delivery["status"] in ("sent", "failed"):
            return delivery
        assert time.monotonic() < deadline, f"delivery never finished: {delivery}"
        await asyncio.sleep(0.02)


# -- email over SMTP ---------------------------------------------------------------------------------------


@dataclass
class SmtpRecorder:
    received: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted"


@pytest.fixture
def smtp_server() -> Iterator[tuple[SmtpRecorder, int]]:
    recorder = SmtpRecorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield recorder, port
    finally:
        controller.stop()


async def test_email_through_smtp_reaches_the_server(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, smtp_server: tuple[SmtpRecorder, int]
) -> None:
    recorder, port = smtp_server
    config = {"host": "127.0.0.1", "port": port, "sender": "Clarion <no-reply@example.com>", "timeout": 5}
    await put_provider(api, "mail", "email", "smtp", config)
    await put_user(api, "u1", attributes={"name": "李雷"}, addresses={"email": "li.lei@example.com"})
    await put_template(
        api,
        "shipped",
        channels={
            "email": {
                "subject": "您的订单 {data.order} 已发货",
                "text": "你好 {name}，订单 {data.order} 已发货。",
                "html": "<p>你好 <b>{name}</b>，订单 {data.order} 已发货。</p>",
            }
        },
    )
    message_id = await send_one(api, "shipped", "u1", {"order": "A-1001"})

    assert await drain(clarion) == 1

    [(mail_from, rcpt_tos, mail)] = recorder.received
    assert mail_from == "no-reply@example.com"
    assert rcpt_tos == ["li.lei@example.com"]
    assert str(mail["Subject"]) == "您的订单 A-1001 已发货"
    assert str(mail["To"]) == "li.lei@example.com"
    assert "no-reply@example.com" in str(mail["From"])
    text, html = mail.get_body(("plain",)), mail.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().strip() == "你好 李雷，订单 A-1001 已发货。"
    assert html.get_content().strip() == "<p>你好 <b>李雷</b>，订单 A-1001 已发货。</p>"

    detail = await message(api, message_id)
    assert detail["status"] == "sent"
    [delivery] = detail["deliveries"]
    assert delivery["id"] in str(mail["Message-ID"])
    assert str(mail["Clarion-Delivery-Id"]) == delivery["id"]
    assert (delivery["status"], delivery["provider"], delivery["attempts"]) == ("sent", "mail", 1)
    assert delivery["provider_message_id"] == str(mail["Message-ID"]) == f"<{delivery['id']}@example.com>"
    assert statuses(delivery) == ["queued", "sending", "sent"]


# -- signed webhooks ---------------------------------------------------------------------------------------


async def test_webhook_is_signed_and_carries_the_delivery_id(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    verdicts: list[bool] = []

    def check(request: Recorded) -> Reply:
        ok = verify(
            "s3cret",
            request.headers.get("Clarion-Timestamp", ""),
            request.body,
            request.headers.get("Clarion-Signature", ""),
        )
        verdicts.append(ok)
        return Reply(200, {"ok": True}, headers={"X-Request-Id": "rq-77"}) if ok else Reply(401, {"error": "bad sig"})

    async with LoopbackServer(handler=check) as server:
        config = {"secret": "s3cret", "allow_private_networks": True, "timeout": 5}
        await put_provider(api, "hooks", "webhook", "webhook", config)
        await put_user(api, "u1", attributes={"name": "Li"}, addresses={"webhook": f"{server.url}/hooks/u1"})
        await put_template(
            api,
            "order-hook",
            channels={
                "webhook": {
                    "body": {
                        "event": "order.shipped",
                        "order": "{data.order}",
                        "greeting": "你好 {name}",
                        "items": [{"sku": "{data.sku}", "qty": 2}],
                        "final": True,
                    }
                }
            },
        )
        message_id = await send_one(api, "order-hook", "u1", {"order": "A-1", "sku": "SKU-9"})
        assert await drain(clarion) == 1

    [request] = server.requests
    assert verdicts == [True]
    assert (request.method, request.path) == ("POST", "/hooks/u1")
    assert request.headers["Content-Type"] == "application/json"
    # the signature really depends on the secret and the body
    timestamp, signature = request.headers["Clarion-Timestamp"], request.headers["Clarion-Signature"]
    assert not verify("another-secret", timestamp, request.body, signature)
    assert not verify("s3cret", timestamp, request.body + b" ", signature)
    assert request.json() == {
        "event": "order.shipped",
        "order": "A-1",
        "greeting": "你好 Li",
        "items": [{"sku": "SKU-9", "qty": 2}],
        "final": True,
    }
    delivery = await only_delivery(api, message_id)
    assert request.headers.getall("Clarion-Delivery-Id") == [delivery["id"]]
    assert (delivery["status"], delivery["provider"], delivery["provider_message_id"]) == (
        "delivered",
        "hooks",
        "rq-77",
    )
    assert statuses(delivery) == ["queued", "sending", "sent", "delivered"]


async def test_default_webhook_provider_refuses_loopback(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    async with LoopbackServer() as server:
        await put_user(api, "u1", addresses={"webhook": f"{server.url}/internal"})
        await put_template(api, "hook", channels={"webhook": {"body": {"x": 1}}})
        message_id = await send_one(api, "hook", "u1")
        assert await drain(clarion) == 1

    assert server.requests == []
    detail = await message(api, message_id)
    assert detail["status"] == "failed"
    [delivery] = detail["deliveries"]
    assert (delivery["status"], delivery["provider"], delivery["attempts"]) == ("failed", "webhook", 1)
    assert "url_not_allowed" in delivery["last_error"]
    assert delivery["last_error"].startswith("permanent:")
    assert statuses(delivery) == ["queued", "sending", "failed"]
    assert "url_not_allowed" in delivery["timeline"][-1]["reason"]


# -- a JSON-over-HTTP SMS vendor ---------------------------------------------------------------------------


async def sms_setup(api: httpx.AsyncClient, url: str) -> None:
    config = {"url": f"{url}/v1/sms", "allow_private_networks": True, "message_id_path": "data.id", "timeout": 5}
    await put_provider(api, "vendor", "sms", "sms_http", config)
    await put_user(api, "u1", addresses={"sms": PHONE})
    await put_template(
        api, "code", category="verification", priority="urgent", channels={"sms": {"text": "验证码 {data.code}"}}
    )


async def test_sms_vendor_429_then_200_is_retried_and_sent(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    script = (Reply(429, headers={"Retry-After": "1"}), Reply(200, {"data": {"id": "v-1"}}))
    async with LoopbackServer(*script) as server:
        await sms_setup(api, server.url)
        message_id = await send_one(api, "code", "u1", {"code": "4711"})

        assert await drain(clarion) == 1
        delivery = await only_delivery(api, message_id)
        assert (delivery["status"], delivery["attempts"]) == ("queued", 1)
        assert "http_429" in delivery["last_error"]
        assert statuses(delivery) == ["queued", "sending", "queued"]
        retry_reason = delivery["timeline"][-1]["reason"]
        assert retry_reason.startswith("retry in ") and "after attempt 1" in retry_reason and "http_429" in retry_reason
        # Retry-After: 1 is honoured up to retry_max_seconds (0.5 s in the suite's settings)
        run_at = datetime.fromisoformat(delivery["run_at"])
        assert run_at > datetime.now(UTC)
        assert (await message(api, message_id))["status"] == "queued"

        assert await drain(clarion) == 0  # not due yet: the backoff holds it back
        await asyncio.sleep(max(0.0, (run_at - datetime.now(UTC)).total_seconds()) + 0.05)
        assert await drain(clarion) == 1

    first, second = server.requests
    assert first.json() == second.json() == {"to": PHONE, "text": "验证码 4711"}
    delivery = await only_delivery(api, message_id)
    assert first.headers["Clarion-Delivery-Id"] == second.headers["Clarion-Delivery-Id"] == delivery["id"]
    assert (delivery["status"], delivery["attempts"], delivery["provider_message_id"]) == ("sent", 2, "v-1")
    assert delivery["last_error"] is None
    assert statuses(delivery) == ["queued", "sending", "queued", "sending", "sent"]
    assert (await message(api, message_id))["status"] == "sent"


async def test_sms_vendor_400_fails_at_once(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    async with LoopbackServer(Reply(400, {"error": "invalid number"})) as server:
        await sms_setup(api, server.url)
        message_id = await send_one(api, "code", "u1", {"code": "1"})
        assert await drain(clarion) == 1
        await asyncio.sleep(0.2)  # longer than any backoff: a retry, if one had been scheduled, would be due
        assert await drain(clarion) == 0

    assert len(server.requests) == 1
    detail = await message(api, message_id)
    assert detail["status"] == "failed"
    [delivery] = detail["deliveries"]
    assert (delivery["status"], delivery["attempts"]) == ("failed", 1)
    assert delivery["last_error"].startswith("permanent: http_400")
    assert "invalid number" in delivery["last_error"]
    assert statuses(delivery) == ["queued", "sending", "failed"]


async def test_sms_vendor_always_503_fails_after_max_attempts(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    max_attempts = clarion.settings.max_attempts
    assert max_attempts == 3
    async with LoopbackServer(default=Reply(503, {"error": "busy"})) as server:
        await sms_setup(api, server.url)
        message_id = await send_one(api, "code", "u1", {"code": "2"})
        delivery = await drain_until_final(api, clarion, message_id)

    assert len(server.requests) == max_attempts
    assert len({r.headers["Clarion-Delivery-Id"] for r in server.requests}) == 1
    assert (delivery["status"], delivery["attempts"]) == ("failed", max_attempts)
    assert delivery["last_error"].startswith("attempts exhausted: http_503")
    assert statuses(delivery) == ["queued"] + ["sending", "queued"] * (max_attempts - 1) + ["sending", "failed"]
    assert "attempts exhausted" in delivery["timeline"][-1]["reason"]
    assert (await message(api, message_id))["status"] == "failed"
