"""When users respond: the moments of their opens, reads, clicks and tracked activity, for send-time optimisation.

A response is a tracked event (``user_events``) or a delivery's ``read`` (an opened inbox item or e-mail) or
``clicked`` event on the timeline. Both are read for a whole batch of users in ONE query (a ``UNION ALL``) over a
lookback window: tracked events by their ``(user_id, event, at)`` index, timeline events through the users'
messages (the ``(user_id, created_at)`` index) to their deliveries and events, never by scanning the timeline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from clarion.domain import model
from clarion.domain.policy import config
from clarion.store import tables as t
from clarion.store.driver import Conn, ListStatement, fetch

S = model.DeliveryStatus
RESPONSES = (S.READ.value, S.CLICKED.value)

_E, _D, _M, _U, _UE = t.delivery_events, t.deliveries, t.messages, t.users, t.user_events


def _responses(in_list: Callable[[Any, str], Any]) -> Any:
    since = sa.bindparam("since", type_=t.UTCDateTime())
    tracked = sa.select(_UE.c.user_id, _UE.c.at).where(in_list(_UE.c.user_id, "ids"), _UE.c.at >= since)
    timeline = (
        sa.select(_M.c.user_id, _E.c.at)
        .select_from(_M.join(_D, _D.c.message_id == _M.c.id).join(_E, _E.c.delivery_id == _D.c.id))
        .where(
            in_list(_M.c.user_id, "ids"),
            _M.c.created_at >= since,
            _E.c.status.in_([sa.literal(s) for s in RESPONSES]),
            _E.c.at >= since,
        )
    )
    return sa.union_all(tracked, timeline)


_RESPONSES = ListStatement(_responses)
_PROFILES = ListStatement(
    lambda in_list: sa.select(_U.c.user_id, _U.c.timezone, _U.c.preferences).where(in_list(_U.c.user_id, "ids"))
)


async def responses(conn: Conn, user_ids: Sequence[str], since: datetime) -> list[tuple[str, datetime]]:
    """``(user_id, at)`` of every response of ``user_ids`` since ``since``, in no particular order."""
    if not user_ids:
        return []
    rows = await fetch(conn, _RESPONSES.on(conn), {"ids": list(user_ids), "since": since})
    return [(row[0], row[1]) for row in rows]


@dataclass(frozen=True, slots=True)
class Whereabouts:
    """What placing a user's send in time needs of their profile: their zone and preferences (do-not-disturb)."""

    timezone: str | None
    preferences: config.Preferences | None


async def whereabouts(conn: Conn, user_ids: Sequence[str]) -> dict[str, Whereabouts]:
    """The time zone and preferences of each of ``user_ids`` that exists."""
    if not user_ids:
        return {}
    rows = await fetch(conn, _PROFILES.on(conn), {"ids": list(user_ids)})
    out: dict[str, Whereabouts] = {}
    for row in rows:
        preferences = config.Preferences.from_json(row.preferences) if row.preferences else None
        out[row.user_id] = Whereabouts(row.timezone, preferences)
    return out
