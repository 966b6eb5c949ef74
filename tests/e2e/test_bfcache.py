"""Back from the back/forward cache, the page's call resumes.

On pagehide the tab says goodbye (the others drop it at once) and closes its session; when the
browser shows the page again from the bfcache, nothing reloads, so the widget itself must open a
fresh session and, if the tab was in the call, join again. Playwright turns the bfcache off by
default; this module's browser turns it back on.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from browser_guard import guarded_context
from conftest import CHROMIUM, CHROMIUM_ARGS
from playwright.sync_api import Browser, Playwright
from server_fixture import KibitzServer

LINKED = "(id) => window.call.getParticipants().some((p) => p.id === id && p.linkUp)"


@pytest.fixture(scope="module")
def bfcache_browser(playwright_session: Playwright) -> Iterator[Browser]:
    b = playwright_session.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        ignore_default_args=["--disable-back-forward-cache"],
    )
    yield b
    b.close()


def test_a_page_back_from_the_bfcache_rejoins_the_call(
    bfcache_browser: Browser, kibitz_server: KibitzServer
) -> None:
    room = f"room-{secrets.token_hex(6)}"
    outside: list[str] = []
    a = guarded_context(bfcache_browser, outside).new_page()
    b = guarded_context(bfcache_browser, outside).new_page()
    for page, name in ((a, "ana"), (b, "ben")):
        page.goto(f"{kibitz_server.http}/demo/follow.html?room={room}&name={name}&open=0#/home")
        page.wait_for_function("() => window.call")
        page.evaluate("() => window.call.ready")
    a.evaluate("() => window.call.join({ mic: false, cam: false })")
    b.evaluate("() => window.call.join({ mic: true, cam: false })")
    before = b.evaluate("() => window.call.getState().self")
    a.wait_for_function(LINKED, arg=before, timeout=20_000)
    b.evaluate("""() => { window.__shown = []; window.__resumed = null;
        addEventListener('pageshow', (e) => window.__shown.push(e.persisted));
        window.call.on('resume', (info) => { window.__resumed = info; }); }""")

    b.goto(f"{kibitz_server.http}/healthz")  # away: the goodbye drops ben from ana's call at once
    a.wait_for_function("(id) => !window.call.getParticipants().some((p) => p.id === id)", arg=before,
                        timeout=5_000)

    b.go_back(wait_until="commit")  # from the bfcache: no load event, the old JS heap is back
    b.wait_for_function("() => !!window.__resumed", timeout=20_000)
    shown = b.evaluate("() => window.__shown")
    assert shown == [True], f"the page was reloaded, not restored from the bfcache: {shown}"
    assert b.evaluate("() => window.__resumed") == {"rejoined": True}
    b.wait_for_function("() => { const s = window.call.getState(); return s.inCall && s.micOn && !s.camOn; }",
                        timeout=20_000)
    after = b.evaluate("() => window.call.getState().self")
    assert after and after != before  # a fresh session: a new member id
    a.wait_for_function(LINKED, arg=after, timeout=20_000)
    a.evaluate("() => { window.__got = []; window.call.onMessage((d, f) => window.__got.push([d, f])); }")
    b.evaluate("() => window.call.broadcast({ back: true })")
    a.wait_for_function("(id) => window.__got.some(([d, from]) => d && d.back && from === id)", arg=after)
    assert outside == []
