"""One headless Chromium (the Debian package, /usr/bin/chromium) for the test session.

Playwright drives it (the PyPI package: its driver runs offline; no `playwright install`, no
downloaded browser). Playwright's sync API cannot run inside pytest's event loop, so the
browser lives in a thread of its own: an async test hands it a function of a fresh page,
`await browser.run(steps)`, and the test's loop keeps serving porter meanwhile. Each `run`
gets a new browser context (no cookies, no storage), closed when the steps end.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from playwright.sync_api import Browser as PlaywrightBrowser
from playwright.sync_api import Page, Playwright, sync_playwright

T = TypeVar("T")

CHROMIUM = os.environ.get("PORTER_TEST_CHROMIUM", "/usr/bin/chromium")
# Known to work here (root, no GPU, no network but loopback). Playwright gives the browser a
# new empty user-data-dir of its own (and removes it), so none is passed.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# A hang guard for each click, fill or navigation, not a timing assertion.
ACTION_TIMEOUT_MS = 15_000


class Browser:
    """Headless Chromium owned by one worker thread; every call into it runs there."""

    def __init__(self, executable: str = CHROMIUM) -> None:
        if not os.access(executable, os.X_OK):
            raise RuntimeError(f"{executable} is missing: install the Debian package chromium")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chromium")
        self._playwright: Playwright | None = None
        self._browser: PlaywrightBrowser | None = None
        self._thread.submit(self._start, executable).result(timeout=120)

    def _start(self, executable: str) -> None:
        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(
            executable_path=executable, args=list(FLAGS), headless=True
        )

    async def run(self, steps: Callable[[Page], T], failure_shot: Path | None = None) -> T:
        """Run `steps(page)` on a fresh page in a fresh context; its result, or its exception.

        With `failure_shot`, a screenshot of the page is saved there when the steps fail.
        """
        future = self._thread.submit(self._in_new_context, steps, failure_shot)
        return await asyncio.wrap_future(future)

    def _in_new_context(self, steps: Callable[[Page], T], failure_shot: Path | None) -> T:
        assert self._browser is not None
        context = self._browser.new_context()
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        try:
            page = context.new_page()
            try:
                return steps(page)
            except BaseException:
                if failure_shot is not None:
                    page.screenshot(path=str(failure_shot), full_page=True)
                raise
        finally:
            context.close()

    def close(self) -> None:
        def stop() -> None:
            if self._browser is not None:
                self._browser.close()
            if self._playwright is not None:
                self._playwright.stop()

        try:
            self._thread.submit(stop).result(timeout=60)
        finally:
            self._thread.shutdown(wait=True)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """The session's headless Chromium, started on first use."""
    chromium = Browser()
    yield chromium
    chromium.close()
