"""CPython adapters for :class:`~kibitz.backends.rtc.RtcTransport`: aiortc + websockets.

aiortc differs from the browser in two ways the adapters hide:

* it does not trickle: candidates are gathered inside ``setLocalDescription`` and only appear in
  the local SDP. :class:`AioPeerConnection` re-emits them as ``icecandidate`` events afterwards
  (then ``None``), so the shared code sees a browser-like peer and PeerJS peers get CANDIDATE
  frames exactly as from a browser;
* its events carry no arguments (``connectionstatechange``) or aiortc objects (``datachannel``);
  the wrappers pass the W3C-shaped values listed in :mod:`kibitz.backends.rtc_api`;
* media: its tracks are pulled by their consumer and carry their own timestamps, so each sender
  holds a :class:`~kibitz.backends.aio_media.SenderLane` for life and ``replace_track`` only
  changes what that lane forwards; received tracks arrive as
  :class:`~kibitz.backends.aio_media.RemoteLane` (drained, bounded). See
  :mod:`kibitz.backends.aio_media`.

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
import dataclasses
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
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcdtlstransport import RTCCertificate
from aiortc.sdp import candidate_from_sdp
from cryptography.hazmat.primitives.serialization import Encoding
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from kibitz.backends.aio_cert import certificate_fingerprint, new_certificate
from kibitz.backends.aio_media import FanoutRegistry, RemoteLane, SenderLane, placeholder_tracks
from kibitz.backends.hub_signaling import HUB_BROKER_URL, HubConnector
from kibitz.backends.rtc import RtcTransport
from kibitz.backends.rtc_api import (
    CloseReason,
    ConnectSignaling,
    EventListeners,
    IceCandidateInit,
    IceServer,
    MediaKind,
    OnSignalingClose,
    OnSignalingMessage,
    RtcConfig,
    SessionDescription,
    TrackEvent,
    TransceiverDirection,
    W3CDataChannelState,
    W3CPeerConnectionState,
)
from kibitz.clock import AsyncioScheduler
from kibitz.galaxy import Galaxy
from kibitz.identity.binding import fingerprint_of_der

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


class AioDataChannel(W3CDataChannelState, EventListeners):
    """:class:`~kibitz.backends.rtc_api.DataChannel` over ``aiortc.RTCDataChannel``."""

    def __init__(self, channel: RTCDataChannel) -> None:
        super().__init__()
        self._channel = channel
        channel.on("open", lambda: self.fire("open"))
        channel.on("message", lambda data: self.fire("message", data))
        channel.on("close", lambda: self.fire("close"))
        channel.on("bufferedamountlow", lambda: self.fire("bufferedamountlow"))

    @property
    def _w3c(self) -> RTCDataChannel:
        return self._channel

    def send(self, data: str | bytes) -> None:
        self._channel.send(data)


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


class AioRtpSender:
    """:class:`~kibitz.backends.rtc_api.RtpSender`: the native sender always holds our lane."""

    def __init__(self, native: Any, lane: SenderLane) -> None:
        self._native = native
        self.lane = lane
        native.replaceTrack(lane)

    @property
    def track(self) -> MediaStreamTrack | None:
        return self.lane.source

    async def replace_track(self, track: object | None) -> None:
        if track is not None and not isinstance(track, MediaStreamTrack):
            raise TypeError(f"expected an aiortc MediaStreamTrack or None, got {type(track).__name__}")
        self.lane.set_source(track)

    async def get_stats(self) -> Any:
        return await self._native.getStats()


class AioRtpReceiver:
    """:class:`~kibitz.backends.rtc_api.RtpReceiver`; ``track`` is set when the remote track arrives."""

    def __init__(self, native: Any) -> None:
        self.native = native
        self.track: RemoteLane | None = None


class AioTransceiver:
    """:class:`~kibitz.backends.rtc_api.Transceiver` over ``aiortc.RTCRtpTransceiver``."""

    def __init__(self, native: RTCRtpTransceiver, registry: FanoutRegistry) -> None:
        self.native = native
        self.sender = AioRtpSender(native.sender, SenderLane(native.kind, registry))
        self.receiver = AioRtpReceiver(native.receiver)

    @property
    def mid(self) -> str | None:
        return self.native.mid

    @property
    def kind(self) -> str:
        return str(self.native.kind)

    @property
    def direction(self) -> str:
        return str(self.native.direction)

    @direction.setter
    def direction(self, value: str) -> None:
        self.native.direction = value

    @property
    def current_direction(self) -> str | None:
        return self.native.currentDirection


def _stat_dict(stat: Any) -> dict[str, Any]:
    is_instance = dataclasses.is_dataclass(stat) and not isinstance(stat, type)
    out = dataclasses.asdict(stat) if is_instance else dict(vars(stat))
    ts = out.get("timestamp")
    if ts is not None and hasattr(ts, "timestamp"):
        out["timestamp"] = ts.timestamp() * 1000.0  # W3C: DOMHighResTimeStamp, ms
    return out


class AioPeerConnection(W3CPeerConnectionState, EventListeners):
    """:class:`~kibitz.backends.rtc_api.MediaPeerConnection` over ``aiortc.RTCPeerConnection``."""

    def __init__(
        self, pc: RTCPeerConnection, *, loopback_only: bool = False, registry: FanoutRegistry | None = None
    ) -> None:
        super().__init__()
        self._pc = pc
        self._loopback_only = loopback_only
        self._registry = registry if registry is not None else FanoutRegistry()
        self._transceivers: dict[RTCRtpTransceiver, AioTransceiver] = {}
        pc.on("track", self._on_native_track)
        pc.on("connectionstatechange", lambda: self.fire("connectionstatechange", self.connection_state))
        pc.on(
            "iceconnectionstatechange",
            lambda: self.fire("iceconnectionstatechange", self.ice_connection_state),
        )
        pc.on("datachannel", lambda channel: self.fire("datachannel", AioDataChannel(channel)))

    @property
    def native(self) -> RTCPeerConnection:
        """The aiortc object (tests and diagnostics)."""
        return self._pc

    @property
    def _w3c(self) -> RTCPeerConnection:
        return self._pc

    async def set_local_description(self, desc: SessionDescription) -> None:
        with _gathering_scope(self._loopback_only):
            await self._pc.setLocalDescription(RTCSessionDescription(sdp=desc.sdp, type=desc.type))
        local = self._pc.localDescription
        if local is None:
            return
        # Trickle what aiortc gathered, asynchronously like a browser, then end-of-candidates.
        loop = asyncio.get_running_loop()
        for cand in local_candidates(local.sdp):
            loop.call_soon(self.fire, "icecandidate", cand)
        loop.call_soon(self.fire, "icecandidate", None)

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

    def remote_fingerprint(self) -> str | None:
        """SHA-256 of the certificate the far end presented in the DTLS handshake (None before it)."""
        dtls = getattr(self._pc.sctp, "transport", None)
        if dtls is None:
            for native in self._pc.getTransceivers():
                dtls = native.receiver.transport
                break
        ssl = getattr(dtls, "_ssl", None)
        cert = ssl.get_peer_certificate(as_cryptography=True) if ssl is not None else None
        return fingerprint_of_der(cert.public_bytes(Encoding.DER)) if cert is not None else None

    # ---------------------------------------------------------------------------------- media

    def _wrap(self, native: RTCRtpTransceiver) -> AioTransceiver:
        wrapped = self._transceivers.get(native)
        if wrapped is None:
            wrapped = self._transceivers[native] = AioTransceiver(native, self._registry)
        return wrapped

    def add_transceiver(
        self, kind: MediaKind, *, direction: TransceiverDirection = "sendrecv"
    ) -> AioTransceiver:
        if kind not in ("audio", "video"):
            raise ValueError(f"kind must be 'audio' or 'video', got {kind!r}")
        return self._wrap(self._pc.addTransceiver(kind, direction=direction))

    def get_transceivers(self) -> list[AioTransceiver]:
        return [self._wrap(t) for t in self._pc.getTransceivers()]

    def _on_native_track(self, native_track: MediaStreamTrack) -> None:
        for native in self._pc.getTransceivers():
            if native.receiver.track is native_track:
                tr = self._wrap(native)
                remote = RemoteLane(native_track)
                tr.receiver.track = remote
                event = TrackEvent(kind=remote.kind, track=remote, mid=native.mid, transceiver=tr)
                self.fire("track", event)
                return
        log.debug("remote track %s without a transceiver; ignored", native_track.id)

    async def get_stats(self) -> list[dict[str, Any]]:
        """W3C-shaped stats; inbound/outbound entries gain ``mid`` and, from our own counters,
        ``framesDecoded`` (video) / ``totalSamplesReceived`` (audio); ``bytesReceived`` is not
        available from aiortc's inbound stats."""
        report = await self._pc.getStats()
        by_id: dict[str, AioTransceiver] = {}
        for native in self._pc.getTransceivers():
            tr = self._wrap(native)
            by_id["inbound-rtp_" + str(id(native.receiver))] = tr
            by_id["outbound-rtp_" + str(id(native.sender))] = tr
        out: list[dict[str, Any]] = []
        for key, stat in report.items():
            entry = _stat_dict(stat)
            found = by_id.get(str(key))
            if found is not None:
                entry["mid"] = found.mid
                remote = found.receiver.track
                if entry.get("type") == "inbound-rtp" and remote is not None:
                    entry["trackIdentifier"] = remote.id
                    if remote.kind == "video":
                        entry["framesDecoded"] = remote.frames_received
                    else:
                        entry["totalSamplesReceived"] = remote.samples_received
            out.append(entry)
        return out

    async def close(self) -> None:
        await self._pc.close()


def _ice_server(server: IceServer) -> RTCIceServer:
    return RTCIceServer(
        urls=server["urls"], username=server.get("username"), credential=server.get("credential")
    )


class AioPeerConnectionFactory:
    """Makes :class:`AioPeerConnection` objects; ``loopback_only`` gathers 127.0.0.1 only.

    Media-capable. Its peer connections share one fan-out registry, so a track set on many links
    is read once.
    """

    supports_media = True

    def __init__(self, *, loopback_only: bool = False, certificate: RTCCertificate | None = None) -> None:
        self.loopback_only = loopback_only
        self.fanouts = FanoutRegistry()
        # One certificate for every connection (aiortc would make one per connection), so peers see
        # one fingerprint for this process and an identity token bound to it holds on every link.
        self.certificate = certificate or new_certificate()
        self._fp = certificate_fingerprint(self.certificate)

    def local_fingerprint(self) -> str:
        return self._fp

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
        native._RTCPeerConnection__certificates = [self.certificate]  # type: ignore[attr-defined]
        return AioPeerConnection(native, loopback_only=self.loopback_only, registry=self.fanouts)


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
                    reason = CloseReason.by_broker(exc.rcvd.code, exc.rcvd.reason)
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
    certificate: RTCCertificate | None = None,
    galaxy: Galaxy | None = None,
    **options: Any,
) -> RtcTransport:
    """An :class:`RtcTransport` on the running asyncio loop with aiortc peer connections.

    ``galaxy``: signal through that LAN hub (over WebRTC, :mod:`kibitz.backends.hub_signaling`)
    instead of a broker WebSocket; ``broker_url`` is then ignored.
    ``options`` go to :class:`RtcTransport` (``heartbeat_s``, ``open_timeout_s``, ``rng``,
    ``media_labels``...). Media links send the placeholders of
    :func:`~kibitz.backends.aio_media.placeholder_tracks` unless ``placeholder_tracks`` is given.
    """
    options.setdefault("placeholder_tracks", placeholder_tracks)
    policy: Final = "relay" if ice_transport_policy == "relay" else "all"
    factory = AioPeerConnectionFactory(loopback_only=loopback_only, certificate=certificate)
    connect: ConnectSignaling = connect_signaling
    if galaxy is not None:
        connect = HubConnector(factory, galaxy)
        broker_url = HUB_BROKER_URL
    return RtcTransport(
        factory,
        connect,
        broker_url=broker_url,
        key=key,
        rtc_config=RtcConfig(ice_servers=tuple(ice_servers), ice_transport_policy=policy),
        scheduler=AsyncioScheduler(asyncio.get_running_loop()),
        **options,
    )
