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
* ``{prefix}breaker:{account}`` — a provider account's circuit breaker (``domain.breaker.State`` less its window):
  a hash of name, since, reason, consecutive, probe_at.
* ``{prefix}window:{account}`` — its health window: a list of outcomes (JSON ``[at, kind, latency, reason]``),
  trimmed to ``Thresholds.max_window`` and expiring ``window`` seconds after the last one.
* ``{prefix}bucket:{account}:{second|minute}`` — a rate-limit token bucket: a hash of tokens and the server time
  they were counted at, expiring once it would be full again.

The namespaces matter beyond tidiness: a WRONGTYPE error half-way through a script would leave the earlier
writes of the batch in place, so a rolling key, a fixed key and a dedup key must never share a Redis key.

Bucket keys are computed inside the script (they depend on server time), so the script is for a single Redis
server or primary, not for Redis Cluster. A batch blocks Redis while it runs (about a millisecond for hundreds
of hits); callers keep batches to the size of a dispatcher batch.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from clarion.counters.base import Breakers, Counters, Hit, HitResult, Limit, RateLimits, check_ttl
from clarion.domain import breaker, ratelimit

log = logging.getLogger(__name__)

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


# KEYS: breaker hashes. ARGV: now, then per key: cool-down, probe timeout (seconds). ``domain.breaker.admit``, for
# every account at once: an open breaker past its cool-down turns half-open and this caller's batch carries the
# probe; a half-open one grants another probe only once the one in flight is stale. Returns per key:
# {allowed 1/0, state name, reason, 1 if it turned half-open here}.
ADMIT_SCRIPT = """
local now = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local cool, stale = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local st = redis.call('HMGET', key, 'name', 'since', 'reason', 'probe_at')
  local name, reason = st[1], st[3] or ''
  if not name or name == 'closed' then
    out[i] = {1, 'closed', '', 0}
  elseif name == 'open' then
    if now - tonumber(st[2]) < cool then
      out[i] = {0, 'open', reason, 0}
    else
      local why = 'cool-down of ' .. string.format('%.0f', cool) .. 's over'
      redis.call('HSET', key, 'name', 'half_open', 'since', ARGV[1], 'reason', why, 'probe_at', ARGV[1])
      out[i] = {1, 'half_open', why, 1}
    end
  elseif not st[4] or st[4] == '' or now - tonumber(st[4]) >= stale then
    redis.call('HSET', key, 'probe_at', ARGV[1])
    out[i] = {1, 'half_open', reason, 0}
  else
    out[i] = {0, 'half_open', reason, 0}
  end
end
return out
"""

# KEYS: breaker hashes. ARGV: the time the probes were granted at. ``domain.breaker.release``: a probe granted at
# that time and not sent is handed back (one granted since, to another batch, has another time and stays).
RELEASE_SCRIPT = """
for _, key in ipairs(KEYS) do
  local st = redis.call('HMGET', key, 'name', 'probe_at')
  if st[1] == 'half_open' and st[2] == ARGV[1] then redis.call('HSET', key, 'probe_at', '') end
end
return 0
"""

# KEYS: breaker hash, window list. ARGV: max window, window ttl ms, then the outcomes (JSON). The hot path of
# ``record``: nothing but successes, on a breaker that is not half-open, changes no state (closed stays closed,
# open waits for its cool-down) — append them and reset the run of failures. Returns 0 (did nothing) when the
# breaker is half-open: then a success closes it, and the caller takes the transactional path.
RECORD_OK_SCRIPT = """
local name = redis.call('HGET', KEYS[1], 'name')
if name == 'half_open' then return 0 end
if name then redis.call('HSET', KEYS[1], 'consecutive', '0') end
redis.call('RPUSH', KEYS[2], unpack(ARGV, 3))
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[1]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""

# KEYS: bucket hashes. ARGV: wanted, then per bucket: rate (tokens/s), capacity. ``domain.ratelimit.refill`` and
# ``take`` on the server's clock; returns {granted, tokens left per bucket (strings: Lua numbers would be cut to
# integers)}.
TAKE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local granted = tonumber(ARGV[1])
local held = {}
for i, key in ipairs(KEYS) do
  local rate, cap = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local level = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = cap
  if level[1] then
    local elapsed = math.max(0, now - tonumber(level[2]))
    tokens = math.min(cap, tonumber(level[1]) + elapsed * rate)
  end
  held[i] = tokens
  granted = math.min(granted, math.max(0, math.floor(tokens + 0.001)))
end
local out = {granted}
for i, key in ipairs(KEYS) do
  local rate, cap = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local left = held[i] - granted
  redis.call('HSET', key, 'tokens', string.format('%.17g', left), 'at', string.format('%.6f', now))
  redis.call('PEXPIRE', key, math.ceil((cap - left) / rate * 1000) + 1000)
  out[#out + 1] = string.format('%.17g', left)
end
return out
"""

#: how often ``record`` retries its transaction when another process changed the breaker meanwhile
RECORD_RETRIES = 20


class RedisCounters:
    """The ``Counters`` backend for several processes sharing one Redis: also their provider breakers, health
    windows (``shared``) and rate limits.

    Pass a ``redis.asyncio.Redis`` you own, or use ``from_url`` to let ``close()`` close the client too.
    """

    shared = True

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "clarion:",
        owns_client: bool = False,
        thresholds: Callable[[str], breaker.Thresholds] | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self._owns_client = owns_client
        #: each account's breaker thresholds (the defaults unless wired otherwise)
        self.thresholds = thresholds or (lambda _account: breaker.DEFAULT)
        self._hit = client.register_script(HIT_SCRIPT)
        self._seen = client.register_script(SEEN_SCRIPT)
        self._admit = client.register_script(ADMIT_SCRIPT)
        self._record_ok = client.register_script(RECORD_OK_SCRIPT)
        self._take = client.register_script(TAKE_SCRIPT)
        self._release = client.register_script(RELEASE_SCRIPT)

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

    # -- breakers ----------------------------------------------------------------------------------------

    async def admit(self, accounts: Sequence[str], now: float, probes: set[str] | None = None) -> dict[str, str]:
        if not accounts:
            return {}
        args: list[str | float] = [repr(now)]
        for name in accounts:
            limits = self.thresholds(name)
            args += (limits.cool_down, limits.probe_timeout)
        rows = await self._admit(keys=[self._state_key(n) for n in accounts], args=args)
        refused: dict[str, str] = {}
        for name, (allowed, state, reason, turned) in zip(accounts, rows, strict=True):
            state, reason = _text(state), _text(reason)
            if int(turned):
                log.warning("provider %s: breaker open → half_open: %s", name, reason)
            if not int(allowed):
                refused[name] = breaker.why_closed_to(breaker.State(name=state, reason=reason))  # type: ignore[arg-type]
            elif state == "half_open" and probes is not None:
                probes.add(name)
        return refused

    async def release(self, accounts: Sequence[str], granted_at: float) -> None:
        if accounts:
            await self._release(keys=[self._state_key(n) for n in accounts], args=[repr(granted_at)])

    async def record(self, account: str, outcomes: Sequence[breaker.Outcome]) -> list[breaker.Transition]:
        if not outcomes:
            return []
        limits = self.thresholds(account)
        keys = [self._state_key(account), self._window_key(account)]
        ttl_ms = round(limits.window * 1000) + 1000
        encoded = [_encode(o) for o in outcomes[-limits.max_window :]]
        if all(o.kind == "ok" for o in outcomes) and int(
            await self._record_ok(keys=keys, args=[limits.max_window, ttl_ms, *encoded])
        ):
            return []
        # Anything else may move the breaker: read it and its window, decide with ``domain.breaker``, and write
        # the result back only if no other process changed either meanwhile (WATCH), else decide again.
        for _ in range(RECORD_RETRIES):
            pipe: Any
            async with self.client.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(*keys)
                    state = _decode(await pipe.hgetall(keys[0]), await pipe.lrange(keys[1], 0, -1))
                    state, transitions = breaker.observe_many(account, state, outcomes, limits)
                    pipe.multi()
                    pipe.hset(keys[0], mapping=_fields(state))
                    pipe.delete(keys[1])
                    if state.window:
                        pipe.rpush(keys[1], *[_encode(o) for o in state.window])
                        pipe.pexpire(keys[1], ttl_ms)
                    await pipe.execute()
                    return transitions
                except WatchError:
                    continue
        raise RuntimeError(f"provider {account}: its breaker kept changing under {RECORD_RETRIES} attempts to record")

    async def health(self, account: str, now: float) -> dict[str, object]:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._state_key(account))
            pipe.lrange(self._window_key(account), 0, -1)
            fields, window = await pipe.execute()
        return breaker.health(_decode(fields, window), now, self.thresholds(account))

    def _state_key(self, account: str) -> str:
        return f"{self.prefix}breaker:{account}"

    def _window_key(self, account: str) -> str:
        return f"{self.prefix}window:{account}"

    # -- rate limits -------------------------------------------------------------------------------------

    async def take(self, account: str, buckets: Sequence[ratelimit.Bucket], wanted: int, now: float) -> ratelimit.Grant:
        if not buckets:
            return ratelimit.Grant(wanted, ())
        keys = [f"{self.prefix}bucket:{account}:{b.name}" for b in buckets]
        args: list[str | int] = [wanted]
        for bucket in buckets:
            args += (repr(bucket.rate), repr(bucket.capacity))
        row = await self._take(keys=keys, args=args)
        return ratelimit.Grant(int(row[0]), tuple(float(_text(v)) for v in row[1:]))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _encode(outcome: breaker.Outcome) -> str:
    return json.dumps([outcome.at, outcome.kind, outcome.latency, outcome.reason], separators=(",", ":"))


def _fields(state: breaker.State) -> dict[str, str]:
    return {
        "name": state.name,
        "since": repr(state.since),
        "reason": state.reason or "",
        "consecutive": str(state.consecutive),
        "probe_at": "" if state.probe_at is None else repr(state.probe_at),
    }


def _decode(fields: dict[Any, Any], window: Sequence[Any]) -> breaker.State:
    """A breaker's state from its hash and its window list (oldest first, as ``domain.breaker`` keeps it)."""
    got = {_text(k): _text(v) for k, v in fields.items()}
    outcomes = sorted(
        (
            breaker.Outcome(float(at), kind, float(latency), reason)
            for at, kind, latency, reason in map(json.loads, window)
        ),
        key=lambda o: o.at,
    )
    if not got:
        return breaker.State(window=tuple(outcomes))
    return breaker.State(
        name=got.get("name", "closed"),  # type: ignore[arg-type]
        since=float(got.get("since") or 0.0),
        reason=got.get("reason") or None,
        consecutive=int(got.get("consecutive") or 0),
        probe_at=float(got["probe_at"]) if got.get("probe_at") else None,
        window=tuple(outcomes),
    )


if TYPE_CHECKING:
    _conforms: type[Counters] = RedisCounters
    _breaks: type[Breakers] = RedisCounters
    _limits: type[RateLimits] = RedisCounters
