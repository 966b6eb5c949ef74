"""Real faults on the in-memory bus, with real sessions: a broker restart (whatever the race for the
room id afterwards), a frozen member, a member that drops off the roster and comes back.

Every scenario streams numbered broadcasts and directed messages between all members throughout
and checks at the end that each member got every one of them exactly once and in order, and that
presence healed within a few (simulated) seconds. The real-network versions of these scenarios are
in tests/e2e/test_faults.py.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from kibitz.clock import FakeClock
from kibitz.ids import room_peer_id
from kibitz.session import Session
from kibitz.testing import Bus

ROOM = "room-faults-3f9k2mq7p1"
RATE = 0.1  # one broadcast and one directed message to each other member every 100 ms


class Member:
    def __init__(self, bus: Bus, name: str, **kw: Any) -> None:
        self.name = name
        self.bus = bus
        self.session = Session(
            ROOM, transport=bus.transport(name), scheduler=bus.scheduler(name), rng=random.Random(name),
            name=name, wall_clock=bus.clock.now, **kw,
        )
        self.got: dict[tuple[str, str], list[int]] = {}
        self.sent_b = 0
        self.sent_d: dict[str, int] = {}
        self.refused = 0
        self.session.on_message(self._on_message)
        self.session.start()
        self.sched = bus.scheduler(name)
        self.streaming = False
        self.rosters: list[frozenset[str]] = []
        self.session.on("participants", lambda ps: self.rosters.append(frozenset(p["id"] for p in ps)))

    @property
    def id(self) -> str:
        return self.session.self_id

    def _on_message(self, data: Any, sender: str) -> None:
        self.got.setdefault((sender, data["k"]), []).append(data["s"])

    def stream(self, to: list[str]) -> None:
        self.streaming = True

        def tick() -> None:
            if not self.streaming or not self.bus.is_alive(self.name):
                return
            self.sent_b += 1
            self.session.broadcast({"k": "b", "s": self.sent_b})
            for peer in to:
                n = self.sent_d.get(peer, 0) + 1
                try:
                    self.session.send_to(peer, {"k": "d", "s": n})
                except (KeyError, ValueError):
                    self.refused += 1
                    continue
                self.sent_d[peer] = n
            self.sched.call_later(RATE, tick)

        tick()


def make_room(bus: Bus, names: str) -> list[Member]:
    members = []
    for name in names:
        members.append(Member(bus, name))
        bus.clock.advance(0.5)  # the first one coordinates
    for m in members:
        m.session.join()
    bus.clock.advance(3)
    assert converged(members)
    return members


def converged(members: list[Member]) -> bool:
    ids = {m.id for m in members}
    coordinators = [m for m in members if m.session.get_state()["isCoordinator"]]
    if len(coordinators) != 1:
        return False
    for m in members:
        state = m.session.get_state()
        people = m.session.get_participants()
        if not state["connected"] or {p["id"] for p in people} != ids or not all(p["linkUp"] for p in people):
            return False
        if state["coordinator"] != coordinators[0].id:
            return False
    return True


def run_until(bus: Bus, check: Callable[[], bool], timeout: float, step: float = 0.05) -> float | None:
    start = bus.clock.now()
    while not check():
        if bus.clock.now() - start > timeout:
            return None
        bus.clock.advance(step)
    return bus.clock.now() - start


def start_streams(members: list[Member]) -> None:
    ids = [m.id for m in members]
    for m in members:
        m.stream([i for i in ids if i != m.id])


def stop_and_check(bus: Bus, members: list[Member], settle: float = 10.0) -> None:
    for m in members:
        m.streaming = False
    bus.clock.advance(settle)
    for m in members:
        assert m.refused == 0, f"{m.name}: {m.refused} directed sends refused"
        for other in members:
            if other is m:
                continue
            got_b = m.got.get((other.id, "b"), [])
            got_d = m.got.get((other.id, "d"), [])
            assert got_b == list(range(1, other.sent_b + 1)), f"{m.name} broadcasts from {other.name}"
            want_d = list(range(1, other.sent_d.get(m.id, 0) + 1))
            assert got_d == want_d, f"{m.name} directed from {other.name}"


@pytest.fixture
def bus() -> Bus:
    return Bus(FakeClock())


def test_broker_restart_presence_does_not_blip_when_the_coordinator_reclaims(bus: Bus) -> None:
    """The usual deploy: nobody new arrives while the broker is away. Links are peer to peer, so the
    star and the mesh go on; the coordinator takes its room id back and nobody's roster changes."""
    members = make_room(bus, "abcd")
    start_streams(members)
    bus.clock.advance(2)
    coordinator = next(m for m in members if m.session.get_state()["isCoordinator"])
    for m in members:
        m.rosters.clear()
    bus.restart_broker(down=3.0)
    offline: list[str] = []

    def reclaimed() -> bool:
        offline.extend(m.name for m in members if not m.session.get_state()["connected"])
        return bus.broker_up and bus.holder(room_peer_id(ROOM)) == coordinator.name

    healed = run_until(bus, reclaimed, timeout=10)
    assert healed is not None and healed < 3.0 + 2.0, f"room id re-claimed after {healed}"
    assert offline == [], f"presence went down during the restart: {sorted(set(offline))}"
    bus.clock.advance(5)
    ids = frozenset(m.id for m in members)
    for m in members:
        assert all(r == ids for r in m.rosters), f"{m.name}'s roster blipped: {[len(r) for r in m.rosters]}"
        assert m.session.get_state()["connected"]
    assert converged(members)
    stop_and_check(bus, members)


def test_a_coordinator_that_forgot_a_live_link_is_found_again() -> None:
    """The silent-coordinator wait must not strand a participant whose link the (live) coordinator
    dropped from its books while the link itself stayed open: the spare dial finds it."""
    bus = Bus(FakeClock(), expire_after=60.0)
    members = make_room(bus, "abc")
    coordinator = next(m for m in members if m.session.get_state()["isCoordinator"])
    victim = next(m for m in members if m is not coordinator)
    assert coordinator.session.room is not None and victim.session.room is not None
    core = coordinator.session.room._coordinator
    assert core is not None
    link = next(lk for lk, mid in core.links.items() if mid == victim.id)
    # A bookkeeping slip: the coordinator forgets the member and its link without closing it, so
    # the victim hears only silence on a link that looks fine.
    core.links.pop(link)
    core._entries.pop(victim.id)
    core.broadcast()
    healed = run_until(bus, lambda: converged(members), timeout=60)
    assert healed is not None and healed < 30, f"healed after {healed}"


@pytest.mark.parametrize("seed", range(6))
def test_broker_restart_heals_within_seconds_whatever_wins_the_room_id(bus: Bus, seed: int) -> None:
    """A newcomer (or a participant whose own link failed meanwhile) claims the room id first on
    the restarted broker: the old coordinator must hand over, and everyone must be on one roster
    again within a few seconds, with nothing lost on the way."""
    rng = random.Random(seed)
    members = make_room(bus, "abcd")
    start_streams(members)
    bus.clock.advance(2)
    coordinator = next(m for m in members if m.session.get_state()["isCoordinator"])
    down = rng.uniform(1.0, 5.0)
    bus.restart_broker(down=down)
    if seed % 2:
        # A participant's presence link dies during the outage: it must look for a coordinator.
        victim = next(m for m in members if m is not coordinator)
        link = victim.session.room.presence_link if victim.session.room else None
        assert link is not None
        bus.drop_link(link)
    bus.clock.advance(down + rng.uniform(0.0, 0.3))
    newcomer = Member(bus, "new")  # claims its id, then the room id, at once
    newcomer.session.join()
    everyone = [*members, newcomer]
    healed = run_until(bus, lambda: converged(everyone), timeout=20)
    assert healed is not None and healed < 6.0, f"presence healed only after {healed} s"
    ids = [m.id for m in everyone]
    newcomer.stream([i for i in ids if i != newcomer.id])
    bus.clock.advance(2)
    stop_and_check(bus, members)


def test_frozen_member_comes_back_under_its_id_and_gets_everything(bus: Bus) -> None:
    """Frozen past the reap (12 s) but within the park window (60 s), and past the broker's
    expiry of its socket: it comes back with the same member id, no duplicate, nothing lost."""
    members = make_room(bus, "abc")
    start_streams(members)
    bus.clock.advance(2)
    frozen = next(m for m in members if not m.session.get_state()["isCoordinator"])
    bus.freeze(frozen.name)
    bus.clock.advance(30)
    others = [m for m in members if m is not frozen]
    for m in others:
        assert frozen.id not in {p["id"] for p in m.session.get_participants()}, "reaped meanwhile"
        assert frozen.id in m.session.mesh.parked
    bus.thaw(frozen.name)
    healed = run_until(bus, lambda: converged(members), timeout=20)
    assert healed is not None and healed < 8.0, f"healed after {healed}"
    for m in members:
        assert len(m.session.get_participants()) == 3, "no duplicate participant"
    stop_and_check(bus, members)


@pytest.mark.parametrize("frozen_for", [20.0, 23.5, 27.0, 30.0, 33.5, 37.0])
def test_frozen_coordinator_is_waited_for_and_heals_at_once_on_thaw(frozen_for: float) -> None:
    """A frozen coordinator still holds the room id at the broker (its socket lives until the
    broker's 60 s alive timeout), so nobody can take over; participants keep their (peer-to-peer,
    still open) presence links instead of tearing them down, and the roster is live again the
    moment it thaws."""
    bus = Bus(FakeClock(), expire_after=60.0)
    members = make_room(bus, "abc")
    start_streams(members)
    bus.clock.advance(2)
    coordinator = next(m for m in members if m.session.get_state()["isCoordinator"])
    others = [m for m in members if m is not coordinator]
    bus.freeze(coordinator.name)
    bus.clock.advance(frozen_for)
    for m in others:
        assert m.session.get_state()["connected"], "the (open, peer-to-peer) presence link was kept"
    bus.thaw(coordinator.name)
    healed = run_until(bus, lambda: converged(members), timeout=30)
    assert healed is not None and healed < 1.0, f"healed {healed} s after the thaw"
    assert coordinator.session.get_state()["isCoordinator"]
    stop_and_check(bus, members)
