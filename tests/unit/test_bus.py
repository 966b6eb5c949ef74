"""The in-memory bus behaves like the broker + data links the engine is written against."""

from __future__ import annotations

import pytest

from kibitz.clock import FakeClock
from kibitz.testing import Bus, BusTransport
from kibitz.transport import (
    ClaimResult,
    IdentityLost,
    IncomingLink,
    LinkClosed,
    LinkMessage,
    LinkOpened,
    PeerLeft,
    TransportEvent,
)


def proc(bus: Bus, name: str) -> tuple[BusTransport, list[TransportEvent]]:
    t = bus.transport(name)
    events: list[TransportEvent] = []
    t.bind(events.append)
    return t, events


def linked(bus: Bus, clock: FakeClock) -> tuple[BusTransport, list[TransportEvent], str, BusTransport,
                                                 list[TransportEvent], str]:
    a, ea = proc(bus, "a")
    b, eb = proc(bus, "b")
    a.claim("ida")
    b.claim("idb")
    link_a = a.dial("ida", "idb", "x")
    clock.advance(0.1)
    incoming = next(e for e in eb if isinstance(e, IncomingLink))
    assert LinkOpened(link_a) in ea and LinkOpened(incoming.link) in eb
    return a, ea, link_a, b, eb, incoming.link


def test_first_claim_wins_others_are_told_taken() -> None:
    clock = FakeClock()
    bus = Bus(clock)
    a, ea = proc(bus, "a")
    b, eb = proc(bus, "b")
    a.claim("room")
    b.claim("room")
    a.claim("room")  # re-claiming one's own id is fine
    b.claim("not valid!")
    clock.advance(0.1)
    assert ea == [ClaimResult("room", "claimed"), ClaimResult("room", "claimed")]
    assert eb == [ClaimResult("room", "taken"), ClaimResult("not valid!", "error", "invalid id")]
    assert bus.holder("room") == "a"


def test_dial_nobody_is_peer_unavailable() -> None:
    clock = FakeClock()
    bus = Bus(clock)
    a, ea = proc(bus, "a")
    a.claim("ida")
    link = a.dial("ida", "ghost", "x")
    clock.advance(0.1)
    assert ea[-1] == LinkClosed(link, "peer-unavailable")


def test_dial_from_an_id_we_do_not_hold_fails() -> None:
    clock = FakeClock()
    bus = Bus(clock)
    a, ea = proc(bus, "a")
    b, _ = proc(bus, "b")
    b.claim("idb")
    link = a.dial("not-mine", "idb", "x")
    clock.advance(0.1)
    assert ea == [LinkClosed(link, "not-registered")]


def test_link_opens_delivers_in_order_and_close_tells_only_the_other_side() -> None:
    clock = FakeClock()
    bus = Bus(clock)
    a, ea, la, b, eb, lb = linked(bus, clock)
    incoming = next(e for e in eb if isinstance(e, IncomingLink))
    assert (incoming.local_id, incoming.remote_id, incoming.label) == ("idb", "ida", "x")
    for i in range(5):
        a.send(la, f"m{i}")
    a.close(la)
    a.send(la, "after-close")  # silently dropped
    clock.advance(0.1)
    assert [e.data for e in eb if isinstance(e, LinkMessage)] == [f"m{i}" for i in range(5)]
    assert eb[-1] == LinkClosed(lb, "closed")
    assert not any(isinstance(e, LinkClosed) for e in ea)
    b.send(lb, "late")
    clock.advance(0.1)
    assert not any(isinstance(e, LinkMessage) for e in ea)


def test_kill_frees_ids_and_sends_leave_before_close() -> None:
    clock = FakeClock()
    bus = Bus(clock, leave_delay=0.05, detect_delay=2.0)
    _a, ea, la, _b, _eb, _lb = linked(bus, clock)
    bus.kill("b")
    clock.advance(0.06)
    assert ea[-1] == PeerLeft("idb")
    assert bus.holder("idb") is None
    clock.advance(2.0)
    assert ea[-1] == LinkClosed(la, "peer-died")
    c, ec = proc(bus, "c")
    c.claim("idb")
    clock.advance(0.1)
    assert ec == [ClaimResult("idb", "claimed")]


def test_drop_link_closes_both_ends() -> None:
    clock = FakeClock()
    bus = Bus(clock)
    a, ea, la, _b, eb, lb = linked(bus, clock)
    a.send(la, "lost?")
    bus.drop_link(lb)
    clock.advance(0.1)
    assert ea[-1] == LinkClosed(la, "dropped") and eb[-1] == LinkClosed(lb, "dropped")
    assert not any(isinstance(e, LinkMessage) for e in eb)
    with pytest.raises(KeyError):
        bus.drop_link(la)


def test_freeze_holds_events_and_timers_until_thaw() -> None:
    clock = FakeClock()
    bus = Bus(clock, expire_after=None)
    a, _ea, la, _b, eb, lb = linked(bus, clock)
    fired: list[float] = []
    bus.scheduler("b").call_later(1.0, lambda: fired.append(clock.now()))
    bus.freeze("b")
    a.send(la, "hello")
    clock.advance(5.0)
    assert fired == [] and not any(isinstance(e, LinkMessage) for e in eb)
    bus.thaw("b")
    clock.advance(0.0)
    assert fired == [clock.now()] and eb[-1] == LinkMessage(lb, "hello")


def test_frozen_holder_cannot_answer_a_dial() -> None:
    clock = FakeClock()
    bus = Bus(clock, expire_after=None)
    a, ea = proc(bus, "a")
    b, _eb = proc(bus, "b")
    a.claim("ida")
    b.claim("idb")
    clock.advance(0.1)
    bus.freeze("b")
    link = a.dial("ida", "idb", "x")
    clock.advance(3.0)
    assert LinkOpened(link) not in ea
    bus.thaw("b")
    clock.advance(0.1)
    assert LinkOpened(link) in ea


def test_broker_expires_a_long_frozen_process() -> None:
    clock = FakeClock()
    bus = Bus(clock, expire_after=10.0)
    _a, ea, la, _b, eb, lb = linked(bus, clock)
    bus.freeze("b")
    clock.advance(10.1)
    assert PeerLeft("idb") in ea and LinkClosed(la, "peer-expired") in ea
    assert bus.holder("idb") is None
    bus.thaw("b")
    clock.advance(0.1)
    assert IdentityLost("idb", "expired") in eb and LinkClosed(lb, "peer-expired") in eb


def test_partition_cuts_links_and_dials_across_until_heal() -> None:
    clock = FakeClock()
    bus = Bus(clock, detect_delay=1.0, ice_fail_delay=0.5)
    a, ea, la, _b, eb, lb = linked(bus, clock)
    bus.partition({"a"}, {"b"})
    clock.advance(1.1)
    assert ea[-1] == LinkClosed(la, "partitioned") and eb[-1] == LinkClosed(lb, "partitioned")
    again = a.dial("ida", "idb", "x")
    clock.advance(0.6)
    assert ea[-1] == LinkClosed(again, "ice-failed")
    bus.heal()
    healed = a.dial("ida", "idb", "x")
    clock.advance(0.1)
    assert LinkOpened(healed) in ea


def test_spawned_members_converge_and_process_names_are_unique() -> None:
    clock = FakeClock()
    bus = Bus(clock)
    for name in ("x", "y", "z"):
        bus.spawn_member(name, "r")
    assert bus.run_until_converged(2.0) is not None
    with pytest.raises(ValueError):
        bus.transport("x")
