"""The SMTP provider's list headers (one-click unsubscribe) against a real aiosmtpd server on loopback.

Checked on the raw bytes as well as the parsed message: Python's e-mail parser would decode an RFC 2047
encoded-word back into the URL, but mail clients do not decode one in ``List-Unsubscribe``, so a header that
only survives parsing would still lose the unsubscribe button.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from clarion import unsubscribe
from clarion.channels.smtp import SmtpProvider
from clarion.domain.errors import PermanentSendError
from clarion.domain.model import Channel, Outgoing
from tests.integration.loopback import free_port

LINKS = unsubscribe.links(
    "https://push.example.com",
    b"secret",
    user_id="customer-0042-with-a-long-identifier",
    category="marketing",
    channel="email",
    address="someone.with.a.long.name@mail.subdomain.example.com",
)
URL = LINKS["url"]


@dataclass
class RawHandler:
    """Keeps each accepted message as the bytes that arrived."""

    received: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(envelope.original_content or envelope.content)
        return "250 Message accepted"


@pytest.fixture
def handler() -> RawHandler:
    return RawHandler()


@pytest.fixture
def smtp_port(handler: RawHandler) -> Iterator[int]:
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def provider(port: int) -> SmtpProvider:
    config = SmtpProvider.Config(host="127.0.0.1", port=port, sender="Clarion <noreply@notify.example.com>", timeout=5)
    return SmtpProvider(config, name="smtp")


def email(n: int, headers: Any = None) -> Outgoing:
    content: dict[str, Any] = {"subject": "本周特惠", "text": "你好", "html": "<p>你好</p>"}
    if headers is not None:
        content["headers"] = headers
    return Outgoing(f"dlv-{n}", f"msg-{n}", f"u{n}", Channel.EMAIL, f"user{n}@example.com", content)


def parsed(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def test_the_one_click_unsubscribe_headers_arrive_intact(smtp_port: int, handler: RawHandler) -> None:
    assert len(URL) > 78  # long enough that the e-mail package would fold and encode it

    [result] = await provider(smtp_port).send([email(1, LINKS["headers"])])

    assert result.error is None
    [raw] = handler.received
    assert f"List-Unsubscribe: <{URL}>\r\n".encode() in raw
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw
    message = parsed(raw)
    assert message["List-Unsubscribe"] == f"<{URL}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Subject"] == "本周特惠"
    assert message.get_body(("plain",)) is not None


async def test_mail_without_headers_has_no_list_headers(smtp_port: int, handler: RawHandler) -> None:
    results = await provider(smtp_port).send([email(1), email(2, {})])

    assert [r.error for r in results] == [None, None]
    assert all(b"List-" not in raw for raw in handler.received)


async def test_header_names_are_matched_without_regard_to_case(smtp_port: int, handler: RawHandler) -> None:
    [result] = await provider(smtp_port).send([email(1, {"list-id": "Offers <offers.example.com>"})])

    assert result.error is None
    assert b"List-Id: Offers <offers.example.com>\r\n" in handler.received[0]


@pytest.mark.parametrize(
    "headers",
    [
        {"List-Unsubscribe": f"<{URL}>\r\nBcc: victim@example.com"},
        {"List-Unsubscribe": f"<{URL}>\nBcc: victim@example.com"},
        {"List-Unsubscribe": f"<{URL}>\rX: y"},
        {"List-Unsubscribe": "<https://example.com/\x00>"},
        {"List-Unsubscribe": "<https://例子.cn/u/x>"},
        {"List-Unsubscribe": ""},
        {"List-Unsubscribe": ["<https://example.com/u/x>"]},
        {"List-Unsubscribe": "<https://example.com/u/" + "x" * 1000 + ">"},
        {"List-Unsubscribe": "<https://a.example/>", "list-unsubscribe": "<https://b.example/>"},
        {"Bcc": "victim@example.com"},
        {"From": "ceo@example.com"},
        {"Content-Type": "text/html"},
        {"X-List-Unsubscribe": "<https://example.com/>"},
        {"List-Unsubscribe:Bcc": "victim@example.com"},
        ["List-Unsubscribe", "<https://example.com/>"],
    ],
)
async def test_unsafe_headers_fail_the_delivery_for_good_and_send_nothing(
    smtp_port: int, handler: RawHandler, headers: Any
) -> None:
    batch = [email(1, headers), email(2, LINKS["headers"])]

    results = await provider(smtp_port).send(batch)

    assert isinstance(results[0].error, PermanentSendError)
    assert results[0].error.code == "invalid_content"
    assert results[1].error is None  # the rest of the batch is unaffected
    [raw] = handler.received
    assert b"victim@example.com" not in raw and b"ceo@example.com" not in raw
    assert parsed(raw)["To"] == "user2@example.com"
