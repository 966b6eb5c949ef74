"""The harness itself: an off-loopback WebSocket is blocked and recorded (route() cannot see it), the
page's own and its Workers' alike.

0.0.0.0 is "off loopback" by name for the guard, yet would stay on this machine if the guard failed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import BrowserContext
from static_server import serve


def test_websocket_off_loopback_is_blocked(
    new_context: Callable[..., BrowserContext], outside_requests: list[str]
) -> None:
    page = new_context().new_page()
    page.set_content("<p>guard</p>")
    outcome = page.evaluate(
        """() => new Promise((resolve) => {
             let ws;
             try { ws = new WebSocket('ws://0.0.0.0:9/should-not-leave'); }
             catch (e) { resolve('refused ' + e.name); return; }
             ws.onopen = () => resolve('open');
             ws.onclose = (e) => resolve('closed ' + e.code);
             setTimeout(() => resolve('timeout'), 5000);
           })"""
    )
    assert outcome == "refused SecurityError", outcome
    page.wait_for_timeout(500)  # the report is a fetch: let it reach the route
    assert outside_requests == ["ws://0.0.0.0:9/should-not-leave"]
    outside_requests.clear()  # expected here: keep the fixture's teardown check for real leaks


def test_websocket_off_loopback_from_a_worker_is_blocked(
    new_context: Callable[..., BrowserContext], outside_requests: list[str], tmp_path: Path
) -> None:
    """The engine opens its broker socket in a Worker, where route_web_socket cannot see: the guard
    wraps every Worker the page starts (nested ones too) so such a socket is refused and recorded."""
    page = new_context().new_page()
    with serve(tmp_path, {"/p.html": "<p>guard</p>"}) as site:  # a real origin: blob workers need one
        page.goto(f"{site.url}/p.html")
    outcome = page.evaluate(
        """() => new Promise((resolve) => {
             const nested = `try { new WebSocket('ws://0.0.0.0:9/nested'); postMessage('open'); }
                             catch (e) { postMessage('refused ' + e.name); }`;
             const src = `let out = [];
               try { new WebSocket('ws://0.0.0.0:9/from-a-worker'); out.push('open'); }
               catch (e) { out.push('refused ' + e.name); }
               const w = new Worker(URL.createObjectURL(new Blob([${JSON.stringify(nested)}])));
               w.onmessage = (e) => { out.push(e.data); postMessage(out); };`;
             const w = new Worker(URL.createObjectURL(new Blob([src], { type: 'text/javascript' })),
                                  { type: 'module' });
             w.onmessage = (e) => resolve(e.data);
             setTimeout(() => resolve('timeout'), 10000);
           })"""
    )
    assert outcome == ["refused SecurityError", "refused SecurityError"], outcome
    page.wait_for_timeout(500)  # the reports are fetches: let them reach the route
    assert sorted(outside_requests) == ["ws://0.0.0.0:9/from-a-worker", "ws://0.0.0.0:9/nested"]
    outside_requests.clear()
