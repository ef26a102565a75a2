"""Clarion's exception tree.

    ClarionError
    ├── InvalidInput            bad input from a caller; the API turns it into a 4xx
    │   └── NotFound            the named object does not exist (404)
    ├── RenderError             a template could not be filled for one message (the message fails, nothing crashes)
    │   ├── MissingVariable
    │   └── RenderBudgetExceeded      filling it would take more operations than one render may spend
    ├── ExpressionError         a rule condition does not compile (position given) or cannot be evaluated
    │   └── ConditionBudgetExceeded   evaluating it would take more operations than one condition may spend
    └── SendError               a provider could not hand a delivery over
        ├── TransientSendError  worth retrying: timeouts, connection errors, 429, 5xx
        └── PermanentSendError  retrying cannot help: invalid address, rejected content, 4xx

Providers translate their vendor's errors into ``SendError`` at their edge, keeping the vendor's own code in
``code`` so the delivery timeline can show it.
"""

from __future__ import annotations

from typing import Any


class ClarionError(Exception):
    """Base of every error Clarion raises on purpose."""


class InvalidInput(ClarionError):
    """Input that Clarion refuses; ``code`` is machine readable, ``details`` names the offending fields."""

    status = 422

    def __init__(self, message: str, *, code: str = "invalid_input", details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details


class NotFound(InvalidInput):
    status = 404

    def __init__(self, what: str, key: str) -> None:
        super().__init__(f"{what} {key!r} not found", code="not_found", details={"kind": what, "key": key})


class Conflict(InvalidInput):
    status = 409

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message, code="conflict", details=details)


class RenderError(ClarionError):
    """A template could not be rendered for one message; ``reason`` goes into the timeline."""

    @property
    def reason(self) -> str:
        return str(self)


class MissingVariable(RenderError):
    def __init__(self, name: str) -> None:
        super().__init__(f"missing_variable: {name}")
        self.name = name


class RenderBudgetExceeded(RenderError):
    """Filling a template would do more work than one render may (``domain.budget``): the message fails with
    ``render_budget_exceeded: <field>: <what>``, so a hostile template or payload costs milliseconds, not the
    server. ``field`` (``sms.text``) is filled in by the composer that knows it."""

    code = "render_budget_exceeded"

    def __init__(self, message: str, *, limit: int, field: str | None = None) -> None:
        super().__init__(f"{self.code}: {field + ': ' if field else ''}{message}")
        self.message = message
        self.limit = limit
        self.field = field


class ExpressionError(ClarionError):
    """A condition expression that does not compile, with where it went wrong (1-based line and column)."""

    def __init__(self, message: str, *, position: int = 0, line: int = 1, column: int = 1) -> None:
        super().__init__(f"{message} at line {line}, column {column}")
        self.message = message
        self.position = position
        self.line = line
        self.column = column


class ConditionBudgetExceeded(ExpressionError):
    """Evaluating a condition would do more work than one evaluation may (``domain.budget``); a rule so stopped
    does not fire, and its outcome says ``condition_budget_exceeded``."""

    code = "condition_budget_exceeded"

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.args = (message,)  # no line and column: the whole condition, not one token, is too costly
        self.limit = limit

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.message}"


class SendError(ClarionError):
    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


class TransientSendError(SendError):
    """Retry later; ``retry_after`` (seconds) is honoured when the vendor gave one."""

    def __init__(self, message: str, *, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class PermanentSendError(SendError):
    """Fail the delivery now. ``misconfigured``: the account, not the delivery, is at fault (authentication
    refused, no AUTH offered though credentials are configured, a missing template code): its breaker opens at
    once and the delivery goes to another provider, or waits, without spending an attempt. ``dead_address``: the
    vendor says the address itself is gone for good (FCM ``UNREGISTERED``, APNs 410, Web Push 404/410, an openid
    that unfollowed): the delivery fails and the address is removed from the user, on the timeline."""

    def __init__(
        self, message: str, *, code: str | None = None, misconfigured: bool = False, dead_address: bool = False
    ) -> None:
        super().__init__(message, code=code)
        self.misconfigured = misconfigured
        self.dead_address = dead_address
