"""The browser tests' harness: a real ``clarion api`` process on a loopback port over the test's database, and
Debian's Chromium driven headless by Playwright. Every page the test opens must log no console error, and each
test saves a screenshot of every page it shows under its ``tmp_path``."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from clarion.settings import Settings
from tests.conftest import IN_CI
from tests.processes import api_process

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).parents[2] / "docs"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """``clarion api`` serving the test's database; its base URL."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    assert settings.api_key is not None and settings.secret_key is not None
    env = {
        **os.environ,
        "CLARION_DATABASE_URL": settings.database_url,
        "CLARION_DATA_DIR": settings.data_dir,
        "CLARION_OUTBOX_DIR": settings.outbox_dir,
        "CLARION_API_KEY": settings.api_key.get_secret_value(),
        "CLARION_SECRET_KEY": settings.secret_key.get_secret_value(),
        "CLARION_TUNE_GC": "false",
    }
    with api_process(env, tmp_path / "api.log") as base:
        yield base


@dataclass
class Screen:
    """A Chromium tab with what its console reported, and where its screenshots go."""

    page: Any
    base: str
    shots: Path
    errors: list[str] = field(default_factory=list)
    refusal: int | None = None  # the status the page being loaded is expected to answer with

    def heard(self, kind: str, text: str) -> None:
        """Keep a console error, but Chromium's note of the one refusal the test is waiting for."""
        expected = f"Failed to load resource: the server responded with a status of {self.refusal} "
        if kind == "error" and not (self.refusal and text.startswith(expected)):
            self.errors.append(text)

    @contextlib.asynccontextmanager
    async def refused(self, status: int) -> AsyncIterator[None]:
        """Within: the page loaded is meant to be refused with ``status`` (Chromium logs that as an error)."""
        self.refusal = status
        try:
            yield
        finally:
            self.refusal = None

    async def open(self, path: str) -> Any:
        return await self.page.goto(self.base + path)

    async def shoot(self, name: str) -> None:
        await self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def publish(self, name: str, document: str) -> None:
        """With ``CLARION_DOCS_SCREENSHOTS=1``, copy the screenshot ``name`` to ``docs/{document}`` (the README's
        pictures are refreshed on purpose, not by every test run)."""
        if os.environ.get("CLARION_DOCS_SCREENSHOTS") == "1":
            DOCS.mkdir(exist_ok=True)
            shutil.copyfile(self.shots / f"{name}.png", DOCS / document)

    async def login(self, name: str, password: str) -> None:
        await self.open("/console/login")
        await self.page.fill("input[name=name]", name)
        await self.page.fill("input[name=password]", password)
        await self.page.click("#login")
        await self.page.wait_for_load_state()


@pytest.fixture
async def screen(server: str, tmp_path: Path) -> AsyncIterator[Screen]:
    from playwright.async_api import async_playwright

    shots = tmp_path / "screenshots"
    shots.mkdir()
    async with async_playwright() as driver:
        chromium = await driver.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        context = await chromium.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        seen = Screen(page, server, shots)
        page.on("console", lambda m: seen.heard(m.type, m.text))
        page.on("pageerror", lambda e: seen.errors.append(str(e)))
        yield seen
        await context.close()
        await chromium.close()
    assert seen.errors == [], "the browser console logged errors"
