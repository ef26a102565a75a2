"""The fallback stage: pending channel fallbacks fire when their original has not reached the user in time.

Intake holds each fallback delivery back (rendered and stored as ``accepted``, not claimable) with a pending
step (``store.fallbacks``). This loop takes the steps that are due — their ``within`` passed, or their original
failed — and for each one:

* cancels it when the original did reach the user after all (the held delivery becomes ``cancelled``);
* otherwise judges the held delivery as a new send is judged at that moment — address, consent and
  suppressions always; quiet hours unless the message is protected (verification, transactional, urgent);
  keywords, dedup, caps and the safety valve, counted — and places it ``queued``, ``deferred`` or ``filtered``
  with the deciding policy's reason.

A step is leased while it is judged (the policies' counters are outside the database), and fired or cancelled in
one transaction with its held delivery, only if it is still pending under that lease. A firer that dies leaves a
lease that runs out; the step is then judged again and fires once. The cost of a lost race is at most a cap
counted for a delivery that another firer placed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from clarion.domain import fallback as rules
from clarion.domain import ids, model, sms
from clarion.domain.policy import config
from clarion.domain.policy.decision import Candidate, placement
from clarion.pipeline.policies import PolicyStage
from clarion.store import fallbacks as store
from clarion.store import outbox
from clarion.store.db import Database

log = logging.getLogger(__name__)
S = model.DeliveryStatus


#: adds what a held delivery carries beyond its rendered content (intake's finishers): (candidate, id, content)
Finish = Callable[[Candidate, str, dict[str, Any]], dict[str, Any]]


def hold(
    steps: Sequence[rules.Step],
    sent: Sequence[dict[str, Any]],
    held: Sequence[tuple[Candidate, dict[str, Any]]],
    *,
    now: datetime,
    finish: Finish,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """A message's held fallback deliveries (status ``accepted``, not claimable, each naming the delivery it
    stands behind), their first timeline lines, and one pending step row per step: due ``within`` seconds after
    its original is due (at once when the original was filtered; for ``failed``, and behind another fallback,
    once that is known). ``sent`` are the message's deliveries placed by the policies; ``held`` the candidates
    the steps fall back to, with their rendered content. Returns (deliveries, events, steps)."""
    by_channel = {model.Channel(r["channel"]): r for r in sent}
    contents = {c.channel: (c, content) for c, content in held}
    rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    step_rows: list[dict[str, Any]] = []
    pending = list(enumerate(steps))
    while pending:  # a chain in order: each step's original exists before its fallback is made
        index, step = next((i, s) for i, s in pending if s.source in by_channel)
        pending.remove((index, step))
        original = by_channel[step.source]
        candidate, content = contents[step.to]
        row = _held_row(candidate, finish, content, original["id"], now)
        by_channel[step.to] = row
        rows.append(row)
        reason = (
            f"held: fallback for the {step.source.value} delivery {original['id']} "
            f"{rules.describe(step.when, step.within)}"
        )
        detail = {"fallback_of": original["id"], "step": index, **step.as_json()}
        events.append(outbox.event_row(candidate.message_id, row["id"], S.ACCEPTED, reason, now, detail))
        if original["fallback_of"] is not None:
            run_at = None  # armed when the fallback before it fires
        elif original["status"] == S.FILTERED:
            run_at = now
        else:
            run_at = rules.due_at(step, original["run_at"])
        step_rows.append(
            store.step_row(
                message_id=candidate.message_id,
                original_id=original["id"],
                fallback_id=row["id"],
                index=index,
                step=step,
                run_at=run_at,
                now=now,
            )
        )
    return rows, events, step_rows


def _held_row(
    candidate: Candidate, finish: Finish, content: dict[str, Any], original_id: str, now: datetime
) -> dict[str, Any]:
    delivery_id = ids.new_id()
    content = finish(candidate, delivery_id, content)
    segments = None
    if candidate.channel is model.Channel.SMS and isinstance(content.get("text"), str):
        segments = sms.count_segments(content["text"]).count
    ttl = candidate.template.ttl_seconds
    return {
        "id": delivery_id,
        "message_id": candidate.message_id,
        "user_id": candidate.user.user_id,
        "channel": candidate.channel.value,
        "provider": None,
        "address": candidate.address,
        "content": content,
        "status": S.ACCEPTED.value,
        "lane": candidate.template.priority.lane,
        "run_at": now,
        "attempts": 0,
        "lease_owner": None,
        "lease_until": None,
        "segments": segments,
        "expires_at": now + timedelta(seconds=ttl) if ttl else None,
        "fallback_of": original_id,
        "created_at": now,
        "updated_at": now,
    }


class Firer:
    def __init__(
        self,
        db: Database,
        stage: PolicyStage,
        *,
        batch_size: int = 100,
        lease: timedelta = timedelta(seconds=60),
        poll_interval: float = 0.5,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_queued: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.db = db
        self.stage = stage
        self.batch_size = batch_size
        self.lease = lease
        self.poll_interval = poll_interval
        self.clock = clock
        self.on_queued = on_queued

    async def run_once(self, owner: str) -> int:
        """Fire or cancel the steps due now; returns how many steps it took."""
        now = self.clock()

        async def take(conn: Any) -> list[store.Due]:
            return await store.claim(
                conn, owner=owner, now=now, lease=self.lease, limit=self.batch_size, is_sqlite=self.db.is_sqlite
            )

        due = await self.db.write(take)
        if not due:
            return 0
        cancels: dict[str, str] = {}
        waiting: list[str] = []
        firing: list[store.Due] = []
        for d in due:
            if d.status != S.ACCEPTED:  # its held delivery was changed by hand (a user deleted): nothing to fire
                cancels[d.id] = f"fallback cancelled: its delivery {d.fallback_id} is {d.status}"
                continue
            verdict = rules.judge(d.when, d.original_status, deadline_passed=d.run_at <= now)
            if verdict == "cancel":
                cancels[d.id] = (
                    f"fallback cancelled: the {d.original_channel} delivery {d.original_id} is {d.original_status}"
                )
            elif verdict == "wait":
                waiting.append(d.id)
            else:
                firing.append(d)
        placed = await self._judge(firing, now, cancels)

        async def write(conn: Any) -> list[store.Placed]:
            return await store.finish(conn, owner=owner, now=now, placed=placed, cancels=cancels, waiting=waiting)

        written = await self.db.write(write)
        queued = sum(1 for p in written if p.status is S.QUEUED)
        if queued:
            self.on_queued(queued)
        return len(due)

    async def _judge(self, due: Sequence[store.Due], now: datetime, cancels: dict[str, str]) -> list[store.Placed]:
        """The held deliveries of ``due`` judged by the policies as of ``now``; a step whose user is gone is
        added to ``cancels`` instead."""
        if not due:
            return []
        users = await self.stage.users.load_many({d.user_id for d in due})
        templates = await self.stage.catalog.templates(sorted({d.template_key for d in due}))
        judged: list[tuple[store.Due, Candidate]] = []
        for d in due:
            user = users.get(d.user_id)
            if user is None:
                cancels[d.id] = f"fallback cancelled: user {d.user_id} no longer exists"
                continue
            template = templates.get(d.template_key) or model.Template(
                d.template_key, d.template_key, model.Category(d.category), model.Priority(d.priority), {}
            )
            channel = model.Channel(d.channel)
            preferences = user.preferences or config.NO_PREFERENCES
            address = user.address_for(channel)
            judged.append((d, Candidate(d.message_id, user, template, channel, now, address, preferences=preferences)))
        if not judged:
            return []
        candidates = [c for _, c in judged]
        screened = await self.stage.before_render(candidates)
        contents = [d.content for d, _ in judged]
        verdicts = await self.stage.after_render(screened, contents)
        placed = []
        for (d, candidate), verdict in zip(judged, verdicts, strict=True):
            where = placement(verdict.decision, now)
            why = f"the {d.original_channel} delivery {d.original_id} is {d.original_status}"
            if d.original_status not in rules.FAILED:
                why += f", not {'read' if d.when == rules.When.NOT_READ else 'delivered'} within {d.within} s"
            reason = f"fallback fired: {why}"
            if where.reason:
                reason = f"{reason}; {where.reason}"
            detail = dict(where.detail or {})
            if verdict.masked and where.keeps_content:
                detail["masked"] = verdict.masked
            content = verdict.content if where.keeps_content else None
            placed.append(store.Placed(d, where.status, reason, where.run_at, candidate.address, content, detail))
        return placed

    async def run(self, stop: asyncio.Event, *, owner: str) -> None:
        log.info("fallback firer %s started", owner)
        while not stop.is_set():
            try:
                handled = await self.run_once(owner)
            except Exception:
                log.exception("fallback firer %s: cycle failed", owner)
                handled = 0
            if handled < self.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.poll_interval)
        log.info("fallback firer %s stopped", owner)
