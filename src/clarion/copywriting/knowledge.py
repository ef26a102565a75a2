"""The copy knowledge base: the measured copies a new brief learns from."""

from __future__ import annotations

from dataclasses import dataclass

from clarion import bootstrap


@dataclass(frozen=True, slots=True)
class Example:
    """One measured copy (a template version's variant on one channel) and why it is offered."""

    template: str
    version: int
    variant: str
    channel: str
    category: str
    text: str  # the copy as written, in the template language
    sent: int
    clicked: int
    converted: int
    click_rate: float
    conversion_rate: float
    click_interval: tuple[float, float]
    conversion_interval: tuple[float, float]
    pinned: bool
    why: str


async def similar(
    clarion: bootstrap.Clarion, *, text: str, channel: str, category: str | None, limit: int = 3
) -> list[Example]:
    """The best measured copies most like ``text`` on ``channel``."""
    return []


async def hints(clarion: bootstrap.Clarion, *, channel: str, category: str | None, limit: int = 10) -> list[str]:
    """The distinguishing words of the top copies on ``channel``."""
    return []
