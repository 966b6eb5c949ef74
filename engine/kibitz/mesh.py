"""The data mesh: one reliable, ordered message link between every pair of room members.

The room engine says who is in the room (:meth:`Mesh.set_members`); the mesh keeps a link to each
of them and delivers JSON values over it **in order and exactly once, across link drops**.

Dialling
    One link per pair and the smaller member id dials, so two peers never dial each other at once
    (no glare). Every roster change re-plans: new members are dialled, departed members' links are
    closed. A link that closes while its peer is still in the roster is re-dialled with bounded,
    jittered backoff (the original kept dropped links dead until the peer left and came back, its
    known bug 7.2). The larger id also dials as a fallback if it has had no link for a while, in
    case the smaller id never noticed the loss; the smaller id accepts that link only when it has
    no dial of its own in flight. Every event is matched by link id, so late events on a replaced
    link are ignored. A link from someone not (yet) in our roster is held for a few seconds, since
    the roster naming it may still be on its way.

Presence blips
    A member that drops off the roster is not forgotten at once: it is *parked* for
    :data:`PARK_SECONDS`. Its link stays up if it is up (data links are peer to peer; a roster can
    lose a member for reasons that never touched them: a broker restart, a frozen tab, a coordinator
    handover), sends and broadcasts to it are queued as for anyone else, and nobody dials it. If it
    comes back with the same member id in time, the link (kept, or dialled again) carries everything
    queued meanwhile, once and in order; otherwise it is dropped (``undelivered-departed``). A
    member that leaves on purpose says ``bye`` on its links first and is dropped as soon as the
    roster drops it.

Reliable delivery
    Each direction between two peers is a *stream* named by a random stream id (``sid``) chosen
    when the sender starts talking to that peer. Every message on it carries a sequence number
    (1, 2, …). The receiver delivers only the next number, skips duplicates and acknowledges
    cumulatively; the sender keeps every unacknowledged message and, on each new link, resends
    them from the oldest. Data sent while a link is down is queued and arrives after recovery, in
    order, exactly once. The resend buffer is bounded per peer (:data:`MAX_BUFFER_BYTES`): when
    it is full, what is queued is kept and new sends to that peer are refused with
    :class:`SendBufferFull` (a broadcast skips that peer and counts it). A message that alone
    exceeds the bound is still accepted when the buffer is empty.

Framing (one data channel, label ``kbz-data`` by default)
    Text frames are JSON objects keyed by ``t``:

    * ``{"t":"hi","v":1,"sid":S,"base":B,"ack":{"sid":R,"s":N}|null,"pa":1}``: first frame on every
      link (``pa``: this end reads acks carried on messages).
      ``S`` is the sender's stream id, ``B`` the oldest sequence it still holds (the next one if
      none); ``ack`` says how far the sender has delivered the *peer's* stream ``R``. Data is
      written only after the peer's ``hi`` arrived, so resends skip what the peer already has.
    * ``{"t":"m","s":N,"d":VALUE}``: message ``N`` whose JSON encoding fits in one chunk. It may
      carry an ack for the other direction, ``{"t":"m","s":N,"a":A,"d":VALUE}``: everything up to
      ``A`` of the *receiver's* stream was delivered (the stream the sender was greeted with on
      this link). Only sent to a peer whose ``hi`` said ``"pa":1`` (it reads ``a``); older peers
      get ``ack`` frames as before, so mixed versions still release their resend buffers.
    * ``{"t":"ack","sid":R,"s":N}``: everything up to ``N`` of stream ``R`` was delivered.
    * ``{"t":"bye"}``: the sender is leaving on purpose (do not park it); older peers ignore it.

    Acks are coalesced: one rides on the next message going back when there is one (a request and
    its reply cost two frames, not four); otherwise an ``ack`` frame follows after
    :data:`ACK_EVERY` messages, :data:`ACK_BYTES` bytes or :data:`ACK_DELAY` seconds.

    Larger messages travel as binary chunk frames: a 23-byte little-endian header
    ``b"KZ" | u8 version=1 | u64 seq | u32 index | u32 count | u32 total`` followed by at most
    :data:`CHUNK_SIZE` bytes of the message's UTF-8 JSON; chunks are written in order and
    reassembled by the receiver.

Backpressure
    The writer stops while ``transport.buffered_amount(link)`` is above :data:`HIGH_WATER` and
    resumes on a short timer (:data:`PUMP_RETRY`); a backend with a drain signal may also call
    :meth:`Mesh.pump`. None is wired yet: page-to-page bulk transfers were measured bound by the
    receiver's CPU, not by this wait. Only our own writes fill that buffer, so after reading it
    the writer spends the room left (its *credit*) without asking again: a stream of small
    messages reads the buffer once per megabyte instead of once per frame (in the page every read
    is a crossing into JS).

Bad input (oversize, malformed, unknown or out-of-order frames, reassemblies too large or over the
memory budget) is dropped and counted in :attr:`Mesh.drops`; nothing a peer sends raises here.
"""

from __future__ import annotations

import json
import logging
import math
import random
import struct
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from kibitz.clock import Scheduler, TimerHandle
from kibitz.protocol.base import DropCounter, dumps_compact, make_loads
from kibitz.transport import (
    IncomingLink,
    LinkClosed,
    LinkId,
    LinkMessage,
    LinkOpened,
    Payload,
    Transport,
    TransportEvent,
)

log = logging.getLogger(__name__)

FRAME_VERSION = 1
CHUNK_SIZE = 64 * 1024
"""Largest message body per frame; well below the SCTP message limit of every stack we meet."""
HIGH_WATER = 1024 * 1024
"""Stop writing while this many bytes wait in the link's send buffer."""
PUMP_RETRY = 0.02
MAX_BUFFER_BYTES = 16 * 1024 * 1024
"""Resend buffer per peer (unacknowledged messages)."""
MAX_MESSAGE_BYTES = 50 * 1024 * 1024
"""Largest message, encoded, we send or reassemble."""
REASSEMBLY_BUDGET = 128 * 1024 * 1024
"""Bytes reserved by all incoming reassemblies together."""
MAX_TEXT_FRAME = CHUNK_SIZE + 1024
ACK_DELAY = 0.05
ACK_EVERY = 16
ACK_BYTES = 256 * 1024
OPEN_TIMEOUT = 15.0
"""A link that is not open and greeted by then is closed and dialled again."""
BACKOFF_BASE = 0.25
BACKOFF_MAX = 8.0
FALLBACK_DIAL = 4.0
"""The larger id dials itself after this long without a link (plus backoff)."""
UNPARK_FALLBACK = 1.0
"""The same, for a member back from a presence blip: its side of the old link may still look up to
it (a stopped process, a frozen tab), so it may not dial for a while."""
HOLD_SECONDS = 5.0
MAX_HELD = 32
MAX_HELD_FRAMES = 16
RECV_MEMORY = 256
PARK_SECONDS = 60.0
"""How long a member that dropped off the roster keeps its streams and queue (see the module doc)."""

_CONTROL_ENCODER = json.JSONEncoder(separators=(",", ":"))
_loads_text = make_loads(json.JSONDecoder())
"""``json.loads`` for a text frame in one call (a BOM or trailing junk fails either way)."""
_CHUNK_HEADER = struct.Struct("<2sBQIII")
_MAGIC = b"KZ"


def dials(self_id: str, peer_id: str) -> bool:
    """Whether ``self_id`` is the one that dials ``peer_id`` (the smaller id does)."""
    return self_id < peer_id


def dial_plan(self_id: str, member_ids: Iterable[str]) -> list[str]:
    """The members ``self_id`` dials, sorted: each pair of distinct ids appears in one plan only."""
    return sorted({m for m in member_ids if dials(self_id, m)})


class SendBufferFull(ValueError):
    """The resend buffer toward a peer is full: its link is down or it is not keeping up."""


@dataclass(slots=True)
class _Out:
    """One message not yet acknowledged; ``text`` for one-frame messages, ``blob`` for chunked."""

    seq: int
    size: int
    text: str | None = None
    blob: bytes | None = None

    @property
    def chunks(self) -> int:
        return 1 if self.blob is None else max(1, math.ceil(len(self.blob) / CHUNK_SIZE))


@dataclass(slots=True)
class _Reassembly:
    seq: int
    total: int
    count: int
    next: int = 0
    buf: bytearray = field(default_factory=bytearray)


@dataclass(slots=True)
class _Held:
    """An incoming link from someone not in our roster yet."""

    link: LinkId
    timer: TimerHandle
    opened: bool = False
    frames: list[Payload] = field(default_factory=list)


@dataclass(slots=True)
class _Peer:
    id: str
    dialer: bool
    sid: str
    link: LinkId | None = None
    opened: bool = False
    greeted: bool = False
    """We have the peer's ``hi`` on the current link: data may flow."""
    attempts: int = 0
    open_timer: TimerHandle | None = None
    retry_timer: TimerHandle | None = None
    pump_timer: TimerHandle | None = None
    # sending
    next_seq: int = 1
    out: deque[_Out] = field(default_factory=deque)
    out_bytes: int = 0
    cursor: int = 0
    chunk: int = 0
    # receiving
    rsid: str | None = None
    delivered: int = 0
    reasm: _Reassembly | None = None
    unacked_in: int = 0
    unacked_in_bytes: int = 0
    ack_sent: int = 0
    """The highest ``delivered`` we told the peer (-1: we owe it an ack whatever it knows)."""
    credit: int = 0
    """Bytes we may still write on the current link before reading its buffered amount again."""
    piggyback: bool = False
    """The peer's ``hi`` said it reads acks carried on messages (``"pa":1``)."""
    park_timer: TimerHandle | None = None
    """Set while the peer is off the roster but kept (see "Presence blips")."""
    bye: bool = False
    """The peer said it is leaving on purpose: drop it, do not park it, when the roster does."""

    def base(self) -> int:
        return self.out[0].seq if self.out else self.next_seq


class Mesh:
    """Links to every other member and reliable JSON messaging over them (see the module doc)."""

    def __init__(
        self,
        *,
        self_id: str,
        transport: Transport,
        scheduler: Scheduler,
        rng: random.Random,
        on_message: Callable[[str, Any], None] | None = None,
        on_link: Callable[[str, bool], None] | None = None,
        label: str = "kbz-data",
    ) -> None:
        self.self_id = self_id
        self.label = label
        self.on_message = on_message
        self.on_link = on_link
        self.drops = DropCounter()
        self.stats: dict[str, int] = {
            "dials": 0, "delivered": 0, "duplicates": 0, "frames_out": 0, "replayed": 0, "bytes_out": 0,
            "parked": 0, "unparked": 0,
        }
        self._transport = transport
        self._clock = scheduler
        self._rng = rng
        self._peers: dict[str, _Peer] = {}
        self._links: dict[LinkId, str] = {}
        self._held: dict[str, _Held] = {}
        self._held_links: dict[LinkId, str] = {}
        self._dead: OrderedDict[LinkId, None] = OrderedDict()
        self._recv_memory: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._reasm_bytes = 0
        self._ack_sweep: TimerHandle | None = None
        """One timer for every ack owed, not one per peer or message: arming a timer is a crossing
        into JS in the page, and a request/reply exchange would otherwise arm one per round trip."""

    # ------------------------------------------------------------------ public API

    @property
    def members(self) -> list[str]:
        """The members we keep a link to (parked ones excluded)."""
        return sorted(k for k, p in self._peers.items() if p.park_timer is None)

    @property
    def parked(self) -> list[str]:
        """Members off the roster whose streams are kept for :data:`PARK_SECONDS`."""
        return sorted(k for k, p in self._peers.items() if p.park_timer is not None)

    def has(self, peer: str) -> bool:
        """Whether ``peer`` is a member (or a parked one) we can send to."""
        return peer in self._peers

    def link_up(self, peer: str) -> bool:
        """True while ``peer`` has a greeted link (messages flow now, not just get queued)."""
        p = self._peers.get(peer)
        return p is not None and p.greeted

    def link_of(self, peer: str) -> LinkId | None:
        """The current link to ``peer`` (open or opening), for lanes that ride the same connection."""
        p = self._peers.get(peer)
        return None if p is None else p.link

    def peer_of(self, link: LinkId) -> str | None:
        """Which member a link of ours belongs to, if any."""
        for p in self._peers.values():
            if p.link == link:
                return p.id
        return None

    def pending(self, peer: str) -> int:
        """Messages queued or sent to ``peer`` and not yet acknowledged."""
        p = self._peers.get(peer)
        return len(p.out) if p else 0

    def buffered(self, peer: str) -> int:
        """Bytes held in the resend buffer toward ``peer``."""
        p = self._peers.get(peer)
        return p.out_bytes if p else 0

    def set_members(self, member_ids: Iterable[str]) -> None:
        """The room's roster changed: dial newcomers, park those who left, take back the parked."""
        wanted = {m for m in member_ids if isinstance(m, str) and m and m != self.self_id}
        for gone in sorted(set(self._peers) - wanted):
            p = self._peers[gone]
            if p.bye:
                self._remove(gone)
            elif p.park_timer is None:
                self._park(p)
        for peer_id in sorted(wanted):
            known = self._peers.get(peer_id)
            if known is None:
                self._add(peer_id)
            elif known.park_timer is not None:
                self._unpark(known)

    def handle_message(self, event: LinkMessage) -> bool:
        """The hot path of :meth:`handle`: a frame on a link we hold for a member (True), or not
        ours to take this way (False: give the event to :meth:`handle`, or to whoever owns it)."""
        peer_id = self._links.get(event.link)
        if peer_id is None:
            return False
        p = self._peers[peer_id]
        if not p.opened:
            self._opened(p)
        data = event.data
        if type(data) is str:
            self._on_text(p, data)
        else:
            self._on_frame(p, data)
        return True

    def handle(self, event: TransportEvent) -> bool:
        """Feed one transport event; True when it belonged to the mesh (others go to the room)."""
        if type(event) is LinkMessage and self.handle_message(event):
            return True
        if isinstance(event, IncomingLink):
            if event.label != self.label or event.local_id != self.self_id:
                return False
            self._incoming(event)
            return True
        if not isinstance(event, LinkOpened | LinkMessage | LinkClosed):
            return False
        link = event.link
        if link in self._held_links:
            self._held_event(self._held_links[link], event)
            return True
        peer_id = self._links.get(link)
        if peer_id is None:
            if link in self._dead:
                if isinstance(event, LinkMessage):
                    self.drops.drop("stale-link")
                return True
            return False
        p = self._peers[peer_id]
        if isinstance(event, LinkOpened):
            self._opened(p)
        elif isinstance(event, LinkMessage):
            if not p.opened:
                self._opened(p)
            self._on_frame(p, event.data)
        else:
            self._forget_link(link)
            self._lost(p, event.reason)
        return True

    def send(self, to: str, message: Any) -> None:
        """Queue ``message`` (a JSON value) for ``to``; delivered once, in order, even across drops.

        Raises ``ValueError`` for ourselves, a non-JSON or oversized message, or a full resend
        buffer (:class:`SendBufferFull`), and ``KeyError`` when ``to`` is not in the room.
        """
        if to == self.self_id:
            raise ValueError("cannot send a message to ourselves")
        p = self._peers.get(to)
        if p is None:
            raise KeyError(f"{to!r} is not in the room")
        self._enqueue(p, *self._encode(message))

    def send_encoded(self, to: str, text: str) -> None:
        """:meth:`send` for a message that is already compact JSON text (the caller vouches for it).

        Saves encoding the same value twice; the text is framed as is, so it must be exactly one
        JSON value or the peer drops the frame and the stream stalls at that sequence number.
        """
        if to == self.self_id:
            raise ValueError("cannot send a message to ourselves")
        p = self._peers.get(to)
        if p is None:
            raise KeyError(f"{to!r} is not in the room")
        self._enqueue(p, *self._sized(text))

    def broadcast(self, message: Any, *, only: Callable[[str], bool] | None = None) -> list[str]:
        """Queue ``message`` for every member (never ourselves) that ``only`` admits; returns them.

        A peer whose resend buffer is full is skipped and counted (``buffer-full``).
        """
        return self._broadcast(self._encode(message), only)

    def broadcast_encoded(self, text: str, *, only: Callable[[str], bool] | None = None) -> list[str]:
        """:meth:`broadcast` for compact JSON text (see :meth:`send_encoded`)."""
        return self._broadcast(self._sized(text), only)

    def _broadcast(
        self, encoded: tuple[str | None, bytes | None, int], only: Callable[[str], bool] | None
    ) -> list[str]:
        text, blob, size = encoded
        sent: list[str] = []
        for peer_id in sorted(self._peers):
            if only is not None and not only(peer_id):
                continue
            try:
                self._enqueue(self._peers[peer_id], text, blob, size)
            except SendBufferFull:
                self.drops.drop("buffer-full")
                continue
            sent.append(peer_id)
        return sent

    def pump(self, peer: str | None = None) -> None:
        """Write queued frames now (call from the transport's drain signal)."""
        if peer is None:
            targets = list(self._peers.values())
        else:
            one = self._peers.get(peer)
            targets = [one] if one is not None else []
        for p in targets:
            p.credit = 0  # the buffer drained: read it afresh
            self._pump(p)

    on_drained = pump

    def depart(self) -> None:
        """We leave on purpose: say ``bye`` on every link, then drop every member and its queue."""
        bye = _CONTROL_ENCODER.encode({"t": "bye"})
        for p in list(self._peers.values()):
            if p.link is not None and p.opened:
                self._write(p, p.link, bye)
            self._remove(p.id)

    def close(self) -> None:
        """Leave: say goodbye, close every link and stop every timer."""
        self.depart()
        if self._ack_sweep is not None:
            self._ack_sweep.cancel()
            self._ack_sweep = None
        for remote in list(self._held):
            self._drop_held(remote)

    # ------------------------------------------------------------------ roster

    def _add(self, peer_id: str) -> None:
        p = _Peer(id=peer_id, dialer=dials(self.self_id, peer_id), sid=f"{self._rng.getrandbits(48):012x}")
        memory = self._recv_memory.pop(peer_id, None)
        if memory is not None:
            p.rsid, p.delivered = memory
        self._peers[peer_id] = p
        held = self._held.pop(peer_id, None)
        if held is not None:
            held.timer.cancel()
            del self._held_links[held.link]
            self._attach(p, held.link)
            if held.opened:
                self._opened(p)
            for frame in held.frames:
                if self._peers.get(peer_id) is not p or p.link != held.link:
                    break
                self._on_frame(p, frame)
        elif p.dialer:
            self._dial(p)
        else:
            self._schedule_retry(p, FALLBACK_DIAL)

    def _park(self, p: _Peer) -> None:
        """``p`` left the roster: keep its streams (and its link, if up) for a while; never dial it."""
        self.stats["parked"] += 1
        if p.retry_timer is not None:
            p.retry_timer.cancel()
            p.retry_timer = None
        p.park_timer = self._clock.call_later(PARK_SECONDS, lambda: self._park_expired(p))

    def _park_expired(self, p: _Peer) -> None:
        if self._peers.get(p.id) is p and p.park_timer is not None:
            p.park_timer = None
            self._remove(p.id)

    def _unpark(self, p: _Peer) -> None:
        """``p`` is back on the roster in time: same streams; dial it again if its link is gone."""
        self.stats["unparked"] += 1
        if p.park_timer is not None:
            p.park_timer.cancel()
            p.park_timer = None
        if p.link is None and p.retry_timer is None:
            if p.dialer:
                self._dial(p)
            else:
                self._schedule_retry(p, UNPARK_FALLBACK)

    def _remove(self, peer_id: str) -> None:
        p = self._peers.pop(peer_id)
        was_up = p.greeted
        if p.link is not None:
            self._close_link(p.link)
        self._reset_link_state(p)
        for timer in (p.retry_timer, p.park_timer):
            if timer is not None:
                timer.cancel()
        p.retry_timer = p.park_timer = None
        if p.out:
            self.drops.by_reason["undelivered-departed"] += len(p.out)
        if p.rsid is not None:
            self._recv_memory[peer_id] = (p.rsid, p.delivered)
            while len(self._recv_memory) > RECV_MEMORY:
                self._recv_memory.popitem(last=False)
        if was_up:
            self._notify_link(peer_id, False)

    # ------------------------------------------------------------------ links

    def _dial(self, p: _Peer) -> None:
        p.retry_timer = None
        if p.link is not None or self._peers.get(p.id) is not p or p.park_timer is not None:
            return
        self.stats["dials"] += 1
        try:
            link = self._transport.dial(self.self_id, p.id, self.label)
        except Exception as exc:  # a backend refusing to dial must not take the room down
            log.warning("dial %s failed: %s", p.id, exc)
            self.drops.drop("dial-error")
            self._schedule_retry(p)
            return
        self._attach(p, link)

    def _attach(self, p: _Peer, link: LinkId) -> None:
        p.link = link
        self._links[link] = p.id
        p.open_timer = self._clock.call_later(OPEN_TIMEOUT, lambda: self._open_timeout(p, link))
        if p.retry_timer is not None:
            p.retry_timer.cancel()
            p.retry_timer = None

    def _open_timeout(self, p: _Peer, link: LinkId) -> None:
        if p.link == link and not p.greeted and self._peers.get(p.id) is p:
            self._close_link(link)
            self._lost(p, "open timeout")

    def _incoming(self, ev: IncomingLink) -> None:
        remote = ev.remote_id
        if remote == self.self_id:
            self.drops.drop("self-link")
            self._close_link(ev.link)
            return
        p = self._peers.get(remote)
        if p is None:
            self._hold(remote, ev.link)
            return
        if p.link is not None:
            # The smaller id's dial always wins; the larger id's fallback wins only over a link
            # we think is up (its dial proves it lost that link), never over our dial in flight.
            if not dials(remote, self.self_id) and not p.greeted:
                self.drops.drop("glare")
                self._close_link(ev.link)
                return
            old = p.link
            self._close_link(old)
            self._lost(p, "replaced", redial=False)
        self._attach(p, ev.link)

    def _hold(self, remote: str, link: LinkId) -> None:
        if remote in self._held:
            self._drop_held(remote)
        if len(self._held) >= MAX_HELD:
            self.drops.drop("held-too-many")
            self._close_link(link)
            return
        timer = self._clock.call_later(HOLD_SECONDS, lambda: self._held_expired(remote, link))
        self._held[remote] = _Held(link, timer)
        self._held_links[link] = remote

    def _held_expired(self, remote: str, link: LinkId) -> None:
        held = self._held.get(remote)
        if held is not None and held.link == link:
            self.drops.drop("held-expired")
            self._drop_held(remote)

    def _drop_held(self, remote: str) -> None:
        held = self._held.pop(remote)
        held.timer.cancel()
        del self._held_links[held.link]
        self._close_link(held.link)

    def _held_event(self, remote: str, event: LinkOpened | LinkMessage | LinkClosed) -> None:
        held = self._held[remote]
        if isinstance(event, LinkOpened):
            held.opened = True
        elif isinstance(event, LinkMessage):
            held.opened = True
            if len(held.frames) >= MAX_HELD_FRAMES or len(event.data) > MAX_TEXT_FRAME:
                self.drops.drop("held-overflow")
                self._drop_held(remote)
                return
            held.frames.append(event.data)
        else:
            held.timer.cancel()
            del self._held[remote]
            del self._held_links[held.link]
            self._remember_dead(held.link)

    def _opened(self, p: _Peer) -> None:
        if p.opened:
            return
        p.opened = True
        ack = {"sid": p.rsid, "s": p.delivered} if p.rsid is not None else None
        if p.rsid is not None:
            p.ack_sent = p.delivered
        self._send_control(p, {"t": "hi", "v": FRAME_VERSION, "sid": p.sid, "base": p.base(), "ack": ack,
                               "pa": 1})

    def _lost(self, p: _Peer, reason: str, *, redial: bool = True) -> None:
        """The current link is gone (already closed or forgotten); plan the next one."""
        was_up = p.greeted
        log.debug("link to %s lost: %s", p.id, reason)
        self._reset_link_state(p)
        if was_up:
            self._notify_link(p.id, False)
        if redial and self._peers.get(p.id) is p and p.park_timer is None:
            self._schedule_retry(p, 0.0 if p.dialer else FALLBACK_DIAL)

    def _reset_link_state(self, p: _Peer) -> None:
        if p.link is not None:
            self._links.pop(p.link, None)
            self._remember_dead(p.link)
        p.link = None
        p.opened = p.greeted = False
        for name in ("open_timer", "pump_timer"):
            timer = getattr(p, name)
            if timer is not None:
                timer.cancel()
                setattr(p, name, None)
        self._drop_reassembly(p)
        p.cursor = p.chunk = 0
        p.credit = 0

    def _schedule_retry(self, p: _Peer, extra: float = 0.0) -> None:
        if p.retry_timer is not None:
            p.retry_timer.cancel()
        backoff = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** min(p.attempts, 16))
        delay = extra + backoff * (0.8 + 0.4 * self._rng.random())
        p.attempts += 1
        p.retry_timer = self._clock.call_later(delay, lambda: self._dial(p))

    def _close_link(self, link: LinkId) -> None:
        self._forget_link(link)
        try:
            self._transport.close(link)
        except Exception as exc:  # closing must never fail the caller
            log.debug("close %s: %s", link, exc)

    def _forget_link(self, link: LinkId) -> None:
        self._links.pop(link, None)
        self._remember_dead(link)

    def _remember_dead(self, link: LinkId) -> None:
        self._dead[link] = None
        while len(self._dead) > 1024:
            self._dead.popitem(last=False)

    def _notify_link(self, peer: str, up: bool) -> None:
        if self.on_link is None:
            return
        try:
            self.on_link(peer, up)
        except Exception:
            log.exception("on_link callback failed")
            self.drops.drop("callback-error")

    # ------------------------------------------------------------------ sending

    def _encode(self, message: Any) -> tuple[str | None, bytes | None, int]:
        try:
            text = dumps_compact(message)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValueError(f"message is not plain JSON: {exc}") from None
        return self._sized(text)

    @staticmethod
    def _sized(text: str) -> tuple[str | None, bytes | None, int]:
        """One frame's text for a small message, the UTF-8 blob to chunk for a large one."""
        if text.isascii():
            size = len(text)
            if size <= CHUNK_SIZE:
                return text, None, size
        try:
            raw = text.encode()
        except UnicodeEncodeError:
            raise ValueError("message is not plain JSON: it holds a lone surrogate") from None
        size = len(raw)
        if size > MAX_MESSAGE_BYTES:
            raise ValueError(f"message of {size} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
        if size <= CHUNK_SIZE:
            return text, None, size
        return None, raw, size

    def _enqueue(self, p: _Peer, text: str | None, blob: bytes | None, size: int) -> None:
        if p.out and p.out_bytes + size > MAX_BUFFER_BYTES:
            raise SendBufferFull(
                f"resend buffer toward {p.id} is full ({p.out_bytes} bytes queued, limit "
                f"{MAX_BUFFER_BYTES}); its link is down or slow, try again later"
            )
        p.out.append(_Out(p.next_seq, size, text, blob))
        p.next_seq += 1
        p.out_bytes += size
        self._pump(p)

    def _pump(self, p: _Peer) -> None:
        if p.pump_timer is not None:
            p.pump_timer.cancel()
            p.pump_timer = None
        link = p.link
        if link is None or not p.greeted:
            return
        while p.cursor < len(p.out):
            if p.credit <= 0:
                p.credit = HIGH_WATER - self._transport.buffered_amount(link)
                if p.credit <= 0:
                    p.pump_timer = self._clock.call_later(PUMP_RETRY, lambda: self._pump(p))
                    return
            m = p.out[p.cursor]
            if m.text is not None:
                if p.piggyback and p.delivered > p.ack_sent and p.rsid is not None:
                    # Piggyback the ack we owe: the timer, if armed, finds nothing left to send.
                    frame: Payload = f'{{"t":"m","s":{m.seq},"a":{p.delivered},"d":{m.text}}}'
                    p.ack_sent = p.delivered
                    p.unacked_in = p.unacked_in_bytes = 0
                else:
                    frame = f'{{"t":"m","s":{m.seq},"d":{m.text}}}'
                p.credit -= m.size + 48
                p.cursor += 1
            else:
                assert m.blob is not None
                i = p.chunk
                body = m.blob[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]
                frame = _CHUNK_HEADER.pack(_MAGIC, FRAME_VERSION, m.seq, i, m.chunks, len(m.blob)) + body
                p.credit -= len(frame)
                p.chunk += 1
                if p.chunk >= m.chunks:
                    p.cursor += 1
                    p.chunk = 0
            self._write(p, link, frame)
            if p.link != link:  # the transport reported something re-entrantly
                return

    def _write(self, p: _Peer, link: LinkId, frame: Payload) -> None:
        self.stats["frames_out"] += 1
        self.stats["bytes_out"] += len(frame)
        try:
            self._transport.send(link, frame)
        except Exception as exc:  # a dying link: its LinkClosed will follow
            log.debug("send on %s failed: %s", link, exc)

    def _send_control(self, p: _Peer, obj: dict[str, Any]) -> None:
        if p.link is not None:
            text = _CONTROL_ENCODER.encode(obj)  # ASCII: the encoder escapes the rest
            p.credit -= len(text)
            self._write(p, p.link, text)

    def _acked(self, p: _Peer, upto: int) -> None:
        upto = min(upto, p.next_seq - 1)
        while p.out and p.out[0].seq <= upto:
            m = p.out.popleft()
            p.out_bytes -= m.size
            if p.cursor > 0:
                p.cursor -= 1
            else:
                p.chunk = 0

    # ------------------------------------------------------------------ receiving

    def _on_frame(self, p: _Peer, data: Payload) -> None:
        if isinstance(data, str):
            self._on_text(p, data)
        elif isinstance(data, bytes | bytearray | memoryview):
            self._on_chunk(p, bytes(data))
        else:
            self.drops.drop("bad-frame-type")

    def _on_text(self, p: _Peer, data: str) -> None:
        if len(data) > MAX_TEXT_FRAME:
            self.drops.drop("oversize")
            return
        try:
            obj: Any = _loads_text(data)
        except (ValueError, RecursionError):
            self.drops.drop("not-json")
            return
        if type(obj) is not dict or not isinstance(obj.get("t"), str):
            self.drops.drop("no-kind")
            return
        kind = obj["t"]
        if kind == "hi":
            self._on_hello(p, obj)
        elif kind == "ack":
            sid, s = obj.get("sid"), obj.get("s")
            if not isinstance(sid, str) or not _is_int(s):
                self.drops.drop("invalid:ack")
            elif sid == p.sid:
                self._acked(p, s)
        elif kind == "bye":
            p.bye = True
            if p.park_timer is not None:  # already off the roster: no reason to keep it
                self._remove(p.id)
        elif kind == "m":
            s, a = obj.get("s"), obj.get("a")
            if (type(s) is not int or not 0 <= s < 2**63 or "d" not in obj
                    or (a is not None and not _is_int(a))):
                self.drops.drop("invalid:m")
            elif not p.greeted:
                self.drops.drop("before-hello")
            else:
                if a is not None:
                    self._acked(p, a)
                self._on_message(p, s, obj["d"], len(data))
        else:
            self.drops.drop("unknown-frame")

    def _on_hello(self, p: _Peer, obj: dict[str, Any]) -> None:
        sid, base, ack = obj.get("sid"), obj.get("base"), obj.get("ack")
        if not isinstance(sid, str) or not sid or len(sid) > 64 or not _is_int(base) or base < 1:
            self.drops.drop("invalid:hi")
            return
        if sid != p.rsid:
            p.rsid, p.delivered = sid, base - 1
            p.ack_sent = p.delivered  # the peer no longer holds what lies below its base
        else:
            p.delivered = max(p.delivered, base - 1)
        p.piggyback = obj.get("pa") == 1
        p.bye = False  # a new greeting: whatever goodbye came before, the peer is back
        self._drop_reassembly(p)
        if isinstance(ack, dict) and ack.get("sid") == p.sid and _is_int(ack.get("s")):
            self._acked(p, ack["s"])
        first = not p.greeted
        p.greeted = True
        p.attempts = 0
        if p.open_timer is not None:
            p.open_timer.cancel()
            p.open_timer = None
        p.cursor = p.chunk = 0
        if p.out:
            self.stats["replayed"] += len(p.out)
        if first:
            self._notify_link(p.id, True)
        if self._peers.get(p.id) is p:
            self._pump(p)

    def _on_message(self, p: _Peer, seq: int, value: Any, size: int) -> None:
        if seq <= p.delivered:
            self.stats["duplicates"] += 1
            p.ack_sent = -1  # the peer missed our ack: send one whatever we think it knows
            self._note_delivered(p, 0)
            return
        if seq != p.delivered + 1 or p.reasm is not None:
            self.drops.drop("gap")
            return
        p.delivered = seq
        self._deliver(p, value)
        self._note_delivered(p, size)

    def _on_chunk(self, p: _Peer, data: bytes) -> None:
        if len(data) < _CHUNK_HEADER.size or len(data) > _CHUNK_HEADER.size + CHUNK_SIZE:
            self.drops.drop("bad-chunk")
            return
        magic, version, seq, index, count, total = _CHUNK_HEADER.unpack_from(data)
        body = data[_CHUNK_HEADER.size :]
        if magic != _MAGIC or version != FRAME_VERSION:
            self.drops.drop("bad-chunk")
            return
        if not p.greeted:
            self.drops.drop("before-hello")
            return
        if seq <= p.delivered:
            if index == count - 1:
                self.stats["duplicates"] += 1
                p.ack_sent = -1
                self._note_delivered(p, 0)
            return
        if seq != p.delivered + 1:
            self.drops.drop("gap")
            return
        if total > MAX_MESSAGE_BYTES:
            self.drops.drop("reassembly-too-big")
            return
        if count != max(1, math.ceil(total / CHUNK_SIZE)) or index >= count:
            self.drops.drop("bad-chunk")
            return
        expected = CHUNK_SIZE if index < count - 1 else total - (count - 1) * CHUNK_SIZE
        if len(body) != expected:
            self.drops.drop("bad-chunk")
            return
        r = p.reasm
        if index == 0:
            if r is not None:
                self.drops.drop("chunk-order")
                self._drop_reassembly(p)
            if self._reasm_bytes + total > REASSEMBLY_BUDGET:
                # Refuse for now; closing makes the sender resend later over a new link.
                self.drops.drop("reassembly-budget")
                if p.link is not None:
                    self._close_link(p.link)
                self._lost(p, "reassembly budget")
                return
            r = p.reasm = _Reassembly(seq, total, count)
            self._reasm_bytes += total
        elif r is None or r.seq != seq or r.next != index or r.total != total or r.count != count:
            self.drops.drop("chunk-order")
            self._drop_reassembly(p)
            return
        r.buf += body
        r.next += 1
        if r.next < r.count:
            return
        payload = bytes(r.buf)
        self._drop_reassembly(p)
        p.delivered = seq
        try:
            value = json.loads(payload)
        except (ValueError, RecursionError):
            self.drops.drop("not-json")
        else:
            self._deliver(p, value)
        self._note_delivered(p, total)

    def _drop_reassembly(self, p: _Peer) -> None:
        if p.reasm is not None:
            self._reasm_bytes -= p.reasm.total
            p.reasm = None

    def _deliver(self, p: _Peer, value: Any) -> None:
        self.stats["delivered"] += 1
        if self.on_message is None:
            return
        try:
            self.on_message(p.id, value)
        except Exception:
            log.exception("on_message callback failed for a message from %s", p.id)
            self.drops.drop("callback-error")

    def _note_delivered(self, p: _Peer, size: int) -> None:
        if p.ack_sent >= p.delivered:
            return  # a reply sent while the message was being handled already carried its ack
        p.unacked_in += 1
        p.unacked_in_bytes += size
        if p.unacked_in >= ACK_EVERY or p.unacked_in_bytes >= ACK_BYTES:
            self._send_ack(p)
        elif self._ack_sweep is None:
            self._ack_sweep = self._clock.call_later(ACK_DELAY, self._sweep_acks)

    def _sweep_acks(self) -> None:
        """Every ack still owed, at most :data:`ACK_DELAY` after the message that first owed one
        since the last sweep (later ones are acked sooner, never later)."""
        self._ack_sweep = None
        for p in list(self._peers.values()):
            if p.unacked_in:
                self._send_ack(p)

    def _send_ack(self, p: _Peer) -> None:
        if self._peers.get(p.id) is not p or p.rsid is None or not p.opened:
            return
        p.unacked_in = p.unacked_in_bytes = 0
        if p.ack_sent >= p.delivered:
            return  # piggybacked on a message since the timer was armed
        p.ack_sent = p.delivered
        self._send_control(p, {"t": "ack", "sid": p.rsid, "s": p.delivered})


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63
