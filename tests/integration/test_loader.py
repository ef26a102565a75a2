"""Concurrent user look-ups are coalesced into one query, on both databases."""

from __future__ import annotations

import asyncio

import pytest

from clarion import bootstrap
from clarion.store import loader, records
from tests.conftest import put_user


async def test_concurrent_loads_share_one_query(api, clarion: bootstrap.Clarion, monkeypatch) -> None:
    for n in range(5):
        await put_user(api, f"u{n}", attributes={"n": n})
    queries: list[list[str]] = []
    real = records.user_rows

    async def counting(conn, ids):  # type: ignore[no-untyped-def]
        queries.append(sorted(ids))
        return await real(conn, ids)

    monkeypatch.setattr(records, "user_rows", counting)
    users = loader.UserLoader(clarion.db)
    results = await asyncio.gather(
        users.load_many(["u0", "u1"]), users.load_many(["u1", "ghost"]), users.load_many(["u4"])
    )
    assert queries == [["ghost", "u0", "u1", "u4"]]
    assert {k: v.attributes["n"] for k, v in results[0].items()} == {"u0": 0, "u1": 1}
    assert set(results[1]) == {"u1"}  # unknown ids are absent, not errors
    assert results[2]["u4"].attributes == {"n": 4}

    again = await users.load_many(["u2"])  # a later turn of the loop is a new query
    assert set(again) == {"u2"}
    assert queries[-1] == ["u2"]


async def test_a_failing_query_fails_every_waiter(clarion: bootstrap.Clarion, monkeypatch) -> None:
    async def broken(conn, ids):  # type: ignore[no-untyped-def]
        raise RuntimeError("database gone")

    monkeypatch.setattr(records, "user_rows", broken)
    users = loader.UserLoader(clarion.db)
    outcomes = await asyncio.gather(users.load_many(["a"]), users.load_many(["b"]), return_exceptions=True)
    assert [type(o) for o in outcomes] == [RuntimeError, RuntimeError]
    with pytest.raises(RuntimeError, match="database gone"):
        await users.load_many(["c"])


async def test_each_waiter_gets_its_own_keys_and_a_cancelled_one_leaves_the_rest() -> None:
    fetched: list[list[str]] = []

    async def fetch(keys: list[str]) -> dict[str, str]:
        fetched.append(keys)
        await asyncio.sleep(0.01)
        return {k: k.upper() for k in keys if k != "gone"}

    coalescing = loader.Coalescing(fetch)
    first = asyncio.ensure_future(coalescing.load_many(["a", "b", "gone"]))
    second = asyncio.ensure_future(coalescing.load_many(["b", "c", "b"]))
    cancelled = asyncio.ensure_future(coalescing.load_many(["d"]))
    await asyncio.sleep(0)  # all three are waiting on the same turn's query
    cancelled.cancel()
    assert await first == {"a": "A", "b": "B"}
    assert await second == {"b": "B", "c": "C"}
    assert cancelled.cancelled()
    assert fetched == [["a", "b", "gone", "c", "d"]]  # one query, each key once, in the order asked
    assert await coalescing.load_many(["e"]) == {"e": "E"}  # the next turn starts afresh
    assert fetched[-1] == ["e"]
