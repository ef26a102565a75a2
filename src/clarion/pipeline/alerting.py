"""The alert loop: every ``interval`` the stored alert rules are judged (``analytics.alerts.evaluate``) on the
figures Clarion keeps, and each notice goes out through the rule's provider account.

What each kind watches:

* ``delivery_rate`` and ``failure_spike`` — the rule's scope (a provider, channel or template), or all
  deliveries when it has none, from the hourly funnel rollup (``store.alerts.rate_window``);
* ``urgent_queue_age`` — the oldest urgent delivery due and still queued;
* ``breaker_opened`` — each provider account's breaker (configured accounts and the built-ins, or the one its
  scope names), as the dispatcher's breakers hold it; half-open counts as open: it is not closed until its probe
  succeeds;
* ``budget`` — each budgeted department's spend this month against its budget (``store.costs.month_use``), or
  the department its scope names (one with no budget is not judged).

A notice is sent straight through the account's provider (as a probe is: no message, no policy, no breaker),
with a title and text shaped for its channel: JSON for a webhook, markdown for a WeCom, DingTalk or Feishu
robot, plain text for e-mail. Every notice is written to ``alerts`` — ``sent``, or ``failed`` with the error —
with the states, in one transaction after the sends (a crash between them sends the notice again next round:
at least once). De-duplication is ``evaluate``'s: a firing alert notifies once, again every ``repeat_minutes``,
and once more when it recovers. A fire or repeat notice that failed leaves the alert unnotified, so the next
round tries again; a failed recovery notice is not retried (the alert is over).

With several processes one evaluates a round at a time (``store.alerts.take_round``); the others skip it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from clarion.analytics import alerts
from clarion.channels import registry
from clarion.domain import model
from clarion.store import alerts as store
from clarion.store import costs
from clarion.store.db import Database
from clarion.store.driver import Conn

log = logging.getLogger(__name__)

#: the provider kinds that can carry an alert: the channel their notice is shaped for, and whether the rule
#: must say where to (``notify.to``: a webhook URL, an e-mail address); a robot posts to its own group
CARRIERS: dict[str, tuple[model.Channel, bool]] = {
    "webhook": (model.Channel.WEBHOOK, True),
    "smtp": (model.Channel.EMAIL, True),
    "wecom_robot": (model.Channel.WECOM, False),
    "dingtalk_robot": (model.Channel.DINGTALK, False),
    "feishu_bot": (model.Channel.FEISHU, False),
}
QUEUE = alerts.Subject("queue", "urgent")
_HEADINGS = {"fire": "Alert", "repeat": "Still firing", "recover": "Recovered"}


def refusal(kind: str | None, notify: alerts.Notify) -> tuple[str, str, str] | None:
    """Why ``notify`` cannot carry a rule's notices through an account of ``kind`` (None: no such account), as
    (field, code, message); None when it can."""
    if kind is None:
        return "notify.provider", "unknown_provider", f"no provider account is named {notify.provider!r}"
    if kind not in CARRIERS:
        kinds = ", ".join(sorted(CARRIERS))
        return "notify.provider", "cannot_notify", f"a {kind} account cannot carry an alert (kinds that can: {kinds})"
    channel, needs_to = CARRIERS[kind]
    if needs_to and notify.to is None:
        what = "a URL" if channel is model.Channel.WEBHOOK else "an e-mail address"
        return "notify.to", "invalid_alert", f"a {kind} account needs {what} to send the alert to"
    if channel is model.Channel.WEBHOOK and notify.to is not None and not notify.to.startswith(("http://", "https://")):
        return "notify.to", "invalid_alert", "must be an http(s) URL"
    if channel is model.Channel.EMAIL and notify.to is not None and "@" not in notify.to:
        return "notify.to", "invalid_alert", "must be an e-mail address"
    return None


def content(
    channel: model.Channel, rule: alerts.AlertRule, subject: alerts.Subject, t: alerts.Transition, now: datetime
) -> dict[str, Any]:
    """A notice's content on ``channel``: what people read first is the heading and the rule, then the figure."""
    title = f"[Clarion] {_HEADINGS[t.action]}: {rule.key}"
    since = t.state.firing_since or t.state.notified_at
    facts = [f"rule: {rule.key} ({rule.kind})", f"subject: {subject}", f"at: {now.isoformat()}"]
    if t.action != "recover" and since is not None:
        facts.insert(2, f"firing since: {since.isoformat()}")
    if channel is model.Channel.WEBHOOK:
        alert = {
            "rule": rule.key,
            "kind": rule.kind,
            "subject": store.subject_key(subject),
            "action": t.action,
            "text": t.text,
            "value": t.state.value,
            "firing_since": t.state.firing_since.isoformat() if t.state.firing_since else None,
            "at": now.isoformat(),
        }
        return {"body": {"title": title, "alert": alert}}
    if channel is model.Channel.EMAIL:
        return {"subject": title, "text": "\n".join([t.text, "", *facts])}
    markdown = "\n".join([f"### {title}", "", t.text, "", *(f"- {fact}" for fact in facts)])
    return {"title": title, "markdown": markdown}


def _watches(rule: alerts.AlertRule, subject: alerts.Subject) -> bool:
    """Whether ``subject`` is one ``rule`` judges as it now reads."""
    if rule.kind in ("delivery_rate", "failure_spike"):
        return subject == (rule.condition.scope or alerts.Subject.everything())
    if rule.kind == "urgent_queue_age":
        return subject == QUEUE
    return subject.dimension == alerts.SCOPES[rule.kind][0] and rule.covers(subject)


@dataclass(slots=True)
class Round:
    """What one round did: whether this process took it, the subjects judged, and the notices it wrote."""

    taken: bool = True
    judged: int = 0
    notices: list[dict[str, Any]] = field(default_factory=list)


class AlertLoop:
    def __init__(
        self,
        db: Database,
        providers: registry.ProviderRegistry,
        *,
        interval: timedelta,
        clock: Callable[[], datetime],
        lease: timedelta | None = None,
    ) -> None:
        self.db = db
        self.providers = providers
        self.interval = interval
        #: a process that dies mid-round holds the others out this long
        self.lease = lease or max(interval * 2, timedelta(minutes=5))
        #: Clarion's time (bootstrap makes it the dispatcher's); tests set their own
        self.clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        """A round every ``interval`` until ``stop`` is set; a round that fails is logged and the next one comes."""
        while not stop.is_set():
            try:
                done = await self.run_once()
                if done.notices:
                    log.info("alerts: %d judged, %d notices", done.judged, len(done.notices))
            except Exception:
                log.exception("alert round failed; the next round tries again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval.total_seconds())

    async def run_once(self) -> Round:
        """Judge every rule now, if the round is due and no other process holds it (``taken`` False otherwise)."""
        now = self.clock()
        token = float(secrets.randbits(48))

        async def take(conn: Conn) -> bool:
            return await store.take_round(self.db, conn, token=token, now=now, until=now + self.lease)

        if not await self.db.write(take):
            return Round(taken=False)
        try:
            return await self._round(now)
        finally:

            async def end(conn: Conn) -> None:
                await store.end_round(conn, token=token, next_due=now + self.interval)

            await self.db.write(end)

    async def _round(self, now: datetime) -> Round:
        done = Round()
        async with self.db.read() as conn:
            rules = await store.rules(conn)
            before = await store.states(conn)
            judged = [(rule, *await self._observe(conn, rule, before, now)) for rule in rules]
        changed: dict[tuple[str, str], alerts.AlertState] = {}
        for rule, observed, quieted in judged:
            for subject in quieted:
                key = (rule.key, store.subject_key(subject))
                changed[key] = alerts.AlertState(value=before[key].value)
            for subject, observation in observed:
                key = (rule.key, store.subject_key(subject))
                transition = alerts.evaluate(rule, subject, observation, before.get(key), now)
                done.judged += 1
                state = transition.state
                if transition.notifies:
                    notice = await self._notify(rule, subject, transition, now)
                    done.notices.append(notice)
                    if notice["notified"] == "failed" and transition.action != "recover":
                        state = replace(state, notified_at=None)  # told no one: the next round tries again
                if state != before.get(key, alerts.AlertState()):
                    changed[key] = state

        async def job(conn: Conn) -> None:
            await store.record(self.db, conn, changed, done.notices)

        if changed or done.notices:
            await self.db.write(job)
        return done

    async def _observe(
        self,
        conn: Conn,
        rule: alerts.AlertRule,
        states: dict[tuple[str, str], alerts.AlertState],
        now: datetime,
    ) -> tuple[list[tuple[alerts.Subject, alerts.Observation]], list[alerts.Subject]]:
        """The subjects ``rule`` is judged on this round, each with its figures; and the subjects where it was
        firing but no longer watches (the rule disabled, its scope changed), to be quieted without a notice."""
        firing = [
            store.subject_of(s) for (r, s), state in states.items() if r == rule.key and state.firing_since is not None
        ]
        if not rule.enabled:
            return [], firing
        c = rule.condition
        observed: list[tuple[alerts.Subject, alerts.Observation]] = []
        if rule.kind in ("delivery_rate", "failure_spike"):
            subject = c.scope or alerts.Subject.everything()
            observed = [(subject, await store.rate_window(conn, subject, c.window_minutes, now))]
        elif rule.kind == "urgent_queue_age":
            observed = [(QUEUE, await store.queue_age(conn, now))]
        elif rule.kind == "breaker_opened":
            names = [c.scope.key] if c.scope else [*self.providers.builtins, *await store.accounts(conn)]
            names += [s.key for s in firing if s.dimension == "provider" and rule.covers(s) and s.key not in names]
            opened = await self._open_breakers(names)
            if opened is not None:
                observed = [(alerts.Subject("provider", n), alerts.BreakerState(opened)) for n in names]
        else:  # budget: each budgeted department (or the scope's) this month; one without a budget is not judged
            month = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            use = await costs.month_use(conn, month)
            names = [c.scope.key] if c.scope else sorted(use)
            names += [s.key for s in firing if s.dimension == "department" and rule.covers(s) and s.key not in names]
            observed = [(alerts.Subject("department", n), alerts.BudgetUse(*use.get(n, (0.0, 0.0)))) for n in names]
        return observed, [s for s in firing if not _watches(rule, s)]

    async def _open_breakers(self, names: list[str]) -> frozenset[str] | None:
        """The accounts of ``names`` whose breaker is open or half-open; None when no breakers are kept."""
        breakers = self.providers.breakers
        if breakers is None:
            return None
        at = self.providers.clock()
        opened = set()
        for name in names:
            view = await breakers.health(name, at)
            state = view["breaker"]["state"]  # type: ignore[index]
            if state != "closed":
                opened.add(name)
        return frozenset(opened)

    async def _notify(
        self, rule: alerts.AlertRule, subject: alerts.Subject, transition: alerts.Transition, now: datetime
    ) -> dict[str, Any]:
        """Send one notice through the rule's account; the ``alerts`` row that records it."""
        error: str | None = None
        try:
            provider = await self.providers.get(rule.notify.provider)
            if provider.kind not in CARRIERS:
                raise ValueError(f"a {provider.kind} account cannot carry an alert")
            channel = CARRIERS[provider.kind][0]
            notice_id = "alert_" + secrets.token_hex(8)
            outgoing = model.Outgoing(
                delivery_id=notice_id,
                message_id=notice_id,
                user_id="alerts",
                channel=channel,
                address=rule.notify.to,
                content=content(channel, rule, subject, transition, now),
                priority=model.Priority.URGENT.value,
            )
            [result] = await provider.send([outgoing])
            if result.error is not None:
                raise result.error
        except Exception as exc:  # whatever went wrong is the notice's error, and the round goes on
            code = getattr(exc, "code", None) or type(exc).__name__
            error = f"{code}: {getattr(exc, 'message', None) or exc}"[:1000]
            log.warning("alert %s on %s: notice through %s failed: %s", rule.key, subject, rule.notify.provider, error)
        return {
            "rule_key": rule.key,
            "subject": store.subject_key(subject),
            "action": transition.action,
            "text": transition.text,
            "value": transition.state.value,
            "notified": "failed" if error else "sent",
            "error": error,
            "at": now,
        }
