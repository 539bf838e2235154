"""A real headless Chromium for the console's tests: Debian's `chromium`, driven by Playwright.

Playwright's bundled driver talks to the browser the system installed (scripts/ensure-services.sh
installs it); no browser is downloaded at run time. A missing browser fails the test, never skips it.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Generous: two cores shared with other test runs; conditions are waited for, never timed.
TIMEOUT_MS = 30_000


def chromium_path() -> Path:
    if not CHROMIUM.is_file() and shutil.which("chromium") is None:
        pytest.fail(f"no Chromium at {CHROMIUM}: run scripts/ensure-services.sh (apt-get install chromium)")
    return CHROMIUM if CHROMIUM.is_file() else Path(str(shutil.which("chromium")))


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(chromium_path()), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def new_context(browser: Browser, *, language: str = "en") -> BrowserContext:
    context = await browser.new_context(
        locale=language, accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context
