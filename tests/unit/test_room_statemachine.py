"""Random join/leave/crash/freeze/partition/heal/advance sequences always converge.

After any script, healing the network, thawing everyone and waiting 20 simulated seconds must leave
exactly one coordinator and every live member's roster equal to the live set.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kibitz.clock import FakeClock
from kibitz.testing import Bus

MAX_LIVE = 7
QUIESCE = 20.0


class RoomMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.bus = Bus(self.clock, detect_delay=2.0, ice_fail_delay=1.0, expire_after=8.0)
        self.counter = 0
        self.frozen: set[str] = set()
        self._join()
        self._join()

    def _join(self) -> None:
        self.bus.spawn_member(f"p{self.counter}", "state-machine-room")
        self.counter += 1

    def live(self) -> list[str]:
        return sorted(self.bus.live_rooms())

    @precondition(lambda self: len(self.live()) < MAX_LIVE)
    @rule()
    def join(self) -> None:
        self._join()

    @precondition(lambda self: len(self.live()) > 0)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.live()))
        if name not in self.frozen:
            self.bus.rooms[name].leave()

    @precondition(lambda self: len(self.live()) > 0)
    @rule(data=st.data(), coordinator_first=st.booleans())
    def crash(self, data: st.DataObject, coordinator_first: bool) -> None:
        coordinators = [n for n in self.live() if self.bus.rooms[n].is_coordinator]
        if coordinator_first and coordinators:
            name = coordinators[0]
        else:
            name = data.draw(st.sampled_from(self.live()))
        self.bus.kill(name)
        self.frozen.discard(name)

    @precondition(lambda self: len(self.live()) > 0)
    @rule(data=st.data())
    def freeze(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.live()))
        self.bus.freeze(name)
        self.frozen.add(name)

    @precondition(lambda self: bool(self.frozen))
    @rule(data=st.data())
    def thaw(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.frozen)))
        self.bus.thaw(name)
        self.frozen.discard(name)

    @precondition(lambda self: len(self.live()) >= 2)
    @rule(data=st.data())
    def partition(self, data: st.DataObject) -> None:
        names = self.live()
        side = data.draw(st.sets(st.sampled_from(names), min_size=1, max_size=len(names) - 1))
        self.bus.partition(side, set(names) - side)

    @rule()
    def heal(self) -> None:
        self.bus.heal()

    @precondition(lambda self: len(self.live()) >= 2)
    @rule(data=st.data())
    def drop_presence_links(self, data: st.DataObject) -> None:
        a, b = data.draw(st.lists(st.sampled_from(self.live()), min_size=2, max_size=2, unique=True))
        self.bus.drop_links_between(a, b)

    @rule(seconds=st.sampled_from([0.01, 0.1, 0.5, 1.0, 3.0, 7.0, 13.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def nothing_breaks(self) -> None:
        for room in self.bus.rooms.values():
            assert room.drops.by_reason["internal-error"] == 0

    def teardown(self) -> None:
        self.bus.heal()
        for name in sorted(self.frozen):
            self.bus.thaw(name)
        self.frozen.clear()
        self.clock.advance(QUIESCE)
        if not self.bus.live_rooms():
            return
        live = self.bus.live_rooms().items()
        state = {n: (r.role, r.roster.coordinator, sorted(r.roster.ids())) for n, r in live}
        assert self.bus.converged(), state
        # Converged means stable: nobody keeps claiming or dialling.
        before = {n: dict(r.stats) for n, r in self.bus.live_rooms().items()}
        self.clock.advance(10.0)
        assert self.bus.converged(), state
        for n, r in self.bus.live_rooms().items():
            assert (r.stats["claims"], r.stats["dials"]) == (before[n]["claims"], before[n]["dials"])


RoomMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestRoomMachine = RoomMachine.TestCase
