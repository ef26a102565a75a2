"""Delivery status notifications (RFC 3464) as mail servers write them, read into receipts (``channels.dsn``)."""

from __future__ import annotations

import pytest

from clarion.channels import base, dsn
from clarion.domain.receipts import Event

MESSAGE_ID = "<01J9ZX8Q3V5W7Y9A1B3C5D7E9F@notify.example.com>"


def message_id_of(delivery_id: str) -> str:
    return f"<{delivery_id}@notify.example.com>"


def report(*recipients: str, original: str | None = None, returned: str = "text/rfc822-headers") -> bytes:
    """A DSN laid out as Postfix's bounce daemon writes it: a human part, the delivery-status part (one
    per-message group, then one group per recipient), and the returned headers of the original."""
    original = original or (
        f"Message-ID: {MESSAGE_ID}\r\nClarion-Delivery-Id: 01J9ZX8Q3V5W7Y9A1B3C5D7E9F\r\n"
        "From: Clarion <noreply@notify.example.com>\r\nTo: li.lei@example.com\r\nSubject: Your order\r\n"
    )
    groups = "\r\n".join(recipients)
    return (
        "From: MAILER-DAEMON@mx.example.com (Mail Delivery System)\r\n"
        "To: noreply@notify.example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B0UND"\r\n'
        "\r\n"
        "--B0UND\r\n"
        "Content-Description: Notification\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        "This is the mail system at host mx.example.com.\r\n"
        "I'm sorry to have to inform you that your message could not be delivered.\r\n"
        "\r\n"
        "--B0UND\r\n"
        "Content-Description: Delivery report\r\n"
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        "Reporting-MTA: dns; mx.example.com\r\n"
        "X-Postfix-Queue-ID: 4Xy1Zq2AbCz\r\n"
        "Arrival-Date: Tue,  1 Dec 2026 10:00:00 +0000 (UTC)\r\n"
        "\r\n"
        f"{groups}"
        "\r\n"
        "--B0UND\r\n"
        "Content-Description: Undelivered Message Headers\r\n"
        f"Content-Type: {returned}\r\n"
        "\r\n"
        f"{original}"
        "\r\n"
        "--B0UND--\r\n"
    ).encode()


HARD = (
    "Final-Recipient: rfc822; li.lei@example.com\r\n"
    "Original-Recipient: rfc822;li.lei@example.com\r\n"
    "Action: failed\r\n"
    "Status: 5.1.1\r\n"
    "Remote-MTA: dns; mail.example.com\r\n"
    "Diagnostic-Code: smtp; 550 5.1.1 <li.lei@example.com>: Recipient address rejected: User unknown\r\n"
)
SOFT = (
    "Final-Recipient: rfc822; han.meimei@example.com\r\n"
    "Action: delayed\r\n"
    "Status: 4.4.1\r\n"
    "Diagnostic-Code: X-Postfix; connect to mail.example.com[203.0.113.9]:25: Connection timed out\r\n"
)


def test_a_hard_bounce_is_bounced_with_the_address_and_the_server_s_words() -> None:
    read = dsn.parse(report(HARD), "message/rfc822", message_id_of)
    [receipt] = read.receipts
    assert (receipt.provider_message_id, receipt.event, receipt.address) == (
        MESSAGE_ID,
        Event.BOUNCED,
        "li.lei@example.com",
    )
    assert receipt.suppress
    assert receipt.reason is not None and receipt.reason.startswith("5.1.1 failed smtp; 550 5.1.1")
    assert receipt.detail["dsn_status"] == "5.1.1"
    assert "User unknown" in receipt.detail["diagnostic"]


def test_each_recipient_of_a_report_is_one_receipt_and_a_delay_suppresses_nothing() -> None:
    read = dsn.parse(report(HARD, SOFT), "multipart/report", message_id_of)
    hard, soft = read.receipts
    assert (hard.event, soft.event) == (Event.BOUNCED, Event.DELAYED)
    assert soft.address == "han.meimei@example.com" and not soft.suppress


def test_a_report_returning_the_whole_message_is_read_the_same() -> None:
    original = f"Message-ID: {MESSAGE_ID}\r\nSubject: Your order\r\n\r\nHello\r\n"
    [receipt] = dsn.parse(report(HARD, original=original, returned="message/rfc822"), "", message_id_of).receipts
    assert receipt.provider_message_id == MESSAGE_ID


def test_without_a_message_id_the_clarion_delivery_id_names_the_mail() -> None:
    original = "Clarion-Delivery-Id: dlv-7\r\nSubject: Your order\r\n"
    [receipt] = dsn.parse(report(HARD, original=original), "message/rfc822", message_id_of).receipts
    assert receipt.provider_message_id == "<dlv-7@notify.example.com>"


def test_relayed_and_expanded_are_left_out() -> None:
    relayed = "Final-Recipient: rfc822; x@example.com\r\nAction: relayed\r\nStatus: 2.0.0\r\n"
    read = dsn.parse(report(relayed), "message/rfc822", message_id_of)
    assert (read.receipts, read.ignored) == ([], 1)


def test_the_json_form_one_or_a_list() -> None:
    one = b'{"message_id": "<a@x>", "recipient": "a@example.com", "status": "5.7.1", "action": "failed"}'
    [receipt] = dsn.parse(one, "application/json", message_id_of).receipts
    assert (receipt.event, receipt.address, receipt.suppress) == (Event.BOUNCED, "a@example.com", True)
    many = b'[{"message_id": "<a@x>", "status": "4.2.2", "diagnostic": "mailbox full"}, {"message_id": "<b@x>"}]'
    read = dsn.parse(many, "application/json", message_id_of)
    assert [r.event for r in read.receipts] == [Event.DELAYED]
    assert read.ignored == 1


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"not json", "application/json"),
        (b'{"recipient": "a@example.com"}', "application/json"),
        (b"Subject: hello\r\n\r\njust a mail\r\n", "message/rfc822"),
        (report(HARD, original="Subject: no ids\r\n"), "message/rfc822"),
    ],
)
def test_what_is_not_a_bounce_is_unreadable(body: bytes, content_type: str) -> None:
    with pytest.raises(base.UnreadableCallback):
        dsn.parse(body, content_type, message_id_of)
