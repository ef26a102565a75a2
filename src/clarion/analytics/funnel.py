"""The funnel: which stage a timeline event stands for, and the rates the product brief defines.

Pure: the store (``store.rollups``) counts events into rollups by these rules, and the API reads them back.

A stage is counted once per delivery — the first time the delivery reaches it — except ``requested``, which is
counted once per message (a message is what the user perceives; its deliveries are its channels). Stages:

* ``requested`` — a message accepted (its ``accepted`` event, which names no delivery);
* ``filtered`` (by the policy that decided), ``deferred``, ``expired``, ``failed``;
* ``sent``, then ``delivered`` or ``undelivered``/``bounced`` from the vendor's receipt;
* ``opened`` (status ``read``: an inbox item read, a push opened in the app, an e-mail's open pixel fetched),
  ``clicked`` (a short link), ``converted`` (the template's goal event after it), ``unsubscribed`` (through the
  message's unsubscribe link). A delivery opened or clicked with no receipt before was ``delivered`` all the
  same, and is counted there too; a late receipt that changes nothing (its status kept) counts nowhere.

Rates, each with its numerator and denominator (the brief, 001 全链路数据洞察):
到达率 delivery rate = delivered / sent; 点击率 click rate = clicked / delivered; 转化率 conversion rate =
converted / clicked; plus open rate = opened / delivered and unsubscribe rate = unsubscribed / delivered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

STAGES = (
    "requested",
    "filtered",
    "deferred",
    "expired",
    "failed",
    "sent",
    "delivered",
    "undelivered",
    "bounced",
    "opened",
    "clicked",
    "converted",
    "unsubscribed",
)

#: the delivery statuses whose first event is that stage (``accepted`` is ``requested`` only message-level)
STAGE_OF_STATUS = {s: s for s in STAGES if s not in ("requested", "opened")} | {"read": "opened"}

#: stages a delivery can be recorded at more than once (deferred again at dispatch, two links clicked, a second
#: goal event): counting them once needs a look at the delivery's earlier events
REPEATABLE = frozenset({"deferred", "opened", "clicked", "converted", "unsubscribed"})

#: what ``group_by`` takes, and the rollup column behind each (``day``/``hour`` are the bucket)
GROUPS = {
    "day": "bucket",
    "hour": "bucket",
    "channel": "channel",
    "variant": "variant",
    "provider": "provider",
    "template": "template_key",
    "campaign": "campaign_key",
    "department": "department",
    "category": "category",
    "version": "template_version",
    "run": "campaign_run",
}


def stage_of(event: Mapping[str, Any]) -> tuple[str, str] | None:
    """The stage a timeline event stands for, and the policy that decided it ('' unless filtered or deferred);
    ``None`` for events that are not a funnel stage (queued, sending, a retry, a re-send's own acceptance)."""
    status = event["status"]
    if event.get("delivery_id") is None:
        if status == "accepted":
            return "requested", ""
        return None
    stage = STAGE_OF_STATUS.get(status)
    if stage is None:
        return None
    detail = event.get("detail")
    if isinstance(detail, Mapping) and "status_kept" in detail:
        return None  # a late receipt noted, the status kept: nothing newly reached
    policy = ""
    if stage in ("filtered", "deferred") and isinstance(detail, Mapping) and isinstance(detail.get("policy"), str):
        policy = detail["policy"]
    return stage, policy


def implied_stages(event: Mapping[str, Any]) -> list[str]:
    """The stages an event reached on the way without an event of their own: a push read, an e-mail opened or a
    link clicked straight after ``sent`` was ``delivered`` (``detail.implies``, from ``domain.receipts``)."""
    detail = event.get("detail")
    implies = detail.get("implies") if isinstance(detail, Mapping) else None
    if not isinstance(implies, list) or event.get("delivery_id") is None:
        return []
    return [STAGE_OF_STATUS[s] for s in implies if s in STAGE_OF_STATUS]


def amount_of(event: Mapping[str, Any]) -> float:
    """The value a conversion carries (``detail.amount``), else 0."""
    detail = event.get("detail")
    if event["status"] == "converted" and isinstance(detail, Mapping):
        value = detail.get("amount")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return 0.0


RATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "delivery_rate": ("delivered", ("sent",)),
    "open_rate": ("opened", ("delivered",)),
    "click_rate": ("clicked", ("delivered",)),
    "conversion_rate": ("converted", ("clicked",)),
    "unsubscribe_rate": ("unsubscribed", ("delivered",)),
}


def rates(counts: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """Each rate with its numerator and denominator; the rate is ``None`` when the denominator is 0."""
    out: dict[str, dict[str, Any]] = {}
    for name, (top, bottom) in RATES.items():
        numerator = counts.get(top, 0)
        denominator = sum(counts.get(s, 0) for s in bottom)
        value = round(numerator / denominator, 6) if denominator else None
        out[name] = {"rate": value, "numerator": numerator, "denominator": denominator}
    return out


def report(cells: Iterable[Any], group_by: Sequence[str]) -> dict[str, Any]:
    """The funnel answer from a rollup's sums (rows with the group columns, ``stage``, ``policy``, ``n`` and
    ``revenue``): per group and in total, the count at each stage, the filtered and deferred split by the
    policy that decided, the revenue of conversions, and the rates with their numerators and denominators."""
    # each distinct value of a group column is turned into its answer's form once (an hour-by-week answer reads
    # thousands of cells but has 168 hours), and the total is summed from the groups, not cell by cell
    shown: list[dict[Any, Any]] = [{} for _ in group_by]
    groups: dict[tuple[Any, ...], _Tally] = {}
    for row in cells:
        parts = []
        for index, group in enumerate(group_by):
            value = getattr(row, group)
            known = shown[index]
            if value in known:
                parts.append(known[value])
            else:
                parts.append(known.setdefault(value, _group_value(group, value)))
        key = tuple(parts)
        tally = groups.get(key)
        if tally is None:
            tally = groups[key] = _Tally()
        tally.add(row.stage, row.policy, int(row.n), float(row.revenue or 0.0))
    total = _Tally()
    for tally in groups.values():
        total.merge(tally)
    ordered = sorted(groups.items(), key=lambda item: tuple("" if v is None else str(v) for v in item[0]))
    return {
        "group_by": list(group_by),
        "groups": [{"key": dict(zip(group_by, key, strict=True)), **tally.view()} for key, tally in ordered],
        "total": total.view(),
    }


def _group_value(group: str, value: Any) -> Any:
    if group == "day":
        return value.date().isoformat()
    if group == "hour":
        return value.isoformat()
    return value or None  # '' in the rollup: none (a message-level count has no channel or provider)


class _Tally:
    __slots__ = ("by_policy", "counts", "revenue")

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(STAGES, 0)
        self.by_policy: dict[str, dict[str, int]] = {"filtered": {}, "deferred": {}}
        self.revenue = 0.0

    def add(self, stage: str, policy: str, n: int, revenue: float) -> None:
        self.counts[stage] = self.counts.get(stage, 0) + n
        if stage in self.by_policy:
            split = self.by_policy[stage]
            split[policy or "unknown"] = split.get(policy or "unknown", 0) + n
        self.revenue += revenue

    def merge(self, other: _Tally) -> None:
        for stage, n in other.counts.items():
            self.counts[stage] = self.counts.get(stage, 0) + n
        for stage, split in other.by_policy.items():
            mine = self.by_policy[stage]
            for policy, n in split.items():
                mine[policy] = mine.get(policy, 0) + n
        self.revenue += other.revenue

    def view(self) -> dict[str, Any]:
        return {
            "stages": self.counts,
            "filtered_by": dict(sorted(self.by_policy["filtered"].items())),
            "deferred_by": dict(sorted(self.by_policy["deferred"].items())),
            "revenue": round(self.revenue, 4),
            "rates": rates(self.counts),
        }
