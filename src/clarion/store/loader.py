"""Coalesced look-ups: concurrent requests that each need a few rows share one query.

Under load many send requests are in flight at once, and each needs its recipients' profiles and their
suppressions. Asking the database once per request costs more in statement overhead than the look-up itself;
a ``Coalescing`` loader gathers the keys requested during one turn of the event loop and fetches them with one
``IN`` query. A caller waits at most that one turn."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any, Generic, TypeVar

from clarion.domain import model
from clarion.domain.policy import config
from clarion.domain.policy.decision import addresses_of
from clarion.store import policies, records
from clarion.store.db import Database

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalescing(Generic[K, V]):
    """``load_many(keys)`` → the values found for those keys; ``fetch(keys)`` answers a whole turn's keys."""

    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]], *, max_batch: int = 1000) -> None:
        self.fetch = fetch
        self.max_batch = max_batch
        self._keys: dict[K, None] = {}  # this turn's keys, in order, once each
        self._waiting: list[tuple[list[K], asyncio.Future[dict[K, V]]]] = []  # each caller's keys and answer
        self._scheduled = False

    async def load_many(self, keys: Iterable[K]) -> dict[K, V]:
        """The values of ``keys`` that exist (keys without one are simply absent)."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        if len(wanted) >= self.max_batch:  # a big request is a batch by itself
            return await self.fetch(wanted)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[dict[K, V]] = loop.create_future()
        self._waiting.append((wanted, answer))
        self._keys.update(dict.fromkeys(wanted))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(lambda: asyncio.ensure_future(self._flush()))
        return await answer

    async def _flush(self) -> None:
        keys, waiting = self._keys, self._waiting
        self._keys, self._waiting, self._scheduled = {}, [], False
        try:
            values = await self.fetch(list(keys))
        except Exception as exc:
            for _, answer in waiting:
                if not answer.done():
                    answer.set_exception(exc)
            return
        for wanted, answer in waiting:
            if not answer.done():
                answer.set_result({key: values[key] for key in wanted if key in values})


class UserLoader(Coalescing[str, model.User]):
    """Profiles with their suppressions (by user id and by any of their addresses): the policy stage needs
    both for every recipient, and one read answers both for a whole turn's recipients."""

    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = 1000,
        any_suppression: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        async def fetch(ids: list[str]) -> dict[str, model.User]:
            # most deployments have no suppression at all most of the time: then there is nothing to read
            skip = any_suppression is not None and not await any_suppression()
            async with db.read() as conn:
                rows = await records.user_rows(conn, ids)
                if not rows or skip:
                    return {row.user_id: records.user_from_row(row, ()) for row in rows}
                addresses = {row.user_id: _addresses(row.addresses or {}) for row in rows}
                everyone = sorted({a for found in addresses.values() for a in found})
                suppressions = await policies.suppressions_for(conn, list(addresses), everyone)
            if not suppressions:
                return {row.user_id: records.user_from_row(row, ()) for row in rows}
            holders: dict[str, list[str]] = {}  # address → the users who have it
            for user_id, found in addresses.items():
                for address in found:
                    holders.setdefault(address, []).append(user_id)
            mine: dict[str, list[config.Suppression]] = {}  # each user's, in the order read
            for s in suppressions:
                if s.user_id is not None:
                    mine.setdefault(s.user_id, []).append(s)
                elif s.address is not None:
                    for user_id in holders.get(s.address, ()):
                        mine.setdefault(user_id, []).append(s)
            return {row.user_id: records.user_from_row(row, tuple(mine.get(row.user_id, ()))) for row in rows}

        super().__init__(fetch, max_batch=max_batch)


def _addresses(addresses: dict[str, Any]) -> set[str]:
    return {config.normalize_address(a) for value in addresses.values() for a in addresses_of(value)}
