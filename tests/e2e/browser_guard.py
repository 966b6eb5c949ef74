"""Keep the browser on loopback: every request or WebSocket that leaves 127.0.0.1 is aborted and recorded."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from playwright.sync_api import Browser, BrowserContext, Route, WebSocketRoute

LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


def guarded_context(
    browser: Browser, outside: list[str], *, also_local: str | None = None, **kwargs: object
) -> BrowserContext:
    """A new context whose requests and WebSockets off loopback are aborted and recorded in ``outside``.

    ``also_local``: a network (e.g. ``"198.18.64.0/20"``) that counts as on the machine too: the
    private network a fault test builds from namespaces (tests/netlab.py).
    """
    lab = ipaddress.ip_network(also_local) if also_local else None

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

    # route() does not see WebSockets: they get their own guard (loopback ones are left untouched).
    def off_loopback(url: str) -> bool:
        return not local(urlsplit(url).hostname or "")

    def ws_guard(ws: WebSocketRoute) -> None:
        outside.append(ws.url)
        ws.close(code=1008, reason="off-loopback WebSocket blocked by the test harness")

    ctx = browser.new_context(**kwargs)  # type: ignore[arg-type]
    ctx.route("**/*", guard)
    ctx.route_web_socket(off_loopback, ws_guard)
    return ctx
