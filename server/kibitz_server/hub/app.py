"""``kibitz hub``: signaling for rooms on a LAN with no internet, reached by pages over WebRTC.

One process: the WebRTC endpoint (UDP, :mod:`.endpoint`) with the router (:mod:`.router`), and a
small HTTP server on the LAN for the hub's page (the link and its QR code), the bundle (``dist/``:
widget.js, runtime, snapshot, wheels) for pages served from the hub, and ``/hub/metrics``.
It prints ``KIBITZ_GALAXY=<value>`` on a line of its own and the link as a QR code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import ipaddress
import logging
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web
from aiortc.rtcdtlstransport import RTCCertificate

from kibitz.galaxy import Galaxy, format_galaxy

from ..config import default_state_dir
from ..static import StaticFiles
from .endpoint import EndpointLimits, HubEndpoint
from .identity import HubIdentity, load_or_create, save
from .router import Router, RouterLimits

log = logging.getLogger("kibitz.hub")

DEFAULT_UDP_PORT = 4711
DEFAULT_HTTP_PORT = 4780
REPO_DIST = Path(__file__).resolve().parents[3] / "dist"


@dataclass
class HubConfig:
    state_dir: Path = field(default_factory=lambda: default_state_dir() / "hub")
    host: str = "0.0.0.0"
    udp_port: int | None = None
    """None: the saved port, else 4711 (any free port if that is taken on first start)."""
    http_port: int | None = None
    addresses: list[str] = field(default_factory=list)
    """Addresses put in the link; empty: every non-loopback IPv4 address of this machine."""
    http: bool = True
    dist_dir: Path = REPO_DIST
    site: str | None = None
    """The page the link opens (an embedding site's https page); default: the hub's own demo."""
    key: str = "peerjs"
    new_identity: bool = False
    router_limits: RouterLimits | None = None
    endpoint_limits: EndpointLimits | None = None


@dataclass
class RunningHub:
    config: HubConfig
    identity: HubIdentity
    router: Router
    endpoint: HubEndpoint
    galaxy: Galaxy
    udp_port: int
    http_port: int
    runner: web.AppRunner | None
    created: bool

    @property
    def value(self) -> str:
        return format_galaxy(self.galaxy)

    @property
    def link(self) -> str:
        return galaxy_link(self.config.site or self.own_page, self.value)

    @property
    def own_page(self) -> str:
        host = self.galaxy.addresses[0][0]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.http_port}/demo/"

    async def close(self) -> None:
        await self.endpoint.close()
        if self.runner is not None:
            await self.runner.cleanup()


def galaxy_link(page: str, value: str) -> str:
    """``page`` with ``?galaxy=<value>`` (any earlier galaxy parameter replaced, fragment kept)."""
    parts = urlsplit(page)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "galaxy"]
    query.append(("galaxy", value))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query, safe="|~:"), parts.fragment))


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses a LAN peer could reach (no loopback, no link-local)."""
    import aioice.ice

    out: list[str] = []
    for addr in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False):
        ip = ipaddress.ip_address(addr)
        if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
            out.append(str(ip))
    return out


def _certificate(ident: HubIdentity) -> RTCCertificate:
    return RTCCertificate(key=ident.key, cert=ident.cert)


async def _bind_udp(endpoint: HubEndpoint, host: str, port: int, fallback: bool) -> int:
    try:
        return await endpoint.start(host, port)
    except OSError:
        if not fallback:
            raise
        return await endpoint.start(host, 0)


async def start_hub(config: HubConfig) -> RunningHub:
    """Start the endpoint and the HTTP server on the running loop."""
    ident, created = load_or_create(config.state_dir, udp_port=None, http_port=None,
                                    fresh=config.new_identity)
    saved_udp = ident.udp_port if not created else 0
    saved_http = ident.http_port if not created else 0
    udp_want = config.udp_port if config.udp_port is not None else (saved_udp or DEFAULT_UDP_PORT)
    http_want = config.http_port if config.http_port is not None else (saved_http or DEFAULT_HTTP_PORT)
    router = Router(config.router_limits or RouterLimits(key=config.key))
    endpoint = HubEndpoint(_certificate(ident), ident.ufrag, ident.pwd, router, limits=config.endpoint_limits)
    # A saved or asked-for port must be had (the link names it); only the first default may move.
    udp_port = await _bind_udp(endpoint, config.host, udp_want,
                               fallback=config.udp_port is None and not saved_udp)
    runner: web.AppRunner | None = None
    http_port = 0
    addresses = config.addresses or lan_addresses() or ["127.0.0.1"]
    galaxy = Galaxy(ident.ufrag, ident.pwd, ident.fingerprint, tuple((a, udp_port) for a in addresses))
    running = RunningHub(config, ident, router, endpoint, galaxy, udp_port, 0, None, created)
    try:
        if config.http:
            runner = web.AppRunner(_make_app(running), access_log=None, handle_signals=False,
                                   shutdown_timeout=1.0)
            await runner.setup()
            http_port = await _bind_http(runner, config.host, http_want,
                                         fallback=config.http_port is None and not saved_http)
    except BaseException:
        await endpoint.close()
        if runner is not None:
            await runner.cleanup()
        raise
    running.runner = runner
    running.http_port = http_port
    if (udp_port, http_port) != (ident.udp_port, ident.http_port):
        ident = HubIdentity(ident.key_pem, ident.cert_pem, ident.ufrag, ident.pwd, udp_port,
                            http_port or ident.http_port)
        save(config.state_dir, ident)
        running.identity = ident
    return running


async def _bind_http(runner: web.AppRunner, host: str, port: int, fallback: bool) -> int:
    for attempt in (port, 0):
        site = web.TCPSite(runner, host, attempt)
        try:
            await site.start()
        except OSError:
            if not fallback or attempt == 0:
                raise
            continue
        server = site._server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------------- HTTP


def qr_svg(text: str) -> str:
    import segno

    return str(segno.make(text, error="m").svg_inline(scale=5, dark="#111", light="#fff"))


def qr_terminal(text: str) -> str:
    import io

    import segno

    out = io.StringIO()
    segno.make(text, error="m").terminal(out=out, compact=True, border=2)
    return out.getvalue()


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Kibitz hub</title>
<style>body{{font:16px/1.45 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}}
code{{word-break:break-all;background:#f3f3f3;padding:.15rem .3rem}}</style></head><body>
<h1>Kibitz hub</h1>
<p>Calls on this network need no internet: open the link below once on each device (scan the code).
The page remembers this hub; <code>?galaxy=off</code> forgets it.</p>
<p><a id="link" href="{link_attr}">{link_text}</a></p>
<figure>{svg}</figure>
{own}
<p>The link's value, for <code>?galaxy=</code> on any page that embeds Kibitz:</p>
<p><code id="galaxy">{value}</code></p>
<p>The hub routes only the set-up of calls; audio, video, chat and data go straight between the
devices, encrypted end to end.</p>
</body></html>
"""


def _make_app(hub: RunningHub) -> web.Application:
    app = web.Application()
    static = StaticFiles(hub.config.dist_dir, 64 << 20) if hub.config.dist_dir.is_dir() else None

    async def page(request: web.Request) -> web.Response:
        link = hub.link
        own = ""
        if hub.config.site:  # the hub's own demo too, for devices without the site
            mine = galaxy_link(hub.own_page, hub.value)
            own = (f'<p>No copy of the site on this device? The hub serves a demo page (plain http: '
                   f'calls, chat and data, no camera): <a id="own" href="{html.escape(mine, quote=True)}">'
                   f"{html.escape(mine)}</a></p>")
        body = PAGE.format(link_attr=html.escape(link, quote=True), link_text=html.escape(link),
                           svg=qr_svg(link), value=html.escape(hub.value), own=own)
        return web.Response(text=body, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def galaxy(request: web.Request) -> web.Response:
        return web.json_response({"galaxy": hub.value, "link": hub.link,
                                  "own": galaxy_link(hub.own_page, hub.value)},
                                 headers={"Cache-Control": "no-store", "Access-Control-Allow-Origin": "*"})

    async def metrics(request: web.Request) -> web.Response:
        return web.json_response({"router": hub.router.render_metrics(),
                                  "endpoint": hub.endpoint.render_metrics()},
                                 headers={"Cache-Control": "no-store"})

    async def files(request: web.Request) -> web.StreamResponse:
        if static is None:
            raise web.HTTPNotFound(text="this hub serves no bundle (dist/ is missing)")
        return await static.handle(request)

    app.router.add_get("/", page)
    app.router.add_get("/galaxy.json", galaxy)
    app.router.add_get("/hub/metrics", metrics)
    app.router.add_get("/{tail:.*}", files)
    return app


# ------------------------------------------------------------------------------------ command


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hub = sub.add_parser("hub", help="run a LAN hub: rooms on this network with no internet (?galaxy= links)")
    hub.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0: every interface)")
    hub.add_argument("--udp-port", type=int, default=None,
                     help=f"WebRTC port (default: the saved one, first {DEFAULT_UDP_PORT})")
    hub.add_argument("--http-port", type=int, default=None,
                     help=f"page and bundle port (default: the saved one, first {DEFAULT_HTTP_PORT})")
    hub.add_argument("--address", action="append", default=None,
                     help="an address devices reach this hub at, put in the link (repeatable; "
                          "default: every LAN IPv4 address of this machine)")
    hub.add_argument("--site", default=None,
                     help="the page the link and QR code open, e.g. https://example.org/call "
                          "(default: the hub's own demo page)")
    hub.add_argument("--state-dir", default=None,
                     help="where the hub keeps its identity (default $KIBITZ_STATE_DIR/hub or "
                          "~/.local/state/kibitz/hub)")
    hub.add_argument("--dist", default=None, help="bundle directory to serve (default: the repo's dist/)")
    hub.add_argument("--no-http", action="store_true", help="serve no page or bundle, only the hub")
    hub.add_argument("--new-identity", action="store_true",
                     help="make a new certificate and credentials (old links stop working)")


def config_from_args(args: argparse.Namespace) -> HubConfig:
    config = HubConfig(host=args.host, udp_port=args.udp_port, http_port=args.http_port,
                       addresses=list(args.address or []), http=not args.no_http, site=args.site,
                       new_identity=args.new_identity)
    if args.state_dir:
        config.state_dir = Path(args.state_dir)
    if args.dist:
        config.dist_dir = Path(args.dist)
    if config.site is not None and urlsplit(config.site).scheme not in ("http", "https"):
        raise ValueError(f"--site must be an http(s) URL, got {config.site!r}")
    return config


async def _run(config: HubConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        hub = await start_hub(config)
    except OSError as exc:
        print(f"kibitz hub: cannot listen: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"kibitz hub: bad state in {config.state_dir}: {exc}", file=sys.stderr)
        return 2
    out = sys.stdout
    state = "new identity" if hub.created else "identity kept"
    print(f"Kibitz hub ({state}, {config.state_dir}): WebRTC on udp {hub.udp_port}"
          + (f", page on http {hub.http_port}" if hub.http_port else ""), file=out)
    print(f"KIBITZ_GALAXY={hub.value}", file=out)
    print(f"Open on each device: {hub.link}", file=out)
    print(qr_terminal(hub.link), file=out)
    print(f"KIBITZ_HUB_READY udp={hub.udp_port} http={hub.http_port}", file=out, flush=True)
    try:
        await stop.wait()
    finally:
        await hub.close()
    print("kibitz hub: stopped", flush=True)
    return 0


def hub_main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"kibitz hub: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_run(config))
