"""Short links: ``GET /s/{code}`` records the click and redirects."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["links"])
