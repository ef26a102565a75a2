"""Runs due campaigns: freezes each run's audience and fans it out in batches, resumably."""

from __future__ import annotations

import asyncio

from clarion.pipeline.intake import Intake
from clarion.segments.service import SegmentService
from clarion.store.db import Database


class CampaignRunner:
    def __init__(self, db: Database, intake: Intake, segments: SegmentService) -> None:
        self.db = db
        self.intake = intake
        self.segments = segments

    async def run_once(self, owner: str) -> int:
        """Start due runs and advance running ones by a batch each; returns how many messages it wrote."""
        return 0

    async def run(self, stop: asyncio.Event) -> None:
        """The scheduler loop of ``clarion serve``/``clarion worker``."""
        await stop.wait()
