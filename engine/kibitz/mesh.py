"""The data mesh: one reliable, ordered message link between every pair of room members.

The room engine says who is in the room (:meth:`Mesh.set_members`); the mesh keeps a link to each
of them and delivers JSON values over it **in order and exactly once, across link drops**.

Two protocols, one class each. :class:`Mesh`, here, is the *links*: whom to dial, one link per
peer, parking, open timeouts, retries with backoff, link up/down (links from someone the roster does
not name yet wait in :class:`~kibitz.mesh_held.HeldLinks`). What flows over a link, hello, sequence
numbers, acks, the resend buffer, chunking, reassembly and delivery, is the *stream*
(:mod:`kibitz.mesh_stream`, in the frames of :mod:`kibitz.mesh_wire`). Between the two:

* the mesh owns one :class:`~kibitz.mesh_stream.PeerStream` per member (``Streams.stream`` when it
  is added, ``Streams.retire`` when it is dropped) and tells it about each link: ``open(link)`` once
  it is open (the stream says ``hi``), every frame received on it (``on_text``/``on_frame``) and
  ``detach()`` when it is gone; sends are checked by :func:`~kibitz.mesh_wire.encode` and queued by
  ``PeerStream.enqueue`` or ``Streams.broadcast``;
* the stream answers through :class:`~kibitz.mesh_stream.LinkSide`, about its own peer:
  ``on_greeted`` (the peer's ``hi`` arrived: the link is up), ``on_bye`` (it leaves on purpose) and
  ``on_overload`` (close this link and plan the next one).

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

Reliable delivery, acks, backpressure: see :mod:`kibitz.mesh_stream`; framing: :mod:`kibitz.mesh_wire`.
Their constants and :class:`~kibitz.mesh_stream.SendBufferFull` are re-exported here; they are read
there, so patch them there.

Bad input (oversize, malformed, unknown or out-of-order frames, reassemblies too large or over the
memory budget, links from ourselves, too many held links) is dropped and counted in
:attr:`Mesh.drops`; nothing a peer sends raises here.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kibitz.clock import Scheduler, TimerHandle
from kibitz.mesh_held import HOLD_SECONDS, MAX_HELD, MAX_HELD_FRAMES, HeldLinks
from kibitz.mesh_stream import (
    ACK_BYTES,
    ACK_DELAY,
    ACK_EVERY,
    HIGH_WATER,
    MAX_BUFFER_BYTES,
    PUMP_RETRY,
    REASSEMBLY_BUDGET,
    RECV_MEMORY,
    PeerStream,
    SendBufferFull,
    Streams,
)
from kibitz.mesh_wire import (
    CHUNK_HEADER,
    CHUNK_SIZE,
    FRAME_VERSION,
    MAX_MESSAGE_BYTES,
    MAX_TEXT_FRAME,
    encode,
    sized,
)
from kibitz.protocol.base import DropCounter
from kibitz.transport import (
    IncomingLink,
    LinkClosed,
    LinkId,
    LinkMessage,
    LinkOpened,
    Transport,
    TransportEvent,
)

__all__ = [  # the constants live where they are read: kibitz.mesh_stream, mesh_wire, mesh_held
    "ACK_BYTES", "ACK_DELAY", "ACK_EVERY", "BACKOFF_BASE", "BACKOFF_MAX", "CHUNK_SIZE", "FALLBACK_DIAL",
    "FRAME_VERSION", "HIGH_WATER", "HOLD_SECONDS", "MAX_BUFFER_BYTES", "MAX_HELD", "MAX_HELD_FRAMES",
    "MAX_MESSAGE_BYTES", "MAX_TEXT_FRAME", "OPEN_TIMEOUT", "PARK_SECONDS", "PUMP_RETRY",
    "REASSEMBLY_BUDGET", "RECV_MEMORY", "UNPARK_FALLBACK", "Mesh", "SendBufferFull", "dial_plan", "dials",
]

_CHUNK_HEADER = CHUNK_HEADER  # tests build chunk frames with it

log = logging.getLogger(__name__)

OPEN_TIMEOUT = 15.0
"""A link that is not open and greeted by then is closed and dialled again."""
BACKOFF_BASE = 0.25
BACKOFF_MAX = 8.0
FALLBACK_DIAL = 4.0
"""The larger id dials itself after this long without a link (plus backoff)."""
UNPARK_FALLBACK = 1.0
"""The same, for a member back from a presence blip: its side of the old link may still look up to
it (a stopped process, a frozen tab), so it may not dial for a while."""
PARK_SECONDS = 60.0
"""How long a member that dropped off the roster keeps its streams and queue (see the module doc)."""


def dials(self_id: str, peer_id: str) -> bool:
    """Whether ``self_id`` is the one that dials ``peer_id`` (the smaller id does)."""
    return self_id < peer_id


def dial_plan(self_id: str, member_ids: Iterable[str]) -> list[str]:
    """The members ``self_id`` dials, sorted: each pair of distinct ids appears in one plan only."""
    return sorted({m for m in member_ids if dials(self_id, m)})


@dataclass(slots=True, eq=False)
class _Peer:
    """One member's link state, and its :attr:`stream`'s :class:`~kibitz.mesh_stream.LinkSide`."""

    id: str
    dialer: bool
    mesh: Mesh
    stream: PeerStream = field(init=False)
    link: LinkId | None = None
    opened: bool = False
    attempts: int = 0
    open_timer: TimerHandle | None = None
    retry_timer: TimerHandle | None = None
    park_timer: TimerHandle | None = None
    """Set while the peer is off the roster but kept (see "Presence blips")."""
    bye: bool = False
    """The peer said it is leaving on purpose: drop it, do not park it, when the roster does."""

    def on_greeted(self, first: bool) -> None:
        self.mesh._greeted(self, first)

    def on_bye(self) -> None:
        self.mesh._said_bye(self)

    def on_overload(self) -> None:
        self.mesh._overloaded(self)


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
        self.on_link = on_link
        self.drops = DropCounter()
        self.stats: dict[str, int] = {
            "dials": 0, "delivered": 0, "duplicates": 0, "frames_out": 0, "replayed": 0, "bytes_out": 0,
            "parked": 0, "unparked": 0,
        }
        self._transport = transport
        self._clock = scheduler
        self._rng = rng
        self._streams = Streams(transport=transport, scheduler=scheduler, rng=rng, stats=self.stats,
                                drops=self.drops, on_message=on_message)
        self._peers: dict[str, _Peer] = {}
        self._links: dict[LinkId, str] = {}
        self._dead: OrderedDict[LinkId, None] = OrderedDict()
        self._held = HeldLinks(scheduler=scheduler, drops=self.drops, close_link=self._close_link,
                               remember_dead=self._remember_dead)

    @property
    def on_message(self) -> Callable[[str, Any], None] | None:
        """Called with ``(peer, value)`` for every message delivered (may be set later)."""
        return self._streams.on_message

    @on_message.setter
    def on_message(self, callback: Callable[[str, Any], None] | None) -> None:
        self._streams.on_message = callback

    @property
    def _reasm_bytes(self) -> int:  # tests check the reassembly budget is given back
        return self._streams.reasm_bytes

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
        return p is not None and p.stream.greeted

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
        return len(p.stream.out) if p else 0

    def buffered(self, peer: str) -> int:
        """Bytes held in the resend buffer toward ``peer``."""
        p = self._peers.get(peer)
        return p.stream.out_bytes if p else 0

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
            p.stream.on_text(data)
        else:
            p.stream.on_frame(data)
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
        if link in self._held:
            self._held.event(link, event)
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
            p.stream.on_frame(event.data)
        else:
            self._forget_link(link)
            self._lost(p, event.reason)
        return True

    def send(self, to: str, message: Any) -> None:
        """Queue ``message`` (a JSON value) for ``to``; delivered once, in order, even across drops.

        Raises ``ValueError`` for ourselves, a non-JSON or oversized message, or a full resend
        buffer (:class:`SendBufferFull`), and ``KeyError`` when ``to`` is not in the room.
        """
        self._stream_to(to).enqueue(*encode(message))

    def send_encoded(self, to: str, text: str) -> None:
        """:meth:`send` for a message that is already compact JSON text (the caller vouches for it).

        Saves encoding the same value twice; the text is framed as is, so it must be exactly one
        JSON value or the peer drops the frame and the stream stalls at that sequence number.
        """
        self._stream_to(to).enqueue(*sized(text))

    def _stream_to(self, to: str) -> PeerStream:
        if to == self.self_id:
            raise ValueError("cannot send a message to ourselves")
        p = self._peers.get(to)
        if p is None:
            raise KeyError(f"{to!r} is not in the room")
        return p.stream

    def broadcast(self, message: Any, *, only: Callable[[str], bool] | None = None) -> list[str]:
        """Queue ``message`` for every member (never ourselves) that ``only`` admits; returns them.

        A peer whose resend buffer is full is skipped and counted (``buffer-full``).
        """
        return self._streams.broadcast(encode(message), only)

    def broadcast_encoded(self, text: str, *, only: Callable[[str], bool] | None = None) -> list[str]:
        """:meth:`broadcast` for compact JSON text (see :meth:`send_encoded`)."""
        return self._streams.broadcast(sized(text), only)

    def pump(self, peer: str | None = None) -> None:
        """Write queued frames now (call from the transport's drain signal)."""
        if peer is None:
            targets = list(self._peers.values())
        else:
            one = self._peers.get(peer)
            targets = [one] if one is not None else []
        for p in targets:
            p.stream.drained()

    on_drained = pump

    def depart(self) -> None:
        """We leave on purpose: say ``bye`` on every link, then drop every member and its queue."""
        for p in list(self._peers.values()):
            if p.link is not None and p.opened:
                p.stream.say_bye()
            self._remove(p.id)

    def close(self) -> None:
        """Leave: say goodbye, close every link and stop every timer."""
        self.depart()
        self._streams.close()
        self._held.close()

    # ------------------------------------------------------------------ roster

    def _add(self, peer_id: str) -> None:
        p = _Peer(id=peer_id, dialer=dials(self.self_id, peer_id), mesh=self)
        p.stream = self._streams.stream(peer_id, p)
        self._peers[peer_id] = p
        held = self._held.take(peer_id)
        if held is not None:
            self._attach(p, held.link)
            if held.opened:
                self._opened(p)
            for frame in held.frames:
                if self._peers.get(peer_id) is not p or p.link != held.link:
                    break
                p.stream.on_frame(frame)
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
        was_up = p.stream.greeted
        if p.link is not None:
            self._close_link(p.link)
        self._reset_link_state(p)
        for timer in (p.retry_timer, p.park_timer):
            if timer is not None:
                timer.cancel()
        p.retry_timer = p.park_timer = None
        self._streams.retire(p.stream)
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
        if p.link == link and not p.stream.greeted and self._peers.get(p.id) is p:
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
            self._held.hold(remote, ev.link)
            return
        if p.link is not None:
            # The smaller id's dial always wins; the larger id's fallback wins only over a link
            # we think is up (its dial proves it lost that link), never over our dial in flight.
            if not dials(remote, self.self_id) and not p.stream.greeted:
                self.drops.drop("glare")
                self._close_link(ev.link)
                return
            old = p.link
            self._close_link(old)
            self._lost(p, "replaced", redial=False)
        self._attach(p, ev.link)

    def _opened(self, p: _Peer) -> None:
        if p.opened:
            return
        p.opened = True
        p.stream.open(p.link)

    def _greeted(self, p: _Peer, first: bool) -> None:
        """The peer's ``hi`` arrived on ``p``'s link (its stream is up to date): the link is up."""
        p.bye = False  # a new greeting: whatever goodbye came before, the peer is back
        p.attempts = 0
        if p.open_timer is not None:
            p.open_timer.cancel()
            p.open_timer = None
        if first:
            self._notify_link(p.id, True)

    def _said_bye(self, p: _Peer) -> None:
        p.bye = True
        if p.park_timer is not None:  # already off the roster: no reason to keep it
            self._remove(p.id)

    def _overloaded(self, p: _Peer) -> None:
        """Its stream refused a reassembly over the budget: closing makes the peer resend later."""
        if p.link is not None:
            self._close_link(p.link)
        self._lost(p, "reassembly budget")

    def _lost(self, p: _Peer, reason: str, *, redial: bool = True) -> None:
        """The current link is gone (already closed or forgotten); plan the next one."""
        was_up = p.stream.greeted
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
        p.opened = False
        if p.open_timer is not None:
            p.open_timer.cancel()
            p.open_timer = None
        p.stream.detach()

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
