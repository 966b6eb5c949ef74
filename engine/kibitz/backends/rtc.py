"""The real network behind the Transport seam: PeerJS-compatible signaling + WebRTC data channels.

Written once against :mod:`kibitz.backends.rtc_api`, so the page (Pyodide adapters over the
browser's ``RTCPeerConnection`` / ``WebSocket``) and CPython (aiortc + websockets, see
:mod:`kibitz.backends.aio`) run exactly this code.

Shape of the work:

* every claimed broker id is one WebSocket to the broker (PeerJS protocol, heartbeats), checked
  for life with a probe the broker echoes (see :meth:`RtcTransport._probe`): a socket whose network
  went away without a close (the machine changed networks, a NAT forgot it) is otherwise "open"
  for many minutes while nothing reaches it;
* every link is one ``RTCPeerConnection`` with one reliable, ordered data channel, negotiated
  through the broker with PeerJS-shaped OFFER/ANSWER/CANDIDATE frames and trickled candidates;
* links whose label is in ``media_labels`` (when the factory ``supports_media``) also carry one
  sendrecv audio and one sendrecv video transceiver, offered by the dialer up-front, so either
  side can send either kind from the start; :meth:`RtcTransport.set_lane` swaps sender tracks on
  the live connection and never renegotiates (there is exactly one OFFER and one ANSWER per link);
* outcomes become :data:`~kibitz.transport.TransportEvent` values, delivered to the sink in order
  and never from inside a Transport call, so the engine can call back into the transport from its
  sink without re-entrancy: they are queued for a ``call_soon`` callback, except an inbound message
  arriving in a native callback with nothing queued ahead of it, which is delivered at once (the
  hot path saves a loop hop per message).

This module must stay importable under Pyodide: asyncio only, no aiortc, websockets or ``js``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from kibitz.backends import signaling
from kibitz.backends.rtc_api import (
    CLOSE_POLICY_VIOLATION,
    ClosesAtOnce,
    ConnectSignaling,
    DataChannel,
    IceCandidateInit,
    MediaPeerConnection,
    PeerConnection,
    PeerConnectionFactory,
    RtcConfig,
    RtpSender,
    SessionDescription,
    SignalingSocket,
    TrackEvent,
)
from kibitz.backends.signaling import AnswerPayload, BrokerFrame, CandidatePayload, OfferPayload
from kibitz.clock import Scheduler, TimerHandle
from kibitz.protocol.base import DropCounter
from kibitz.transport import (
    LANES,
    PLACEHOLDER,
    ClaimOutcome,
    ClaimResult,
    EventSink,
    IdentityLost,
    IncomingLink,
    Lane,
    LaneDefault,
    LinkClosed,
    LinkId,
    LinkMessage,
    LinkOpened,
    Payload,
    PeerLeft,
    TrackArrived,
    TransportEvent,
)

log = logging.getLogger(__name__)

MAX_PENDING_CANDIDATES = 64
"""Remote candidates kept while the remote description is not set yet; more is abuse."""
REMOTE_FP_WAIT_S = 5.0
"""How long an opened link waits for a backend that reads the far end's certificate late."""

DISCONNECTED_GRACE_S = 5.0
"""A link whose ICE stays ``disconnected`` this long is closed (and re-dialled by the mesh) instead
of waiting for ``failed`` (~30 s in Chromium): after an address change a peer that cannot follow the
move by itself (aiortc renominates nothing once connected) would otherwise stall for that long."""
PROBE_EVERY_BEATS = 3
"""Probe the broker every this many heartbeats (every 15 s with the default 5 s beat)."""
PROBE_TIMEOUT_S = 3.0
"""No echo this long after a probe: the socket is dead whatever its state says; drop it, so the
identity is claimed again over a fresh one (same token: the broker hands the id over)."""

PlaceholderTracks = Callable[[], Mapping[Lane, object]]
"""Makes a fresh set of flowing placeholder tracks (one per lane) for one link; the link owns and
stops them when it closes."""

LaneWant = object | LaneDefault | None
_UNSET: Any = object()


@dataclass(eq=False)
class _Identity:
    peer_id: str
    token: str
    state: Literal["connecting", "open", "closed"] = "connecting"
    socket: SignalingSocket | None = None
    heartbeat: TimerHandle | None = None
    claim_timer: TimerHandle | None = None
    beats: int = 0
    echoes: bool | None = None
    """Whether the broker echoes our probes: unknown until the first one after OPEN comes back
    (a broker that does not relay frames addressed to their sender is never probed again)."""
    probe_timer: TimerHandle | None = None


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
    media: bool = False
    """This link negotiates audio+video lanes (label in ``media_labels`` and a media factory)."""
    lanes: dict[Lane, LaneWant] = field(default_factory=dict)
    """What each lane should send (last ``set_lane`` wins); missing = :data:`PLACEHOLDER`."""
    applied: dict[Lane, object | None] = field(default_factory=dict)
    senders: dict[Lane, RtpSender] = field(default_factory=dict)
    placeholders: dict[Lane, object] | None = None
    applying: bool = False
    pending_tracks: list[TrackArrived] = field(default_factory=list)
    lanes_arrived: set[Lane] = field(default_factory=set)
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
        signaling.signaling_url(broker_url, key=key, peer_id="x", token="x")  # fail fast on a bad URL
        self._factory = factory
        self._connect = connect_signaling
        self._broker_url = broker_url
        self._key = key
        self._rtc_config = rtc_config
        self._scheduler = scheduler
        self._heartbeat_s = heartbeat_s
        self._open_timeout_s = open_timeout_s
        self._claim_timeout_s = claim_timeout_s
        self._rng = rng or random.Random()
        self._loop = loop
        self._media = bool(getattr(factory, "supports_media", False))
        self._media_labels = media_labels
        self._placeholder_tracks = placeholder_tracks
        self._sink: EventSink | None = None
        self._queue: deque[TransportEvent] = deque()
        self._flush_pending = False
        self._delivering = False
        self._identities: dict[str, _Identity] = {}
        self._tokens: dict[str, str] = {}
        self._links: dict[LinkId, _Link] = {}
        self._by_key: dict[tuple[str, str, str], _Link] = {}
        self._link_seq = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing_pcs: set[PeerConnection] = set()
        self._resolve_broker: Callable[[str], Awaitable[str | None]] | None = None
        self._resolving: asyncio.Future[None] | None = None
        self._broker_suspect = False
        self.drops = DropCounter()

    # ------------------------------------------------------------------------ Transport protocol

    def bind(self, sink: EventSink) -> None:
        self._sink = sink

    def claim(self, peer_id: str) -> None:
        current = self._identities.get(peer_id)
        if current is not None:
            if current.state == "open":
                self._emit(ClaimResult(peer_id, "claimed"))
            return  # a claim is in flight: it will be answered once
        # Reuse the token for this id so a re-claim can take over our own stale session.
        token = self._tokens.setdefault(peer_id, signaling.new_token(self._rng))
        ident = _Identity(peer_id, token)
        self._identities[peer_id] = ident
        ident.claim_timer = self._scheduler.call_later(
            self._claim_timeout_s, lambda: self._claim_failed(ident, "error", "timeout waiting for OPEN")
        )
        self._spawn(self._open_identity(ident))

    def release(self, peer_id: str) -> None:
        ident = self._identities.get(peer_id)
        if ident is not None:
            self._drop_identity(ident)
        for link in [lk for lk in self._links.values() if lk.local_id == peer_id]:
            self._teardown(link)

    def dial(self, local_id: str, remote_id: str, label: str) -> LinkId:
        link = _Link(
            link_id=f"rtc-{next(self._link_seq)}",
            local_id=local_id,
            remote_id=remote_id,
            label=label,
            connection_id=signaling.new_connection_id(self._rng),
            role="dial",
            media=self._media and label in self._media_labels,
        )
        ident = self._identities.get(local_id)
        if ident is None or ident.state != "open":
            self._emit(LinkClosed(link.link_id, "not-claimed"))
            return link.link_id
        if remote_id == local_id:
            self._emit(LinkClosed(link.link_id, "dial-to-self"))
            return link.link_id
        self._register(link)
        self._spawn_for(link, self._run_dial(link))
        return link.link_id

    def send(self, link: LinkId, data: Payload) -> None:
        lk = self._links.get(link)
        if lk is None or lk.state != "open" or lk.channel is None:
            return
        try:
            lk.channel.send(data)
        except Exception as exc:  # closed under us: the close event will follow
            log.debug("send on %s dropped: %r", link, exc)

    def buffered_amount(self, link: LinkId) -> int:
        lk = self._links.get(link)
        if lk is None or lk.channel is None:
            return 0
        try:
            return int(lk.channel.buffered_amount)
        except Exception:
            return 0

    def close(self, link: LinkId) -> None:
        lk = self._links.get(link)
        if lk is not None:
            self._teardown(lk)

    # ------------------------------------------------------------------- MediaTransport protocol

    def set_lane(self, link: LinkId, lane: Lane, track: object | LaneDefault | None) -> None:
        if lane not in LANES:
            raise ValueError(f"unknown media lane {lane!r} (expected one of {LANES})")
        lk = self._links.get(link)
        if lk is None or not lk.media:
            return
        lk.lanes[lane] = track
        self._kick_lanes(lk)

    async def link_stats(self, link: LinkId) -> list[dict[str, Any]]:
        lk = self._links.get(link)
        if lk is None or lk.pc is None or not self._media:
            return []
        try:
            return list(await cast(MediaPeerConnection, lk.pc).get_stats())
        except Exception:
            log.debug("get_stats failed on %s", link, exc_info=True)
            return []

    def lane_source(self, link: LinkId, lane: Lane) -> object | LaneDefault | None:
        """What ``set_lane`` last asked ``lane`` of ``link`` to send (:data:`PLACEHOLDER` if never)."""
        lk = self._links.get(link)
        return PLACEHOLDER if lk is None else lk.lanes.get(lane, PLACEHOLDER)

    # ------------------------------------------------------------------------- certificates

    def local_fingerprint(self) -> str | None:
        """Our certificate's fingerprint, when the factory keeps one certificate for every link."""
        fp = getattr(self._factory, "local_fingerprint", None)
        return fp() if callable(fp) else None

    def remote_fingerprint(self, link: LinkId) -> str | None:
        lk = self._links.get(link)
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

    # ------------------------------------------------------------------------------- extras

    async def shutdown(self) -> None:
        """Release every id and close every link (no events), then wait for peer connections to close.

        The far side of each link sees its channel close, as if this process went away politely.
        """
        self.close_now()
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=5.0)

    @property
    def rtc_config(self) -> RtcConfig:
        return self._rtc_config

    def set_broker_resolver(self, resolve: Callable[[str], Awaitable[str | None]] | None) -> None:
        """Ask ``resolve(failed_url)`` (``GET /api/signal?failed=`` again) for the broker URL before
        the next claim whenever the current broker could not be reached or dropped a socket: a
        service of several nodes moves a room to another node when its node dies (docs/scale.md).
        ``None`` or a failure keeps the URL we have."""
        self._resolve_broker = resolve

    @property
    def broker_url(self) -> str:
        return self._broker_url

    async def _fresh_broker_url(self) -> str:
        if self._resolve_broker is None or not self._broker_suspect:
            return self._broker_url
        if self._resolving is None:  # one request for every identity reconnecting at once
            self._resolving = self._get_loop().create_future()
            resolving = self._resolving
            try:
                failed = self._broker_url if len(self._broker_url) <= 128 else ""  # the server's limit
                url = await asyncio.wait_for(self._resolve_broker(failed), 5.0)
                if url:
                    signaling.signaling_url(url, key=self._key, peer_id="x", token="x")
                    if url != self._broker_url:
                        log.info("broker moved: %s -> %s", self._broker_url, url)
                    self._broker_url = url
                    self._broker_suspect = False
            except Exception as exc:
                log.warning("could not ask for the broker again: %r", exc)
            finally:
                self._resolving = None
                resolving.set_result(None)
        else:
            await asyncio.shield(self._resolving)
        return self._broker_url

    def set_rtc_config(self, config: RtcConfig) -> None:
        """Use ``config`` for every peer connection made from now on (fresh TURN credentials before
        the old ones expire). Live connections keep theirs: a relay allocation outlives the expiry
        of the credentials that created it, and changing it would mean an ICE restart."""
        self._rtc_config = config

    def close_now(self) -> None:
        """The synchronous part of :meth:`shutdown`: release every id (the broker tells our contacts
        we left) and close every peer connection before returning. A page going into the
        back/forward cache needs this: the browser decides right after ``pagehide`` returns, and a
        live peer connection keeps the page out."""
        for peer_id in list(self._identities):
            self.release(peer_id)
        for link in list(self._links.values()):
            self._teardown(link)

    @property
    def claimed_ids(self) -> list[str]:
        return [i.peer_id for i in self._identities.values() if i.state == "open"]

    # ------------------------------------------------------------------------------ events out

    def _emit(self, event: TransportEvent) -> None:
        self._queue.append(event)
        if not self._flush_pending:
            self._flush_pending = True
            self._get_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        while self._queue:
            self._deliver(self._queue.popleft())

    def _deliver(self, event: TransportEvent) -> None:
        sink = self._sink
        if sink is None:
            log.warning("transport event with no sink bound: %r", event)
            return
        self._delivering = True
        try:
            sink(event)
        except Exception:
            log.exception("transport sink raised on %r", event)
        finally:
            self._delivering = False

    # ------------------------------------------------------------------------------ plumbing

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                self._loop = asyncio.get_event_loop()
        return self._loop

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._get_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("transport task failed", exc_info=task.exception())

    def _spawn_for(self, link: _Link, coro: Coroutine[Any, Any, None]) -> None:
        """Run link work; any exception fails that link instead of escaping to the loop."""

        async def guarded() -> None:
            try:
                await coro
            except Exception as exc:
                if link.state != "closed":
                    log.warning("link %s failed: %r", link.link_id, exc)
                    self._fail(link, f"error: {exc}")

        self._spawn(guarded())

    @staticmethod
    def _guard(fn: Callable[..., None]) -> Callable[..., None]:
        """Wrap an adapter-facing callback so an exception is logged, never propagated."""

        def wrapper(*args: Any) -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("transport callback %s raised", getattr(fn, "__name__", fn))

        return wrapper

    # ------------------------------------------------------------------------------ identities

    def _is_current(self, ident: _Identity) -> bool:
        return self._identities.get(ident.peer_id) is ident and ident.state != "closed"

    async def _open_identity(self, ident: _Identity) -> None:
        broker = await self._fresh_broker_url()
        if not self._is_current(ident):
            return
        url = signaling.signaling_url(broker, key=self._key, peer_id=ident.peer_id, token=ident.token)
        on_message = self._guard(lambda text: self._on_frame(ident, text))
        on_close = self._guard(lambda reason: self._on_socket_close(ident, reason))
        try:
            sock = await self._connect(url, on_message, on_close)
        except Exception as exc:
            if getattr(exc, "code", None) == CLOSE_POLICY_VIOLATION:  # closed before we saw it open
                self._claim_failed(ident, "taken", f"ID is taken (the broker closed with 1008: {exc})")
            else:
                self._claim_failed(ident, "error", f"cannot reach broker: {exc}")
            return
        if not self._is_current(ident):
            sock.close()
            return
        ident.socket = sock

    def _claim_failed(self, ident: _Identity, outcome: ClaimOutcome, detail: str) -> None:
        if not self._is_current(ident) or ident.state != "connecting":
            return
        if outcome != "taken":
            self._broker_suspect = True
        self._drop_identity(ident)
        self._emit(ClaimResult(ident.peer_id, outcome, detail))

    def _drop_identity(self, ident: _Identity) -> None:
        """Forget ``ident`` and close its socket; the caller decides which event (if any) to emit."""
        ident.state = "closed"
        if self._identities.get(ident.peer_id) is ident:
            del self._identities[ident.peer_id]
        for timer in (ident.heartbeat, ident.claim_timer, ident.probe_timer):
            if timer is not None:
                timer.cancel()
        ident.heartbeat = ident.claim_timer = ident.probe_timer = None
        if ident.socket is not None:
            sock, ident.socket = ident.socket, None
            try:
                sock.close()
            except Exception:
                log.debug("closing broker socket for %s failed", ident.peer_id, exc_info=True)

    def _lose_identity(self, ident: _Identity, reason: str) -> None:
        if not reason.startswith("taken"):
            self._broker_suspect = True
        self._drop_identity(ident)
        self._emit(IdentityLost(ident.peer_id, reason))
        # Links still negotiating need the broker; established ones are peer-to-peer and survive.
        for link in [lk for lk in self._links.values() if lk.local_id == ident.peer_id and lk.state == "new"]:
            self._fail(link, "identity-lost")

    def _on_socket_close(self, ident: _Identity, reason: str) -> None:
        if not self._is_current(ident):
            return
        if ident.state == "connecting":
            if getattr(reason, "code", None) == CLOSE_POLICY_VIOLATION:
                # What our broker (and PeerJS's) closes with after ID-TAKEN; a browser may not have
                # delivered the frame before the close (Firefox, when the socket is dropped at once).
                self._claim_failed(ident, "taken", f"ID is taken (the broker closed with 1008: {reason})")
                return
            self._claim_failed(ident, "error", f"broker closed the socket before OPEN: {reason}")
        else:
            self._lose_identity(ident, reason or "closed")

    def _heartbeat(self, ident: _Identity) -> None:
        if not self._is_current(ident) or ident.socket is None:
            return
        ident.socket.send(signaling.heartbeat_frame())
        ident.beats += 1
        if ident.beats % PROBE_EVERY_BEATS == 0:
            self._probe(ident)
        ident.heartbeat = self._scheduler.call_later(self._heartbeat_s, lambda: self._heartbeat(ident))

    def _probe(self, ident: _Identity) -> None:
        """Send a frame addressed to ourselves; the broker relays it back (``EXPIRE`` is relayed by
        every PeerJS broker and means nothing to a peer). No echo within :data:`PROBE_TIMEOUT_S`
        on a broker known to echo: the socket is dead."""
        if ident.echoes is False or ident.probe_timer is not None or ident.socket is None:
            return
        ident.socket.send(signaling.probe_frame(ident.peer_id))
        ident.probe_timer = self._scheduler.call_later(PROBE_TIMEOUT_S, lambda: self._probe_timeout(ident))

    def _probe_timeout(self, ident: _Identity) -> None:
        ident.probe_timer = None
        if not self._is_current(ident) or ident.state != "open":
            return
        if ident.echoes is None:
            ident.echoes = False  # never echoed: a broker that does not relay to the sender
            log.info("broker does not echo probes for %s; not probing it", ident.peer_id)
            return
        self.drops.drop("broker:probe-timeout")
        log.warning("broker socket for %s is dead (no echo in %.0f s); reconnecting", ident.peer_id,
                    PROBE_TIMEOUT_S)
        self._lose_identity(ident, "broker unresponsive")

    def _on_echo(self, ident: _Identity) -> None:
        ident.echoes = True
        if ident.probe_timer is not None:
            ident.probe_timer.cancel()
            ident.probe_timer = None

    def _on_frame(self, ident: _Identity, text: str) -> None:
        if not self._is_current(ident):
            return
        frame = signaling.parse_frame(text, self.drops)
        if frame is None:
            return
        kind = frame.type
        if kind == "OPEN":
            if ident.state == "connecting":
                ident.state = "open"
                if ident.claim_timer is not None:
                    ident.claim_timer.cancel()
                    ident.claim_timer = None
                self._emit(ClaimResult(ident.peer_id, "claimed"))
                ident.heartbeat = self._scheduler.call_later(
                    self._heartbeat_s, lambda: self._heartbeat(ident)
                )
                self._probe(ident)  # learn whether this broker echoes
        elif kind == "ID-TAKEN":
            if ident.state == "connecting":
                self._claim_failed(ident, "taken", frame.message or "ID is taken")
            else:
                self._lose_identity(ident, "taken: " + (frame.message or "ID is taken"))
        elif kind == "ERROR":
            if ident.state == "connecting":
                self._claim_failed(ident, "error", frame.message or "broker error")
            else:
                self._lose_identity(ident, "error: " + (frame.message or "broker error"))
        elif kind == "HEARTBEAT":
            pass
        elif ident.state != "open":
            self.drops.drop("broker:before-open")
        elif kind == "LEAVE":
            self._on_leave(frame)
        elif kind == "EXPIRE" and frame.src == ident.peer_id:
            self._on_echo(ident)
        elif kind == "EXPIRE":
            self._on_expire(ident, frame)
        elif isinstance(frame.payload, OfferPayload):
            self._on_offer(ident, frame, frame.payload)
        elif isinstance(frame.payload, AnswerPayload):
            self._on_answer(ident, frame, frame.payload)
        elif isinstance(frame.payload, CandidatePayload):
            self._on_candidate(ident, frame, frame.payload)

    def _on_leave(self, frame: BrokerFrame) -> None:
        src = frame.src or ""
        self._emit(PeerLeft(src))
        for link in [lk for lk in self._links.values() if lk.remote_id == src]:
            self._fail(link, "peer-left")

    def _on_expire(self, ident: _Identity, frame: BrokerFrame) -> None:
        """A frame we sent to ``src`` expired undelivered: ``src`` is not on the broker.

        Links still negotiating with it can never open. Open links are peer-to-peer and are left
        alone (their peer may only have lost its broker socket). One EXPIRE arrives per queued
        frame (OFFER and each CANDIDATE), so PeerLeft is reported only when a link was closed.
        """
        src = frame.src or ""
        doomed = [
            lk
            for lk in self._links.values()
            if lk.local_id == ident.peer_id and lk.remote_id == src and lk.state == "new"
        ]
        for link in doomed:
            self._fail(link, "peer-unavailable")
        if doomed:
            self._emit(PeerLeft(src))

    def _send_broker(self, link: _Link, text: str) -> None:
        ident = self._identities.get(link.local_id)
        if ident is None or ident.state != "open" or ident.socket is None:
            log.debug("no broker socket for %s; dropping signaling for %s", link.local_id, link.link_id)
            return
        ident.socket.send(text)

    # ------------------------------------------------------------------------------ links

    def _register(self, link: _Link) -> None:
        self._links[link.link_id] = link
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
        self._links.pop(link.link_id, None)
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
        link.senders.clear()
        if link.placeholders:
            for track in link.placeholders.values():
                try:
                    cast(Any, track).stop()
                except Exception:
                    log.debug("placeholder stop failed on %s", link.link_id, exc_info=True)
            link.placeholders = None
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
                self._spawn(self._close_pc(pc))

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
        self._emit(LinkClosed(link.link_id, reason))
        if reason in ("timeout", "ice-failed", "ice-disconnected"):
            # Maybe it is our side that lost the network: check the broker socket now, not at the
            # next periodic probe (a re-dial through a dead socket would only time out again).
            self._probe_for(link)

    def _probe_for(self, link: _Link) -> None:
        ident = self._identities.get(link.local_id)
        if ident is not None and ident.state == "open":
            self._probe(ident)

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

    # ------------------------------------------------------------------------------ media lanes

    def _resolve(self, link: _Link, lane: Lane) -> object | None:
        want = link.lanes.get(lane, PLACEHOLDER)
        if want is not PLACEHOLDER:
            return want
        if link.placeholders is None:
            made = self._placeholder_tracks() if self._placeholder_tracks is not None else {}
            link.placeholders = dict(made)
        return link.placeholders.get(lane)

    def _kick_lanes(self, link: _Link) -> None:
        if link.senders and not link.applying and link.state != "closed":
            self._spawn_for(link, self._apply_lanes(link))

    async def _apply_lanes(self, link: _Link) -> None:
        """Bring every sender in line with ``link.lanes``; loops until nothing changed meanwhile,
        so the last ``set_lane`` wins whatever the interleaving. One runner per link at a time."""
        if link.applying:
            return
        link.applying = True
        try:
            changed = True
            while changed and not _gone(link):
                changed = False
                for lane, sender in list(link.senders.items()):
                    if _gone(link):
                        return
                    target = self._resolve(link, lane)
                    if link.applied.get(lane, _UNSET) is target:
                        continue
                    link.applied[lane] = target  # even if it fails: no retry loop on a bad track
                    changed = True
                    try:
                        await sender.replace_track(target)
                    except Exception as exc:  # a bad track must not take the link down
                        self.drops.drop("media:replace-track-failed")
                        log.warning("set_lane(%s, %s) failed: %r", link.link_id, lane, exc)
        finally:
            link.applying = False

    def _adopt_transceivers(self, link: _Link, pc: PeerConnection) -> None:
        """Answerer: the offer created the transceivers; use the first of each kind as its lane.

        On a link that carries no media (or for extra m-sections) they are made inactive, so
        nothing flows either way.
        """
        if not self._media:
            return
        for tr in cast(MediaPeerConnection, pc).get_transceivers():
            kind = tr.kind
            if link.media and kind in LANES and kind not in link.senders:
                tr.direction = "sendrecv"
                link.senders[kind] = tr.sender
            elif tr.sender not in link.senders.values():
                tr.direction = "inactive"

    def _on_track(self, link: _Link, event: TrackEvent) -> None:
        if not link.media or event.kind not in LANES or link.state == "closed":
            return
        if event.kind in link.lanes_arrived:
            return  # an extra m-section of that kind (made inactive): the first one is the lane
        link.lanes_arrived.add(event.kind)
        arrived = TrackArrived(link.link_id, event.kind, event.track)
        if link.state == "open":
            self._emit(arrived)
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
        self._emit(LinkOpened(link.link_id))
        pending, link.pending_tracks = link.pending_tracks, []
        for arrived in pending:
            self._emit(arrived)
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
        event = LinkMessage(link.link_id, data)
        if self._queue or self._flush_pending or self._delivering:
            self._emit(event)
        else:
            # The hot path: a native callback, nothing queued ahead of it and no delivery under
            # way, so handing it over now keeps order and non-reentrancy and saves a loop hop
            # (160–330 µs per message under Pyodide's WebLoop).
            self._deliver(event)

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
                self._probe_for(link)
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
        if link.media:
            mpc = cast(MediaPeerConnection, pc)
            for lane in LANES:  # always both m-sections: an answer can never add one later
                link.senders[lane] = mpc.add_transceiver(lane, direction="sendrecv").sender
            await self._apply_lanes(link)
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

    def _on_offer(self, ident: _Identity, frame: BrokerFrame, offer: OfferPayload) -> None:
        src = frame.src or ""
        if offer.kind != "data":
            self.drops.drop("broker:offer-unsupported-kind")
            return
        if (ident.peer_id, src, offer.connection_id) in self._by_key:
            self.drops.drop("broker:offer-duplicate")
            return
        link = _Link(
            link_id=f"rtc-{next(self._link_seq)}",
            local_id=ident.peer_id,
            remote_id=src,
            label=offer.label,
            connection_id=offer.connection_id,
            role="answer",
            media=self._media and offer.label in self._media_labels,
        )
        self._register(link)
        self._emit(IncomingLink(link.link_id, link.local_id, link.remote_id, link.label))
        self._spawn_for(link, self._run_answer(link, offer.sdp))

    async def _run_answer(self, link: _Link, offer: SessionDescription) -> None:
        pc = self._new_pc(link)
        await self._remote_description(link, pc, offer)
        if _gone(link):
            return
        self._adopt_transceivers(link, pc)
        if link.senders:
            await self._apply_lanes(link)
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

    def _on_answer(self, ident: _Identity, frame: BrokerFrame, answer: AnswerPayload) -> None:
        link = self._by_key.get((ident.peer_id, frame.src or "", answer.connection_id))
        if link is None or link.role != "dial" or link.answer_seen or link.pc is None or link.state != "new":
            self.drops.drop("broker:answer-unexpected")
            return
        link.answer_seen = True
        self._spawn_for(link, self._remote_description(link, link.pc, answer.sdp))

    def _on_candidate(self, ident: _Identity, frame: BrokerFrame, cand: CandidatePayload) -> None:
        link = self._by_key.get((ident.peer_id, frame.src or "", cand.connection_id))
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
