"""What a campaign is: its definition as a value, validated once when it is saved, and when its schedule fires.

Pure: no database here. The stored JSON (``campaigns.definition``) is ``Definition.to_json()``; everything that
reads a campaign goes through ``Definition.from_json`` so a bad document is refused at the door, with the field
named, and never half-runs.

    {"template": "spring", "audience": {"segment": "active", "exclude": {"list": "staff"}},
     "channels": ["sms", "push"], "schedule": {"kind": "cron", "cron": "0 10 * * 1", "timezone": "Asia/Shanghai"},
     "rate": 500, "exclude_reached_days": 7, "department": "growth", "goal": "order_paid", "data": {...},
     "send_time": "optimal"}

``send_time`` "optimal" delivers each user at the hour they usually respond at, within the next 24 hours in their
time zone (``campaigns.runner``); "now" (the default, and what an absent field means) as soon as the batch is
written. It is stored only when "optimal", so a campaign saved before the field existed reads the same.

``ab`` tests the template's A/B variants on part of the audience first: ``{"test_share": 0.1,
"decide_after_hours": 4}`` (and optionally the rule: ``metric``, ``min_sample``, ``alpha``, as a template's
experiment). The runner sends the test cohort, waits for the sequential rule to name a winner, and sends the rest
the winner — or, at the deadline, the best variant so far, stated as such (``campaigns.runner``). Stored only
when set.
"""

from __future__ import annotations

import math
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from croniter import croniter  # type: ignore[import-untyped]

from clarion.analytics import experiments
from clarion.domain import errors, jsonvalues, model, timewindows

KEY = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
SCHEDULES = ("now", "at", "cron")
SEND_TIMES = ("now", "optimal")
MAX_RATE = 1_000_000.0
MAX_EXCLUDE_DEPTH = 4


def _bad(field: str, message: str) -> errors.InvalidInput:
    return errors.InvalidInput(f"{field}: {message}", code="invalid_campaign", details={"field": field})


@dataclass(frozen=True, slots=True)
class Schedule:
    """``now`` (as soon as it is started), ``at`` one moment, or ``cron`` in a time zone (each fire is a run)."""

    kind: str = "now"
    at: datetime | None = None
    cron: str | None = None
    timezone: str = "UTC"

    def first_due(self, now: datetime) -> datetime:
        """When a run is first due once the campaign is started at ``now``."""
        if self.kind == "at" and self.at is not None:
            return max(self.at, now)
        if self.kind == "cron":
            return self.next_after(now)
        return now

    def next_after(self, moment: datetime) -> datetime:
        """The cron's next fire strictly after ``moment`` (in UTC), read in the schedule's time zone."""
        assert self.cron is not None
        zone = zoneinfo.ZoneInfo(self.timezone)
        fire: datetime = croniter(self.cron, moment.astimezone(zone)).get_next(datetime)
        return fire.astimezone(UTC)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "at":
            out["at"] = self.at.isoformat() if self.at else None
        if self.kind == "cron":
            out.update(cron=self.cron, timezone=self.timezone)
        return out

    @classmethod
    def from_json(cls, value: Any) -> Schedule:
        if value is None or value == "now":
            return cls()
        if not isinstance(value, Mapping):
            raise _bad("schedule", 'must be "now" or an object like {"kind": "at", "at": "2026-05-01T10:00:00+08:00"}')
        kind = value.get("kind", "now")
        if kind not in SCHEDULES:
            raise _bad("schedule.kind", f"one of {', '.join(SCHEDULES)}")
        unknown = sorted(set(value) - {"kind", "at", "cron", "timezone"})
        if unknown:
            raise _bad(f"schedule.{unknown[0]}", "unknown field")
        if kind == "at":
            raw = value.get("at")
            try:
                at = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw))
            except ValueError:
                raise _bad("schedule.at", "an ISO time with a zone, e.g. 2026-05-01T10:00:00+08:00") from None
            if at.tzinfo is None:
                raise _bad("schedule.at", "needs a time zone (e.g. +08:00)")
            return cls("at", at=at.astimezone(UTC))
        if kind == "cron":
            cron, zone = value.get("cron"), value.get("timezone", "UTC")
            if not isinstance(cron, str) or not croniter.is_valid(cron):
                raise _bad("schedule.cron", "a five-field cron expression, e.g. '0 10 * * 1'")
            try:
                timewindows.check_zone(zone)
            except ValueError:
                raise _bad("schedule.timezone", "an IANA time zone, e.g. Asia/Shanghai") from None
            return cls("cron", cron=cron, timezone=zone)
        return cls()


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _float(value: Any) -> float | None:
    """A JSON number as a float; None for anything else (booleans included)."""
    return float(value) if _number(value) else None


def check_audience(value: Any, where: str = "audience", depth: int = 0) -> dict[str, Any]:
    """An audience spec for ``clarion.segments``: a segment, an ID list, or both (their intersection), minus
    another spec under ``exclude``."""
    if not isinstance(value, Mapping):
        raise _bad(where, 'must be an object like {"segment": "active"} or {"list": "vip"}')
    unknown = sorted(set(value) - {"segment", "list", "exclude"})
    if unknown:
        raise _bad(f"{where}.{unknown[0]}", "unknown field; use segment, list and exclude")
    if "segment" not in value and "list" not in value:
        raise _bad(where, "needs a segment, a list, or both")
    for name in ("segment", "list"):
        if name in value and (not isinstance(value[name], str) or not KEY.match(value[name])):
            raise _bad(f"{where}.{name}", "a segment or list key")
    out = {k: value[k] for k in ("segment", "list") if k in value}
    if value.get("exclude") is not None:
        if depth >= MAX_EXCLUDE_DEPTH:
            raise _bad(f"{where}.exclude", f"nested at most {MAX_EXCLUDE_DEPTH} deep")
        out["exclude"] = check_audience(value["exclude"], f"{where}.exclude", depth + 1)
    return out


@dataclass(frozen=True, slots=True)
class AB:
    """A campaign's A/B test: the share of the audience that tests the variants, how long after the test cohort
    is sent the rest waits for a decision at most, and the rule (``analytics.experiments.Rule``'s fields)."""

    test_share: float
    decide_after_hours: float
    metric: str = "click_rate"
    min_sample: int = 200
    alpha: float = 0.05

    FIELDS = frozenset({"test_share", "decide_after_hours", "metric", "min_sample", "alpha"})

    @classmethod
    def from_json(cls, value: Any) -> AB:
        if not isinstance(value, Mapping):
            raise _bad("ab", "must be an object")
        unknown = sorted(set(value) - cls.FIELDS)
        if unknown:
            raise _bad(f"ab.{unknown[0]}", "unknown field")
        share, hours = _float(value.get("test_share")), _float(value.get("decide_after_hours"))
        if share is None or not 0 < share <= 0.5:
            raise _bad("ab.test_share", "the share of the audience that tests, more than 0 and at most 0.5")
        if hours is None or not 0 < hours <= 24 * 14:
            raise _bad("ab.decide_after_hours", "hours, more than 0 and at most 336")
        rule = {k: value[k] for k in ("metric", "min_sample", "alpha") if k in value}
        try:
            checked = experiments.Rule.from_json({"metric": "click_rate", **rule})
        except errors.InvalidInput as exc:
            field = (exc.details or {}).get("field", "rule")
            raise _bad(f"ab.{field}", exc.message.split(": ", 1)[-1]) from None
        return cls(share, hours, checked.metric, checked.min_sample, checked.alpha)

    def to_json(self) -> dict[str, Any]:
        return {
            "test_share": self.test_share,
            "decide_after_hours": self.decide_after_hours,
            "metric": self.metric,
            "min_sample": self.min_sample,
            "alpha": self.alpha,
        }

    def rule(self) -> experiments.Rule:
        return experiments.Rule(self.metric, self.min_sample, self.alpha)  # type: ignore[arg-type]

    def test_size(self, audience: int) -> int:
        """How many of a frozen audience of ``audience`` users are in the test cohort (at least one)."""
        return min(audience, max(1, math.ceil(audience * self.test_share))) if audience else 0


@dataclass(frozen=True, slots=True)
class Definition:
    template: str
    audience: dict[str, Any]
    channels: tuple[model.Channel, ...] = ()  # empty: every channel of the template
    schedule: Schedule = field(default_factory=Schedule)
    rate: float | None = None  # messages/s written to the outbox; None: as fast as it goes
    exclude_reached_days: float | None = None  # skip users an earlier run of this campaign reached this recently
    department: str | None = None
    goal: str | None = None  # the conversion event's name
    data: dict[str, Any] = field(default_factory=dict)  # the template's ``data.*``, the same for everyone
    name: str | None = None
    send_time: str = "now"  # one of SEND_TIMES
    ab: AB | None = None

    @classmethod
    def from_json(cls, value: Any) -> Definition:
        if not isinstance(value, Mapping):
            raise _bad("body", "must be an object")
        found = jsonvalues.problem(dict(value))
        if found is not None:
            raise _bad(found.field() or "body", found.message)
        fields = {
            "template",
            "audience",
            "channels",
            "schedule",
            "rate",
            "exclude_reached_days",
            "department",
            "goal",
            "data",
            "name",
            "send_time",
            "ab",
        }
        unknown = sorted(set(value) - fields)
        if unknown:
            raise _bad(unknown[0], "unknown field")
        template = value.get("template")
        if not isinstance(template, str) or not KEY.match(template):
            raise _bad("template", "a template key")
        channels: list[model.Channel] = []
        for i, name in enumerate(value.get("channels") or ()):
            try:
                channels.append(model.Channel(name))
            except ValueError:
                known = ", ".join(c.value for c in model.Channel)
                raise _bad(f"channels.{i}", f"unknown channel; one of {known}") from None
        rate = value.get("rate")
        if rate is not None and (
            not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 < rate <= MAX_RATE
        ):
            raise _bad("rate", f"messages per second, more than 0 and at most {MAX_RATE:.0f}")
        days = value.get("exclude_reached_days")
        if days is not None and (not _number(days) or not 0 < days <= 3650):
            raise _bad("exclude_reached_days", "days, more than 0 and at most 3650")
        data = value.get("data") or {}
        if not isinstance(data, Mapping):
            raise _bad("data", "must be an object")
        texts = {}
        for name in ("department", "goal", "name"):
            text = value.get(name)
            if text is not None and (not isinstance(text, str) or not 0 < len(text) <= 200):
                raise _bad(name, "a string of at most 200 characters")
            texts[name] = text
        if texts["goal"] is not None and not KEY.match(texts["goal"]):
            raise _bad("goal", "an event name (letters, digits, _ . : @ -)")
        send_time = "now" if value.get("send_time") is None else value["send_time"]
        if send_time not in SEND_TIMES:
            raise _bad("send_time", '"now" (as soon as the run reaches the user) or "optimal" (their best hour)')
        return cls(
            template=template,
            audience=check_audience(value.get("audience")),
            channels=tuple(dict.fromkeys(channels)),
            schedule=Schedule.from_json(value.get("schedule")),
            rate=float(rate) if rate is not None else None,
            exclude_reached_days=float(days) if days is not None else None,
            department=texts["department"],
            goal=texts["goal"],
            data=dict(data),
            name=texts["name"],
            send_time=send_time,
            ab=AB.from_json(value["ab"]) if value.get("ab") is not None else None,
        )

    def to_json(self) -> dict[str, Any]:
        optional: dict[str, Any] = {"send_time": self.send_time} if self.send_time != "now" else {}
        if self.ab is not None:
            optional["ab"] = self.ab.to_json()
        return {
            **optional,
            "name": self.name,
            "template": self.template,
            "audience": self.audience,
            "channels": [c.value for c in self.channels],
            "schedule": self.schedule.to_json(),
            "rate": self.rate,
            "exclude_reached_days": self.exclude_reached_days,
            "department": self.department,
            "goal": self.goal,
            "data": self.data,
        }

    def channels_for(self, template: model.Template) -> list[model.Channel]:
        """The channels a run sends on; raises ``InvalidInput`` when the template lacks one of them."""
        return template.channels_for(self.channels)
