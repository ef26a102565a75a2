"""What support reads: a delivery's timeline in sentences, and addresses masked for whoever may not see them.

The pipeline writes each status change with a reason for engineers (``quiet_hours: … deferred until …``) and a
``detail`` with the policy and its parameters. Here the detail, not the reason's English, makes the sentence, in
the reader's language; a change this does not know is shown as its status and reason as written."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Gettext = Callable[[str], str]


def _local(at: str, zone: str) -> str:
    try:
        return datetime.fromisoformat(at).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")
    except (ValueError, ZoneInfoNotFoundError):
        return at


def _duration(seconds: float, _: Gettext) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return _("{n} h").format(n=int(seconds // 3600))
    if seconds >= 60:
        return _("{n} min").format(n=round(seconds / 60))
    return _("{n} s").format(n=int(seconds))


def _policy(event: Mapping[str, Any], _: Gettext) -> str | None:
    detail = event.get("detail") or {}
    policy, status = detail.get("policy"), event["status"]
    if policy == "quiet_hours" and status == "deferred" and detail.get("next_open"):
        zone = detail.get("timezone", "UTC")
        return _("Held by quiet hours until {time} {zone}").format(time=_local(detail["next_open"], zone), zone=zone)
    if policy == "quiet_hours":
        return _("Dropped: outside the sending window ({reason})").format(reason=event.get("reason") or "")
    if policy == "dedup":
        window = _duration(float(detail.get("window_seconds", 0)), _)
        if detail.get("basis") == "business key":
            return _("Filtered: a message with the same business key reached this user within {window}").format(
                window=window
            )
        return _("Filtered: the same content reached this user within {window}").format(window=window)
    if policy == "consent":
        return _("Filtered: the user has not consented or turned this off")
    if policy == "suppression":
        return _("Filtered: the address is on the suppression list")
    if policy == "keywords":
        return _("Filtered: the content contains a blocked keyword")
    if policy == "caps":
        return _("Filtered: a frequency cap was reached")
    if policy == "safety_valve":
        return _("Filtered: the safety valve's ceiling for this user was reached")
    return None


def sentence(event: Mapping[str, Any], delivery: Mapping[str, Any], _: Gettext) -> str:
    """One timeline entry of ``delivery`` as a sentence in the catalogue's language."""
    explained = _policy(event, _)
    if explained is not None:
        return explained
    status, reason = event["status"], event.get("reason") or ""
    detail = event.get("detail") or {}
    provider = delivery.get("provider") or ""
    if status == "accepted" and detail.get("resend_of"):
        return _("Re-sent at the request of {who}: {reason}").format(who=detail.get("by", ""), reason=detail["reason"])
    if status == "accepted":
        return _("Accepted")
    if status == "delivered":
        return _("Delivered, receipt from {provider}").format(provider=provider)
    if status == "sent":
        return _("Sent through {provider}, waiting for the receipt").format(provider=provider)
    if status == "failed":
        return _("Failed: {reason}").format(reason=reason)
    if status == "undelivered":
        return _("Not delivered, the provider reported: {reason}").format(reason=reason)
    if status == "expired":
        return _("Expired before it could be sent: {reason}").format(reason=reason)
    if status == "queued":
        return _("Queued: {reason}").format(reason=reason) if reason else _("Queued for sending")
    return f"{status}: {reason}" if reason else status


def masked(address: Any) -> str:
    """An address with its middle hidden: a phone keeps its first 3 and last 4 digits (``138****8000``, the
    country code left out), an e-mail its first letter and domain (``u***@example.com``), a token its ends."""
    if isinstance(address, list):
        return ", ".join(masked(a) for a in address)
    if isinstance(address, dict):
        address = address.get("token") or address.get("endpoint") or ""
    text = str(address)
    if "@" in text:
        local, _, domain = text.partition("@")
        return f"{local[:1]}***@{domain}"
    if text.startswith("+86") and len(text) == 14:
        text = text[3:]
    if len(text) <= 7:
        return "*" * len(text)
    return f"{text[:3]}****{text[-4:]}"
