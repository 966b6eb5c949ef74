"""Real Chromium for end-to-end tests: Debian's /usr/bin/chromium driven by Playwright.

Every page made through ``new_context`` aborts and records any request (WebSockets included) that
leaves 127.0.0.1; the test fails at teardown if there was one. Fake camera and microphone, and
loopback ICE, are on.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest
from browser_guard import guarded_context
from playwright.sync_api import Browser, BrowserContext, Playwright, sync_playwright

CHROMIUM = os.environ.get("KIBITZ_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
]

def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Run e2e tests last: the session's sync Playwright keeps an event loop running in the main
    # thread, and pytest-asyncio cannot run async unit tests after it has started.
    e2e = [item for item in items if "/e2e/" in str(item.fspath)]
    for item in e2e:
        item.add_marker(pytest.mark.e2e)
    items[:] = [item for item in items if "/e2e/" not in str(item.fspath)] + e2e


@pytest.fixture(scope="session")
def playwright_session() -> Iterator[Playwright]:
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup.sh installs Debian's chromium")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright_session: Playwright) -> Iterator[Browser]:
    b = playwright_session.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield b
    b.close()


@pytest.fixture
def outside_requests() -> list[str]:
    """URLs the browser tried to reach beyond loopback during this test (each one was aborted)."""
    return []


@pytest.fixture
def new_context(browser: Browser, outside_requests: list[str]) -> Iterator[Callable[..., BrowserContext]]:
    """Make isolated browser contexts (separate users) that cannot reach anything off loopback."""
    made: list[BrowserContext] = []

    def make(**kwargs: object) -> BrowserContext:
        ctx = guarded_context(browser, outside_requests, **kwargs)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()
    assert outside_requests == [], f"requests left 127.0.0.1: {outside_requests}"
