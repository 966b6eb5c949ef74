"""The room engine on the in-memory bus: election, convergence, leave, failover, faults, lobby."""

from __future__ import annotations

import random
from typing import Any

import pytest

from kibitz.clock import FakeClock
from kibitz.crypto import PrivateKey
from kibitz.gate import HostSpec, JoinGate
from kibitz.room import (
    PRESENCE_LABEL,
    Kicked,
    KnocksChanged,
    LobbyStatus,
    MemberProfile,
    RoleChanged,
    Room,
    RoomEvent,
    RosterChanged,
)
from kibitz.testing import Bus
from kibitz.transport import ClaimResult, IncomingLink, LinkClosed, LinkMessage, LinkOpened, PeerLeft

ROOM = "room-3f9k2mq7p1"
ROOM_ID = "kbz-v1-room-3f9k2mq7p1"


def make(n: int, *, spawn_gap: float = 0.0, **bus_kwargs: Any) -> tuple[FakeClock, Bus, list[Room]]:
    clock = FakeClock()
    bus = Bus(clock, **bus_kwargs)
    rooms = []
    for i in range(n):
        rooms.append(bus.spawn_member(f"m{i}", ROOM))
        if spawn_gap:
            clock.advance(spawn_gap)
    return clock, bus, rooms


HOST_KEY = PrivateKey.from_bytes(bytes(range(1, 33)))
HOSTED_GATE = JoinGate(host=HostSpec(key=HOST_KEY.public_key.to_text()))
HOSTED_ROOM = "room-hosted-3f9k2mq7p1"  # a hand-made room given a gate (no commitment)


def make_hosted(n: int) -> tuple[FakeClock, Bus, list[Room], Room]:
    """``n`` guests converge in a room whose gate names a host key, then the host joins (so it is
    never the first coordinator)."""
    clock = FakeClock()
    bus = Bus(clock)
    rooms = [bus.spawn_member(f"m{i}", HOSTED_ROOM, gate=HOSTED_GATE) for i in range(n)]
    bus.run_until_converged(1.0)
    host = bus.spawn_member("host", HOSTED_ROOM, gate=HOSTED_GATE, host_key=HOST_KEY.to_text())
    assert bus.run_until_converged(2.0) is not None
    rooms.append(host)
    assert all(r.roster.host == host.self_id for r in rooms)
    return clock, bus, rooms, host


def coordinators(bus: Bus) -> list[str]:
    return [n for n, r in bus.live_rooms().items() if r.is_coordinator]


def test_simultaneous_arrivals_elect_exactly_one_coordinator() -> None:
    _clock, bus, rooms = make(8)
    took = bus.run_until_converged(1.0)
    assert took is not None and took < 0.2
    assert len(coordinators(bus)) == 1
    assert bus.holder(ROOM_ID) == coordinators(bus)[0]
    assert all(r.role == "participant" for r in rooms if not r.is_coordinator)
    assert {r.roster.coordinator for r in rooms} == {bus.rooms[coordinators(bus)[0]].self_id}
    assert all(r.drops.total == 0 for r in rooms)


def test_roster_carries_profiles_features_and_updates() -> None:
    clock, bus, rooms = make(3)
    bus.run_until_converged(1.0)
    events: list[RoomEvent] = []
    later = bus.spawn_member(
        "dana", ROOM, profile=MemberProfile(name="Dana", cam=True, avatar="d.png", meta={"seat": 3}),
        on_event=events.append,
    )
    assert bus.run_until_converged(1.0) is not None
    seen = rooms[0].roster.get(later.self_id)
    assert seen is not None and (seen.name, seen.cam, seen.avatar, dict(seen.meta)) == ("Dana", True, "d.png",
                                                                                        {"seat": 3})
    assert seen.features == ("presence.v1",)
    assert RoleChanged("participant") in events and any(isinstance(e, RosterChanged) for e in events)
    later.update_profile(name="Dana K", mic=True, meta={"seat": 4})
    clock.advance(0.1)
    for r in rooms:
        m = r.roster.get(later.self_id)
        assert m is not None and (m.name, m.mic, dict(m.meta)) == ("Dana K", True, {"seat": 4})
    coord = bus.rooms[coordinators(bus)[0]]
    coord.update_profile(cam=True)
    clock.advance(0.1)
    assert all(r.roster.get(coord.self_id).cam for r in rooms)  # type: ignore[union-attr]


def test_profile_limits_are_clear_errors() -> None:
    _, _bus, rooms = make(1)
    with pytest.raises(ValueError, match="limit"):
        rooms[0].update_profile(name="x" * 81)
    with pytest.raises(ValueError, match="limit"):
        rooms[0].update_profile(meta={"x": "y" * 5000})
    with pytest.raises(ValueError, match="unknown profile fields"):
        rooms[0].update_profile(colour="red")
    with pytest.raises(RuntimeError):
        rooms[0].start()


def test_clean_leave_is_seen_by_everyone_within_a_second() -> None:
    clock, bus, rooms = make(6)
    bus.run_until_converged(1.0)
    leaver = next(r for r in rooms if not r.is_coordinator)
    leaver.leave()
    assert leaver.role == "left"
    clock.advance(0.05)
    others = [r for r in rooms if r is not leaver]
    assert all(leaver.self_id not in r.roster.ids() for r in others)
    assert bus.converged()


def test_coordinator_clean_leave_hands_over_fast() -> None:
    clock, bus, rooms = make(6)
    bus.run_until_converged(1.0)
    old = bus.rooms[coordinators(bus)[0]]
    old.leave()
    clock.advance(0.05)
    assert all(old.self_id not in r.roster.ids() for r in rooms if r is not old)
    took = bus.run_until_converged(3.0)
    assert took is not None and took < 1.0
    assert bus.rooms[coordinators(bus)[0]] is not old


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13, 20])
def test_coordinator_crash_heals_within_three_seconds(n: int) -> None:
    clock, bus, _rooms = make(n, spawn_gap=0.3)
    assert bus.run_until_converged(5.0) is not None
    clock.advance(4.0)
    old = coordinators(bus)[0]
    bus.kill(old)
    took = bus.run_until_converged(3.0)
    assert took is not None, {k: (r.role, sorted(r.roster.ids())) for k, r in bus.live_rooms().items()}
    assert len(coordinators(bus)) == 1
    # And it stays healed: no flapping afterwards.
    claims = sum(r.stats["claims"] for r in bus.live_rooms().values())
    clock.advance(30.0)
    assert bus.converged()
    assert sum(r.stats["claims"] for r in bus.live_rooms().values()) == claims


def test_crashed_participant_is_dropped_at_once_via_the_brokers_leave() -> None:
    _clock, bus, _rooms = make(5, detect_delay=20.0)
    bus.run_until_converged(1.0)
    victim = next(n for n, r in bus.rooms.items() if not r.is_coordinator)
    bus.kill(victim)
    took = bus.run_until_converged(1.0)
    assert took is not None and took < 0.2


def test_silent_participant_is_reaped_after_twelve_seconds() -> None:
    """A half-open link: no close, no LEAVE, just silence. The 12 s reap is the fallback."""
    clock, bus, _rooms = make(3, expire_after=None)
    bus.run_until_converged(1.0)
    victim = next(n for n, r in bus.rooms.items() if not r.is_coordinator)
    victim_id = bus.rooms[victim].self_id
    bus.freeze(victim)
    coord = bus.rooms[coordinators(bus)[0]]
    clock.advance(11.0)
    assert victim_id in coord.roster.ids()
    clock.advance(4.0)
    assert victim_id not in coord.roster.ids()
    bus.thaw(victim)
    assert bus.run_until_converged(15.0) is not None
    assert victim_id in coord.roster.ids()


def test_flapping_presence_link_does_not_loop() -> None:
    clock, bus, rooms = make(4)
    bus.run_until_converged(1.0)
    flapper = next(r for r in rooms if not r.is_coordinator)
    flapper_name = next(n for n, r in bus.rooms.items() if r is flapper)
    coord = coordinators(bus)[0]
    for _ in range(20):
        bus.drop_links_between(flapper_name, coord)
        clock.advance(0.3)
    # 20 drops in 6 s: at most one claim + one dial per drop, and backoff spaces them out.
    assert flapper.stats["claims"] <= 21 and flapper.stats["dials"] <= 21
    assert bus.run_until_converged(20.0) is not None
    before = (flapper.stats["claims"], flapper.stats["dials"])
    clock.advance(60.0)
    assert (flapper.stats["claims"], flapper.stats["dials"]) == before
    assert all(r.drops.total == 0 for r in rooms)


def test_backoff_is_bounded_while_the_coordinator_is_unreachable() -> None:
    clock, bus, _rooms = make(3, ice_fail_delay=0.5)
    bus.run_until_converged(1.0)
    coord = coordinators(bus)[0]
    loner = next(n for n in bus.rooms if n != coord)
    bus.partition({loner})
    clock.advance(120.0)
    attempts = bus.rooms[loner].stats["claims"]
    assert 8 <= attempts <= 40  # keeps trying (cap 8 s), never a tight loop
    bus.heal()
    assert bus.run_until_converged(10.0) is not None


def test_frozen_coordinator_is_replaced_and_steps_down_on_thaw() -> None:
    clock, bus, _rooms = make(5, expire_after=10.0)
    bus.run_until_converged(1.0)
    old = coordinators(bus)[0]
    bus.freeze(old)
    clock.advance(13.0)
    survivors = [n for n in coordinators(bus) if n != old]
    assert len(survivors) == 1
    live_ids = {r.self_id for n, r in bus.rooms.items() if n != old}
    assert all(bus.rooms[n].roster.ids() == live_ids for n in bus.rooms if n != old)
    bus.thaw(old)
    assert bus.run_until_converged(10.0) is not None
    assert coordinators(bus) == survivors
    assert bus.rooms[old].role == "participant"


def test_frozen_coordinator_without_broker_expiry_keeps_the_room_after_thaw() -> None:
    clock, bus, _rooms = make(4, expire_after=None)
    bus.run_until_converged(1.0)
    old = coordinators(bus)[0]
    bus.freeze(old)
    clock.advance(15.0)
    bus.thaw(old)
    assert bus.run_until_converged(15.0) is not None
    assert coordinators(bus) == [old]


def test_partition_and_heal() -> None:
    clock, bus, _rooms = make(6, detect_delay=1.0)
    bus.run_until_converged(1.0)
    coord = coordinators(bus)[0]
    names = list(bus.rooms)
    near = {coord, *[n for n in names if n != coord][:2]}
    far = set(names) - near
    bus.partition(near, far)
    clock.advance(3.0)
    near_ids = {bus.rooms[n].self_id for n in near}
    assert bus.rooms[coord].roster.ids() == near_ids
    assert coordinators(bus) == [coord]
    bus.heal()
    assert bus.run_until_converged(15.0) is not None
    assert coordinators(bus) == [coord]


def test_new_coordinator_inherits_lobby_and_lock_and_grandfathers_members() -> None:
    clock, bus, rooms, host = make_hosted(4)
    assert host.moderate("lobbyon") and host.moderate("lock")
    clock.advance(0.1)
    assert all(r.roster.locked and r.roster.lobby for r in rooms)
    old = coordinators(bus)[0]
    assert bus.rooms[old] is not host
    bus.kill(old)
    assert bus.run_until_converged(3.0) is not None
    new = bus.rooms[coordinators(bus)[0]]
    assert new.roster.lobby and new.roster.locked
    # Grandfathered members got back in through the lock; a stranger is turned away.
    events: list[RoomEvent] = []
    stranger = bus.spawn_member("stranger", HOSTED_ROOM, on_event=events.append, gate=HOSTED_GATE)
    clock.advance(1.0)
    assert stranger.lobby_status == "locked" and LobbyStatus("locked") in events
    assert stranger.self_id not in new.roster.ids()


def test_lobby_knock_admit_and_deny() -> None:
    clock, bus, _rooms, host = make_hosted(2)
    coord = bus.rooms[coordinators(bus)[0]]
    assert coord is not host
    host_events: list[RoomEvent] = []
    host._on_event = host_events.append  # listen from here on
    assert host.moderate("lobbyon")
    clock.advance(0.1)
    alice = bus.spawn_member("alice", HOSTED_ROOM, gate=HOSTED_GATE)
    bob = bus.spawn_member("bob", HOSTED_ROOM, gate=HOSTED_GATE)
    clock.advance(1.0)
    assert alice.lobby_status == bob.lobby_status == "waiting"
    # The coordinator holds the queue; the host, in another seat, sees it forwarded.
    assert {k.id for k in coord.knocks} == {alice.self_id, bob.self_id}
    assert {k.id for k in host.knocks} == {alice.self_id, bob.self_id}
    assert any(isinstance(e, KnocksChanged) for e in host_events)
    assert alice.self_id not in coord.roster.ids()
    clock.advance(20.0)  # waiting members are kept alive, not reaped, and do not spam
    assert {k.id for k in coord.knocks} == {alice.self_id, bob.self_id}
    assert host.moderate("admit", alice.self_id) and host.moderate("deny", bob.self_id)
    clock.advance(0.1)
    assert alice.lobby_status == "admitted" and alice.self_id in coord.roster.ids()
    assert alice.roster.ids() == coord.roster.ids()
    assert bob.lobby_status == "denied" and bob.self_id not in coord.roster.ids()
    assert host.knocks == ()
    # Neither a guest nor the coordinator can moderate.
    assert not alice.moderate("lobbyoff") and not coord.moderate("lobbyoff")
    clock.advance(0.1)
    assert coord.roster.lobby


def test_remove_and_token_dedupe() -> None:
    clock, bus, _rooms, host = make_hosted(2)
    coord = bus.rooms[coordinators(bus)[0]]
    events: list[RoomEvent] = []
    profile = MemberProfile(name="T", token="tok-1")
    tab = bus.spawn_member("tab1", HOSTED_ROOM, profile=profile, on_event=events.append, gate=HOSTED_GATE)
    clock.advance(0.5)
    # The same tab reconnects under a new process/id (a reload): the old entry is replaced, not doubled.
    bus.kill("tab1")
    same = MemberProfile(name="T", token="tok-1")
    tab2 = bus.spawn_member("tab2", HOSTED_ROOM, profile=same, gate=HOSTED_GATE)
    clock.advance(0.5)
    assert tab.self_id not in coord.roster.ids() and tab2.self_id in coord.roster.ids()
    tab2_events: list[RoomEvent] = []
    tab2._on_event = tab2_events.append
    assert host.remove(tab2.self_id)
    clock.advance(0.5)
    assert Kicked() in tab2_events and tab2.role == "left"
    assert tab2.self_id not in coord.roster.ids()
    assert not host.remove(host.self_id), "the host does not remove itself"
    # A reload of the removed tab (new id, same token) stays out.
    again = bus.spawn_member("tab3", HOSTED_ROOM, profile=same, gate=HOSTED_GATE)
    clock.advance(0.5)
    assert again.role == "left" and again.self_id not in coord.roster.ids()


def test_voice_off_leaves_the_roster_but_stays_connected() -> None:
    clock, bus, rooms = make(3)
    bus.run_until_converged(1.0)
    p = next(r for r in rooms if not r.is_coordinator)
    p.update_profile(on=False)
    clock.advance(0.1)
    assert all(p.self_id not in r.roster.ids() for r in rooms)
    assert p.connected
    clock.advance(10.0)
    assert all(p.self_id not in r.roster.ids() for r in rooms)  # no re-announce loop while off
    p.update_profile(on=True)
    clock.advance(0.1)
    assert all(p.self_id in r.roster.ids() for r in rooms)


def test_handle_routes_only_the_rooms_own_events() -> None:
    _clock, bus, rooms = make(2)
    bus.run_until_converged(1.0)
    coord = bus.rooms[coordinators(bus)[0]]
    part = next(r for r in rooms if not r.is_coordinator)
    assert not coord.handle(ClaimResult("kbz-m-other", "claimed"))
    assert not coord.handle(IncomingLink("Lx", coord.self_id, "kbz-m-x", "kbz-data"))
    assert not coord.handle(IncomingLink("Ly", ROOM_ID, "kbz-m-x", "kbz-data"))
    assert not coord.handle(LinkOpened("unknown-link"))
    assert not coord.handle(PeerLeft("kbz-m-stranger"))
    assert not part.handle(PeerLeft(coord.self_id))  # acted on, but the mesh must hear it too
    assert part.handle(LinkMessage(part.presence_link, '{"t":"ping"}'))  # type: ignore[arg-type]
    assert coord.handle(IncomingLink("Lz", ROOM_ID, "kbz-m-x", PRESENCE_LABEL))
    assert coord.handle(ClaimResult(ROOM_ID, "claimed"))  # a late duplicate: ours, ignored
    assert coord.is_coordinator


def test_late_claim_result_never_starts_a_second_role() -> None:
    clock, bus, rooms = make(2)
    bus.run_until_converged(1.0)
    part = next(r for r in rooms if not r.is_coordinator)
    assert part.handle(ClaimResult(ROOM_ID, "claimed"))
    assert part.role == "participant"
    assert part.handle(ClaimResult(ROOM_ID, "taken"))
    assert part.role == "participant"
    # Events on a link the participant already retired are swallowed, not acted on.
    old_link = part.presence_link
    assert old_link is not None
    bus.drop_link(old_link)
    clock.advance(1.0)
    assert part.handle(LinkClosed(old_link, "late"))
    assert bus.run_until_converged(5.0) is not None
    assert len(coordinators(bus)) == 1


def test_claim_error_retries() -> None:
    clock, _bus, rooms = make(1)
    room = rooms[0]
    clock.advance(0.1)
    assert room.is_coordinator
    fresh_bus = Bus(FakeClock())
    t = fresh_bus.transport("solo")
    r = Room(ROOM, self_id="kbz-m-solo", transport=t, scheduler=fresh_bus.scheduler("solo"),
             rng=random.Random(1), profile=MemberProfile())
    t.bind(r.handle)
    t.claim("kbz-m-solo")
    r.start()
    assert r.role == "claiming"
    r.handle(ClaimResult(ROOM_ID, "error", "broker down"))
    assert r.role == "reclaiming"
    fresh_bus.clock.advance(3.5)
    assert r.is_coordinator and r.roster.ids() == {"kbz-m-solo"}


def test_event_listener_errors_do_not_break_the_room() -> None:
    def boom(event: RoomEvent) -> None:
        raise RuntimeError("listener bug")

    clock = FakeClock()
    bus = Bus(clock)
    a = bus.spawn_member("a", ROOM, on_event=boom)
    b = bus.spawn_member("b", ROOM, on_event=boom)
    assert bus.run_until_converged(1.0) is not None
    assert a.drops.total == b.drops.total == 0


def test_two_simultaneous_crashes_heal_after_the_grandfather_grace() -> None:
    """The coordinator and a participant die together: the dead participant was grandfathered by the
    new coordinator and never re-announces, so it is dropped after the grace, not after 12 s."""
    _clock, bus, _ = make(6)
    bus.run_until_converged(1.0)
    old = coordinators(bus)[0]
    other = next(n for n in bus.rooms if n != old)
    bus.kill(old)
    bus.kill(other)
    took = bus.run_until_converged(10.0)
    assert took is not None and 5.0 < took < 9.0


def test_a_roster_without_us_triggers_a_reannounce() -> None:
    clock, bus, rooms = make(3)
    bus.run_until_converged(1.0)
    coord = bus.rooms[coordinators(bus)[0]]
    part = next(r for r in rooms if not r.is_coordinator)
    # The coordinator loses our entry while our link stays up (e.g. a confused new coordinator).
    assert coord._coordinator is not None
    del coord._coordinator._entries[part.self_id]
    coord._coordinator.broadcast()
    assert part.self_id not in coord.roster.ids()
    clock.advance(0.3)  # at most one re-announce per 0.25 s
    assert part.self_id in coord.roster.ids()
    assert bus.converged()


def test_coordinator_freeze_gap_does_not_reap_everyone() -> None:
    clock, bus, rooms = make(4, expire_after=None)
    bus.run_until_converged(1.0)
    clock.advance(4.85)  # members' last pings are now ~2.4 s old
    name = coordinators(bus)[0]
    coord = bus.rooms[name]
    coord.update_profile(name="fresh")  # participants just heard from the coordinator
    lost: list[str] = []

    def watch(event: RoomEvent) -> None:
        if isinstance(event, RosterChanged):
            lost.extend(r.self_id for r in rooms if r.self_id not in event.roster.ids())

    coord._on_event = watch
    bus.freeze(name)
    clock.advance(10.5)
    bus.thaw(name)
    clock.advance(5.0)
    assert lost == []
    assert bus.converged() and coordinators(bus) == [name]
    assert all(r.stats["claims"] == 1 for r in rooms)  # nobody gave up on the coordinator


def test_an_idle_room_pings_and_sends_a_full_roster_only_every_few_beats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kibitz.testing import BusTransport

    clock = FakeClock()
    bus = Bus(clock)
    sent: list[tuple[str, str]] = []
    original = BusTransport.send

    def recording(self: BusTransport, link: str, data: str | bytes) -> None:
        if isinstance(data, str) and '"t":"roster"' in data:
            sent.append((self.name, "roster"))
        elif isinstance(data, str) and data == '{"t":"ping"}':
            sent.append((self.name, "ping"))
        original(self, link, data)

    monkeypatch.setattr(BusTransport, "send", recording)
    rooms = [bus.spawn_member(n, ROOM, profile=MemberProfile(name=n)) for n in ("a", "b", "c", "d")]
    assert bus.run_until_converged(10.0) is not None
    clock.advance(5.0)
    coordinator = next(r for r in rooms if r.is_coordinator)
    name = {r.self_id: n for r, n in zip(rooms, "abcd", strict=True)}[coordinator.self_id]
    sent.clear()
    clock.advance(10.0)  # four heartbeats, nothing changes
    rosters = sum(1 for who, kind in sent if who == name and kind == "roster")
    pings = sum(1 for who, kind in sent if who == name and kind == "ping")
    assert rosters == 3, sent  # one full roster to each of the 3 participants in 10 s
    assert pings == 9, sent  # the other three beats are pings
    # A change goes out at once as a full roster, whatever the beat.
    sent.clear()
    rooms[[r.self_id for r in rooms].index(coordinator.self_id) - 1].update_profile(name="renamed")
    clock.advance(0.5)
    assert any(kind == "roster" for who, kind in sent if who == name)
    assert bus.converged()
