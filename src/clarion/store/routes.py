"""Routes as stored (the ``routes`` table), and what dispatch reads to apply them to a claimed batch: the
messages' template, category, priority and department, and the providers a retried delivery already tried."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import model, routing
from clarion.store import tables as t
from clarion.store.db import ListStatement, fetch


def route_from_row(row: Any) -> routing.Route:
    return routing.Route(
        key=row.key,
        channel=model.Channel(row.channel),
        match={f: row.match[f] for f in routing.MATCH_FIELDS if row.match.get(f) is not None},
        providers=tuple(routing.Weighted(p["name"], float(p["weight"])) for p in row.providers),
        failover=tuple(row.failover),
        enabled=row.enabled,
    )


def route_json(row: Any) -> dict[str, Any]:
    return {
        "key": row.key,
        "channel": row.channel,
        "match": {f: row.match[f] for f in routing.MATCH_FIELDS if row.match.get(f) is not None},
        "providers": [{"name": p["name"], "weight": p["weight"]} for p in row.providers],
        "failover": list(row.failover),
        "enabled": row.enabled,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


async def load(conn: AsyncConnection) -> list[routing.Route]:
    """Every route, by key."""
    rows = (await conn.execute(sa.select(t.routes).order_by(t.routes.c.key))).all()
    return [route_from_row(r) for r in rows]


_m, _tpl, _e = t.messages, t.templates, t.delivery_events
# what routes match a message by, for the messages ``ids``
_FACTS = ListStatement(
    lambda in_list: (
        sa.select(_m.c.id, _m.c.template_key, _m.c.category, _m.c.priority, _tpl.c.department)
        .select_from(_m.outerjoin(_tpl, _tpl.c.key == _m.c.template_key))
        .where(in_list(_m.c.id, "ids"))
    )
)
# the outcomes recorded for the deliveries ``ids``: their details name the provider each attempt went to
_OUTCOMES = ListStatement(
    lambda in_list: sa.select(_e.c.delivery_id, _e.c.detail).where(
        in_list(_e.c.delivery_id, "ids"),
        _e.c.status.in_([sa.literal(s.value) for s in (model.DeliveryStatus.QUEUED, model.DeliveryStatus.FAILED)]),
        _e.c.detail.is_not(None),
    )
)


async def message_facts(conn: AsyncConnection, message_ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """Each message's (template key, category, priority, department)."""
    rows = await fetch(conn, _FACTS.on(conn), {"ids": list(message_ids)})
    return {r.id: (r.template_key, r.category, r.priority, r.department) for r in rows}


async def tried(conn: AsyncConnection, delivery_ids: Sequence[str]) -> dict[str, set[str]]:
    """The providers each of ``delivery_ids`` went to on its earlier attempts (as their retries recorded)."""
    rows = await fetch(conn, _OUTCOMES.on(conn), {"ids": list(delivery_ids)})
    out: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        provider = r.detail.get("provider") if isinstance(r.detail, dict) else None
        if isinstance(provider, str):
            out[r.delivery_id].add(provider)
    return out
