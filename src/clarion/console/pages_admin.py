"""The configuration pages: provider accounts and routes, policies and suppressions, the audit log, API keys, and
the operator's own account. Every write calls the use case the API's routes call, with the same roles and audit."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
