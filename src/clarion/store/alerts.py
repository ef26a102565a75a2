"""Alert rules, their state and their history in the store, the figures the alert loop judges, and the loop's
round lease (``pipeline.alerting`` decides and sends; this reads and writes).

Figures come from what is already kept, never from a scan of deliveries: delivery rates and failures from the
hourly funnel rollup (``store.rollups``), counted by the whole hours a window touches, as the rollup keeps them;
the oldest queued urgent delivery from the outbox's claim index (status, lane, run_at).

The round lease is one row of ``alert_states`` under ``ROUND`` (a key no rule can have: rule keys are
``[A-Za-z0-9_.:@-]``): ``notified_at`` holds when the next round is due (or, while one runs, when its lease
ends), ``firing_since`` when the running round started and ``value`` the running holder's token. A round is
taken by a conditional update of that row, so on SQLite and PostgreSQL alike one process evaluates at a time,
and a process that dies mid-round holds the others out only until its lease ends.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.analytics import alerts, funnel
from clarion.domain import errors, model
from clarion.store import records, rollups
from clarion.store import tables as t
from clarion.store.db import Database
from clarion.store.driver import Conn, executemany, fetch

log = logging.getLogger(__name__)
_R, _S, _A, _H = t.alert_rules, t.alert_states, t.alerts, t.funnel_hourly
ROUND = "$round"
#: the rollup stages a rate rule reads; a failure is a send that failed or a receipt that said it did not arrive
_FAILURES = ("failed", "undelivered", "bounced")
_STAGES = ("sent", "delivered", *_FAILURES)
BASELINE_DAYS = 7


def subject_key(subject: alerts.Subject) -> str:
    """How a subject is stored: ``provider:aliyun-a``, ``all:``."""
    return f"{subject.dimension}:{subject.key}"


def subject_of(stored: str) -> alerts.Subject:
    dimension, _, key = stored.partition(":")
    return alerts.Subject(dimension, key)


# -- rules -------------------------------------------------------------------------------------------------------


def rule_json(row: Any) -> dict[str, Any]:
    return {**row.rule, "created_at": row.created_at.isoformat(), "updated_at": row.updated_at.isoformat()}


async def get(conn: Conn, key: str) -> Any | None:
    return (await conn.execute(sa.select(_R).where(_R.c.key == key))).first()


async def rules(conn: Conn) -> list[alerts.AlertRule]:
    """Every stored rule, by key; one that no longer reads as a rule (stored by another version) is logged and
    left out, so it cannot silence the others."""
    out = []
    for row in (await conn.execute(sa.select(_R.c.key, _R.c.rule).order_by(_R.c.key))).all():
        try:
            out.append(alerts.AlertRule.from_json(row.rule))
        except errors.InvalidInput as exc:
            log.warning("alert rule %s is not evaluated: %s", row.key, exc.message)
    return out


async def put(db: Database, conn: AsyncConnection, rule: alerts.AlertRule, now: datetime) -> bool:
    """Create or replace ``rule``; True when it was created. Its state is kept, so a firing alert whose rule is
    tuned holds (or recovers) rather than firing anew."""
    return await records.upsert(db, conn, _R, rule.key, {"rule": rule.to_json()}, now)


async def delete(conn: Conn, key: str) -> bool:
    """Remove the rule and its state; its history stays."""
    await conn.execute(_S.delete().where(_S.c.rule_key == key))
    return bool((await conn.execute(_R.delete().where(_R.c.key == key))).rowcount)


# -- state and history -------------------------------------------------------------------------------------------


async def states(conn: Conn) -> dict[tuple[str, str], alerts.AlertState]:
    """Every rule's state per subject (the round lease left out)."""
    rows = await fetch(conn, sa.select(_S).where(_S.c.rule_key != ROUND))
    return {(r.rule_key, r.subject): alerts.AlertState(r.firing_since, r.notified_at, r.value) for r in rows}


async def record(
    db: Database,
    conn: Conn,
    changed: Mapping[tuple[str, str], alerts.AlertState],
    notices: Sequence[Mapping[str, Any]],
) -> None:
    """Write a round's changed states and its notices, in one transaction. A rule deleted while the round ran
    keeps no state (its notices are history, and stay)."""
    kept = {row.key for row in await fetch(conn, sa.select(_R.c.key))}
    rows = [
        {"rule_key": rule, "subject": subject, **_columns(state)}
        for (rule, subject), state in sorted(changed.items())
        if rule in kept
    ]
    if rows:
        statement = db.insert(_S)
        upsert = statement.on_conflict_do_update(
            index_elements=[_S.c.rule_key, _S.c.subject],
            set_={c: statement.excluded[c] for c in ("firing_since", "notified_at", "value")},
        )
        await executemany(conn, upsert, rows)
    if notices:
        await executemany(conn, _A.insert(), [dict(n) for n in notices])


def _columns(state: alerts.AlertState) -> dict[str, Any]:
    return {"firing_since": state.firing_since, "notified_at": state.notified_at, "value": state.value}


async def history(conn: Conn, *, rule: str | None, since: datetime | None, limit: int) -> list[Any]:
    """The notices, newest first."""
    query = sa.select(_A).order_by(_A.c.at.desc(), _A.c.id.desc()).limit(limit)
    if rule is not None:
        query = query.where(_A.c.rule_key == rule)
    if since is not None:
        query = query.where(_A.c.at >= since)
    return list(await fetch(conn, query))


def notice_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "rule": row.rule_key,
        "subject": row.subject,
        "action": row.action,
        "text": row.text,
        "value": row.value,
        "notified": row.notified,
        "error": row.error,
        "at": row.at.isoformat(),
    }


# -- figures -----------------------------------------------------------------------------------------------------


async def rate_window(conn: Conn, subject: alerts.Subject, minutes: int, now: datetime) -> alerts.RateWindow:
    """Sends, deliveries and failures of ``subject`` over the hours the last ``minutes`` touch, and the same
    hours of each of the previous 7 days: the baseline rate pools those days' deliveries and sends, the
    baseline failures are their mean per day that had any (None with no such day)."""
    window = timedelta(minutes=minutes)
    ranges = [
        (rollups.floor_hour(now - window - timedelta(days=d)), now - timedelta(days=d))
        for d in range(BASELINE_DAYS + 1)
    ]
    query = (
        sa.select(_H.c.bucket, _H.c.stage, sa.func.sum(_H.c["count"]).label("n"))
        .where(_H.c.stage.in_(_STAGES), sa.or_(*(sa.and_(_H.c.bucket >= lo, _H.c.bucket <= hi) for lo, hi in ranges)))
        .group_by(_H.c.bucket, _H.c.stage)
    )
    if subject.dimension != "all":
        query = query.where(_H.c[funnel.GROUPS[subject.dimension]] == subject.key)
    days: dict[int, dict[str, int]] = {}
    for row in await fetch(conn, query):
        day = next(d for d, (lo, hi) in enumerate(ranges) if lo <= row.bucket <= hi)
        counts = days.setdefault(day, dict.fromkeys(("sent", "delivered", "failed"), 0))
        counts["failed" if row.stage in _FAILURES else row.stage] += int(row.n)
    current = days.pop(0, {"sent": 0, "delivered": 0, "failed": 0})
    sent = sum(d["sent"] for d in days.values())
    return alerts.RateWindow(
        sent=current["sent"],
        delivered=current["delivered"],
        failed=current["failed"],
        baseline_rate=sum(d["delivered"] for d in days.values()) / sent if sent else None,
        baseline_failed=sum(d["failed"] for d in days.values()) / len(days) if days else None,
    )


async def queue_age(conn: Conn, now: datetime) -> alerts.QueueAge:
    """How long the oldest urgent delivery due to be sent has been waiting in the queue."""
    d = t.deliveries
    oldest = (
        await conn.execute(
            sa.select(sa.func.min(d.c.run_at)).where(
                d.c.status == model.DeliveryStatus.QUEUED.value,
                d.c.lane == model.Priority.URGENT.lane,
                d.c.run_at <= now,
            )
        )
    ).scalar()
    return alerts.QueueAge(None if oldest is None else max(0.0, (now - oldest).total_seconds()))


async def accounts(conn: Conn) -> list[str]:
    """The configured provider accounts' names (those a breaker rule without a scope watches, with the
    built-ins)."""
    return [row.name for row in await fetch(conn, sa.select(t.providers.c.name).order_by(t.providers.c.name))]


async def account_kind(conn: Conn, name: str) -> str | None:
    return (await conn.execute(sa.select(t.providers.c.kind).where(t.providers.c.name == name))).scalar()


# -- the round lease ---------------------------------------------------------------------------------------------


async def take_round(db: Database, conn: Conn, *, token: float, now: datetime, until: datetime) -> bool:
    """Take the round if it is due at ``now`` and no other process holds it: True when this caller has it,
    until ``until`` at the latest."""
    taken = await conn.execute(
        _S.update()
        .where(
            _S.c.rule_key == ROUND,
            _S.c.subject == "",
            sa.or_(_S.c.notified_at.is_(None), _S.c.notified_at <= now),
        )
        .values(firing_since=now, notified_at=until, value=token)
    )
    if taken.rowcount:
        return True
    first = db.insert(_S).values(rule_key=ROUND, subject="", firing_since=now, notified_at=until, value=token)
    return bool((await conn.execute(first.on_conflict_do_nothing())).rowcount)


async def end_round(conn: Conn, *, token: float, next_due: datetime) -> None:
    """Hand the round back, due again at ``next_due``; nothing when another process has taken it since."""
    await conn.execute(
        _S.update().where(_S.c.rule_key == ROUND, _S.c.subject == "", _S.c.value == token).values(notified_at=next_due)
    )
