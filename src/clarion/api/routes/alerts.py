"""``/v1/alert-rules`` and ``/v1/alerts``: stored alert rules and the history of their notices.

A rule (``analytics.alerts``) watches a delivery rate (below a threshold, or N points below its 7-day same-hour
baseline), failure spikes, the oldest queued urgent delivery, open breakers, or a budget share, and notifies
through a provider account that can carry an alert — a ``webhook`` (``notify.to``: the URL), an ``smtp``
account (``notify.to``: the address), or a ``wecom_robot``, ``dingtalk_robot`` or ``feishu_bot`` (its group).
The alert loop (``pipeline.alerting``) judges the rules every ``CLARION_ALERT_INTERVAL_SECONDS``.

Rules name accounts and addresses, so reading and changing them needs ``admin``, like the accounts; every change
is in the audit log (``alert_rule.create``, ``alert_rule.update``, ``alert_rule.delete``, subject
``alert_rule:<key>``). The history is read by ``admin`` and ``editor``: editors own the templates whose delivery
the alerts speak of, and a notice's text names no address or secret; business systems' ``sender`` keys have no
use for it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import AwareDatetime, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import bootstrap
from clarion.analytics import alerts as rules
from clarion.api import deps, problems, schemas, views
from clarion.domain import approval, errors
from clarion.pipeline import alerting
from clarion.store import alerts as store
from clarion.store import audit as audit_log
from clarion.store import records
from clarion.store import tables as t

router = APIRouter(prefix="/v1", tags=["alerts"], dependencies=deps.AUTH)
RuleKey = Path(min_length=1, max_length=rules.KEY_MAX, pattern=r"^[A-Za-z0-9_.:@-]+$")
Kind = Literal["delivery_rate", "failure_spike", "urgent_queue_age", "breaker_opened", "budget"]
Action = Literal["fire", "repeat", "recover"]


class NotifyIn(schemas.Strict):
    provider: schemas.Key = Field(description="a provider account that can carry an alert")
    to: str | None = Field(
        default=None,
        min_length=1,
        max_length=2000,
        description="webhook: the URL; smtp: the e-mail address; robots: leave out (they post to their group)",
    )


class AlertRuleIn(schemas.Strict):
    kind: Kind
    condition: schemas.Document = Field(
        default_factory=dict,
        description="scope ({provider|channel|template|department: key}, as the kind allows) and the kind's "
        "fields: delivery_rate window_minutes, threshold (0-1), drop_points, min_sent; failure_spike "
        "window_minutes, min_failures, factor; urgent_queue_age seconds; budget share",
    )
    notify: NotifyIn
    repeat_minutes: int = Field(default=60, ge=0, le=60 * 24 * 30, description="notify again while firing; 0: never")
    enabled: bool = True


class Notify(views.View):
    provider: str
    to: str | None


class AlertRule(views.View):
    key: str
    kind: Kind
    condition: dict[str, Any] = Field(description="the fields the kind reads, defaults filled in")
    notify: Notify
    repeat_minutes: int
    enabled: bool
    created_at: views.Timestamp
    updated_at: views.Timestamp


class AlertRuleList(views.View):
    rules: list[AlertRule]


class Notice(views.View):
    id: int
    rule: str
    subject: str = Field(description="what the figure is for: provider:NAME, channel:NAME, template:KEY, all:, …")
    action: Action = Field(description="fire: it began; repeat: still firing after repeat_minutes; recover: over")
    text: str
    value: float | None = Field(description="the figure judged (a rate, a count, seconds, a share)")
    notified: Literal["sent", "failed"]
    error: str | None = Field(description="why the notice did not go out")
    at: views.Timestamp


class NoticeList(views.View):
    alerts: list[Notice]


def _refuse(field: str, code: str, message: str) -> errors.InvalidInput:
    return errors.InvalidInput(f"{field}: {message}", code=code, details=[{"field": field, "message": message}])


async def _check_notify(conn: AsyncConnection, clarion: bootstrap.Clarion, notify: rules.Notify) -> None:
    """422 naming the field unless ``notify`` names an account that can carry an alert, with what it needs."""
    builtin = clarion.providers.builtins.get(notify.provider)
    kind = builtin.kind if builtin is not None else await store.account_kind(conn, notify.provider)
    refused = alerting.refusal(kind, notify)
    if refused is not None:
        raise _refuse(*refused)


@router.put(
    "/alert-rules/{key}", response_model=AlertRule, responses={**views.created(AlertRule), **problems.answers(403)}
)
async def put_alert_rule(
    body: AlertRuleIn, clarion: deps.Services, caller: deps.Caller, response: Response, key: str = RuleKey
) -> dict[str, Any]:
    """Create or replace an alert rule (``admin``) — 403 ``forbidden`` otherwise. 422 naming the field for a
    condition the kind does not take or a value out of range (``invalid_alert``), a ``notify.provider`` that
    does not exist (``unknown_provider``) or cannot carry an alert (``cannot_notify``), or a ``notify.to``
    missing where the account needs one. A firing alert keeps its state: tuning the rule does not notify anew."""
    approval.require(caller.roles, approval.ADMINISTER)
    rule = rules.AlertRule.from_json({**body.model_dump(), "key": key})
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        await _check_notify(conn, clarion, rule.notify)
        created = await store.put(clarion.db, conn, rule, now)
        action = "alert_rule.create" if created else "alert_rule.update"
        subject = f"alert_rule:{key}"
        await audit_log.record(conn, actor=caller.name, action=action, subject=subject, at=now, detail=rule.to_json())
        return created

    created = await clarion.db.write(job)
    response.status_code = 201 if created else 200
    return store.rule_json(await deps.read_or_404(clarion, store.get, "alert rule", key))


@router.get("/alert-rules/{key}", response_model=AlertRule, responses=problems.answers(403, 404))
async def get_alert_rule(clarion: deps.Services, caller: deps.Caller, key: str = RuleKey) -> dict[str, Any]:
    """One alert rule (``admin``)."""
    approval.require(caller.roles, approval.ADMINISTER)
    return store.rule_json(await deps.read_or_404(clarion, store.get, "alert rule", key))


@router.get("/alert-rules", response_model=AlertRuleList, responses=problems.answers(403))
async def list_alert_rules(clarion: deps.Services, caller: deps.Caller) -> dict[str, Any]:
    """Every alert rule, by key (``admin``)."""
    approval.require(caller.roles, approval.ADMINISTER)
    return {"rules": [store.rule_json(row) for row in await records.list_all(clarion.db, t.alert_rules)]}


@router.delete("/alert-rules/{key}", status_code=204, responses=problems.answers(403, 404))
async def delete_alert_rule(clarion: deps.Services, caller: deps.Caller, key: str = RuleKey) -> Response:
    """Remove an alert rule and its state (``admin``); its notices stay in the history. Written to the audit log
    as ``alert_rule.delete`` with the rule as it was."""
    approval.require(caller.roles, approval.ADMINISTER)
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> bool:
        return await audit_log.delete_recorded(
            conn,
            key,
            read=store.get,
            delete=store.delete,
            summary=lambda row: row.rule,
            kind="alert_rule",
            actor=caller.name,
            at=now,
        )

    if not await clarion.db.write(job):
        raise errors.NotFound("alert rule", key)
    return Response(status_code=204)


@router.get("/alerts", response_model=NoticeList, responses=problems.answers(403))
async def list_alerts(
    clarion: deps.Services,
    caller: deps.Caller,
    rule: str | None = Query(default=None, min_length=1, max_length=rules.KEY_MAX, description="one rule's notices"),
    since: AwareDatetime | None = Query(default=None, description="notices at or after this time"),
    limit: int = Query(default=100, ge=1, le=1000),
) -> dict[str, Any]:
    """The alert history, newest first (``admin``, ``editor``): every notice fired, repeated or recovered, and
    whether it went out (``notified``: ``sent``, or ``failed`` with the ``error``)."""
    approval.require(caller.roles, approval.EDIT)
    async with clarion.db.read() as conn:
        rows = await store.history(conn, rule=rule, since=since, limit=limit)
    return {"alerts": [store.notice_json(row) for row in rows]}
