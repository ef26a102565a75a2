"""``POST /v1/templates/{key}/preview``: every channel's rendered output, SMS segments, keyword findings."""

from __future__ import annotations

from fastapi import APIRouter

from clarion.api import deps

router = APIRouter(prefix="/v1", tags=["templates"], dependencies=deps.AUTH)
