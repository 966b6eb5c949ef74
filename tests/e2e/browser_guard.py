"""Keep the browser on loopback: every request or WebSocket that leaves 127.0.0.1 is aborted and recorded."""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.sync_api import Browser, BrowserContext, Route, WebSocketRoute

LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


def guarded_context(browser: Browser, outside: list[str], **kwargs: object) -> BrowserContext:
    """A new context whose requests and WebSockets off loopback are aborted and recorded in ``outside``."""

    def guard(route: Route) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if route.request.url.startswith(("data:", "blob:")) or host in LOCAL_HOSTS:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    # route() does not see WebSockets: they get their own guard (loopback ones are left untouched).
    def off_loopback(url: str) -> bool:
        return (urlsplit(url).hostname or "") not in LOCAL_HOSTS

    def ws_guard(ws: WebSocketRoute) -> None:
        outside.append(ws.url)
        ws.close(code=1008, reason="off-loopback WebSocket blocked by the test harness")

    ctx = browser.new_context(**kwargs)  # type: ignore[arg-type]
    ctx.route("**/*", guard)
    ctx.route_web_socket(off_loopback, ws_guard)
    return ctx
