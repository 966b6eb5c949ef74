"""The two small adapter seams under :class:`~kibitz.backends.rtc.RtcTransport`.

The signaling and link logic is written once, against these W3C-shaped protocols, so the page
(Pyodide, adapters wrapping ``RTCPeerConnection`` / ``WebSocket`` through ``js``) and CPython
(aiortc + websockets, in :mod:`kibitz.backends.aio`) run the same code. Names follow the W3C API
in snake_case; methods whose W3C counterpart returns a promise are ``async`` here.

Rules for adapter authors:

* asyncio only (it runs on Pyodide's WebLoop too): no threads, no blocking calls.
* Callbacks registered with ``on(name, cb)`` are invoked on the event loop, never from another
  thread. Several callbacks may be registered for one event; they run in registration order.
  An adapter must not let one callback's exception stop the others (log it).
* Event names and their callback argument:

  ========================== ===============================================================
  PeerConnection event        callback argument
  ========================== ===============================================================
  ``icecandidate``            :class:`IceCandidateInit` dict, or ``None`` at end of gathering
  ``datachannel``             :class:`DataChannel` (a channel the remote side created)
  ``connectionstatechange``   the new ``connection_state`` (str)
  ``iceconnectionstatechange`` the new ``ice_connection_state`` (str)
  ``track``                   :class:`TrackEvent` (media adapters only, see below)
  ========================== ===============================================================

  ========================== ===============================================================
  DataChannel event           callback argument
  ========================== ===============================================================
  ``open``                    none
  ``message``                 ``str`` (text frame) or ``bytes`` (binary frame)
  ``close``                   none
  ``error``                   a short human-readable ``str``
  ``bufferedamountlow``       none
  ========================== ===============================================================

Media is optional. A factory whose ``supports_media`` attribute is true promises that its peer
connections are :class:`MediaPeerConnection` (the data members plus the media members below); a
factory without the attribute (or with it false) is data-only and is never asked for media.

Media members (W3C ``RTCPeerConnection`` / ``RTCRtpTransceiver`` / ``RTCRtpSender``, snake_case):

* ``add_transceiver(kind, *, direction="sendrecv") -> Transceiver``: ``kind`` is ``"audio"`` or
  ``"video"``; called by the dialer before ``create_offer`` so the offer always carries both
  m-sections. The transceiver's sender starts with no track.
* ``get_transceivers() -> list[Transceiver]``: in m-line order, the *same wrapper object* for the
  same underlying transceiver every time (the transport keeps references to senders). After
  ``set_remote_description(offer)`` it includes the transceivers the offer created.
* ``Transceiver``: ``mid`` (``None`` until negotiated), ``kind``, ``direction`` (read/write; the
  answerer sets ``"sendrecv"`` before ``create_answer``, or ``"inactive"`` on links that carry no
  media), ``current_direction``, ``sender``, ``receiver``.
* ``RtpSender.replace_track(track | None)`` (async, never renegotiates) and ``RtpSender.track``.
  ``track`` is the backend's native local track (aiortc ``MediaStreamTrack`` in CPython, a JS
  ``MediaStreamTrack`` in the page), passed through untouched; ``None`` = send no packets at all.
  The adapter must allow one track on several senders at once (browsers do; aiortc needs a
  fan-out, see :mod:`kibitz.backends.aio`) and must never stop a track it was handed.
* ``RtpReceiver.track``: the remote :class:`MediaTrack` (``None`` before the remote description).
* ``track`` event: one :class:`TrackEvent` per transceiver whose remote side may send, fired
  during/after ``set_remote_description``; ``mid`` identifies the m-section.
* ``get_stats() -> list[dict]`` (async): W3C ``RTCStatsReport`` entries as plain dicts with the W3C
  camelCase keys (``type``, ``kind``, ``mid``, ``packetsReceived``, ``bytesReceived``,
  ``framesDecoded``...; whatever the stack provides, at least ``type`` and ``kind`` and, for
  ``"inbound-rtp"``, ``packetsReceived``). Entries for a stream appear once its first packet does.

This module imports neither ``aiortc`` nor ``websockets`` nor ``js``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, Protocol, TypedDict, runtime_checkable

EventCallback = Callable[..., Any]
_log = logging.getLogger(__name__)
"""A listener; its argument (if any) depends on the event name, see the module docstring."""

DataChannelState = Literal["connecting", "open", "closing", "closed"]
PeerConnectionState = Literal["new", "connecting", "connected", "disconnected", "failed", "closed"]
IceConnectionState = Literal["new", "checking", "connected", "completed", "disconnected", "failed", "closed"]
IceTransportPolicy = Literal["all", "relay"]
SdpType = Literal["offer", "answer", "pranswer", "rollback"]
MediaKind = Literal["audio", "video"]
TransceiverDirection = Literal["sendrecv", "sendonly", "recvonly", "inactive", "stopped"]


class IceServer(TypedDict):
    """One ``RTCIceServer``: ``urls`` is one URL or a list (stun:, turn:, turns:)."""

    urls: str | list[str]
    username: NotRequired[str]
    credential: NotRequired[str]


class IceCandidateInit(TypedDict, total=False):
    """``RTCIceCandidateInit`` / ``RTCIceCandidate.toJSON()``: exactly what PeerJS puts on the wire."""

    candidate: str
    sdpMid: str | None
    sdpMLineIndex: int | None
    usernameFragment: str | None


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """``RTCSessionDescriptionInit``."""

    type: str
    sdp: str

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "sdp": self.sdp}


@dataclass(frozen=True, slots=True)
class RtcConfig:
    """``RTCConfiguration``, reduced to what Kibitz sets."""

    ice_servers: tuple[IceServer, ...] = field(default_factory=tuple)
    ice_transport_policy: IceTransportPolicy = "all"


class DataChannel(Protocol):
    """``RTCDataChannel``. ``send`` queues and never blocks; ``buffered_amount`` shows the queue."""

    @property
    def label(self) -> str: ...

    @property
    def ready_state(self) -> str:
        """One of :data:`DataChannelState`."""

    @property
    def buffered_amount(self) -> int: ...

    @property
    def buffered_amount_low_threshold(self) -> int: ...

    @buffered_amount_low_threshold.setter
    def buffered_amount_low_threshold(self, value: int) -> None: ...

    def send(self, data: str | bytes) -> None:
        """Text goes out as a text frame, bytes as a binary frame. Raises if not open."""

    def close(self) -> None: ...

    def on(self, name: str, callback: EventCallback) -> None: ...


class PeerConnection(Protocol):
    """``RTCPeerConnection``, data-channel subset (media: :class:`MediaPeerConnection`)."""

    @property
    def connection_state(self) -> str:
        """One of :data:`PeerConnectionState`."""

    @property
    def ice_connection_state(self) -> str:
        """One of :data:`IceConnectionState`."""

    async def create_offer(self) -> SessionDescription: ...

    async def create_answer(self) -> SessionDescription: ...

    async def set_local_description(self, desc: SessionDescription) -> None: ...

    async def set_remote_description(self, desc: SessionDescription) -> None: ...

    async def add_ice_candidate(self, candidate: IceCandidateInit | None) -> None:
        """Add a trickled remote candidate; ``None`` (or an empty ``candidate``) = end of candidates."""

    def create_data_channel(self, label: str, *, ordered: bool = True) -> DataChannel: ...

    def restart_ice(self) -> None: ...

    def on(self, name: str, callback: EventCallback) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class ClosesAtOnce(Protocol):
    """A peer connection that can also close synchronously (the browser's ``close()`` is): the
    transport then closes it on the spot instead of in a task, which a page entering the
    back/forward cache needs (the browser decides right after ``pagehide`` returns)."""

    def close_now(self) -> None: ...


class MediaTrack(Protocol):
    """``MediaStreamTrack``, the part the engine may read: what adapters hand out as remote tracks."""

    @property
    def kind(self) -> str:
        """``"audio"`` or ``"video"``."""

    @property
    def id(self) -> str: ...

    @property
    def enabled(self) -> bool: ...

    @enabled.setter
    def enabled(self, value: bool) -> None: ...

    @property
    def ready_state(self) -> str:
        """``"live"`` or ``"ended"``."""

    def stop(self) -> None: ...


class RtpSender(Protocol):
    """``RTCRtpSender``: only track swapping; parameters and DTMF are not used."""

    @property
    def track(self) -> object | None:
        """The native local track being sent, or ``None``."""

    async def replace_track(self, track: object | None) -> None:
        """Swap what is sent, without renegotiation; ``None`` = send nothing."""


class RtpReceiver(Protocol):
    """``RTCRtpReceiver``."""

    @property
    def track(self) -> MediaTrack | None: ...


class Transceiver(Protocol):
    """``RTCRtpTransceiver``."""

    @property
    def mid(self) -> str | None: ...

    @property
    def kind(self) -> str:
        """``"audio"`` or ``"video"`` (W3C reads it from ``receiver.track.kind``)."""

    @property
    def direction(self) -> str:
        """One of :data:`TransceiverDirection`."""

    @direction.setter
    def direction(self, value: str) -> None: ...

    @property
    def current_direction(self) -> str | None: ...

    @property
    def sender(self) -> RtpSender: ...

    @property
    def receiver(self) -> RtpReceiver: ...


@dataclass(frozen=True, slots=True)
class TrackEvent:
    """``RTCTrackEvent``, reduced: a remote track and the m-section (``mid``) it belongs to."""

    kind: str
    track: MediaTrack
    mid: str | None
    transceiver: Transceiver | None = None


class MediaPeerConnection(PeerConnection, Protocol):
    """A :class:`PeerConnection` from a factory with ``supports_media = True``."""

    def add_transceiver(
        self, kind: MediaKind, *, direction: TransceiverDirection = "sendrecv"
    ) -> Transceiver: ...

    def get_transceivers(self) -> list[Transceiver]: ...

    async def get_stats(self) -> list[dict[str, Any]]: ...


class PeerConnectionFactory(Protocol):
    """Makes peer connections; the only place a backend chooses its WebRTC stack.

    Optional attribute ``supports_media: bool`` (read with ``getattr(..., False)``): true when
    :meth:`create` returns :class:`MediaPeerConnection` objects.
    """

    def create(self, config: RtcConfig) -> PeerConnection: ...


class SignalingSocket(Protocol):
    """An open WebSocket to the broker carrying JSON text frames."""

    def send(self, text: str) -> None:
        """Queue one text frame; never blocks. Dropped silently once the socket is closed."""

    def close(self) -> None:
        """Close the socket. ``on_close`` still fires (once), with reason ``"closed"``."""


class CloseReason(str):
    """Why a broker socket closed, in words, with the WebSocket close code when the broker sent one.

    A ``str`` (callbacks that only log it keep working); ``code`` lets the transport act on it: a
    broker closes with 1008 (policy violation) right after ``ID-TAKEN``, and a browser may report
    only the close, without the frame before it (Firefox, when the broker drops the connection at
    once), so a 1008 while claiming means the id is taken.
    """

    code: int | None

    def __new__(cls, text: str, code: int | None = None) -> CloseReason:
        made = super().__new__(cls, text)
        made.code = code
        return made

    @classmethod
    def by_broker(cls, code: int | None, reason: str | None) -> CloseReason:
        """The broker closed the socket with this close ``code`` and ``reason`` (either may be missing)."""
        detail = f" {reason}" if reason else ""
        return cls(f"closed by broker (code {code}{detail})", code)


CLOSE_POLICY_VIOLATION = 1008

OnSignalingMessage = Callable[[str], None]
OnSignalingClose = Callable[[str], None]

ConnectSignaling = Callable[[str, OnSignalingMessage, OnSignalingClose], Awaitable[SignalingSocket]]
"""``connect_signaling(url, on_message, on_close)``: opens the socket or raises.

``on_message(text)`` is called for every text frame (binary frames are dropped by the adapter),
``on_close(reason)`` exactly once after a successful open, when the socket closes for any reason
(a :class:`CloseReason` carrying the broker's close code where there is one).
Neither is called before the awaitable resolves.
"""


class EventListeners:
    """``on(name, cb)`` listeners for the adapters; one listener raising never stops the others.

    Both adapter families (aiortc and the page) re-emit their native events through this, so an
    exception in engine code never unwinds into aiortc's or the browser's event loop.
    """

    def __init__(self) -> None:
        self._listeners: dict[str, list[EventCallback]] = {}

    def on(self, name: str, callback: EventCallback) -> None:
        self._listeners.setdefault(name, []).append(callback)

    def fire(self, name: str, *args: Any) -> None:
        for callback in list(self._listeners.get(name, ())):
            try:
                callback(*args)
            except Exception:
                _log.exception("%s listener raised", name)


class W3CDataChannelState:
    """The data-channel members both adapter families read straight off a W3C-shaped native object
    (aiortc's ``RTCDataChannel`` and the browser's share the camelCase names); subclasses provide
    ``_w3c``, the native channel."""

    @property
    def _w3c(self) -> Any:
        raise NotImplementedError

    @property
    def label(self) -> str:
        return str(self._w3c.label)

    @property
    def ready_state(self) -> str:
        return str(self._w3c.readyState)

    @property
    def buffered_amount(self) -> int:
        return int(self._w3c.bufferedAmount)

    @property
    def buffered_amount_low_threshold(self) -> int:
        return int(self._w3c.bufferedAmountLowThreshold)

    @buffered_amount_low_threshold.setter
    def buffered_amount_low_threshold(self, value: int) -> None:
        self._w3c.bufferedAmountLowThreshold = int(value)

    def close(self) -> None:
        self._w3c.close()


class W3CPeerConnectionState:
    """The peer-connection members both adapter families share: states and offer/answer creation,
    read off the W3C-shaped native object that ``_w3c`` returns."""

    @property
    def _w3c(self) -> Any:
        raise NotImplementedError

    @property
    def connection_state(self) -> str:
        return str(self._w3c.connectionState)

    @property
    def ice_connection_state(self) -> str:
        return str(self._w3c.iceConnectionState)

    async def create_offer(self) -> SessionDescription:
        desc = await self._w3c.createOffer()
        return SessionDescription(str(desc.type), str(desc.sdp))

    async def create_answer(self) -> SessionDescription:
        desc = await self._w3c.createAnswer()
        return SessionDescription(str(desc.type), str(desc.sdp))
