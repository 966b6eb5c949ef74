"""The agent SDK: one CPython participant in a room, over the same signaling and WebRTC as a page.

An :class:`Agent` is a thin wrapper over :class:`kibitz.session.Session` (the controller the page's
``Kibitz.mount`` wraps too), running on an aiortc :class:`~kibitz.backends.rtc.RtcTransport`. No
room logic lives here: joining, the roster, chat, app data and the capability checks are the
engine's, so an agent behaves exactly like a tab and every honest peer enforces its grant.

What this module adds is the agent's posture and ergonomics:

* it joins with ``meta = {"role": "agent", "readOnly": True, "backend": ..., "egress": ...}``, so
  every peer applies the agent default grant (read chat, read the roster, receive directed
  messages; no acts, no media) until the host widens it;
* it finds the room's broker through the server's ``GET /api/signal``;
* callbacks may be plain or ``async`` functions, and one that raises is logged and counted
  (``callback_errors``), never fatal;
* app messages carrying the agent envelope (``{"__kib_agent": "view" | "act" | "chat", ...}``)
  are split off: ``view`` updates :attr:`Agent.view` and fires ``on_view``; everything without an
  envelope goes to ``on_data``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from kibitz.admission import REFUSED, prepare_credential
from kibitz.backends.hub_signaling import HUB_BROKER_URL
from kibitz.backends.rtc_api import IceServer
from kibitz.content import AGENT_ENVELOPE
from kibitz.galaxy import Galaxy, galaxy_from_link, parse_galaxy
from kibitz.gate import JoinGate, check_room, parse_link
from kibitz.identity import identity_nonce
from kibitz.identity.keys import Done, Fetch
from kibitz.relay import IceAnswer, RelayKeeper, RelaySettings, ask_turn, relay_refusal
from kibitz.session import Session, Source

log = logging.getLogger(__name__)

DEFAULT_SERVER = "http://127.0.0.1:8787"
JOIN_TIMEOUT_S = 15.0
SIGNAL_TIMEOUT_S = 5.0
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

F = TypeVar("F", bound=Callable[..., Any])


class AgentRefusedError(Exception):
    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class AgentJoinError(ConnectionError):
    """The agent could not reach its room (server down, broker unreachable, or too slow to join)."""


async def resolve_broker(
    server: str, room: str, *, timeout: float = SIGNAL_TIMEOUT_S, failed: str | None = None
) -> tuple[str, str]:
    """``(broker_ws_url, key)`` for ``room`` from ``GET {server}/api/signal?room=...``.

    ``failed``: a broker URL we could not reach (a service of several nodes then checks it and
    names another node's broker if that one is down).

    When the server names no broker (``{"host": null}``: it runs none of its own and no remote one
    is healthy) we fall back to the default layout of ``kibitz serve``: the broker on the HTTP
    port + 1 at ``/`` with key ``peerjs``.
    """
    base = server.rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"server must be an http(s):// URL, got {server!r}")
    url = f"{base}/api/signal?{urlencode({'room': room, **({'failed': failed} if failed else {})})}"
    try:
        status, body = await asyncio.wait_for(http_get(url), timeout)
    except (TimeoutError, OSError, ValueError) as exc:
        raise AgentJoinError(f"cannot reach the Kibitz server at {base}: {exc!r}") from exc
    if status != 200:
        raise AgentJoinError(f"{base}/api/signal answered HTTP {status}")
    try:
        info = json.loads(body)
    except ValueError as exc:
        raise AgentJoinError(f"{base}/api/signal answered something that is not JSON") from exc
    if not isinstance(info, Mapping):
        raise AgentJoinError(f"{base}/api/signal answered {info!r}, not an object")
    key = info.get("key") if isinstance(info.get("key"), str) else "peerjs"
    found = info.get("url")
    if isinstance(found, str) and found:
        return found, str(key)
    if info.get("host"):
        scheme = "wss" if info.get("secure") else "ws"
        host = str(info["host"])
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{scheme}://{host}:{info.get('port')}{info.get('path') or '/'}", str(key)
    port = (parts.port or (443 if parts.scheme == "https" else 80)) + 1
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    return f"{'wss' if parts.scheme == 'https' else 'ws'}://{host}:{port}/", "peerjs"


async def resolve_ice(
    server: str, *, timeout: float = SIGNAL_TIMEOUT_S
) -> tuple[list[IceServer], float | None]:
    """``(ice_servers, ttl)`` from ``GET {server}/api/turn`` for an anonymous caller: the relay's
    short-lived credentials and how many seconds they last (``None``: no expiry). ``([], None)``
    when the server has no relay or cannot be asked. (:class:`Agent` itself asks through
    :class:`kibitz.relay.RelayKeeper`, with its licence or grant, and keeps them fresh.)"""
    answer = await ask_turn(RelaySettings(server, ""), http_fetch, timeout=timeout)
    return list(answer.servers), answer.ttl


async def http_fetch(method: str, url: str, headers: Mapping[str, str], body: str | None) -> tuple[int, str]:
    """:data:`kibitz.relay.Fetch` over :func:`http_request`."""
    status, raw = await http_request(method, url, headers, None if body is None else body.encode())
    return status, raw.decode("utf-8", "replace")


async def http_get(url: str, max_bytes: int = 1 << 20) -> tuple[int, bytes]:
    """A minimal HTTP/1.1 GET: ``(status, body)``. Raises ``OSError``/``ValueError`` on failure."""
    return await http_request("GET", url, {}, None, max_bytes)


async def http_request(
    method: str, url: str, headers: Mapping[str, str], body: bytes | None, max_bytes: int = 1 << 20
) -> tuple[int, bytes]:
    """A minimal HTTP/1.1 request: ``(status, body)``. Raises ``OSError``/``ValueError`` on failure.

    One small JSON request does not justify importing an HTTP client library: aiohttp alone
    costs ~0.1 s of the agent's start-up (docs/benchmarks.md#agents). No proxies, no redirects.
    """
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items() if "\r" not in v and "\n" not in v)
    if body is not None:
        extra += f"Content-Length: {len(body)}\r\n"
    reader, writer = await asyncio.open_connection(
        host, port, ssl=ssl.create_default_context() if secure else None
    )
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        writer.write(
            f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: application/json\r\n"
            f"{extra}Connection: close\r\n\r\n".encode("latin-1") + (body or b"")
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status_line = lines[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/"):
            raise ValueError(f"not an HTTP response: {lines[0][:80]!r}")
        response_headers = {
            k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
        }
        if response_headers.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    break
                data += (await reader.readexactly(size + 2))[:-2]  # each chunk ends with CRLF
                if len(data) > max_bytes:
                    raise ValueError("response too large")
        elif "content-length" in response_headers:
            length = int(response_headers["content-length"])
            if length > max_bytes:
                raise ValueError("response too large")
            data = await reader.readexactly(length)
        else:
            data = await reader.read(max_bytes)
        return int(status_line[1]), data
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise ValueError(f"truncated HTTP response: {exc!r}") from exc
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def aio_fetch() -> Fetch:
    """The identity layer's HTTP seam on the running asyncio loop (issuers' discovery and key sets)."""
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()

    def fetch(url: str, done: Done) -> None:
        async def run() -> None:
            try:
                status, body = await asyncio.wait_for(http_get(url, max_bytes=256 * 1024), SIGNAL_TIMEOUT_S)
            except (TimeoutError, OSError, ValueError) as exc:
                log.warning("GET %s failed: %r", url, exc)
                status, body = 0, b""
            done(status, body)

        task = loop.create_task(run())
        running.add(task)
        task.add_done_callback(running.discard)

    return fetch


def certificate_fingerprint_of(cert_file: str | Path) -> str:
    """The fingerprint of the agent certificate kept in ``cert_file`` (made now if missing)."""
    from kibitz.backends.aio_cert import certificate_fingerprint, load_or_create_certificate

    return certificate_fingerprint(load_or_create_certificate(cert_file))


def agent_identity_nonce(room: str, cert_file: str | Path, salt: str | None = None) -> str:
    """The sign-in nonce for an agent that will join ``room`` with the certificate in ``cert_file``:
    sign in with it (e.g. ``POST /api/email/start``), then pass the token as ``identity_token``.
    ``salt`` (e.g. ``secrets.token_urlsafe(16)``, fresh per sign-in) makes a salted nonce, for an
    OpenID Connect issuer that refuses a nonce it has seen before."""
    return identity_nonce(certificate_fingerprint_of(cert_file), room, salt)


def is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in LOOPBACK_HOSTS


class _AgentMedia:
    """The agent's :class:`~kibitz.session.LocalMedia`: it publishes what it was handed, never captures."""

    def __init__(self) -> None:
        self.audio: object | None = None

    async def acquire(self, source: Source) -> object:
        if source == "mic" and self.audio is not None:
            return self.audio
        raise PermissionError(f"an agent has no {source} to capture; publish a track instead")

    def release(self, source: Source) -> None:
        if source == "mic":
            self.audio = None


class Agent:
    """An AI participant in one room. Use as ``async with Agent(...) as agent:``.

    ``server`` is the Kibitz server's HTTP base URL (its ``/api/signal`` names the broker);
    ``broker``/``key`` skip that lookup. ICE servers (the relay's short-lived credentials) come
    from the server's ``/api/turn`` (or ``turn_server``'s), with ``license_key`` or ``grant`` for a
    gated relay, and are fetched again before they expire; ``relay_only`` sends everything through
    that relay, which hides the agent's own addresses from the room, and fails closed: without
    relay credentials :meth:`start` raises :class:`AgentJoinError` and connects to no one.
    ``loopback_only`` (default: whether the broker host is
    127.0.0.1/localhost) makes aiortc gather only 127.0.0.1 candidates, which a machine whose
    only usable interface is ``lo`` needs and which keeps a local test off the LAN.
    ``galaxy`` (a ``?galaxy=`` value, also read from ``link``): join through that LAN hub
    (``kibitz hub``) over WebRTC, with no server, broker or relay asked at all.
    ``backend`` (which model perceives the room) and ``egress`` (whether what it perceives
    leaves the room) are disclosures shown to the host; they never grant anything.
    """

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        room: str = "",
        name: str = "Agent",
        backend: str = "none",
        egress: bool = False,
        *,
        broker: str | None = None,
        key: str = "peerjs",
        loopback_only: bool | None = None,
        relay_only: bool = False,
        license_key: str | None = None,
        grant: str | None = None,
        turn_server: str | None = None,
        join_timeout: float = JOIN_TIMEOUT_S,
        meta: Mapping[str, Any] | None = None,
        rng: random.Random | None = None,
        link: str | None = None,
        join_gate: JoinGate | Mapping[str, Any] | None = None,
        join_credential: str | None = None,
        host_key: str | None = None,
        identity_token: str | None = None,
        verify_identity: Mapping[str, Any] | None = None,
        cert_file: str | Path | None = None,
        agent_key: str | None = None,
        agent_credit: str | None = None,
        galaxy: str | Galaxy | None = None,
    ) -> None:
        if isinstance(galaxy, str):
            galaxy = None if galaxy == "off" else parse_galaxy(galaxy)  # GalaxyError: a ValueError
        if link is not None:
            galaxy = galaxy or galaxy_from_link(link)
            parsed = parse_link(link)  # GateError (a ValueError) for a link that cannot be trusted
            room = room or parsed.room or ""
            join_gate = join_gate if join_gate is not None else parsed.gate
            join_credential = join_credential or parsed.invite
        if not isinstance(room, str) or not room.strip():
            raise ValueError("an agent needs a room, e.g. Agent(room='room-3f9k2mq7p1')")
        self.gate = check_room(room, JoinGate.from_json(join_gate) if join_gate is not None else None)
        """The room's settings (checked against a room id that commits to them)."""
        self._credential = join_credential
        self._host_key = host_key
        if identity_token and cert_file is None:
            raise ValueError("an identity token is bound to a certificate: give cert_file, the one its "
                             "sign-in nonce was made for (agent_identity_nonce)")
        self._identity_token = identity_token
        self._verify_identity = verify_identity
        self._cert_file = cert_file
        self._agent_key = agent_key
        self._agent_credit = agent_credit
        self.server = server
        self.room = room
        self.name = name
        self.backend = backend
        self.egress = bool(egress)
        self.galaxy: Galaxy | None = galaxy
        """The LAN hub this agent signals through (no server, broker or relay is asked then)."""
        self.broker_url = broker if galaxy is None else HUB_BROKER_URL
        self._key = key
        self._loopback_only = loopback_only
        self._relay_only = relay_only
        self._turn_server = turn_server
        self._relay = RelaySettings(turn_server or server, room, license_key, grant, relay_only)
        self.relay: RelayKeeper | None = None
        """Keeps the ICE servers fresh once started (its ``answer`` has the tier and reason)."""
        self._join_timeout = join_timeout
        self._meta: dict[str, Any] = {
            **dict(meta or {}),
            "role": "agent",
            "readOnly": True,
            "backend": backend,
            "egress": self.egress,
        }
        self._rng = rng
        self._session: Session | None = None
        self._transport: Any = None
        self._media = _AgentMedia()
        self._callbacks: dict[str, list[Callable[..., Any]]] = {
            k: [] for k in ("roster", "chat", "data", "view", "grant", "track")
        }
        self._tasks: set[asyncio.Task[Any]] = set()
        self._found_broker = False
        self._closed = asyncio.Event()
        self._left = False
        self.view: Any = None
        """The newest view an app published for agents (``None`` until one arrives)."""
        self.callback_errors = 0
        self.envelopes_ignored = 0

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.leave()

    async def start(self) -> None:
        """Find the broker, claim an id, join the call; returns once we are on the roster.

        Raises :class:`AgentJoinError` (after cleaning up) when that does not happen within
        ``join_timeout`` seconds.
        """
        if self._session is not None:
            raise RuntimeError("this agent has already started")
        from kibitz.backends.aio import make_aio_transport
        from kibitz.clock import AsyncioScheduler

        loop = asyncio.get_running_loop()
        self._found_broker = self.broker_url is None  # ours to ask again if its node goes away
        if self.broker_url is None:
            self.broker_url, self._key = await resolve_broker(self.server, self.room)
        if self.galaxy is not None:
            loopback = all(is_loopback(f"http://{host}/") for host, _ in self.galaxy.addresses)
        else:
            loopback = is_loopback(self.broker_url)
        loopback = loopback if self._loopback_only is None else self._loopback_only
        first = IceAnswer(error="no server to ask")
        if self.galaxy is not None:
            first = IceAnswer(servers=(), error="a LAN hub: no relay")  # iceServers: [], no internet
        elif self.server or self._turn_server:
            self.relay = RelayKeeper(self._relay, http_fetch, self._apply_ice)
            first = await self.relay.ask()
        refused = relay_refusal(self._relay, first)
        if refused:
            raise AgentJoinError(refused)
        certificate = None
        if self._cert_file is not None:
            from kibitz.backends.aio_cert import load_or_create_certificate

            certificate = load_or_create_certificate(self._cert_file)
        self._transport = make_aio_transport(
            self.broker_url, key=self._key, loopback_only=loopback, ice_servers=first.servers,
            ice_transport_policy="relay" if self._relay_only else "all", certificate=certificate,
            galaxy=self.galaxy,
        )
        if self.relay is not None:
            self._spawn(self.relay.run(first))
        if self.server and self._found_broker:
            server, room = self.server, self.room

            async def again(failed: str) -> str | None:
                return (await resolve_broker(server, room, failed=failed))[0]

            self._transport.set_broker_resolver(again)
        session = Session(
            self.room,
            transport=self._transport,
            scheduler=AsyncioScheduler(loop),
            rng=self._rng,
            name=self.name,
            meta=self._meta,
            media=self._media,
            gate=self.gate,
            credential=await prepare_credential(self.gate, self._credential),
            host_key=self._host_key,
            verify_identity=self._verify_identity,
            identity_token=self._identity_token,
            api_base=self.server.rstrip("/") if self.server else None,
            fetch=aio_fetch(),
            agent_key=self._agent_key,
            agent_credit=self._agent_credit,
        )
        self._session = session
        on_roster: asyncio.Future[None] = loop.create_future()

        def participants(people: list[dict[str, Any]]) -> None:
            if any(p.get("isSelf") for p in people) and not on_roster.done():
                on_roster.set_result(None)
            self._fire("roster", people)

        def lobby(status: str) -> None:
            if status in REFUSED and not on_roster.done():
                on_roster.set_exception(AgentRefusedError(status))

        session.on("participants", participants)
        session.on("chat", self._on_chat)
        session.on("message", self._on_message)
        session.on("caps", lambda grant: self._fire("grant", grant))
        session.on("tracks", lambda peer, lane, track: self._fire("track", peer, lane, track))
        session.on("state", self._on_state)
        session.on("lobby", lobby)
        session.start()
        session.join()
        try:
            await asyncio.wait_for(on_roster, self._join_timeout)
        except AgentRefusedError as exc:
            await self.leave()
            raise AgentJoinError(
                f"agent {self.name!r} was refused entry to room {self.room!r}: {exc.status}"
            ) from None
        except TimeoutError:
            state = session.get_state()
            await self.leave()
            where = "the broker" if not state["connected"] else "the room's roster"
            raise AgentJoinError(
                f"agent {self.name!r} did not reach {where} of room {self.room!r} via {self.broker_url} "
                f"within {self._join_timeout:g} s"
            ) from None

    def _apply_ice(self, answer: IceAnswer) -> None:
        """Fresh ICE servers for the connections made from now on (live ones keep theirs: the
        relay checks the expiry only when an allocation is made). A relay-only agent never swaps
        its relay for servers without one: it keeps the old ones (and so reaches no one new)."""
        transport = self._transport
        if transport is None or self._left or (self._relay_only and not answer.has_relay):
            return
        transport.set_rtc_config(dataclasses.replace(transport.rtc_config, ice_servers=tuple(answer.servers)))

    async def leave(self) -> None:
        """Leave the room with a clean goodbye and close every connection. Idempotent."""
        if self._left:
            return
        self._left = True
        if self.relay is not None:
            self.relay.close()
        if self._session is not None:
            self._session.close()
        if self._transport is not None:
            await self._transport.shutdown()
        for task in list(self._tasks):
            task.cancel()
        self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until the agent leaves or is removed from the room (an agent's ``main`` ends with it)."""
        await self._closed.wait()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # ------------------------------------------------------------------ reading

    @property
    def session(self) -> Session:
        """The underlying engine controller (for what the SDK does not wrap)."""
        if self._session is None:
            raise RuntimeError("the agent has not started: use `async with Agent(...) as agent`")
        return self._session

    @property
    def id(self) -> str:
        return self.session.self_id

    def participants(self) -> list[dict[str, Any]]:
        """Everyone on the call, ourselves included (``isSelf``), each with ``meta`` and ``kind``."""
        return self.session.get_participants()

    def chat(self) -> list[dict[str, Any]]:
        """The recent chat lines this agent has seen (the engine keeps the last 50)."""
        return self.session.get_chat()

    def tracks(self, peer: str) -> dict[str, object]:
        """The remote media tracks we hold from ``peer``, by lane (see :meth:`on_track`)."""
        return self.session.remote_tracks(peer)

    async def media_stats(self, peer: str) -> list[dict[str, Any]]:
        """W3C ``getStats()`` entries of our link to ``peer`` (``[]`` without a link or media).

        ``inbound-rtp`` entries show what actually arrives: the way to check that nothing flows
        on a lane the agent may not perceive.
        """
        link = self.session.mesh.link_of(peer)
        stats = getattr(self._transport, "link_stats", None)
        if link is None or stats is None:
            return []
        return list(await stats(link))

    @property
    def grant(self) -> dict[str, Any]:
        """Our current grant as the room enforces it: ``perceive``, ``act``, ``backend``, ..."""
        return self.session.get_capability_grant(self.id)

    def can(self, act: str) -> bool:
        """Whether our grant includes ``act`` (``send-chat``, ``speak`` or ``act``)."""
        return self.session.can(act)

    def can_act(self) -> bool:
        """Whether :meth:`act` would be delivered: every receiver needs ``act`` *and* ``send-chat``."""
        return self.can("act") and self.can("send-chat")

    # ------------------------------------------------------------------ subscribing

    def on_roster(self, callback: F) -> F:
        """``callback(participants)`` whenever the roster or a link changes; usable as a decorator."""
        return self._add("roster", callback)

    def on_chat(self, callback: F) -> F:
        """``callback(line)`` for chat from others: ``{id, from, name, text, ts, direct}``."""
        return self._add("chat", callback)

    def on_data(self, callback: F) -> F:
        """``callback(data, from_id)`` for app messages without an agent envelope."""
        return self._add("data", callback)

    def on_view(self, callback: F) -> F:
        """``callback(view)`` when an app publishes ``{"__kib_agent": "view", "view": ...}``."""
        return self._add("view", callback)

    def on_grant(self, callback: F) -> F:
        """``callback(grant)`` when the room's grant map changes (ours may have widened or narrowed)."""
        return self._add("grant", callback)

    def on_track(self, callback: F) -> F:
        """``callback(peer_id, lane, track)`` when a peer's media lane (``audio``/``video``) arrives.

        A lane exists for the life of the link (it comes up with it, and tracks already here are
        replayed to a late subscriber); what flows on it is the sender's decision: an agent gets
        real audio only with ``hear-audio`` and video only with ``see-screen``, and otherwise no
        packets. On a transport without media lanes this never fires.
        """
        return self._add("track", callback)

    def _add(self, kind: str, callback: F) -> F:
        if not callable(callback):
            raise TypeError(f"on_{kind} needs a callable, got {type(callback).__name__}")
        self._callbacks[kind].append(callback)
        if kind == "track" and self._session is not None:
            # Lanes come up with the link, often before main() subscribes: replay what is here.
            for peer in self._session.mesh.members:
                for lane, track in self._session.remote_tracks(peer).items():
                    asyncio.get_running_loop().call_soon(self._fire_one, callback, "track", peer, lane, track)
        return callback

    # ------------------------------------------------------------------ acting

    async def say(self, text: str, to: str | None = None) -> dict[str, Any]:
        """Post a chat line (to everyone who may read chat, or directly to ``to``).

        Raises ``PermissionError`` while our grant lacks ``send-chat`` (agents start read-only).
        """
        return self.session.send_chat(text, to)

    async def send(self, data: Any, to: str | None = None) -> list[str]:
        """App data to everyone who may perceive it, or to one participant; returns the recipients.

        Needs ``send-chat`` (``PermissionError`` otherwise); a directed send to a peer that may
        not receive directed messages raises ``ValueError``.
        """
        if to is None:
            return self.session.broadcast(data)
        self.session.send_to(to, data)
        return [to]

    async def act(self, action: Any, to: str | None = None) -> list[str]:
        """Send ``{"__kib_agent": "act", "action": action}``; needs the ``act`` grant (and ``send-chat``)."""
        if not self.can("act"):
            raise PermissionError("this agent may not act: its grant lacks act")
        return await self.send({AGENT_ENVELOPE: "act", "action": action}, to)

    async def publish_audio(self, track: object) -> None:
        """Publish an audio track (e.g. an aiortc ``MediaStreamTrack``); needs the ``speak`` grant.

        The track rides the media lanes of transports that have them; it is sent only to peers
        the engine lets perceive it.
        """
        if not self.can("speak"):
            raise PermissionError("this agent may not speak: its grant lacks speak")
        self._media.audio = track
        await self.session.set_mic(True)

    async def stop_audio(self) -> None:
        await self.session.set_mic(False)

    # ------------------------------------------------------------------ engine events

    def _on_chat(self, line: dict[str, Any] | None) -> None:
        if line is None or self._session is None or line.get("from") == self._session.self_id:
            return  # a room reset, or our own line echoed locally
        self._fire("chat", line)

    def _on_message(self, data: Any, sender: str) -> None:
        if isinstance(data, Mapping) and AGENT_ENVELOPE in data:
            if data.get(AGENT_ENVELOPE) == "view":
                self.view = data.get("view")
                self._fire("view", self.view)
            else:
                self.envelopes_ignored += 1
            return
        self._fire("data", data, sender)

    def _on_state(self, state: dict[str, Any]) -> None:
        if state.get("lobbyStatus") == "removed" and not self._left:
            self._spawn(self.leave())

    # ------------------------------------------------------------------ callback isolation

    def _fire(self, kind: str, *args: Any) -> None:
        for cb in list(self._callbacks[kind]):
            self._fire_one(cb, kind, *args)

    def _fire_one(self, cb: Callable[..., Any], kind: str, *args: Any) -> None:
        try:
            result = cb(*args)
        except Exception:
            self.callback_errors += 1
            log.exception("agent %s callback %r failed", kind, cb)
            return
        if inspect.isawaitable(result):
            self._spawn(result, kind)

    def _spawn(self, aw: Awaitable[Any], kind: str = "internal") -> None:
        task = asyncio.ensure_future(aw)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                self.callback_errors += 1
                log.error("agent %s callback failed", kind, exc_info=exc)

        task.add_done_callback(done)

    async def drain(self) -> None:
        """Wait for the async callbacks in flight (handy in tests and before leaving)."""
        while pending := [t for t in self._tasks if not t.done()]:
            with contextlib.suppress(Exception):
                await asyncio.wait(pending)


__all__ = [
    "DEFAULT_SERVER",
    "Agent",
    "AgentJoinError",
    "agent_identity_nonce",
    "certificate_fingerprint_of",
    "is_loopback",
    "resolve_broker",
]
