"""The policies' configuration as values, with their JSON forms (what the API reads and writes).

* ``PolicySettings`` — the operator's one document: default time zone, marketing consent mode, sending windows
  and quiet-hours behaviour per category, dedup window, the per-user safety valve, and which policies are on.
* ``TemplatePolicy`` — a template's overrides: exempt from caps, quiet-hours behaviour, sending window, dedup.
* ``Preferences`` — one user's choices: opt-outs per channel, per category and per (category, channel),
  marketing consent, their own do-not-disturb period.
* ``Cap`` — a frequency cap: at most ``limit`` deliveries per user per window, narrowed by channel, category
  and department.
* ``Suppression`` — an unsubscribe or blacklist entry, by user or by address.

``from_json`` functions raise ``InvalidInput`` naming the offending field; ``to_json`` gives the stored and shown
form back, so what the API returns is what it accepted.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from clarion.domain import errors, fields, model, timewindows
from clarion.domain import fallback as fallback_rules

POLICIES = ("consent", "suppression", "quiet_hours", "dedup", "keywords", "caps", "safety_valve")
QUIET_BEHAVIOURS = ("defer", "drop", "ignore")
SUPPRESSION_SOURCES = ("user_request", "unsubscribe_link", "complaint", "sms_reply", "bounce", "admin")
ConsentMode = Literal["opt_out", "opt_in"]
QuietBehaviour = Literal["defer", "drop", "ignore"]
CAP_KEY_MAX = 128


_check = fields.Fields("invalid_policy")
_bad, _obj, _known, _int, _bool = _check.bad, _check.obj, _check.known, _check.int, _check.bool


def _enum(kind: type[model.Category] | type[model.Channel], value: Any, field: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise _bad(field, f"unknown value {value!r}", allowed=[v.value for v in kind]) from None


def _window(value: Any, field: str) -> timewindows.DailyWindow:
    if not isinstance(value, str):
        raise _bad(field, 'must be a daily window like "09:00-20:00"')
    try:
        return timewindows.DailyWindow.parse(value)
    except ValueError as exc:
        raise _bad(field, str(exc)) from None


def _zone(value: Any, field: str) -> str:
    try:
        timewindows.resolve_zone(None, value if isinstance(value, str) else "")
    except ValueError:
        raise _bad(field, f"unknown time zone {value!r}; expected an IANA name like 'Asia/Shanghai'") from None
    return str(value)


# -- the counting window of caps and the safety valve --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CapWindow:
    """``unit`` day/week: the user's local calendar day or week; ``seconds``: a rolling window."""

    unit: Literal["day", "week"] | None = None
    seconds: int | None = None

    @classmethod
    def from_json(cls, value: Any, field: str) -> CapWindow:
        value = _obj(value, field)
        _known(value, field, {"unit", "seconds"})
        if ("unit" in value) == ("seconds" in value):
            raise _bad(field, 'give either "unit" ("day" or "week", calendar in the user\'s zone) or "seconds"')
        if "unit" in value:
            if value["unit"] not in ("day", "week"):
                raise _bad(f"{field}.unit", 'must be "day" or "week"')
            return cls(unit=value["unit"])
        return cls(seconds=_int(value["seconds"], f"{field}.seconds", minimum=1, maximum=366 * 86400))

    def to_json(self) -> dict[str, Any]:
        return {"unit": self.unit} if self.unit else {"seconds": self.seconds}

    def describe(self) -> str:
        return f"per {self.unit}" if self.unit else f"per {self.seconds} s"


@dataclass(frozen=True, slots=True)
class SafetyValve:
    limit: int
    window: CapWindow

    @classmethod
    def from_json(cls, value: Any, field: str) -> SafetyValve | None:
        if value is None:
            return None
        value = _obj(value, field)
        _known(value, field, {"limit", "window"})
        return cls(
            _int(value.get("limit"), f"{field}.limit", minimum=1),
            CapWindow.from_json(value.get("window"), f"{field}.window"),
        )

    def to_json(self) -> dict[str, Any]:
        return {"limit": self.limit, "window": self.window.to_json()}


# -- operator settings ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicySettings:
    default_timezone: str = "UTC"
    marketing_consent: ConsentMode = "opt_out"
    send_windows: Mapping[model.Category, timewindows.DailyWindow] = field(
        default_factory=lambda: {model.Category.MARKETING: timewindows.DailyWindow.parse("09:00-20:00")}
    )
    quiet_hours: Mapping[model.Category, QuietBehaviour] = field(
        default_factory=lambda: {model.Category.MARKETING: "defer", model.Category.NOTIFICATION: "defer"}
    )
    dedup_seconds: int = 300
    safety_valve: SafetyValve | None = field(default_factory=lambda: SafetyValve(100, CapWindow(seconds=3600)))
    enabled: Mapping[str, bool] = field(default_factory=lambda: dict.fromkeys(POLICIES, True))
    #: the channel fallback chain of each category, for templates that have none of their own
    fallback: Mapping[model.Category, tuple[fallback_rules.Step, ...]] = field(default_factory=dict)

    def on(self, policy: str) -> bool:
        return self.enabled.get(policy, True)

    @classmethod
    def from_json(cls, value: Any) -> PolicySettings:
        """A full or partial document: fields not given keep their defaults."""
        value = _obj(value, "settings")
        _known(value, "settings", {f for f in cls.__dataclass_fields__})
        default = cls()
        kwargs: dict[str, Any] = {}
        if "default_timezone" in value:
            kwargs["default_timezone"] = _zone(value["default_timezone"], "default_timezone")
        if "marketing_consent" in value:
            if value["marketing_consent"] not in ("opt_out", "opt_in"):
                raise _bad("marketing_consent", 'must be "opt_out" or "opt_in"')
            kwargs["marketing_consent"] = value["marketing_consent"]
        if "send_windows" in value:
            windows = _obj(value["send_windows"], "send_windows")
            kwargs["send_windows"] = {
                _enum(model.Category, c, f"send_windows.{c}"): _window(w, f"send_windows.{c}")
                for c, w in windows.items()
                if w is not None
            }
        if "quiet_hours" in value:
            behaviours = _obj(value["quiet_hours"], "quiet_hours")
            parsed = {}
            for c, b in behaviours.items():
                if b not in QUIET_BEHAVIOURS:
                    raise _bad(f"quiet_hours.{c}", f"must be one of {', '.join(QUIET_BEHAVIOURS)}")
                parsed[_enum(model.Category, c, f"quiet_hours.{c}")] = b
            kwargs["quiet_hours"] = parsed
        if "dedup_seconds" in value:
            kwargs["dedup_seconds"] = _int(value["dedup_seconds"], "dedup_seconds", minimum=0, maximum=7 * 86400)
        if "safety_valve" in value:
            kwargs["safety_valve"] = SafetyValve.from_json(value["safety_valve"], "safety_valve")
        if "enabled" in value:
            enabled = _obj(value["enabled"], "enabled")
            _known(enabled, "enabled", set(POLICIES))
            kwargs["enabled"] = {**default.enabled, **{k: _bool(v, f"enabled.{k}") for k, v in enabled.items()}}
        if "fallback" in value:
            kwargs["fallback"] = _fallbacks(value["fallback"])
        return cls(**{**{f: getattr(default, f) for f in cls.__dataclass_fields__}, **kwargs})

    def to_json(self) -> dict[str, Any]:
        return {
            "default_timezone": self.default_timezone,
            "marketing_consent": self.marketing_consent,
            "send_windows": {c.value: str(w) for c, w in self.send_windows.items()},
            "quiet_hours": {c.value: b for c, b in self.quiet_hours.items()},
            "dedup_seconds": self.dedup_seconds,
            "safety_valve": self.safety_valve.to_json() if self.safety_valve else None,
            "enabled": {p: self.on(p) for p in POLICIES},
            "fallback": {c.value: [s.as_json() for s in steps] for c, steps in self.fallback.items()},
        }


def _fallbacks(value: Any) -> dict[model.Category, tuple[fallback_rules.Step, ...]]:
    """The default chains per category, each checked like a template's (against every channel: a template
    acts only on the steps whose channels it has content for)."""
    if value is None:
        return {}
    chains = {}
    for name, raw in _obj(value, "fallback").items():
        category = _enum(model.Category, name, f"fallback.{name}")
        try:
            steps = fallback_rules.parse(raw, model.Channel)
        except errors.InvalidInput as exc:
            where = str(exc.details.get("field", "fallback")).replace("fallback", f"fallback.{name}", 1)
            raise errors.InvalidInput(str(exc), code=exc.code, details={**exc.details, "field": where}) from None
        if steps:
            chains[category] = steps
    return chains


# -- a template's overrides ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TemplatePolicy:
    exempt_caps: bool = False
    quiet_hours: QuietBehaviour | None = None
    send_window: timewindows.DailyWindow | None = None
    dedup_seconds: int | None = None
    #: the template may call on ``voice`` below priority urgent (voice is urgent-only otherwise)
    voice_below_urgent: bool = False

    @classmethod
    def from_json(cls, value: Any, field: str = "policy") -> TemplatePolicy:
        if value is None:
            return DEFAULT_TEMPLATE_POLICY
        value = _obj(value, field)
        _known(value, field, {"exempt_caps", "quiet_hours", "send_window", "dedup_seconds", "voice_below_urgent"})
        quiet = value.get("quiet_hours")
        if quiet is not None and quiet not in QUIET_BEHAVIOURS:
            raise _bad(f"{field}.quiet_hours", f"must be one of {', '.join(QUIET_BEHAVIOURS)}")
        window = value.get("send_window")
        dedup = value.get("dedup_seconds")
        return cls(
            exempt_caps=_bool(value.get("exempt_caps", False), f"{field}.exempt_caps"),
            quiet_hours=quiet,
            send_window=_window(window, f"{field}.send_window") if window is not None else None,
            dedup_seconds=_int(dedup, f"{field}.dedup_seconds", minimum=0, maximum=7 * 86400)
            if dedup is not None
            else None,
            voice_below_urgent=_bool(value.get("voice_below_urgent", False), f"{field}.voice_below_urgent"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "exempt_caps": self.exempt_caps,
            "quiet_hours": self.quiet_hours,
            "send_window": str(self.send_window) if self.send_window else None,
            "dedup_seconds": self.dedup_seconds,
            **({"voice_below_urgent": True} if self.voice_below_urgent else {}),
        }


DEFAULT_TEMPLATE_POLICY = TemplatePolicy()


# -- a user's preferences ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Preferences:
    """Shaped like the API: ``{"channels": {"sms": false}, "categories": {"marketing": false,
    "notification": {"channels": {"sms": false}}}, "marketing_consent": true, "do_not_disturb": "22:00-08:00"}``."""

    channels_off: frozenset[model.Channel] = frozenset()
    categories_off: frozenset[model.Category] = frozenset()
    pairs_off: frozenset[tuple[model.Category, model.Channel]] = frozenset()
    marketing_consent: bool | None = None
    do_not_disturb: str | None = None

    @property
    def allowed_window(self) -> timewindows.DailyWindow | None:
        """The user's do-not-disturb period as the window in which they may be reached."""
        return _allowed_window(self.do_not_disturb) if self.do_not_disturb else None

    @classmethod
    def from_json(cls, value: Any) -> Preferences:
        value = _obj(value, "preferences")
        _known(value, "preferences", {"channels", "categories", "marketing_consent", "do_not_disturb"})
        channels_off = set()
        for name, on in _obj(value.get("channels", {}), "channels").items():
            channel = _enum(model.Channel, name, f"channels.{name}")
            if not _bool(on, f"channels.{name}"):
                channels_off.add(channel)
        categories_off, pairs_off = set(), set()
        for name, setting in _obj(value.get("categories", {}), "categories").items():
            category = _enum(model.Category, name, f"categories.{name}")
            if isinstance(setting, bool):
                if not setting:
                    categories_off.add(category)
                continue
            setting = _obj(setting, f"categories.{name}")
            _known(setting, f"categories.{name}", {"channels"})
            for cname, on in _obj(setting.get("channels", {}), f"categories.{name}.channels").items():
                channel = _enum(model.Channel, cname, f"categories.{name}.channels.{cname}")
                if not _bool(on, f"categories.{name}.channels.{cname}"):
                    pairs_off.add((category, channel))
        consent = value.get("marketing_consent")
        if consent is not None:
            _bool(consent, "marketing_consent")
        dnd = value.get("do_not_disturb")
        if dnd is not None:
            if not isinstance(dnd, str):
                raise _bad("do_not_disturb", 'must be a period like "22:00-08:00"')
            try:
                timewindows.quiet_period(dnd)
            except ValueError as exc:
                raise _bad("do_not_disturb", str(exc)) from None
        return cls(frozenset(channels_off), frozenset(categories_off), frozenset(pairs_off), consent, dnd)

    def to_json(self) -> dict[str, Any]:
        categories: dict[str, Any] = {c.value: False for c in sorted(self.categories_off)}
        for category, channel in sorted(self.pairs_off):
            if category not in self.categories_off:
                categories.setdefault(category.value, {"channels": {}})["channels"][channel.value] = False
        return {
            "channels": {c.value: False for c in sorted(self.channels_off)},
            "categories": categories,
            "marketing_consent": self.marketing_consent,
            "do_not_disturb": self.do_not_disturb,
        }


NO_PREFERENCES = Preferences()


@functools.lru_cache(maxsize=1024)
def _allowed_window(do_not_disturb: str) -> timewindows.DailyWindow:
    """Parsed once per period: quiet hours ask on every delivery, and users pick among a few periods."""
    return timewindows.quiet_period(do_not_disturb)


# -- frequency caps ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cap:
    """At most ``limit`` deliveries per user per ``window``, counting those on ``channel`` (any when None), of
    ``category`` (any when None), and with ``per_department`` each department counted apart."""

    key: str
    limit: int
    window: CapWindow
    channel: model.Channel | None = None
    category: model.Category | None = None
    per_department: bool = False
    enabled: bool = True
    description: str | None = None

    def matches(self, channel: model.Channel, category: model.Category) -> bool:
        return (
            self.enabled
            and (self.channel is None or self.channel is channel)
            and (self.category is None or self.category is category)
        )

    def describe(self) -> str:
        what = " ".join(p for p in (self.category, self.channel) if p) or "deliveries"
        dept = " per department" if self.per_department else ""
        return f"at most {self.limit} {what} per user{dept} {self.window.describe()}"

    @classmethod
    def from_json(cls, key: str, value: Any) -> Cap:
        if not key or len(key) > CAP_KEY_MAX:
            raise _bad("key", f"must be 1 to {CAP_KEY_MAX} characters")
        value = _obj(value, "cap")
        _known(value, "cap", {"limit", "window", "channel", "category", "per_department", "enabled", "description"})
        channel, category = value.get("channel"), value.get("category")
        description = value.get("description")
        if description is not None and not isinstance(description, str):
            raise _bad("description", "must be a string")
        return cls(
            key=key,
            limit=_int(value.get("limit"), "limit", minimum=0),
            window=CapWindow.from_json(value.get("window"), "window"),
            channel=_enum(model.Channel, channel, "channel") if channel is not None else None,
            category=_enum(model.Category, category, "category") if category is not None else None,
            per_department=_bool(value.get("per_department", False), "per_department"),
            enabled=_bool(value.get("enabled", True), "enabled"),
            description=description,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "limit": self.limit,
            "window": self.window.to_json(),
            "channel": self.channel.value if self.channel else None,
            "category": self.category.value if self.category else None,
            "per_department": self.per_department,
            "enabled": self.enabled,
            "description": self.description,
            "summary": self.describe(),
        }


# -- suppressions --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Suppression:
    """Nothing (of ``category``, on ``channel``; all when None) goes to ``user_id`` or to ``address``."""

    id: str
    user_id: str | None
    address: str | None
    channel: model.Channel | None
    category: model.Category | None
    reason: str | None
    source: str
    created_at: datetime

    def applies(self, user_id: str, addresses: list[str], channel: model.Channel, category: model.Category) -> bool:
        if self.channel is not None and self.channel is not channel:
            return False
        if self.category is not None and self.category is not category:
            return False
        if self.user_id is not None:
            return self.user_id == user_id
        return self.address is not None and self.address in addresses

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "address": self.address,
            "channel": self.channel.value if self.channel else None,
            "category": self.category.value if self.category else None,
            "reason": self.reason,
            "source": self.source,
            "created_at": self.created_at.isoformat(),
        }


_PHONE_SEPARATORS = str.maketrans("", "", " -().")


def normalize_address(address: str) -> str:
    """Addresses are compared as stored on users: e-mail case-insensitively; a phone number written with
    separators (``+86 138-0013-8000``) as its E.164 digits; anything else (push tokens, URLs) exactly."""
    address = address.strip()
    if "@" in address:
        return address.lower()
    compact = address.translate(_PHONE_SEPARATORS)
    return compact if compact.startswith("+") and compact[1:].isdigit() else address
