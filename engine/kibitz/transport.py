"""The one narrow seam between the engine and the network.

Everything the room and the mesh need of the network is: hold a broker identity (``claim``),
open a reliable, ordered message link from one of our identities to another id (``dial``), send
on it, close it, and hear what happened. A link is a WebRTC data channel in the page (through the
JS shim) and in agents (aiortc); on the in-memory bus it is a pair of queues.

Transports report everything as :data:`TransportEvent` values to one sink, in order. The engine
never awaits the network, so the same code runs on asyncio, on Pyodide's WebLoop and on a fake
clock.

Media is an optional second protocol, :class:`MediaTransport`: lanes on the same links, swapped
with :meth:`MediaTransport.set_lane`, remote tracks reported as :class:`TrackArrived` (sinks that
do not do media ignore that event).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, runtime_checkable

LinkId = str
"""Opaque, unique per transport; never reused."""

Payload = str | bytes

ClaimOutcome = Literal["claimed", "taken", "error"]


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """Answer to :meth:`Transport.claim`: we hold ``peer_id`` now, someone else does, or it failed."""

    peer_id: str
    outcome: ClaimOutcome
    detail: str = ""


@dataclass(frozen=True, slots=True)
class IncomingLink:
    """A remote id dialled one of our identities; the link is accepted and will report LinkOpened."""

    link: LinkId
    local_id: str
    remote_id: str
    label: str


@dataclass(frozen=True, slots=True)
class LinkOpened:
    link: LinkId


@dataclass(frozen=True, slots=True)
class LinkMessage:
    link: LinkId
    data: Payload


@dataclass(frozen=True, slots=True)
class LinkClosed:
    """The link is gone for good (closed by either side, ICE failed, or never opened)."""

    link: LinkId
    reason: str


@dataclass(frozen=True, slots=True)
class PeerLeft:
    """The broker says ``peer_id`` disconnected (LEAVE/EXPIRE): faster than any heartbeat."""

    peer_id: str


@dataclass(frozen=True, slots=True)
class IdentityLost:
    """Our own broker identity ``peer_id`` dropped (socket closed, taken over, expired)."""

    peer_id: str
    reason: str


Lane = Literal["audio", "video"]
"""A media lane of a link: one sendrecv m-section negotiated when the link is dialled."""

LANES: Final[tuple[Lane, ...]] = ("audio", "video")


class LaneDefault(enum.Enum):
    """Marker for :meth:`MediaTransport.set_lane`: send the backend's own flowing placeholder."""

    PLACEHOLDER = "placeholder"


PLACEHOLDER: Final = LaneDefault.PLACEHOLDER


@dataclass(frozen=True, slots=True)
class TrackArrived:
    """A remote media track for ``lane`` of an open media link (reported after its LinkOpened).

    ``track`` is a backend object: an aiortc ``MediaStreamTrack`` (also satisfying
    :class:`kibitz.backends.rtc_api.MediaTrack`) in CPython, a JS ``MediaStreamTrack`` proxy in the
    page. It lives as long as the link; the lane's content changes (placeholder, camera, screen)
    without a new TrackArrived, because swaps never renegotiate.
    """

    link: LinkId
    lane: Lane
    track: object


TransportEvent = (
    ClaimResult
    | IncomingLink
    | LinkOpened
    | LinkMessage
    | LinkClosed
    | PeerLeft
    | IdentityLost
    | TrackArrived
)
EventSink = Callable[[TransportEvent], None]


class Transport(Protocol):
    """What a backend implements. Calls never block; outcomes arrive as events on the sink."""

    def bind(self, sink: EventSink) -> None:
        """Set where events go. Called once, before any other call."""

    def claim(self, peer_id: str) -> None:
        """Register ``peer_id`` with the broker; answered by one :class:`ClaimResult`."""

    def release(self, peer_id: str) -> None:
        """Give up ``peer_id`` and close every link that belongs to it (no events for those)."""

    def dial(self, local_id: str, remote_id: str, label: str) -> LinkId:
        """Open a link from our ``local_id`` to ``remote_id``; answered by LinkOpened or LinkClosed."""

    def send(self, link: LinkId, data: Payload) -> None:
        """Queue ``data`` on an open link. Sending on a closed link is silently dropped."""

    def buffered_amount(self, link: LinkId) -> int:
        """Bytes queued on the link and not yet handed to the network (for backpressure)."""

    def close(self, link: LinkId) -> None:
        """Close a link; the local side reports no LinkClosed for a link it closed itself."""


@runtime_checkable
class CertifiedTransport(Protocol):
    """Optional: a transport whose links are DTLS sessions with certificates it can name.

    Fingerprints are SHA-256 in lower-case colon-hex, read from the live connection (the remote
    certificate the DTLS handshake actually presented), never from SDP, which the signalling path
    could rewrite. One certificate serves every link of the process (the page keeps it in IndexedDB,
    an agent on disk), so a token bound to it (:mod:`kibitz.identity.binding`) holds on every link.
    """

    def local_fingerprint(self) -> str | None:
        """Our own certificate's fingerprint, or None when the backend has none to offer."""

    def remote_fingerprint(self, link: LinkId) -> str | None:
        """The fingerprint of the certificate the far end of ``link`` presented (known once the
        link has opened), or None (unknown link, not open yet, or unreadable)."""


@runtime_checkable
class MediaTransport(Protocol):
    """Optional media side of a :class:`Transport` whose media links (e.g. label ``kbz-data``) carry
    one audio and one video lane, negotiated once when the link is dialled.

    Every change after that (mic, camera, screen share, withholding a lane from a peer) is a
    sender track swap on the live link, never a new offer/answer: renegotiation churn is what
    crashes mobile WebKit. Links with other labels (``kbz-presence``) have no lanes.
    """

    def set_lane(self, link: LinkId, lane: Lane, track: object | LaneDefault | None) -> None:
        """Send ``track`` (a backend track object, see :class:`TrackArrived`) on ``lane`` of ``link``.

        :data:`PLACEHOLDER` (every lane's initial state) sends the backend's flowing placeholder
        (2x2 black video at a low frame rate, silent audio): the way to withhold a lane, since a
        lane without samples is treated as dead by some browsers. ``None`` sends no packets at
        all; use it only where the receiver must get nothing (an agent without a media grant).

        Never blocks and never raises for an unknown, closed or non-media link (ignored); raises
        ``ValueError`` for a lane other than ``"audio"``/``"video"``. A track the backend cannot
        send is logged and counted, and the link stays up. The swap runs
        asynchronously; the last call wins; a call made before the link's lanes exist (even before
        it opens) is applied as soon as they do. The caller keeps ownership of ``track``: the
        transport never stops it, and one track may feed many links.
        """

    def link_stats(self, link: LinkId) -> Awaitable[list[dict[str, Any]]]:
        """W3C ``getStats()`` entries of the link's peer connection as dicts; ``[]`` if unknown."""
