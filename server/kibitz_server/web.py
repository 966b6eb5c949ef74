"""The HTTP side (aiohttp): /api/signal, /api/turn, /api/room-grant, /healthz, /metrics,
/openapi.json, dist/ files.

/api/* is CORS-open (``*``) because the widget is embedded on other origins; the preflight for
``Authorization``/``X-Kibitz-Grant`` (sent to /api/turn and /api/room-grant by licensed embedders)
is answered too. Credentials are bearer headers, never cookies, so ``*`` leaks nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from kibitz.ids import normalize_room

from .broker import Broker
from .config import ServerConfig
from .email_otp import EmailError, EmailSignIn
from .gate import GrantError, LicenceGate
from .openapi import openapi_spec
from .signal import BrokerDirectory
from .static import StaticFiles
from .turn import NoTurn, TurnProvider

log = logging.getLogger("kibitz.server.web")

WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")
CORS = {"Access-Control-Allow-Origin": "*"}
PREFLIGHT = {
    **CORS,
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, X-Kibitz-Grant, Content-Type",
    "Access-Control-Max-Age": "86400",
}

BROKER_KEY = web.AppKey("broker", Broker)
DIRECTORY_KEY = web.AppKey("directory", BrokerDirectory)
TURN_KEY = web.AppKey("turn", TurnProvider)
EMAIL_KEY = web.AppKey("email", EmailSignIn)
NO_EMAIL = "email sign-in is not configured on this server (kibitz serve --smtp HOST:PORT)"


def _json(data: object, *, cache: str = "no-store", status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(data),
        headers={**CORS, "Content-Type": "application/json", "Cache-Control": cache},
    )


def local_broker_url(config: ServerConfig, broker_port: int, request_host: str | None) -> str:
    """How a client that reached us as ``request_host`` reaches our broker."""
    if config.public_broker_url:
        return config.public_broker_url
    host = config.host
    if host in WILDCARD_HOSTS:
        host = request_host or "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"ws://{host}:{broker_port}{config.path}"


def make_app(
    config: ServerConfig,
    broker: Broker,
    directory: BrokerDirectory,
    turn: TurnProvider | None = None,
    email: EmailSignIn | None = None,
) -> web.Application:
    turn_provider: TurnProvider = turn or NoTurn()
    static = StaticFiles(config.dist_dir, config.compress_cache_bytes)
    spec = orjson.dumps(openapi_spec())

    @web.middleware
    async def errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Every error answer is CORS-readable, so embedders see the reason."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            exc.headers.setdefault("Access-Control-Allow-Origin", "*")
            raise

    async def signal(request: web.Request) -> web.Response:
        room = request.query.get("room", "")
        if len(room) > 512 or len(request.query.get("failed", "")) > 128:
            return web.Response(
                status=400,
                body=orjson.dumps({"error": "room is longer than 512 characters (or failed than 128)"}),
                headers={**CORS, "Content-Type": "application/json"},
            )
        if broker.cluster is not None:
            failed = request.query.get("failed") or None
            return _json(await broker.cluster.choose(normalize_room(room) or room, config.key, failed))
        local = None
        if config.local_broker_in_signal:
            local = local_broker_url(config, broker.port, request.url.host)
        return _json(directory.choose(room, local))

    async def turn_route(request: web.Request) -> web.Response:
        room = request.query.get("room") or None
        return _json(await turn_provider.ice_servers(request.headers, room))

    async def room_grant(request: web.Request) -> web.Response:
        if not isinstance(turn_provider, LicenceGate):
            return _json({"error": "this server issues no room grants (its relay is not gated)"}, status=404)
        try:
            raw = await request.read()
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        except web.HTTPRequestEntityTooLarge:
            return _json({"error": "the body is too large"}, status=413)
        try:
            return _json(await turn_provider.room_grant(request.headers.get("Authorization"), body))
        except GrantError as exc:
            return _json({"error": exc.reason}, status=exc.status)
        except Exception:
            log.exception("room grant failed")
            return _json({"error": "the licence check is unavailable right now"}, status=503)

    async def read_json(request: web.Request) -> object:
        try:
            raw = await request.read()
            return orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return None

    def email_error(exc: EmailError) -> web.Response:
        resp = _json({"error": exc.reason}, status=exc.status)
        if exc.retry_after is not None:
            resp.headers["Retry-After"] = str(max(1, int(exc.retry_after + 0.999)))
        return resp

    async def email_step(
        request: web.Request, step: Callable[[EmailSignIn, object], Awaitable[dict[str, Any]]]
    ) -> web.Response:
        """One step of email sign-in on the request's JSON body, its refusals as HTTP errors."""
        if email is None:
            return _json({"error": NO_EMAIL}, status=404)
        try:
            return _json(await step(email, await read_json(request)))
        except web.HTTPRequestEntityTooLarge:
            return _json({"error": "the body is too large"}, status=413)
        except EmailError as exc:
            return email_error(exc)

    async def email_start(request: web.Request) -> web.Response:
        return await email_step(request, lambda sign_in, body: sign_in.start(body, request.remote or ""))

    async def email_verify(request: web.Request) -> web.Response:
        origin = f"{request.scheme}://{request.host}"
        return await email_step(request, lambda sign_in, body: sign_in.verify(body, origin))

    async def email_jwks(request: web.Request) -> web.Response:
        if email is None:
            return _json({"error": NO_EMAIL}, status=404)
        return _json(email.jwks(), cache="public, max-age=300")

    async def post_only(request: web.Request) -> web.Response:
        raise web.HTTPMethodNotAllowed(request.method, ["POST", "OPTIONS"], headers=CORS)

    async def preflight(request: web.Request) -> web.Response:
        return web.Response(status=204, headers=PREFLIGHT)

    async def healthz(request: web.Request) -> web.Response:
        cluster = broker.cluster
        if cluster is None:
            return _json({"ok": True, "peers": broker.metrics.connected})
        peers = broker.metrics.connected
        return _json({"ok": cluster.up, "peers": peers, "node": cluster.node, "nodes": len(cluster.view)})

    async def metrics(request: web.Request) -> web.Response:
        text = broker.metrics.render()
        if isinstance(turn_provider, LicenceGate):
            text += turn_provider.render_metrics()
        if broker.cluster is not None:
            text += broker.cluster.render()
        return web.Response(
            text=text,
            headers={"Cache-Control": "no-store"},
            content_type="text/plain",
            charset="utf-8",
        )

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=spec, headers={**CORS, "Content-Type": "application/json"})

    app = web.Application(middlewares=[errors], client_max_size=64 * 1024)
    app[BROKER_KEY] = broker
    app[DIRECTORY_KEY] = directory
    app[TURN_KEY] = turn_provider
    if email is not None:
        app[EMAIL_KEY] = email
    app.router.add_get("/api/signal", signal)
    app.router.add_get("/api/turn", turn_route)
    app.router.add_post("/api/room-grant", room_grant)
    app.router.add_get("/api/room-grant", post_only)  # not the static catch-all's 404
    app.router.add_post("/api/email/start", email_start)
    app.router.add_post("/api/email/verify", email_verify)
    app.router.add_get("/api/email/start", post_only)
    app.router.add_get("/api/email/verify", post_only)
    app.router.add_get("/api/email/jwks", email_jwks)
    app.router.add_route("OPTIONS", "/api/{tail:.*}", preflight)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/{tail:.*}", static.handle)
    return app
