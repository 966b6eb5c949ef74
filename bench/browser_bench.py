"""The engine in the page: boot, join, bytes on the wire, and messaging against plain-JS WebRTC.

One command (``.venv/bin/python bench/browser_bench.py``; ``--quick`` for fewer runs) starts
``kibitz serve`` on 127.0.0.1, drives Debian's Chromium with Playwright (fake media, loopback ICE;
every request off 127.0.0.1 is aborted and fails the run) and measures:

* cold (fresh browser context: empty HTTP cache) and warm (same context, reload) times from
  widget.js starting to run → launcher visible → engine ready → joined with a data link up to a
  peer tab that is already in the call, for each boot path (the shipped one restores the build's
  runtime snapshot; ``plain`` is forced with ``window.__KIBITZ_BOOT__ = "plain"``), interleaved run
  by run so both see the same machine load;
* bytes on the wire (what Chromium received, compressed by the server) and raw bytes for widget.js,
  the Pyodide runtime and the wheels, from the cold run;
* message round trip (sequential ping/pong, median and p95) and one-way throughput page↔page,
  through the Python engine (``sendTo`` / ``onMessage``) and through a plain-JS RTCDataChannel
  between the same two tabs, in the same run.

It prints a markdown section and writes it into ``## Engine in the page`` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import Browser, BrowserContext, Page, Request, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_docs import machine, replace_section  # noqa: E402
from server_fixture import running_kibitz_server  # noqa: E402

SECTION = "## Engine in the page"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream", "--allow-loopback-in-peer-connection",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
LOCAL = {"127.0.0.1", "localhost"}
TARGETS = {"launcher_ms": 100.0, "joined_cold_ms": 3000.0, "joined_warm_ms": 1200.0, "rtt_ratio": 1.5}

# Polls (every 2 ms) for the first moment the page's call has a data link up to someone else.
JOIN_PROBE = """(() => {
  const t = setInterval(() => {
    const c = window.call;
    if (c && c.getParticipants().some((p) => !p.isSelf && p.linkUp)) {
      window.__joinedAt = performance.now(); clearInterval(t);
    }
  }, 2);
})();"""


MODES = ("snapshot", "plain")
FORCE_PLAIN = 'window.__KIBITZ_BOOT__ = "plain";'


def guarded_context(browser: Browser, outside: list[str], mode: str = "snapshot") -> BrowserContext:
    """A context that records every request leaving 127.0.0.1 (the run then fails); the browser's
    host-resolver rules make such requests fail. No ``route()``: Playwright turns the HTTP cache
    off while routing, and a warm load must come from the cache (and its compiled-wasm cache)."""

    def watch(request: Request) -> None:
        url = request.url
        if not ((urlsplit(url).hostname or "") in LOCAL or url.startswith(("data:", "blob:"))):
            outside.append(url)

    ctx = browser.new_context()
    ctx.on("request", watch)
    ctx.add_init_script(JOIN_PROBE)
    if mode == "plain":
        ctx.add_init_script(FORCE_PLAIN)
    return ctx


def open_tab(ctx: BrowserContext, url: str) -> Page:
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_function("() => window.call", timeout=10_000)
    page.evaluate("() => window.call.ready")
    return page


def wait_joined(page: Page) -> dict[str, Any]:
    page.wait_for_function("() => window.__joinedAt", timeout=60_000)
    t = page.evaluate("() => ({ ...window.Kibitz.timings, joinedAt: window.__joinedAt })")
    start = t["scriptStart"]
    return {
        "path": t.get("bootPath"),
        "runtime_ms": round(t.get("runtimeMs") or 0, 1),
        "packages_ms": round(t.get("packagesMs") or 0, 1),
        "import_ms": round(t.get("importMs") or 0, 1),
        "script_ms": round(start, 1),
        "launcher_ms": round(t["launcherShown"] - start, 1),
        "ready_ms": round(t["engineReady"] - start, 1),
        "joined_ms": round(t["joinedAt"] - start, 1),
        "boot_ms": round(t["bootMs"], 1),
        "signal_ms": round(t["signalMs"], 1),
        # snapshot boot only: download + inflate, then Pyodide's restore; the session's opening
        "fetch_ms": round(t["snapshotAt"] - t["restoreStart"], 1) if t.get("snapshotAt") else 0.0,
        "restore_ms": round(t["restoredAt"] - t["snapshotAt"], 1) if t.get("restoredAt") else 0.0,
        "open_ms": round(t.get("openMs") or 0, 1),
    }


def category(path: str) -> str:
    if path.endswith("/widget.js"):
        return "widget.js"
    if "/assets/pyodide-snapshot-" in path:
        return "snapshot"
    if path.endswith(".wasm") and "/assets/" in path:
        return "side modules"
    if "/assets/site-packages-" in path:
        return "wheel files"
    if "/assets/python-stdlib-" in path:
        return "standard library"  # the snapshot boot's own (trimmed) one
    if "/pyodide-" in path:
        return "runtime"
    if "/wheels/" in path:
        return "wheels"
    return "other"


def measure_boot(browser: Browser, base: str, room: str, runs: int, outside: list[str]) -> dict[str, Any]:
    """Cold + warm loads for every boot path, interleaved (run 1: snapshot, plain; run 2: ...)."""
    url = f"{base}/demo/follow.html?room={room}&name=bench&ui=1#/home"
    peer_ctx = guarded_context(browser, outside)
    peer = open_tab(peer_ctx, f"{base}/demo/follow.html?room={room}&name=peer#/home")
    peer.wait_for_function("() => window.call.getState().inCall")
    out: dict[str, Any] = {m: {"cold": [], "warm": []} for m in MODES}
    manifest: dict[str, Any] = json.loads((ROOT / "dist" / "manifest.json").read_text())["files"]
    wire: dict[str, dict[str, int]] = {}
    loads: list[float] = [round(os.getloadavg()[0], 2)]
    for run in range(runs):
        for mode in MODES:
            ctx = guarded_context(browser, outside, mode)
            page = ctx.new_page()
            responses: list[Any] = []
            first = run == 0 and mode == MODES[0]
            if first:
                page.on("requestfinished", lambda req, out=responses: out.append(req))  # type: ignore[misc]
            page.goto(url)
            out[mode]["cold"].append(wait_joined(page))
            if first:
                for req in responses:
                    if not req.url.startswith("http"):
                        continue  # the inflating worker's blob: script
                    path = urlsplit(req.url).path
                    resp = req.response()
                    if resp is None or resp.status != 200:
                        continue
                    # Raw size from the build's manifest: a worker's response body (the snapshot's)
                    # is not readable through the page.
                    raw = manifest.get(path.lstrip("/"), {}).get("bytes")
                    if raw is None:
                        raw = len(resp.body())
                    cat = wire.setdefault(category(path), {"files": 0, "raw": 0, "wire": 0})
                    cat["files"] += 1
                    cat["raw"] += raw
                    cat["wire"] += int(req.sizes()["responseBodySize"])
            for _ in range(2):
                page.reload()
                out[mode]["warm"].append(wait_joined(page))
            ctx.close()
            loads.append(round(os.getloadavg()[0], 2))
    peer_ctx.close()
    shipped = out[MODES[0]]
    paths = {r["path"] for m in MODES for r in out[m]["cold"] + out[m]["warm"]}
    return {"cold": shipped["cold"], "warm": shipped["warm"], "modes": out, "wire": wire, "load": loads,
            "paths": sorted(p or "?" for p in paths)}


PING_PY = """async (n) => {
  const peer = window.call.getParticipants().find((p) => !p.isSelf).id;
  let resolve = null;
  const off = window.call.onMessage((d) => { if (d && d.pong !== undefined && resolve) resolve(); });
  try {
    return await window.pingLoop(n, (i, done) => { resolve = done; window.call.sendTo(peer, { ping: i }); });
  } finally {
    off();
  }
}"""

PONG_PY = """() => { window.call.onMessage((d, from) => {
  if (d && d.ping !== undefined) window.call.sendTo(from, { pong: d.ping });
  if (d && d.bulkEnd) {
    window.call.sendTo(from, { bulkDone: d.bulkEnd, bytes: window.__bulk || 0 });
    window.__bulk = 0;
  }
  if (d && d.pad) window.__bulk = (window.__bulk || 0) + d.pad.length;
}); }"""

BULK_PY = """async ([count, size]) => {
  const peer = window.call.getParticipants().find((p) => !p.isSelf).id;
  const pad = 'x'.repeat(size);
  let resolve = null;
  const done = new Promise((r) => { resolve = r; });
  const off = window.call.onMessage((d) => { if (d && d.bulkDone) resolve(d); });
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    window.call.sendTo(peer, { i, pad });
    if (i % 32 === 31) await new Promise((r) => setTimeout(r, 0)); // let the engine pump
  }
  window.call.sendTo(peer, { bulkEnd: count });
  const got = await done;
  off();
  return { ms: performance.now() - t0, bytes: got.bytes };
}"""

# Sequential pings for every path alike: send(i, done) sends ping i and has done() called when its
# pong arrives; the result is each round trip in ms.
PING_LOOP = """window.pingLoop = async (n, send) => {
  const times = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await new Promise((done) => send(i, done));
    times.push(performance.now() - t0);
  }
  return times;
};"""

GATHERED = """const gathered = (pc) => new Promise((r) => {
  if (pc.iceGatheringState === 'complete') r();
  else pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r();
});"""

JS_OFFER = """async () => {
  const pc = new RTCPeerConnection({ iceServers: [] });
  window.__pc = pc;
  const dc = pc.createDataChannel('bench', { ordered: true });
  dc.binaryType = 'arraybuffer';
  window.__dc = dc;
  const opened = new Promise((r) => { dc.onopen = r; });
  window.__opened = opened;
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  return { type: pc.localDescription.type, sdp: pc.localDescription.sdp };
}"""

JS_ANSWER = """async (offer) => {
  const pc = new RTCPeerConnection({ iceServers: [] });
  window.__pc = pc;
  pc.ondatachannel = (e) => {
    const dc = e.channel; window.__dc = dc; let bulk = 0;
    dc.onmessage = window.__plainPong = (m) => {
      const d = JSON.parse(m.data);
      if (d.ping !== undefined) dc.send(JSON.stringify({ pong: d.ping }));
      else if (d.pad) bulk += d.pad.length;
      else if (d.bulkEnd) { dc.send(JSON.stringify({ bulkDone: d.bulkEnd, bytes: bulk })); bulk = 0; }
    };
  };
  await pc.setRemoteDescription(offer);
  await pc.setLocalDescription(await pc.createAnswer());
  await gathered(pc);
  return { type: pc.localDescription.type, sdp: pc.localDescription.sdp };
}"""

PING_JS = """async (n) => {
  await window.__opened;
  const dc = window.__dc; let resolve = null;
  dc.onmessage = (m) => {
    const d = JSON.parse(m.data);
    if (d.pong !== undefined && resolve) resolve();
    else if (d.bulkDone && window.__bulkDone) window.__bulkDone(d);
  };
  return window.pingLoop(n, (i, done) => { resolve = done; dc.send(JSON.stringify({ ping: i })); });
}"""

BULK_JS = """async ([count, size]) => {
  const dc = window.__dc; const pad = 'x'.repeat(size);
  dc.bufferedAmountLowThreshold = 256 * 1024;
  const done = new Promise((r) => { window.__bulkDone = r; });
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    if (dc.bufferedAmount > 1024 * 1024) await new Promise((r) => { dc.onbufferedamountlow = r; });
    dc.send(JSON.stringify({ i, pad }));
  }
  dc.send(JSON.stringify({ bulkEnd: count }));
  const got = await done;
  return { ms: performance.now() - t0, bytes: got.bytes };
}"""


# The floor of the engine's design: the plain-JS channel, but every message crosses into Python and
# back as the engine's do (page → Python → `send`; `message` → Python → page), with no engine logic.
# The ponging side is set up by LOWER_BOUNDS_ECHO.
PING_FLOOR = """async (n) => {
  const py = await window.Kibitz._engine();
  const dc = window.__dc; let resolve = null;
  py.globals.set('_floor_send', dc.send.bind(dc));
  py.globals.set('_floor_done', () => resolve && resolve());
  const send = py.runPython("def _floor_ping(text):\\n    _floor_send(text)\\n_floor_ping");
  const recv = py.runPython("def _floor_recv(text):\\n    _floor_done()\\n_floor_recv");
  dc.onmessage = (m) => recv(m.data);
  return window.pingLoop(n, (i, done) => { resolve = done; send(JSON.stringify({ floor: i })); });
}"""


# The least any reliable message path with its logic in Python does, on the same crossings as the
# floor: number each message and piggyback the ack owed (the send), read the header by slicing,
# release what the ack covers and deliver the next in order (the receive). No capability checks, no
# JSON validation, no layers: a lower bound for the engine, not a design (it trusts every frame).
MINIMAL_PY = """
from collections import deque
_min_out = deque()
_min = [0, 0, 0]  # next seq sent, last seq delivered, last ack sent

def _min_send(text):
    st = _min
    st[0] += 1
    if st[1] > st[2]:
        frame = f'{{"t":"m","s":{st[0]},"a":{st[1]},"d":{text}}}'
        st[2] = st[1]
    else:
        frame = f'{{"t":"m","s":{st[0]},"d":{text}}}'
    _min_out.append((st[0], frame))
    _min_dc_send(frame)

def _min_recv(frame):
    if not frame.startswith('{"t":"m","s":'):
        return
    i = frame.index(',"d":')
    head = frame[13:i]
    at = head.find(',"a":')
    if at >= 0:
        seq, ack = int(head[:at]), int(head[at + 5:])
        while _min_out and _min_out[0][0] <= ack:
            _min_out.popleft()
    else:
        seq = int(head)
    if seq == _min[1] + 1:
        _min[1] = seq
        _min_page(frame[i + 5:-1])
"""

# The ponging tab's listener for plain JS, the floor and the minimal path at once, told apart by the
# first key of what arrives ('{"t"' for the minimal path, '{"floor"', '{"ping"' for plain JS).
LOWER_BOUNDS_ECHO = """async (minimal) => {
  const py = await window.Kibitz._engine();
  const dc = window.__dc;
  py.globals.set('_floor_send', dc.send.bind(dc));
  py.globals.set('_min_dc_send', dc.send.bind(dc));
  const floorSend = py.runPython("def _floor_ping(text):\\n    _floor_send(text)\\n_floor_ping");
  py.globals.set('_floor_page', (text) => floorSend(text.replace('"floor"', '"pong"')));
  const floorRecv = py.runPython("def _floor_recv(text):\\n    _floor_page(text)\\n_floor_recv");
  py.runPython(minimal);
  const minSend = py.globals.get('_min_send');
  py.globals.set('_min_page', (text) => minSend(text.replace('"ping"', '"pong"')));
  const minRecv = py.globals.get('_min_recv');
  const plain = window.__plainPong; // JS_ANSWER's handler
  dc.onmessage = (m) => {
    const c = m.data.charCodeAt(2);
    if (c === 116) minRecv(m.data); // {"t":…: the minimal path
    else if (c === 102) floorRecv(m.data); // {"floor":…
    else plain(m); // {"ping":…: plain JS, as before
  };
}"""

PING_MINIMAL = """async ([n, minimal]) => {
  const py = await window.Kibitz._engine();
  const dc = window.__dc; let resolve = null;
  py.globals.set('_min_page', () => resolve && resolve()); // this run's resolve
  if (!py.globals.has('_min_send')) {
    py.globals.set('_min_dc_send', dc.send.bind(dc));
    py.runPython(minimal);
  }
  const send = py.globals.get('_min_send');
  const recv = py.globals.get('_min_recv');
  dc.onmessage = (m) => recv(m.data);
  return window.pingLoop(n, (i, done) => { resolve = done; send(JSON.stringify({ ping: i })); });
}"""

# Stage times on the ponging tab (engine path), stamped only while `window.__stages` is an array:
# the message event's timeStamp, the engine's listener being entered, the page's onMessage
# listener, and the data channel's send of the reply. Installed before the page's scripts run.
STAGE_PROBE = """(() => {
  window.__stages = null;
  const send = RTCDataChannel.prototype.send;
  RTCDataChannel.prototype.send = function (d) {
    if (window.__stages) window.__stages.push(['send', performance.now()]);
    return send.call(this, d);
  };
  const add = RTCDataChannel.prototype.addEventListener;
  RTCDataChannel.prototype.addEventListener = function (type, fn, opts) {
    if (type !== 'message') return add.call(this, type, fn, opts);
    return add.call(this, type, function (ev) {
      if (window.__stages) window.__stages.push(['event', ev.timeStamp, performance.now()]);
      return fn.call(this, ev);
    }, opts);
  };
})();"""

PONG_STAGED = """() => { window.call.onMessage((d, from) => {
  if (d && d.ping !== undefined && window.__stages) window.__stages.push(['page', performance.now()]);
}); }"""


def stage_times(stamps: list[list[Any]]) -> dict[str, float]:
    """Mean µs per stage over the complete event → page → send sequences (the 0.1 ms clock's
    rounding averages out over hundreds of messages)."""
    parts: dict[str, list[float]] = {"dispatch": [], "receive": [], "send": []}
    for i in range(len(stamps) - 2):
        ev, page, sent = stamps[i], stamps[i + 1], stamps[i + 2]
        if (ev[0], page[0], sent[0]) == ("event", "page", "send"):
            parts["dispatch"].append(ev[2] - ev[1])
            parts["receive"].append(page[1] - ev[2])
            parts["send"].append(sent[1] - page[1])
    if not parts["receive"]:
        return {}
    out = {k: round(statistics.fmean(v) * 1000) for k, v in parts.items()}
    out["n"] = len(parts["receive"])
    return out


def summary(times: list[float]) -> dict[str, float]:
    s = sorted(times)
    cut = len(s) // 10
    return {"median_ms": round(statistics.median(s), 3), "p95_ms": round(s[int(len(s) * 0.95) - 1], 3),
            "mean_ms": round(statistics.fmean(s), 3),
            "trimmed_ms": round(statistics.fmean(s[cut : len(s) - cut]), 3)}


MSG_BLOCKS = 4
"""The ping/pong runs alternate engine and plain JS in this many blocks each, so both paths see the
same machine load (a loaded 2-core runner swings plain JS alone between 0.3 and 1.2 ms)."""
BULK_RUNS = 3


def measure_messaging(browser: Browser, base: str, room: str, n: int, outside: list[str]) -> dict[str, Any]:
    """RTT and bulk rate, engine vs plain JS, in a browser of its own: nothing from the boot runs
    (their contexts, peer connections, caches) shares its processes, so the rows are comparable
    between ``--quick`` and full runs. Each figure pools interleaved runs of both paths."""
    fresh = browser.browser_type.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    try:
        a = open_tab(guarded_context(fresh, outside), f"{base}/demo/follow.html?room={room}&name=a#/home")
        b_ctx = guarded_context(fresh, outside)
        b_ctx.add_init_script(STAGE_PROBE)
        b = open_tab(b_ctx, f"{base}/demo/follow.html?room={room}&name=b#/home")
        for page in (a, b):
            page.wait_for_function("() => window.__joinedAt", timeout=30_000)
        b.evaluate(PONG_STAGED)  # first: it stamps before PONG_PY's listener sends the reply
        b.evaluate(PONG_PY)
        for page in (a, b):
            page.add_script_tag(content=GATHERED.replace("const gathered", "window.gathered"))
            page.add_script_tag(content=PING_LOOP)
        answer = b.evaluate(JS_ANSWER, a.evaluate(JS_OFFER))
        a.evaluate("async (a) => { await window.__pc.setRemoteDescription(a); await window.__opened; }",
                   answer)
        a.evaluate(PING_PY, 20)  # warm-up, both paths
        a.evaluate(PING_JS, 20)
        py_rtt: list[float] = []
        js_rtt: list[float] = []
        block = max(1, n // MSG_BLOCKS)
        for i in range(MSG_BLOCKS):
            first, second = (PING_PY, PING_JS) if i % 2 == 0 else (PING_JS, PING_PY)
            for script in (first, second):
                (py_rtt if script is PING_PY else js_rtt).extend(a.evaluate(script, block))
        count, size = 400, 16_000
        py_bulk: list[dict[str, float]] = []
        js_bulk: list[dict[str, float]] = []
        for _ in range(BULK_RUNS):
            py_bulk.append(a.evaluate(BULK_PY, [count, size]))
            js_bulk.append(a.evaluate(BULK_JS, [count, size]))
        # The ponging tab's stages on the engine path (a block of its own: stamping costs a little).
        b.evaluate("() => { window.__stages = []; }")
        a.evaluate(PING_PY, block)
        stages = stage_times(b.evaluate("() => { const s = window.__stages; window.__stages = null; "
                                        "return s; }"))
        # Last (the ponging side of the plain channel is replaced by one serving plain JS, the floor and
        # the minimal Python path): all four paths alternating.
        b.evaluate(LOWER_BOUNDS_ECHO, MINIMAL_PY)
        a.evaluate(PING_FLOOR, 20)
        a.evaluate(PING_MINIMAL, [20, MINIMAL_PY])
        bounds: dict[str, list[float]] = {"js": [], "floor": [], "minimal": [], "engine": []}
        runs: dict[str, tuple[str, Any]] = {
            "js": (PING_JS, block), "floor": (PING_FLOOR, block),
            "minimal": (PING_MINIMAL, [block, MINIMAL_PY]), "engine": (PING_PY, block)}
        for i in range(MSG_BLOCKS):
            names = list(runs) if i % 2 == 0 else list(reversed(runs))
            for name in names:
                script, arg = runs[name]
                bounds[name].extend(a.evaluate(script, arg))
    finally:
        fresh.close()

    def rate(runs: list[dict[str, float]]) -> tuple[float, float]:
        assert all(r["bytes"] == count * size for r in runs), runs
        best = sorted(runs, key=lambda r: r["ms"])[len(runs) // 2]  # the median run
        return round(best["bytes"] / (best["ms"] / 1000) / 1e6, 2), round(best["ms"])

    (py_rate, py_ms), (js_rate, js_ms) = rate(py_bulk), rate(js_bulk)
    return {
        "n": len(py_rtt), "bulk": f"{count} × {size // 1000} kB", "blocks": MSG_BLOCKS,
        "bulk_runs": BULK_RUNS,
        "py": {**summary(py_rtt), "mb_s": py_rate, "bulk_ms": py_ms},
        "js": {**summary(js_rtt), "mb_s": js_rate, "bulk_ms": js_ms},
        "bounds": {name: summary(times) for name, times in bounds.items()},
        "stages": stages,
    }


def med(rows: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in rows), 1)


def render(boot: dict[str, Any], msg: dict[str, Any], runs: int) -> str:
    cold, warm = boot["cold"], boot["warm"]
    lines = [
        f"{SECTION}\n",
        boot.get("machine", machine()) + f"; Chromium {boot['chromium']}, Pyodide 314.0.7.\n",
        "`bench/browser_bench.py` runs `kibitz serve` on 127.0.0.1 and drives Debian's Chromium (headless, "
        "fake media, loopback ICE). A peer tab is already in the call; the measured tab loads "
        "`/demo/follow.html` (non-headless widget, `startOpen`), and times are from widget.js starting "
        "to run (`Kibitz.timings.scriptStart`) to the launcher being attached, the engine being ready "
        "(Pyodide + wheels + `PageSession` opened; `/api/signal` is fetched in parallel with the boot) "
        "and the first data link up to the peer (the session asks `/api/turn` first, then connects). "
        "Cold = fresh browser context (empty "
        "HTTP and code cache), warm = reload in the same context (requests are watched, not routed: "
        f"Playwright's routing would turn the HTTP cache off). Medians of {len(cold)} cold and "
        f"{len(warm)} warm loads of the shipped boot path (snapshot). Machine load during the run "
        f"(1-min load average on these CPUs, sampled between loads): {min(boot['load']):.1f}–"
        f"{max(boot['load']):.1f}; other jobs shared the machine, so spreads are wide.\n",
        "| load | script starts | launcher | engine ready | joined (data link up) | Pyodide boot "
        "| /api/signal |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, rows in (("cold", cold), ("warm", warm)):
        lines.append(
            f"| {label} | {med(rows, 'script_ms'):.0f} ms | {med(rows, 'launcher_ms'):.1f} ms | "
            f"{med(rows, 'ready_ms'):.0f} ms | **{med(rows, 'joined_ms'):.0f} ms** | "
            f"{med(rows, 'boot_ms'):.0f} ms | "
            f"{med(rows, 'signal_ms'):.0f} ms |"
        )
    lines += [
        "",
        "Boot paths, same run, interleaved (medians; engine ready and joined from script start; runtime "
        "= `loadPyodide`: for the snapshot the download + inflate of the snapshot (fetch) and Pyodide's "
        "restore of it, for plain the runtime start-up and the wheels; rebind = binding pydantic-core's "
        "compiled module again and writing the wheels' files back; import = `import "
        "kibitz.backends.browser` (already done inside a snapshot); open = `open_session`; "
        "join = engine ready → first data link up):",
        "",
        "| path | load | engine ready | joined | runtime | fetch | restore | rebind | import | open | join |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, got in boot["modes"].items():
        for label in ("cold", "warm"):
            rows = got[label]
            join = [r["joined_ms"] - r["ready_ms"] for r in rows]
            lines.append(
                f"| {mode} | {label} | {med(rows, 'ready_ms'):.0f} ms | "
                f"**{med(rows, 'joined_ms'):.0f} ms** | {med(rows, 'runtime_ms'):.0f} ms | "
                f"{med(rows, 'fetch_ms'):.0f} ms | {med(rows, 'restore_ms'):.0f} ms | "
                f"{med(rows, 'packages_ms'):.0f} ms | {med(rows, 'import_ms'):.0f} ms | "
                f"{med(rows, 'open_ms'):.0f} ms | {statistics.median(join):.0f} ms |"
            )
    lines += [
        "",
        "Bytes on the wire in the cold load (as received by Chromium, i.e. after the server's br/gzip; "
        "wheels are already deflated) and raw:",
        "",
        "| part | files | raw | on the wire |",
        "|---|---|---|---|",
    ]
    total_raw = total_wire = 0
    for cat in ("widget.js", "runtime", "standard library", "snapshot", "side modules", "wheel files",
                "wheels", "other"):
        w = boot["wire"].get(cat)
        if not w:
            continue
        total_raw += w["raw"]
        total_wire += w["wire"]
        lines.append(f"| {cat} | {w['files']} | {w['raw'] / 1e3:,.1f} kB | {w['wire'] / 1e3:,.1f} kB |")
    lines.append(f"| **total** | | {total_raw / 1e6:.2f} MB | {total_wire / 1e6:.2f} MB |")
    py, js = msg["py"], msg["js"]
    ratio = py["median_ms"] / js["median_ms"] if js["median_ms"] else float("inf")
    ratio_trimmed = py["trimmed_ms"] / js["trimmed_ms"] if js["trimmed_ms"] else float("inf")
    lines += [
        "",
        f"Messaging between two tabs (separate contexts; `/demo/follow.html` with headless mounts, the page "
        "drawing its own tiles) in a browser of its own, launched after the boot "
        f"runs so nothing of theirs shares its processes: {msg['n']} sequential ping/pongs per path "
        f"(JSON objects), engine and plain JS alternating in {msg.get('blocks', 1)} blocks each so both "
        f"see the same load, and one-way bulk of {msg['bulk']} JSON messages acknowledged at the end "
        f"(median of {msg.get('bulk_runs', 1)} alternating runs per path). Engine = "
        "`sendTo` → Python (`Session` → content → mesh framing, acks, resend buffer) → RTCDataChannel → "
        "Python → `onMessage`; plain JS = `JSON.stringify` + `RTCDataChannel.send` between the same two "
        "tabs on a separate peer connection. `performance.now()` is coarsened to 0.1 ms in these "
        "(non-isolated) pages, so a median snaps to a 0.1 ms step; the 10 % trimmed mean of the same "
        "samples does not (the rounding averages out).",
        "",
        "| path | RTT median | RTT trimmed mean | RTT p95 | throughput |",
        "|---|---|---|---|---|",
        f"| Python engine | {py['median_ms']:.2f} ms | {py['trimmed_ms']:.2f} ms | {py['p95_ms']:.2f} ms "
        f"| {py['mb_s']:.1f} MB/s |",
        f"| plain JS RTCDataChannel | {js['median_ms']:.2f} ms | {js['trimmed_ms']:.2f} ms "
        f"| {js['p95_ms']:.2f} ms | {js['mb_s']:.1f} MB/s |",
    ]
    bounds = msg.get("bounds")
    if bounds:
        base = bounds["js"]
        label = {"js": "plain JS RTCDataChannel", "floor": "plain JS through Python (the floor)",
                 "minimal": "minimal Python message path", "engine": "Python engine"}
        lines += [
            "",
            "Lower bounds, in a further {} blocks per path, all four alternating (× = against plain JS "
            "in the same blocks):".format(msg.get("blocks", 1)),
            "",
            "| path | RTT median | RTT trimmed mean | × (medians) | × (trimmed means) |",
            "|---|---|---|---|---|",
        ]
        for name, row in bounds.items():
            lines.append(
                f"| {label[name]} | {row['median_ms']:.2f} ms | {row['trimmed_ms']:.2f} ms "
                f"| {row['median_ms'] / base['median_ms']:.2f}× "
                f"| {row['trimmed_ms'] / base['trimmed_ms']:.2f}× |")
        lines += [
            "",
            "The floor: each message crosses JS→Python→JS the way the engine's do (the page hands it to "
            "a Python function that calls `send`; `message` goes to a Python function that calls back "
            "into the page), with no logic at all. The minimal Python path adds the least a reliable "
            "path does (`MINIMAL_PY`: number each message and piggyback the ack, read the header by "
            "slicing, release what the ack covers, deliver in order), with no checks, no JSON and no "
            "layers, and trusting every frame. The engine's extra over it is what it does per message "
            "that the bound does not (below).",
        ]
    stages = msg.get("stages")
    if stages:
        lines += [
            "",
            f"On the ponging tab ({stages['n']} pings, engine path, mean of 0.1 ms-clock stamps): "
            f"{stages['dispatch']} µs from the message event's timestamp to the engine's listener "
            f"(the browser's dispatch, paid by plain JS too), **{stages['receive']} µs** from there to "
            f"the page's `onMessage` listener and **{stages['send']} µs** from the page's `sendTo` to "
            "the data channel's `send` of the reply. In a warm loop the same Python costs ~11 µs to "
            "receive and ~8 µs to send (`## Engine message path`, Pyodide columns).",
        ]
    lines += [
        "",
        "Targets:",
        "",
    ]
    launch = med(cold, "launcher_ms")
    jc, jw = med(cold, "joined_ms"), med(warm, "joined_ms")

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    lines += [
        f"- launcher ≤ 100 ms: {launch:.1f} ms cold → {verdict(launch <= TARGETS['launcher_ms'])}.",
        f"- joined ≤ 3.0 s cold: {jc / 1000:.2f} s → {verdict(jc <= TARGETS['joined_cold_ms'])}.",
        f"- joined ≤ 1.2 s warm: {jw / 1000:.2f} s → {verdict(jw <= TARGETS['joined_warm_ms'])}.",
        f"- round trip ≤ 1.5× plain JS: {ratio:.2f}× (medians), {ratio_trimmed:.2f}× (trimmed means) → "
        f"{verdict(max(ratio, ratio_trimmed) <= TARGETS['rtt_ratio'])}.",
        "",
        "Where the time goes. The page restores an engine memory snapshot that build/build.py makes "
        "with Node (docs/architecture.md, \"How the page boots\"): the runtime with the wheels "
        "installed and the engine, pydantic and pydantic-core imported, everything a session "
        "imports included (an import after a restore compiles source on V8's baseline tier: "
        "`kibitz.backends.rtc` left out cost 250 ms at open). pydantic-core's compiled module is "
        "bound again at the bases the build recorded (rebind: instantiate the cached compiled "
        "`.wasm`, put back its live data, refill its table slots), and the wheels' files are "
        "written back from one tar for later lazy imports. The snapshot file leaves out the heap's "
        "zero pages, what the build zeroed as dead and the pages the runtime's own data segments "
        "already hold (45 → 17 MB; 4.6 MB as the build's brotli copy, which the browser's HTTP stack "
        "decodes off the page's thread) and downloads while the page's thread parses and "
        "instantiates the runtime, so the restore proper is the ~0.05–0.1 s after the bytes arrive; "
        "fetching it is the longest step of a warm boot. Before this, the page restored a "
        "stdlib-only snapshot and then loaded the wheels "
        "(0.3–0.4 s) and imported the engine (1.0–1.4 s, all on V8's baseline tier right after the "
        "restore): warm joins took 2.2–2.8 s. If any part of the snapshot cannot be fetched, bound or "
        "checked, the page boots plainly from the wheels (tested). The cold download is the runtime, "
        "the snapshot, the compiled module, a trimmed standard library and the wheel files (no "
        "wheels): ~8.7 MB on the wire (`## First load`). "
        "Joining (member id and room claim at the broker, the presence link to the coordinator, the "
        "roster, the first data link) takes ~0.25–0.4 s after the engine is ready, more than after "
        "a plain boot (~0.2–0.25 s) because Python still runs on the baseline tier for a while after "
        "a restore.",
        "",
        "Where the round trip goes. The crossings cost little (the floor row; 1.0–1.4× plain JS across "
        "runs) and no event-loop hop sits on the message path. The engine's extra over the minimal "
        "path is its per-message work: about 25 Python calls each way (data channel → transport event "
        "→ session → mesh framing: the JSON frame, sequence and ack, the resend buffer → content "
        "checks: one JSON value, size, no NaN or lone surrogate, the sender's capability, the agent "
        "`act` envelope → the page's structured-clone marshalling), against three for the minimal "
        "path. Warm, that is ~20 µs per tab per ping/pong; in a ping/pong each tab runs it after idling "
        "while the other tab and the browser's network process ran on the same 2 cores, and it costs "
        "~10× as much (the stages above): the CPU caches no longer hold the interpreter's working set, "
        "so the cost grows with the code and data a message touches. Probes behind these statements "
        "(not committed): Chrome's sampling profiler (over CDP, 1000 ping/pongs) puts the ponging "
        "tab's extra time at Python execution (CPython's eval loop in wasm) ~45 %, Pyodide's FFI "
        "glue ~20 %, the rest in `send` and V8; V8 with Liftoff off (all wasm optimised from the "
        "start) moved the engine's round trip by less than the noise, so tier-up is not the cause; "
        "plain JS over the engine's own data channel (it shares a peer connection with the media "
        "lanes) measured the same as the floor; and the engine with its receive and send swapped for "
        "one fused function each (string slicing, no JSON, no checks, no layers; the page's "
        "marshalling kept) measured 1.5× plain JS where the engine measured 1.75× in the same "
        "browser (1.2 vs 1.4 ms; plain 0.8 ms), and in another run 1.79× against the engine's 2.46×, "
        "or 1.56× with widget.js's marshalling bypassed too (Python called directly; trimmed means). "
        "So ≤ 1.5× is beyond even a path that skips the per-message checks; the engine keeps them "
        "(malformed input is dropped and counted, capabilities are enforced on both ends). Removed "
        "earlier: a crossing into Python after "
        "every send for nothing (`bufferedamountlow`, heard only when subscribed now, ~0.05 ms per "
        "round trip) and Pyodide's per-character copy of long strings (text over 2 kB crosses as "
        "UTF-8 bytes; it does not touch this row's small messages). This 2-core VM is "
        "shared: plain JS alone ranged 0.4–1.5 ms between runs, so treat single-run ratios as ±30 %. "
        "The plain-JS bulk figure is a simple "
        "`bufferedamountlow` loop (1 MB high / 256 kB low water) and looks low next to the engine's "
        "own pump (1 MB high water, 20 ms re-check); it was not tuned further.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 cold loads, 100 pings")
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    ap.add_argument("--render", metavar="JSON", help="re-render a saved run (the JSON printed on stderr)")
    args = ap.parse_args(argv)
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        body = render(saved["boot"], saved["messaging"], len(saved["boot"]["cold"]))
        print(body)
        if not args.no_write:
            replace_section(SECTION, body)
        return 0
    import subprocess

    subprocess.run([sys.executable, str(ROOT / "build" / "build.py"), "--quiet"], check=True, cwd=ROOT)
    runs = 2 if args.quick else 5
    outside: list[str] = []
    stamp = format(int(time.time()) % 36**5, "x")
    with running_kibitz_server() as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            started = machine()  # the load average at the start, kept in the run for a re-render
            boot = measure_boot(browser, srv.http, f"room-bench-boot-{stamp}", runs, outside)
            boot["chromium"] = browser.version
            boot["machine"] = started
            msg = measure_messaging(browser, srv.http, f"room-bench-msg-{stamp}", 100 if args.quick else 300,
                                    outside)
        finally:
            browser.close()
    if outside:
        print(f"requests left 127.0.0.1: {outside}", file=sys.stderr)
        return 1
    body = render(boot, msg, runs)
    print(body)
    print(json.dumps({"boot": boot, "messaging": msg}, indent=1), file=sys.stderr)
    if not args.no_write:
        replace_section(SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
