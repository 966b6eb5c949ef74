"""``kibitz serve``: the broker (picows, own port) and the HTTP app (aiohttp) on one uvloop loop.

The broker gets its own port because its hot path must not pay for a general HTTP framework
(see docs/server.md for the measurements); /api/signal tells clients where it is, as the
original's /api/signal did for its separately hosted broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .broker import Broker
from .config import ServerConfig, make_config
from .email_keys import EmailKeys
from .email_otp import EmailSignIn
from .gate import LicenceGate
from .licences import LicenceStore, SqliteLicenceStore
from .mailer import SmtpMailer
from .metrics import Metrics
from .otp import OtpStore, SqliteOtpStore
from .signal import BrokerDirectory
from .turn import TurnProvider, TurnRestProvider
from .web import EMAIL_KEY, TURN_KEY, WILDCARD_HOSTS, local_broker_url, make_app

if TYPE_CHECKING:
    from .cluster import Cluster  # imported only with redis_url: a single node never loads it

log = logging.getLogger("kibitz.server")


@dataclass
class RunningServer:
    """Handles of a started server; ``close()`` stops everything it started."""

    config: ServerConfig
    broker: Broker
    directory: BrokerDirectory
    runner: web.AppRunner
    http_port: int
    broker_port: int
    cluster: Cluster | None = None

    @property
    def http_url(self) -> str:
        host = "127.0.0.1" if self.config.host in WILDCARD_HOSTS else self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.http_port}"

    @property
    def broker_url(self) -> str:
        return local_broker_url(self.config, self.broker_port, "127.0.0.1")

    async def close(self) -> None:
        await self.directory.stop()
        if self.cluster is not None:
            await self.cluster.leave()  # out of the live set first: rooms move before sockets close
        await self.broker.close()
        if self.cluster is not None:
            await self.cluster.close()
        await self.runner.cleanup()
        turn = self.runner.app[TURN_KEY]
        if isinstance(turn, LicenceGate):
            await turn.store.close()
        email = self.runner.app.get(EMAIL_KEY)
        if email is not None:
            await email.store.close()


def licence_store(config: ServerConfig) -> LicenceStore:
    """The store of licences and their usage: SQLite in the state directory, or with ``redis_url``
    the service's Redis (every node meters against the same counts)."""
    if config.redis_url is not None:
        from .licences_redis import RedisLicenceStore

        return RedisLicenceStore(config.redis_url, config.redis_prefix)
    return SqliteLicenceStore(config.licence_db)


def turn_provider(config: ServerConfig, store: LicenceStore | None = None) -> TurnProvider | None:
    """The TURN provider the config asks for (None: /api/turn says no relay): the plain TURN REST
    provider, or with ``turn_gate = "licence"`` that provider behind the licence gate (``store``,
    else the config's SQLite store).

    Raises ``ValueError`` for relay URLs without a secret, or a secret that is too short.
    """
    if not config.turn_urls:
        return None
    secret = config.turn_secret()
    if not secret:
        raise ValueError("turn_urls need a shared secret: turn_secret_file or $KIBITZ_TURN_SECRET")
    relay = TurnRestProvider(config.turn_urls, secret, ttl=config.turn_ttl)
    if config.turn_gate == "open":
        return relay
    return LicenceGate(relay, store or licence_store(config), config.grant_secret(),
                       stun_urls=config.stun_urls)


def email_sign_in(config: ServerConfig, store: OtpStore | None = None) -> EmailSignIn | None:
    """Email sign-in when ``smtp`` is set (else None): the SMTP mailer, the code store
    (:func:`otp_store` unless ``store``), and the signing keys (made now if this is the first start)."""
    if not config.smtp:
        return None
    host, port = SmtpMailer.parse_address(config.smtp)
    sender = config.smtp_from or f"kibitz@{host if '.' in host else 'localhost'}"
    cafile = str(config.smtp_cafile) if config.smtp_cafile else None
    mailer = SmtpMailer(host, port, sender, starttls=config.smtp_starttls, user=config.smtp_user,
                        password=config.smtp_password(), cafile=cafile)
    keys = EmailKeys(config.email_keys_path)
    keys.current()  # made on first start, refused now if the file is damaged
    return EmailSignIn(store or otp_store(config), keys, mailer, public_url=config.public_url)


def otp_store(config: ServerConfig) -> OtpStore:
    """The store of pending email codes and their rate limits: SQLite in the state directory, or with
    ``redis_url`` the service's Redis (a code asked for on one node can be typed in on another)."""
    if config.redis_url is not None:
        from .otp_redis import RedisOtpStore

        return RedisOtpStore(config.redis_url, config.redis_prefix)
    return SqliteOtpStore(config.otp_db)


async def start_server(
    config: ServerConfig,
    *,
    turn: TurnProvider | None = None,
    sweep: bool = True,
    clock: Callable[[], float] | None = None,
    email: EmailSignIn | None = None,
) -> RunningServer:
    """Start broker and HTTP app on the running loop (ports 0 = pick free ones)."""
    if turn is None:
        turn = turn_provider(config)
    if config.redis_url is not None and not config.public_broker_url and config.host in WILDCARD_HOSTS:
        raise ValueError(
            "with redis_url every node must name the broker address clients reach it at: "
            "--host <address> (not a wildcard) or public_broker_url"
        )
    if email is None:
        email = email_sign_in(config)
    broker = Broker(config, Metrics(), clock=clock)
    broker_port = await broker.start(config.host, config.resolved_broker_port(), sweep=sweep)
    directory = BrokerDirectory(config.key, config.brokers, config.health_interval, config.health_timeout)
    directory.start()
    cluster: Cluster | None = None
    runner: web.AppRunner | None = None
    try:
        site_runner = runner = web.AppRunner(
            make_app(config, broker, directory, turn, email), access_log=None, handle_signals=False,
            shutdown_timeout=1.0,
        )
        await site_runner.setup()
        site = web.TCPSite(site_runner, config.host, config.port)
        await site.start()
        server: Any = site._server
        http_port = int(server.sockets[0].getsockname()[1])
        running = RunningServer(config, broker, directory, site_runner, http_port, broker_port)
        if config.redis_url is not None:
            from .cluster import Cluster

            cluster = Cluster(broker, config, local_broker_url(config, broker_port, None), running.http_url)
            broker.cluster = running.cluster = cluster
            if not await cluster.start():
                log.warning("redis not reachable yet: this node refuses new peers until it is")
    except BaseException:
        await directory.stop()
        if cluster is not None:
            await cluster.close(drain=0)
        await broker.close()
        if runner is not None:
            await runner.cleanup()
        raise
    return running


async def _serve(config: ServerConfig, turn: TurnProvider | None, email: EmailSignIn | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        running = await start_server(config, turn=turn, email=email)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            broker = config.resolved_broker_port()
            print(f"kibitz serve: a port is taken ({exc.strerror or exc}): it needs "
                  f"{config.host}:{config.port} (HTTP) and :{broker} (broker). Is another kibitz serve "
                  "running? Choose others with --port N (the broker takes N+1, or --broker-port), "
                  "or --port 0 for any free one.",
                  file=sys.stderr)
        else:
            print(f"kibitz serve: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    from kibitz import __version__

    node = f" node={running.cluster.node}" if running.cluster is not None else ""
    print(f"KIBITZ_READY {running.http_url} broker={running.broker_url}{node}", flush=True)
    demo = "" if config.dist_dir.is_dir() else "  (no bundle built yet: a placeholder page)"
    print(f"Kibitz {__version__} demo: {running.http_url}/{demo}", flush=True)
    print(f"Serving the bundle (widget.js, runtime, wheels, snapshot) from {config.dist_dir}", flush=True)
    print(f"State (licences, keys) lives in {config.state_dir}", flush=True)
    print(f"Signaling broker: {running.broker_url}  key={config.key}  (Ctrl-C stops)", flush=True)
    try:
        await stop.wait()
    finally:
        await running.close()
    print("kibitz serve: stopped", flush=True)
    return 0


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return make_config(
        getattr(args, "config", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        key=getattr(args, "key", None),
        broker_port=getattr(args, "broker_port", None),
        dist_dir=getattr(args, "dist", None),
        alive_timeout=getattr(args, "alive_timeout", None),
        expire_timeout=getattr(args, "expire_timeout", None),
        turn_urls=getattr(args, "turn_url", None),
        turn_secret_file=getattr(args, "turn_secret_file", None),
        turn_ttl=getattr(args, "turn_ttl", None),
        turn_gate=getattr(args, "turn_gate", None),
        stun_urls=getattr(args, "stun_url", None),
        state_dir=getattr(args, "state_dir", None),
        grant_secret_file=getattr(args, "grant_secret_file", None),
        redis_url=getattr(args, "redis", None) or os.environ.get("KIBITZ_REDIS_URL") or None,
        smtp=getattr(args, "smtp", None),
        smtp_from=getattr(args, "smtp_from", None),
        smtp_starttls=getattr(args, "smtp_starttls", None) or None,
        smtp_user=getattr(args, "smtp_user", None),
        smtp_password_file=getattr(args, "smtp_password_file", None),
        smtp_cafile=getattr(args, "smtp_cafile", None),
        public_url=getattr(args, "public_url", None),
    )


def state_dir_problem(path: Path) -> str | None:
    """Why the server could not keep its state in ``path`` (made on first use), or None if it can:
    the nearest existing directory on the way must be writable."""
    p = path
    while not p.exists() and p.parent != p:
        p = p.parent
    if not p.is_dir():
        return f"{p} is not a directory"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"{p} is not writable by this user"
    return None


def serve_main(args: argparse.Namespace) -> int:
    """Entry point for ``kibitz serve``; returns the process exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
        problem = state_dir_problem(config.state_dir)
        if problem is not None:
            print(f"kibitz serve: cannot keep state in {config.state_dir}: {problem}. Choose another with "
                  "--state-dir DIR or $KIBITZ_STATE_DIR.", file=sys.stderr)
            return 2
        turn = turn_provider(config)  # a relay without a usable secret: a configuration error, said now
        email = email_sign_in(config)  # the signing key is made here on the first start
    except (ValueError, OSError) as exc:
        print(f"kibitz serve: bad configuration: {exc}", file=sys.stderr)
        return 2
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - Windows
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_serve(config, turn, email))
