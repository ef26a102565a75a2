"""What vendor provider kinds share beyond ``base``: the access-token cache and the context they are built with.

Most vendors (WeChat, WeCom, Feishu, FCM's OAuth, …) authenticate requests with an access token obtained from
the account's credentials, valid for a while (two hours for WeChat), and limited in how often it may be asked
for. A kind names its account's token with ``token_key(kind, *ids, secret=…)`` and makes each request with
``TokenCache.call_with_token(key, fetch, call, expired=…)``. The token is reused until ``REFRESH_MARGIN`` before
it expires, fetched once when many deliveries ask at the same moment (per process, one fetch in flight per key),
and — with ``CLARION_REDIS_URL`` — shared by every process, so ten workers do not each spend the vendor's daily
quota of token requests. An answer the kind calls expired (its "token expired or invalid" codes) forgets that
token and the request is made once more with a fresh one, never more; only that token is forgotten, so a token
another process has just refreshed is not thrown away. The key holds a digest of the secret, so an account
whose secret is changed fetches (and so proves) a token of its own instead of reusing one got with the old one.

A kind that needs the context declares ``uses_context = True`` and takes ``context=`` in its constructor
(``ProviderRegistry`` passes it)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import orjson

from clarion.domain import errors

#: a token is refreshed this long before the vendor says it expires (clock skew, a request in flight)
REFRESH_MARGIN = 300.0
#: at least this share of a short-lived token's life is kept as margin instead, when it is shorter than 2×margin
MARGIN_SHARE = 0.2

#: ``fetch()`` → (token, seconds it is valid for), from the vendor
Fetch = Callable[[], Awaitable[tuple[str, float]]]
Answer = TypeVar("Answer")


def token_key(kind: str, *ids: str | int, secret: str) -> str:
    """The cache key of an account's token: ``kind:id…:digest``, the digest (16 hex of SHA-256) of the secret the
    token is fetched with. A changed secret is a new key, so no send uses a token the old secret got; the
    public ids stay readable for operators looking at Redis. The shape is the one WeChat and WeCom keys always
    had, so their shared tokens survive an upgrade (a refetch would invalidate WeChat tokens other processes hold)."""
    digest = hashlib.sha256(secret.encode()).hexdigest()[:16]
    return ":".join([kind, *(str(part) for part in ids), digest])


class _Store(Protocol):
    async def load(self, key: str) -> tuple[str, float] | None: ...

    async def save(self, key: str, token: str, expires_at: float) -> None: ...

    async def forget(self, key: str, token: str) -> None: ...


class _Memory:
    def __init__(self) -> None:
        self.tokens: dict[str, tuple[str, float]] = {}

    async def load(self, key: str) -> tuple[str, float] | None:
        return self.tokens.get(key)

    async def save(self, key: str, token: str, expires_at: float) -> None:
        self.tokens[key] = (token, expires_at)

    async def forget(self, key: str, token: str) -> None:
        if self.tokens.get(key, ("", 0.0))[0] == token:
            del self.tokens[key]


# Deletes the key only while it still holds the token being forgotten (compare-and-delete).
_FORGET = """
local value = redis.call('GET', KEYS[1])
if value and cjson.decode(value)[1] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class _Redis:
    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._forget = client.register_script(_FORGET)

    async def load(self, key: str) -> tuple[str, float] | None:
        raw = await self.client.get(self.prefix + key)
        if raw is None:
            return None
        token, expires_at = orjson.loads(raw)
        return str(token), float(expires_at)

    async def save(self, key: str, token: str, expires_at: float) -> None:
        ttl_ms = max(1, int((expires_at - time.time()) * 1000))
        await self.client.set(self.prefix + key, orjson.dumps([token, expires_at]), px=ttl_ms)

    async def forget(self, key: str, token: str) -> None:
        await self._forget(keys=[self.prefix + key], args=[token])


class TokenCache:
    """Vendor access tokens by key (``token_key``): in memory, or in Redis under ``{prefix}tok:``.

    ``clock`` is unix time (tests move it)."""

    def __init__(self, redis: Any = None, *, prefix: str = "clarion:", clock: Callable[[], float] = time.time) -> None:
        self._store: _Store = _Redis(redis, prefix + "tok:") if redis is not None else _Memory()
        self.clock = clock
        self._local: dict[str, tuple[str, float]] = {}  # this process's copy: no round trip per send
        self._locks: dict[str, asyncio.Lock] = {}
        self.fetches = 0  # tokens fetched from vendors by this process (tests and metrics read it)

    def _fresh(self, entry: tuple[str, float] | None) -> str | None:
        if entry is None:
            return None
        token, expires_at = entry
        return token if self.clock() < expires_at else None

    async def get(self, key: str, fetch: Fetch) -> str:
        """A valid token for ``key``: this process's, the shared one, or one ``fetch`` gets now (one at a time)."""
        if (token := self._fresh(self._local.get(key))) is not None:
            return token
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if (token := self._fresh(self._local.get(key))) is not None:  # fetched while this one waited
                return token
            shared = await self._store.load(key)
            if (token := self._fresh(shared)) is not None:
                assert shared is not None
                self._local[key] = shared
                return token
            token, valid_for = await fetch()
            self.fetches += 1
            margin = REFRESH_MARGIN if valid_for > 2 * REFRESH_MARGIN else valid_for * MARGIN_SHARE
            expires_at = self.clock() + max(1.0, valid_for - margin)
            self._local[key] = (token, expires_at)
            await self._store.save(key, token, expires_at)
            return token

    async def invalidate(self, key: str, token: str) -> None:
        """The vendor refused ``token`` (expired, revoked): forget it here and, if it is still the shared one, there."""
        if self._local.get(key, ("", 0.0))[0] == token:
            del self._local[key]
        await self._store.forget(key, token)

    async def call_with_token(
        self,
        key: str,
        fetch: Fetch,
        call: Callable[[str], Awaitable[Answer]],
        *,
        expired: Callable[[Answer], bool],
    ) -> Answer:
        """The vendor's answer to ``call(token)`` with ``key``'s token. When ``expired(answer)`` says the vendor
        refused the token, that token is forgotten and the call made once more with a fresh one; that second
        answer is returned whatever it says, so a vendor that keeps refusing costs one refresh, not a loop. The
        kind turns the answer (and a second refusal) into its result or error."""
        token = await self.get(key, fetch)
        answer = await call(token)
        if not expired(answer):
            return answer
        await self.invalidate(key, token)
        return await call(await self.get(key, fetch))


@dataclass(slots=True)
class ProviderContext:
    """What the registry hands a kind that declares ``uses_context``: shared by every account of a process."""

    tokens: TokenCache = field(default_factory=TokenCache)


# -- SMS vendors that send only registered templates (Aliyun, Tencent) ----------------------------------------

_SIGNED = re.compile(r"^【([^【】]+)】")


def sms_template(content: Mapping[str, Any], account: str) -> tuple[str, dict[str, str]]:
    """The vendor template (code, rendered parameters) an SMS content names for ``account`` (else for ``"*"``).
    A content without one cannot be sent by such a vendor: the template's fault, not the account's."""
    entries = content.get("vendor_template") or {}
    entry = (entries.get(account) or entries.get("*")) if isinstance(entries, dict) else None
    if not isinstance(entry, dict) or not entry.get("code"):
        raise errors.PermanentSendError(
            f"the SMS content names no vendor template for provider {account!r} (vendor_template)",
            code="no_vendor_template",
        )
    params = entry.get("params") or {}
    return str(entry["code"]), {str(k): str(v) for k, v in params.items()}


def sms_sign_name(text: str, default: str | None) -> str:
    """The sign name (签名) an SMS goes out under: the 【…】 the rendered text starts with (the content's
    ``signature``), else the account's default; a vendor refuses a template sent with none."""
    found = _SIGNED.match(text)
    name = found.group(1).strip() if found else (default or "").strip("【】 ")
    if not name:
        raise errors.PermanentSendError(
            "the SMS has no signature and the account no default sign_name", code="no_sign_name"
        )
    return name
