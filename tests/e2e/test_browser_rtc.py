"""The browser backend (kibitz.backends.browser, in the engine's Worker) against real Chromium WebRTC.

1. Python in one tab's engine opens a data channel to a plain-JS RTCPeerConnection in another
   browser context (manual signalling through Playwright), text and binary both ways, and every
   callback proxy is freed after close. The peer connection lives on the page's thread, driven
   over the page bridge; the channel is transferred to the engine's Worker.
2. Two tabs each run RtcTransport with the browser adapters against the npm reference broker
   (PeerJS server) and exchange messages over a link.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page
from server_fixture import stop_group
from static_server import StaticServer, ensure_dist, serve

ROOT = Path(__file__).resolve().parents[2]
PAGE = '<!doctype html><meta charset="utf-8"><body><script src="/widget.js"></script></body>'

PY_HELPERS = """
import asyncio, json
async def wait_until(pred, timeout=10.0, info=lambda: ""):
    loop = asyncio.get_event_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise TimeoutError(f"condition not met in time {info()}")
        await asyncio.sleep(0.02)
"""


@pytest.fixture(scope="module")
def site() -> Iterator[StaticServer]:
    with serve(ensure_dist(), {"/t.html": PAGE}) as server:
        yield server


def engine_page(ctx: BrowserContext, site: StaticServer) -> Page:
    page = ctx.new_page()
    page.goto(f"{site.url}/t.html")
    page.wait_for_function("() => !!window.Kibitz")
    py(page, PY_HELPERS + "json.dumps(1)")
    return page


def py(page: Page, code: str) -> Any:
    """Run Python (top-level await allowed) in the page; the last expression is a JSON string."""
    out = page.evaluate(
        "async (code) => { const py = await window.Kibitz._engine(); return await py.runPythonAsync(code); }",
        code,
    )
    return json.loads(out)


def test_python_datachannel_to_plain_js_peer(
    new_context: Callable[..., BrowserContext], site: StaticServer
) -> None:
    a = engine_page(new_context(), site)
    b = new_context().new_page()
    b.goto(f"{site.url}/t.html")

    offer = py(
        a,
        """
from kibitz.backends.browser import peer_connection_factory
from kibitz.backends.rtc_api import RtcConfig, SessionDescription
import kibitz_shim
pc = peer_connection_factory().create(RtcConfig())
got, cands, states, events = [], [], [], []
gathered = asyncio.Event()
pc.on("icecandidate", lambda c: cands.append(c) if c else gathered.set())
pc.on("connectionstatechange", states.append)
dc = pc.create_data_channel("chat")
dc.on("open", lambda: events.append("open"))
dc.on("message", got.append)
dc.on("close", lambda: events.append("close"))
t_offer = asyncio.get_event_loop().time()
offer = await pc.create_offer()
await pc.set_local_description(offer)
await asyncio.wait_for(gathered.wait(), 5)
json.dumps({"offer": offer.to_json(), "cands": cands, "label": dc.label, "state": dc.ready_state})
""",
    )
    assert offer["label"] == "chat" and offer["state"] == "connecting"
    assert offer["offer"]["type"] == "offer" and offer["cands"], offer
    assert all("127.0.0.1" in c["candidate"] or "typ host" in c["candidate"] for c in offer["cands"])

    answer = b.evaluate(
        """async ({offer, cands}) => {
          const pc = new RTCPeerConnection({ iceServers: [] });
          window.pc = pc; window.got = []; window.dcClosed = false;
          const mine = []; let gathered; const done = new Promise((r) => (gathered = r));
          pc.onicecandidate = (e) => (e.candidate ? mine.push(e.candidate.toJSON()) : gathered());
          pc.ondatachannel = (e) => {
            const dc = e.channel; window.dc = dc; dc.binaryType = 'arraybuffer';
            dc.onmessage = (m) => window.got.push(
              typeof m.data === 'string' ? m.data : Array.from(new Uint8Array(m.data)));
            dc.onopen = () => { dc.send('hello from js'); dc.send(new Uint8Array([1, 2, 255]).buffer); };
            dc.onclose = () => { window.dcClosed = true; };
          };
          await pc.setRemoteDescription(offer);
          for (const c of cands) await pc.addIceCandidate(c);
          const ans = await pc.createAnswer(); await pc.setLocalDescription(ans); await done;
          return { answer: { type: ans.type, sdp: ans.sdp }, cands: mine };
        }""",
        offer,
    )

    result = py(
        a,
        f"""
ans = json.loads({json.dumps(json.dumps(answer))})
await pc.set_remote_description(SessionDescription(**ans["answer"]))
for c in ans["cands"]:
    await pc.add_ice_candidate(c)
await pc.add_ice_candidate(None)
await wait_until(lambda: "open" in events, info=lambda: (events, states, dc.ready_state, pc.connection_state))
open_ms = (asyncio.get_event_loop().time() - t_offer) * 1000
transferred = type(dc.bound).__name__ == "BrowserDataChannel"
dc.send("hello from python")
dc.send(b"\\x00\\x01\\xff" * 1000)
await wait_until(lambda: len(got) >= 2)
json.dumps({{"got": [g if isinstance(g, str) else list(g) for g in got], "states": states,
            "open_ms": open_ms, "live": kibitz_shim.liveProxies(), "pc": pc.connection_state,
            "transferred": transferred}})
""",
    )
    assert result["got"] == ["hello from js", [1, 2, 255]]
    assert result["pc"] == "connected" and "connected" in result["states"]
    assert result["live"] > 0
    assert result["transferred"] is True  # the channel lives in the engine's Worker
    b.wait_for_function("() => window.got.length >= 2")
    got_b = b.evaluate("() => window.got")
    assert got_b[0] == "hello from python"
    assert got_b[1] == [0, 1, 255] * 1000

    # `bufferedamountlow` follows every send that empties the buffer (threshold 0): Python hears it
    # only once something subscribes, or each send would cost a second crossing into Python.
    drains = py(
        a,
        """
fired = []
real_fire = dc.bound._events.fire
dc.bound._events.fire = lambda name, *args: (fired.append(name), real_fire(name, *args))[1]
for i in range(20):
    dc.send(f"quiet {i}")
    await asyncio.sleep(0.01)
before = fired.count("bufferedamountlow")
heard = []
dc.on("bufferedamountlow", lambda: heard.append(1))
for i in range(5):
    dc.send(f"heard {i}")
    await asyncio.sleep(0.01)
json.dumps({"before": before, "heard": len(heard)})
""",
    )
    assert drains["before"] == 0 and drains["heard"] >= 1, drains

    after = py(
        a,
        """
dc.close()
await wait_until(lambda: "close" in events)
await pc.close()
await asyncio.sleep(0.1)
json.dumps({"live": kibitz_shim.liveProxies(), "state": dc.ready_state, "events": events})
""",
    )
    assert after == {"live": 0, "state": "closed", "events": ["open", "close"]}, after
    b.wait_for_function("() => window.dcClosed === true", timeout=10_000)
    print(f"\nPython→JS data channel open in {result['open_ms']:.0f} ms")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def peerjs_broker() -> Iterator[str]:
    """The npm reference broker (peer@1.0.2) on a free loopback port; its process group is killed after."""
    port = free_port()
    proc = subprocess.Popen(
        [str(ROOT / "node_modules/.bin/peerjs"), "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("peerjs broker did not start") from None
                time.sleep(0.05)
        yield f"ws://127.0.0.1:{port}/"
    finally:
        stop_group(proc)


TRANSPORT_SETUP = """
from kibitz.backends.browser import make_browser_transport
from kibitz.transport import ClaimResult, IncomingLink, LinkOpened, LinkMessage, LinkClosed
events = []
t = make_browser_transport({broker!r}, key="peerjs")
t.bind(events.append)
t.claim({me!r})
await wait_until(lambda: any(isinstance(e, ClaimResult) for e in events))
json.dumps([e.outcome + (":" + e.detail if e.detail else "") for e in events if isinstance(e, ClaimResult)])
"""


def test_rtc_transport_between_two_pages(
    new_context: Callable[..., BrowserContext], site: StaticServer, peerjs_broker: str
) -> None:
    a = engine_page(new_context(), site)
    b = engine_page(new_context(), site)
    id_a, id_b = "kbz-m-pagea0000000001", "kbz-m-pageb0000000002"
    assert py(a, TRANSPORT_SETUP.format(broker=peerjs_broker, me=id_a)) == ["claimed"]
    assert py(b, TRANSPORT_SETUP.format(broker=peerjs_broker, me=id_b)) == ["claimed"]

    dialed = py(
        a,
        f"""
t0 = asyncio.get_event_loop().time()
link = t.dial({id_a!r}, {id_b!r}, "kibitz")
await wait_until(lambda: any(isinstance(e, (LinkOpened, LinkClosed)) for e in events))
opened = [e for e in events if isinstance(e, LinkOpened)]
json.dumps({{"opened": len(opened), "ms": (asyncio.get_event_loop().time() - t0) * 1000,
            "closed": [e.reason for e in events if isinstance(e, LinkClosed)]}})
""",
    )
    assert dialed["opened"] == 1, dialed

    incoming = py(
        b,
        """
await wait_until(lambda: any(isinstance(e, LinkOpened) for e in events))
inc = next(e for e in events if isinstance(e, IncomingLink))
for i in range(50):
    t.send(inc.link, f"b{i}")
t.send(inc.link, bytes(range(256)))
json.dumps({"remote": inc.remote_id, "label": inc.label})
""",
    )
    assert incoming == {"remote": id_a, "label": "kibitz"}

    got = py(
        a,
        """
for i in range(50):
    t.send(link, f"a{i}")
await wait_until(lambda: len([e for e in events if isinstance(e, LinkMessage)]) >= 51)
msgs = [e.data for e in events if isinstance(e, LinkMessage)]
json.dumps({"text": [m for m in msgs if isinstance(m, str)],
            "bin": [list(m) for m in msgs if isinstance(m, bytes)]})
""",
    )
    assert got["text"] == [f"b{i}" for i in range(50)]
    assert got["bin"] == [list(range(256))]

    got_b = py(
        b,
        """
await wait_until(lambda: len([e for e in events if isinstance(e, LinkMessage)]) >= 50)
json.dumps([e.data for e in events if isinstance(e, LinkMessage)])
""",
    )
    assert got_b == [f"a{i}" for i in range(50)]

    # A closes the link: B hears LinkClosed; both shut down cleanly and free their proxies.
    py(a, "t.close(link)\njson.dumps(1)")
    closed = py(
        b,
        """
await wait_until(lambda: any(isinstance(e, LinkClosed) for e in events), timeout=15)
json.dumps([e.reason for e in events if isinstance(e, LinkClosed)])
""",
    )
    assert len(closed) == 1
    for page in (a, b):
        code = "await t.shutdown()\nawait asyncio.sleep(0.2)\nimport kibitz_shim\n"
        code += "json.dumps(kibitz_shim.liveProxies())"
        live = py(page, code)
        assert live == 0
    print(f"\nRtcTransport link open through the broker in {dialed['ms']:.0f} ms")


def test_level_meter_hears_short_sounds_between_ticks(
    new_context: Callable[..., BrowserContext], site: StaticServer
) -> None:
    """Ten 15 ms clicks, 250 ms apart, each heard: the meter reads every sample since its last tick.

    Reading only the newest 512 samples at 10 Hz heard about a quarter of them (it listened
    12 ms out of every 100) — why speaking detection missed Chromium's beeping fake microphone.
    """
    page = engine_page(new_context(), site)
    handle = page.evaluate(
        """async () => {
          const ctx = new AudioContext();
          const osc = ctx.createOscillator(), gate = ctx.createGain();
          const out = ctx.createMediaStreamDestination();
          osc.frequency.value = 440;
          gate.gain.value = 0;
          osc.connect(gate).connect(out);
          const start = ctx.currentTime + 0.3;
          for (let i = 0; i < 10; i++) {
            gate.gain.setValueAtTime(0.5, start + i * 0.25);
            gate.gain.setValueAtTime(0, start + i * 0.25 + 0.015);
          }
          osc.start();
          window.clicks = out.stream.getAudioTracks()[0];
          return (await Kibitz._engine()).ref(window.clicks);
        }"""
    )
    # The meter runs on the page's thread (Web Audio); the engine in its Worker gets the levels.
    ticks = py(
        page,
        f"""
from kibitz.backends.browser import page_bridge
from kibitz.backends.page_media import PageMeter
ticks = []
meter = PageMeter(page_bridge(), lambda levels: ticks.append(levels["click"]), 100)
meter.add("click", page_bridge().decode({{"$ref": {handle}, "$t": "track"}}))
await asyncio.sleep(3.2)
meter.stop()
json.dumps(ticks)
""",
    )
    loud = [i for i, level in enumerate(ticks) if level >= 0.02]
    # A click may straddle two ticks; count clicks as runs of consecutive loud ticks.
    clicks = sum(1 for i in loud if i - 1 not in loud)
    assert clicks == 10, f"heard {clicks} of 10 clicks; levels per tick: {ticks}"


def test_listen_data_hands_long_text_over_as_utf8(
    new_context: Callable[..., BrowserContext], site: StaticServer
) -> None:
    """shim.listenData: short text and binary arrive as they are; text over 2 kB arrives as its
    UTF-8 bytes with a flag (one copy instead of Pyodide's per-character string copy), and the page
    backend turns it back into the same ``str``."""
    page = engine_page(new_context(), site)
    got = py(
        page,
        """
import js, kibitz_shim
from kibitz.backends.browser import text_from_page
seen = []
target = js.EventTarget.new()
off = kibitz_shim.listenData(target, "message", lambda data, utf8=False: seen.append((data, utf8)))
texts = ["short é", "é中😀" * 1000]
for text in texts:
    target.dispatchEvent(js.MessageEvent.new("message", data=text))
target.dispatchEvent(js.MessageEvent.new("message", data=js.Uint8Array.new([1, 2]).buffer))
off()
json.dumps({
    "kinds": [[type(d).__name__, u] for d, u in seen],
    "same": [text_from_page(d) == t for (d, _), t in zip(seen, texts)],
    "binary": list(seen[2][0].to_bytes()),
})
""",
    )
    assert got["kinds"] == [["str", False], ["JsProxy", True], ["JsProxy", False]], got
    assert got["same"] == [True, True]
    assert got["binary"] == [1, 2]
