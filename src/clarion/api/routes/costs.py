"""``/v1/analytics/cost``, department budgets and reconciliation against the vendors' bills.

What a delivery costs comes from its provider account's ``prices`` (``PUT /v1/providers/{name}``, see
``domain.pricing``) and is kept on the delivery when it is handed over, so the report sums what was recorded
then. Reading the report, the budgets and a reconciliation needs any valid key, like the funnel; setting or
removing a budget and uploading a bill need ``admin``, and each is in the audit log (``budget.create``,
``budget.update``, ``budget.delete`` with subject ``budget:<department>``; ``bill.upload`` with
``provider:<name>``).

Reconciliation (对账) compares one account's day both ways: what we handed over, what receipts said and what we
recorded as its cost, against the vendor's bill uploaded as CSV, message by message; and, for the kinds whose
vendor has a statistics API (``channels.base.HasStatistics``: Aliyun, Tencent, Twilio), against the vendor's own
daily counts, fetched with ``POST /v1/reconciliation/{provider}:fetch`` (``admin``; audited as
``statistics.fetch`` with ``provider:<name>``). A vendor's day is its own: Aliyun and Tencent count in China time
(UTC+8), Twilio in GMT, so the statistics are compared with our deliveries handed over between that day's
midnights in the vendor's zone, while a bill's lines are compared with the UTC day.

The statistics' use cases (``pipeline.reconciling``) are shared with ``clarion reconcile fetch``."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from typing import Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.api import deps, problems, schemas, views
from clarion.domain import approval, errors, pricing
from clarion.pipeline import reconciling
from clarion.store import audit as audit_log
from clarion.store import costs as store
from clarion.store import records
from clarion.store import tables as t

router = APIRouter(prefix="/v1", tags=["costs"], dependencies=deps.AUTH)
Department = Path(min_length=1, max_length=100, pattern=r"^[^/\s][^/]*$")
ProviderName = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")
Group = Literal["department", "channel", "provider", "template", "campaign"]
Month = Query(default=None, pattern=r"^\d{4}-\d{2}$", description="YYYY-MM (UTC); default: this month")


class CostTotal(views.View):
    currency: str | None = Field(description="null: deliveries through an account with no prices")
    deliveries: int = Field(description="deliveries handed over in the month")
    segments: int = Field(description="their SMS segments (other channels count none)")
    cost: float = Field(description="their recorded cost, in the currency")


class CostGroup(CostTotal):
    key: str | None = Field(description="the group's value (null: none, e.g. a triggered send has no campaign)")


class CostReport(views.View):
    month: str
    group_by: Group
    groups: list[CostGroup]
    total: list[CostTotal] = Field(description="per currency")


class BudgetIn(schemas.Strict):
    monthly: float = Field(ge=0, description="the month's budget, at most six decimals")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217; only costs in it count against the budget")
    refuse_marketing: bool = Field(default=False, description="refuse the department's marketing once it is spent")


class Budget(views.View):
    department: str
    monthly: float
    currency: str
    refuse_marketing: bool
    month: str = Field(description="the month `spent` is for: this one (UTC)")
    spent: float = Field(description="the department's recorded cost this month, in the budget's currency")
    created_at: views.Timestamp
    updated_at: views.Timestamp


class BudgetList(views.View):
    budgets: list[Budget]


class BillUploaded(views.View):
    provider: str
    days: list[str] = Field(description="the days the bill covers; their lines replaced any uploaded before")
    lines: int


class OurSide(views.View):
    sent: int
    delivered: int
    failed: int
    segments: int
    cost: dict[str, float] = Field(description="by currency")


class TheirSide(views.View):
    lines: int
    delivered: int
    failed: int
    segments: int
    fee: dict[str, float] = Field(description="by currency ('' where the bill gave none)")


class Discrepancy(views.View):
    kind: Literal["billed_not_sent", "sent_not_billed", "status_differs", "segments_differ", "fee_differs"]
    vendor_message_id: str | None
    delivery_id: str | None = Field(description="ours; null when we have none")
    line: int | None = Field(description="the bill's line; null when it has none")
    ours: Any = Field(description="our value: a status, segments, or {amount, currency}")
    theirs: Any = Field(description="the bill's value")


class VendorCounts(views.View):
    sent: int | None = Field(description="messages the vendor took; null: not reported (so for each count)")
    delivered: int | None
    failed: int | None
    billed_segments: int | None
    fee: float | None = Field(description="in ``currency``")
    currency: str | None
    reported: dict[str, Any] = Field(description="the vendor's own counts, under its own names")


class CountDifference(views.View):
    field: Literal["sent", "delivered", "failed", "billed_segments", "fee"]
    ours: float
    theirs: float
    difference: float = Field(description="theirs − ours")
    currency: str | None = Field(description="the fee's; null for a count")


class NotCompared(views.View):
    field: str
    reason: str


class VendorStatistics(views.View):
    day: str = Field(description="the day as the vendor reckons it, in ``zone``")
    zone: str = Field(description="the vendor's reporting zone as an offset: +08:00 (Aliyun, Tencent), +00:00")
    start: views.Timestamp = Field(description="our deliveries counted were handed over from here (UTC) …")
    end: views.Timestamp = Field(description="… to here, excluded")
    fetched_at: views.Timestamp
    ours: OurSide
    theirs: VendorCounts
    differences: list[CountDifference] = Field(description="each count that differs; none: they agree")
    not_compared: list[NotCompared] = Field(description="what the vendor does not report, or cannot be compared")


class Reconciliation(views.View):
    provider: str
    day: str
    ours: OurSide
    theirs: TheirSide
    discrepancies: list[Discrepancy]
    counts: dict[str, int] = Field(description="discrepancies by kind")
    statistics: VendorStatistics | None = Field(
        description="the vendor's statistics of the day (its own day, in its zone) beside ours; null: not fetched"
    )


def _month(month: str | None) -> tuple[datetime, datetime]:
    if month is None:
        return pricing.month_bounds(pricing.month_of(datetime.now(UTC)).strftime("%Y-%m"))
    return pricing.month_bounds(month)


@router.get("/analytics/cost", response_model=CostReport, responses=problems.answers(422))
async def cost_report(clarion: deps.Services, group_by: Group = "department", month: str | None = Month) -> Any:
    """The month's deliveries handed over, their segments and recorded cost per ``group_by`` value and currency,
    and in total per currency. Department, template and campaign are the messages' (as they were accepted)."""
    start, end = _month(month)
    async with clarion.db.read() as conn:
        cells = await store.report(conn, group_by, start, end)
    totals: dict[str | None, list[int]] = {}
    for c in cells:
        total = totals.setdefault(c.currency, [0, 0, 0])
        total[0], total[1], total[2] = total[0] + c.deliveries, total[1] + c.segments, total[2] + c.cost
    return {
        "month": start.strftime("%Y-%m"),
        "group_by": group_by,
        "groups": [_cell(c) | {"key": c.key} for c in cells],
        "total": [
            {"currency": cur, "deliveries": n, "segments": s, "cost": pricing.amount(cost)}
            for cur, (n, s, cost) in sorted(totals.items(), key=lambda item: item[0] or "")
        ],
    }


def _cell(c: store.CostCell) -> dict[str, Any]:
    return {"currency": c.currency, "deliveries": c.deliveries, "segments": c.segments, "cost": pricing.amount(c.cost)}


# -- budgets ---------------------------------------------------------------------------------------------------


async def _budgets_json(conn: Any, found: list[store.Budget]) -> list[dict[str, Any]]:
    start, end = _month(None)
    used = await store.spent(conn, start, end, [b.department for b in found])
    return [
        {
            "department": b.department,
            "monthly": pricing.amount(b.monthly),
            "currency": b.currency,
            "refuse_marketing": b.refuse_marketing,
            "month": start.strftime("%Y-%m"),
            "spent": pricing.amount(used.get((b.department, b.currency), 0)),
            "created_at": b.created_at.isoformat(),
            "updated_at": b.updated_at.isoformat(),
        }
        for b in found
    ]


@router.put(
    "/budgets/{department}", response_model=Budget, responses={**views.created(Budget), **problems.answers(403)}
)
async def put_budget(
    body: BudgetIn, clarion: deps.Services, caller: deps.Caller, response: Response, department: str = Department
) -> Any:
    """Set a department's monthly budget (``admin``) — 403 ``forbidden`` otherwise. With ``refuse_marketing``,
    once the department's recorded cost this month reaches ``monthly``, its marketing messages are dropped by
    the policy stage as ``budget_exceeded`` (within seconds: the spend is kept briefly); other categories are
    never refused. Written to the audit log as ``budget.create`` or ``budget.update``."""
    approval.require(caller.roles, approval.ADMINISTER)
    values = {
        "monthly": pricing.micros(body.monthly, "monthly"),
        "currency": body.currency,
        "refuse_marketing": body.refuse_marketing,
    }
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        before = await store.budget(conn, department)
        created = await records.upsert(clarion.db, conn, t.budgets, department, values, now)
        after = {**values, "monthly": body.monthly}
        detail = audit_log.changes(store.budget_json(before) if before else {}, after)
        action = "budget.create" if created else "budget.update"
        await audit_log.record(
            conn, actor=caller.name, action=action, subject=f"budget:{department}", at=now, detail=detail
        )
        return created

    created = await clarion.db.write(job)
    clarion.policies.budgets.invalidate()
    response.status_code = 201 if created else 200
    async with clarion.db.read() as conn:
        [shown] = await _budgets_json(conn, await store.budgets(conn, [department]))
    return shown


@router.get("/budgets", response_model=BudgetList)
async def list_budgets(clarion: deps.Services) -> Any:
    """Every department's budget, by department, with what it has spent this month."""
    async with clarion.db.read() as conn:
        return {"budgets": await _budgets_json(conn, await store.budgets(conn))}


@router.delete("/budgets/{department}", status_code=204, responses=problems.answers(403, 404))
async def delete_budget(clarion: deps.Services, caller: deps.Caller, department: str = Department) -> Response:
    """Remove a department's budget (``admin``); its marketing is no longer refused. Written to the audit log as
    ``budget.delete`` with the budget as it was."""
    approval.require(caller.roles, approval.ADMINISTER)
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        return await audit_log.delete_recorded(
            conn,
            department,
            read=store.budget,
            delete=store.delete_budget,
            summary=store.budget_json,
            kind="budget",
            actor=caller.name,
            at=now,
        )

    if not await clarion.db.write(job):
        raise errors.NotFound("budget", department)
    clarion.policies.budgets.invalidate()
    return Response(status_code=204)


# -- reconciliation --------------------------------------------------------------------------------------------

_BILL = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {
                "schema": {
                    "type": "string",
                    "description": "a header line, then one line per message; columns (any of the names): "
                    + "; ".join(f"{c}: {', '.join(names)}" for c, names in pricing.BILL_COLUMNS.items()),
                }
            }
        },
    }
}


class NotCsv(errors.InvalidInput):
    status = 415


_VENDOR_FAILED: dict[int | str, dict[str, Any]] = {
    502: {"model": problems.ErrorBody, "description": "the vendor refused or failed the call"}
}


@router.post(
    "/reconciliation/{provider}:fetch",
    response_model=VendorStatistics,
    responses={**problems.answers(403, 404, 422), **_VENDOR_FAILED},
)
async def fetch_vendor_statistics(
    clarion: deps.Services,
    caller: deps.Caller,
    day: date = Query(
        description="the day as the vendor reckons it: China time for Aliyun and Tencent, GMT for Twilio"
    ),
    provider: str = ProviderName,
) -> Any:
    """Ask the account's vendor for its statistics of ``day`` and keep them (``admin``), replacing any fetched
    before for that day; answered beside our deliveries of the same day in the vendor's zone, as ``GET
    /v1/reconciliation/{provider}`` then shows them. Aliyun: ``QuerySendStatistics`` (sent, delivered, failed);
    Tencent: ``SendStatusStatistics`` and ``CallbackStatusStatistics`` (sent, delivered, failed, billed
    segments); Twilio: the daily ``sms-outbound`` usage record (sent, billed segments, fee; nothing of delivery).
    404 for an unknown account, 422 ``no_statistics`` for a kind without a statistics API, 502 ``vendor_error``
    with the vendor's message when it refuses or fails. Written to the audit log as ``statistics.fetch``."""
    approval.require(caller.roles, approval.ADMINISTER)
    return await reconciling.fetch_statistics(clarion, provider, day, actor=caller.name)


@router.post(
    "/reconciliation/{provider}",
    status_code=201,
    openapi_extra=_BILL,
    response_model=BillUploaded,
    responses=problems.answers(403, 404, 415, 422),
)
async def upload_bill(
    request: Request,
    clarion: deps.Services,
    caller: deps.Caller,
    provider: str = ProviderName,
    day: date | None = Query(default=None, description="the day of lines without a sent_at column"),
) -> Any:
    """Upload an account's bill (``admin``): a text/csv body, a header line naming the columns — the vendor's
    message id and the status are needed; recipient, segments, fee (in the currency's units), currency and the
    send time (its date is the line's day; else ``day``) are read when present. Aliyun's and Tencent's field
    names and the Chinese export headers are accepted (see the body's schema). Statuses: success / fail /
    pending in the vendors' words (``3``/``2``/``1`` for Aliyun's SendStatus, 成功/失败 …). A fee without a
    currency is in the account's price currency. The lines replace those uploaded before for the same days.
    422 ``invalid_bill`` naming the line and column of the first fault; nothing is stored then. Written to the
    audit log as ``bill.upload``."""
    approval.require(caller.roles, approval.ADMINISTER)
    content_type = request.headers.get("content-type", "").lower()
    if not content_type.startswith(("text/csv", "text/plain")):
        raise NotCsv("body: send the bill as text/csv", code="unsupported_media_type", details={"field": "body"})
    config = await reconciling.account(clarion, provider)
    try:
        text = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise errors.InvalidInput("body: not UTF-8 text", code="invalid_bill", details={"field": "body"}) from None
    prices = config.get(store.PRICES)
    currency = prices.get("currency") if isinstance(prices, dict) else None
    lines = pricing.read_bill(text, day=day, currency=currency)
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> list[date]:
        days = await store.store_bill(conn, provider, lines, now)
        detail = {"days": [d.isoformat() for d in days], "lines": len(lines)}
        await audit_log.record(
            conn, actor=caller.name, action="bill.upload", subject=f"provider:{provider}", at=now, detail=detail
        )
        return days

    days = await clarion.db.write(job)
    return {"provider": provider, "days": [d.isoformat() for d in days], "lines": len(lines)}


@router.get("/reconciliation/{provider}", response_model=Reconciliation, responses=problems.answers(404, 422))
async def reconciliation(clarion: deps.Services, day: date, provider: str = ProviderName) -> Any:
    """One account's day (UTC) both ways: our deliveries handed over (how many, delivered and failed by their
    receipts, segments, recorded cost) against the uploaded bill's lines, and every delivery that differs:
    ``billed_not_sent``, ``sent_not_billed``, ``status_differs`` (delivered against failed; no receipt yet is
    not a difference), ``segments_differ``, ``fee_differs`` (against the cost we recorded). Messages matched
    by the vendor's message id; one the other side has on the day before or after is not a discrepancy.
    ``statistics``: the vendor's counts of ``day`` as last fetched (``POST …:fetch``), beside our deliveries of
    that day in the vendor's zone, with each count that differs (sent, delivered, failed, billed segments, fee)."""
    await reconciling.account(clarion, provider)
    async with clarion.db.read() as conn:
        ours, theirs, elsewhere, billed_elsewhere = await store.reconciliation_sides(conn, provider, day)
    done = pricing.reconcile(ours, theirs, elsewhere=elsewhere, billed_elsewhere=billed_elsewhere)
    counts: dict[str, int] = {}
    for d in done.discrepancies:
        counts[d.kind] = counts.get(d.kind, 0) + 1
    return {
        "provider": provider,
        "day": day.isoformat(),
        "ours": done.ours,
        "theirs": done.theirs,
        "discrepancies": [dataclasses.asdict(d) for d in done.discrepancies],
        "counts": counts,
        "statistics": await reconciling.statistics_view(clarion, provider, day),
    }
