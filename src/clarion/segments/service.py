"""The segment index inside a running Clarion: built from the store on start, kept up to date with changes.

Each process holds its own :class:`~clarion.segments.index.SegmentIndex` and keeps it current three ways:

* **this process's writes**, at once: the users API calls ``users_changed(ids)`` after a commit (the users are
  re-read; those gone are deleted from the index), event intake calls ``events_tracked()`` (events with an id
  above the last one seen are read), the lists API calls ``lists_changed()``;
* **other processes' writes**, by a poll every ``poll_seconds``: users whose ``updated_at`` is at or after the
  previous poll's start minus :data:`LAG` (clocks and commit delays: a change committed late, or stamped by a
  clock a little behind, is still found; users already applied at the same ``updated_at`` are skipped), events
  with an id above the mark or among the ids found missing below it (PostgreSQL may commit serial ids out of
  order; a missing id is looked for again for :data:`GAP_SECONDS`, then given up — it was a rolled-back insert),
  and ID lists whose ``updated_at`` changed;
* **deletions by other processes** leave no row to poll: a reconciliation every ``recheck_seconds`` pages through
  every user id, deletes from the index the users that are gone and adds any that were missed. Until then a user
  another process deleted may still be counted (never sent to: the send pipeline loads each user).

Evaluation runs in a worker thread (a count over 10^8 users takes up to ~0.4 s) under one lock that every
mutation of the index also takes, so the event loop keeps serving while a big segment is counted and the index
never changes under an evaluation. Rebuilding (``rebuild()``) loads a fresh index beside the live one and swaps.

Attribute kinds: an attribute's kind is fixed by the first value the index sees (``schema`` may declare some).
Timestamps are not declared: an ISO 8601 date or date-time string (``2026-03-01``, ``2026-03-01T08:00:00Z``) is
a timestamp when it is the first value of its attribute (see :func:`clarion.segments.bulk.prepared`).

Beside the index live the audience use cases the segments API and the console's audiences page share: saving a
segment (:func:`save_segment`), sampling the users of a definition (:func:`sample_users`) and storing an uploaded
ID list (:func:`save_list`), each checking the role and writing with its audit entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from pyroaring import BitMap

from clarion.domain import approval, errors
from clarion.segments import bulk, idlists, query
from clarion.segments import evaluate as ev
from clarion.segments import index as ix
from clarion.store import audit as audit_log
from clarion.store import segments as store
from clarion.store.db import Database

if TYPE_CHECKING:
    from clarion.bootstrap import Clarion

log = logging.getLogger(__name__)
T = TypeVar("T")
LAG = timedelta(seconds=10)
GAP_SECONDS = 60.0
MAX_GAPS = 10_000
MAX_EXCLUDE_DEPTH = 4
_AUDIENCE_FIELDS = {"segment", "list", "exclude"}


def _bad_audience(field: str, message: str) -> errors.InvalidInput:
    return errors.InvalidInput(f"{field}: {message}", code="invalid_audience", details={"field": field})


async def saved_conditions(db: Database, key: str) -> query.Node:
    """The parsed conditions of the saved segment ``key`` (NotFound when there is none): read from the store, so
    a process that asks a segment holder (``segments.remote``) reads them as one that holds the index does."""
    async with db.read() as conn:
        row = await store.get_segment(conn, key)
    if row is None:
        raise errors.NotFound("segment", key)
    return query.parse(row.definition)


class SegmentService:
    def __init__(
        self,
        db: Database,
        *,
        schema: Mapping[str, ix.Kind] | None = None,
        horizon_days: int = 90,
        poll_seconds: float = 2.0,
        recheck_seconds: float = 300.0,
    ) -> None:
        self.db = db
        self.schema = dict(schema or {})
        self.horizon_days = horizon_days
        self.poll_seconds = poll_seconds
        self.recheck_seconds = recheck_seconds
        self.index = ix.SegmentIndex(self.schema, horizon_days=horizon_days)
        self._lock = asyncio.Lock()
        self._users_since = datetime(1970, 1, 1, tzinfo=UTC)
        self._applied: dict[str, datetime] = {}
        self._event_mark = 0
        self._event_gaps: dict[int, float] = {}
        self._lists: dict[str, datetime] = {}
        self._checked_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Build the index from the store, then follow changes in the background."""
        await self.rebuild()
        if self._task is None and self.poll_seconds > 0:
            self._task = asyncio.create_task(self._follow(), name="clarion-segments")

    async def close(self) -> None:
        """Stop following changes."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def rebuild(self) -> None:
        """Load a fresh index from the store (users, events within the horizon, ID lists) and swap it in."""
        began = time.monotonic()
        users_since = datetime.now(UTC) - LAG
        event_mark = await store.last_event_id(self.db)
        since = (datetime.now(UTC) - timedelta(days=self.horizon_days)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        load = bulk.BulkLoad(ix.SegmentIndex(self.schema, horizon_days=self.horizon_days))
        after: str | None = None
        async for page in store.user_pages(self.db):
            rows = {u.user_id: load.add_user(u.user_id, u.attributes, u.tags) for u in page}
            await self._load_events(load, rows, after, page[-1].user_id, since, event_mark)
            after = page[-1].user_id
        await self._load_events(load, {}, after, None, since, event_mark)
        index = load.finish()
        lists: dict[str, datetime] = {}
        async with self.db.read() as conn:
            versions = await store.id_list_versions(conn)
        for key, version in versions.items():
            index.register_list(key, await store.list_members(self.db, key))
            lists[key] = version
        async with self._lock:
            self.index = index
            self._users_since = users_since
            self._applied = {}
            self._event_mark = event_mark
            self._event_gaps = {}
            self._lists = lists
            self._checked_at = time.monotonic()
        log.info("segment index built: %d users in %.2f s", len(index.live), time.monotonic() - began)
        await self.refresh()

    async def _load_events(
        self,
        load: bulk.BulkLoad,
        rows: dict[str, int],
        after: str | None,
        through: str | None,
        since: datetime,
        up_to_id: int,
    ) -> None:
        for user_id, event, at in await store.last_events(self.db, after, through, up_to_id):
            load.add_last_event(rows.get(user_id), user_id, event, at)
        for user_id, event, at in await store.events_between_users(self.db, after, through, since, up_to_id):
            load.add_event(rows.get(user_id), user_id, event, at)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("segment index: catching up with the store failed; retrying")

    async def refresh(self, *, deletions: bool = False) -> None:
        """Catch up with every change in the store, other processes' included (what the background poll runs);
        with ``deletions`` (or when the reconciliation is due) also look for users deleted elsewhere."""
        await self._catch_up_users()
        await self.events_tracked()
        await self.lists_changed()
        if deletions or time.monotonic() - self._checked_at >= self.recheck_seconds:
            await self._reconcile()

    # -- following changes ---------------------------------------------------------------------------------------

    async def users_changed(self, user_ids: Sequence[str]) -> None:
        """Users were created, updated (attributes, tags) or deleted through this process: re-read them."""
        ids = list(dict.fromkeys(user_ids))
        found = await store.users(self.db, ids)
        async with self._lock:
            self._apply(found, gone=set(ids) - {u.user_id for u in found})

    async def events_tracked(self) -> None:
        """Behaviour events were recorded through this process: catch up with them."""
        while True:
            events = await store.events_after(self.db, self._event_mark, sorted(self._event_gaps), store.PAGE)
            async with self._lock:
                for event in events:
                    self.index.track(event.user_id, event.event, event.at)
                self._advance_events([e.id for e in events])
            if len(events) < store.PAGE:
                return

    async def lists_changed(self) -> None:
        """ID lists were uploaded, replaced or deleted (here or elsewhere): reload those whose version changed."""
        async with self.db.read() as conn:
            versions = await store.id_list_versions(conn)
        for key, version in versions.items():
            if self._lists.get(key) != version:
                members = await store.list_members(self.db, key)
                async with self._lock:
                    self.index.register_list(key, members)
                    self._lists[key] = version
        async with self._lock:
            for key in set(self._lists) - set(versions):
                self.index.drop_list(key)
                del self._lists[key]

    def _apply(self, users: Sequence[store.IndexedUser], gone: set[str]) -> None:
        """Under the lock: upsert ``users`` (unless already applied at that ``updated_at``), delete ``gone``."""
        for user in users:
            if self._applied.get(user.user_id) == user.updated_at:
                continue
            self.index.upsert(user.user_id, bulk.prepared(user.attributes, self.index.kinds), user.tags)
            self._applied[user.user_id] = user.updated_at
        for user_id in gone:
            self.index.delete(user_id)
            self._applied.pop(user_id, None)

    async def _catch_up_users(self) -> None:
        # Every change committed by now is read below; one committed later was stamped at most LAG before
        # now. So the next poll starts at now - LAG — not at the newest change seen minus LAG, which would
        # re-read the last LAG seconds of a big import at every poll until some later change moved it on.
        started = datetime.now(UTC)
        since, after = self._users_since, None
        while True:
            page = await store.users_updated_since(self.db, since, after, store.PAGE)
            async with self._lock:
                self._apply(page, gone=set())
            if page:
                since, after = page[-1].updated_at, page[-1].user_id
            if len(page) < store.PAGE:
                break
        async with self._lock:
            self._users_since = max(self._users_since, started - LAG)
            self._applied = {u: at for u, at in self._applied.items() if at >= self._users_since}

    def _advance_events(self, seen: list[int]) -> None:
        """Under the lock: move the event mark past ``seen`` and remember the ids skipped below it."""
        now = time.monotonic()
        for event_id in seen:
            self._event_gaps.pop(event_id, None)
        fresh = sorted(i for i in seen if i > self._event_mark)
        if fresh:
            present = set(fresh)
            for missing in range(self._event_mark + 1, fresh[-1]):
                if missing not in present and len(self._event_gaps) < MAX_GAPS:
                    self._event_gaps[missing] = now
            self._event_mark = fresh[-1]
        self._event_gaps = {i: at for i, at in self._event_gaps.items() if now - at < GAP_SECONDS}

    async def _reconcile(self) -> None:
        """Page through every user id: delete from the index the users that are gone, add those it lacks."""
        found = BitMap()
        missing: list[str] = []
        after: str | None = None
        while True:
            page = await store.user_ids_page(self.db, after)
            async with self._lock:
                rows = self.index.rows_for(page)
                known = ix.rows_to_bitmap(rows[rows >= 0])
                found |= known
                missing += [u for u, r in zip(page, rows.tolist(), strict=True) if r < 0]
                missing += self.index.user_ids_of(ix.bitmap_rows(known - self.index.live))
            if len(page) < store.PAGE:
                break
            after = page[-1]
        async with self._lock:
            candidates = self.index.user_ids_of(ix.bitmap_rows(self.index.live - found))
        still = await store.existing_user_ids(self.db, candidates)
        users = await store.users(self.db, missing)
        async with self._lock:
            self._apply(users, gone=set(candidates) - still)
            self._checked_at = time.monotonic()

    # -- evaluation ----------------------------------------------------------------------------------------------

    async def _evaluate(self, work: Callable[[ix.SegmentIndex], T]) -> T:
        async with self._lock:
            return await asyncio.to_thread(work, self.index)

    async def count(self, conditions: query.Node, now: datetime | None = None) -> int:
        """How many live users the conditions select (InvalidInput naming the path when they cannot apply)."""
        return await self._evaluate(lambda index: ev.count(index, conditions, now))

    async def sample(self, conditions: query.Node, n: int, seed: int | None = None) -> list[str]:
        return await self._evaluate(lambda index: ev.sample(index, conditions, n, seed=seed))

    async def segment(self, key: str) -> query.Node:
        """The parsed conditions of a saved segment (NotFound when there is none)."""
        return await saved_conditions(self.db, key)

    async def audience(self, spec: Any) -> list[str]:
        """The user ids of an audience, sorted: ``{"segment": K}``, ``{"list": L}`` or both (the segment's users
        in the list), optionally minus another such spec under ``exclude`` (which may have its own ``exclude``,
        :data:`MAX_EXCLUDE_DEPTH` deep). Users that do not exist (an ID list's unknown ids) are never in it.
        A bad spec raises InvalidInput naming the field (``audience.exclude.list``)."""
        node = await self._audience(spec, "audience", 0)

        def ids(index: ix.SegmentIndex) -> list[str]:
            found = [u for chunk in ev.user_ids(index, node) for u in chunk]
            found.sort()
            return found

        return await self._evaluate(ids)

    async def count_audience(self, spec: Any) -> int:
        return await self.count(await self._audience(spec, "audience", 0))

    async def _audience(self, spec: Any, path: str, depth: int) -> query.Node:
        if not isinstance(spec, dict):
            raise _bad_audience(path, "must be an object")
        for field in spec:
            if field not in _AUDIENCE_FIELDS:
                raise _bad_audience(f"{path}.{field}", "unknown field")
        parts: list[query.Node] = []
        if "segment" in spec:
            key = spec["segment"]
            if not isinstance(key, str):
                raise _bad_audience(f"{path}.segment", "must be a segment key")
            try:
                parts.append(await self.segment(key))
            except errors.NotFound:
                raise _bad_audience(f"{path}.segment", f"no segment named {key!r}") from None
        if "list" in spec:
            key = spec["list"]
            if not isinstance(key, str) or key not in self.index.lists:
                raise _bad_audience(f"{path}.list", f"no ID list named {key!r}")
            parts.append(query.InList(key))
        if not parts:
            raise _bad_audience(path, "needs a segment, a list or both")
        node = parts[0] if len(parts) == 1 else query.And(tuple(parts))
        if spec.get("exclude") is None:
            return node
        if depth >= MAX_EXCLUDE_DEPTH:
            raise _bad_audience(f"{path}.exclude", f"nested at most {MAX_EXCLUDE_DEPTH} deep")
        return query.And((node, query.Not(await self._audience(spec["exclude"], f"{path}.exclude", depth + 1))))


# -- the audience use cases the API and the console share ---------------------------------------------------

_SEGMENT_FIELDS = {"name", "conditions"}


def _bad_segment(field: str, message: str) -> errors.InvalidInput:
    return errors.InvalidInput(f"{field}: {message}", code="invalid_segment", details={"path": field})


def conditions_of(body: Mapping[str, Any]) -> query.Node:
    """The parsed condition tree of a segment document ``{"name": ..., "conditions": ...}`` (422 naming the
    field or the node that is wrong)."""
    for field in body:
        if field not in _SEGMENT_FIELDS:
            raise _bad_segment(field, "unknown field")
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        raise _bad_segment("name", "must be text of at most 200 characters")
    return query.parse(body.get("conditions"))


def segment_summary(row: Any) -> dict[str, Any] | None:
    """A stored segment as its audit entry shows it."""
    return {"name": row.name, "conditions": row.definition} if row is not None else None


def list_summary(row: Any) -> dict[str, Any] | None:
    """A stored list as its audit entry shows it: what it is and how big, never its members."""
    return {"name": row.name, "kind": row.kind, "size": row.size, "unknown": row.unknown} if row is not None else None


async def save_segment(
    clarion: Clarion, key: str, body: Mapping[str, Any], *, actor: str, roles: Sequence[str]
) -> tuple[bool, int]:
    """Create or replace the segment ``key`` (``editor``/``admin``); returns (created, its count now). Conditions
    that cannot apply to the index (an unknown list, a value of the wrong kind) are refused before anything is
    written."""
    approval.require(roles, approval.EDIT)
    node = conditions_of(body)
    count = await clarion.segments.count(node)
    conditions = query.to_json(node)
    now = datetime.now(UTC)

    async def job(conn: Any) -> bool:
        before = await store.get_segment(conn, key)
        created = await store.put_segment(conn, key, body.get("name"), conditions, now)
        after = {"name": body.get("name"), "conditions": conditions}
        detail = {"key": key, "before": segment_summary(before), "after": after}
        await audit_log.record(conn, actor=actor, action="segment.put", subject=f"segment:{key}", at=now, detail=detail)
        return created

    return await clarion.db.write(job), count


async def sample_users(clarion: Clarion, node: query.Node, n: int, seed: int | None = None) -> list[dict[str, Any]]:
    """Up to ``n`` users the conditions select, with their attributes and tags (spread evenly, or at random with
    ``seed``)."""
    user_ids = await clarion.segments.sample(node, n, seed)
    found = {u.user_id: u for u in await store.users(clarion.db, user_ids)}
    return [{"user_id": u, "attributes": found[u].attributes, "tags": found[u].tags} for u in user_ids if u in found]


async def save_list(
    clarion: Clarion,
    key: str,
    upload: idlists.Upload,
    *,
    name: str | None,
    actor: str,
    roles: Sequence[str],
) -> dict[str, Any]:
    """Store an uploaded ID list under ``key`` (``editor``/``admin``), matched to users: user ids as given (an
    unknown id stays a member, for a user created later), phones and e-mails by the users' addresses. Returns
    ``created`` and what the upload held: ``lines``, ``matched``, ``invalid`` and the first unknown or invalid
    values as written (``unknown_values``)."""
    approval.require(roles, approval.EDIT)
    values = list(upload.values)
    if upload.kind == "user_id":
        known = await store.existing_user_ids(clarion.db, values)
        members = values
        unknown = [v for v in values if v not in known]
    else:
        found = await store.users_by_address(clarion.db, "sms" if upload.kind == "phone" else "email", set(values))
        members = [u for v in values for u in found.get(v, ())]
        unknown = [v for v in values if v not in found]
    now = datetime.now(UTC)
    missing = len(unknown) + upload.invalid

    async def job(conn: Any) -> bool:
        before = await store.get_id_list(conn, key)
        created = await store.put_id_list(
            conn, key, name=name, kind=upload.kind, members=members, unknown=missing, now=now
        )
        after = await store.get_id_list(conn, key)
        detail = {"key": key, "before": list_summary(before), "after": list_summary(after)}
        await audit_log.record(conn, actor=actor, action="id_list.put", subject=f"id_list:{key}", at=now, detail=detail)
        return created

    created = await clarion.db.write(job)
    await clarion.segments.lists_changed()
    return {
        "created": created,
        "lines": upload.lines,
        "matched": len(values) - len(unknown),
        "invalid": upload.invalid,
        "unknown_values": (upload.invalid_values + unknown)[: idlists.REPORTED],
    }
