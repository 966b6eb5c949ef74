"""The engine behind the page, end to end: three tabs on the real ``kibitz serve`` (pages, broker,
Pyodide and wheels all from 127.0.0.1), each a separate browser context driving the headless
controller.

The tabs are booted once per mode (each Pyodide boot costs seconds) and the tests run in order on
the same call: converge → app data → camera without renegotiation → speaking → a cut link
recovers with nothing lost → follow-me → the coordinator's tab closes and the call goes on. The
whole sequence runs four times: in Chromium with the data channels transferred to the engine's
Worker (what both browsers here do), in Chromium with the transfer turned off by the test flag so
the page relays them, in Firefox, and in a mixed room (Firefox, Chromium, Firefox; the Firefox tabs
relaying).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from browser_guard import guarded_context
from playwright.sync_api import Browser, BrowserContext, Page
from server_fixture import KibitzServer

ROOM = "room-e2e-" + format(int(time.time() * 1000) % 36**6, "x")
RELAY = "window.__KIBITZ_ENGINE__ = { relay: true };"

# Counts every offer/answer negotiation a page takes part in: media changes must add none.
COUNT_NEGOTIATIONS = """(() => {
  window.__neg = { offers: 0, remote: 0 };
  const P = RTCPeerConnection.prototype, createOffer = P.createOffer, setRemote = P.setRemoteDescription;
  P.createOffer = function (...a) { window.__neg.offers++; return createOffer.apply(this, a); };
  P.setRemoteDescription = function (...a) { window.__neg.remote++; return setRemote.apply(this, a); };
})();"""


@dataclass
class Tab:
    name: str
    ctx: BrowserContext
    page: Page
    errors: list[str]
    kind: str = "chromium"

    def js(self, code: str, arg: Any = None) -> Any:
        return self.page.evaluate(code, arg)

    @property
    def id(self) -> str:
        return str(self.js("() => window.call.getState().self"))

    def participants(self) -> list[dict[str, Any]]:
        return list(self.js("() => window.call.getParticipants().map(({stream, ...p}) => p)"))

    def py(self, code: str) -> Any:
        """Run Python in the page (the engine's own interpreter); returns the last expression."""
        return self.js("async (code) => (await Kibitz._engine()).runPython(code)", code)


@pytest.fixture(scope="module")
def offline_guard() -> Iterator[list[str]]:
    outside: list[str] = []
    yield outside
    assert outside == [], f"requests left 127.0.0.1: {outside}"


def _guarded(browser: Browser, outside: list[str]) -> BrowserContext:
    ctx = guarded_context(browser, outside)
    ctx.add_init_script(COUNT_NEGOTIATIONS)
    return ctx


MODES = {  # mode → (browser, relay) for ann, bob and cy
    "transfer": [("chromium", False)] * 3,
    "relay": [("chromium", True)] * 3,
    "firefox": [("firefox", False)] * 3,
    "mixed": [("firefox", True), ("chromium", False), ("firefox", True)],
}


@pytest.fixture(scope="module", params=list(MODES))
def tabs(request: pytest.FixtureRequest, browser: Browser, firefox: Browser, kibitz_server: KibitzServer,
         offline_guard: list[str]) -> Iterator[list[Tab]]:
    """Three headless tabs in one room, mounted but not yet in the call (open=0)."""
    made: list[Tab] = []
    room = f"{ROOM}-{request.param}"
    for name, (kind, relay) in zip(("ann", "bob", "cy"), MODES[request.param], strict=True):
        ctx = _guarded(firefox if kind == "firefox" else browser, offline_guard)
        if relay:
            ctx.add_init_script(RELAY)
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
        page.goto(f"{kibitz_server.http}/demo/follow.html?room={room}&name={name}&open=0#/home")
        made.append(Tab(name, ctx, page, errors, kind))
    for tab in made:
        tab.page.wait_for_function("() => window.call", timeout=10_000)
        tab.js("() => window.call.ready")
    yield made
    for tab in made:
        tab.ctx.close()
    for tab in made:
        assert tab.errors == [], f"{tab.name}: uncaught page errors {tab.errors}"


def wait_all(tabs: list[Tab], predicate: str, arg: Any = None, timeout: float = 15_000) -> None:
    for tab in tabs:
        tab.page.wait_for_function(predicate, arg=arg, timeout=timeout)


CONVERGED = """(n) => { const ps = window.call.getParticipants();
  return ps.length === n && ps.every((p) => p.linkUp) && ps.filter((p) => p.isSelf).length === 1; }"""


def test_headless_presence_then_three_tabs_converge(tabs: list[Tab]) -> None:
    # Mounted headless without startOpen: connected to the room's presence, not in the call.
    wait_all(tabs, "() => window.call.getState().connected === true")
    for tab in tabs:
        state = tab.js("() => window.call.getState()")
        assert state["inCall"] is False and state["self"].startswith("kbz-m-")
        assert tab.participants() == []
    t0 = time.monotonic()
    for tab in tabs:
        tab.js("() => window.call.join()")
    wait_all(tabs, CONVERGED, 3)
    converged_s = time.monotonic() - t0
    ids = {tab.id for tab in tabs}
    assert len(ids) == 3
    for tab in tabs:
        people = tab.participants()
        assert {p["id"] for p in people} == ids
        assert [p["id"] for p in people if p["isSelf"]] == [tab.id]
        assert {p["name"] for p in people} == {"ann", "bob", "cy"}
        assert all(p["camOn"] is False and p["micOn"] is False for p in people)  # joined muted, camera off
        state = tab.js("() => window.call.getState()")
        assert state["inCall"] is True and state["micOn"] is False and state["camOn"] is False
    coordinators = {tab.js("() => window.call.getState().coordinator") for tab in tabs}
    assert len(coordinators) == 1 and coordinators <= ids
    # Where the data channels live: in the engine's Worker, or on the page (relayed) when asked.
    for tab in tabs:
        relay = tab.js("() => window.__KIBITZ_ENGINE__ !== undefined")
        assert tab.js("() => Kibitz.timings.engineIn") == "worker"
        kinds = tab.js("async (code) => (await Kibitz._engine()).runPython(code)", CHANNEL_KINDS)
        assert kinds and set(kinds) == {"RelayedDataChannel" if relay else "BrowserDataChannel"}, kinds
        assert tab.js("async () => (await Kibitz._engine()).relaying") is relay
    print(f"\nthree tabs converged {converged_s:.2f} s after join()")


CHANNEL_KINDS = """
from kibitz.backends.browser import SESSIONS
links = SESSIONS[-1].session._transport._links.values()
sorted({type(getattr(lk.channel, "bound", lk.channel)).__name__ for lk in links if lk.channel is not None})
"""


def test_broadcast_reaches_others_and_send_to_only_its_addressee(tabs: list[Tab]) -> None:
    ann, bob, cy = tabs
    for tab in tabs:
        tab.js("() => { window.got = []; window.call.onMessage((d, from) => window.got.push([d, from])); }")
    ann.js(
        """() => window.call.broadcast({ kind: 'hello', n: 1, when: new Date(0), tags: new Set(['a']),
                                         bytes: new Uint8Array([1, 2, 255]), big: 2n ** 70n, nan: NaN })"""
    )
    ann.js("(to) => window.call.sendTo(to, { secret: 'for cy only' })", cy.id)
    cy.page.wait_for_function("() => window.got.length >= 2")
    bob.page.wait_for_function("() => window.got.length >= 1")
    time.sleep(0.3)  # anything stray would have arrived by now
    check = """() => window.got.map(([d, from]) => ({ from, kind: d.kind, secret: d.secret,
        date: d.when instanceof Date && d.when.getTime() === 0, set: d.tags instanceof Set && d.tags.has('a'),
        bytes: d.bytes instanceof Uint8Array ? Array.from(d.bytes) : null,
        big: typeof d.big === 'bigint' ? d.big.toString() : null, nan: Number.isNaN(d.nan) }))"""
    got_bob, got_cy = bob.js(check), cy.js(check)
    assert ann.js("() => window.got") == []  # never echoed to the sender
    assert len(got_bob) == 1 and got_bob[0]["from"] == ann.id and got_bob[0]["kind"] == "hello"
    assert got_bob[0]["date"] and got_bob[0]["set"] and got_bob[0]["nan"]
    assert got_bob[0]["bytes"] == [1, 2, 255] and got_bob[0]["big"] == str(2**70)
    assert [g["kind"] for g in got_cy] == ["hello", None]
    assert got_cy[1]["secret"] == "for cy only" and got_cy[1]["from"] == ann.id


def test_long_text_crosses_as_utf8_and_arrives_intact(tabs: list[Tab]) -> None:
    """Text over 2 kB crosses page → Python (sendTo, broadcast) and channel → Python as UTF-8 bytes
    (shim.pyText): multi-byte characters survive both crossings, short and long alike, and a lone
    surrogate is refused either way."""
    ann, bob, _cy = tabs
    bob.js("() => { window.got = []; }")  # the broadcast test's listener fills it
    made = """(n) => { const unit = 'aé中😀'; let s = ''; while (s.length < n) s += unit; return s; }"""
    short, long = ann.js(made, 100), ann.js(made, 9_000)
    ann.js("([to, s]) => window.call.sendTo(to, { s })", [bob.id, short])
    ann.js("([to, s]) => window.call.sendTo(to, { s })", [bob.id, long])
    ann.js("(s) => window.call.broadcast({ s, b: true })", long)
    bob.page.wait_for_function("() => window.got.length >= 3")
    got = bob.js("() => window.got.map(([d, from]) => [d.s, !!d.b, from])")
    assert got == [[short, False, ann.id], [long, False, ann.id], [long, True, ann.id]]
    for n in (10, 9_000):
        refused = ann.js(
            """([to, n]) => { try { window.call.sendTo(to, { s: 'x'.repeat(n) + '\\ud800' }); return null; }
                             catch (err) { return err.message; } }""",
            [bob.id, n],
        )
        assert refused and "surrogate" in refused, refused


def test_camera_toggle_changes_camon_and_frames_without_renegotiation(tabs: list[Tab]) -> None:
    ann, bob, cy = tabs
    before = [tab.js("() => ({ ...window.__neg })") for tab in tabs]
    frames_before = [_frames_from(tab, ann.id) for tab in (bob, cy)]
    assert ann.js("() => window.call.toggleCam()") is True
    wait_all([bob, cy], "(id) => window.call.getParticipants().some((p) => p.id === id && p.camOn)", ann.id)
    # The real (fake-device) camera now reaches the others: a real frame size, frames decoded growing.
    size = (
        "(id) => { const v = document.querySelector(`video[data-id='${id}']`); "
        "return v && v.videoWidth > 2; }"
    )
    wait_all([bob, cy], size, ann.id)
    time.sleep(0.5)
    frames_after = [_frames_from(tab, ann.id) for tab in (bob, cy)]
    assert all(a > b for a, b in zip(frames_after, frames_before, strict=True)), (frames_before, frames_after)
    width = "(id) => document.querySelector(`video[data-id='${id}']`).videoWidth"
    widths = [tab.js(width, ann.id) for tab in (bob, cy)]
    assert all(w >= 160 for w in widths), widths
    # Off again: camOn false everywhere, the lane goes back to the 2x2 placeholder.
    assert ann.js("() => window.call.toggleCam()") is False
    wait_all([bob, cy], "(id) => window.call.getParticipants().some((p) => p.id === id && !p.camOn)", ann.id)
    small = (
        "(id) => { const v = document.querySelector(`video[data-id='${id}']`); "
        "return v && v.videoWidth === 2; }"
    )
    wait_all([bob, cy], small, ann.id)
    after = [tab.js("() => ({ ...window.__neg })") for tab in tabs]
    assert after == before, f"a media change renegotiated: {before} → {after}"


def test_screen_share_swaps_the_video_lane_without_renegotiation(tabs: list[Tab]) -> None:
    ann, bob, cy = tabs
    if bob.kind == "firefox":
        pytest.skip("headless Firefox has no fake screen to share (the mixed room shares from Chromium)")
    before = [tab.js("() => ({ ...window.__neg })") for tab in tabs]
    bob.js("() => window.call.shareScreen()")  # the fake UI picks the (fake) whole screen
    assert bob.js("() => window.call.getState().sharing") is True
    # Chromium's fake screen is 1280×720 (the fake camera is 640×480); the encoder may scale it
    # down at first, so wait for a 16:9 frame rather than an exact size.
    wide = (
        "(id) => { const v = document.querySelector(`video[data-id='${id}']`); "
        "return v && v.videoWidth > 2 && Math.abs(v.videoWidth / v.videoHeight - 16 / 9) < 0.05; }"
    )
    wait_all([ann, cy], wide, bob.id)
    bob.js("() => window.call.stopShare()")
    assert bob.js("() => window.call.getState().sharing") is False
    small = (
        "(id) => { const v = document.querySelector(`video[data-id='${id}']`); "
        "return v && v.videoWidth === 2; }"
    )
    wait_all([ann, cy], small, bob.id)
    after = [tab.js("() => ({ ...window.__neg })") for tab in tabs]
    assert after == before, f"screen sharing renegotiated: {before} → {after}"


def _frames_from(tab: Tab, peer: str) -> int:
    """Video frames ``tab`` decoded on its media link from ``peer`` (inbound-rtp framesDecoded)."""
    code = f"""
import json, asyncio
from kibitz.backends.browser import SESSIONS
s = SESSIONS[-1]
link = s.session.mesh.link_of({peer!r})
stats = await s.session._transport.link_stats(link) if link else []
video = [e for e in stats if e.get("type") == "inbound-rtp" and e.get("kind") == "video"]
json.dumps(sum(int(e.get("framesDecoded", 0)) for e in video))
"""
    run = "async (code) => JSON.parse(await (await Kibitz._engine()).runPythonAsync(code))"
    return int(tab.js(run, code))


def test_speaking_follows_the_microphone(tabs: list[Tab]) -> None:
    ann, bob, _cy = tabs
    record = "() => { window.spoke = []; window.call.on('speaking', (id, on) => window.spoke.push([id,on])) }"
    bob.js(record)
    assert ann.js("() => window.call.toggleMic()") is True
    wait_all([bob], "(id) => window.call.getParticipants().some((p) => p.id === id && p.micOn)", ann.id)
    # Chromium's fake microphone beeps: the others' analysers hear it over the audio lane.
    bob.page.wait_for_function(
        "(id) => window.spoke.some(([who, on]) => who === id && on)", arg=ann.id, timeout=10_000
    )
    assert ann.js("() => window.call.toggleMic()") is False
    bob.page.wait_for_function(
        "(id) => !window.call.getParticipants().some((p) => p.id === id && p.speaking)",
        arg=ann.id,
        timeout=5_000,
    )


def test_cut_link_recovers_with_nothing_lost(tabs: list[Tab]) -> None:
    ann, bob, _cy = tabs
    for tab in (ann, bob):
        tab.js("() => { window.got = []; }")
    # Close the RTCPeerConnection under ann's data link to bob, then keep talking both ways.
    assert ann.py(f"from kibitz.backends.browser import SESSIONS\nSESSIONS[-1].cut_link({bob.id!r})") is True
    t0 = time.monotonic()
    for i in range(30):
        ann.js("([to, i]) => window.call.sendTo(to, { i })", [bob.id, i])
        bob.js("([to, i]) => window.call.sendTo(to, { j: i })", [ann.id, i])
        ann.js("(i) => window.call.broadcast({ b: i })", i)
        time.sleep(0.02)
    bob.page.wait_for_function("() => window.got.length >= 60", timeout=20_000)
    ann.page.wait_for_function("() => window.got.length >= 30", timeout=20_000)
    recovered_s = time.monotonic() - t0
    time.sleep(0.3)
    at_bob = bob.js("() => window.got.map(([d]) => d)")
    assert [d["i"] for d in at_bob if "i" in d] == list(range(30))  # exactly once, in order
    assert [d["b"] for d in at_bob if "b" in d] == list(range(30))
    assert [d["j"] for d in ann.js("() => window.got.map(([d]) => d)")] == list(range(30))
    wait_all(tabs, CONVERGED, 3)
    print(f"\nlink cut → 90 messages delivered exactly once in {recovered_s:.2f} s")


def test_follow_me_moves_the_others(tabs: list[Tab]) -> None:
    ann, bob, cy = tabs
    bob.js("() => { location.hash = '#/menu'; }")
    wait_all([ann, cy], "() => location.hash === '#/menu'")
    assert ann.js("() => document.getElementById('view').textContent").startswith("Today")
    cy.js("() => { location.hash = '#/about'; }")
    wait_all([ann, bob], "() => location.hash === '#/about'")
    time.sleep(0.3)  # no ping-pong: everyone stays where the last mover went
    assert {tab.js("() => location.hash") for tab in tabs} == {"#/about"}


def test_coordinator_tab_closes_and_the_call_goes_on(tabs: list[Tab]) -> None:
    coordinator = tabs[0].js("() => window.call.getState().coordinator")
    leaving = next(tab for tab in tabs if tab.id == coordinator)
    staying = [tab for tab in tabs if tab is not leaving]
    t0 = time.monotonic()
    leaving.page.close(run_before_unload=True)  # pagehide: the tab says goodbye
    wait_all(staying, CONVERGED, 2, timeout=10_000)
    dropped_s = time.monotonic() - t0
    wait_all(
        staying,
        "(old) => { const s = window.call.getState(); "
        "return s.coordinator && s.coordinator !== old && s.inCall; }",
        coordinator,
    )
    new_coordinators = {tab.js("() => window.call.getState().coordinator") for tab in staying}
    assert len(new_coordinators) == 1 and new_coordinators <= {tab.id for tab in staying}
    a, b = staying
    b.js("() => { window.got = []; }")
    a.js("() => window.call.broadcast({ after: 'failover' })")
    b.page.wait_for_function("() => window.got.some(([d]) => d.after === 'failover')")
    assert dropped_s < 5.0, f"the closed tab lingered {dropped_s:.1f} s"
    print(f"\ncoordinator's tab closed: dropped by the others in {dropped_s:.2f} s")


def test_demo_and_cross_origin_embed_share_a_call(
    browser: Browser, kibitz_server: KibitzServer, offline_guard: list[str]
) -> None:
    """The README's demo: dist/demo/index.html, plus embed.html on another origin (localhost vs
    127.0.0.1) loading widget.js — and through it /api/signal, Pyodide and the broker — from the server."""
    room = ROOM + "-demo"
    demo_ctx, embed_ctx = _guarded(browser, offline_guard), _guarded(browser, offline_guard)
    try:
        demo = demo_ctx.new_page()
        demo.goto(f"{kibitz_server.http}/#{room}")
        embed_url = demo.get_attribute("#embed", "href") or ""
        assert urlsplit(embed_url).hostname == "localhost" and f"#{room}" in embed_url
        embed = embed_ctx.new_page()
        embed.goto(embed_url)
        pages = (demo, embed)
        for page in pages:
            page.wait_for_function("() => window.call || (window.Kibitz && Kibitz.auto)", timeout=30_000)
            page.evaluate("() => (window.call || window.Kibitz.auto).ready")
        assert embed.evaluate("() => [location.origin, Kibitz.server]") == [
            urlsplit(embed_url)._replace(path="", query="", fragment="").geturl(),
            kibitz_server.http + "/",
        ]
        # Cross-origin too, the engine comes from the snapshot (CORS allows it).
        boot = embed.evaluate("() => Kibitz.timings.bootPath")
        assert boot == "snapshot", boot
        # The embed page is the one-liner (Kibitz.auto); the demo mounts itself (window.call) to pass
        # the host key of a room made on it. Both mount into presence; joining is the UI's (or our) call.
        for page in pages:
            page.evaluate("() => (window.call || window.Kibitz.auto).join()")
        for page in pages:
            page.wait_for_function(
                "() => { const ps = (window.call || Kibitz.auto).getParticipants(); "
                "return ps.length === 2 && ps.every((p) => p.linkUp); }",
                timeout=15_000,
            )
    finally:
        demo_ctx.close()
        embed_ctx.close()
