"""The hub's WebRTC endpoint: one UDP socket, ICE-lite, a DTLS server and SCTP per peer.

A peer (a page or an agent) reaches the hub with no signaling: it offers, builds the hub's answer
from the galaxy link (:func:`kibitz.galaxy.hub_answer`) and starts checks at the hub's address.
Here every datagram on the one socket is sorted by RFC 7983:

* STUN: answered by :class:`~kibitz.server.hub.ice_lite.IceLite`. A check authenticated with the
  hub's password makes (or refreshes) the session of the peer's ufrag and says where to send;
* DTLS: handed to the session whose address it came from, which runs aiortc's
  ``RTCDtlsTransport`` as the DTLS server (with the hub's persisted certificate) and aiortc's
  ``RTCSctpTransport`` over it. These aiortc pieces want an ``RTCIceTransport``; a session gives
  them the three members they use (``role``, ``_recv``, ``_send``) over this socket instead of
  running aioice, which cannot be lite nor share one port between many peers;
* anything else is counted and dropped.

Each data channel a peer opens is an identity at the :class:`~kibitz.server.hub.router.Router`
(label ``peerjs?..``) or the hub connection's control channel (``kbz-hub``). The hub authenticates
itself to peers (they pin its certificate); peers are anonymous to it, as to a broker.

A session ends when its peer stops its consent checks (browsers send one every few seconds), when
DTLS or SCTP closes, or at shutdown; its identities leave the router then, so their contacts hear
LEAVE at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

from aiortc.rtcdatachannel import RTCDataChannel
from aiortc.rtcdtlstransport import (
    RTCCertificate,
    RTCDtlsFingerprint,
    RTCDtlsParameters,
    RTCDtlsTransport,
    certificate_digest,
)
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtcsctptransport import RTCSctpCapabilities, RTCSctpTransport

from kibitz.galaxy import HUB_CONTROL_LABEL, HUB_MAX_MESSAGE, HUB_SCTP_PORT, parse_channel_label

from .ice_lite import IceLite, is_dtls, is_stun
from .router import Conn, Router

log = logging.getLogger("kibitz.hub")

Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class EndpointLimits:
    max_sessions: int = 2000
    consent_timeout: float = 30.0
    """No authenticated check from a peer for this long: its session ends (browsers check ~5 s)."""
    handshake_timeout: float = 20.0
    refuse_grace: float = 2.0
    """A refused identity channel is closed by the hub after this if the peer did not close it."""
    queue_datagrams: int = 512


class _PeerIce:
    """The part of ``RTCIceTransport`` that aiortc's DTLS transport uses, over the hub's socket."""

    role = "controlled"
    state = "completed"

    def __init__(self, session: PeerSession) -> None:
        self._session = session
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(session.endpoint.limits.queue_datagrams)

    async def _recv(self) -> bytes:
        data = await self.queue.get()
        if data is None:
            raise ConnectionError("hub session closed")
        return data

    async def _send(self, data: bytes) -> None:
        self._session.endpoint.sendto(data, self._session.addr)


class _PeerDtls(RTCDtlsTransport):
    """aiortc's DTLS transport as the server of an anonymous peer: peers pin the hub's
    certificate, the hub cannot know theirs (their offer never reaches it), so it records the
    peer's certificate digest instead of checking it."""

    peer_fingerprint = ""

    def _validate_peer_identity(self, remoteParameters: RTCDtlsParameters) -> None:
        cert = self._ssl.get_peer_certificate(as_cryptography=True) if self._ssl is not None else None
        if cert is not None:
            self.peer_fingerprint = certificate_digest(cert, "sha-256")


class _HubChannel:
    """:class:`~kibitz.server.hub.router.Channel` over an aiortc data channel."""

    __slots__ = ("dc",)

    def __init__(self, dc: RTCDataChannel) -> None:
        self.dc = dc

    def send(self, text: str) -> None:
        if self.dc.readyState == "open":
            self.dc.send(text)

    def close(self) -> None:
        self.dc.close()


class PeerSession:
    """One peer's DTLS + SCTP association with the hub."""

    def __init__(self, endpoint: HubEndpoint, ufrag: str, addr: Addr, now: float) -> None:
        self.endpoint = endpoint
        self.ufrag = ufrag
        self.addr = addr
        self.created = now
        self.last_check = now
        self.ice = _PeerIce(self)
        # Duck-typed: the three members of RTCIceTransport that RTCDtlsTransport uses.
        self.dtls = _PeerDtls(cast(RTCIceTransport, self.ice), [endpoint.certificate])
        self.dtls._set_role("server")
        self.sctp: RTCSctpTransport | None = None
        self.conns: set[Conn] = set()
        self.established = False
        self.closed = False
        self.task: asyncio.Task[None] | None = None

    def feed(self, data: bytes) -> None:
        try:
            self.ice.queue.put_nowait(data)
        except asyncio.QueueFull:
            self.endpoint.dropped["queue_full"] = self.endpoint.dropped.get("queue_full", 0) + 1

    async def run(self) -> None:
        # aiortc wants at least one fingerprint here; _PeerDtls does not compare it.
        await self.dtls.start(RTCDtlsParameters([RTCDtlsFingerprint("sha-256", "-")], role="client"))
        if self.dtls.state != "connected":
            self.endpoint.count("dtls_failed")
            await self.close("dtls failed")
            return
        sctp = self.sctp = RTCSctpTransport(self.dtls, port=HUB_SCTP_PORT)
        sctp.on("datachannel", self._on_channel)
        self.dtls.on("statechange", self._dtls_state)
        await sctp.start(RTCSctpCapabilities(maxMessageSize=HUB_MAX_MESSAGE), HUB_SCTP_PORT)
        self.established = True
        self.endpoint.sessions_established += 1

    def _dtls_state(self) -> None:
        if self.dtls.state in ("closed", "failed") and not self.closed:
            self.endpoint.spawn(self.close("dtls " + self.dtls.state))

    def _on_channel(self, dc: RTCDataChannel) -> None:
        ep = self.endpoint
        if dc.label == HUB_CONTROL_LABEL:
            # The connection's keepalive: "ping" -> "pong" (nothing else travels here).
            def pong(data: Any) -> None:
                if data == "ping" and dc.readyState == "open":
                    dc.send("pong")

            dc.on("message", pong)
            return
        params = parse_channel_label(dc.label)
        if params is None:
            ep.count("bad_label")
            dc.close()
            return
        router = ep.router
        conn = router.open(_HubChannel(dc), params, ep.now())
        self.conns.add(conn)

        def on_message(data: Any) -> None:
            router.frame(conn, data, ep.now())

        def on_close() -> None:
            self.conns.discard(conn)
            router.closed(conn)

        dc.on("message", on_message)
        dc.on("close", on_close)
        if not conn.registered:
            ep.loop.call_later(ep.limits.refuse_grace, dc.close)

    async def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.endpoint.forget(self)
        for conn in list(self.conns):
            self.endpoint.router.closed(conn)
        self.conns.clear()
        with contextlib.suppress(asyncio.QueueFull):
            self.ice.queue.put_nowait(None)
        if self.sctp is not None:
            with contextlib.suppress(Exception):
                await self.sctp.stop()
        with contextlib.suppress(Exception):
            await self.dtls.stop()
        if self.task is not None and not self.task.done() and self.task is not asyncio.current_task():
            self.task.cancel()
        log.debug("hub session %s ended: %s", self.ufrag, reason)


class HubEndpoint(asyncio.DatagramProtocol):
    """The UDP socket and every peer session on it."""

    def __init__(
        self,
        certificate: RTCCertificate,
        ufrag: str,
        pwd: str,
        router: Router,
        *,
        limits: EndpointLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.certificate = certificate
        self.ice = IceLite(ufrag, pwd)
        self.router = router
        self.limits = limits or EndpointLimits()
        self.now = clock
        self.sessions: dict[str, PeerSession] = {}
        self.by_addr: dict[Addr, PeerSession] = {}
        self.dropped: dict[str, int] = {}
        self.sessions_total = 0
        self.sessions_established = 0
        self.datagrams_in = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.loop = asyncio.get_event_loop()
        self._sweeper: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        self.loop = asyncio.get_running_loop()
        transport, _ = await self.loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self.transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        self._schedule_sweep()
        return self.port

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await asyncio.gather(*(s.close("shutdown") for s in list(self.sessions.values())))
        if self.transport is not None:
            self.transport.close()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def count(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    # --------------------------------------------------------------------------- datagrams

    def sendto(self, data: bytes, addr: Addr) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.datagrams_in += 1
        if is_stun(data):
            response, check = self.ice.handle(data, addr)
            if response is not None:
                self.sendto(response, addr)
            if check is not None:
                self._checked(check.peer_ufrag, addr, check.nominated)
        elif is_dtls(data):
            session = self.by_addr.get(addr)
            if session is None:
                self.count("dtls_unknown_peer")
                return
            session.feed(data)
        else:
            self.count("not_stun_or_dtls")

    def error_received(self, exc: Exception) -> None:
        log.debug("hub socket error: %r", exc)

    def _checked(self, ufrag: str, addr: Addr, nominated: bool) -> None:
        now = self.now()
        session = self.sessions.get(ufrag)
        if session is None:
            if len(self.sessions) >= self.limits.max_sessions:
                self.count("session_limit")
                return
            session = PeerSession(self, ufrag, addr, now)
            self.sessions[ufrag] = session
            self.by_addr[addr] = session
            self.sessions_total += 1
            session.task = self.spawn(self._run(session))
        session.last_check = now
        if addr != session.addr and (nominated or addr not in self.by_addr):
            # The peer moved (or nominated another pair): follow it, keep the old address too
            # until the session ends, since DTLS may still be in flight from it.
            session.addr = addr
            self.by_addr[addr] = session
        elif addr not in self.by_addr:
            self.by_addr[addr] = session

    async def _run(self, session: PeerSession) -> None:
        try:
            await session.run()
        except Exception as exc:
            self.count("session_error")
            log.debug("hub session %s failed: %r", session.ufrag, exc)
            await session.close("error")

    def forget(self, session: PeerSession) -> None:
        if self.sessions.get(session.ufrag) is session:
            del self.sessions[session.ufrag]
        for addr in [a for a, s in self.by_addr.items() if s is session]:
            del self.by_addr[addr]

    # --------------------------------------------------------------------------- periodic

    def _schedule_sweep(self) -> None:
        self._sweeper = self.loop.call_later(0.5, self._sweep)

    def _sweep(self) -> None:
        try:
            now = self.now()
            for conn in self.router.sweep(now):
                conn.channel.close()
            lim = self.limits
            for s in list(self.sessions.values()):
                silent = now - s.last_check > lim.consent_timeout
                stuck = not s.established and now - s.created > lim.handshake_timeout
                if silent or stuck:
                    self.count("consent_lost" if silent else "handshake_timeout")
                    self.spawn(s.close("consent lost" if silent else "handshake timeout"))
        finally:
            self._schedule_sweep()

    def render_metrics(self) -> dict[str, Any]:
        return {
            "sessions": len(self.sessions),
            "sessions_total": self.sessions_total,
            "sessions_established": self.sessions_established,
            "datagrams_in": self.datagrams_in,
            "stun_refused": self.ice.refused,
            "dropped": dict(self.dropped),
        }
