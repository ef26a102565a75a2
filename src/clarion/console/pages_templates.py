"""The templates pages: the list, the per-channel editor with its live preview, versions with a diff, review and
test sends. Every write calls the use case the API's template routes call."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
