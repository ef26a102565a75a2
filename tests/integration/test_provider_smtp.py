"""The SMTP provider against a real aiosmtpd server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller

from clarion.channels.smtp import SmtpProvider
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, Outgoing
from tests.integration.loopback import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    peer: object
    message: EmailMessage


@dataclass
class RecordingHandler:
    """Stores every accepted envelope; ``replies`` scripts an RCPT answer per recipient address."""

    replies: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    stall_data: float = 0.0  # seconds to sit on DATA before answering

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.replies:
            return self.replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.stall_data:
            await asyncio.sleep(self.stall_data)
        message = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), session.peer, message))
        return "250 Message accepted"


@pytest.fixture
def handler() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
def smtp_port(handler: RecordingHandler) -> Iterator[int]:
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def provider(port: int, sender: str = "Clarion 通知 <noreply@notify.example.com>") -> SmtpProvider:
    config = SmtpProvider.Config(host="127.0.0.1", port=port, sender=sender, timeout=5)
    return SmtpProvider(config, name="smtp")


def email(n: int, address: str | None = None, **content: str) -> Outgoing:
    return Outgoing(
        delivery_id=f"dlv-{n}",
        message_id=f"msg-{n}",
        user_id=f"u{n}",
        channel=Channel.EMAIL,
        address=address or f"user{n}@example.com",
        content=content or {"subject": "您的订单已发货", "text": "你好,世界", "html": "<p>你好,<b>世界</b></p>"},
    )


async def test_sends_a_proper_mime_message(smtp_port: int, handler: RecordingHandler) -> None:
    results = await provider(smtp_port).send([email(1)])

    assert results[0].error is None
    assert results[0].provider_message_id == "<dlv-1@notify.example.com>"
    [got] = handler.received
    assert got.mail_from == "noreply@notify.example.com"
    assert got.rcpt_tos == ["user1@example.com"]
    message = got.message
    assert message["Subject"] == "您的订单已发货"
    assert str(message["From"]) == "Clarion 通知 <noreply@notify.example.com>"
    assert message["To"] == "user1@example.com"
    assert "dlv-1" in message["Message-ID"]
    assert message["Message-ID"] == results[0].provider_message_id
    assert message["Clarion-Delivery-Id"] == "dlv-1"
    assert message["Date"].datetime is not None
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and plain.get_content().strip() == "你好,世界"
    assert html is not None and html.get_content().strip() == "<p>你好,<b>世界</b></p>"


async def test_html_only_and_text_only(smtp_port: int, handler: RecordingHandler) -> None:
    batch = [email(1, subject="s1", html="<i>only html</i>"), email(2, subject="s2", text="only text")]
    results = await provider(smtp_port).send(batch)

    assert [r.error for r in results] == [None, None]
    first, second = (r.message for r in handler.received)
    assert first.get_content_type() == "text/html" and "only html" in first.get_content()
    assert second.get_content_type() == "text/plain" and "only text" in second.get_content()


async def test_one_connection_per_batch_and_550_fails_only_that_delivery(
    smtp_port: int, handler: RecordingHandler
) -> None:
    handler.replies["gone@example.com"] = "550 5.1.1 <gone@example.com>: Recipient address rejected"
    batch = [email(1), email(2, "gone@example.com"), email(3)]
    results = await provider(smtp_port).send(batch)

    assert [r.delivery_id for r in results] == ["dlv-1", "dlv-2", "dlv-3"]
    assert results[0].error is None and results[2].error is None
    error = results[1].error
    assert isinstance(error, PermanentSendError)
    assert error.code == "smtp_550"
    assert results[1].provider_message_id is None
    assert [r.rcpt_tos for r in handler.received] == [["user1@example.com"], ["user3@example.com"]]
    assert len({r.peer for r in handler.received}) == 1  # same client socket for the whole batch


async def test_451_is_transient(smtp_port: int, handler: RecordingHandler) -> None:
    handler.replies["busy@example.com"] = "451 4.3.0 Try again later"
    results = await provider(smtp_port).send([email(1, "busy@example.com"), email(2)])

    error = results[0].error
    assert isinstance(error, TransientSendError)
    assert error.code == "smtp_451"
    assert results[1].error is None
    assert len(handler.received) == 1


async def test_closed_port_is_transient_for_every_delivery() -> None:
    results = await provider(free_port()).send([email(1), email(2)])

    assert [r.delivery_id for r in results] == ["dlv-1", "dlv-2"]
    for result in results:
        assert isinstance(result.error, TransientSendError)
        assert result.error.code == "smtp_connect"


async def test_a_timeout_mid_batch_is_transient_for_the_rest(smtp_port: int, handler: RecordingHandler) -> None:
    handler.stall_data = 1.5
    config = SmtpProvider.Config(host="127.0.0.1", port=smtp_port, sender="noreply@example.com", timeout=0.3)
    results = await SmtpProvider(config, name="smtp").send([email(1), email(2), email(3)])

    assert [r.delivery_id for r in results] == ["dlv-1", "dlv-2", "dlv-3"]
    for result in results:
        assert isinstance(result.error, TransientSendError)
        assert result.error.code == "smtp_connection"


async def test_content_without_a_body_is_permanent(smtp_port: int, handler: RecordingHandler) -> None:
    results = await provider(smtp_port).send([email(1, subject="nothing else"), email(2)])

    assert isinstance(results[0].error, PermanentSendError)
    assert results[0].error.code == "invalid_content"
    assert results[1].error is None
    assert len(handler.received) == 1


@pytest.mark.parametrize("username", ["", None])
async def test_an_empty_username_is_no_login(smtp_port: int, handler: RecordingHandler, username: str | None) -> None:
    """The loopback server offers no AUTH: a password without a username is not a reason to try to log in."""
    config = SmtpProvider.Config(
        host="127.0.0.1", port=smtp_port, sender="noreply@example.com", username=username, password="pw", timeout=5
    )
    [result] = await SmtpProvider(config, name="smtp").send([email(1)])

    assert result.error is None
    assert [r.rcpt_tos for r in handler.received] == [["user1@example.com"]]


async def test_a_username_to_a_server_without_auth_is_a_misconfigured_account(
    smtp_port: int, handler: RecordingHandler
) -> None:
    config = SmtpProvider.Config(
        host="127.0.0.1", port=smtp_port, sender="noreply@example.com", username="me", password="pw", timeout=5
    )
    [result] = await SmtpProvider(config, name="smtp").send([email(1)])

    assert isinstance(result.error, PermanentSendError) and result.error.misconfigured
    assert result.error.code == "smtp_no_auth"
    assert handler.received == []


def test_config_rules() -> None:
    assert SmtpProvider.Config.secret_fields == frozenset({"password", "bounce_token"})
    assert SmtpProvider.Config(host="h", sender="a@b.example").port == 25
    with pytest.raises(ValueError, match="exclusive"):
        SmtpProvider.Config(host="h", sender="a@b.example", starttls=True, use_tls=True)
    with pytest.raises(ValueError, match="sender"):
        SmtpProvider.Config(host="h", sender="no address here")
