"""The policy stage runner: loads what the policies need for a whole batch, asks them, and hands back decisions.

It runs in two halves around rendering, because some policies judge the person and the moment and others the
words:

* ``before_render`` — address, consent and preferences, suppressions, quiet hours, and department budgets (a
  marketing message of a department over its month's budget, where the budget says ``refuse_marketing``, is
  dropped as ``budget_exceeded``). A message dropped here is never rendered. Suppressions come with the
  recipients' profiles (``store.loader``), read with them; the month's spend is kept a few seconds
  (``store.costs.BudgetWatch``).
* ``after_render`` — keyword interception on the rendered content, then dedup, frequency caps and the safety
  valve in ONE counters call for the whole batch (one Lua script on Redis). Only deliveries that are about to
  be queued (or deferred) are counted.

``check`` runs every policy for a dry run (``POST /v1/policies/check``): nothing is counted or marked, and each
policy's own answer is reported even when an earlier one already decided.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from clarion.counters import base as counters
from clarion.domain import model, pricing, timewindows
from clarion.domain.policy import caps, config, consent, dedup, keywords, quiet_hours, suppression
from clarion.domain.policy.decision import ALLOW, Candidate, Decision, Defer, Drop, addresses_of, explain
from clarion.pipeline.catalog import Catalog
from clarion.store import costs, loader, outbox, records
from clarion.store import policies as store
from clarion.store.db import Database

ADDRESS = "address"
BUDGET = "budget"


@dataclass(slots=True)
class Verdict:
    """The final decision for one delivery, the content to send (keywords may have masked it) and the masks."""

    decision: Decision
    content: dict[str, Any] | None = None
    masked: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class Screened:
    """The first half's result, carried to the second so both use one snapshot of the configuration."""

    candidates: Sequence[Candidate]
    settings: config.PolicySettings
    zones: list[ZoneInfo]
    decisions: list[Decision]


class PolicyStage:
    def __init__(self, db: Database, catalog: Catalog, counters: counters.Counters) -> None:
        self.catalog = catalog
        self.counters = counters
        self.db = db
        # profiles with their suppressions, coalesced: intake reads its recipients through it, ``recheck`` too
        self.users = loader.UserLoader(db, any_suppression=catalog.any_suppression)
        # the departments over a budget that refuses their marketing, kept a few seconds
        self.budgets = costs.BudgetWatch(db)
        # worked out for the settings (and caps) the catalog last handed out
        self._enabled: tuple[config.PolicySettings, tuple[_PreDecide, ...], tuple[_PreDecide, ...]] | None = None
        self._limits: caps.Limits | None = None

    # -- before rendering ------------------------------------------------------------------------------------

    async def before_render(self, candidates: Sequence[Candidate]) -> Screened:
        settings = await self.catalog.policy_settings()
        default_zone = settings.default_timezone
        zones = [timewindows.resolve_zone(c.user.timezone, default_zone) for c in candidates]
        found = await self._suppressions(candidates, settings)
        policies = self._pre_policies(settings, found)
        over = await self._overspent(candidates)
        decisions: list[Decision] = []
        for candidate, zone in zip(candidates, zones, strict=True):
            decision: Decision = _no_address(candidate) if candidate.address is None else ALLOW
            for decide in policies:
                if isinstance(decision, Drop):
                    break
                decision = _combine(decision, decide(candidate, settings, found, zone))
            if over and not isinstance(decision, Drop):
                decision = _combine(decision, _budget(candidate, over))
            decisions.append(decision)
        return Screened(candidates, settings, zones, decisions)

    async def _overspent(self, candidates: Sequence[Candidate]) -> dict[str, costs.Overspent]:
        """The departments over a budget that refuses marketing, asked only for a batch with marketing in it."""
        if not any(c.category is model.Category.MARKETING and c.template.department for c in candidates):
            return {}
        return await self.budgets.overspent(candidates[0].now)

    def _pre_policies(self, settings: config.PolicySettings, found: _Suppressions) -> tuple[_PreDecide, ...]:
        """The enabled ones, worked out once per settings. A policy with nothing to go on (no suppression in the
        batch) would allow everyone: it is not asked."""
        if self._enabled is None or self._enabled[0] is not settings:
            on = [(name, decide) for name, decide in _PRE_POLICIES if settings.on(name)]
            self._enabled = (settings, tuple(d for _, d in on), tuple(d for n, d in on if n != suppression.POLICY))
        return self._enabled[1] if found.any else self._enabled[2]

    async def _suppressions(self, candidates: Sequence[Candidate], settings: config.PolicySettings) -> _Suppressions:
        loaded = _loaded_suppressions(candidates, settings)
        if loaded is not None:  # the common case: every user came with theirs, nothing to read
            return loaded
        found = {s.id: s for c in candidates for s in c.user.suppressions or ()}
        unloaded = [c for c in candidates if c.user.suppressions is None]  # users not read through the loader
        user_ids = sorted({c.user.user_id for c in unloaded})
        addresses = sorted({config.normalize_address(a) for c in unloaded for a in addresses_of(c.address)})
        async with self.db.read() as conn:
            found.update((s.id, s) for s in await store.suppressions_for(conn, user_ids, addresses))
        return _Suppressions(list(found.values())) if found else _NO_SUPPRESSIONS

    # -- after rendering -------------------------------------------------------------------------------------

    async def after_render(self, screened: Screened, contents: Sequence[dict[str, Any] | None]) -> list[Verdict]:
        """``contents[i]`` is candidate i's rendered content (None where it was dropped before rendering)."""
        settings = screened.settings
        lists = await self.catalog.keyword_lists() if settings.on(keywords.POLICY) else []
        limits = self._limits_in_force(await self.catalog.caps(), settings)
        verdicts: list[Verdict] = []
        counted: list[tuple[int, caps.Counted]] = []
        zones = screened.zones
        for i, (candidate, decision, content) in enumerate(
            zip(screened.candidates, screened.decisions, contents, strict=True)
        ):
            if isinstance(decision, Drop) or content is None:
                verdicts.append(Verdict(decision))
                continue
            screen, content, masked = keywords.screen(content, lists)
            decision = _combine(decision, screen)
            verdicts.append(Verdict(decision, content, masked))
            if isinstance(decision, Drop):
                continue
            key = dedup.key(candidate, content) if limits.dedup_seconds(candidate) else None  # 0: dedup is off
            entry = limits.counted(candidate, zones[i], key)
            if entry.limits:
                counted.append((i, entry))
        if counted:
            results = await self.counters.hit([counters.Hit(entry.limits) for _, entry in counted])
            for (i, entry), result in zip(counted, results, strict=True):
                if result.allowed:
                    continue
                verdict = verdicts[i]
                verdict.decision = _combine(verdict.decision, caps.decide(screened.candidates[i], entry, result))
        return verdicts

    def _limits_in_force(self, cap_list: Sequence[config.Cap], settings: config.PolicySettings) -> caps.Limits:
        limits = self._limits
        if limits is None or limits.caps is not cap_list or limits.settings is not settings:
            limits = self._limits = caps.Limits(cap_list, settings)
        return limits

    # -- at dispatch -----------------------------------------------------------------------------------------

    async def recheck(self, waited: Sequence[outbox.Claimed], now: datetime) -> dict[str, Drop]:
        """Consent and suppressions again for deliveries that waited (deferred, retried, behind a backlog), by
        delivery id: what the user asked for since they were queued holds. The moment (quiet hours) was judged
        when they were queued. A delivery whose user or template is gone meanwhile is left as it is (deleting a
        user cancels their pending deliveries)."""
        settings = await self.catalog.policy_settings()
        checks = [d for name, d in _PRE_POLICIES if name != quiet_hours.POLICY and settings.on(name)]
        if not waited or not checks:
            return {}
        users = await self.users.load_many({c.user_id for c in waited})
        async with self.db.read() as conn:
            template_of = await records.message_templates(conn, {c.message_id for c in waited})
        templates = await self.catalog.templates(sorted(set(template_of.values())))
        judged: list[tuple[str, Candidate]] = []
        for c in waited:
            user, template = users.get(c.user_id), templates.get(template_of.get(c.message_id, ""))
            if user is not None and template is not None:
                preferences = user.preferences or config.NO_PREFERENCES
                channel = model.Channel(c.channel)
                candidate = Candidate(c.message_id, user, template, channel, now, c.address, preferences=preferences)
                judged.append((c.id, candidate))
        found = await self._suppressions([candidate for _, candidate in judged], settings)
        drops: dict[str, Drop] = {}
        for delivery_id, candidate in judged:
            zone = timewindows.resolve_zone(candidate.user.timezone, settings.default_timezone)
            for decide in checks:
                decision = decide(candidate, settings, found, zone)
                if isinstance(decision, Drop):
                    drops[delivery_id] = decision
                    break
        return drops

    # -- dry run ---------------------------------------------------------------------------------------------

    async def check(
        self, candidates: Sequence[Candidate], contents: Sequence[dict[str, Any] | None]
    ) -> list[dict[str, Any]]:
        """Every policy's answer for each candidate, without counting or marking anything."""
        settings = await self.catalog.policy_settings()
        found = await self._suppressions(candidates, settings)
        lists = await self.catalog.keyword_lists()
        cap_list = await self.catalog.caps()
        over = await self._overspent(candidates)
        reports: list[dict[str, Any]] = []
        all_steps: list[list[dict[str, Any]]] = []
        counted: list[caps.Counted] = []
        for candidate, content in zip(candidates, contents, strict=True):
            zone = timewindows.resolve_zone(candidate.user.timezone, settings.default_timezone)
            steps: list[dict[str, Any]] = []  # one entry per policy, in the order they run
            if candidate.address is None:
                steps.append({"policy": ADDRESS, **explain(_no_address(candidate))})
            for name, decide in _PRE_POLICIES:
                decision = decide(candidate, settings, found, zone)
                steps.append({"policy": name, "enabled": settings.on(name), **explain(decision)})
            if over and isinstance(refused := _budget(candidate, over), Drop):  # a step only where a budget refuses
                steps.append({"policy": BUDGET, "enabled": True, **explain(refused)})
            screened_content = content
            if content is not None:
                screen, screened_content, masked = keywords.screen(content, lists)
                step = {"policy": keywords.POLICY, "enabled": settings.on(keywords.POLICY), **explain(screen)}
                if masked:
                    step["masked"] = masked
                steps.append(step)
            entry = caps.limits_for(candidate, cap_list, settings, zone, dedup.key(candidate, screened_content))
            counted.append(entry)
            reports.append({"channel": candidate.channel.value, "timezone": zone.key, "policies": steps})
            all_steps.append(steps)
        hits = [entry.hit() for entry in counted]
        results = iter(await self.counters.hit([h for h in hits if h is not None], dry_run=True))
        for report, steps, entry, hit, candidate in zip(reports, all_steps, counted, hits, candidates, strict=True):
            if hit is None:
                continue
            result = next(results)
            before = [c - 1 if result.allowed else c for c in result.counts]
            report["counters"] = caps.seen_counts(entry, before)
            steps.append({"policy": "counters", **explain(caps.decide(candidate, entry, result))})
        for report, steps in zip(reports, all_steps, strict=True):
            final: Decision = ALLOW
            for step in steps:
                if step.get("enabled", True) and step["decision"] != "allow":
                    final = _from_step(step)
                    if isinstance(final, Drop):
                        break
            report["decision"] = explain(final)
        return reports


def _loaded_suppressions(candidates: Sequence[Candidate], settings: config.PolicySettings) -> _Suppressions | None:
    """The batch's suppressions when every user came with theirs (read through the loader), else None."""
    if not candidates or not settings.on(suppression.POLICY):
        return _NO_SUPPRESSIONS
    found: dict[str, config.Suppression] = {}
    for c in candidates:
        loaded = c.user.suppressions
        if loaded is None:
            return None
        for s in loaded:
            found[s.id] = s
    return _Suppressions(list(found.values())) if found else _NO_SUPPRESSIONS


class _Suppressions:
    """The batch's suppressions, indexed so each candidate sees only its own."""

    def __init__(self, found: Sequence[config.Suppression]) -> None:
        self.by_user: dict[str, list[config.Suppression]] = defaultdict(list)
        self.by_address: dict[str, list[config.Suppression]] = defaultdict(list)
        for s in found:
            if s.user_id is not None:
                self.by_user[s.user_id].append(s)
            elif s.address is not None:
                self.by_address[s.address].append(s)
        self.any = bool(self.by_user or self.by_address)

    def relevant(self, candidate: Candidate) -> list[config.Suppression]:
        if not self.any:
            return []
        out = list(self.by_user.get(candidate.user.user_id, ()))
        for address in addresses_of(candidate.address):
            out.extend(self.by_address.get(config.normalize_address(address), ()))
        return out


_NO_SUPPRESSIONS = _Suppressions([])


# The policies that judge the person and the moment, in the order they run. Each takes (candidate, settings,
# the batch's suppressions, the candidate's zone).
_PreDecide = Callable[[Candidate, config.PolicySettings, _Suppressions, ZoneInfo], Decision]
_PRE_POLICIES: tuple[tuple[str, _PreDecide], ...] = (
    (consent.POLICY, lambda c, settings, found, zone: consent.decide(c, settings)),
    (suppression.POLICY, lambda c, settings, found, zone: suppression.decide(c, found.relevant(c))),
    (quiet_hours.POLICY, lambda c, settings, found, zone: quiet_hours.decide(c, settings, zone)),
)


def _budget(candidate: Candidate, over: dict[str, costs.Overspent]) -> Decision:
    """A marketing message of a department whose month's spend reached its budget: refused."""
    department = candidate.template.department
    spent = over.get(department) if department and candidate.category is model.Category.MARKETING else None
    if spent is None:
        return ALLOW
    amounts = f"{pricing.amount(spent.spent):g} of {pricing.amount(spent.monthly):g} {spent.currency}"
    detail: dict[str, Any] = {"department": department, "month": spent.month, "currency": spent.currency}
    detail |= {"spent": pricing.amount(spent.spent), "budget": pricing.amount(spent.monthly)}
    return Drop(BUDGET, f"budget_exceeded: department {department} spent {amounts} in {spent.month}", detail)


def _no_address(candidate: Candidate) -> Drop:
    return Drop(ADDRESS, f"no_address: the user has no {candidate.channel.value} address", {})


def _combine(current: Decision, new: Decision) -> Decision:
    """A drop wins; of two deferrals the later one; a deferral survives a later allow."""
    if current is ALLOW:
        return new
    if isinstance(current, Drop) or isinstance(new, Drop):
        return current if isinstance(current, Drop) else new
    if isinstance(current, Defer) and isinstance(new, Defer):
        return current if current.until >= new.until else new
    return current if isinstance(current, Defer) else new


def _from_step(step: dict[str, Any]) -> Decision:
    if step["decision"] == "drop":
        return Drop(step["policy"], step["reason"], step.get("detail", {}))
    return Defer(datetime.fromisoformat(step["until"]), step["policy"], step["reason"], step.get("detail", {}))
