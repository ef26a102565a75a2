"""The dry run before a campaign sends: how many it reaches, what each policy would drop or defer, how many SMS
segments it bills and what it costs — without sending, counting or marking anything.

Every audience user is judged (``PolicyStage.check``, the dry run of ``POST /v1/policies/check``) at the moment
the campaign would first run, up to ``exact_max`` users; above that a uniform random sample (seeded by the
campaign key, so two estimates of the same audience agree) stands for the whole, and each figure comes with a
95% interval (Wilson's for counts, the normal one for sums, both with the finite-population correction).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from clarion.campaigns import definition as spec
from clarion.domain import approval, errors, model, render, sms, variants
from clarion.domain.policy import config
from clarion.domain.policy.decision import Candidate
from clarion.store import campaigns as store
from clarion.store import records
from clarion.store import tables as t

if TYPE_CHECKING:
    from clarion.bootstrap import Clarion

Z95 = 1.959964
CHUNK = 1000


@dataclass(slots=True)
class _Channel:
    candidates: int = 0
    send: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    deferred: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    segments: list[int] = field(default_factory=list)  # per judged delivery that would go (0 elsewhere)


@dataclass(frozen=True, slots=True)
class Scale:
    """From the judged users to the whole eligible audience."""

    population: int
    sample: int

    @property
    def exact(self) -> bool:
        return self.sample >= self.population

    def count(self, hits: int) -> tuple[int, list[int] | None]:
        if self.exact or self.sample == 0:
            return hits, None
        n, big = self.sample, self.population
        p = hits / n
        fpc = math.sqrt((big - n) / (big - 1)) if big > 1 else 0.0
        denom = 1 + Z95**2 / n
        centre = (p + Z95**2 / (2 * n)) / denom
        half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom * fpc
        low, high = max(0.0, centre - half), min(1.0, centre + half)
        return round(p * big), [math.floor(low * big), math.ceil(high * big)]

    def total(self, values: Sequence[int]) -> tuple[int, list[int] | None]:
        """A sum over the population from its per-user values in the sample."""
        if self.exact or not values:
            return sum(values), None
        n, big = len(values), self.population
        mean = sum(values) / n
        var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        fpc = math.sqrt((big - n) / (big - 1)) if big > 1 else 0.0
        half = Z95 * math.sqrt(var / n) * fpc * big
        return round(mean * big), [max(0, math.floor(mean * big - half)), math.ceil(mean * big + half)]


async def _template(clarion: Clarion, key: str) -> model.Template:
    """The version sends would use; a template still in review is estimated with its latest version."""
    try:
        template = await clarion.catalog.template(key)
    except approval.NotApproved:
        async with clarion.db.read() as conn:
            row = (await conn.execute(t.templates.select().where(t.templates.c.key == key))).first()
        template = records.template_from_row(row) if row is not None else None
    if template is None:
        raise errors.InvalidInput(
            f"template {key!r} does not exist", code="unknown_template", details={"field": "template"}
        )
    return template


async def estimate(
    clarion: Clarion,
    key: str,
    definition: spec.Definition,
    *,
    at: datetime,
    exact_max: int,
    sample_size: int,
    prices: Mapping[str, float],
    currency: str,
) -> dict[str, Any]:
    template = await _template(clarion, definition.template)
    channels = definition.channels_for(template)
    audience = list(dict.fromkeys(await clarion.campaigns.audiences.audience(definition.audience)))
    size = len(audience)
    excluded = 0
    if definition.exclude_reached_days:
        async with clarion.db.read() as conn:
            reached = await store.reached_since(conn, key, at - timedelta(days=definition.exclude_reached_days))
        audience = [u for u in audience if u not in reached]
        excluded = size - len(audience)
    judged = audience
    if len(audience) > exact_max:
        judged = random.Random(key).sample(audience, min(sample_size, len(audience)))
    scale = Scale(len(audience), len(judged))

    per_channel = {c: _Channel() for c in channels}
    own: dict[str, dict[str, int]] = defaultdict(lambda: {"drop": 0, "defer": 0})
    unknown = reached_users = render_errors = 0
    for start in range(0, len(judged), CHUNK):
        chunk = judged[start : start + CHUNK]
        users = await clarion.intake.users.load_many(chunk)
        candidates: list[Candidate] = []
        contents: list[dict[str, Any] | None] = []
        owners: list[int] = []
        for index, user_id in enumerate(chunk):
            user = users.get(user_id)
            if user is None:
                unknown += 1
                continue
            prefs = user.preferences or config.NO_PREFERENCES
            context = render.context_for(user, definition.data)
            variant = variants.choose(template, user_id)
            for channel in channels:
                candidates.append(
                    Candidate("estimate", user, template, channel, at, user.address_for(channel), None, prefs)
                )
                try:
                    contents.append(render.compose(template, channel, context, variant))
                except errors.RenderError:
                    render_errors += 1
                    contents.append(None)
                owners.append(index)
        reports = await clarion.policies.check(candidates, contents) if candidates else []
        reaching: set[int] = set()
        for candidate, content, report, owner in zip(candidates, contents, reports, owners, strict=True):
            tally = per_channel[candidate.channel]
            tally.candidates += 1
            for step in report["policies"]:
                if step.get("enabled", True) and step["decision"] in ("drop", "defer"):
                    own[step["policy"]][step["decision"]] += 1
            final = report["decision"]
            if content is None:
                tally.dropped["render_error"] += 1
                tally.segments.append(0)
                continue
            if final["decision"] == "drop":
                tally.dropped[final["policy"]] += 1
                tally.segments.append(0)
                continue
            if final["decision"] == "defer":
                tally.deferred[final["policy"]] += 1
            tally.send += 1
            reaching.add(owner)
            text = content.get("text") if candidate.channel is model.Channel.SMS else None
            tally.segments.append(sms.count_segments(text).count if isinstance(text, str) else 0)
        reached_users += len(reaching)
    return _answer(
        key,
        template,
        definition,
        at,
        size,
        excluded,
        scale,
        unknown,
        reached_users,
        render_errors,
        per_channel,
        own,
        prices,
        currency,
    )


def _answer(
    key: str,
    template: model.Template,
    definition: spec.Definition,
    at: datetime,
    size: int,
    excluded: int,
    scale: Scale,
    unknown: int,
    reached_users: int,
    render_errors: int,
    per_channel: dict[model.Channel, _Channel],
    own: Mapping[str, Mapping[str, int]],
    prices: Mapping[str, float],
    currency: str,
) -> dict[str, Any]:
    intervals: dict[str, list[int]] = {}

    def count(path: str, hits: int) -> int:
        value, bounds = scale.count(hits)
        if bounds is not None:
            intervals[path] = bounds
        return value

    channels_out: dict[str, Any] = {}
    total_cost = 0.0
    for channel, tally in per_channel.items():
        name = channel.value
        send = count(f"channels.{name}.send", tally.send)
        entry: dict[str, Any] = {
            "deliveries": count(f"channels.{name}.deliveries", tally.candidates),
            "send": send,
            "dropped": {p: count(f"channels.{name}.dropped.{p}", n) for p, n in sorted(tally.dropped.items())},
            "deferred": {p: count(f"channels.{name}.deferred.{p}", n) for p, n in sorted(tally.deferred.items())},
        }
        price = float(prices.get(name, 0.0))
        units = send
        if channel is model.Channel.SMS:
            segments, bounds = scale.total(tally.segments)
            if bounds is not None:
                intervals[f"channels.{name}.segments"] = bounds
            entry["segments"] = segments
            entry["segments_per_message"] = round(segments / send, 3) if send else 0.0
            units = segments
        entry["cost"] = round(units * price, 4)
        entry["price"] = price
        total_cost += entry["cost"]
        channels_out[name] = entry
    return {
        "campaign": key,
        "template": template.key,
        "version": template.version,
        "at": at.isoformat(),
        "audience": {
            "size": size,
            "excluded": excluded,  # reached by an earlier run within exclude_reached_days
            "eligible": scale.population,
            "unknown_users": count("audience.unknown_users", unknown),
            "reached": count("audience.reached", reached_users),  # users with at least one delivery going out
        },
        "exact": scale.exact,
        "judged": scale.sample,
        "confidence": None if scale.exact else 0.95,
        "channels": channels_out,
        "policies": {p: {k: count(f"policies.{p}.{k}", n) for k, n in v.items()} for p, v in sorted(own.items())},
        "render_errors": count("render_errors", render_errors),
        "cost": {"total": round(total_cost, 4), "currency": currency},
        "intervals": intervals,
    }
