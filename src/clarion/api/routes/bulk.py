"""Bulk: see the module's endpoints."""

from __future__ import annotations

from fastapi import APIRouter

from clarion.api import deps

router = APIRouter(prefix="/v1", tags=["bulk"], dependencies=deps.AUTH)
