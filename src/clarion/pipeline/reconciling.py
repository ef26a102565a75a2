"""Reconciliation's use cases beside the bill upload: the vendor's own daily counts, asked of its statistics API
(``channels.base.HasStatistics``: Aliyun, Tencent, Twilio), kept, and shown beside our deliveries of the same day
in the vendor's zone. ``POST /v1/reconciliation/{provider}:fetch``, ``GET /v1/reconciliation/{provider}`` and
``clarion reconcile fetch`` call them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import bootstrap
from clarion.channels import base
from clarion.domain import errors, pricing
from clarion.store import audit as audit_log
from clarion.store import costs as store
from clarion.store import records
from clarion.store import tables as t


async def account(clarion: bootstrap.Clarion, name: str) -> dict[str, Any]:
    """The stored config of account ``name`` (a built-in's: {}); 404 when there is none."""
    if name in clarion.providers.builtins:
        return {}
    row = await records.get_one(clarion.db, t.providers, name)
    if row is None:
        raise errors.NotFound("provider", name)
    return dict(row.config or {})


class NoStatistics(errors.InvalidInput):
    """The account's kind has no statistics API: its vendor's counts come from an uploaded bill."""

    def __init__(self, provider: str, kind: str) -> None:
        super().__init__(
            f"provider {provider!r}: kind {kind!r} has no statistics API; upload its bill as CSV instead",
            code="no_statistics",
            details={"field": "provider", "provider": provider, "kind": kind},
        )


class VendorFailed(errors.InvalidInput):
    """The vendor refused or failed the statistics call: 502 with its code and message."""

    status = 502


def _checked_day(day: date) -> date:
    """``day`` unless it has not begun anywhere yet (a vendor would only count it as empty)."""
    if day > (datetime.now(UTC) + timedelta(hours=14)).date():
        raise errors.InvalidInput("day: has not begun yet", details=[{"field": "day", "message": "in the future"}])
    return day


async def fetch_statistics(clarion: bootstrap.Clarion, provider: str, day: date, *, actor: str) -> dict[str, Any]:
    """Ask ``provider``'s vendor for its statistics of ``day`` (its day, in its zone), keep them in place of any
    fetched before, audited as ``statistics.fetch``, and answer them beside our deliveries of that day.
    ``NotFound`` for an unknown account, ``NoStatistics`` for a kind without a statistics API, ``VendorFailed``
    when the vendor does not answer them."""
    _checked_day(day)
    await account(clarion, provider)
    try:
        instance = await clarion.providers.get(provider)
    except errors.SendError as exc:
        raise VendorFailed(f"provider {provider!r}: {exc.message}", code="vendor_error") from None
    if not isinstance(instance, base.HasStatistics):
        raise NoStatistics(provider, instance.kind)
    try:
        found = await instance.daily_statistics(day)
    except errors.SendError as exc:
        details = {"provider": provider, "vendor_code": exc.code}
        raise VendorFailed(f"provider {provider!r}: {exc.message}", code="vendor_error", details=details) from None
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> None:
        await store.store_statistics(conn, provider, found, now)
        detail = {
            "day": day.isoformat(),
            "zone": pricing.offset_text(found.zone),
            **{name: getattr(found, name) for name in ("sent", "delivered", "failed", "billed_segments")},
            "fee": None if found.fee is None else pricing.amount(found.fee),
            "currency": found.currency,
        }
        await audit_log.record(
            conn, actor=actor, action="statistics.fetch", subject=f"provider:{provider}", at=now, detail=detail
        )

    await clarion.db.write(job)
    shown = await statistics_view(clarion, provider, day)
    assert shown is not None
    return shown


async def statistics_view(clarion: bootstrap.Clarion, provider: str, day: date) -> dict[str, Any] | None:
    """The vendor's statistics of ``provider``'s ``day`` as last fetched, beside our deliveries handed over
    within that day in the vendor's zone; None when they were never fetched."""
    async with clarion.db.read() as conn:
        stored = await store.statistics(conn, provider, day)
        if stored is None:
            return None
        found, fetched_at = stored
        start, end = pricing.zone_bounds(day, found.zone)
        ours = await store.handed_over(conn, provider, start, end)
    done = pricing.compare_day(ours, found)
    return {
        "day": day.isoformat(),
        "zone": pricing.offset_text(found.zone),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "fetched_at": fetched_at.isoformat(),
        "ours": done.ours,
        "theirs": {
            **{name: getattr(found, name) for name in ("sent", "delivered", "failed", "billed_segments")},
            "fee": None if found.fee is None else pricing.amount(found.fee),
            "currency": found.currency,
            "reported": dict(found.reported),
        },
        "differences": done.differences,
        "not_compared": done.not_compared,
    }
