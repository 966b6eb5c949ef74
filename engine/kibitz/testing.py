"""An in-memory broker + links, for running the real engine with no network, deterministically.

:class:`Bus` models what the engine relies on from the PeerJS-style broker and WebRTC data links, on
a :class:`~kibitz.clock.FakeClock`:

- ``claim(id)``: the first live process to claim an id holds it; others get ``"taken"``.
- ``dial``: to an id nobody holds → ``LinkClosed("peer-unavailable")`` after a broker round trip;
  to a held id → ``IncomingLink`` on the holder, then ``LinkOpened`` on both ends one latency after
  the holder *processed* the IncomingLink (a frozen holder cannot answer, as in a real browser).
- Messages arrive in order after ``latency``. ``close()`` on one end → ``LinkClosed`` on the other
  (the closer hears nothing); frames sent before the close still arrive first.
- A crash (:meth:`Bus.kill`) releases the process's ids; every process with a link to one of them
  gets ``PeerLeft(id)`` after ``leave_delay`` (the broker's LEAVE) and ``LinkClosed`` after
  ``detect_delay`` (how long a real data channel takes to notice).

Fault injection: :meth:`Bus.kill`, :meth:`Bus.drop_link`, :meth:`Bus.drop_links_between`,
:meth:`Bus.freeze`/:meth:`Bus.thaw`, :meth:`Bus.partition`/:meth:`Bus.heal`,
:meth:`Bus.restart_broker` (a deploy: every id is forgotten, claims fail for a while, links live on).

Two simplifications, on purpose:

- Freezing holds a process's inbound events and its timers until thawed. The broker notices the
  missing heartbeats: after ``expire_after`` seconds frozen (``None``: never) it expires the
  process, releasing its ids (others get ``PeerLeft`` and their links close); on thaw the process
  hears ``IdentityLost`` for each id and ``LinkClosed`` for each link.
- A partition cuts only peer links (links across close after ``detect_delay``, new dials across fail
  after ``ice_fail_delay``); the broker stays reachable by everyone, so claims still see one global
  holder per id. A split-brain broker is out of scope: Kibitz has one broker per room.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from kibitz.authority import HostKeyring
from kibitz.clock import FakeClock
from kibitz.gate import JoinGate
from kibitz.ids import PEER_ID_PATTERN
from kibitz.room import DEFAULT_FEATURES, MemberProfile, Room, RoomEvent
from kibitz.transport import (
    ClaimResult,
    EventSink,
    IdentityLost,
    IncomingLink,
    LinkClosed,
    LinkId,
    LinkMessage,
    LinkOpened,
    Payload,
    PeerLeft,
    TransportEvent,
)


@dataclass(eq=False)
class _Link:
    dead: bool = False
    """No new traffic; frames already in flight still arrive (a graceful close)."""
    cut: bool = False
    """Torn (crash, drop, partition, expiry): frames in flight are lost too."""


@dataclass(eq=False)
class _End:
    proc: _Proc
    link_id: LinkId
    local_id: str
    remote_id: str
    label: str
    link: _Link
    other: _End | None = None
    open: bool = False
    remote_fp: str | None = None
    """The far process's certificate fingerprint when the link opened (a later change of it shows
    on the next link only, as with a real DTLS session)."""
    fp_readable_at: float = 0.0
    """Clock time from which ``remote_fp`` can be read (see :attr:`Bus.cert_delay`)."""


@dataclass(eq=False)
class _Proc:
    name: str
    sink: EventSink | None = None
    alive: bool = True
    frozen: bool = False
    freeze_epoch: int = 0
    held: list[Callable[[], None]] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    links: dict[LinkId, _End] = field(default_factory=dict)
    fingerprint: str = ""


class _BusTimer:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ProcessScheduler:
    """One process's view of the shared fake clock: its timers wait while it is frozen, die with it."""

    def __init__(self, bus: Bus, proc: _Proc) -> None:
        self._bus = bus
        self._proc = proc

    def now(self) -> float:
        return self._bus.clock.now()

    def wall(self) -> float:
        return self._bus.clock.wall()

    def call_later(self, delay: float, callback: Callable[[], None]) -> _BusTimer:
        handle = _BusTimer()
        proc = self._proc

        def fire() -> None:
            if handle.cancelled or not proc.alive:
                return
            if proc.frozen:
                proc.held.append(fire)
                return
            callback()

        self._bus.clock.call_later(delay, fire)
        return handle


class BusTransport:
    """The :class:`~kibitz.transport.Transport` of one process on the bus."""

    def __init__(self, bus: Bus, proc: _Proc) -> None:
        self._bus = bus
        self._proc = proc

    @property
    def name(self) -> str:
        return self._proc.name

    def bind(self, sink: EventSink) -> None:
        self._proc.sink = sink

    def claim(self, peer_id: str) -> None:
        self._bus._claim(self._proc, peer_id)

    def release(self, peer_id: str) -> None:
        self._bus._release(self._proc, peer_id)

    def dial(self, local_id: str, remote_id: str, label: str) -> LinkId:
        return self._bus._dial(self._proc, local_id, remote_id, label)

    def send(self, link: LinkId, data: Payload) -> None:
        self._bus._send(self._proc, link, data)

    def buffered_amount(self, link: LinkId) -> int:
        return 0

    def close(self, link: LinkId) -> None:
        self._bus._close(self._proc, link)

    def local_fingerprint(self) -> str | None:
        return self._proc.fingerprint or None

    def remote_fingerprint(self, link: LinkId) -> str | None:
        end = self._proc.links.get(link)
        if end is None or not end.open or self._bus.clock.now() < end.fp_readable_at:
            return None
        return end.remote_fp


_NOT_ID = re.compile(r"[^A-Za-z0-9]+")


def fake_fingerprint(seed: str) -> str:
    """A stand-in certificate fingerprint (colon-hex SHA-256 of ``seed``) for a process on the bus."""
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 64, 2))


class Bus:
    """A deterministic broker + link fabric for many processes sharing one :class:`FakeClock`."""

    def __init__(
        self,
        clock: FakeClock,
        *,
        latency: float = 0.005,
        leave_delay: float = 0.05,
        detect_delay: float = 3.0,
        ice_fail_delay: float = 2.0,
        expire_after: float | None = 10.0,
        seed: int = 0,
        cert_delay: float = 0.0,
    ) -> None:
        self.clock = clock
        self.cert_delay = cert_delay
        """Seconds after a link opens before its far certificate can be read (a page reads it off
        the DTLS transport a moment after the channel opens; under load, seconds)."""
        self.latency = latency
        self.leave_delay = leave_delay
        self.detect_delay = detect_delay
        self.ice_fail_delay = ice_fail_delay
        self.expire_after = expire_after
        self.seed = seed
        self.stats: Counter[str] = Counter()
        """``claims``, ``dials``, ``messages``, ``bytes`` (frames actually sent on a link)."""
        self.rooms: dict[str, Room] = {}
        self.unhandled: dict[str, deque[TransportEvent]] = {}
        """Per spawned member: events its Room did not consume (what a data mesh would get)."""
        self._procs: dict[str, _Proc] = {}
        self._holders: dict[str, _Proc] = {}
        self._groups: dict[str, int] | None = None
        self._ids = itertools.count(1)
        self._certs = itertools.count(1)
        self._broker_down_until = -1.0

    # --- processes ------------------------------------------------------------------------------

    def transport(self, name: str) -> BusTransport:
        """A new process called ``name`` (a dead process's name may be reused for a restart)."""
        old = self._procs.get(name)
        if old is not None and old.alive:
            raise ValueError(f"process {name!r} already exists on the bus")
        proc = _Proc(name, fingerprint=fake_fingerprint(f"{self.seed}:{name}:{next(self._certs)}"))
        self._procs[name] = proc
        return BusTransport(self, proc)

    def fingerprint(self, name: str) -> str:
        """The certificate fingerprint process ``name`` presents on its links."""
        return self._proc(name).fingerprint

    def set_fingerprint(self, name: str, fp: str) -> None:
        """Give a process another certificate (links opened from now on present it)."""
        self._proc(name).fingerprint = fp

    def scheduler(self, name: str) -> ProcessScheduler:
        return ProcessScheduler(self, self._proc(name))

    def spawn_member(
        self,
        name: str,
        room: str,
        *,
        profile: MemberProfile | None = None,
        member_id: str | None = None,
        on_event: Callable[[RoomEvent], None] | None = None,
        features: Sequence[str] = DEFAULT_FEATURES,
        gate: JoinGate | None = None,
        host_key: str | None = None,
    ) -> Room:
        """Start a process that claims its member id, then runs a :class:`Room` (a minimal session).

        Events the room does not consume land in ``bus.unhandled[name]``; a lost member id is
        re-claimed, as a session would.
        """
        transport = self.transport(name)
        mid = member_id or "kbz-m-" + (_NOT_ID.sub("-", name).strip("-") or "x")
        r = Room(
            room,
            self_id=mid,
            transport=transport,
            scheduler=self.scheduler(name),
            rng=random.Random(f"{self.seed}:{name}:{self.clock.now()}"),
            profile=profile or MemberProfile(name=name),
            on_event=on_event,
            features=features,
            gate=gate,
            host_key=HostKeyring(host_key, room) if host_key else None,
        )
        rest: deque[TransportEvent] = deque(maxlen=1000)

        def reclaim() -> None:
            if r.role != "left" and self.is_alive(name):
                transport.claim(mid)

        def sink(ev: TransportEvent) -> None:
            if r.handle(ev):
                return
            if isinstance(ev, IdentityLost) and ev.peer_id == mid and r.role != "left":
                transport.claim(mid)
            elif isinstance(ev, ClaimResult) and ev.peer_id == mid and ev.outcome == "error":
                self.scheduler(name).call_later(0.5, reclaim)
            rest.append(ev)

        transport.bind(sink)
        transport.claim(mid)
        r.start()
        self.rooms[name] = r
        self.unhandled[name] = rest
        return r

    def is_alive(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.alive

    def live_rooms(self) -> dict[str, Room]:
        """Spawned members whose process is alive and whose room has not left."""
        return {n: r for n, r in self.rooms.items() if self.is_alive(n) and r.role != "left"}

    def converged(self) -> bool:
        """Exactly one coordinator, everyone else connected to it, every roster == the live set."""
        live = self.live_rooms()
        coordinators = [r for r in live.values() if r.is_coordinator]
        if len(coordinators) != 1:
            return False
        coordinator = coordinators[0].self_id
        expected = frozenset(r.self_id for r in live.values() if r.profile.on)
        return all(
            r.connected and r.roster.coordinator == coordinator and r.roster.ids() == expected
            for r in live.values()
        )

    def run_until_converged(self, timeout: float, step: float = 0.01) -> float | None:
        """Advance the clock until :meth:`converged`; the simulated seconds it took, or None."""
        start = self.clock.now()
        while True:
            if self.converged():
                return self.clock.now() - start
            if self.clock.now() - start >= timeout:
                return None
            self.clock.advance(step)

    def holder(self, peer_id: str) -> str | None:
        proc = self._holders.get(peer_id)
        return proc.name if proc is not None else None

    # --- faults ---------------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """Crash a process: no goodbye. Its ids are freed; linked peers hear LEAVE, then the close."""
        proc = self._proc(name)
        if not proc.alive:
            return
        proc.alive = False
        proc.held.clear()
        self._drop_ids(proc)
        told: set[tuple[str, str]] = set()
        for end in list(proc.links.values()):
            other = end.other
            end.link.dead = end.link.cut = True
            if other is None or not other.proc.alive:
                continue
            if (other.proc.name, end.local_id) not in told:
                told.add((other.proc.name, end.local_id))
                self._deliver(other.proc, PeerLeft(end.local_id), self.leave_delay)
            self._deliver(other.proc, LinkClosed(other.link_id, "peer-died"), self.detect_delay)
        proc.links.clear()

    def restart_broker(self, down: float = 2.0) -> None:
        """The broker process dies and is back ``down`` seconds later, knowing nobody (a deploy).

        Every live process hears :class:`IdentityLost` for each id it held; claims fail
        (``"error"``) until the broker is back; dials from an id that is not claimed again fail
        (``"not-registered"``). Links already open are peer to peer and live on. The dead broker
        sends no LEAVE to anyone.
        """
        self._broker_down_until = self.clock.now() + down
        self._holders.clear()
        for proc in self._procs.values():
            if not proc.alive:
                continue
            for peer_id in sorted(proc.ids):
                self._deliver(proc, IdentityLost(peer_id, "broker restarted"), self.latency)
            proc.ids.clear()

    @property
    def broker_up(self) -> bool:
        return self.clock.now() >= self._broker_down_until

    def drop_link(self, link: LinkId) -> None:
        """Tear one link (either end's id): both ends hear LinkClosed("dropped")."""
        for proc in self._procs.values():
            end = proc.links.get(link)
            if end is not None:
                self._cut(end, "dropped", self.latency)
                return
        raise KeyError(f"no live link {link!r}")

    def drop_links_between(self, a: str, b: str) -> int:
        """Tear every link between processes ``a`` and ``b``; returns how many."""
        pa = self._proc(a)
        ends = [e for e in pa.links.values() if e.other is not None and e.other.proc.name == b]
        for end in ends:
            self._cut(end, "dropped", self.latency)
        return len(ends)

    def freeze(self, name: str) -> None:
        """Stop a process: it receives nothing and its timers wait until :meth:`thaw`."""
        proc = self._proc(name)
        if proc.frozen or not proc.alive:
            return
        proc.frozen = True
        proc.freeze_epoch += 1
        if self.expire_after is not None:
            epoch = proc.freeze_epoch

            def expire() -> None:
                if proc.alive and proc.frozen and proc.freeze_epoch == epoch:
                    self._expire(proc)

            self.clock.call_later(self.expire_after, expire)

    def thaw(self, name: str) -> None:
        proc = self._proc(name)
        if not proc.frozen:
            return
        proc.frozen = False
        held, proc.held = proc.held, []
        for callback in held:
            self.clock.call_soon(callback)

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut peer links between groups (unlisted processes form one more group together)."""
        self._groups = {}
        for index, group in enumerate(groups):
            for name in group:
                self._groups[name] = index
        for proc in list(self._procs.values()):
            for end in list(proc.links.values()):
                if end.other is not None and not self._reachable(proc, end.other.proc):
                    self._cut(end, "partitioned", self.detect_delay)

    def heal(self) -> None:
        self._groups = None

    # --- transport internals --------------------------------------------------------------------

    def _proc(self, name: str) -> _Proc:
        try:
            return self._procs[name]
        except KeyError:
            raise KeyError(f"no process {name!r} on the bus") from None

    def _reachable(self, a: _Proc, b: _Proc) -> bool:
        if self._groups is None:
            return True
        return self._groups.get(a.name, -1) == self._groups.get(b.name, -1)

    def _deliver(self, proc: _Proc, ev: TransportEvent, delay: float) -> None:
        self.clock.call_later(delay, lambda: self._arrive(proc, ev))

    def _arrive(self, proc: _Proc, ev: TransportEvent) -> None:
        if not proc.alive:
            return
        if proc.frozen:
            proc.held.append(lambda: self._arrive(proc, ev))
            return
        if isinstance(ev, LinkOpened | LinkMessage | LinkClosed):
            end = proc.links.get(ev.link)
            if end is None:
                return  # we closed it ourselves, or it is long gone
            if isinstance(ev, LinkOpened):
                if end.link.dead or end.open:
                    return
                end.open = True
                end.remote_fp = end.other.proc.fingerprint if end.other is not None else None
                end.fp_readable_at = self.clock.now() + self.cert_delay
            elif isinstance(ev, LinkMessage):
                if end.link.cut:
                    return
            else:
                del proc.links[ev.link]
        if isinstance(ev, IncomingLink):
            end = proc.links.get(ev.link)
            if end is None or end.link.dead:
                return
            # The holder has answered: both ends open one latency later.
            self._deliver(proc, LinkOpened(end.link_id), self.latency)
            if end.other is not None:
                self._deliver(end.other.proc, LinkOpened(end.other.link_id), self.latency)
        if proc.sink is not None:
            proc.sink(ev)

    def _claim(self, proc: _Proc, peer_id: str) -> None:
        self.stats["claims"] += 1
        if not self.broker_up:
            outcome = ClaimResult(peer_id, "error", "cannot reach broker")
        elif not PEER_ID_PATTERN.match(peer_id):
            outcome = ClaimResult(peer_id, "error", "invalid id")
        else:
            holder = self._holders.get(peer_id)
            if holder is None or holder is proc:
                self._holders[peer_id] = proc
                proc.ids.add(peer_id)
                outcome = ClaimResult(peer_id, "claimed")
            else:
                outcome = ClaimResult(peer_id, "taken")
        self._deliver(proc, outcome, 2 * self.latency)

    def _release(self, proc: _Proc, peer_id: str) -> None:
        if self._holders.get(peer_id) is proc:
            del self._holders[peer_id]
        proc.ids.discard(peer_id)
        for link_id, end in list(proc.links.items()):
            if end.local_id == peer_id:
                del proc.links[link_id]
                self._end_link(end, "peer-released", self.latency, tell_self=False)

    def _drop_ids(self, proc: _Proc) -> None:
        for peer_id in proc.ids:
            if self._holders.get(peer_id) is proc:
                del self._holders[peer_id]
        proc.ids.clear()

    def _expire(self, proc: _Proc) -> None:
        """The broker gave up on a frozen process: ids freed, LEAVE to peers, its links torn."""
        lost = sorted(proc.ids)
        self._drop_ids(proc)
        for peer_id in lost:
            self._deliver(proc, IdentityLost(peer_id, "expired"), 0.0)
        told: set[tuple[str, str]] = set()
        for end in list(proc.links.values()):
            other = end.other
            key = (other.proc.name, end.local_id) if other is not None else None
            if other is not None and key is not None and other.proc.alive and key not in told:
                told.add(key)
                self._deliver(other.proc, PeerLeft(end.local_id), self.leave_delay)
            self._cut(end, "peer-expired", self.latency)

    def _dial(self, proc: _Proc, local_id: str, remote_id: str, label: str) -> LinkId:
        self.stats["dials"] += 1
        n = next(self._ids)
        link = _Link()
        mine = _End(proc, f"L{n}a", local_id, remote_id, label, link)
        proc.links[mine.link_id] = mine
        holder = self._holders.get(remote_id)
        if local_id not in proc.ids:
            self._fail(mine, "not-registered", 2 * self.latency)
        elif holder is None or not holder.alive:
            self._fail(mine, "peer-unavailable", 2 * self.latency)
        elif not self._reachable(proc, holder):
            self._fail(mine, "ice-failed", self.ice_fail_delay)
        else:
            theirs = _End(holder, f"L{n}b", remote_id, local_id, label, link, other=mine)
            mine.other = theirs
            holder.links[theirs.link_id] = theirs
            self._deliver(holder, IncomingLink(theirs.link_id, remote_id, local_id, label), self.latency)
        return mine.link_id

    def _fail(self, end: _End, reason: str, delay: float) -> None:
        end.link.dead = True
        self._deliver(end.proc, LinkClosed(end.link_id, reason), delay)

    def _send(self, proc: _Proc, link_id: LinkId, data: Payload) -> None:
        end = proc.links.get(link_id)
        if end is None or end.link.dead or not end.open or end.other is None:
            self.stats["dropped-sends"] += 1
            return
        self.stats["messages"] += 1
        self.stats["bytes"] += len(data)
        other = end.other
        self._deliver(other.proc, LinkMessage(other.link_id, data), self.latency)

    def _close(self, proc: _Proc, link_id: LinkId) -> None:
        end = proc.links.pop(link_id, None)
        if end is not None:
            self._end_link(end, "closed", self.latency, tell_self=False)

    def _end_link(self, end: _End, reason: str, delay: float, *, tell_self: bool) -> None:
        if end.link.dead:
            return
        end.link.dead = True
        if tell_self:
            self._deliver(end.proc, LinkClosed(end.link_id, reason), delay)
        if end.other is not None:
            self._deliver(end.other.proc, LinkClosed(end.other.link_id, reason), delay)

    def _cut(self, end: _End, reason: str, delay: float) -> None:
        was_dead = end.link.dead
        end.link.cut = True
        if was_dead:
            return
        self._end_link(end, reason, delay, tell_self=True)


__all__ = ["Bus", "BusTransport", "ProcessScheduler", "fake_fingerprint"]
