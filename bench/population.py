"""What the benchmarks that run with every policy on share: their generated users and the policy configuration.

The configuration is that of ``bench/triggered.py --policies on``: all seven policies, two SMS caps (one per
department), a 1,000-word block list, a 100-word mask list and 1,000 address suppressions. User ``u{i}`` has a
name, a city, one of four time zones (or none) and an SMS address.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from clarion.settings import Settings

POLICIES = ("consent", "suppression", "quiet_hours", "dedup", "keywords", "caps", "safety_valve")
ZONES = ("Asia/Shanghai", "Europe/London", "America/New_York", None)
USER_COLUMNS = ("user_id", "attributes", "tags", "timezone", "locale", "addresses", "created_at", "updated_at")


def bench_settings(tmp: Path, url: str, key: str, **extra: Any) -> Settings:
    """Clarion's settings for a benchmark's process: its database at ``url``, its data and file sink in ``tmp``,
    ``key`` as its API key; ``extra`` settings on top."""
    return Settings(
        database_url=url,
        data_dir=str(tmp / "var"),
        outbox_dir=str(tmp / "var" / "outbox"),
        api_key=key,
        secret_key="bench",
        **extra,
    )


def user(i: int, stamped: datetime) -> dict[str, Any]:
    """Generated user ``u{i}`` as a ``users`` row, created and updated at ``stamped``."""
    return {
        "user_id": f"u{i}",
        "attributes": {"name": f"User {i}", "city": "Hangzhou"},
        "tags": [],
        "timezone": ZONES[i % 4],
        "locale": "zh-CN",
        "addresses": {"sms": f"+86138{i % 100_000_000:08d}"},
        "created_at": stamped,
        "updated_at": stamped,
    }


def generate_users(db: Path, n: int, stamped: datetime, *, chunk: int = 100_000) -> None:
    """Users ``u0`` … ``u{n-1}`` inserted straight into a migrated SQLite database, in one transaction."""
    at = stamped.replace(tzinfo=None).isoformat(sep=" ")
    conn = sqlite3.connect(db)
    conn.execute("BEGIN")
    for start in range(0, n, chunk):
        rows = []
        for i in range(start, min(n, start + chunk)):
            row = user(i, stamped)
            rows.append(
                (
                    row["user_id"],
                    json.dumps(row["attributes"]),
                    json.dumps(row["tags"]),
                    row["timezone"],
                    row["locale"],
                    json.dumps(row["addresses"]),
                    at,
                    at,
                )
            )
        conn.executemany(f"INSERT INTO users ({', '.join(USER_COLUMNS)}) VALUES ({', '.join('?' * 8)})", rows)
    conn.commit()
    conn.close()


async def put(api: httpx.AsyncClient, path: str, body: Any) -> None:
    r = await api.put(path, json=body)
    assert r.status_code in (200, 201), r.text


async def configure_policies(api: httpx.AsyncClient) -> None:
    """Every policy on, with the caps, keyword lists and suppressions described above."""
    await put(api, "/v1/policies/settings", {"enabled": dict.fromkeys(POLICIES, True)})
    await put(api, "/v1/policies/caps/sms-day", {"limit": 30, "window": {"unit": "day"}, "channel": "sms"})
    cap = {"limit": 5, "window": {"unit": "day"}, "channel": "sms", "per_department": True}
    await put(api, "/v1/policies/caps/sms-dept-day", cap)
    blocked = {"action": "block", "words": [f"blocked{i:04d}" for i in range(1000)]}
    await put(api, "/v1/keyword-lists/blocked", blocked)
    await put(api, "/v1/keyword-lists/masked", {"action": "mask", "words": [f"rival{i:03d}" for i in range(100)]})
    for i in range(1000):
        r = await api.post("/v1/suppressions", json={"address": f"+861390013{i:04d}", "source": "admin"})
        assert r.status_code in (200, 201), r.text


async def put_notification(api: httpx.AsyncClient, key: str, name: str, text: str) -> None:
    """An SMS ``notification`` template of the department ``growth``."""
    template = {
        "name": name,
        "category": "notification",
        "priority": "normal",
        "department": "growth",
        "channels": {"sms": {"text": text}},
    }
    await put(api, f"/v1/templates/{key}", template)
