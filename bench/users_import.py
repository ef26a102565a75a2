"""Bulk upsert benchmark: N generated users through the path ``POST /v1/users:batch`` and ``clarion users import``
take (validation of each item as ``PUT /v1/users/{user_id}`` validates it, then ``store.bulk.upsert_users``, one
transaction a batch), first creating them, then merging a change into every one of them.

Prints one JSON line: users/s for each pass, with and without validation, and the seconds spent in each part.

Run: ``.venv/bin/python bench/users_import.py`` (100,000 users into a fresh SQLite file) or
``--database-url postgresql+asyncpg://…`` (a migrated, preferably empty database).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from clarion import bootstrap
from clarion.api.routes import bulk as bulk_api
from clarion.settings import Settings
from clarion.store import bulk, migrate

TAGS = ["vip", "new_user", "churn_risk", "app_user", "student"]
CITIES = ["Beijing", "Shanghai", "Shenzhen", "Guangzhou", "Chengdu"]


def item(i: int, *, update: bool) -> dict[str, Any]:
    if update:
        return {"user_id": f"u{i:09d}", "attributes": {"level": i % 7, "last_seen": "2026-01-01"}, "tags": ["seen"]}
    return {
        "user_id": f"u{i:09d}",
        "attributes": {"name": f"User {i}", "city": CITIES[i % len(CITIES)], "age": 18 + i % 60},
        "tags": [TAGS[i % len(TAGS)], TAGS[(i * 7) % len(TAGS)]],
        "timezone": "Asia/Shanghai",
        "locale": "zh-CN",
        "addresses": {"email": f"u{i}@example.com", "sms": f"+86138{i % 100_000_000:08d}"},
    }


async def run_pass(services: Any, users: int, batch: int, *, update: bool) -> dict[str, float]:
    validate_s = write_s = 0.0
    for start in range(0, users, batch):
        items = [item(i, update=update) for i in range(start, min(start + batch, users))]
        began = time.perf_counter()
        changes = [bulk_api.parse_profile(x) for x in items]
        validated = time.perf_counter()
        now = datetime.now(UTC)
        await services.db.write(lambda conn, c=changes, n=now: bulk.upsert_users(conn, c, bulk.Mode.MERGE, n))
        write_s += time.perf_counter() - validated
        validate_s += validated - began
    return {
        "users_per_s": round(users / (validate_s + write_s)),
        "write_only_users_per_s": round(users / write_s),
        "validate_s": round(validate_s, 3),
        "write_s": round(write_s, 3),
    }


async def main(url: str, users: int, batch: int) -> dict[str, Any]:
    data_dir = tempfile.mkdtemp(prefix="clarion-bench-")
    settings = Settings(database_url=url, data_dir=data_dir, secret_key=SecretStr("bench"))
    services = bootstrap.build(settings)
    try:
        create = await run_pass(services, users, batch, update=False)
        merge = await run_pass(services, users, batch, update=True)
    finally:
        await services.close()
    return {"database": url.split(":")[0], "users": users, "batch": batch, "create": create, "merge": merge}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file in a temporary directory")
    args = parser.parse_args()
    url = args.database_url or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp(prefix='clarion-bench-')) / 'bench.db'}"
    migrate.upgrade(url)
    print(json.dumps(asyncio.run(main(url, args.users, args.batch))))
