"""Pure decisions: retry, message status, ids; and the rule that domain/ does no I/O."""

from __future__ import annotations

import ast
import os
import random
from pathlib import Path

import pytest

from clarion.domain import errors, ids, model, retry

S = model.DeliveryStatus


def test_retry_permanent_never_retries() -> None:
    decision = retry.RetryPolicy(max_attempts=5).decide(1, errors.PermanentSendError("bad number"))
    assert decision == retry.RetryDecision(retry=False)


def test_retry_stops_after_max_attempts() -> None:
    policy = retry.RetryPolicy(max_attempts=3)
    assert policy.decide(2, errors.TransientSendError("503")).retry
    assert not policy.decide(3, errors.TransientSendError("503")).retry


def test_retry_backoff_grows_with_jitter_within_bounds() -> None:
    policy = retry.RetryPolicy(max_attempts=10, base_seconds=2, max_seconds=60)
    rand = random.Random(7)
    for attempt in range(1, 9):
        nominal = min(60, 2 * 2 ** (attempt - 1))
        delays = [policy.decide(attempt, errors.TransientSendError("x"), rand).delay for _ in range(50)]
        assert all(nominal / 2 <= d <= nominal for d in delays)
        assert len(set(delays)) > 1  # jittered


def test_retry_after_is_honoured_but_capped() -> None:
    policy = retry.RetryPolicy(max_attempts=5, base_seconds=1, max_seconds=30)
    assert policy.decide(1, errors.TransientSendError("429", retry_after=20)).delay == 20
    assert policy.decide(1, errors.TransientSendError("429", retry_after=999)).delay == 30


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([S.SENT, S.FAILED], model.MessageStatus.SENT),
        ([S.DELIVERED, S.SENT], model.MessageStatus.DELIVERED),
        ([S.FAILED, S.QUEUED], model.MessageStatus.QUEUED),
        ([S.SENDING], model.MessageStatus.QUEUED),
        ([S.DEFERRED, S.FILTERED], model.MessageStatus.DEFERRED),
        ([S.FILTERED, S.FILTERED], model.MessageStatus.FILTERED),
        ([S.FILTERED, S.FAILED], model.MessageStatus.FAILED),
        ([], model.MessageStatus.FAILED),
    ],
)
def test_message_status_is_the_furthest_delivery(statuses: list[S], expected: model.MessageStatus) -> None:
    assert model.message_status([s.value for s in statuses]) is expected


def test_priority_lanes_order_urgent_first() -> None:
    lanes = sorted(model.Priority, key=lambda p: p.lane)
    assert lanes == [model.Priority.URGENT, model.Priority.HIGH, model.Priority.NORMAL, model.Priority.LOW]


def test_ids_are_unique_and_time_ordered() -> None:
    a = ids.new_id(now=1_700_000_000.000)
    b = ids.new_id(now=1_700_000_000.001)
    assert len(a) == len(b) == 32
    assert a < b
    assert len({ids.new_id() for _ in range(10_000)}) == 10_000


def test_domain_imports_no_infrastructure() -> None:
    banned = {"sqlalchemy", "fastapi", "starlette", "httpx", "redis", "aiosmtplib", "asyncpg", "aiosqlite"}
    domain = Path(__file__).parents[2] / "src" / "clarion" / "domain"
    offenders = []
    for path in domain.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in banned]
    assert offenders == []


def test_ids_within_one_millisecond_keep_creation_order() -> None:
    made = [ids.new_id(now=1_800_000_000.0005) for _ in range(1000)]
    assert made == sorted(made)
    assert len(set(made)) == 1000


def test_a_forked_child_does_not_reuse_its_parents_random_bytes() -> None:
    ids.new_id()  # the parent now holds a pool of random bytes
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write, ids.new_id(now=1_900_000_000.0).encode())
        os._exit(0)
    os.waitpid(child, 0)
    from_child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    mine = ids.new_id(now=1_900_000_000.0)
    assert mine[12:] != from_child[12:]  # the 80 random bits differ
