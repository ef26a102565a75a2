"""Which provider account sends a delivery: routes, their specificity and ties, weighted choice, skipping what
cannot send, failover, and preferring on a retry a provider the delivery has not tried yet.

The provider is chosen when a delivery is sent, not when it is queued, so the backlog follows the accounts'
state. These functions only decide: the registry loads the routes and accounts, the worker acts on the
``Choice`` and puts it on the delivery's timeline.

- A route ``match``es on any of ``MATCH_FIELDS``; a field it leaves out matches anything ("the rest").
  The matching route with most fields set wins.
- Two enabled routes of a channel with as many fields set *tie* when one delivery could match both (no field
  that both set has different values); a tie is refused when the route is saved (``tie``).
- With no route, the channel's enabled accounts share the traffic equally; with none, the built-in default
  serves the channel; with no built-in either, ``NO_PROVIDER``.
- A provider that is deleted, disabled or of another channel is skipped, never failed. When none of a route's
  providers can send, its ``failover`` is tried in order; when none of those can either, the delivery waits."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

from clarion.domain import model

#: the provider used for a channel when no account is configured for it; channels missing here (WeChat, WeCom,
#: DingTalk, Feishu) have no built-in provider and are routed to ``NO_PROVIDER`` until an account is configured
DEFAULT_PROVIDERS = {
    model.Channel.INBOX: "inbox",
    model.Channel.EMAIL: "file",
    model.Channel.SMS: "file",
    model.Channel.PUSH: "file",
    model.Channel.WEBHOOK: "webhook",
}
#: the route of a delivery on a channel with no provider at all: it names no account (parentheses cannot occur in
#: a provider name), so the delivery fails with the reason ``no_provider``
NO_PROVIDER = "(none)"

#: what a route can match on, in the order the API shows them
MATCH_FIELDS = ("category", "template", "department", "priority", "signature", "country_code")
#: the channels whose address is a phone number, where ``country_code`` means something
PHONE_CHANNELS = frozenset({model.Channel.SMS, model.Channel.VOICE})
#: the channels whose content has a ``signature``
SIGNED_CHANNELS = frozenset({model.Channel.SMS})

_CALLING_CODES = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def calling_code(phone: Any) -> str | None:
    """The country calling code of an E.164 number (``"+8613800138000"`` → ``"+86"``), None for anything else.
    Calling codes are prefix-free, so the first 1 to 3 digits that form one are it."""
    if not isinstance(phone, str) or not phone.startswith("+"):
        return None
    for length in (1, 2, 3):
        digits = phone[1 : 1 + length]
        if digits.isdigit() and int(digits) in _CALLING_CODES:
            return "+" + digits
    return None


def is_calling_code(text: str) -> bool:
    return calling_code(text) == text


def signature_of(content: Any) -> str | None:
    """The SMS signature of a rendered content: its ``signature`` field, else the ``【Brand】`` it starts with."""
    if not isinstance(content, Mapping):
        return None
    own = content.get("signature")
    if isinstance(own, str) and own:
        return own.strip("【】")
    text = content.get("text")
    if isinstance(text, str) and text.startswith("【"):
        end = text.find("】")
        if end > 1:
            return text[1:end]
    return None


@dataclass(frozen=True, slots=True)
class Facts:
    """What routes match a delivery by; None where the delivery has no such value."""

    category: str | None = None
    template: str | None = None
    department: str | None = None
    priority: str | None = None
    signature: str | None = None
    country_code: str | None = None


@dataclass(frozen=True, slots=True)
class Weighted:
    name: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Route:
    key: str
    channel: model.Channel
    match: Mapping[str, str]  # field of MATCH_FIELDS → the value it must have
    providers: tuple[Weighted, ...]
    failover: tuple[str, ...] = ()
    enabled: bool = True

    @property
    def specificity(self) -> int:
        return len(self.match)

    def fits(self, facts: Facts) -> bool:
        return all(getattr(facts, f) == v for f, v in self.match.items())


def could_both_match(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """Whether one delivery can match both: no field set by both with different values."""
    return all(b[f] == v for f, v in a.items() if f in b)


def tie(route: Route, others: Iterable[Route]) -> Route | None:
    """The first (by key) other enabled route of ``route``'s channel that ties with it: as specific, and able to
    match a delivery it matches — which one would win is undecidable, so saving ``route`` is refused."""
    if not route.enabled:
        return None
    for other in sorted(others, key=lambda r: r.key):
        if (
            other.key != route.key
            and other.enabled
            and other.channel is route.channel
            and other.specificity == route.specificity
            and could_both_match(route.match, other.match)
        ):
            return other
    return None


def route_for(routes: Sequence[Route], facts: Facts) -> Route | None:
    """The most specific enabled route of ``routes`` (one channel's) that fits ``facts``; ties cannot be saved,
    and should two exist anyway (saved concurrently) the first by key wins."""
    best: Route | None = None
    for route in routes:
        if route.enabled and route.fits(facts) and (best is None or route.specificity > best.specificity):
            best = route
    return best


@dataclass(frozen=True, slots=True)
class Account:
    """What choosing needs to know of a provider account."""

    name: str
    channels: frozenset[model.Channel]  # those it may send on
    enabled: bool = True
    builtin: bool = False  # serves a channel only when the channel has no enabled account of its own


@dataclass(frozen=True, slots=True)
class Choice:
    """The provider a delivery goes to now, or None: it waits (``reason`` says why) or, with ``NO_PROVIDER``,
    fails. ``skipped`` names what could not send (name → ``deleted``, ``disabled``, ``other_channel``)."""

    provider: str | None
    route: str | None = None
    failover: bool = False
    skipped: Mapping[str, str] = field(default_factory=dict)
    reason: str | None = None
    #: how many other providers that can send now this delivery has not tried yet: after a transient failure
    #: it is retried at once on one of them rather than after the backoff
    untried: int = 0

    def detail(self) -> dict[str, Any]:
        """What the delivery's timeline says of this choice."""
        out: dict[str, Any] = {"provider": self.provider}
        if self.route is not None:
            out["route"] = self.route
        if self.failover:
            out["failover"] = True
        if self.skipped:
            out["skipped"] = dict(self.skipped)
        return out


def unusable(name: str, channel: model.Channel, accounts: Mapping[str, Account]) -> str | None:
    """Why ``name`` cannot send on ``channel`` now, or None when it can."""
    account = accounts.get(name)
    if account is None:
        return "deleted"
    if not account.enabled:
        return "disabled"
    if channel not in account.channels:
        return "other_channel"
    return None


def weighted(candidates: Sequence[Weighted], rand: Callable[[], float]) -> str:
    """One of ``candidates`` with probability proportional to its weight; when every weight is 0, the first."""
    total = sum(c.weight for c in candidates)
    if total <= 0:
        return candidates[0].name
    point = rand() * total
    for c in candidates:
        point -= c.weight
        if point < 0 and c.weight > 0:
            return c.name
    return next(c.name for c in reversed(candidates) if c.weight > 0)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a route (or its absence) leaves to choose from on a channel, worked out once for many deliveries:
    ``usable`` to choose among by weight (or, for ``failover``, in order), or else ``fixed`` (the built-in
    default, ``NO_PROVIDER``, or None: wait)."""

    usable: tuple[Weighted, ...]
    route: str | None = None
    failover: bool = False
    skipped: Mapping[str, str] = field(default_factory=dict)
    fixed: str | None = None
    reason: str | None = None


def plan(channel: model.Channel, route: Route | None, accounts: Mapping[str, Account]) -> Plan:
    """What ``route`` (None: the channel has none that fits) leaves to choose from among ``accounts`` (every
    account there is, by name)."""
    if route is None:
        configured = sorted(a.name for a in accounts.values() if a.enabled and not a.builtin and channel in a.channels)
        if configured:
            return Plan(tuple(Weighted(n) for n in configured))
        default = DEFAULT_PROVIDERS.get(channel)
        if default is not None and unusable(default, channel, accounts) is None:
            return Plan((), fixed=default)
        return Plan((), fixed=NO_PROVIDER, reason="no provider is configured for this channel")
    skipped: dict[str, str] = {}
    usable = []
    for p in route.providers:
        why = unusable(p.name, channel, accounts)
        if why is None:
            usable.append(p)
        else:
            skipped[p.name] = why
    if usable:
        return Plan(tuple(usable), route.key, skipped=skipped)
    spare = []
    for name in route.failover:
        why = unusable(name, channel, accounts)
        if why is None:
            spare.append(Weighted(name, 0))  # in order: the failover list is a sequence of last resorts
        else:
            skipped[name] = why
    if spare:
        return Plan(tuple(spare), route.key, failover=True, skipped=skipped)
    why = ", ".join(f"{n} {w}" for n, w in skipped.items())
    return Plan((), route.key, skipped=skipped, reason=f"no provider of route {route.key!r} can send ({why})")


def pick(plan: Plan, *, tried: frozenset[str] = frozenset(), rand: Callable[[], float]) -> Choice:
    """The provider for one delivery, preferring one not in ``tried`` (its earlier attempts' providers)."""
    if not plan.usable:
        return Choice(plan.fixed, plan.route, skipped=plan.skipped, reason=plan.reason)
    pool: Sequence[Weighted] = plan.usable
    if tried:
        pool = [c for c in plan.usable if c.name not in tried] or plan.usable
    name = pool[0].name if len(pool) == 1 else weighted(pool, rand)
    untried = sum(1 for c in plan.usable if c.name != name and c.name not in tried)
    return Choice(name, plan.route, failover=plan.failover, skipped=plan.skipped, untried=untried)


def choose(
    channel: model.Channel,
    route: Route | None,
    accounts: Mapping[str, Account],
    *,
    tried: frozenset[str] = frozenset(),
    rand: Callable[[], float],
) -> Choice:
    """``pick(plan(channel, route, accounts), ...)``: the provider for one delivery."""
    return pick(plan(channel, route, accounts), tried=tried, rand=rand)
