"""``clarion`` (the CLI) with the funnel counting switched off when ``CLARION_BENCH_ROLLUPS=off``, for
``bench/analytics.py``'s cost of the rollups on triggered sends.

Off, ``rollups.append`` — the one function every status change writes its timeline events through — only inserts
the events: the funnel staging, the look-ups of earlier events and of the deliveries' dimensions, and the upserts
into ``funnel_hourly``/``funnel_daily`` are skipped. Everything else runs as in ``clarion serve``. On, nothing is
changed (both modes start through here, so they start alike)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from clarion import cli
from clarion.store import rollups
from clarion.store import tables as t
from clarion.store.driver import Conn, executemany, insert_of


async def events_only(
    conn: Conn,
    events: Sequence[dict[str, Any]],
    *,
    messages: Iterable[Any] = (),
    deliveries: Iterable[Any] = (),
    fresh: bool = False,
) -> None:
    """``rollups.append`` without the counting: the timeline written, the rollups left alone."""
    if events:
        await executemany(conn, insert_of(t.delivery_events), list(events))


if __name__ == "__main__":
    if os.environ.get("CLARION_BENCH_ROLLUPS") == "off":
        rollups.append = events_only
    cli.app()
