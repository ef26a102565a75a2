"""Counters in Redis, shared by several Clarion processes.

Each call is one EVALSHA of a Lua script registered once (redis-py reloads it by itself after a SCRIPT FLUSH or
a failover): the whole batch travels flattened in ARGV and comes back as nested arrays. A script runs alone on
the server, which is what makes each ``Hit`` all-or-nothing and a cap exact under any number of clients. Time is
the server's (``redis.call('TIME')``), read once per call, so processes with skewed clocks still agree.

Layout, under ``prefix`` (default ``clarion:``):

* ``{prefix}r:{key}`` — rolling window: a sorted set, one member per unit of cost (``{token}:{hit}:{n}``, the
  token random per call), scored with the server time in ms. ZREMRANGEBYSCORE drops what left the window, ZCARD
  counts, and the key's PEXPIRE is the window, so an idle key disappears with its last entry.
* ``{prefix}f:{key}:{bucket}`` — fixed window: a plain counter per bucket, PEXPIREAT the bucket's end.
* ``{prefix}s:{key}`` — a ``seen`` mark: SET NX PX.

The namespaces matter beyond tidiness: a WRONGTYPE error half-way through a script would leave the earlier
writes of the batch in place, so a rolling key, a fixed key and a dedup key must never share a Redis key.

Bucket keys are computed inside the script (they depend on server time), so the script is for a single Redis
server or primary, not for Redis Cluster. A batch blocks Redis while it runs (about a millisecond for hundreds
of hits); callers keep batches to the size of a dispatcher batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from clarion.counters.base import Counters, Hit, HitResult, Limit, check_ttl

# ARGV: dry ("1"/"0"), token, number of hits, then per hit: cost, number of limits, then per limit:
#   kind ("r"/"f"), redis key (bucket suffix added here for "f"), limit, window ms, anchor ms.
# Returns one array per hit: {allowed 1/0, blocked index (0-based) or -1, count per limit...}.
HIT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dry = ARGV[1] == '1'
local token = ARGV[2]
local nhits = tonumber(ARGV[3])
local pending = {}
local out = {}
local p = 4

local function int(x) return string.format('%d', x) end

for h = 1, nhits do
  local cost = tonumber(ARGV[p])
  local n = tonumber(ARGV[p + 1])
  p = p + 2
  local kinds, keys, wins, ends, counts = {}, {}, {}, {}, {}
  local blocked = -1
  for i = 1, n do
    local kind, key = ARGV[p], ARGV[p + 1]
    local limit, win, start = tonumber(ARGV[p + 2]), tonumber(ARGV[p + 3]), tonumber(ARGV[p + 4])
    p = p + 5
    local count
    if kind == 'r' then
      if dry then
        count = redis.call('ZCOUNT', key, '(' .. int(now - win), '+inf')
      else
        redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now - win))
        count = redis.call('ZCARD', key)
      end
    else
      local idx = math.floor((now - start) / win)
      ends[i] = start + (idx + 1) * win
      key = key .. ':' .. int(idx)
      count = tonumber(redis.call('GET', key) or '0')
    end
    count = count + (pending[key] or 0)
    if blocked < 0 and count + cost > limit then blocked = i - 1 end
    kinds[i], keys[i], wins[i], counts[i] = kind, key, win, count
  end
  if blocked < 0 then
    for i = 1, n do
      local key = keys[i]
      if dry then
        pending[key] = (pending[key] or 0) + cost
      elseif kinds[i] == 'r' then
        local args = {}
        for j = 1, cost do
          args[#args + 1] = now
          args[#args + 1] = token .. ':' .. h .. ':' .. j
          if #args >= 1000 or j == cost then
            redis.call('ZADD', key, unpack(args))
            args = {}
          end
        end
        redis.call('PEXPIRE', key, int(wins[i]))
      else
        redis.call('INCRBY', key, cost)
        redis.call('PEXPIREAT', key, int(ends[i]))
      end
      counts[i] = counts[i] + cost
    end
  end
  local row = {blocked < 0 and 1 or 0, blocked}
  for i = 1, n do row[#row + 1] = counts[i] end
  out[h] = row
end
return out
"""

# KEYS: the marks. ARGV: dry ("1"/"0"), ttl ms. Returns 1 (seen) or 0 per key.
SEEN_SCRIPT = """
local dry = ARGV[1] == '1'
local marked = {}
local out = {}
for i, key in ipairs(KEYS) do
  if dry then
    if marked[key] or redis.call('EXISTS', key) == 1 then out[i] = 1 else out[i] = 0; marked[key] = true end
  elseif redis.call('SET', key, '1', 'NX', 'PX', ARGV[2]) then
    out[i] = 0
  else
    out[i] = 1
  end
end
return out
"""


class RedisCounters:
    """The ``Counters`` backend for several processes sharing one Redis.

    Pass a ``redis.asyncio.Redis`` you own, or use ``from_url`` to let ``close()`` close the client too.
    """

    def __init__(self, client: Redis, *, prefix: str = "clarion:", owns_client: bool = False) -> None:
        self.client = client
        self.prefix = prefix
        self._owns_client = owns_client
        self._hit = client.register_script(HIT_SCRIPT)
        self._seen = client.register_script(SEEN_SCRIPT)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "clarion:", **options: Any) -> RedisCounters:
        return cls(Redis.from_url(url, **options), prefix=prefix, owns_client=True)

    async def hit(self, hits: Sequence[Hit], *, dry_run: bool = False) -> list[HitResult]:
        if not hits:
            return []
        rows = await self._run(hits, [hit.cost for hit in hits], dry_run=dry_run)
        return [
            HitResult(True, tuple([int(c) for c in row[2:]]))
            if int(row[0])
            else HitResult(False, tuple([int(c) for c in row[2:]]), int(row[1]))
            for row in rows
        ]

    async def seen(self, keys: Sequence[str], ttl_seconds: int, *, dry_run: bool = False) -> list[bool]:
        ttl = check_ttl(ttl_seconds)
        if not keys:
            return []
        marks = [f"{self.prefix}s:{key}" for key in keys]
        answers = await self._seen(keys=marks, args=["1" if dry_run else "0", ttl * 1000])
        return [bool(int(answer)) for answer in answers]

    async def peek(self, limits: Sequence[Limit]) -> list[int]:
        if not limits:
            return []
        # A dry run of zero-cost hits, one per limit: the same script, so peek can never disagree with hit.
        rows = await self._run([Hit((limit,)) for limit in limits], [0] * len(limits), dry_run=True)
        return [int(row[2]) for row in rows]

    async def close(self) -> None:
        if self._owns_client:
            await self.client.aclose()

    async def _run(self, hits: Sequence[Hit], costs: Sequence[int], *, dry_run: bool) -> list[list[Any]]:
        args: list[str | int] = ["1" if dry_run else "0", os.urandom(8).hex(), len(hits)]
        rolling, fixed = f"{self.prefix}r:", f"{self.prefix}f:"
        # (kind, window ms, anchor ms) per window: the windows of a day and zone are shared by many hits
        windows: dict[int, tuple[str, int, int]] = {}
        for hit, cost in zip(hits, costs, strict=True):
            args += (cost, len(hit.limits))
            for limit in hit.limits:
                window = limit.window
                spec = windows.get(id(window))
                if spec is None:
                    if window.kind == "rolling":
                        spec = ("r", window.seconds * 1000, 0)
                    else:
                        spec = ("f", window.seconds * 1000, round(window.anchor * 1000))
                    windows[id(window)] = spec
                kind, window_ms, anchor_ms = spec
                args += (kind, f"{rolling if kind == 'r' else fixed}{limit.key}", limit.limit, window_ms, anchor_ms)
        rows: list[list[Any]] = await self._hit(args=args)
        return rows


if TYPE_CHECKING:
    _conforms: type[Counters] = RedisCounters
