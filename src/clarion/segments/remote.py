"""A segment index held by another process: the client side of ``clarion segments serve`` (``segments.holder``).

At 10^8 users the index takes about 5 GB and a minute to build, so a deployment of several API and worker
processes holds it once: the holder builds and follows it (its poll of the users table, events and ID lists), and
every process started with ``CLARION_SEGMENTS_URL`` uses a :class:`RemoteSegments` in its place. It answers what
the rest of Clarion asks of :class:`~clarion.segments.service.SegmentService` (counts, samples, audiences, saved
conditions, and the change hints of this process's writes) with the same answers, and the same freshness: a hint
is passed on to the holder at once, which re-reads the users it names as the embedded index would.

Requests are signed (:func:`signature`) with a key derived from the deployment's secret key, so the holder
serves only processes of the same deployment. An audience comes back as a stream of newline-separated user ids
(user ids never hold a newline), announced by its size in ``X-Clarion-Audience-Size``, so neither side builds
one JSON document of 10^6 ids, and a stream cut short is noticed rather than taken for a smaller audience.

A holder that cannot be reached, or that refuses this process's signature, is :class:`SegmentsUnavailable`:
the API answers 503 saying so. A change hint that cannot be delivered is only logged: the write is committed,
and the holder's poll finds it within its interval.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx
import orjson

from clarion.domain import errors
from clarion.segments import query
from clarion.segments import service as local
from clarion.store.db import Database

log = logging.getLogger(__name__)
SIZE_HEADER = "X-Clarion-Audience-Size"
TIMESTAMP_HEADER = "X-Clarion-Timestamp"
SIGNATURE_HEADER = "X-Clarion-Signature"
#: how far a request's timestamp may be from the holder's clock (replaying a request within it is harmless:
#: every call is a read or a hint to re-read the store)
MAX_SKEW_SECONDS = 300
#: how long connecting to the holder may take: a holder that is down or unreachable answers 503 this soon,
#: whatever ``segments_timeout_seconds`` (the time one answer may take) says
CONNECT_SECONDS = 3.0
#: user ids per change hint (the holder takes at most ``holder.MAX_HINTED_USERS`` at once)
HINT_CHUNK = 100_000


class SegmentsUnavailable(errors.InvalidInput):
    """The segment holder cannot answer now (down, unreachable, too slow, or not of this deployment): the API
    and the console answer 503 with this message, which names the holder's URL. An ``InvalidInput`` so that
    every face that already turns Clarion's refusals into JSON errors answers it, with its own status."""

    status = 503

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message, code="segments_unavailable", details={"service": "segments", "url": url})


def holder_key(secret_key: str) -> bytes:
    """The key that signs calls to the holder: derived from the deployment's secret key, never the key itself."""
    return hmac.new(secret_key.encode(), b"clarion segment holder v1", hashlib.sha256).digest()


def signature(key: bytes, timestamp: str, method: str, path: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of one request: its timestamp, method, path and body."""
    message = b"\n".join((timestamp.encode(), method.upper().encode(), path.encode(), body))
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_headers(key: bytes, method: str, path: str, body: bytes) -> dict[str, str]:
    """The headers that sign one request now (the holder refuses them :data:`MAX_SKEW_SECONDS` later)."""
    timestamp = str(int(time.time()))
    return {
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(key, timestamp, method, path, body),
        "Content-Type": "application/json",
    }


class RemoteSegments:
    """What a process that does not hold the index uses in place of ``SegmentService``."""

    def __init__(self, db: Database, url: str, secret_key: str, *, timeout: float = 60.0) -> None:
        self.db = db
        self.url = url.rstrip("/")
        self._key = holder_key(secret_key)
        self._client = httpx.AsyncClient(
            base_url=self.url, timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_SECONDS))
        )

    async def start(self) -> None:
        """Nothing to build: the holder has the index. A holder that is down does not stop this process from
        starting; the paths that need segments answer 503 until it is back."""
        log.info("segments: asking the holder at %s", self.url)

    async def close(self) -> None:
        await self._client.aclose()

    # -- what SegmentService answers ------------------------------------------------------------------------

    async def count(self, conditions: query.Node, now: datetime | None = None) -> int:
        """How many live users the conditions select (InvalidInput naming the path when they cannot apply)."""
        body = {"conditions": query.to_json(conditions), "now": now.isoformat() if now is not None else None}
        return int((await self._call("/count", body))["count"])

    async def sample(self, conditions: query.Node, n: int, seed: int | None = None) -> list[str]:
        body = {"conditions": query.to_json(conditions), "n": n, "seed": seed}
        return list((await self._call("/sample", body))["user_ids"])

    async def segment(self, key: str) -> query.Node:
        """The parsed conditions of a saved segment (NotFound when there is none), read from the store."""
        return await local.saved_conditions(self.db, key)

    async def audience(self, spec: Any) -> list[str]:
        """The user ids of an audience spec, sorted (see ``SegmentService.audience``), read from the holder's
        stream of newline-separated ids."""
        try:
            response = await self._client.send(self._request("/audience", {"audience": spec}), stream=True)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        try:
            if response.status_code != 200:
                await response.aread()
                raise self._refusal(response)
            expected = int(response.headers.get(SIZE_HEADER, "-1"))
            ids: list[str] = []
            carry = b""
            async for chunk in response.aiter_bytes():
                chunk = carry + chunk
                cut = chunk.rfind(b"\n") + 1
                carry = chunk[cut:]
                if cut:
                    ids += chunk[: cut - 1].decode().split("\n")
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        finally:
            await response.aclose()
        if carry or len(ids) != expected:
            raise SegmentsUnavailable(f"the segment holder at {self.url} cut the audience short; try again", self.url)
        return ids

    async def count_audience(self, spec: Any) -> int:
        return int((await self._call("/audience:count", {"audience": spec}))["count"])

    # -- this process's writes, passed on ---------------------------------------------------------------------

    async def users_changed(self, user_ids: Sequence[str]) -> None:
        """Users were written through this process: the holder re-reads them now, :data:`HINT_CHUNK` at a call."""
        ids = list(dict.fromkeys(user_ids))
        for start in range(0, len(ids), HINT_CHUNK):
            await self._hint("/users:changed", {"user_ids": ids[start : start + HINT_CHUNK]})

    async def events_tracked(self) -> None:
        await self._hint("/events:tracked", {})

    async def lists_changed(self) -> None:
        await self._hint("/lists:changed", {})

    async def _hint(self, path: str, body: Mapping[str, Any]) -> None:
        """Pass a change on; never raise: the write it follows is committed, and the holder's poll finds it."""
        try:
            await self._call(path, body)
        except errors.InvalidInput as exc:
            log.warning("segments: %s not passed on (%s); the holder's poll will find it", path, exc.message)

    # -- the wire ---------------------------------------------------------------------------------------------

    def _request(self, path: str, body: Mapping[str, Any]) -> httpx.Request:
        """A signed POST of ``body`` to ``path``: the signature covers the path as sent (the holder's URL's own
        path included), the method, the body and the time."""
        payload = orjson.dumps(body)
        request = self._client.build_request("POST", path, content=payload)
        request.headers.update(signed_headers(self._key, "POST", request.url.path, payload))
        return request

    async def _call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.send(self._request(path, body))
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.status_code != 200:
            raise self._refusal(response)
        answer: dict[str, Any] = response.json()
        return answer

    def _unreachable(self, exc: httpx.HTTPError) -> SegmentsUnavailable:
        what = "did not answer in time" if isinstance(exc, httpx.TimeoutException) else "cannot be reached"
        return SegmentsUnavailable(
            f"the segment holder at {self.url} {what} ({type(exc).__name__}); is 'clarion segments serve' running "
            "there, with its index built?",
            self.url,
        )

    def _refusal(self, response: httpx.Response) -> errors.InvalidInput:
        """The holder's error as this process's own: its 4xx as the same InvalidInput, the rest as unavailable."""
        try:
            error = dict(response.json()["error"])
        except (ValueError, KeyError, TypeError):
            error = {}
        message = str(error.get("message") or response.text[:200])
        if response.status_code == 401:
            return SegmentsUnavailable(
                f"the segment holder at {self.url} refused this process's signature: CLARION_SECRET_KEY differs "
                "between them, or their clocks are more than 5 minutes apart",
                self.url,
            )
        if 400 <= response.status_code < 500:
            refused = errors.InvalidInput(
                message, code=str(error.get("code", "invalid_input")), details=error.get("details")
            )
            refused.status = response.status_code
            return refused
        return SegmentsUnavailable(
            f"the segment holder at {self.url} failed ({response.status_code}): {message}", self.url
        )
