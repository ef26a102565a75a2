"""The audiences and campaigns pages: the segment builder with its live count, ID-list uploads, and campaigns from
creation through the estimate, approval and the live run to the results. Every write calls the use case the API's
segment and campaign routes call."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
