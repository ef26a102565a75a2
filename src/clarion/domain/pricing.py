"""What a delivery costs: a provider account's prices, money as integer micro-units, months and budgets.

Money is never a float inside Clarion: an amount is read from its decimal text into micro-units (millionths
of the currency unit, ``0.045`` → ``45_000``), summed as integers, and turned back into a number only when it
is shown. Vendors price SMS to at most four decimals, so six leave room and no rounding happens anywhere.

A price is per message, or per SMS segment (a long text billed as several, ``domain.sms``), optionally per
country calling code (the ``86`` of ``+86…``), falling back to ``default``. A delivery's cost is worked out
once, when it is handed to the provider, and kept on the delivery: a later price change applies from then on.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Literal

from clarion.domain import errors, routing

__all__ = [
    "MICROS",
    "Prices",
    "amount",
    "currency",
    "day_bounds",
    "micros",
    "month_bounds",
    "month_of",
    "parse",
]

MICROS = 1_000_000
#: the most a price or a budget may be, in the currency's units: with six decimals that is 15 digits, which a JSON
#: number (a double) carries exactly, so a price stored in a config reads back as it was given
MAX_AMOUNT = Decimal(10) ** 9
Unit = Literal["message", "segment"]
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, slots=True)
class Prices:
    """One provider account's price table, amounts in micro-units."""

    currency: str
    unit: Unit
    default: int | None  # None: only the numbers of ``countries`` are priced
    countries: Mapping[str, int] = field(default_factory=dict)  # calling code without "+" → price

    def cost(self, segments: int | None, address: Any) -> int | None:
        """The cost of one delivery to ``address`` billed as ``segments`` (None: one); None when unpriced."""
        price = self.default
        if self.countries:
            code = routing.calling_code(address)
            if code is not None:
                price = self.countries.get(code[1:], price)
        if price is None:
            return None
        return price * max(segments or 1, 1) if self.unit == "segment" else price

    def to_json(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "unit": self.unit,
            "default": None if self.default is None else amount(self.default),
            "countries": {code: amount(p) for code, p in sorted(self.countries.items())},
        }


def micros(value: Any, field: str) -> int:
    """``value`` (a JSON number or decimal text) in micro-units; ``InvalidInput`` naming ``field`` if it is not
    an amount ≥ 0 with at most six decimals. The decimal text is read, not the float, so 0.1 is 100_000."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _invalid(field, "must be a number")
    try:
        exact = Decimal(str(value).strip())
    except InvalidOperation:
        raise _invalid(field, "must be a number") from None
    if not exact.is_finite() or exact < 0 or exact > MAX_AMOUNT:
        raise _invalid(field, f"must be between 0 and {MAX_AMOUNT}")
    scaled = exact * MICROS
    if scaled != scaled.to_integral_value():
        raise _invalid(field, "at most six decimals")
    return int(scaled)


def amount(value: int) -> float:
    """Micro-units as the number the API shows."""
    return value / MICROS


def currency(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _CURRENCY.match(value):
        raise _invalid(field, "an ISO 4217 code in capitals, e.g. CNY")
    return value


def parse(document: Any, field: str = "config.prices") -> Prices:
    """A price table as the API takes it: ``{"currency", "unit": "message"|"segment", "default", "countries":
    {"86": 0.045}}``; ``InvalidInput`` naming the first field at fault (``config.prices.countries.86``)."""
    if not isinstance(document, Mapping):
        raise _invalid(field, "must be an object")
    unknown = sorted(set(document) - {"currency", "unit", "default", "countries"})
    if unknown:
        raise _invalid(f"{field}.{unknown[0]}", "unknown field (currency, unit, default, countries)")
    unit = document.get("unit", "message")
    if unit not in ("message", "segment"):
        raise _invalid(f"{field}.unit", "message or segment")
    given = document.get("default")
    default = None if given is None else micros(given, f"{field}.default")
    countries: dict[str, int] = {}
    listed = document.get("countries")
    listed = {} if listed is None else listed
    if not isinstance(listed, Mapping):
        raise _invalid(f"{field}.countries", "must be an object of calling code → price")
    for code, price in listed.items():
        digits = str(code).removeprefix("+")
        if not digits.isdigit() or not routing.is_calling_code("+" + digits):
            raise _invalid(f"{field}.countries.{code}", "not a country calling code (86, 1, 44 …)")
        countries[digits] = micros(price, f"{field}.countries.{code}")
    if default is None and not countries:
        raise _invalid(f"{field}.default", "a price is needed: default, or countries")
    return Prices(currency(document.get("currency"), f"{field}.currency"), unit, default, countries)


def month_bounds(month: str, field: str = "month") -> tuple[datetime, datetime]:
    """The UTC start of the month ``YYYY-MM`` and of the next one."""
    found = _MONTH.match(month)
    if found is None or not 1 <= int(found.group(2)) <= 12 or not 2000 <= int(found.group(1)) < 9999:
        raise _invalid(field, "a month as YYYY-MM")
    year, number = int(found.group(1)), int(found.group(2))
    start = datetime(year, number, 1, tzinfo=UTC)
    return start, datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)


def month_of(at: datetime) -> datetime:
    """The UTC start of the month ``at`` is in."""
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The UTC start of ``day`` and of the next one."""
    if day == date.max:
        raise _invalid("day", "a day before 9999-12-31")
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, datetime.fromordinal(day.toordinal() + 1).replace(tzinfo=UTC)


def _invalid(field: str, message: str) -> errors.InvalidInput:
    return errors.InvalidInput(f"{field}: {message}", details=[{"field": field, "message": message}])


# -- vendors' bills and reconciliation (对账) ---------------------------------------------------------------------

#: the columns a bill upload may have, each under any of its names (compared in lower case, spaces as ``_``):
#: ours, the field names of Aliyun's QuerySendDetails and Tencent's PullSmsSendStatus / SendStatus, Twilio's
#: message resource, and the Chinese headers of the vendors' console exports. Tencent's own ``Fee`` counts billed
#: segments, not money: name that column ``segments`` (计费条数) in the upload.
BILL_COLUMNS: dict[str, tuple[str, ...]] = {
    "vendor_message_id": ("vendor_message_id", "message_id", "bizid", "serialno", "sid", "回执id", "流水号", "消息id"),
    "recipient": (
        "recipient",
        "phone",
        "phone_number",
        "phonenum",
        "phonenumber",
        "mobile",
        "to",
        "手机号码",
        "手机号",
    ),
    "status": ("status", "sendstatus", "reportstatus", "发送状态", "回执状态", "状态"),
    "segments": ("segments", "billed_segments", "numsegments", "num_segments", "计费条数", "条数"),
    "fee": ("fee", "cost", "amount", "price", "费用", "金额", "消费金额"),
    "currency": ("currency", "price_unit", "币种"),
    "sent_at": ("sent_at", "send_time", "senddate", "date_sent", "sent", "day", "date", "发送时间", "提交时间"),
}
REQUIRED_COLUMNS = ("vendor_message_id", "status")
#: a vendor's status, as written in its bill, read as ours: delivered, failed, or pending (no receipt yet).
#: Aliyun's SendStatus is 1 waiting, 2 failed, 3 delivered; Tencent's ReportStatus SUCCESS or FAIL.
VENDOR_STATUSES: dict[str, str] = {
    **dict.fromkeys(("delivered", "success", "succeeded", "delivrd", "3", "成功", "发送成功", "接收成功"), "delivered"),
    **dict.fromkeys(("failed", "fail", "failure", "undelivered", "rejected", "2", "失败", "发送失败"), "failed"),
    **dict.fromkeys(("pending", "waiting", "sent", "unknown", "1", "等待回执", "发送中"), "pending"),
}
#: our statuses of a delivery handed over, as a bill's: it reached the user, it did not, no receipt yet
OUR_OUTCOMES: dict[str, str] = {
    **dict.fromkeys(("delivered", "read", "opened", "clicked", "converted"), "delivered"),
    **dict.fromkeys(("undelivered", "bounced", "failed", "expired"), "failed"),
}


@dataclass(frozen=True, slots=True)
class BillLine:
    line: int
    day: date
    vendor_message_id: str
    recipient: str | None
    status: str  # delivered | failed | pending
    vendor_status: str | None
    segments: int | None
    fee: int | None  # micro-units of ``currency``
    currency: str | None


@dataclass(frozen=True, slots=True)
class SentDelivery:
    """One of our deliveries handed to the account, as reconciling reads it."""

    id: str
    vendor_message_id: str | None
    address: Any
    status: str
    segments: int | None
    cost: int | None
    currency: str | None


@dataclass(frozen=True, slots=True)
class Discrepancy:
    kind: str  # billed_not_sent | sent_not_billed | status_differs | segments_differ | fee_differs
    vendor_message_id: str | None
    delivery_id: str | None = None
    line: int | None = None
    ours: Any = None
    theirs: Any = None


def read_bill(text: str, *, day: date | None, currency: str | None) -> list[BillLine]:
    """A bill's CSV (a header line, then one line per message) as lines; ``day`` is the day of lines without a
    ``sent_at`` column, ``currency`` that of fees without one. ``InvalidInput`` (``invalid_bill``) names the
    line and column of the first fault."""
    rows = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    try:
        return _read_rows(rows, day, currency)
    except csv.Error as exc:
        raise _bill_error(rows.line_num, "line", f"not CSV: {exc}") from None


def _read_rows(rows: Any, day: date | None, currency: str | None) -> list[BillLine]:
    header = next(rows, None)
    if header is None:
        raise _bill_error(1, "header", "the bill is empty: a header line is needed")
    names = {alias: canonical for canonical, aliases in BILL_COLUMNS.items() for alias in aliases}
    columns: dict[str, int] = {}
    for index, title in enumerate(header):
        canonical = names.get(title.strip().lower().replace(" ", "_"))
        if canonical is not None and canonical not in columns:
            columns[canonical] = index
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise _bill_error(1, missing[0], f"no {missing[0]} column (accepted: {', '.join(BILL_COLUMNS[missing[0]])})")
    if "sent_at" not in columns and day is None:
        raise _bill_error(1, "sent_at", "no sent_at column: give the bill's day as ?day=YYYY-MM-DD")
    lines = []
    for number, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise _bill_error(number, "line", f"{len(row)} fields where the header has {len(header)}")
        lines.append(_bill_line(number, {c: row[i].strip() for c, i in columns.items()}, day, currency))
    return lines


def _bill_line(number: int, cells: dict[str, str], day: date | None, fallback: str | None) -> BillLine:
    vendor_id = cells["vendor_message_id"]
    if not vendor_id:
        raise _bill_error(number, "vendor_message_id", "empty")
    written = cells["status"]
    status = VENDOR_STATUSES.get(written.lower())
    if status is None:
        raise _bill_error(number, "status", f"{written!r} is not a known status (success, fail, 成功, 失败 …)")
    if cells.get("sent_at"):
        try:
            day = date.fromisoformat(cells["sent_at"][:10].replace("/", "-"))
        except ValueError:
            raise _bill_error(number, "sent_at", "a date (YYYY-MM-DD, optionally with its time)") from None
    if day is None:
        raise _bill_error(number, "sent_at", "empty: the line's day is not known")
    segments = None
    if cells.get("segments"):
        if not cells["segments"].isdigit() or not 0 < int(cells["segments"]) < 1000:
            raise _bill_error(number, "segments", "a whole number from 1")
        segments = int(cells["segments"])
    fee = None
    if cells.get("fee"):
        try:
            fee = micros(cells["fee"], "fee")
        except errors.InvalidInput as exc:
            raise _bill_error(number, "fee", exc.details[0]["message"]) from None
    line_currency = fallback
    if cells.get("currency"):
        try:
            line_currency = currency(cells["currency"], "currency")
        except errors.InvalidInput as exc:
            raise _bill_error(number, "currency", exc.details[0]["message"]) from None
    recipient = cells.get("recipient") or None
    return BillLine(number, day, vendor_id, recipient, status, written, segments, fee, line_currency)


def _bill_error(line: int, column: str, message: str) -> errors.InvalidInput:
    return errors.InvalidInput(
        f"line {line}: {column}: {message}",
        code="invalid_bill",
        details=[{"field": "body", "line": line, "column": column, "message": message}],
    )


@dataclass(frozen=True, slots=True)
class Reconciliation:
    ours: dict[str, Any]
    theirs: dict[str, Any]
    discrepancies: list[Discrepancy]


def reconcile(
    ours: Sequence[SentDelivery],
    theirs: Sequence[BillLine],
    *,
    elsewhere: Sequence[SentDelivery] = (),
    billed_elsewhere: Collection[str] = (),
) -> Reconciliation:
    """One account's day, both sides: our deliveries handed over that day (``ours``) against the bill's lines
    for it (``theirs``), matched by the vendor's message id. ``elsewhere`` are our deliveries of other days that
    the bill names, ``billed_elsewhere`` the vendor ids of ours billed on other days: neither side is a
    discrepancy for a message the other side has on the next or previous day.

    Each difference is one discrepancy: billed but not sent by us, sent by us but not billed, a status that
    differs (both final: delivered against failed), segments that differ, a fee that differs from the cost we
    recorded (both known, in the same currency)."""
    by_id = {o.vendor_message_id: o for o in [*elsewhere, *ours] if o.vendor_message_id}
    found: list[Discrepancy] = []
    billed: set[str] = set()
    for line in theirs:
        billed.add(line.vendor_message_id)
        mine = by_id.get(line.vendor_message_id)
        if mine is None:
            found.append(Discrepancy("billed_not_sent", line.vendor_message_id, None, line.line, None, line.status))
            continue
        found.extend(_differences(mine, line))
    for mine in ours:
        vendor_id = mine.vendor_message_id
        if vendor_id not in billed and vendor_id not in billed_elsewhere:
            found.append(Discrepancy("sent_not_billed", vendor_id, mine.id, None, mine.status, None))
    return Reconciliation(_our_totals(ours), _their_totals(theirs), found)


def _differences(mine: SentDelivery, line: BillLine) -> list[Discrepancy]:
    out = []
    vendor_id, outcome, segments = line.vendor_message_id, OUR_OUTCOMES.get(mine.status, "pending"), mine.segments or 1
    if "pending" not in (outcome, line.status) and outcome != line.status:
        out.append(Discrepancy("status_differs", vendor_id, mine.id, line.line, outcome, line.status))
    if line.segments is not None and line.segments != segments:
        out.append(Discrepancy("segments_differ", vendor_id, mine.id, line.line, segments, line.segments))
    same_currency = line.currency in (None, mine.currency)
    if line.fee is not None and mine.cost is not None and same_currency and line.fee != mine.cost:
        ours, theirs = ({"amount": amount(fee), "currency": mine.currency} for fee in (mine.cost, line.fee))
        out.append(Discrepancy("fee_differs", vendor_id, mine.id, line.line, ours, theirs))
    return out


def _our_totals(ours: Sequence[SentDelivery]) -> dict[str, Any]:
    cost: dict[str, int] = {}
    for o in ours:
        if o.cost is not None and o.currency is not None:
            cost[o.currency] = cost.get(o.currency, 0) + o.cost
    return {
        "sent": len(ours),
        "delivered": sum(1 for o in ours if OUR_OUTCOMES.get(o.status) == "delivered"),
        "failed": sum(1 for o in ours if OUR_OUTCOMES.get(o.status) == "failed"),
        "segments": sum(o.segments or 1 for o in ours),
        "cost": {c: amount(v) for c, v in sorted(cost.items())},
    }


def _their_totals(theirs: Sequence[BillLine]) -> dict[str, Any]:
    fee: dict[str, int] = {}
    for line in theirs:
        if line.fee is not None:
            key = line.currency or ""
            fee[key] = fee.get(key, 0) + line.fee
    return {
        "lines": len(theirs),
        "delivered": sum(1 for line in theirs if line.status == "delivered"),
        "failed": sum(1 for line in theirs if line.status == "failed"),
        "segments": sum(line.segments or 1 for line in theirs),
        "fee": {c: amount(v) for c, v in sorted(fee.items())},
    }


# -- vendors' daily statistics (their statistics APIs) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VendorDay:
    """One account's day as the vendor's statistics API counts it (``channels.base.HasStatistics``): how many
    messages it took, delivered and failed by their receipts, the segments it billed and the fee, each None where
    the vendor does not say. ``zone`` is where the vendor's day is reckoned (Aliyun and Tencent: China time,
    UTC+8; Twilio: UTC): the day runs from midnight there. ``reported`` keeps the vendor's own counts by its own
    names, so what was read can be checked against the vendor's console."""

    day: date
    zone: timezone
    sent: int | None
    delivered: int | None
    failed: int | None
    billed_segments: int | None
    fee: int | None  # micro-units of ``currency``
    currency: str | None
    reported: Mapping[str, Any] = field(default_factory=dict)


def zone_bounds(day: date, zone: timezone) -> tuple[datetime, datetime]:
    """The UTC instants at which ``day`` starts and ends in ``zone``."""
    start, end = day_bounds(day)
    return start.replace(tzinfo=zone).astimezone(UTC), end.replace(tzinfo=zone).astimezone(UTC)


def offset_text(zone: timezone) -> str:
    """``+08:00``, ``+00:00``: a fixed zone as it is shown."""
    minutes = int((zone.utcoffset(None) or timedelta()).total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def vendor_amount(text: Any) -> int:
    """A money amount as a vendor's API writes it (``"3.52"``, ``0.0079``, Twilio's signed prices) in micro-units
    of its size, rounded half-even to six decimals; ``ValueError`` when it is not a number."""
    try:
        exact = abs(Decimal(str(text).strip()))
    except InvalidOperation:
        raise ValueError(f"not an amount: {text!r}") from None
    if not exact.is_finite():
        raise ValueError(f"not an amount: {text!r}")
    return int((exact * MICROS).to_integral_value(rounding=ROUND_HALF_EVEN))


#: the counts compared, as (the field the answer names, the vendor's count, ours)
COMPARED = (
    ("sent", "sent", "sent"),
    ("delivered", "delivered", "delivered"),
    ("failed", "failed", "failed"),
    ("billed_segments", "billed_segments", "segments"),
)


@dataclass(frozen=True, slots=True)
class DayComparison:
    """Our deliveries of the vendor's day beside its statistics: what differs, and what could not be compared."""

    ours: dict[str, Any]
    theirs: VendorDay
    differences: list[dict[str, Any]]
    not_compared: list[dict[str, str]]


def compare_day(ours: Sequence[SentDelivery], theirs: VendorDay) -> DayComparison:
    """``ours`` (our deliveries handed to the account within the vendor's day, ``zone_bounds``) against the
    vendor's counts of it: each count that differs is one difference ``{field, ours, theirs, difference,
    currency}`` (difference = theirs − ours). A count the vendor does not report is not compared, nor a fee
    while some of ours are unpriced or priced in another currency than the vendor's."""
    totals = _our_totals(ours)
    differences: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for name, vendor_field, our_field in COMPARED:
        vendor_count = getattr(theirs, vendor_field)
        if vendor_count is None:
            skipped.append({"field": name, "reason": "the vendor's statistics do not report it"})
        elif vendor_count != totals[our_field]:
            mine = totals[our_field]
            difference = vendor_count - mine
            differences.append(
                {"field": name, "ours": mine, "theirs": vendor_count, "difference": difference, "currency": None}
            )
    if theirs.fee is None or theirs.currency is None:
        skipped.append({"field": "fee", "reason": "the vendor's statistics do not report it"})
    elif any(o.cost is None or o.currency != theirs.currency for o in ours):
        skipped.append({"field": "fee", "reason": f"some of our deliveries are not priced in {theirs.currency}"})
    else:
        cost = sum(o.cost or 0 for o in ours)
        if cost != theirs.fee:
            differences.append(
                {
                    "field": "fee",
                    "ours": amount(cost),
                    "theirs": amount(theirs.fee),
                    "difference": amount(theirs.fee - cost),
                    "currency": theirs.currency,
                }
            )
    return DayComparison(totals, theirs, differences, skipped)
