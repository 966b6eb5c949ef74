"""Keep the browser on loopback: every request or WebSocket that leaves 127.0.0.1 is aborted and recorded,
the page's own and its Workers' alike."""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import unquote, urlsplit

from playwright.sync_api import Browser, BrowserContext, Route

LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


GUARD_HOST = "kibitz-guard.invalid"
"""Workers report a blocked WebSocket by fetching ``http://GUARD_HOST/ws?<url>``: ``route`` sees
every fetch a worker makes (so it is recorded and aborted like any other request off loopback)."""

# route() does not see WebSockets, Playwright's route_web_socket reaches only the page's own (and
# its handler hangs under 1.58's sync API), and the engine opens its broker socket in a Worker. So
# the page and every Worker it starts (and every Worker those start) first run this guard: it
# wraps `WebSocket` so a socket off loopback is refused (a SecurityError) and reported, and
# `Worker` so the child runs the guard first too.
WORKER_GUARD = """(function kibitzGuard() {
  const LOCAL = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);
  const LAB = ALSO_LOCAL; // [network, prefix length] of an IPv4 lab network, or null
  const v4 = (h) => { const p = h.split("."); return p.length === 4 && p.every((x) => /^\\d+$/.test(x))
    ? p.reduce((a, x) => a * 256 + Number(x), 0) : null; };
  const local = (host) => {
    if (LOCAL.has(host)) return true;
    const ip = v4(host);
    if (!LAB || ip === null) return false;
    const size = 2 ** (32 - LAB[1]);
    return Math.floor(ip / size) === Math.floor(v4(LAB[0]) / size);
  };
  const RealWS = self.WebSocket;
  if (RealWS && !RealWS.__kibitzGuard) {
    const Guarded = function (url, protocols) {
      const host = new URL(String(url), self.location.href).hostname;
      if (!local(host)) {
        fetch("http://GUARD_HOST/ws?" + encodeURIComponent(String(url))).catch(() => {});
        throw new DOMException("off-loopback WebSocket blocked by the test harness", "SecurityError");
      }
      return protocols === undefined ? new RealWS(url) : new RealWS(url, protocols);
    };
    Guarded.prototype = RealWS.prototype;
    for (const k of ["CONNECTING", "OPEN", "CLOSING", "CLOSED"]) Guarded[k] = RealWS[k];
    Guarded.__kibitzGuard = true;
    self.WebSocket = Guarded;
  }
  const RealWorker = self.Worker;
  if (RealWorker && !RealWorker.__kibitzGuard) {
    const prelude = "(" + kibitzGuard + ")();"; // its source already holds LAB's value
    const Wrapped = function (url, options) {
      const target = new URL(String(url), self.location.href).href;
      const guard = URL.createObjectURL(new Blob([prelude], { type: "text/javascript" }));
      const body = options && options.type === "module"
        ? `import ${JSON.stringify(guard)};\nimport ${JSON.stringify(target)};\n`
        : `importScripts(${JSON.stringify(guard)}, ${JSON.stringify(target)});\n`;
      return new RealWorker(URL.createObjectURL(new Blob([body], { type: "text/javascript" })), options);
    };
    Wrapped.prototype = RealWorker.prototype;
    Wrapped.__kibitzGuard = true;
    self.Worker = Wrapped;
  }
})();""".replace("GUARD_HOST", GUARD_HOST)


def guarded_context(
    browser: Browser, outside: list[str], *, also_local: str | None = None, **kwargs: object
) -> BrowserContext:
    """A new context whose requests and WebSockets off loopback are aborted and recorded in ``outside``.

    ``also_local``: an IPv4 network (e.g. ``"198.18.64.0/20"``) that counts as on the machine too:
    the private network a fault test builds from namespaces (tests/netlab.py).
    """
    lab = ipaddress.IPv4Network(also_local) if also_local else None

    def local(host: str) -> bool:
        if host in LOCAL_HOSTS:
            return True
        if lab is None:
            return False
        try:
            return ipaddress.ip_address(host) in lab
        except ValueError:
            return False

    def guard(route: Route) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if route.request.url.startswith(("data:", "blob:")) or local(host):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    def record(route: Route) -> None:
        url = route.request.url
        outside.append(unquote(url.split("?", 1)[1]) if "?" in url else url)
        route.abort()

    ctx = browser.new_context(**kwargs)  # type: ignore[arg-type]
    ctx.route("**/*", guard)
    ctx.route(f"http://{GUARD_HOST}/**", record)  # the later route runs first
    net = None if lab is None else [str(lab.network_address), lab.prefixlen]
    ctx.add_init_script(WORKER_GUARD.replace("ALSO_LOCAL", json.dumps(net)))
    return ctx
