"""The floor under the campaign's ratio R: what a campaign would cost if only its irreducible parts ran.

``bench/campaign.py`` measures the whole campaign. This takes it apart on the same users, policies and template
(every policy on), one batch of ``--batch`` users at a time, each part timed alone and in the same run as the bare
write R is measured against:

- ``compose``: ``Intake.prepare_campaign_batch`` — plan, policies (the counters hit, the keyword lists screened),
  rendering and routing — with nothing written;
- ``send``: the composed deliveries handed to the file provider (``clarion serve``'s default sink);
- ``sql_compact``: the least a durable, readable record can write, straight through ``sqlite3`` into the real
  schema with its indexes: each message and its delivery once, in their final state, and one timeline row per
  delivery (the statuses it went through in its detail), one transaction per batch;
- ``sql_deliveries_only``: the delivery rows alone, in their final state.

Each part's R is its seconds over the bare write's (one 5-column row per user, median of 3); ``floor_R`` is
compose + send + sql_compact, what a single process could not go under with the timeline kept compact, before
any of the work of leases, recording and resumption. Prints one JSON line.

Run: ``.venv/bin/python bench/campaign_floor.py --users 100000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from campaign import IMPORTED_AGO, KEY, bare_sqlite, configure
from clarion import bootstrap
from clarion.api.app import create_app
from clarion.domain import ids, model
from clarion.pipeline.intake import CampaignBatch
from clarion.store import migrate
from clarion.store import tables as t
from population import bench_settings, generate_users


def _value(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    if isinstance(value, datetime):
        return value.replace(tzinfo=None).isoformat(sep=" ")
    return value


def _insert(table: Any, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


class CompactWriter:
    """Writes a batch's messages and deliveries in their final state, one timeline row per delivery."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-65536"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.message_columns = [c.name for c in t.messages.columns]
        self.delivery_columns = [c.name for c in t.deliveries.columns]
        self.event_columns = ["message_id", "delivery_id", "status", "reason", "detail", "at"]

    def rows(self, messages: list[dict[str, Any]], deliveries: list[dict[str, Any]], now: datetime) -> Any:
        """The batch's rows as the compact record would hold them once sent (built outside the timed write)."""
        sent = []
        for d in deliveries:
            final = {**d, "status": "sent", "provider": "file", "provider_message_id": d["id"], "sent_at": now}
            final.update(lease_owner=None, lease_until=None, last_error=None, cost=None, cost_currency=None)
            sent.append(tuple(_value(final.get(c)) for c in self.delivery_columns))
        steps = {"steps": [["queued", None], ["sending", "attempt 1"], ["sent", "accepted by file"]]}
        detail, at = orjson.dumps(steps).decode(), _value(now)
        events = [(d["message_id"], d["id"], "sent", "accepted by file", detail, at) for d in deliveries]
        kept = [tuple(_value({**m, "status": "sent"}.get(c)) for c in self.message_columns) for m in messages]
        return kept, sent, events

    def write(self, kept: Any, sent: Any, events: Any, *, deliveries_only: bool = False) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        if not deliveries_only:
            self.conn.executemany(_insert(t.messages, self.message_columns), kept)
            self.conn.executemany(_insert(t.delivery_events, self.event_columns), events)
        self.conn.executemany(_insert(t.deliveries, self.delivery_columns), sent)
        self.conn.execute("COMMIT")


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    url = f"sqlite+aiosqlite:///{tmp}/clarion.db"
    clarion = bootstrap.build(bench_settings(tmp, url, KEY, workers=0))
    await clarion.start(workers=0)
    transport = httpx.ASGITransport(app=create_app(clarion=clarion))
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers={"Authorization": f"Bearer {KEY}"}
        ) as api:
            await configure(api)
        template = await clarion.intake.catalog.template("spring")
        assert template is not None
        provider = await clarion.providers.get("file")
        compact = CompactWriter(tmp / "compact.db")
        only = CompactWriter(tmp / "deliveries-only.db")
        run_id = ids.new_id()
        users = [f"u{i}" for i in range(args.users)]
        timed = dict.fromkeys(("compose", "send", "sql_compact", "sql_deliveries_only"), 0.0)
        cpu_started = time.process_time()
        for start in range(0, args.users, args.batch):
            batch = CampaignBatch("spring", run_id, template, [model.Channel.SMS], users[start : start + args.batch])
            began = time.perf_counter()
            prepared = await clarion.intake.prepare_campaign_batch(batch)
            timed["compose"] += time.perf_counter() - began
            deliveries = [d for d in prepared.rows[t.deliveries] if d["status"] == "queued"]
            outgoing = [
                model.Outgoing(d["id"], d["message_id"], d["user_id"], model.Channel.SMS, d["address"], d["content"])
                for d in deliveries
            ]
            began = time.perf_counter()
            results = await provider.send(outgoing)
            timed["send"] += time.perf_counter() - began
            assert all(r.error is None for r in results)
            kept, sent, events = compact.rows(prepared.rows[t.messages], deliveries, datetime.now(UTC))
            began = time.perf_counter()
            compact.write(kept, sent, events)
            timed["sql_compact"] += time.perf_counter() - began
            began = time.perf_counter()
            only.write(kept, sent, events, deliveries_only=True)
            timed["sql_deliveries_only"] += time.perf_counter() - began
        cpu = time.process_time() - cpu_started
    finally:
        await clarion.close()
    bare = bare_sqlite(tmp / "clarion.db", min(args.users, 1_000_000))
    ratios = {f"R_{name}": round(seconds * bare / args.users, 1) for name, seconds in timed.items()}
    return {
        "users": args.users,
        "batch": args.batch,
        "seconds": {name: round(seconds, 2) for name, seconds in timed.items()},
        "us_per_user": {name: round(seconds / args.users * 1e6, 1) for name, seconds in timed.items()},
        "bare_sqlite_rows_per_s": round(bare),
        **ratios,
        "floor_R": round(ratios["R_compose"] + ratios["R_send"] + ratios["R_sql_compact"], 1),
        "cpu_us_per_user": round(cpu / args.users * 1e6, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000, help="users per batch (CLARION_CAMPAIGN_BATCH)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clarion-floor-bench-") as tmp:
        for name in ("clarion", "compact", "deliveries-only"):  # the two floors write into the same schema
            migrate.upgrade(f"sqlite+aiosqlite:///{tmp}/{name}.db")
        generate_users(Path(tmp) / "clarion.db", args.users, datetime.now(UTC) - IMPORTED_AGO)
        result = asyncio.run(run(args, Path(tmp)))
    print(json.dumps(result), file=sys.stdout)


if __name__ == "__main__":
    main()
