"""An OpenAI-compatible Chat Completions server on loopback: ``POST /v1/chat/completions``.

It checks what such a server checks, and what Clarion promises to send: the Bearer key (401
``invalid_api_key``), the model (404 ``model_not_found``), messages as a list of ``{role, content}`` opening with
the system message, a user message holding the brief as JSON between ``<brief>`` tags (400 when it is not
there or does not parse), and a ``response_format`` that is a strict ``json_schema`` with a name and an object
schema, or ``json_object`` (400 otherwise). ``refuse`` lists the formats it answers 400 to, as servers without
structured output do. Accepted requests are answered from ``script`` in order, as a chat completion with its
``usage`` (the tokens are counted from the request and the answer, and summed in ``prompt_tokens`` /
``completion_tokens`` so tests can compare Clarion's records).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tests.integration.loopback import LoopbackServer, Recorded, Reply

API_KEY = "sk-clarion-test-0123456789"
MODEL = "clarion-copy-test"
BRIEF_OPEN, BRIEF_CLOSE = "<brief>\n", "\n</brief>"


@dataclass(frozen=True)
class Turn:
    """One scripted answer: the assistant's text, or an HTTP error (``status``), after ``delay`` seconds."""

    content: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def draft(name: str, idea: str = "an idea", **channels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "idea": idea, **channels}


def drafts(*written: dict[str, Any]) -> Turn:
    """An answer holding these drafts, as the schema asks."""
    return Turn(json.dumps({"drafts": list(written)}, ensure_ascii=False))


def brief_of(request: dict[str, Any]) -> Any:
    """The brief a request's user message holds between its tags (None when there is none)."""
    for message in request["messages"]:
        content = message.get("content")
        if message.get("role") != "user" or not isinstance(content, str):
            continue
        if content.startswith(BRIEF_OPEN) and content.endswith(BRIEF_CLOSE):
            return json.loads(content[len(BRIEF_OPEN) : -len(BRIEF_CLOSE)])
    return None


def _error(status: int, code: str, message: str) -> Reply:
    return Reply(status, {"error": {"message": message, "type": "invalid_request_error", "code": code}})


@dataclass
class FakeOpenAI:
    script: list[Turn] = field(default_factory=list)
    api_key: str = API_KEY
    models: set[str] = field(default_factory=lambda: {MODEL})
    refuse: set[str] = field(default_factory=set)  # response_format types answered 400
    accepted: list[dict[str, Any]] = field(default_factory=list)  # bodies of the requests answered from the script
    refused: list[tuple[int, str]] = field(default_factory=list)  # (status, error code) of the requests refused
    prompt_tokens: int = 0
    completion_tokens: int = 0
    server: LoopbackServer = field(init=False)
    _turns: deque[Turn] = field(init=False)

    def __post_init__(self) -> None:
        self._turns = deque(self.script)
        self.server = LoopbackServer(handler=self._handle)

    @property
    def url(self) -> str:
        """The base URL, as CLARION_LLM_URL takes it."""
        return f"{self.server.url}/v1"

    def add(self, *turns: Turn) -> None:
        self._turns.extend(turns)

    async def __aenter__(self) -> FakeOpenAI:
        await self.server.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.server.__aexit__(*exc_info)

    def _handle(self, request: Recorded) -> Reply:
        refusal = self._refusal(request)
        if refusal is not None:
            self.refused.append((refusal.status, refusal.json["error"]["code"]))
            return refusal
        body = request.json()
        self.accepted.append(body)
        turn = self._turns.popleft() if self._turns else Turn(status=500, content="the script ran out")
        if turn.status != 200:
            return Reply(turn.status, {"error": {"message": turn.content, "type": "server_error"}}, turn.headers)
        prompt = len(json.dumps(body["messages"], ensure_ascii=False)) // 4
        completion = max(len(turn.content) // 4, 1)
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        answer = {
            "id": f"chatcmpl-{len(self.accepted)}",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": turn.content}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }
        return Reply(200, answer, turn.headers, delay=turn.delay)

    def _refusal(self, request: Recorded) -> Reply | None:
        if request.method != "POST" or request.path != "/v1/chat/completions":
            return _error(404, "not_found", f"no route {request.method} {request.path}")
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "invalid_api_key", "Incorrect API key provided")
        try:
            body = request.json()
        except ValueError:
            return _error(400, "invalid_json", "the body is not JSON")
        if body.get("model") not in self.models:
            return _error(404, "model_not_found", f"The model {body.get('model')!r} does not exist")
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(
            isinstance(m, dict)
            and m.get("role") in ("system", "user", "assistant")
            and isinstance(m.get("content"), str)
            for m in messages
        ):
            return _error(400, "invalid_messages", "messages must be a list of {role, content}")
        if not messages or messages[0]["role"] != "system":
            return _error(400, "invalid_messages", "the conversation must open with the system message")
        try:
            if brief_of(body) is None:
                return _error(400, "no_brief", "no user message holds the brief between <brief> tags")
        except ValueError:
            return _error(400, "no_brief", "the brief between <brief> tags is not JSON")
        fmt = body.get("response_format")
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if fmt is not None and kind not in ("json_schema", "json_object"):
            return _error(400, "invalid_response_format", f"unknown response_format {fmt!r}")
        if kind in self.refuse:
            return _error(400, "invalid_response_format", f"response_format {kind} is not supported by this model")
        if kind == "json_schema":
            spec = fmt.get("json_schema") or {}
            schema = spec.get("schema")
            if not spec.get("name") or spec.get("strict") is not True or not isinstance(schema, dict):
                return _error(400, "invalid_response_format", "json_schema needs a name, strict: true and a schema")
            if schema.get("type") != "object" or schema.get("additionalProperties") is not False:
                return _error(400, "invalid_response_format", "a strict schema is an object without extra properties")
        return None
