"""The one narrow seam between the engine and the network.

Everything the room and the mesh need of the network is: hold a broker identity (``claim``),
open a reliable, ordered message link from one of our identities to another id (``dial``), send
on it, close it, and hear what happened. A link is a WebRTC data channel in the page (through the
JS shim) and in agents (aiortc); on the in-memory bus it is a pair of queues.

Transports report everything as :data:`TransportEvent` values to one sink, in order. The engine
never awaits the network, so the same code runs on asyncio, on Pyodide's WebLoop and on a fake
clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

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


TransportEvent = ClaimResult | IncomingLink | LinkOpened | LinkMessage | LinkClosed | PeerLeft | IdentityLost
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
