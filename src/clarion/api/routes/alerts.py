"""``/v1/alert-rules`` and ``/v1/alerts``: stored alert rules and the history of their notices."""

from __future__ import annotations

from fastapi import APIRouter

from clarion.api import deps

router = APIRouter(prefix="/v1", tags=["alerts"], dependencies=deps.AUTH)
