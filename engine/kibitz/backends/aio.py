"""CPython adapters for :class:`~kibitz.backends.rtc.RtcTransport`: aiortc + websockets.

aiortc differs from the browser in two ways the adapters hide:

* it does not trickle: candidates are gathered inside ``setLocalDescription`` and only appear in
  the local SDP. :class:`AioPeerConnection` re-emits them as ``icecandidate`` events afterwards
  (then ``None``), so the shared code sees a browser-like peer and PeerJS peers get CANDIDATE
  frames exactly as from a browser;
* its events carry no arguments (``connectionstatechange``) or aiortc objects (``datachannel``);
  the wrappers pass the W3C-shaped values listed in :mod:`kibitz.backends.rtc_api`.

Loopback-only ICE: aioice's ``get_host_addresses`` deliberately skips 127.0.0.1, so on a host
whose only usable interface is ``lo`` (CI sandboxes, this project's tests) aiortc gathers nothing
reachable. ``loopback_only=True`` wraps that one function, narrowly: the wrapper returns
``["127.0.0.1"]`` only while a context variable set by *our* loopback-only peer connections is
true (around their set-description calls, where aiortc gathers), and defers to the original
everywhere else. :func:`uninstall_loopback_patch` restores the original.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, Final

import aioice.ice
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from kibitz.backends.rtc import RtcTransport
from kibitz.backends.rtc_api import (
    EventCallback,
    IceCandidateInit,
    IceServer,
    OnSignalingClose,
    OnSignalingMessage,
    RtcConfig,
    SessionDescription,
)
from kibitz.clock import AsyncioScheduler

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------- loopback-only ICE

_LOOPBACK_ONLY: ContextVar[bool] = ContextVar("kibitz_loopback_only_ice", default=False)
_original_get_host_addresses: Callable[[bool, bool], list[str]] | None = None


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _LOOPBACK_ONLY.get():
        return ["127.0.0.1"] if use_ipv4 else []
    assert _original_get_host_addresses is not None
    return _original_get_host_addresses(use_ipv4, use_ipv6)


def install_loopback_patch() -> None:
    """Wrap ``aioice.ice.get_host_addresses`` (idempotent); inert unless a loopback-only pc gathers."""
    global _original_get_host_addresses
    if _original_get_host_addresses is None:
        _original_get_host_addresses = aioice.ice.get_host_addresses
        aioice.ice.get_host_addresses = _get_host_addresses


def uninstall_loopback_patch() -> None:
    """Put aioice's own ``get_host_addresses`` back."""
    global _original_get_host_addresses
    if _original_get_host_addresses is not None:
        aioice.ice.get_host_addresses = _original_get_host_addresses  # type: ignore[assignment]
        _original_get_host_addresses = None


@contextlib.contextmanager
def _gathering_scope(loopback_only: bool) -> Iterator[None]:
    if not loopback_only:
        yield
        return
    install_loopback_patch()
    token = _LOOPBACK_ONLY.set(True)
    try:
        yield
    finally:
        _LOOPBACK_ONLY.reset(token)


# ------------------------------------------------------------------------------- events


class _Emitter:
    """``on(name, cb)`` listeners; one listener raising never stops the others."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[EventCallback]] = {}

    def on(self, name: str, callback: EventCallback) -> None:
        self._listeners.setdefault(name, []).append(callback)

    def _fire(self, name: str, *args: Any) -> None:
        for callback in list(self._listeners.get(name, ())):
            try:
                callback(*args)
            except Exception:
                log.exception("%s listener raised", name)


class AioDataChannel(_Emitter):
    """:class:`~kibitz.backends.rtc_api.DataChannel` over ``aiortc.RTCDataChannel``."""

    def __init__(self, channel: RTCDataChannel) -> None:
        super().__init__()
        self._channel = channel
        channel.on("open", lambda: self._fire("open"))
        channel.on("message", lambda data: self._fire("message", data))
        channel.on("close", lambda: self._fire("close"))
        channel.on("bufferedamountlow", lambda: self._fire("bufferedamountlow"))

    @property
    def label(self) -> str:
        return str(self._channel.label)

    @property
    def ready_state(self) -> str:
        return str(self._channel.readyState)

    @property
    def buffered_amount(self) -> int:
        return int(self._channel.bufferedAmount)

    @property
    def buffered_amount_low_threshold(self) -> int:
        return int(self._channel.bufferedAmountLowThreshold)

    @buffered_amount_low_threshold.setter
    def buffered_amount_low_threshold(self, value: int) -> None:
        self._channel.bufferedAmountLowThreshold = value

    def send(self, data: str | bytes) -> None:
        self._channel.send(data)

    def close(self) -> None:
        self._channel.close()


def local_candidates(sdp: str) -> list[IceCandidateInit]:
    """The ``a=candidate`` lines of an SDP as ``RTCIceCandidateInit`` dicts, per m-section."""
    found: list[IceCandidateInit] = []
    session_ufrag: str | None = None
    index = -1
    section: list[str] = []
    mid: str | None = None
    ufrag: str | None = None

    def finish() -> None:
        for line in section:
            found.append(
                IceCandidateInit(candidate=line, sdpMid=mid, sdpMLineIndex=index, usernameFragment=ufrag)
            )

    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if index >= 0:
                finish()
            index, section, mid, ufrag = index + 1, [], None, session_ufrag
        elif line.startswith("a=ice-ufrag:"):
            if index < 0:
                session_ufrag = line[len("a=ice-ufrag:") :]
            else:
                ufrag = line[len("a=ice-ufrag:") :]
        elif line.startswith("a=mid:") and index >= 0:
            mid = line[len("a=mid:") :]
        elif line.startswith("a=candidate:") and index >= 0:
            section.append(line[len("a=") :])
    if index >= 0:
        finish()
    return found


class AioPeerConnection(_Emitter):
    """:class:`~kibitz.backends.rtc_api.PeerConnection` over ``aiortc.RTCPeerConnection``."""

    def __init__(self, pc: RTCPeerConnection, *, loopback_only: bool = False) -> None:
        super().__init__()
        self._pc = pc
        self._loopback_only = loopback_only
        pc.on("connectionstatechange", lambda: self._fire("connectionstatechange", self.connection_state))
        pc.on(
            "iceconnectionstatechange",
            lambda: self._fire("iceconnectionstatechange", self.ice_connection_state),
        )
        pc.on("datachannel", lambda channel: self._fire("datachannel", AioDataChannel(channel)))

    @property
    def native(self) -> RTCPeerConnection:
        """The aiortc object, for media work the protocol does not cover yet."""
        return self._pc

    @property
    def connection_state(self) -> str:
        return str(self._pc.connectionState)

    @property
    def ice_connection_state(self) -> str:
        return str(self._pc.iceConnectionState)

    async def create_offer(self) -> SessionDescription:
        desc = await self._pc.createOffer()
        return SessionDescription(type=desc.type, sdp=desc.sdp)

    async def create_answer(self) -> SessionDescription:
        desc = await self._pc.createAnswer()
        return SessionDescription(type=desc.type, sdp=desc.sdp)

    async def set_local_description(self, desc: SessionDescription) -> None:
        with _gathering_scope(self._loopback_only):
            await self._pc.setLocalDescription(RTCSessionDescription(sdp=desc.sdp, type=desc.type))
        local = self._pc.localDescription
        if local is None:
            return
        # Trickle what aiortc gathered, asynchronously like a browser, then end-of-candidates.
        loop = asyncio.get_running_loop()
        for cand in local_candidates(local.sdp):
            loop.call_soon(self._fire, "icecandidate", cand)
        loop.call_soon(self._fire, "icecandidate", None)

    async def set_remote_description(self, desc: SessionDescription) -> None:
        with _gathering_scope(self._loopback_only):
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=desc.sdp, type=desc.type))

    async def add_ice_candidate(self, candidate: IceCandidateInit | None) -> None:
        if candidate is None or not candidate.get("candidate"):
            await self._pc.addIceCandidate(None)
            return
        text = candidate["candidate"]
        if text.startswith("candidate:"):
            text = text[len("candidate:") :]
        ice = candidate_from_sdp(text)
        ice.sdpMid = candidate.get("sdpMid")
        ice.sdpMLineIndex = candidate.get("sdpMLineIndex")
        await self._pc.addIceCandidate(ice)

    def create_data_channel(self, label: str, *, ordered: bool = True) -> AioDataChannel:
        return AioDataChannel(self._pc.createDataChannel(label, ordered=ordered))

    def restart_ice(self) -> None:
        log.info("aiortc does not support ICE restart; ignoring restart_ice()")

    async def close(self) -> None:
        await self._pc.close()


def _ice_server(server: IceServer) -> RTCIceServer:
    return RTCIceServer(
        urls=server["urls"], username=server.get("username"), credential=server.get("credential")
    )


class AioPeerConnectionFactory:
    """Makes :class:`AioPeerConnection` objects; ``loopback_only`` gathers 127.0.0.1 only."""

    def __init__(self, *, loopback_only: bool = False) -> None:
        self.loopback_only = loopback_only

    def create(self, config: RtcConfig) -> AioPeerConnection:
        policy = (
            RTCIceTransportPolicy.RELAY
            if config.ice_transport_policy == "relay"
            else RTCIceTransportPolicy.ALL
        )
        native = RTCPeerConnection(
            configuration=RTCConfiguration(
                iceServers=[_ice_server(s) for s in config.ice_servers], iceTransportPolicy=policy
            )
        )
        return AioPeerConnection(native, loopback_only=self.loopback_only)


# ---------------------------------------------------------------------------- signaling socket


class AioSignalingSocket:
    """:class:`~kibitz.backends.rtc_api.SignalingSocket` over a ``websockets`` client connection.

    One writer task drains a queue so frames leave in ``send`` order even under backpressure.
    """

    def __init__(
        self, ws: ClientConnection, on_message: OnSignalingMessage, on_close: OnSignalingClose
    ) -> None:
        self._ws = ws
        self._on_message = on_message
        self._on_close = on_close
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._closed = False
        self._close_reported = False
        self._reader = asyncio.create_task(self._read())
        self._writer = asyncio.create_task(self._write())

    def send(self, text: str) -> None:
        if not self._closed:
            self._outbox.put_nowait(text)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._outbox.put_nowait(None)  # the writer closes the socket after flushing

    async def _write(self) -> None:
        try:
            while (text := await self._outbox.get()) is not None:
                await self._ws.send(text)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("broker socket writer failed")
        finally:
            self._closed = True
            await self._ws.close()

    async def _read(self) -> None:
        reason = "closed"
        try:
            while True:
                message = await self._ws.recv()
                if isinstance(message, str):
                    try:
                        self._on_message(message)
                    except Exception:
                        log.exception("broker frame handler raised")
        except ConnectionClosed as exc:
            if not self._closed:
                if exc.rcvd is not None:
                    detail = f" {exc.rcvd.reason}" if exc.rcvd.reason else ""
                    reason = f"closed by broker (code {exc.rcvd.code}{detail})"
                else:
                    reason = "connection to broker lost"
        except Exception as exc:
            reason = f"error: {exc!r}"
        self._closed = True
        self._outbox.put_nowait(None)
        if not self._close_reported:
            self._close_reported = True
            try:
                self._on_close(reason)
            except Exception:
                log.exception("broker close handler raised")


async def connect_signaling(
    url: str, on_message: OnSignalingMessage, on_close: OnSignalingClose
) -> AioSignalingSocket:
    """Open a broker WebSocket (raises on failure); see :data:`~kibitz.backends.rtc_api.ConnectSignaling`."""
    ws = await connect(url, open_timeout=10, max_size=1 << 20, compression=None, ping_interval=None)
    return AioSignalingSocket(ws, on_message, on_close)


def make_aio_transport(
    broker_url: str,
    *,
    key: str = "peerjs",
    ice_servers: Iterable[IceServer] = (),
    ice_transport_policy: str = "all",
    loopback_only: bool = False,
    **options: Any,
) -> RtcTransport:
    """An :class:`RtcTransport` on the running asyncio loop with aiortc peer connections.

    ``options`` go to :class:`RtcTransport` (``heartbeat_s``, ``open_timeout_s``, ``rng``...).
    """
    policy: Final = "relay" if ice_transport_policy == "relay" else "all"
    return RtcTransport(
        AioPeerConnectionFactory(loopback_only=loopback_only),
        connect_signaling,
        broker_url=broker_url,
        key=key,
        rtc_config=RtcConfig(ice_servers=tuple(ice_servers), ice_transport_policy=policy),
        scheduler=AsyncioScheduler(asyncio.get_running_loop()),
        **options,
    )
