"""The harness itself: an off-loopback WebSocket is blocked and recorded (route() cannot see it).

0.0.0.0 is "off loopback" by name for the guard, yet would stay on this machine if the guard failed.
"""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import BrowserContext


def test_websocket_off_loopback_is_blocked(
    new_context: Callable[..., BrowserContext], outside_requests: list[str]
) -> None:
    page = new_context().new_page()
    page.set_content("<p>guard</p>")
    outcome = page.evaluate(
        """() => new Promise((resolve) => {
             const ws = new WebSocket('ws://0.0.0.0:9/should-not-leave');
             ws.onopen = () => resolve('open');
             ws.onclose = (e) => resolve('closed ' + e.code);
             setTimeout(() => resolve('timeout'), 5000);
           })"""
    )
    assert outcome.startswith("closed"), outcome
    assert outside_requests == ["ws://0.0.0.0:9/should-not-leave"]
    outside_requests.clear()  # expected here: keep the fixture's teardown check for real leaks
