"""The campaign use cases the API, the CLI and the console share: save, the lifecycle actions, the estimate, and
what a campaign shows (its runs' progress and its funnel).

Each write reads the campaign, asks ``lifecycle`` and writes the answer with its audit entry in one
transaction, so two operators acting at once cannot both move it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from clarion.analytics import funnel as funnels
from clarion.campaigns import definition as spec
from clarion.campaigns import estimate as estimates
from clarion.campaigns import lifecycle
from clarion.domain import approval, errors, model
from clarion.store import campaigns as store
from clarion.store import rollups
from clarion.store import tables as t
from clarion.store import templates as template_store

if TYPE_CHECKING:
    from clarion.bootstrap import Clarion

SENT = (model.MessageStatus.SENT, model.MessageStatus.DELIVERED, model.MessageStatus.CLICKED)
WAITING = (model.MessageStatus.ACCEPTED, model.MessageStatus.QUEUED, model.MessageStatus.DEFERRED)


def _refused(refusal: approval.Refusal) -> errors.InvalidInput:
    return refusal.error()


async def _sendable(clarion: Clarion, definition: spec.Definition) -> model.Template:
    """The template's version sends would use; raises 409 ``not_approved`` / 422 for a missing template."""
    template = await clarion.catalog.template(definition.template)
    if template is None:
        raise errors.InvalidInput(
            f"template {definition.template!r} does not exist",
            code="unknown_template",
            details={"field": "template"},
        )
    definition.channels_for(template)
    return template


async def save(clarion: Clarion, key: str, body: Any, actor: approval.Actor) -> tuple[bool, Any]:
    """Create or replace a campaign (as a draft: a change is reviewed again); returns (created, row)."""
    approval.require(actor.roles, approval.EDIT)
    definition = spec.Definition.from_json(body)
    async with clarion.db.read() as conn:
        exists = (await conn.execute(t.templates.select().where(t.templates.c.key == definition.template))).first()
    if exists is None:
        raise errors.InvalidInput(
            f"template {definition.template!r} does not exist", code="unknown_template", details={"field": "template"}
        )
    channels = [c.value for c in definition.channels]
    missing = [c for c in channels if c not in exists.channels]
    if missing:
        raise errors.InvalidInput(
            f"template {definition.template!r} has no content for channel(s) {', '.join(missing)}",
            code="invalid_channels",
            details={"field": "channels", "unknown": missing},
        )
    now = datetime.now(UTC)

    async def job(conn: Any) -> tuple[bool, Any]:
        current = await store.get(conn, key, for_update=not clarion.db.is_sqlite)
        if current is not None:
            refused = lifecycle.editable(lifecycle.Status(current.status))
            if refused is not None:
                raise _refused(refused)
        created = await store.save(conn, key, definition.to_json(), author=actor.name, now=now)
        await template_store.audit(
            conn, actor=actor.name, action="campaign.save", subject=store.subject(key), at=now, detail={}
        )
        return created, await store.get(conn, key)

    return await clarion.db.write(job)


async def act(clarion: Clarion, key: str, action: str, actor: approval.Actor, *, comment: str | None = None) -> Any:
    """Take a lifecycle action (``lifecycle.ACTIONS``); returns the campaign's row after it."""
    async with clarion.db.read() as conn:
        row = await store.get(conn, key)
    if row is None:
        raise errors.NotFound("campaign", key)
    definition = spec.Definition.from_json(row.definition)
    if action in ("submit", "approve", "start"):
        await _sendable(clarion, definition)  # no campaign goes ahead on words nobody approved
    now = datetime.now(UTC)

    async def job(conn: Any) -> Any:
        current = await store.get(conn, key, for_update=not clarion.db.is_sqlite)
        run = await store.active_run(conn, key)
        decided = lifecycle.decide(
            action,
            lifecycle.Status(current.status),
            actor,
            author=current.author,
            comment=comment,
            has_run=run is not None,
        )
        if isinstance(decided, approval.Refusal):
            raise _refused(decided)
        values: dict[str, Any] = {"status": decided.status.value}
        if action in ("approve", "reject"):
            values["approvals"] = [
                *current.approvals,
                {
                    "level": "campaign",
                    "by": actor.name,
                    "at": now.isoformat(),
                    "comment": comment,
                    "decision": "approved" if action == "approve" else "rejected",
                },
            ]
        elif action == "submit":
            values["approvals"] = []
        elif action == "start":
            values["next_run_at"] = definition.schedule.first_due(now)
        elif action == "pause" and run is not None:
            await store.set_run_status(conn, run.id, "paused", keep_lease=True)
        elif action == "resume":
            if run is not None:
                await store.set_run_status(conn, run.id, "running")
            else:
                values["next_run_at"] = current.next_run_at or definition.schedule.first_due(now)
        elif action == "cancel":
            values["next_run_at"] = None
            if run is not None:
                await store.finish_run(conn, run.id, "cancelled", now)
                await store.cancel_pending(conn, run.id, reason="campaign_cancelled", now=now)
        await store.update(conn, key, now, **values)
        await template_store.audit(
            conn,
            actor=actor.name,
            action=f"campaign.{action}",
            subject=store.subject(key),
            at=now,
            detail={"from": current.status, "to": decided.status.value, "comment": comment},
        )
        return await store.get(conn, key)

    return await clarion.db.write(job)


async def estimate(clarion: Clarion, key: str, at: datetime | None = None) -> dict[str, Any]:
    """The dry run of ``campaigns.estimate`` at ``at`` (aware), by default when the campaign would next run (or
    first run, were it started now), with the configured sampling and prices."""
    async with clarion.db.read() as conn:
        row = await store.get(conn, key)
    if row is None:
        raise errors.NotFound("campaign", key)
    definition = spec.Definition.from_json(row.definition)
    if at is not None and at.tzinfo is None:
        raise errors.InvalidInput("at needs a time zone (e.g. 2026-01-01T21:00:00+08:00)", details={"field": "at"})
    when = at.astimezone(UTC) if at is not None else row.next_run_at or definition.schedule.first_due(datetime.now(UTC))
    settings = clarion.settings
    return await estimates.estimate(
        clarion,
        key,
        definition,
        at=when,
        exact_max=settings.campaign_estimate_exact,
        sample_size=settings.campaign_estimate_sample,
        prices=settings.campaign_prices,
        currency=settings.campaign_currency,
    )


# -- what a campaign shows -----------------------------------------------------------------------------------


def campaign_json(row: Any) -> dict[str, Any]:
    return {
        "key": row.key,
        **row.definition,
        "status": row.status,
        "author": row.author,
        "approvals": row.approvals,
        "next_run_at": row.next_run_at.isoformat() if row.next_run_at else None,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


def run_json(run: Any, statuses: dict[str, int] | None = None) -> dict[str, Any]:
    """A run's progress: the frozen audience, how much of it was processed, the messages by what intake
    decided (``filtered``/``deferred`` deliveries by policy, ``failed`` messages by reason) and — with
    ``statuses`` (the messages' current statuses) — how many are still ``queued``, ``sent`` and ``failed``."""
    counts = run.counts or {}
    out: dict[str, Any] = {
        "id": run.id,
        "status": run.status,
        "audience": run.audience,
        "processed": run.processed,
        "progress": round(run.processed / run.audience, 4) if run.audience else 1.0,
        "excluded": counts.get("excluded", 0),
        "skipped": counts.get("skipped", 0),
        "messages": counts.get("messages", 0),
        "filtered": counts.get("filtered", {}),
        "deferred": counts.get("deferred", {}),
        "failed_at_intake": counts.get("failed", {}),
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }
    if "error" in counts:
        out["error"] = counts["error"]
    if "ab" in counts:
        out["ab"] = counts["ab"]
    if statuses is not None:
        out.update(
            queued=sum(statuses.get(s.value, 0) for s in WAITING),
            sent=sum(statuses.get(s.value, 0) for s in SENT),
            failed=statuses.get(model.MessageStatus.FAILED.value, 0),
            statuses=statuses,
        )
    return out


async def show(clarion: Clarion, key: str, *, runs: int = 10) -> dict[str, Any]:
    """The campaign, its latest run's live progress (``run``) and its recent runs (newest first)."""
    async with clarion.db.read() as conn:
        row = await store.get(conn, key)
        if row is None:
            raise errors.NotFound("campaign", key)
        recent = await store.runs_of(conn, key, limit=runs)
        statuses = await store.message_statuses(conn, recent[0].id) if recent else None
    return {
        **campaign_json(row),
        "run": run_json(recent[0], statuses) if recent else None,
        "runs": [run_json(r) for r in recent],
    }


async def page(clarion: Clarion, *, limit: int, after: str | None) -> dict[str, Any]:
    async with clarion.db.read() as conn:
        rows = await store.list_page(conn, limit=limit + 1, after=after)
    shown = rows[:limit]
    return {
        "campaigns": [campaign_json(r) for r in shown],
        "next_cursor": shown[-1].key if len(rows) > limit else None,
    }


async def funnel(clarion: Clarion, key: str) -> dict[str, Any]:
    """The campaign's funnel over all its runs (``analytics.funnel.report``'s total: stages, who filtered or
    deferred, rates), read from the daily rollups as ``GET /v1/analytics/funnel?campaign=KEY`` reads it."""
    async with clarion.db.read() as conn:
        cells = await rollups.cells(
            conn, table=t.funnel_daily, since=None, until=None, filters={"campaign_key": key}, group_by=[]
        )
    return dict(funnels.report(cells, [])["total"])
