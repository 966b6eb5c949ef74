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
  ``track``                   reserved for media (a later step); adapters may ignore it now
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

Media (``add_transceiver`` / ``replace_track`` / ``get_transceivers`` and the ``track`` event)
is deliberately not part of the protocol yet; it will be added to :class:`PeerConnection` as
optional members so existing data-only adapters keep working.

This module imports neither ``aiortc`` nor ``websockets`` nor ``js``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, Protocol, TypedDict

EventCallback = Callable[..., Any]
"""A listener; its argument (if any) depends on the event name, see the module docstring."""

DataChannelState = Literal["connecting", "open", "closing", "closed"]
PeerConnectionState = Literal["new", "connecting", "connected", "disconnected", "failed", "closed"]
IceConnectionState = Literal["new", "checking", "connected", "completed", "disconnected", "failed", "closed"]
IceTransportPolicy = Literal["all", "relay"]
SdpType = Literal["offer", "answer", "pranswer", "rollback"]


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
    """``RTCPeerConnection``, data-channel subset (media is a later, additive step)."""

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


class PeerConnectionFactory(Protocol):
    """Makes peer connections; the only place a backend chooses its WebRTC stack."""

    def create(self, config: RtcConfig) -> PeerConnection: ...


class SignalingSocket(Protocol):
    """An open WebSocket to the broker carrying JSON text frames."""

    def send(self, text: str) -> None:
        """Queue one text frame; never blocks. Dropped silently once the socket is closed."""

    def close(self) -> None:
        """Close the socket. ``on_close`` still fires (once), with reason ``"closed"``."""


OnSignalingMessage = Callable[[str], None]
OnSignalingClose = Callable[[str], None]

ConnectSignaling = Callable[[str, OnSignalingMessage, OnSignalingClose], Awaitable[SignalingSocket]]
"""``connect_signaling(url, on_message, on_close)``: opens the socket or raises.

``on_message(text)`` is called for every text frame (binary frames are dropped by the adapter),
``on_close(reason)`` exactly once after a successful open, when the socket closes for any reason.
Neither is called before the awaitable resolves.
"""
