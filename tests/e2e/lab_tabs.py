"""Chromium tabs on the fault lab's network (tests/netlab.py): one browser per lab host, driven
through the page controller (``window.call``) only.

Each tab gets a small recorder (``window.__rl``): it streams numbered broadcasts and directed
messages (``{"rl":1,"k":"b"|"d","s":n}``, one counter per destination), records every numbered
message it receives per sender and kind, and can send and check one big broadcast (length and
SHA-256, arrival time). The checks live in Python (:func:`check_stream`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from browser_guard import guarded_context
from chromium_flags import CHROMIUM_ARGS as BASE_ARGS
from chromium_flags import LOOPBACK_ICE
from playwright.sync_api import Browser, BrowserContext, CDPSession, Page, Playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from netlab import LAB_NET, SERVER_NET, Host, LabServer, NetLab

CHROMIUM_ARGS = [
    *(a for a in BASE_ARGS if a != LOOPBACK_ICE),  # lab hosts reach each other over the lab's veths
    # Background tabs must keep their timers: several tabs share one headless browser.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    # Host candidates as raw lab addresses: the lab has no multicast routing for mDNS names.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]

LAB_ORIGIN = f"http://{SERVER_NET}.2:8787"
"""Where :class:`netlab.LabServer` serves by default."""

RECORDER = r"""() => {
  if (window.__rl) return;
  // recv[epoch][from][kind] = [seq, ...]; sent[epoch] = {b, d: {peer: n}, refused, errors}
  const rl = { recv: {}, sent: {}, big: [], timer: null, samples: [], sampler: null };
  const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
  window.call.onMessage((data, from) => {
    if (!data || data.rl !== 1) return;
    if (data.k === "big") {
      const at = Date.now();
      const entry = { from, s: data.s, at, ok: null };
      rl.big.push(entry);
      crypto.subtle.digest("SHA-256", new TextEncoder().encode(data.body)).then((d) => {
        entry.ok = typeof data.body === "string" && data.body.length === data.len && hex(d) === data.sha;
      });
      return;
    }
    const bySender = ((rl.recv[data.e] ||= {})[from] ||= {});
    (bySender[data.k] ||= []).push(data.s);
  });
  rl.tick = (e, to) => {
    const sent = rl.sent[e];
    try { window.call.broadcast({ rl: 1, e, k: "b", s: sent.b + 1 }); sent.b += 1; }
    catch (err) { sent.refused += 1; if (sent.errors.length < 20) sent.errors.push(String(err)); }
    for (const peer of to) {
      const n = (sent.d[peer] || 0) + 1;
      try { window.call.sendTo(peer, { rl: 1, e, k: "d", s: n }); sent.d[peer] = n; }
      catch (err) { sent.refused += 1; if (sent.errors.length < 20) sent.errors.push(String(err)); }
    }
  };
  rl.start = (e, rate, to) => {
    rl.stop();
    rl.sent[e] = { b: 0, d: {}, refused: 0, errors: [] };
    rl.timer = setInterval(() => rl.tick(e, to), 1000 / rate);
  };
  rl.stop = () => { if (rl.timer) clearInterval(rl.timer); rl.timer = null; };
  // Presence as this page sees it, every 100 ms: [ms, connected, participants, links up].
  rl.sample = () => {
    const s = window.call.getState(), ps = window.call.getParticipants();
    rl.samples.push([Date.now(), s.connected, ps.length, ps.filter((p) => p.linkUp).length]);
    if (rl.samples.length > 20000) rl.samples.splice(0, 10000);
  };
  rl.sampler = setInterval(rl.sample, 100);
  rl.sendBig = async (s, len) => {
    const abc = "abcdefghijklmnopqrstuvwxyz0123456789";
    const parts = [];
    for (let i = 0; i < len; i += 4096) {
      let chunk = "";
      for (let j = 0; j < Math.min(4096, len - i); j++) chunk += abc[(Math.random() * 36) | 0];
      parts.push(chunk);
    }
    const body = parts.join("");
    const sha = hex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(body)));
    const t0 = Date.now();
    window.call.broadcast({ rl: 1, k: "big", s, len, sha, body });
    return t0;
  };
  window.__rl = rl;
}"""


@dataclass
class LabTab:
    """One headless mount of the widget in its own browser context (a separate user)."""

    name: str
    ctx: BrowserContext
    page: Page
    host: Host
    errors: list[str] = field(default_factory=list)
    id: str = ""

    def js(self, code: str, arg: Any = None) -> Any:
        return self.page.evaluate(code, arg)

    def state(self) -> dict[str, Any]:
        return dict(self.js("() => window.call.getState()"))

    def participants(self) -> list[str]:
        return list(self.js("() => window.call.getParticipants().map((p) => p.id)"))

    def links_up(self) -> dict[str, bool]:
        return dict(self.js(
            "() => Object.fromEntries(window.call.getParticipants().map((p) => [p.id, p.linkUp]))"
        ))

    def received(self, epoch: int) -> dict[str, dict[str, list[int]]]:
        return dict(self.js("(e) => __rl.recv[e] || {}", epoch))

    def sent(self, epoch: int) -> dict[str, Any]:
        return dict(self.js("(e) => __rl.sent[e]", epoch))

    def big(self) -> list[dict[str, Any]]:
        return list(self.js("() => __rl.big"))

    def samples(self, since_ms: float = 0) -> list[list[Any]]:
        """Presence samples (every 100 ms): ``[epoch ms, connected, participants, links up]``."""
        return list(self.js("(t) => __rl.samples.filter((s) => s[0] >= t)", since_ms))

    def start_stream(self, epoch: int, rate: float, to: Iterable[str]) -> None:
        self.js("([e, rate, to]) => __rl.start(e, rate, to)", [epoch, rate, list(to)])

    def stop_stream(self) -> None:
        self.js("() => __rl.stop()")

    def cdp(self) -> CDPSession:
        return self.ctx.new_cdp_session(self.page)

    def pause_engine(self) -> Callable[[], None]:
        """Pause this tab's engine Worker (all its JavaScript, Python included) and return resume().

        A page's paused debugger does not stop the dedicated Worker the engine runs in, and
        Playwright opens CDP sessions on pages only: the browser's session attaches to the Worker
        target of this tab's context instead."""
        browser = self.ctx.browser
        assert browser is not None
        cdp = browser.new_browser_cdp_session()
        targets = cdp.send("Target.getTargets")["targetInfos"]
        pages = [t for t in targets if t["type"] == "page" and t["url"] == self.page.url]
        contexts = {t.get("browserContextId") for t in pages}
        workers = [t for t in targets if t["type"] == "worker" and t["title"] == "kibitz-engine"
                   and t.get("browserContextId") in contexts]
        assert len(workers) == 1, f"{self.name}: engine workers {workers} (pages {pages})"
        attach = {"targetId": workers[0]["targetId"], "flatten": False}
        sid = cdp.send("Target.attachToTarget", attach)["sessionId"]
        ids = itertools.count(1)

        def send(method: str) -> None:
            message = json.dumps({"id": next(ids), "method": method})
            cdp.send("Target.sendMessageToTarget", {"sessionId": sid, "message": message})

        send("Debugger.enable")
        send("Debugger.pause")

        def resume() -> None:
            send("Debugger.resume")
            send("Debugger.disable")
            with contextlib.suppress(Exception):
                cdp.send("Target.detachFromTarget", {"sessionId": sid})
            cdp.detach()

        return resume


class LabBrowser:
    """Chromium running inside one lab host's namespace."""

    def __init__(
        self, pw: Playwright, lab: NetLab, host: Host, outside: list[str], origin: str = LAB_ORIGIN
    ) -> None:
        self.host = host
        self.outside = outside
        # A real deployment serves over https; here the lab's plain-http origin gets the same
        # secure context (crypto.subtle for the recorder's checksums).
        secure = f"--unsafely-treat-insecure-origin-as-secure={origin}"
        self.browser: Browser = pw.chromium.launch(
            executable_path=str(lab.chromium_wrapper(host)), headless=True, args=[*CHROMIUM_ARGS, secure]
        )
        self.tabs: list[LabTab] = []

    def open(self, server: LabServer, room: str, name: str) -> LabTab:
        ctx = guarded_context(self.browser, self.outside, also_local=LAB_NET)
        page = ctx.new_page()
        tab = LabTab(name, ctx, page, self.host)
        page.on("pageerror", lambda exc, errors=tab.errors: errors.append(str(exc)))
        page.goto(f"{server.http}/demo/follow.html?room={room}&name={name}&open=0#/home")
        self.tabs.append(tab)
        return tab

    def close(self) -> None:
        for tab in self.tabs:
            with contextlib.suppress(Exception):
                tab.ctx.close()
        with contextlib.suppress(Exception):
            self.browser.close()


def ready(tabs: Iterable[LabTab], timeout: float = 60.0) -> None:
    """Wait until each tab's engine is up and joined, then install the recorder."""
    for tab in tabs:
        tab.page.wait_for_function("() => window.call", timeout=timeout * 1000)
        tab.js("() => window.call.ready")
        tab.js("() => window.call.join()")
        tab.js(RECORDER)
        tab.id = str(tab.js("() => window.call.getState().self"))


def converged(tabs: Iterable[LabTab], agents: Mapping[str, Any] = {}, *, ids: set[str]) -> bool:
    """Every tab connected, seeing exactly ``ids`` with every link up."""
    for tab in tabs:
        state = tab.state()
        if not state["connected"] or set(tab.participants()) != ids:
            return False
        if not all(tab.links_up().values()):
            return False
    for report in agents.values():
        if not report["state"]["connected"] or set(report["participants"]) != ids:
            return False
        if not all(report["linkUp"].values()):
            return False
    return True


def pump(tabs: list[LabTab], seconds: float) -> None:
    """Let time pass while Playwright keeps dispatching (never a bare sleep in the main thread)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if tabs:
            tabs[0].page.wait_for_timeout(min(200, max(1, (end - time.monotonic()) * 1000)))
        else:
            time.sleep(0.2)


def check_stream(
    received: Mapping[str, Mapping[str, list[int]]], sent_by: Mapping[str, Mapping[str, Any]], me: str
) -> list[str]:
    """Problems with what ``me`` received: every sender's broadcasts 1..N and directed messages
    to ``me`` 1..M, each exactly once and in order. Empty when all is well."""
    problems: list[str] = []
    for sender, sent in sent_by.items():
        if sender == me:
            continue
        got = received.get(sender, {})
        want = {"b": int(sent["b"]), "d": int(sent["d"].get(me, 0))}
        for kind, n in want.items():
            seqs = list(got.get(kind, []))
            if seqs != list(range(1, n + 1)):
                dup = len(seqs) - len(set(seqs))
                missing = sorted(set(range(1, n + 1)) - set(seqs))
                order = seqs == sorted(seqs)
                problems.append(
                    f"{me} from {sender} [{kind}]: {len(seqs)} of {n}, {dup} duplicates, "
                    f"{len(missing)} missing (first {missing[:5]}), in order: {order}"
                )
    return problems
