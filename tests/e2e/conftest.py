"""Real browsers for end-to-end tests: Debian's /usr/bin/chromium and /usr/bin/firefox-esr, driven by
Playwright (pinned to 1.58.0: later releases fail on `new_context()` against stock Firefox).

Every page made through ``new_context`` (Chromium) or ``firefox_context`` aborts and records any
request (WebSockets included, the engine Worker's too) that leaves 127.0.0.1; the test fails at
teardown if there was one. Fake camera and microphone, and loopback ICE, are on in both.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser_guard import guarded_context
from chromium_flags import CHROMIUM, CHROMIUM_ARGS
from coturn import running_coturn
from playwright.sync_api import Browser, BrowserContext, Playwright, sync_playwright

FIREFOX = os.environ.get("KIBITZ_FIREFOX", "/usr/bin/firefox-esr")
FIREFOX_PREFS: dict[str, str | int | bool] = {
    # Fake devices, no prompt, and what ICE needs on a host (or namespace) whose only interface is
    # lo: loopback candidates, plain addresses, and camera/microphone granted (without a media
    # permission Firefox gathers no host candidates at all).
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.peerconnection.ice.loopback": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "permissions.default.camera": 1,
    "permissions.default.microphone": 1,
    # No audio device on a headless host: without the mock backend an AudioContext never runs (the
    # level meter hears nothing), where Chromium's fake-media flags give it a fake output.
    "media.cubeb.force_mock_context": True,
}


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


@pytest.fixture(scope="session")
def firefox(playwright_session: Playwright) -> Iterator[Browser]:
    if not os.path.exists(FIREFOX):
        pytest.fail(f"{FIREFOX} is missing: scripts/setup.sh --tests installs Debian's firefox-esr")
    b = playwright_session.firefox.launch(
        channel="moz-firefox", executable_path=FIREFOX, headless=True, firefox_user_prefs=FIREFOX_PREFS
    )
    yield b
    b.close()


@pytest.fixture
def outside_requests() -> list[str]:
    """URLs the browser tried to reach beyond loopback during this test (each one was aborted)."""
    return []


def _contexts(browser: Browser, outside: list[str]) -> Iterator[Callable[..., BrowserContext]]:
    made: list[BrowserContext] = []

    def make(**kwargs: object) -> BrowserContext:
        ctx = guarded_context(browser, outside, **kwargs)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()
    assert outside == [], f"requests left 127.0.0.1: {outside}"


@pytest.fixture
def new_context(browser: Browser, outside_requests: list[str]) -> Iterator[Callable[..., BrowserContext]]:
    """Make isolated Chromium contexts (separate users) that cannot reach anything off loopback."""
    yield from _contexts(browser, outside_requests)


@pytest.fixture
def firefox_context(firefox: Browser, outside_requests: list[str]) -> Iterator[Callable[..., BrowserContext]]:
    """Make isolated Firefox contexts (separate users) that cannot reach anything off loopback."""
    yield from _contexts(firefox, outside_requests)


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A real coturn for the module (tests/e2e/coturn.py): (port, file holding its shared secret)."""
    with running_coturn(tmp_path_factory.mktemp("turn")) as relay:
        yield relay
