"""Hostile input: every presence frame and transport event fuzzed; nothing escapes, drops are counted."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kibitz.clock import FakeClock
from kibitz.protocol.presence import CLIENT_FAMILY, COORDINATOR_FAMILY
from kibitz.room import Room
from kibitz.testing import Bus
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

ROOM = "fuzz-room"
ROOM_ID = "kbz-v1-fuzz-room"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=6,
)
member_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=70) | json_values,
        "name": st.text(max_size=90) | json_values,
        "cam": st.booleans() | json_values,
        "mic": st.booleans() | json_values,
        "avatar": st.text(max_size=20) | json_values,
        "meta": st.dictionaries(st.text(max_size=5), json_values, max_size=3) | json_values,
        "f": st.lists(st.text(max_size=40), max_size=70) | json_values,
    },
)
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "on": st.booleans() | json_values,
    "cam": st.booleans() | json_values,
    "mic": st.booleans() | json_values,
    "name": st.text(max_size=100) | json_values,
    "avatar": st.text(max_size=30) | json_values,
    "voiceId": st.text(max_size=70) | json_values,
    "token": st.text(max_size=30) | json_values,
    "meta": st.dictionaries(st.text(max_size=8), json_values, max_size=4) | json_values,
    "v": st.integers() | json_values,
    "f": st.lists(st.text(max_size=40), max_size=8) | json_values,
    "members": st.lists(member_like, max_size=12) | json_values,
    "lobby": st.booleans() | json_values,
    "locked": st.booleans() | json_values,
    "host": st.text(max_size=70) | json_values,
    "c": st.text(max_size=70) | json_values,
    "status": st.sampled_from(["waiting", "admitted", "denied", "locked", "unverified", "??"]) | json_values,
}


@st.composite
def frames(draw: st.DrawFn) -> str | bytes:
    """Mostly message-shaped objects with random field values; sometimes plain garbage."""
    mode = draw(st.sampled_from(["message"] * 6 + ["truncated", "bytes", "text", "json"]))
    if mode == "bytes":
        return draw(st.binary(max_size=100))
    if mode == "text":
        return draw(st.text(max_size=100))
    if mode == "json":
        return json.dumps(draw(json_values))
    kind = draw(st.sampled_from([*CLIENT_FAMILY, *COORDINATOR_FAMILY, "", "zzz"]))
    body = draw(st.fixed_dictionaries({}, optional=FIELD_VALUES))
    structured = json.dumps({**body, "t": kind}, allow_nan=True)
    return structured if mode == "message" else structured[: len(structured) // 2]


def converged_pair() -> tuple[FakeClock, Bus, Room, Room]:
    clock = FakeClock()
    bus = Bus(clock)
    a = bus.spawn_member("a", ROOM)
    b = bus.spawn_member("b", ROOM)
    assert bus.run_until_converged(1.0) is not None
    coord, part = (a, b) if a.is_coordinator else (b, a)
    return clock, bus, coord, part


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(frames(), min_size=1, max_size=6))
def test_fuzzed_frames_to_the_coordinator_never_escape(payloads: list[str | bytes]) -> None:
    clock, bus, coord, _part = converged_pair()
    assert coord._coordinator is not None
    link = next(iter(coord._coordinator.links))
    for data in payloads:
        assert coord.handle(LinkMessage(link, data)) is True
    clock.advance(0.5)
    assert coord.drops.by_reason["internal-error"] == 0
    assert coord.is_coordinator
    # Still a working room: the honest participant heals it whatever the fuzzer announced.
    clock.advance(5.0)
    assert bus.run_until_converged(30.0) is not None


@FUZZ
@given(st.lists(frames(), min_size=1, max_size=8))
def test_fuzzed_frames_to_a_participant_never_escape(payloads: list[str | bytes]) -> None:
    clock, _, _, part = converged_pair()
    link = part.presence_link
    assert link is not None
    before = part.drops.total
    accepted_before = part.stats["received"]
    for data in payloads:
        assert part.handle(LinkMessage(link, data)) is True
        if part.role != "participant":
            break  # a fuzzed kick ends the session; that is the protocol, not a bug
    assert part.drops.by_reason["internal-error"] == 0
    handled = part.drops.total - before + part.stats["received"] - accepted_before
    assert handled >= 1  # every frame was either accepted or counted as a drop
    clock.advance(1.0)
    assert part.drops.by_reason["internal-error"] == 0


def test_each_bad_frame_is_counted_with_its_reason() -> None:
    _, _, coord, _ = converged_pair()
    assert coord._coordinator is not None
    link = next(iter(coord._coordinator.links))
    bad = [b"\x00\xff", "{", "[]", '{"x":1}', '{"t":"warp"}', '{"t":"voice","on":"yes"}', "x" * 300_000]
    for data in bad:
        coord.handle(LinkMessage(link, data))
    assert dict(coord.drops.by_reason) == {
        "not-json": 2,
        "not-object": 1,
        "no-kind": 1,
        "unknown-kind": 1,
        "invalid:voice": 1,
        "oversize": 1,
    }


ids = st.sampled_from([ROOM_ID, "kbz-m-a", "kbz-m-b", "kbz-m-zz", "", "x" * 100])
links = st.sampled_from(["L1a", "L1b", "L2a", "L2b", "L3a", "nope", ""])
events: st.SearchStrategy[TransportEvent] = st.one_of(
    st.builds(ClaimResult, ids, st.sampled_from(["claimed", "taken", "error"]), st.text(max_size=5)),
    st.builds(IncomingLink, links, ids, ids, st.sampled_from(["kbz-presence", "kbz-data", ""])),
    st.builds(LinkOpened, links),
    st.builds(LinkMessage, links, frames()),
    st.builds(LinkClosed, links, st.text(max_size=5)),
    st.builds(PeerLeft, ids),
    st.builds(IdentityLost, ids, st.text(max_size=5)),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(events, st.sampled_from(["a", "b"]), st.floats(0, 3)), max_size=25))
def test_arbitrary_transport_events_never_escape_and_the_room_recovers(
    script: list[tuple[TransportEvent, str, float]],
) -> None:
    clock, bus, _, _ = converged_pair()
    for event, who, pause in script:
        room = bus.rooms[who]
        if room.role == "left":
            continue
        room.handle(event)
        clock.advance(pause)
    for room in bus.rooms.values():
        assert room.drops.by_reason["internal-error"] == 0
    live = [r for r in bus.rooms.values() if r.role != "left"]
    if len(live) == 2:
        assert bus.run_until_converged(40.0) is not None, {
            n: (r.role, sorted(r.roster.ids())) for n, r in bus.rooms.items()
        }
