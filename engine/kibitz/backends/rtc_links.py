"""The link half of :class:`~kibitz.backends.rtc.RtcTransport`: one WebRTC connection per link.

:class:`RtcLinks` dials and answers (OFFER/ANSWER/CANDIDATE through the broker, candidates held
back until the description they follow is set or sent), opens a link once its channel is open and
the far end's certificate is read (waiting briefly for a backend that reads it late), fails links
that never open or whose ICE stays disconnected, and turns all of it into link events. A media
link's lanes are a :class:`~kibitz.backends.rtc_lanes.LaneSet`. Broker sockets are the broker
half's: frames go out through :class:`BrokerSide` and come in through the ``on_*`` methods of
:class:`~kibitz.backends.rtc_broker.LinkSide`.

This module must stay importable under Pyodide: asyncio only, no aiortc or ``js``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from kibitz.backends import signaling
from kibitz.backends.rtc_api import (
    ClosesAtOnce,
    DataChannel,
    IceCandidateInit,
    MediaPeerConnection,
    PeerConnection,
    PeerConnectionFactory,
    RtcConfig,
    SessionDescription,
    TrackEvent,
)
from kibitz.backends.rtc_lanes import LaneSet, PlaceholderTracks, adopt_transceivers
from kibitz.backends.rtc_loop import RtcLoop
from kibitz.backends.signaling import AnswerPayload, CandidatePayload, OfferPayload
from kibitz.clock import Scheduler, TimerHandle
from kibitz.protocol.base import DropCounter
from kibitz.transport import (
    LANES,
    PLACEHOLDER,
    IncomingLink,
    Lane,
    LaneDefault,
    LinkClosed,
    LinkId,
    LinkMessage,
    LinkOpened,
    Payload,
    TrackArrived,
)

log = logging.getLogger("kibitz.backends.rtc")  # one logger for the whole transport

MAX_PENDING_CANDIDATES = 64
"""Remote candidates kept while the remote description is not set yet; more is abuse."""
REMOTE_FP_WAIT_S = 5.0
"""How long an opened link waits for a backend that reads the far end's certificate late."""

DISCONNECTED_GRACE_S = 5.0
"""A link whose ICE stays ``disconnected`` this long is closed (and re-dialled by the mesh) instead
of waiting for ``failed`` (~30 s in Chromium): after an address change a peer that cannot follow the
move by itself (aiortc renominates nothing once connected) would otherwise stall for that long."""


class BrokerSide(Protocol):
    """What the link half asks of the broker half, for our id ``local_id``."""

    def is_open(self, local_id: str) -> bool:
        """``local_id`` is claimed and its broker socket is open."""

    def send_frame(self, local_id: str, text: str) -> bool:
        """Send a signaling frame; False (nothing sent) when ``local_id`` has no open socket."""

    def probe(self, local_id: str) -> None:
        """Check ``local_id``'s broker socket now (a link failed: maybe our network went)."""


@dataclass(eq=False)
class _Link:
    link_id: LinkId
    local_id: str
    remote_id: str
    label: str
    connection_id: str
    role: Literal["dial", "answer"]
    state: Literal["new", "open", "closed"] = "new"
    pc: PeerConnection | None = None
    channel: DataChannel | None = None
    remote_set: bool = False
    answer_seen: bool = False
    local_sent: bool = False
    """Our OFFER/ANSWER went out: local candidates may follow it (never precede it)."""
    pending_remote: list[IceCandidateInit] = field(default_factory=list)
    pending_local: list[IceCandidateInit] = field(default_factory=list)
    open_timer: TimerHandle | None = None
    disconnected_timer: TimerHandle | None = None
    lanes: LaneSet | None = None
    """This link negotiates audio+video lanes (label in ``media_labels`` and a media factory)."""
    pending_tracks: list[TrackArrived] = field(default_factory=list)
    remote_fp: str | None = None
    """The far end's DTLS certificate fingerprint, read from the live connection when it opened."""
    awaiting_fp: TimerHandle | None = None
    """The channel opened but the backend reads the far end's certificate a moment later (the
    page's peer connections live on another thread): the link opens when it arrives (or when this
    timer gives up on it). Messages that come meanwhile wait in ``early``."""
    early: list[Any] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.local_id, self.remote_id, self.connection_id)


def _gone(link: _Link) -> bool:
    """``link.state == "closed"``, as a call so type narrowing does not survive an ``await``."""
    return link.state == "closed"


class RtcLinks:
    """The links of one transport: dial, answer, send, close; events for each.

    ``media_labels``: links with these labels carry audio+video lanes (when the factory
    ``supports_media``). ``placeholder_tracks``: makes the flowing placeholders a media link sends
    until ``set_lane`` says otherwise; without it a lane's default is "send nothing".
    """

    def __init__(
        self,
        factory: PeerConnectionFactory,
        *,
        rtc_config: RtcConfig,
        scheduler: Scheduler,
        open_timeout_s: float,
        rng: random.Random,
        out: RtcLoop,
        drops: DropCounter,
        broker: BrokerSide,
        media_labels: frozenset[str],
        placeholder_tracks: PlaceholderTracks | None,
    ) -> None:
        self._factory = factory
        self._rtc_config = rtc_config
        self._scheduler = scheduler
        self._open_timeout_s = open_timeout_s
        self._rng = rng
        self._out = out
        self._guard = out.guard
        self.drops = drops
        self._broker = broker
        self._media = bool(getattr(factory, "supports_media", False))
        self._media_labels = media_labels
        self._placeholder_tracks = placeholder_tracks
        self.links: dict[LinkId, _Link] = {}
        self._by_key: dict[tuple[str, str, str], _Link] = {}
        self._link_seq = itertools.count(1)

    def _new_link(self, local_id: str, remote_id: str, label: str, connection_id: str,
                  role: Literal["dial", "answer"]) -> _Link:
        link_id = f"rtc-{next(self._link_seq)}"
        media = self._media and label in self._media_labels
        return _Link(link_id=link_id, local_id=local_id, remote_id=remote_id, label=label,
                     connection_id=connection_id, role=role,
                     lanes=LaneSet(link_id, self._placeholder_tracks, self.drops) if media else None)

    # ---------------------------------------------------------------------- for the transport

    def dial(self, local_id: str, remote_id: str, label: str) -> LinkId:
        link = self._new_link(local_id, remote_id, label, signaling.new_connection_id(self._rng), "dial")
        if not self._broker.is_open(local_id):
            self._out.emit(LinkClosed(link.link_id, "not-claimed"))
            return link.link_id
        if remote_id == local_id:
            self._out.emit(LinkClosed(link.link_id, "dial-to-self"))
            return link.link_id
        self._register(link)
        self._spawn_for(link, self._run_dial(link))
        return link.link_id

    def send(self, link: LinkId, data: Payload) -> None:
        lk = self.links.get(link)
        if lk is None or lk.state != "open" or lk.channel is None:
            return
        try:
            lk.channel.send(data)
        except Exception as exc:  # closed under us: the close event will follow
            log.debug("send on %s dropped: %r", link, exc)

    def buffered_amount(self, link: LinkId) -> int:
        lk = self.links.get(link)
        if lk is None or lk.channel is None:
            return 0
        try:
            return int(lk.channel.buffered_amount)
        except Exception:
            return 0

    def close(self, link: LinkId) -> None:
        lk = self.links.get(link)
        if lk is not None:
            self._teardown(lk)

    def release(self, local_id: str) -> None:
        """Close every link of our id ``local_id`` (no events)."""
        for link in [lk for lk in self.links.values() if lk.local_id == local_id]:
            self._teardown(link)

    def close_all(self) -> None:
        """Close every link (no events)."""
        for link in list(self.links.values()):
            self._teardown(link)

    # ------------------------------------------------------------------- MediaTransport protocol

    def set_lane(self, link: LinkId, lane: Lane, track: object | LaneDefault | None) -> None:
        if lane not in LANES:
            raise ValueError(f"unknown media lane {lane!r} (expected one of {LANES})")
        lk = self.links.get(link)
        if lk is None or lk.lanes is None:
            return
        lk.lanes.wants[lane] = track
        if lk.lanes.needs_apply():
            self._spawn_for(lk, lk.lanes.apply())

    async def link_stats(self, link: LinkId) -> list[dict[str, Any]]:
        lk = self.links.get(link)
        if lk is None or lk.pc is None or not self._media:
            return []
        try:
            return list(await cast(MediaPeerConnection, lk.pc).get_stats())
        except Exception:
            log.debug("get_stats failed on %s", link, exc_info=True)
            return []

    def lane_source(self, link: LinkId, lane: Lane) -> object | LaneDefault | None:
        """What ``set_lane`` last asked ``lane`` of ``link`` to send (:data:`PLACEHOLDER` if never)."""
        lk = self.links.get(link)
        return PLACEHOLDER if lk is None or lk.lanes is None else lk.lanes.wants.get(lane, PLACEHOLDER)

    # ------------------------------------------------------------------------- certificates

    def local_fingerprint(self) -> str | None:
        """Our certificate's fingerprint, when the factory keeps one certificate for every link."""
        fp = getattr(self._factory, "local_fingerprint", None)
        return fp() if callable(fp) else None

    def remote_fingerprint(self, link: LinkId) -> str | None:
        lk = self.links.get(link)
        if lk is None:
            return None
        if lk.remote_fp is None and lk.state == "open":
            lk.remote_fp = self._read_remote_fp(lk)
        return lk.remote_fp

    def _read_remote_fp(self, link: _Link) -> str | None:
        read = getattr(link.pc, "remote_fingerprint", None)
        if not callable(read):
            return None
        try:
            fp = read()
        except Exception:
            log.debug("remote certificate of %s unreadable", link.link_id, exc_info=True)
            return None
        return str(fp) if fp else None

    @property
    def rtc_config(self) -> RtcConfig:
        return self._rtc_config

    def set_rtc_config(self, config: RtcConfig) -> None:
        """Use ``config`` for every peer connection made from now on (fresh TURN credentials before
        the old ones expire). Live connections keep theirs: a relay allocation outlives the expiry
        of the credentials that created it, and changing it would mean an ICE restart."""
        self._rtc_config = config

    def _spawn_for(self, link: _Link, coro: Coroutine[Any, Any, None]) -> None:
        """Run link work; any exception fails that link instead of escaping to the loop."""

        async def guarded() -> None:
            try:
                await coro
            except Exception as exc:
                if link.state != "closed":
                    log.warning("link %s failed: %r", link.link_id, exc)
                    self._fail(link, f"error: {exc}")

        self._out.spawn(guarded())

    def _send_broker(self, link: _Link, text: str) -> None:
        if not self._broker.send_frame(link.local_id, text):
            log.debug("no broker socket for %s; dropping signaling for %s", link.local_id, link.link_id)

    # ------------------------------------------------------------------------------ links

    def _register(self, link: _Link) -> None:
        self.links[link.link_id] = link
        self._by_key[link.key] = link
        link.open_timer = self._scheduler.call_later(
            self._open_timeout_s, lambda: self._on_open_timeout(link)
        )

    def _on_open_timeout(self, link: _Link) -> None:
        link.open_timer = None
        if link.state == "new":
            self._fail(link, "timeout")

    def _unregister(self, link: _Link) -> None:
        link.state = "closed"
        self.links.pop(link.link_id, None)
        if self._by_key.get(link.key) is link:
            del self._by_key[link.key]
        for timer in (link.open_timer, link.disconnected_timer, link.awaiting_fp):
            if timer is not None:
                timer.cancel()
        link.open_timer = link.disconnected_timer = link.awaiting_fp = None
        link.early.clear()
        link.pending_local.clear()
        link.pending_remote.clear()
        link.pending_tracks.clear()
        if link.lanes is not None:
            link.lanes.close()
        if link.channel is not None:
            try:
                link.channel.close()
            except Exception:
                log.debug("channel close failed on %s", link.link_id, exc_info=True)
        if link.pc is not None:
            pc, link.pc = link.pc, None
            if isinstance(pc, ClosesAtOnce):
                pc.close_now()
            else:
                self._out.spawn(self._close_pc(pc))

    async def _close_pc(self, pc: PeerConnection) -> None:
        try:
            await pc.close()
        except Exception:
            log.debug("peer connection close failed", exc_info=True)

    def _teardown(self, link: _Link) -> None:
        """Local close: no event."""
        if link.state != "closed":
            self._unregister(link)

    def _fail(self, link: _Link, reason: str) -> None:
        if link.state == "closed":
            return
        self._unregister(link)
        self._out.emit(LinkClosed(link.link_id, reason))
        if reason in ("timeout", "ice-failed", "ice-disconnected"):
            # Maybe it is our side that lost the network: check the broker socket now, not at the
            # next periodic probe (a re-dial through a dead socket would only time out again).
            self._broker.probe(link.local_id)

    def _new_pc(self, link: _Link) -> PeerConnection:
        pc = self._factory.create(self._rtc_config)
        link.pc = pc
        pc.on("icecandidate", self._guard(lambda cand: self._on_local_candidate(link, cand)))
        pc.on("datachannel", self._guard(lambda ch: self._attach_channel(link, ch)))
        pc.on("connectionstatechange", self._guard(lambda state: self._on_pc_state(link, state)))
        pc.on("remotefingerprint", self._guard(lambda *_: self._on_remote_fp(link)))
        if self._media:
            pc.on("track", self._guard(lambda ev: self._on_track(link, ev)))
        return pc

    def _on_track(self, link: _Link, event: TrackEvent) -> None:
        lanes = link.lanes
        if lanes is None or event.kind not in LANES or link.state == "closed":
            return
        if event.kind in lanes.arrived:
            return  # an extra m-section of that kind (made inactive): the first one is the lane
        lanes.arrived.add(event.kind)
        arrived = TrackArrived(link.link_id, event.kind, event.track)
        if link.state == "open":
            self._out.emit(arrived)
        else:
            link.pending_tracks.append(arrived)

    def _attach_channel(self, link: _Link, channel: DataChannel) -> None:
        if link.state == "closed" or (link.channel is not None and link.channel is not channel):
            channel.close()  # one channel per link; anything else is unexpected
            return
        link.channel = channel
        channel.on("open", self._guard(lambda *_: self._on_channel_open(link)))
        # No _guard here: the adapters already shield their native loop from a raising listener
        # (rtc_api.EventListeners, BrowserDataChannel), and this is the per-message path.
        channel.on("message", functools.partial(self._on_channel_message, link))
        channel.on("close", self._guard(lambda *_: self._fail(link, "closed")))
        channel.on("error", self._guard(lambda *a: log.info("channel error on %s: %s", link.link_id, a)))
        if channel.ready_state == "open":
            self._on_channel_open(link)

    def _on_channel_open(self, link: _Link) -> None:
        if link.state != "new" or link.awaiting_fp is not None:
            return
        link.remote_fp = self._read_remote_fp(link)
        if link.remote_fp is None and self._fp_pending(link):
            # Identity checks read the certificate as the link opens: wait for it (briefly).
            link.awaiting_fp = self._scheduler.call_later(
                REMOTE_FP_WAIT_S, lambda: self._finish_open(link))
            return
        self._finish_open(link)

    def _fp_pending(self, link: _Link) -> bool:
        pending = getattr(link.pc, "remote_fingerprint_pending", None)
        return bool(pending()) if callable(pending) else False

    def _on_remote_fp(self, link: _Link) -> None:
        if link.awaiting_fp is not None and link.state == "new":
            link.remote_fp = self._read_remote_fp(link)
            if link.remote_fp is not None:
                self._finish_open(link)

    def _finish_open(self, link: _Link) -> None:
        if link.state != "new":
            return
        if link.awaiting_fp is not None:
            link.awaiting_fp.cancel()
            link.awaiting_fp = None
            if link.remote_fp is None:
                link.remote_fp = self._read_remote_fp(link)
                if link.remote_fp is None:
                    log.info("link %s opens without the far end's certificate", link.link_id)
        link.state = "open"
        if link.open_timer is not None:
            link.open_timer.cancel()
            link.open_timer = None
        self._out.emit(LinkOpened(link.link_id))
        pending, link.pending_tracks = link.pending_tracks, []
        for arrived in pending:
            self._out.emit(arrived)
        early, link.early = link.early, []
        for data in early:
            self._on_channel_message(link, data)

    def _on_channel_message(self, link: _Link, data: Any) -> None:
        if link.state != "open":
            if link.state != "new":
                return
            self._on_channel_open(link)  # a message proves the channel is open; keep events ordered
            if link.awaiting_fp is not None:  # still reading the far end's certificate
                link.early.append(data)
                return
        if type(data) is not str and type(data) is not bytes:
            if isinstance(data, bytearray | memoryview):
                data = bytes(data)
            elif not isinstance(data, str | bytes):
                self.drops.drop("link:bad-payload-type")
                return
        self._out.hand_over(LinkMessage(link.link_id, data))  # the hot path: at once if it can

    def _on_pc_state(self, link: _Link, state: str) -> None:
        if state == "failed":
            self._fail(link, "ice-failed")
        elif state == "closed":
            self._fail(link, "closed")
        elif state == "disconnected":
            if link.disconnected_timer is None and link.state != "closed":
                link.disconnected_timer = self._scheduler.call_later(
                    DISCONNECTED_GRACE_S, lambda: self._still_disconnected(link)
                )
                # If it is our network that went, the re-dial will need a working broker socket:
                # find out now, not after the grace.
                self._broker.probe(link.local_id)
        elif link.disconnected_timer is not None:  # connected again (or connecting)
            link.disconnected_timer.cancel()
            link.disconnected_timer = None

    def _still_disconnected(self, link: _Link) -> None:
        link.disconnected_timer = None
        pc = link.pc
        if pc is not None and getattr(pc, "connection_state", None) == "disconnected":
            self._fail(link, "ice-disconnected")

    def _on_local_candidate(self, link: _Link, cand: IceCandidateInit | None) -> None:
        if link.state == "closed" or not cand or not cand.get("candidate"):
            return  # PeerJS never sends end-of-candidates; neither do we
        if link.local_sent:
            self._send_candidate(link, cand)
        else:
            link.pending_local.append(cand)

    def _send_candidate(self, link: _Link, cand: IceCandidateInit) -> None:
        self._send_broker(
            link, signaling.candidate_frame(link.remote_id, connection_id=link.connection_id, candidate=cand)
        )

    def _description_sent(self, link: _Link) -> None:
        link.local_sent = True
        pending, link.pending_local = link.pending_local, []
        for cand in pending:
            self._send_candidate(link, cand)

    async def _remote_description(self, link: _Link, pc: PeerConnection, desc: SessionDescription) -> None:
        await pc.set_remote_description(desc)
        if _gone(link):
            return
        link.remote_set = True
        pending, link.pending_remote = link.pending_remote, []
        for cand in pending:
            await pc.add_ice_candidate(cand)

    async def _run_dial(self, link: _Link) -> None:
        pc = self._new_pc(link)
        if link.lanes is not None:
            link.lanes.add_transceivers(cast(MediaPeerConnection, pc))
            await link.lanes.apply()
            if _gone(link):
                return
        self._attach_channel(link, pc.create_data_channel(link.connection_id, ordered=True))
        offer = await pc.create_offer()
        if _gone(link):
            return
        await pc.set_local_description(offer)
        if _gone(link):
            return
        frame = signaling.offer_frame(
            link.remote_id, connection_id=link.connection_id, sdp=offer, label=link.label
        )
        self._send_broker(link, frame)
        self._description_sent(link)

    # ------------------------------------------------------------- from the broker (LinkSide)

    def on_offer(self, local_id: str, src: str, offer: OfferPayload) -> None:
        if offer.kind != "data":
            self.drops.drop("broker:offer-unsupported-kind")
            return
        if (local_id, src, offer.connection_id) in self._by_key:
            self.drops.drop("broker:offer-duplicate")
            return
        link = self._new_link(local_id, src, offer.label, offer.connection_id, "answer")
        self._register(link)
        self._out.emit(IncomingLink(link.link_id, link.local_id, link.remote_id, link.label))
        self._spawn_for(link, self._run_answer(link, offer.sdp))

    async def _run_answer(self, link: _Link, offer: SessionDescription) -> None:
        pc = self._new_pc(link)
        await self._remote_description(link, pc, offer)
        if _gone(link):
            return
        if self._media:
            adopt_transceivers(cast(MediaPeerConnection, pc), link.lanes)
        if link.lanes is not None and link.lanes.senders:
            await link.lanes.apply()
            if _gone(link):
                return
        answer = await pc.create_answer()
        if _gone(link):
            return
        await pc.set_local_description(answer)
        if _gone(link):
            return
        self._send_broker(
            link, signaling.answer_frame(link.remote_id, connection_id=link.connection_id, sdp=answer)
        )
        self._description_sent(link)

    def on_answer(self, local_id: str, src: str, answer: AnswerPayload) -> None:
        link = self._by_key.get((local_id, src, answer.connection_id))
        if link is None or link.role != "dial" or link.answer_seen or link.pc is None or link.state != "new":
            self.drops.drop("broker:answer-unexpected")
            return
        link.answer_seen = True
        self._spawn_for(link, self._remote_description(link, link.pc, answer.sdp))

    def on_candidate(self, local_id: str, src: str, cand: CandidatePayload) -> None:
        link = self._by_key.get((local_id, src, cand.connection_id))
        if link is None:
            self.drops.drop("broker:candidate-unknown-connection")
            return
        if not link.remote_set or link.pc is None:
            if len(link.pending_remote) >= MAX_PENDING_CANDIDATES:
                self.drops.drop("broker:candidate-overflow")
                return
            link.pending_remote.append(cand.candidate)
            return
        self._spawn_for(link, link.pc.add_ice_candidate(cand.candidate))

    def on_peer_left(self, src: str) -> None:
        for link in [lk for lk in self.links.values() if lk.remote_id == src]:
            self._fail(link, "peer-left")

    def on_peer_unreachable(self, local_id: str, src: str) -> bool:
        """Links still negotiating with ``src`` can never open. Open links are peer-to-peer and are
        left alone (their peer may only have lost its broker socket)."""
        doomed = [
            lk
            for lk in self.links.values()
            if lk.local_id == local_id and lk.remote_id == src and lk.state == "new"
        ]
        for link in doomed:
            self._fail(link, "peer-unavailable")
        return bool(doomed)

    def on_identity_lost(self, local_id: str) -> None:
        # Links still negotiating need the broker; established ones are peer-to-peer and survive.
        for link in [lk for lk in self.links.values() if lk.local_id == local_id and lk.state == "new"]:
            self._fail(link, "identity-lost")
