"""Delivery status notifications (RFC 3464) into receipts, for the SMTP bounce endpoint.

A mail server's bounce pipe posts the DSN as it received it: a ``multipart/report; report-type=delivery-status``
message whose second part holds per-recipient fields (``Final-Recipient``, ``Action``, ``Status``,
``Diagnostic-Code``) and whose third part returns the original message or its headers, with the ``Message-ID``
Clarion gave it (``<delivery_id@sender-domain>``: the smtp provider's message id). Systems that have parsed the
bounce already post JSON instead: ``{"message_id", "recipient", "status", "action", "diagnostic"}`` (one, or a
list). Either way the result is one receipt per recipient the report names; ``domain.receipts.bounce_event``
says what each one means.
"""

from __future__ import annotations

from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import Message
from typing import Any

import orjson

from clarion.channels import base
from clarion.domain import receipts

_FIELD_MAX = 500


def parse(body: bytes, content_type: str, message_id_of: Callable[[str], str]) -> base.ReadCallback:
    """The receipts a bounce carries; ``message_id_of(delivery_id)`` is the Message-ID a delivery was sent with
    (used when the report returns only the ``Clarion-Delivery-Id`` header). ``UnreadableCallback`` when the
    body is neither a DSN nor the JSON form."""
    if "json" in content_type:
        return _from_json(body)
    return _from_mime(body, message_id_of)


def _from_json(body: bytes) -> base.ReadCallback:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise base.UnreadableCallback("the bounce is not JSON") from None
    items = document if isinstance(document, list) else [document]
    found, ignored = [], 0
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("message_id"), str) or not item["message_id"]:
            raise base.UnreadableCallback("each bounce needs 'message_id' (the Message-ID of the mail that bounced)")
        receipt = _receipt(
            item["message_id"],
            _text(item.get("recipient")),
            _text(item.get("status")),
            _text(item.get("action")),
            _text(item.get("diagnostic")),
        )
        if receipt is None:
            ignored += 1
        else:
            found.append(receipt)
    return base.ReadCallback(found, ignored)


def _from_mime(body: bytes, message_id_of: Callable[[str], str]) -> base.ReadCallback:
    report = message_from_bytes(body, policy=policy.compat32)
    status_part, original = _parts(report)
    if status_part is None:
        raise base.UnreadableCallback("not a delivery status notification (no message/delivery-status part)")
    message_id = _original_id(original, message_id_of) if original is not None else None
    if message_id is None:
        raise base.UnreadableCallback("the report does not return the original Message-ID")
    found, ignored = [], 0
    for fields in _recipient_fields(status_part):
        receipt = _receipt(
            message_id,
            _address(fields.get("final-recipient") or fields.get("original-recipient")),
            fields.get("status"),
            fields.get("action"),
            fields.get("diagnostic-code"),
        )
        if receipt is None:
            ignored += 1
        else:
            found.append(receipt)
    return base.ReadCallback(found, ignored)


def _parts(report: Message) -> tuple[Message | None, Message | None]:
    """The delivery-status part and the returned original (a message, or its headers) of a report."""
    status_part = original = None
    for part in report.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status" and status_part is None:
            status_part = part
        elif kind in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers") and original is None:
            original = part
    return status_part, original


def _original_id(part: Message, message_id_of: Callable[[str], str]) -> str | None:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        headers: Message = payload[0]  # message/rfc822: the original, parsed
    else:
        raw = part.get_payload(decode=True)
        text = raw if isinstance(raw, bytes) else str(payload).encode()
        headers = message_from_bytes(text.lstrip(), policy=policy.compat32)
    message_id = headers.get("Message-ID")
    if message_id:
        return str(message_id).strip()[:300]
    delivery_id = headers.get("Clarion-Delivery-Id")
    return message_id_of(str(delivery_id).strip()) if delivery_id else None


def _recipient_fields(part: Message) -> list[dict[str, str]]:
    """The per-recipient field groups of a delivery-status part (the first group is the per-message one)."""
    payload = part.get_payload()
    groups: list[dict[str, str]] = []
    if isinstance(payload, list):  # the e-mail package parses each group as a block of headers
        for block in payload:
            if isinstance(block, Message):
                groups.append({k.lower(): str(v).strip() for k, v in block.items()})
    else:
        for text in str(payload).replace("\r\n", "\n").split("\n\n"):
            block = message_from_bytes(text.strip().encode(), policy=policy.compat32)
            groups.append({k.lower(): str(v).strip() for k, v in block.items()})
    return [g for g in groups if "action" in g or "status" in g]


def _receipt(
    message_id: str, recipient: str | None, status: str | None, action: str | None, diagnostic: str | None
) -> receipts.Receipt | None:
    code = (status or "").split()[0] if status else None
    event = receipts.bounce_event(code, action)
    if event is None:
        return None
    words = [w for w in (code, action, diagnostic) if w]
    detail: dict[str, Any] = {"dsn_status": code, "dsn_action": (action or "").lower() or None}
    if diagnostic:
        detail["diagnostic"] = diagnostic[:_FIELD_MAX]
    if recipient:
        detail["recipient"] = recipient
    return receipts.Receipt(
        message_id.strip()[:300],
        event,
        " ".join(words)[:_FIELD_MAX] or None,
        detail,
        recipient,
        suppress=event is receipts.Event.BOUNCED,
    )


def _address(value: str | None) -> str | None:
    """``rfc822; user@example.com`` → ``user@example.com``."""
    if not value:
        return None
    address = value.partition(";")[2] if ";" in value else value
    return address.strip().strip("<>")[:320] or None


def _text(value: Any) -> str | None:
    return str(value)[:_FIELD_MAX] if value not in (None, "") else None
