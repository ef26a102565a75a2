"""The audit log: who did what to templates (and, later, campaigns)."""

from __future__ import annotations

from fastapi import APIRouter

from clarion.api import deps

router = APIRouter(prefix="/v1", tags=["audit"], dependencies=deps.AUTH)
