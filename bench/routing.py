"""Routing microbenchmark: the CPU of ``ProviderRegistry.choose`` per delivery, over claimed batches of 200 SMS.

The registry's accounts and routes are cached for the whole run (as they are between two refreshes); what is
measured is the decision and the reads it needs per batch. Five configurations, each adding to the one before:

* ``builtin``: no account and no route (the built-in file provider; ``bench/triggered.py``'s setup);
* ``accounts``: three enabled SMS accounts, no route (they share the traffic equally);
* ``phone_routes``: a route on ``country_code`` + ``signature`` (70/30, with failover) and a catch-all route;
* ``message_routes``: and a route on ``category`` + ``department`` (one query per batch for the messages);
* ``retries``: the same batch as second attempts (a second query per batch, for the providers tried).

Prints one JSON line: µs per delivery for each. Run: ``.venv/bin/python bench/routing.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

from clarion.channels import registry
from clarion.store import migrate, outbox
from clarion.store import tables as t
from clarion.store.db import Database

BATCH = 200


def claimed(now: datetime, attempts: int = 1) -> list[outbox.Claimed]:
    return [
        outbox.Claimed(
            f"d{i}",
            f"m{i}",
            "u",
            "sms",
            "a" if attempts > 1 else None,
            f"+8613800{i:06d}",
            {"text": "【Acme】hi"},
            attempts,
            2,
            now,
        )
        for i in range(BATCH)
    ]


async def per_delivery(providers: registry.ProviderRegistry, batch: list[outbox.Claimed], rounds: int) -> float:
    providers.invalidate()
    await providers.choose(batch)  # loads the accounts and routes once
    started = time.process_time()
    for _ in range(rounds):
        await providers.choose(batch)
    return round((time.process_time() - started) / (rounds * len(batch)) * 1e6, 2)


async def measure(url: str, directory: str, rounds: int) -> dict[str, Any]:
    db = Database(url)
    builtins = [registry.Account("file", None, "file", {"directory": directory})]
    providers = registry.ProviderRegistry(db, builtins, ttl=3600)
    now = datetime.now(UTC)
    stamps = {"created_at": now, "updated_at": now}
    batch = claimed(now)
    out = {"builtin": await per_delivery(providers, batch, rounds)}

    async def accounts(conn: Any) -> None:
        await conn.execute(
            t.providers.insert(),
            [
                {"name": n, "channel": "sms", "kind": "file", "config": {"directory": directory}, "enabled": True}
                | stamps
                for n in ("a", "b", "c")
            ],
        )

    await db.write(accounts)
    out["accounts"] = await per_delivery(providers, batch, rounds)

    def route(key: str, match: dict[str, str], weights: dict[str, int], failover: list[str]) -> dict[str, Any]:
        chosen = [{"name": n, "weight": w} for n, w in weights.items()]
        return {"key": key, "channel": "sms", "match": match, "providers": chosen, "failover": failover}

    async def phone_routes(conn: Any) -> None:
        cn = route("cn", {"country_code": "+86", "signature": "Acme"}, {"a": 70, "b": 30}, ["c"])
        rest = route("rest", {}, {"c": 1}, [])
        await conn.execute(t.routes.insert(), [r | {"enabled": True} | stamps for r in (cn, rest)])

    await db.write(phone_routes)
    out["phone_routes"] = await per_delivery(providers, batch, rounds)

    async def message_routes(conn: Any) -> None:
        template = {"key": "t", "name": "t", "category": "verification", "priority": "normal", "department": "risk"}
        await conn.execute(t.templates.insert().values(**template, channels={}, version=1, **stamps))
        message = {"request_id": "r", "user_id": "u", "template_key": "t", "template_version": 1, "data": {}}
        await conn.execute(
            t.messages.insert(),
            [
                {"id": f"m{i}", "category": "verification", "priority": "normal", "status": "queued"} | message | stamps
                for i in range(BATCH)
            ],
        )
        codes = route("codes", {"category": "verification", "department": "risk"}, {"a": 1, "b": 1}, [])
        await conn.execute(t.routes.insert().values(**codes, enabled=True, **stamps))

    await db.write(message_routes)
    out["message_routes"] = await per_delivery(providers, batch, rounds)
    out["retries"] = await per_delivery(providers, claimed(now, attempts=2), rounds)
    await db.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200, help="batches timed per configuration")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clarion-bench-") as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/clarion.db"
        migrate.upgrade(url)
        us = asyncio.run(measure(url, tmp, args.rounds))
    print(json.dumps({"benchmark": "routing", "batch": BATCH, "us_per_delivery": us}))


if __name__ == "__main__":
    main()
