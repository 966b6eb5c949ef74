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
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_docs import machine, replace_section  # noqa: E402
from chromium_flags import CHROMIUM, LOOPBACK_ONLY_DNS  # noqa: E402
from chromium_flags import CHROMIUM_ARGS as BASE_ARGS  # noqa: E402
from server_fixture import running_kibitz_server  # noqa: E402

SECTION = "## Engine in the page"
CHROMIUM_ARGS = [*BASE_ARGS, LOOPBACK_ONLY_DNS]
LOCAL = {"127.0.0.1", "localhost"}
TARGETS = {"launcher_ms": 100.0, "joined_cold_ms": 2000.0, "joined_warm_ms": 1000.0, "bulk_ratio": 0.7,
           "fanout_p99_added_ms": 5.0}

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
        b = open_tab(guarded_context(fresh, outside), f"{base}/demo/follow.html?room={room}&name=b#/home")
        for page in (a, b):
            page.wait_for_function("() => window.__joinedAt", timeout=30_000)
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
    }


# ---- sustained fan-out: one tab sends 200 messages/s to each of 7 others (engine, then plain JS)

# Every tab's clock as epoch ms: timeOrigin + now() agree across tabs of one machine, so a message
# stamped by its sender gives its one-way latency at the receiver.
FAN_RECV = """() => {
  window.__lat = { engine: [], js: [] };
  window.call.onMessage((d) => {
    if (d && d.fan !== undefined) window.__lat.engine.push(performance.timeOrigin + performance.now() - d.t);
  });
}"""

FAN_JS_ANSWER = """async (offer) => {
  const pc = new RTCPeerConnection({ iceServers: [] });
  window.__fanPc = pc;
  pc.ondatachannel = (e) => { e.channel.onmessage = (m) => {
    const d = JSON.parse(m.data);
    window.__lat.js.push(performance.timeOrigin + performance.now() - d.t);
  }; };
  await pc.setRemoteDescription(offer);
  await pc.setLocalDescription(await pc.createAnswer());
  await gathered(pc);
  return { type: pc.localDescription.type, sdp: pc.localDescription.sdp };
}"""

FAN_JS_OFFER = """async (i) => {
  const pc = new RTCPeerConnection({ iceServers: [] });
  const dc = pc.createDataChannel('fan', { ordered: true });
  (window.__fanDcs = window.__fanDcs || [])[i] = dc;
  (window.__fanPcs = window.__fanPcs || [])[i] = pc;
  window.__fanOpen = window.__fanOpen || [];
  window.__fanOpen[i] = new Promise((r) => { dc.onopen = r; });
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  return { type: pc.localDescription.type, sdp: pc.localDescription.sdp };
}"""

# Each 5 ms tick sends one message to every peer (200/s each), stamped when it is sent; the path
# is the engine's sendTo or the plain channel's send of the same JSON.
FAN_SEND = """async ([path, seconds, pad]) => {
  const peers = window.call.getParticipants().filter((p) => !p.isSelf).map((p) => p.id).sort();
  if (path === 'js') await Promise.all(window.__fanOpen);
  const payload = 'x'.repeat(pad);
  let sent = 0;
  const end = performance.now() + seconds * 1000;
  await new Promise((done) => {
    const tick = setInterval(() => {
      if (performance.now() >= end) { clearInterval(tick); done(); return; }
      for (let i = 0; i < peers.length; i++) {
        const msg = { fan: sent, t: performance.timeOrigin + performance.now(), pad: payload };
        if (path === 'engine') window.call.sendTo(peers[i], msg);
        else window.__fanDcs[i].send(JSON.stringify(msg));
      }
      sent += 1;
    }, 5);
  });
  return { perPeer: sent, peers: peers.length, rate: sent / seconds };
}"""

FAN_PEERS = 7
FAN_BLOCKS = 2


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))] if s else float("nan")


def measure_fanout(
    browser: Browser, base: str, room: str, seconds: float, outside: list[str]
) -> dict[str, Any]:
    """One tab sends to each of 7 others at 200 messages/s, through the engine and through plain-JS
    channels between the same tabs, in alternating blocks; one-way latency at the receivers."""
    fresh = browser.browser_type.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    try:
        url = f"{base}/demo/follow.html?room={room}&name=f{{}}#/home"
        pages = [open_tab(guarded_context(fresh, outside), url.format(i)) for i in range(FAN_PEERS + 1)]
        for page in pages:
            page.wait_for_function(
                "(n) => window.call.getParticipants().filter((p) => p.linkUp).length === n",
                arg=FAN_PEERS + 1, timeout=300_000)
        sender, receivers = pages[0], pages[1:]
        ids = [str(r.evaluate("() => window.call.getState().self")) for r in receivers]
        order = sorted(range(len(ids)), key=lambda i: ids[i])  # FAN_SEND walks the peers sorted by id
        for page in pages:
            page.add_script_tag(content=GATHERED.replace("const gathered", "window.gathered"))
        for r in receivers:
            r.evaluate(FAN_RECV)
        for slot, i in enumerate(order):
            answer = receivers[i].evaluate(FAN_JS_ANSWER, sender.evaluate(FAN_JS_OFFER, slot))
            sender.evaluate("async ([i, a]) => { await window.__fanPcs[i].setRemoteDescription(a); "
                            "await window.__fanOpen[i]; }", [slot, answer])
        sender.evaluate(FAN_SEND, ["engine", 0.5, 100])  # warm-up, both paths
        sender.evaluate(FAN_SEND, ["js", 0.5, 100])
        for r in receivers:
            r.evaluate("() => { window.__lat = { engine: [], js: [] }; }")
        sent = {"engine": 0, "js": 0}
        rates: dict[str, list[float]] = {"engine": [], "js": []}
        for block in range(FAN_BLOCKS):
            for path in (("engine", "js") if block % 2 == 0 else ("js", "engine")):
                got = sender.evaluate(FAN_SEND, [path, seconds, 100])
                sent[path] += got["perPeer"] * got["peers"]
                rates[path].append(got["rate"])
                time.sleep(1.0)  # the stragglers of this block arrive before the next starts
        time.sleep(2.0)
        lat: dict[str, list[float]] = {"engine": [], "js": []}
        for r in receivers:
            got = r.evaluate("() => window.__lat")
            for path in lat:
                lat[path].extend(got[path])
    finally:
        fresh.close()
    out: dict[str, Any] = {"peers": FAN_PEERS, "seconds": seconds, "blocks": FAN_BLOCKS}
    for path, values in lat.items():
        out[path] = {"sent": sent[path], "received": len(values),
                     "rate": round(statistics.fmean(rates[path]), 1),
                     "p50_ms": round(percentile(values, 0.5), 2),
                     "p99_ms": round(percentile(values, 0.99), 2),
                     "max_ms": round(max(values), 2) if values else float("nan")}
    return out


# ---- the host page's main thread: a third-party page with the one-liner, against the same page without it

HOST_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>host</title>
<style>* {{ transition: all 3s !important; }} button {{ background: red !important; }}
div, kibitz-widget {{ display: none !important; position: static !important; }}</style></head>
<body><h1>A third-party page</h1><p>Its own content.</p>{widget}</body></html>"""

CALL_LOAD = """([to, seconds, ctl]) => new Promise((done) => {
  const c = ctl === 'auto' ? Kibitz.auto : ctl === 'call' ? window.call : null;
  let i = 0;
  const end = performance.now() + seconds * 1000;
  const tick = setInterval(() => {
    if (performance.now() >= end) { clearInterval(tick); done(i); return; }
    if (c) c.sendTo(to, { i: i, pad: 'x'.repeat(200) });
    i += 1;
  }, 20);
})"""
"""50 messages/s to ``to`` through the controller named ``ctl`` for ``seconds`` (``ctl`` null: the
same timer, sending nothing: the baseline page's own work)."""


def host_row(page: Page, traced: Any, since: float) -> dict[str, Any]:
    """What the page's thread did since ``since`` (its clock): long tasks as its own observer saw
    them (wall clock), and every task's CPU time from the trace."""
    tasks = page.evaluate("(t) => window.__longtasks.filter((x) => x.start >= t)", since)
    walls = [t["duration"] for t in tasks]
    return {"long": len(walls), "longest_ms": round(max(walls, default=0.0)),
            "tbt_ms": round(sum(max(0.0, w - 50) for w in walls)),
            "cpu_longest_ms": round(traced.longest(cpu=True), 1), "cpu_long": len(traced.long(50)),
            "cpu_tbt_ms": round(traced.tbt(cpu=True)), "tasks": len(traced.tasks)}


def measure_host_page(
    browser: Browser, base: str, room: str, seconds: float, outside: list[str]
) -> dict[str, Any]:
    """The host page's main thread: the page alone (baseline), and with the one-liner through a cold
    boot + join, then through a call exchanging 50 messages/s each way with a peer tab."""
    import main_thread
    from static_server import serve

    fresh = browser.browser_type.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    rows: dict[str, Any] = {}
    try:
        with serve(ROOT / "dist") as site:  # another origin: the page is a third party's
            site.pages["/plain.html"] = HOST_PAGE.format(widget="")
            site.pages["/host.html"] = HOST_PAGE.format(
                widget=f'<script src="{base}/widget.js" data-room="{room}" data-name="host"></script>')
            # Baseline: the same page, no widget, over a load and the same timer the call row runs.
            ctx = guarded_context(fresh, outside)
            ctx.add_init_script(main_thread.LONGTASKS)
            page = ctx.new_page()
            main_thread.start(fresh, page)
            page.goto(f"{site.url}/plain.html")
            page.evaluate(CALL_LOAD, [None, seconds, None])
            rows["baseline"] = host_row(page, main_thread.stop(fresh, "/plain.html"), 0.0)
            ctx.close()

            peer_ctx = guarded_context(fresh, outside)
            peer = open_tab(peer_ctx, f"{base}/demo/follow.html?room={room}&name=peer#/home")
            ctx = guarded_context(fresh, outside)
            ctx.add_init_script(main_thread.LONGTASKS)
            page = ctx.new_page()
            main_thread.start(fresh, page)
            page.goto(f"{site.url}/host.html")
            page.wait_for_function("() => window.Kibitz && Kibitz.auto", timeout=10_000)
            page.evaluate("() => Kibitz.auto.ready")
            page.evaluate("() => Kibitz.auto.join()")
            page.wait_for_function("() => Kibitz.auto.getParticipants().some((p) => !p.isSelf && p.linkUp)",
                                   timeout=60_000)
            traced = main_thread.stop(fresh, "/host.html")
            rows["boot"] = host_row(page, traced, 0.0)
            rows["boot"]["engine_in"] = page.evaluate("() => Kibitz.timings.engineIn")
            peer_id = peer.evaluate("() => window.call.getState().self")
            host_id = page.evaluate("() => Kibitz.auto.getState().self")
            peer.evaluate("() => { window.__got = 0; window.call.onMessage(() => { window.__got += 1; }); }")
            page.evaluate("() => { window.__got = 0; Kibitz.auto.onMessage(() => { window.__got += 1; }); }")
            since = page.evaluate("() => performance.now()")
            main_thread.start(fresh, page)
            peer.evaluate(f"(args) => {{ ({CALL_LOAD})(args); }}", [host_id, seconds, "call"])
            page.evaluate(CALL_LOAD, [peer_id, seconds, "auto"])
            page.wait_for_timeout(1500)
            rows["call"] = host_row(page, main_thread.stop(fresh, pids=traced.pids), since)
            rows["call"]["received"] = page.evaluate("() => window.__got")
            rows["call"]["peer_received"] = peer.evaluate("() => window.__got")
            rows["call"]["expected"] = int(seconds * 50)
            peer_ctx.close()
            ctx.close()
    finally:
        fresh.close()
    rows["seconds"] = seconds
    return rows


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
    host = boot.get("host")
    if host:
        lines += ["", *render_host(host)]
    py, js = msg["py"], msg["js"]
    ratio = py["median_ms"] / js["median_ms"] if js["median_ms"] else float("inf")
    ratio_trimmed = py["trimmed_ms"] / js["trimmed_ms"] if js["trimmed_ms"] else float("inf")
    bulk_ratio = py["mb_s"] / js["mb_s"] if js["mb_s"] else 0.0
    lines += [
        "",
        f"Messaging between two tabs (separate contexts; `/demo/follow.html` with headless mounts, the page "
        "drawing its own tiles) in a browser of its own, launched after the boot "
        f"runs so nothing of theirs shares its processes: {msg['n']} sequential ping/pongs per path "
        f"(JSON objects), engine and plain JS alternating in {msg.get('blocks', 1)} blocks each so both "
        f"see the same load, and one-way bulk of {msg['bulk']} JSON messages acknowledged at the end "
        f"(median of {msg.get('bulk_runs', 1)} alternating runs per path). Engine = `sendTo` → the "
        "engine's Worker (`Session` → content → mesh framing, acks, resend buffer) → the RTCDataChannel "
        "it holds → the other tab's engine → `onMessage` on its page; plain JS = `JSON.stringify` + "
        "`RTCDataChannel.send` between the same two tabs' page threads on a separate peer connection. "
        "`performance.now()` is coarsened to 0.1 ms in these (non-isolated) pages, so a median snaps "
        "to a 0.1 ms step; the 10 % trimmed mean of the same samples does not.",
        "",
        "| path | RTT median | RTT trimmed mean | RTT p95 | throughput |",
        "|---|---|---|---|---|",
        f"| Python engine (in its Worker) | {py['median_ms']:.2f} ms | {py['trimmed_ms']:.2f} ms "
        f"| {py['p95_ms']:.2f} ms | {py['mb_s']:.1f} MB/s |",
        f"| plain JS RTCDataChannel | {js['median_ms']:.2f} ms | {js['trimmed_ms']:.2f} ms "
        f"| {js['p95_ms']:.2f} ms | {js['mb_s']:.1f} MB/s |",
    ]
    fan = msg.get("fanout")
    if fan:
        e, j = fan["engine"], fan["js"]
        lines += [
            "",
            f"Sustained fan-out: one tab sends to each of {fan['peers']} others (8 tabs in one room, each "
            f"its own context and engine) at 200 messages/s per peer ({fan['peers'] * 200} messages/s "
            f"out of one tab; 100-character payloads), {fan['seconds']:.0f} s per block, engine and "
            f"plain-JS channels between the same tabs alternating in {fan['blocks']} blocks each. "
            "One-way latency at the receivers: each message carries its sender's clock "
            "(`timeOrigin + now()`, which agree across tabs of one machine). Added = engine − plain JS.",
            "",
            "| path | sent | received | rate per peer | p50 | p99 | max |",
            "|---|---|---|---|---|---|---|",
            f"| Python engine | {e['sent']} | {e['received']} | {e['rate']:.0f}/s | {e['p50_ms']:.2f} ms "
            f"| {e['p99_ms']:.2f} ms | {e['max_ms']:.1f} ms |",
            f"| plain JS RTCDataChannel | {j['sent']} | {j['received']} | {j['rate']:.0f}/s "
            f"| {j['p50_ms']:.2f} ms | {j['p99_ms']:.2f} ms | {j['max_ms']:.1f} ms |",
            f"| **added** | | | | {e['p50_ms'] - j['p50_ms']:.2f} ms "
            f"| **{e['p99_ms'] - j['p99_ms']:.2f} ms** | |",
        ]
    lines += [
        "",
        "Targets (issue 13):",
        "",
    ]
    launch = med(cold, "launcher_ms")
    jc, jw = med(cold, "joined_ms"), med(warm, "joined_ms")

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    if host:
        worst = max(host["boot"]["longest_ms"], host["call"]["longest_ms"])
        worst_cpu = max(host["boot"]["cpu_longest_ms"], host["call"]["cpu_longest_ms"])
        tbt = max(host["boot"]["tbt_ms"], host["call"]["tbt_ms"])
        lines += [
            f"- host page: no widget task ≥ 50 ms: longest {worst} ms wall-clock ({worst_cpu} ms of CPU) → "
            f"{verdict(worst < 50)} (CPU: {verdict(worst_cpu < 50)}).",
            f"- host page: Total Blocking Time ≤ 50 ms: {host['boot']['tbt_ms']} ms through the boot + join, "
            f"{host['call']['tbt_ms']} ms through the call → {verdict(tbt <= 50)}.",
        ]
    lines += [
        f"- launcher ≤ 100 ms: {launch:.1f} ms cold → {verdict(launch <= TARGETS['launcher_ms'])}.",
        f"- joined ≤ 2.0 s cold: {jc / 1000:.2f} s → {verdict(jc <= TARGETS['joined_cold_ms'])}.",
        f"- joined ≤ 1.0 s warm: {jw / 1000:.2f} s → {verdict(jw <= TARGETS['joined_warm_ms'])}.",
    ]
    if fan:
        added = fan["engine"]["p99_ms"] - fan["js"]["p99_ms"]
        complete = fan["engine"]["received"] == fan["engine"]["sent"]
        lines.append(f"- 200 messages/s to each of 7 peers, p99 added latency ≤ 5 ms over plain JS: "
                     f"{added:.2f} ms{'' if complete else ' (not every message arrived)'} → "
                     f"{verdict(added <= TARGETS['fanout_p99_added_ms'] and complete)}.")
    lines += [
        f"- bulk throughput ≥ 0.7× plain JS: {bulk_ratio:.2f}× → "
        f"{verdict(bulk_ratio >= TARGETS['bulk_ratio'])}.",
        f"- loopback round trip (reported, no target): {ratio:.2f}× plain JS (medians), {ratio_trimmed:.2f}× "
        "(trimmed means).",
        "",
    ]
    return "\n".join(lines)


def render_host(host: dict[str, Any]) -> list[str]:
    label = {"baseline": "the same page without the widget (its 50/s timer running)",
             "boot": "with the widget: cold boot + join",
             "call": f"with the widget: a call, 50 messages/s each way for {host['seconds']:.0f} s"}
    out = [
        "The host page's main thread: a third-party page (its own origin, hostile CSS) carrying the "
        "one-liner, against the same page without it. Long tasks as the page's own `PerformanceObserver` "
        "sees them (wall clock: on this shared box that includes time the OS gave other processes), and "
        "every main-thread task's CPU time from Chromium's trace. TBT = Σ (task − 50 ms) over tasks of "
        "50 ms or more. The call row also checks every message arrived both ways.",
        "",
        "| page | long tasks (≥ 50 ms) | longest | TBT | longest, CPU | TBT, CPU | main-thread tasks |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in ("baseline", "boot", "call"):
        r = host[key]
        out.append(f"| {label[key]} | {r['long']} | {r['longest_ms']} ms | **{r['tbt_ms']} ms** | "
                   f"{r['cpu_longest_ms']} ms | {r['cpu_tbt_ms']} ms | {r['tasks']} |")
    call = host["call"]
    out += ["", f"Messages in the call row: the host page received {call['received']} and the peer "
            f"{call['peer_received']} of {call['expected']} each way. The engine ran in its "
            f"{host['boot'].get('engine_in', '?')}."]
    return out


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
            boot["host"] = measure_host_page(browser, srv.http, f"room-bench-host-{stamp}",
                                             8.0 if args.quick else 30.0, outside)
            msg = measure_messaging(browser, srv.http, f"room-bench-msg-{stamp}", 100 if args.quick else 300,
                                    outside)
            msg["fanout"] = measure_fanout(browser, srv.http, f"room-bench-fan-{stamp}",
                                           2.0 if args.quick else 5.0, outside)
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
