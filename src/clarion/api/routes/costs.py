"""``/v1/analytics/cost``, department budgets and reconciliation against the vendors' bills."""

from __future__ import annotations

from fastapi import APIRouter

from clarion.api import deps

router = APIRouter(prefix="/v1", tags=["costs"], dependencies=deps.AUTH)
