"""``/v1/feedback-rules``: what a click, a conversion or an unsubscribe does to the user's tags and attributes."""

from __future__ import annotations

from fastapi import APIRouter

from clarion.api import deps

router = APIRouter(prefix="/v1", tags=["feedback"], dependencies=deps.AUTH)
