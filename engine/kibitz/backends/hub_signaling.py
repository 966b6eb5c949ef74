"""Signaling through a LAN hub: the :data:`~kibitz.backends.rtc_api.ConnectSignaling` seam over
data channels of one WebRTC connection to ``kibitz hub``, instead of WebSockets to a broker.

:class:`~kibitz.backends.rtc.RtcTransport` opens one "socket" per broker identity it claims. Here
each socket is a data channel labelled with the PeerJS query (``peerjs?key=..&id=..&token=..``)
on a single peer connection to the hub, and the hub answers with the same PeerJS frames a broker
sends (OPEN, ID-TAKEN, OFFER, LEAVE, ...). Rooms, failover and the mesh above are unchanged.

The connection to the hub needs no signaling of its own: the offer is made as usual and the hub's
answer is built locally from the galaxy (:func:`kibitz.galaxy.hub_answer`): ICE-lite, host
candidates only, ``iceServers: []``, and DTLS pinned to the hub's certificate digest, so only the
hub that printed the link can complete the handshake.

Written against :mod:`kibitz.backends.rtc_api` only, so the page (browser adapters) and agents
(aiortc) run this same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from kibitz.backends.rtc_api import (
    DataChannel,
    OnSignalingClose,
    OnSignalingMessage,
    PeerConnection,
    PeerConnectionFactory,
    RtcConfig,
    SessionDescription,
)
from kibitz.galaxy import HUB_CONTROL_LABEL, Galaxy, hub_answer, hub_channel_label

log = logging.getLogger(__name__)

HUB_BROKER_URL = "hub://galaxy/"
"""The ``broker_url`` a hub-backed :class:`~kibitz.backends.rtc.RtcTransport` is made with."""


class HubUnreachable(ConnectionError):
    """The hub's connection or an identity channel did not open in time, or failed."""


class HubSocket:
    """One identity's :class:`~kibitz.backends.rtc_api.SignalingSocket`: a data channel to the hub."""

    def __init__(self, session: _HubSession, channel: DataChannel) -> None:
        self._session = session
        self._channel = channel
        self._on_message: OnSignalingMessage | None = None
        self._on_close: OnSignalingClose | None = None
        self._closed = False
        self._opened: asyncio.Future[None] = session.loop.create_future()
        self._early: list[str] | None = []
        """Frames that arrived before the transport had our handlers (the hub's OPEN comes at once)."""
        self._early_close: str | None = None

    def _attach(self) -> None:
        ch = self._channel
        ch.on("open", lambda *_: self._resolve(None))
        ch.on("message", self._message)
        ch.on("close", lambda *_: self.closed_by_peer("hub closed the channel"))
        ch.on("error", lambda *a: log.info("hub channel error: %s", a))
        if ch.ready_state == "open":
            self._resolve(None)

    def _resolve(self, exc: BaseException | None) -> None:
        if self._opened.done():
            return
        if exc is None:
            self._opened.set_result(None)
        else:
            self._opened.set_exception(exc)

    def _message(self, data: Any) -> None:
        if self._closed:
            return
        if isinstance(data, bytes | bytearray | memoryview):
            try:
                data = bytes(data).decode("utf-8")
            except UnicodeDecodeError:
                return  # the hub only sends text
        if self._early is not None:
            self._early.append(data)
        elif self._on_message is not None:
            self._on_message(data)

    def _handlers(self, on_message: OnSignalingMessage, on_close: OnSignalingClose) -> None:
        """Take the transport's handlers; what arrived meanwhile is delivered on the next loop turn
        (after ``connect_signaling`` has returned, as the seam promises)."""
        self._on_message = on_message
        self._on_close = on_close
        self._session.loop.call_soon(self._flush_early)

    def _flush_early(self) -> None:
        early, self._early = self._early, None
        for text in early or ():
            if self._on_message is None:
                break
            self._on_message(text)
        if self._early_close is not None:
            reason, self._early_close = self._early_close, None
            self._report_close(reason)

    def send(self, text: str) -> None:
        if self._closed or self._channel.ready_state != "open":
            return
        try:
            self._channel.send(text)
        except Exception as exc:  # closed under us: the close event follows
            log.debug("hub send dropped: %r", exc)

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._channel.close()
        except Exception:
            log.debug("hub channel close failed", exc_info=True)
        self.closed_by_peer("closed")

    def closed_by_peer(self, reason: str) -> None:
        """The channel (or the whole hub connection) is gone: tell the transport, once."""
        self._resolve(HubUnreachable(reason))
        if self._closed:
            return
        self._closed = True
        self._session.forget(self)
        if self._early is not None:
            self._early_close = reason  # reported after the frames that came before it
            return
        self._report_close(reason)

    def _report_close(self, reason: str) -> None:
        callback, self._on_close = self._on_close, None
        if callback is not None:
            try:
                callback(reason)
            except Exception:
                log.exception("hub socket close handler raised")


class _HubSession:
    """The one peer connection to the hub and the identity channels riding on it."""

    def __init__(self, connector: HubConnector, loop: asyncio.AbstractEventLoop) -> None:
        self.connector = connector
        self.loop = loop
        self.pc: PeerConnection | None = None
        self.control: DataChannel | None = None
        self.sockets: set[HubSocket] = set()
        self.dead = False
        self.closing: asyncio.Task[None] | None = None
        self.ready: asyncio.Future[None] = loop.create_future()
        self._idle: asyncio.TimerHandle | None = None
        self._pinger: asyncio.TimerHandle | None = None
        self.last_pong = 0.0

    async def start(self) -> None:
        c = self.connector
        pc = self.pc = c.factory.create(RtcConfig(ice_servers=(), ice_transport_policy="all"))
        pc.on("connectionstatechange", self._state)
        control = self.control = pc.create_data_channel(HUB_CONTROL_LABEL, ordered=True)
        control.on("open", lambda *_: self._ready())
        control.on("message", self._control_message)
        control.on("close", lambda *_: self.die("hub connection closed"))
        offer = await pc.create_offer()
        await pc.set_local_description(offer)
        answer = hub_answer(offer.sdp, c.galaxy)
        await pc.set_remote_description(SessionDescription("answer", answer))
        if control.ready_state == "open":
            self._ready()

    def _ready(self) -> None:
        if not self.ready.done() and not self.dead:
            self.ready.set_result(None)
            self.last_pong = self.loop.time()
            self._ping()

    def _ping(self) -> None:
        """Keepalive on the control channel: a hub that stopped answering (killed, unplugged) is
        noticed after ``silent_s`` instead of the ~30 s ICE consent takes."""
        if self.dead:
            return
        if self.loop.time() - self.last_pong > self.connector.silent_s:
            self.die("the hub stopped answering")
            return
        control = self.control
        if control is not None and control.ready_state == "open":
            with contextlib.suppress(Exception):
                control.send("ping")
        self._pinger = self.loop.call_later(self.connector.ping_s, self._ping)

    def _control_message(self, data: Any) -> None:
        if data == "pong" or data == b"pong":
            self.last_pong = self.loop.time()

    def _state(self, state: str) -> None:
        if state in ("failed", "closed"):
            self.die(f"hub connection {state}")

    def open_channel(self, label: str) -> HubSocket:
        assert self.pc is not None
        self.cancel_idle()
        sock = HubSocket(self, self.pc.create_data_channel(label, ordered=True))
        self.sockets.add(sock)
        sock._attach()
        return sock

    def forget(self, sock: HubSocket) -> None:
        self.sockets.discard(sock)
        if not self.sockets and not self.dead:
            self.cancel_idle()
            self._idle = self.loop.call_later(self.connector.idle_s, self.die, "idle")

    def cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def die(self, reason: str) -> None:
        if self.dead:
            return
        self.dead = True
        self.cancel_idle()
        if self._pinger is not None:
            self._pinger.cancel()
            self._pinger = None
        if not self.ready.done():
            self.ready.set_exception(HubUnreachable(reason))
            self.ready.exception()  # retrieved: nobody may be waiting any more
        if self.connector._session is self:
            self.connector._session = None
        for sock in list(self.sockets):
            sock.closed_by_peer(reason)
        pc, self.pc = self.pc, None
        if pc is not None:
            task = self.closing = self.loop.create_task(pc.close())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        if reason != "idle":
            log.info("hub connection lost: %s", reason)


class HubConnector:
    """``connect_signaling`` for :class:`~kibitz.backends.rtc.RtcTransport` through a LAN hub.

    ``factory`` makes the peer connection to the hub (browser or aiortc adapters). The connection
    is made on the first claim and shared by every identity; it closes ``idle_s`` after its last
    identity channel did; it pings the hub every ``ping_s`` on its control channel and gives up on
    a hub silent for ``silent_s``. If it fails, every identity's socket closes (the transport reports
    IdentityLost and the room reclaims, which makes a new connection).
    """

    def __init__(
        self,
        factory: PeerConnectionFactory,
        galaxy: Galaxy,
        *,
        open_timeout_s: float = 10.0,
        idle_s: float = 15.0,
        ping_s: float = 2.5,
        silent_s: float = 8.0,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.factory = factory
        self.galaxy = galaxy
        self.open_timeout_s = open_timeout_s
        self.idle_s = idle_s
        self.ping_s = ping_s
        self.silent_s = silent_s
        self._loop = loop
        self._session: _HubSession | None = None
        self.connections_made = 0

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def _ensure_session(self) -> _HubSession:
        session = self._session
        if session is None or session.dead:
            session = self._session = _HubSession(self, self._get_loop())
            self.connections_made += 1
            try:
                await session.start()
            except Exception as exc:
                session.die(f"cannot make the hub connection: {exc!r}")
                raise HubUnreachable(str(exc)) from exc
        try:
            await asyncio.wait_for(asyncio.shield(session.ready), self.open_timeout_s)
        except TimeoutError as exc:
            session.die("timeout")
            raise HubUnreachable("the hub did not answer (is it on this network?)") from exc
        return session

    async def __call__(
        self, url: str, on_message: OnSignalingMessage, on_close: OnSignalingClose
    ) -> HubSocket:
        label = hub_channel_label(url)
        session = await self._ensure_session()
        sock = session.open_channel(label)
        try:
            await asyncio.wait_for(asyncio.shield(sock._opened), self.open_timeout_s)
        except (TimeoutError, HubUnreachable) as exc:
            sock.close()
            raise HubUnreachable(f"identity channel did not open: {exc}") from exc
        sock._handlers(on_message, on_close)
        return sock

    def close(self) -> None:
        """Drop the hub connection now (every identity socket reports its close)."""
        if self._session is not None:
            self._session.die("closed")

    async def aclose(self) -> None:
        """:meth:`close`, then wait until the peer connection has closed (the hub hears it)."""
        session = self._session
        self.close()
        if session is not None and session.closing is not None:
            await asyncio.wait([session.closing], timeout=5.0)

