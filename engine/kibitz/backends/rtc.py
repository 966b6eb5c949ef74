"""The real network behind the Transport seam: PeerJS-compatible signaling + WebRTC data channels.

Written once against :mod:`kibitz.backends.rtc_api`, so the page (Pyodide adapters over the
browser's ``RTCPeerConnection`` / ``WebSocket``) and CPython (aiortc + websockets, see
:mod:`kibitz.backends.aio`) run exactly this code.

Shape of the work (:class:`RtcTransport` is a thin facade over two halves, one protocol each):

* every claimed broker id is one WebSocket to the broker (PeerJS protocol, heartbeats), checked
  for life with a probe the broker echoes: a socket whose network went away without a close (the
  machine changed networks, a NAT forgot it) is otherwise "open" for many minutes while nothing
  reaches it. That is the broker half, :class:`~kibitz.backends.rtc_broker.BrokerIdentities`;
* every link is one ``RTCPeerConnection`` with one reliable, ordered data channel, negotiated
  through the broker with PeerJS-shaped OFFER/ANSWER/CANDIDATE frames and trickled candidates.
  That is the link half, :class:`~kibitz.backends.rtc_links.RtcLinks`;
* links whose label is in ``media_labels`` (when the factory ``supports_media``) also carry one
  sendrecv audio and one sendrecv video transceiver, offered by the dialer up-front, so either
  side can send either kind from the start; :meth:`RtcTransport.set_lane` swaps sender tracks on
  the live connection and never renegotiates (there is exactly one OFFER and one ANSWER per link).
  Each media link's lanes are a :class:`~kibitz.backends.rtc_lanes.LaneSet`;
* outcomes become :data:`~kibitz.transport.TransportEvent` values, delivered to the sink in order
  and never from inside a Transport call, so the engine can call back into the transport from its
  sink without re-entrancy: they are queued for a ``call_soon`` callback, except an inbound message
  arriving in a native callback with nothing queued ahead of it, which is delivered at once (the
  hot path saves a loop hop per message). Both halves share that queue, the loop and the task set
  (:class:`~kibitz.backends.rtc_loop.RtcLoop`).

The halves talk through two small interfaces: the broker half hands the frames it receives and the
news that a peer or one of our ids went away to the link half
(:class:`~kibitz.backends.rtc_broker.LinkSide`: ``on_offer``, ``on_answer``, ``on_candidate``,
``on_peer_left``, ``on_peer_unreachable``, ``on_identity_lost``); the link half asks the broker half
whether an id is open, sends its frames and asks for a probe of an id's socket when a link fails
(:class:`~kibitz.backends.rtc_links.BrokerSide`: ``is_open``, ``send_frame``, ``probe``).

The timing constants are re-exported here; they are read where they are used
(:mod:`kibitz.backends.rtc_broker`, :mod:`kibitz.backends.rtc_links`), so patch them there.

These modules must stay importable under Pyodide: asyncio only, no aiortc, websockets or ``js``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kibitz.backends.rtc_api import ConnectSignaling, PeerConnectionFactory, RtcConfig
from kibitz.backends.rtc_broker import PROBE_EVERY_BEATS, PROBE_TIMEOUT_S, BrokerIdentities
from kibitz.backends.rtc_lanes import LaneWant, PlaceholderTracks
from kibitz.backends.rtc_links import (
    DISCONNECTED_GRACE_S,
    MAX_PENDING_CANDIDATES,
    REMOTE_FP_WAIT_S,
    RtcLinks,
)
from kibitz.backends.rtc_loop import RtcLoop
from kibitz.clock import Scheduler
from kibitz.protocol.base import DropCounter
from kibitz.transport import EventSink, Lane, LaneDefault, LinkId, Payload

if TYPE_CHECKING:
    from kibitz.backends.rtc_broker import _Identity
    from kibitz.backends.rtc_links import _Link

__all__ = [
    "DISCONNECTED_GRACE_S",
    "MAX_PENDING_CANDIDATES",
    "PROBE_EVERY_BEATS",
    "PROBE_TIMEOUT_S",
    "REMOTE_FP_WAIT_S",
    "LaneWant",
    "PlaceholderTracks",
    "RtcTransport",
]


class RtcTransport:
    """:class:`~kibitz.transport.Transport` (and :class:`~kibitz.transport.MediaTransport`) over a
    PeerJS broker and WebRTC.

    ``media_labels``: links with these labels carry audio+video lanes (when the factory
    ``supports_media``). ``placeholder_tracks``: makes the flowing placeholders a media link sends
    until :meth:`set_lane` says otherwise; without it a lane's default is "send nothing".
    ``drops`` counts malformed or unexpected broker frames (they are never raised).
    """

    def __init__(
        self,
        factory: PeerConnectionFactory,
        connect_signaling: ConnectSignaling,
        *,
        broker_url: str,
        key: str = "peerjs",
        rtc_config: RtcConfig,
        scheduler: Scheduler,
        heartbeat_s: float = 5.0,
        open_timeout_s: float = 10.0,
        claim_timeout_s: float = 10.0,
        rng: random.Random | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        media_labels: frozenset[str] = frozenset({"kbz-data"}),
        placeholder_tracks: PlaceholderTracks | None = None,
    ) -> None:
        rng = rng or random.Random()
        self.drops = DropCounter()
        self._out = RtcLoop(loop)
        self._broker = BrokerIdentities(  # checks the broker URL first: fails fast on a bad one
            connect_signaling, broker_url=broker_url, key=key, scheduler=scheduler,
            heartbeat_s=heartbeat_s, claim_timeout_s=claim_timeout_s, rng=rng, out=self._out,
            drops=self.drops,
        )
        self._link_side = RtcLinks(
            factory, rtc_config=rtc_config, scheduler=scheduler, open_timeout_s=open_timeout_s,
            rng=rng, out=self._out, drops=self.drops, broker=self._broker,
            media_labels=media_labels, placeholder_tracks=placeholder_tracks,
        )
        self._broker.links = self._link_side

    @property
    def _identities(self) -> dict[str, _Identity]:
        """Our ids on the broker (tests look inside)."""
        return self._broker.identities

    @property
    def _links(self) -> dict[LinkId, _Link]:
        """Our links (tests look inside)."""
        return self._link_side.links

    # ------------------------------------------------------------------------ Transport protocol

    def bind(self, sink: EventSink) -> None:
        self._out.sink = sink

    def claim(self, peer_id: str) -> None:
        self._broker.claim(peer_id)

    def release(self, peer_id: str) -> None:
        self._broker.release(peer_id)
        self._link_side.release(peer_id)

    def dial(self, local_id: str, remote_id: str, label: str) -> LinkId:
        return self._link_side.dial(local_id, remote_id, label)

    def send(self, link: LinkId, data: Payload) -> None:
        self._link_side.send(link, data)

    def buffered_amount(self, link: LinkId) -> int:
        return self._link_side.buffered_amount(link)

    def close(self, link: LinkId) -> None:
        self._link_side.close(link)

    # ------------------------------------------------------------------- MediaTransport protocol

    def set_lane(self, link: LinkId, lane: Lane, track: object | LaneDefault | None) -> None:
        self._link_side.set_lane(link, lane, track)

    async def link_stats(self, link: LinkId) -> list[dict[str, Any]]:
        return await self._link_side.link_stats(link)

    def lane_source(self, link: LinkId, lane: Lane) -> object | LaneDefault | None:
        """What ``set_lane`` last asked ``lane`` of ``link`` to send (:data:`PLACEHOLDER` if never)."""
        return self._link_side.lane_source(link, lane)

    # ------------------------------------------------------------------------- certificates

    def local_fingerprint(self) -> str | None:
        """Our certificate's fingerprint, when the factory keeps one certificate for every link."""
        return self._link_side.local_fingerprint()

    def remote_fingerprint(self, link: LinkId) -> str | None:
        return self._link_side.remote_fingerprint(link)

    # ------------------------------------------------------------------------------- extras

    async def shutdown(self) -> None:
        """Release every id and close every link (no events), then wait for peer connections to close.

        The far side of each link sees its channel close, as if this process went away politely.
        """
        self.close_now()
        await self._out.drain(5.0)

    @property
    def rtc_config(self) -> RtcConfig:
        return self._link_side.rtc_config

    def set_broker_resolver(self, resolve: Callable[[str], Awaitable[str | None]] | None) -> None:
        """Ask ``resolve(failed_url)`` (``GET /api/signal?failed=`` again) for the broker URL before
        the next claim whenever the current broker could not be reached or dropped a socket: a
        service of several nodes moves a room to another node when its node dies (docs/scale.md).
        ``None`` or a failure keeps the URL we have."""
        self._broker.set_broker_resolver(resolve)

    @property
    def broker_url(self) -> str:
        return self._broker.broker_url

    def set_rtc_config(self, config: RtcConfig) -> None:
        """Use ``config`` for every peer connection made from now on (fresh TURN credentials before
        the old ones expire). Live connections keep theirs: a relay allocation outlives the expiry
        of the credentials that created it, and changing it would mean an ICE restart."""
        self._link_side.set_rtc_config(config)

    def close_now(self) -> None:
        """The synchronous part of :meth:`shutdown`: release every id (the broker tells our contacts
        we left) and close every peer connection before returning. A page going into the
        back/forward cache needs this: the browser decides right after ``pagehide`` returns, and a
        live peer connection keeps the page out."""
        for peer_id in list(self._broker.identities):
            self.release(peer_id)
        self._link_side.close_all()

    @property
    def claimed_ids(self) -> list[str]:
        return self._broker.claimed_ids
