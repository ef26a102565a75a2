"""The generated timeline behind ``bench/analytics.py``: messages, their deliveries and the timeline events of 30
days of a plausible Clarion, written the way intake writes them (``db.Inserts``: messages and deliveries, then
their events through ``rollups.append``, which counts the funnel rollups in the same transaction).

The model: 50 templates (verification, transactional, notification and marketing; five departments; each with
variants ``a``/``b``, every fifth at version 2 from day 15), each on one or two channels and each channel on one
to three weighted providers; traffic follows the hour of the day (a night trough, a late-morning and an evening
peak); four campaigns run 10:00-14:00 every few days and send most marketing then. Per delivery: 4 % filtered
(by caps, quiet hours, consent, suppression or dedup), 2 % deferred by quiet hours first, 1.5 % failed, the rest
sent; of the sent 92 % delivered and 4 % undelivered (bounced, for e-mail); of the delivered a quarter opened
(inbox, push, e-mail), 8 % clicked (one in ten twice), 0.3 % of marketing unsubscribed; 18 % of clicks convert,
with an amount. The queued/sending events between those are left out: they are no funnel stage and only make
the timeline longer. ``cells`` counts a chunk's rollup cells without the timeline being written. ``Tally``
keeps the exact count of each stage as generated, to check the funnel against.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from clarion.analytics import funnel
from clarion.domain import ids
from clarion.store import outbox

START = datetime(2026, 11, 1, tzinfo=UTC)
DAYS = 30
END = START + timedelta(days=DAYS)
SEED = 20261101

_HOUR_WEIGHT = (2, 1, 1, 1, 1, 2, 4, 7, 9, 10, 11, 11, 10, 9, 9, 9, 9, 10, 11, 12, 12, 10, 7, 4)
_CATEGORIES = (
    ("verification", "urgent", ("sms",)),
    ("transactional", "high", ("sms", "email", "push", "inbox")),
    ("notification", "normal", ("push", "inbox", "wechat")),
    ("marketing", "low", ("sms", "push", "email")),
)
_DEPARTMENTS = ("account", "trade", "logistics", "member", "growth")
PROVIDERS = {
    "sms": (("aliyun-sms", 6), ("tencent-sms", 4)),
    "push": (("fcm", 5), ("apns", 4), ("jpush", 1)),
    "email": (("ses", 7), ("smtp-backup", 3)),
    "inbox": (("inbox", 1),),
    "wechat": (("wechat-oa", 1),),
}
_FILTERING = ("caps", "quiet_hours", "consent", "suppression", "dedup")
CAMPAIGNS = ("spring", "double11", "winback", "newsletter")
TEMPLATES = 50
_LANE = {"urgent": 0, "high": 1, "normal": 2, "low": 3}


@dataclass(frozen=True, slots=True)
class Template:
    key: str
    category: str
    priority: str
    department: str
    channels: tuple[str, ...]
    weight: float


def templates() -> list[Template]:
    rng = random.Random(SEED)
    out = []
    for k in range(TEMPLATES):
        category, priority, reach = _CATEGORIES[(0, 1, 1, 1, 2, 2, 3, 3, 3, 3)[k % 10]]
        channels = tuple(rng.sample(reach, min(len(reach), 1 + (rng.random() < 0.3))))
        out.append(Template(f"t{k:02d}", category, priority, _DEPARTMENTS[k % 5], channels, 1 / (1 + k) ** 0.8))
    return out


@dataclass
class Tally:
    """The exact count of each funnel stage in what was generated (``requested`` per message)."""

    stages: Counter[str]

    def add(self, other: Tally) -> None:
        self.stages.update(other.stages)


class Timeline:
    """Chunks of ``n`` generated deliveries (one per message) in time order, each chunk seeded by its index."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.templates = templates()
        self._template_cumulative = list(itertools.accumulate(tpl.weight for tpl in self.templates))
        self._providers = {
            channel: ([name for name, _ in weighted], list(itertools.accumulate(w for _, w in weighted)))
            for channel, weighted in PROVIDERS.items()
        }
        self._marketing = [tpl for tpl in self.templates if tpl.category == "marketing"]
        hours = [
            _HOUR_WEIGHT[h % 24] * (0.8 if (START + timedelta(hours=h)).weekday() >= 5 else 1.0)
            for h in range(DAYS * 24)
        ]
        total = sum(hours)
        self._cumulative: list[float] = []
        running = 0.0
        for w in hours:
            running += w / total
            self._cumulative.append(running)
        self._hour_share = [w / total for w in hours]
        # each campaign runs 10:00-14:00 every 3rd to 6th day
        self._runs: dict[int, tuple[str, str]] = {}
        rng = random.Random(SEED + 1)
        for c, campaign in enumerate(CAMPAIGNS):
            day = c
            while day < DAYS:
                started = START + timedelta(days=day, hours=10)
                # an id as ``ids.new_id`` makes them, but the same in every process, as the run is
                run_id = f"{int(started.timestamp() * 1000) << 80 | rng.getrandbits(80):032x}"
                for h in range(4):
                    self._runs.setdefault(day * 24 + 10 + h, (campaign, run_id))
                day += rng.randint(3, 6)

    def cells(self, first: int, count: int) -> tuple[dict[tuple[Any, ...], list[float]], Tally]:
        """The hourly rollup cells of ``chunk(first, count)``, counted here from its rows (``--write rollups``):
        each delivery's first event of each stage (``funnel.stage_of``), under its message's and its own
        dimensions, in the hour of the event — checked against ``rollups.append`` by ``--check-rebuild``."""
        messages, deliveries, events, tally = self.chunk(first, count)
        by_message = {m["id"]: m for m in messages}
        by_delivery = {d["id"]: d for d in deliveries}
        cells: dict[tuple[Any, ...], list[float]] = defaultdict(lambda: [0, 0.0])
        reached: set[tuple[str, str]] = set()
        for e in events:
            found = funnel.stage_of(e)
            if found is None:
                continue
            stage, policy = found
            if e["delivery_id"] is not None:
                if (e["delivery_id"], stage) in reached:
                    continue
                reached.add((e["delivery_id"], stage))
            m, d = by_message[e["message_id"]], by_delivery.get(e["delivery_id"], {})
            key = (
                e["at"].replace(minute=0, second=0, microsecond=0),
                m["template_key"],
                m["template_version"],
                m["variant"],
                m["campaign_key"] or "",
                m["campaign_run"] or "",
                m["category"],
                m["department"],
                d.get("channel", ""),
                d.get("provider") or "",
                stage,
                policy,
            )
            cell = cells[key]
            cell[0] += 1
            cell[1] += funnel.amount_of(e)
        return dict(cells), tally

    def _time(self, u: float) -> tuple[int, datetime]:
        """The ``u``-quantile of the month's traffic: its hour and instant."""
        h = min(bisect.bisect_left(self._cumulative, u), len(self._cumulative) - 1)
        before = self._cumulative[h - 1] if h else 0.0
        within = (u - before) / self._hour_share[h]
        return h, START + timedelta(hours=h + min(max(within, 0.0), 0.999999))

    def chunk(
        self, first: int, count: int
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], Tally]:
        """Messages, deliveries and events of the deliveries ``first`` … ``first + count - 1``."""
        rng = random.Random(SEED * 1_000_003 + first)
        messages, deliveries, events = [], [], []
        stages: Counter[str] = Counter()
        for i in range(first, min(first + count, self.n)):
            hour, at = self._time((i + rng.random()) / self.n)
            run = self._runs.get(hour)
            campaign_key: str | None = None
            campaign_run: str | None = None
            if run is not None and rng.random() < 0.6:
                tpl = self._marketing[CAMPAIGNS.index(run[0]) % len(self._marketing)]
                campaign_key, campaign_run = run
            else:
                tpl = self.templates[_pick(rng, self._template_cumulative)]
            channel = tpl.channels[0] if len(tpl.channels) == 1 or rng.random() < 0.7 else tpl.channels[1]
            names, cumulative = self._providers[channel]
            provider = names[_pick(rng, cumulative)]
            version = 2 if int(tpl.key[1:]) % 5 == 0 and at >= START + timedelta(days=15) else 1
            message_id = ids.new_id(at.timestamp())
            delivery_id = ids.new_id(at.timestamp())
            user_id = f"u{rng.randrange(2_000_000)}"
            stages["requested"] += 1
            step = [outbox.event_row(message_id, None, "accepted", None, at)]
            status, sent_at = _walk(rng, step, message_id, delivery_id, at, tpl, channel)
            stages.update({e["status"] for e in step[1:]})  # a stage once per delivery, however often reached
            messages.append(
                {
                    "id": message_id,
                    "request_id": message_id,
                    "user_id": user_id,
                    "template_key": tpl.key,
                    "template_version": version,
                    "category": tpl.category,
                    "priority": tpl.priority,
                    "status": status,
                    "data": {},
                    "variant": "a" if rng.random() < 0.5 else "b",
                    "campaign_key": campaign_key,
                    "campaign_run": campaign_run,
                    "department": tpl.department,
                    "created_at": at,
                    "updated_at": step[-1]["at"],
                }
            )
            deliveries.append(
                {
                    "id": delivery_id,
                    "message_id": message_id,
                    "user_id": user_id,
                    "channel": channel,
                    "provider": None if status == "filtered" else provider,
                    "status": status,
                    "lane": _LANE[tpl.priority],
                    "run_at": at,
                    "attempts": 0 if status == "filtered" else 1,
                    "sent_at": sent_at,
                    "created_at": at,
                    "updated_at": step[-1]["at"],
                }
            )
            events.extend(step)
        if "read" in stages:
            stages["opened"] = stages.pop("read")
        return messages, deliveries, events, Tally(stages)


def _pick(rng: random.Random, cumulative: Sequence[float]) -> int:
    """A weighted choice's index, from the weights' running sums."""
    return bisect.bisect(cumulative, rng.random() * cumulative[-1])


def _walk(
    rng: random.Random,
    step: list[dict[str, Any]],
    message_id: str,
    delivery_id: str,
    at: datetime,
    tpl: Template,
    channel: str,
) -> tuple[str, datetime | None]:
    """Append one delivery's events after its message's acceptance; its final status and when it was sent."""
    r = rng.random()
    if r < 0.04:
        policy = _FILTERING[int(r / 0.008)]
        step.append(outbox.event_row(message_id, delivery_id, "filtered", f"{policy} policy", at, {"policy": policy}))
        return "filtered", None
    if r < 0.06:
        step.append(outbox.event_row(message_id, delivery_id, "deferred", "quiet hours", at, {"policy": "quiet_hours"}))
        at += timedelta(hours=rng.uniform(1, 8))
    at += timedelta(seconds=rng.uniform(0.05, 3))
    if r < 0.075:
        step.append(outbox.event_row(message_id, delivery_id, "failed", "vendor refused: invalid number", at))
        return "failed", None
    step.append(outbox.event_row(message_id, delivery_id, "sent", None, at))
    sent_at, status = at, "sent"
    receipt = rng.random()
    at += timedelta(seconds=rng.uniform(1, 30))
    if receipt < 0.92:
        step.append(outbox.event_row(message_id, delivery_id, "delivered", None, at))
        status = "delivered"
    elif receipt < 0.96:
        status = "bounced" if channel == "email" else "undelivered"
        step.append(
            outbox.event_row(message_id, delivery_id, status, "mailbox full" if channel == "email" else "phone off", at)
        )
        return status, sent_at
    else:
        return status, sent_at
    if channel in ("inbox", "push", "email") and rng.random() < 0.25:
        at += timedelta(minutes=rng.uniform(1, 600))
        step.append(outbox.event_row(message_id, delivery_id, "read", None, at))
        status = "read"
    if rng.random() < 0.08:
        for _ in range(2 if rng.random() < 0.1 else 1):
            at += timedelta(minutes=rng.uniform(0.5, 360))
            step.append(
                outbox.event_row(message_id, delivery_id, "clicked", None, at, {"link": "https://example.com/p"})
            )
        status = "clicked"
        if rng.random() < 0.18:
            at += timedelta(minutes=rng.uniform(1, 1440))
            amount = round(rng.uniform(9, 400), 2)
            step.append(
                outbox.event_row(message_id, delivery_id, "converted", None, at, {"event": "order", "amount": amount})
            )
    if tpl.category == "marketing" and rng.random() < 0.003:
        step.append(outbox.event_row(message_id, delivery_id, "unsubscribed", None, at + timedelta(minutes=1)))
    return status, sent_at
