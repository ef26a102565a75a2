"""The language model behind AI copy: an OpenAI-compatible Chat Completions endpoint, reached over httpx.

One protocol covers OpenAI, DeepSeek, Qwen (DashScope's compatible mode), Moonshot and a local Ollama or vLLM:
``POST {url}/chat/completions`` with a Bearer key, a model and the messages. The answer must be JSON of a given
shape, asked for in the strongest form the server takes: a strict JSON schema (``response_format`` of type
``json_schema``); a server that refuses that with a 400 is asked for a JSON object (``json_object``), and one
that refuses that too gets no ``response_format`` and its text is read for JSON. Whatever came back is
validated against the shape; an answer that does not match is sent back once, with what was wrong, for repair.

429 and 5xx answers, timeouts and failed connections are tried again (``llm_max_attempts`` in all) after an
exponential backoff, or after the server's ``Retry-After`` when it gives one, within ``MAX_WAIT_SECONDS``.
Every call, failed ones too, is one row of ``llm_calls``: the department and actor it was made for, the model,
the attempts and the tokens used, since a model is a cost like SMS.

The URL is an operator's (settings, never a caller's) and a local model on loopback or the company network is a
normal set-up, so private addresses are allowed; the URL must still be http(s) with a host, environment proxies
are ignored and redirects never followed (``channels.outbound``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import httpx
import pydantic
import sqlalchemy as sa

from clarion.channels import outbound
from clarion.domain import errors
from clarion.store import tables as t

if TYPE_CHECKING:
    from clarion import bootstrap
    from clarion.settings import Settings

#: the longest Clarion waits before one retry, whatever ``Retry-After`` asks
MAX_WAIT_SECONDS = 30.0
FIRST_BACKOFF_SECONDS = 1.0
CONFIGURE = (
    "no language model is configured: set CLARION_LLM_URL (e.g. https://api.openai.com/v1), CLARION_LLM_API_KEY "
    "and CLARION_LLM_MODEL, or per department in CLARION_LLM_DEPARTMENTS"
)
_FORMATS = ("json_schema", "json_object", "text")
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


class ModelError(errors.ClarionError):
    """The model could not give an answer; ``status`` is what the API answers (502, 503 or 504)."""

    status = 502
    code = "llm_error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotConfigured(ModelError):
    status = 503
    code = "llm_not_configured"


class ModelUnavailable(ModelError):
    """429 or 5xx, or no connection, on every attempt."""

    status = 503
    code = "llm_unavailable"


class ModelTimeout(ModelError):
    status = 504
    code = "llm_timeout"


class BadAnswer(ModelError):
    """The server refused the request (a 4xx) or its answer was not the JSON asked for, even after repair."""

    status = 502
    code = "llm_bad_answer"


@dataclass(frozen=True, slots=True)
class ModelConfig:
    url: str  # the base URL, without /chat/completions
    api_key: str | None
    model: str
    timeout: float
    max_attempts: int
    department: str | None


def config_for(settings: Settings, department: str | None) -> ModelConfig:
    """The model a department uses: its entry of ``llm_departments`` (``url``, ``model``, ``api_key``,
    ``timeout_seconds``) over the defaults. Raises ``NotConfigured`` when no URL or no model results, or when
    the URL or the timeout cannot be used (naming the setting): the operator's to fix, not the caller's."""
    own: Mapping[str, str] = settings.llm_departments.get(department or "", {})
    url = own.get("url") or settings.llm_url
    model = own.get("model") or settings.llm_model
    key = own.get("api_key") or (settings.llm_api_key.get_secret_value() if settings.llm_api_key else None)
    if not url or not model:
        raise NotConfigured(CONFIGURE, details={"department": department})
    try:
        base = outbound.endpoint(url)
    except ValueError as exc:
        raise NotConfigured(f"CLARION_LLM_URL {url!r} cannot be used: {exc}", details={"setting": "llm_url"}) from None
    try:
        timeout = float(own.get("timeout_seconds", settings.llm_timeout_seconds))
    except ValueError:
        raise NotConfigured(
            f"CLARION_LLM_DEPARTMENTS: {department}.timeout_seconds must be a number of seconds",
            details={"setting": f"llm_departments.{department}.timeout_seconds"},
        ) from None
    return ModelConfig(base, key, model, timeout, settings.llm_max_attempts, department)


@dataclass(frozen=True, slots=True)
class Answer:
    """One call's validated output, with what produced it (stored with a saved template's version)."""

    value: pydantic.BaseModel
    raw: str
    call: int  # the ``llm_calls`` row
    model: str
    response_format: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class _Reply:
    """An answer's text before it is validated."""

    raw: str
    call: int
    model: str
    response_format: str
    prompt_tokens: int
    completion_tokens: int

    def answer(self, value: pydantic.BaseModel) -> Answer:
        return Answer(
            value, self.raw, self.call, self.model, self.response_format, self.prompt_tokens, self.completion_tokens
        )


@dataclass(slots=True)
class _Usage:
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatModel:
    """Calls of one model for one department and actor. It remembers the strongest ``response_format`` the
    server took, so the calls after the first (regenerations) do not probe again."""

    def __init__(
        self,
        clarion: bootstrap.Clarion,
        config: ModelConfig,
        *,
        actor: str,
    ) -> None:
        self.clarion = clarion
        self.config = config
        self.actor = actor
        self._http: httpx.AsyncClient | None = None
        self._format = 0  # index into _FORMATS

    async def __aenter__(self) -> ChatModel:
        self._http = outbound.client(timeout=self.config.timeout, allow_private_networks=True)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def ask(self, messages: Sequence[Mapping[str, str]], shape: type[pydantic.BaseModel]) -> Answer:
        """The model's answer to ``messages`` as an instance of ``shape``; one repair round when it does not fit.
        Raises a ``ModelError``; every call is recorded in ``llm_calls`` either way."""
        conversation = [dict(m) for m in messages]
        reply = await self._call(conversation, shape)
        try:
            return reply.answer(_parse(reply.raw, shape))
        except ValueError as exc:
            problem = str(exc)
            await self._mark_invalid(reply.call)
        conversation += [
            {"role": "assistant", "content": reply.raw},
            {
                "role": "user",
                "content": "That answer was not valid JSON of the required schema "
                f"({problem[:500]}). Answer again with only the JSON object.",
            },
        ]
        repaired = await self._call(conversation, shape)
        try:
            return repaired.answer(_parse(repaired.raw, shape))
        except ValueError as exc:
            await self._mark_invalid(repaired.call)
            raise BadAnswer(
                f"the model's answer was not valid JSON of the schema, even after one repair: {str(exc)[:300]}",
                details={"call": repaired.call},
            ) from None

    async def _call(self, messages: list[dict[str, str]], shape: type[pydantic.BaseModel]) -> _Reply:
        usage = _Usage()
        started = time.monotonic()
        try:
            body = await self._post(messages, shape, usage)
        except ModelError as exc:
            status = "timeout" if isinstance(exc, ModelTimeout) else "http_error"
            call = await self._record(status, usage, started)
            exc.details = {**(exc.details or {}), "call": call}
            raise
        call = await self._record("ok", usage, started)
        try:
            raw = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raw = None
        if not isinstance(raw, str):
            await self._mark_invalid(call)
            raise BadAnswer("the model's answer has no choices[0].message.content", details={"call": call})
        return _Reply(
            raw=raw,
            call=call,
            model=str(body.get("model") or self.config.model),
            response_format=_FORMATS[self._format],
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )

    async def _post(self, messages: list[dict[str, str]], shape: type[pydantic.BaseModel], usage: _Usage) -> Any:
        """The answer's JSON body, stepping down the response formats on a 400 and retrying what may pass."""
        assert self._http is not None, "use ChatModel as an async context manager"
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        wait = FIRST_BACKOFF_SECONDS
        while True:
            request: dict[str, Any] = {"model": self.config.model, "messages": messages, "temperature": 0.7}
            fmt = _FORMATS[self._format]
            if fmt == "json_schema":
                schema = {"name": shape.__name__.lower(), "schema": shape.model_json_schema(), "strict": True}
                request["response_format"] = {"type": "json_schema", "json_schema": schema}
            elif fmt == "json_object":
                request["response_format"] = {"type": "json_object"}
            usage.attempts += 1
            try:
                response = await self._http.post(f"{self.config.url}/chat/completions", json=request, headers=headers)
            except httpx.TimeoutException:
                failure: ModelError = ModelTimeout(
                    f"the model did not answer within {self.config.timeout:g} s "
                    f"({usage.attempts} attempt(s)); nothing was saved"
                )
                retry_after = None
            except (httpx.HTTPError, errors.SendError) as exc:
                failure = ModelUnavailable(f"cannot reach the model at {self.config.url}: {exc}")
                retry_after = None
            else:
                _count(response, usage)
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError:
                        raise BadAnswer("the model's server answered 200 with a body that is not JSON") from None
                if response.status_code == 400 and self._format < len(_FORMATS) - 1 and "response_format" in request:
                    self._format += 1
                    usage.attempts -= 1  # a format the server does not take is not an attempt at the answer
                    continue
                detail = response.text[:300]
                if response.status_code != 429 and response.status_code < 500:
                    raise BadAnswer(
                        f"the model's server refused the request: HTTP {response.status_code}: {detail}",
                        details={"http_status": response.status_code},
                    )
                failure = ModelUnavailable(
                    f"the model's server answered HTTP {response.status_code} on every attempt: {detail}",
                    details={"http_status": response.status_code},
                )
                retry_after = _retry_after(response.headers.get("Retry-After"))
            if usage.attempts >= self.config.max_attempts:
                raise failure
            await asyncio.sleep(min(retry_after if retry_after is not None else wait, MAX_WAIT_SECONDS))
            wait *= 2

    async def _record(self, status: str, usage: _Usage, started: float) -> int:
        values = {
            "at": datetime.now(UTC),
            "department": self.config.department,
            "actor": self.actor,
            "model": self.config.model,
            "status": status,
            "attempts": usage.attempts,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "duration_ms": int((time.monotonic() - started) * 1000),
        }

        async def job(conn: Any) -> int:
            return int((await conn.execute(t.llm_calls.insert().values(values).returning(t.llm_calls.c.id))).scalar())

        return await self.clarion.db.write(job)

    async def _mark_invalid(self, call: int) -> None:
        async def job(conn: Any) -> None:
            await conn.execute(t.llm_calls.update().where(t.llm_calls.c.id == call).values(status="invalid"))

        await self.clarion.db.write(job)


def _count(response: httpx.Response, usage: _Usage) -> None:
    """Add the tokens an answer reports (OpenAI's ``usage``; servers that bill a refusal report it too)."""
    try:
        reported = response.json().get("usage") or {}
        usage.prompt_tokens += int(reported.get("prompt_tokens") or 0)
        usage.completion_tokens += int(reported.get("completion_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        return


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max((parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds(), 0.0)
    except (TypeError, ValueError):
        return None


def _parse(raw: str, shape: type[pydantic.BaseModel]) -> pydantic.BaseModel:
    """``raw`` as ``shape``: the whole text, else a fenced block, else the outermost braces (servers without
    structured output wrap their JSON in prose). ``ValueError`` saying what did not fit."""
    candidates = [raw.strip()]
    candidates += [m.strip() for m in _FENCE.findall(raw)]
    if "{" in raw and "}" in raw:
        candidates.append(raw[raw.index("{") : raw.rindex("}") + 1])
    problem = "not JSON"
    for text in candidates:
        try:
            document = json.loads(text)
        except ValueError:
            continue
        try:
            return shape.model_validate(document)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            problem = f"{'.'.join(str(p) for p in first['loc']) or 'answer'}: {first['msg']}"
    raise ValueError(problem)


@dataclass(frozen=True, slots=True)
class UsageRow:
    """The calls to one model for one department in a period, and the tokens its server reported."""

    department: str | None
    model: str
    calls: int
    failed: int  # calls that did not give a usable answer (http_error, timeout, invalid)
    prompt_tokens: int
    completion_tokens: int


async def usage(conn: Any, start: datetime, end: datetime) -> list[UsageRow]:
    """The model calls made in ``[start, end)`` summed per department and model, departments in order (none
    first)."""
    c = t.llm_calls.c
    failed = sa.func.sum(sa.case((c.status != "ok", 1), else_=0))
    query = (
        sa.select(
            c.department,
            c.model,
            sa.func.count(),
            failed,
            sa.func.sum(c.prompt_tokens),
            sa.func.sum(c.completion_tokens),
        )
        .where(c.at >= start, c.at < end)
        .group_by(c.department, c.model)
        .order_by(c.department.is_not(None), c.department, c.model)
    )
    return [
        UsageRow(d, m, int(n), int(f or 0), int(p or 0), int(k or 0)) for d, m, n, f, p, k in await conn.execute(query)
    ]
