"""The campaign task of the baseline: a Celery app on a Redis broker, one task per 100 users.

It is what a competent Python team writes without Clarion. Each task, for its batch of users:
- reads their profiles from PostgreSQL in one query;
- checks suppression, a daily cap and a 300 s dedup in one pipelined Redis round trip;
- renders the copy with Jinja2;
- writes one delivery row per user with one executemany, in one transaction;
- appends the batch's sends to a JSONL file (the sink), one file per worker process.
Acks are late (a task is acknowledged after it returns) and each worker process takes one task at a time.

Configured by the environment ``bench/peers/celery_campaign.py`` sets: ``PEERS_BROKER``, ``PEERS_REDIS``,
``PEERS_DATABASE`` (a libpq connection string) and ``PEERS_SINK``."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import psycopg
import redis
from celery import Celery, signals

app = Celery("peers", broker=os.environ.get("PEERS_BROKER", "redis://127.0.0.1:6379/6"))
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    worker_hijack_root_logger=False,
)

DAILY_CAP = 30
DEDUP_SECONDS = 300
COPY = jinja2.Environment(autoescape=False).from_string("【Clarion】{{ name }}, spring offers in {{ city }} this week")
INSERT = (
    "INSERT INTO deliveries (id, campaign, user_id, channel, address, content, status, reason, created_at) "
    "VALUES (%s, %s, %s, 'sms', %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING"  # a redelivered task
)


class _Process:
    """What each worker process opens once: the database connection, the Redis client, its sink file."""

    database: psycopg.Connection[Any]
    counters: redis.Redis
    sink: Any


state = _Process()


@signals.worker_process_init.connect
def _open(**_: Any) -> None:
    state.database = psycopg.connect(os.environ["PEERS_DATABASE"], autocommit=True)  # writes in transaction()
    state.counters = redis.Redis.from_url(os.environ["PEERS_REDIS"])
    sink = Path(os.environ["PEERS_SINK"]) / f"sms-{os.getpid()}.jsonl"
    state.sink = sink.open("a", buffering=1 << 20)


@signals.worker_process_shutdown.connect
def _close(**_: Any) -> None:
    state.sink.close()
    state.database.close()


@app.task(name="peers.send_batch")
def send_batch(campaign: str, user_ids: list[str]) -> int:
    """Send ``campaign`` to ``user_ids``; returns how many were handed to the sink."""
    now = datetime.now(UTC)
    day = now.strftime("%Y%m%d")
    with state.database.cursor() as cur:
        cur.execute("SELECT user_id, attributes, addresses FROM users WHERE user_id = ANY(%s)", (user_ids,))
        profiles = cur.fetchall()
    pipe = state.counters.pipeline(transaction=False)
    for user_id, _, addresses in profiles:
        pipe.sismember("peers:suppressed", addresses.get("sms", ""))
        pipe.incr(f"peers:cap:{day}:{user_id}")
        pipe.expire(f"peers:cap:{day}:{user_id}", 86400, nx=True)
        pipe.set(f"peers:dedup:{campaign}:{user_id}", 1, nx=True, ex=DEDUP_SECONDS)
    answers = pipe.execute()
    rows, lines = [], []
    for i, (user_id, attributes, addresses) in enumerate(profiles):
        suppressed, count, _, fresh = answers[4 * i : 4 * i + 4]
        address = addresses.get("sms", "")
        reason = "suppressed" if suppressed else "cap" if count > DAILY_CAP else "duplicate" if not fresh else None
        text = "" if reason else COPY.render(name=attributes.get("name", ""), city=attributes.get("city", ""))
        delivery = f"{campaign}-{user_id}"
        rows.append((delivery, campaign, user_id, address, text, "filtered" if reason else "sent", reason, now))
        if reason is None:
            lines.append(json.dumps({"id": delivery, "to": address, "text": text}, ensure_ascii=False))
    with state.database.transaction(), state.database.cursor() as cur:
        cur.executemany(INSERT, rows)
    if lines:
        state.sink.write("\n".join(lines) + "\n")
        state.sink.flush()
    return len(lines)
