"""Browser fixtures: Debian's headless Chromium driven by playwright (never a downloaded browser: no internet).

- `browser`: one Chromium per test process (session-scoped), launched on first use.
- `wide_page` (1280 px) and `narrow_page` (390 px, a phone): each in a fresh context (no cookie from another
  test), screenshotted when the test ends, passed or failed, to test-artifacts/screenshots/<test>.png
  (`<test>-narrow.png` for the phone), which CI keeps.
- `LAN_HOST`: a name Chromium resolves to 127.0.0.1, so a test can be a browser on another machine of the
  LAN reaching the receiver over plain HTTP. Chromium treats 127.0.0.1 and localhost as secure for cookies
  (it keeps a `Secure` one there), so they cannot stand for http://192.168.x.y.

No Chromium (scripts/ensure-chromium installs it where it can): the browser tests skip and say why, except
under REACH_REQUIRE_BROWSER=1 (.ci/run sets it), where they fail instead: CI must not pass without them.
Registered as a plugin in tests/conftest.py.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("REACH_CHROMIUM", "/usr/bin/chromium")
LAN_HOST = "reach-lan.test"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    f"--host-resolver-rules=MAP {LAN_HOST} 127.0.0.1",
]  # fmt: skip
WIDE, NARROW = 1280, 390
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"


def require_chromium(path: str, required: bool) -> str:
    """The Chromium binary to drive; without one, skip the test (fail it when `required`), saying why."""
    found = shutil.which(path)
    if found:
        return found
    reason = f"no Chromium at {path}: run scripts/ensure-chromium (or set REACH_CHROMIUM to one)"
    if required:
        pytest.fail(f"{reason}; REACH_REQUIRE_BROWSER=1 makes the browser tests required")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = require_chromium(CHROMIUM, os.environ.get("REACH_REQUIRE_BROWSER") == "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def screenshot_name(test_name: str, suffix: str = "") -> str:
    """A file name from a test's name (its parameters may hold any character)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name).strip("_") + suffix + ".png"


def _page(browser: Any, request: pytest.FixtureRequest, width: int, suffix: str, **device: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": width, "height": 900}, **device)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        yield page
    finally:
        # Teardown runs whether the test passed or failed: the picture shows what the test last saw.
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        try:
            page.screenshot(path=str(SCREENSHOTS / screenshot_name(request.node.name, suffix)), full_page=True)
        finally:
            context.close()


@pytest.fixture
def wide_page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A desktop browser window, 1280 px wide."""
    yield from _page(browser, request, WIDE, "")


@pytest.fixture
def narrow_page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A phone's browser, 390 px wide (a mobile viewport: a page without a viewport tag is laid out 980 px wide
    and shrunk, as a phone does)."""
    yield from _page(browser, request, NARROW, "-narrow", is_mobile=True, has_touch=True)
