"""The data mesh on the in-memory bus: dialling, routing, recovery, chunking, limits."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mesh_helpers import make_net, mid, spawn

from kibitz import mesh as mesh_mod
from kibitz.clock import FakeClock
from kibitz.mesh import CHUNK_SIZE, HIGH_WATER, MAX_BUFFER_BYTES, SendBufferFull, dial_plan, dials
from kibitz.testing import Bus
from kibitz.transport import LinkMessage

IDS = st.from_regex(r"kbz-m-[a-z0-9]{1,6}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(st.sets(IDS, min_size=2, max_size=12))
def test_dial_plan_is_glare_free(ids: set[str]) -> None:
    pairs = [frozenset((a, b)) for a in ids for b in dial_plan(a, ids)]
    assert len(pairs) == len(set(pairs)), "some pair is dialled twice"
    assert set(pairs) == {frozenset(p) for p in itertools.combinations(ids, 2)}
    for a, b in itertools.combinations(ids, 2):
        assert dials(a, b) != dials(b, a)


def test_three_members_one_link_per_pair_and_all_up() -> None:
    clock, bus, nodes = make_net("abc")
    clock.advance(1)
    assert bus.stats["dials"] == 3
    for n in nodes.values():
        others = [o.id for o in nodes.values() if o is not n]
        assert all(n.mesh.link_up(o) for o in others)
        assert sorted(p for p, up in n.links if up) == sorted(others)


def test_broadcast_reaches_all_others_never_self() -> None:
    clock, _, nodes = make_net("abc")
    clock.advance(1)
    a = nodes["a"]
    assert a.mesh.broadcast({"kind": "route", "route": "#x"}) == [mid("b"), mid("c")]
    clock.advance(1)
    assert nodes["b"].got == [(a.id, {"kind": "route", "route": "#x"})]
    assert nodes["c"].got == [(a.id, {"kind": "route", "route": "#x"})]
    assert a.got == []


def test_broadcast_only_filter() -> None:
    clock, _, nodes = make_net("abc")
    assert nodes["a"].mesh.broadcast(1, only=lambda p: p == mid("c")) == [mid("c")]
    clock.advance(1)
    assert nodes["b"].got == [] and nodes["c"].got == [(mid("a"), 1)]


def test_send_reaches_only_addressee() -> None:
    clock, _, nodes = make_net("abc")
    clock.advance(1)
    nodes["c"].mesh.send(mid("a"), {"secret": "hand"})
    clock.advance(1)
    assert nodes["a"].got == [(mid("c"), {"secret": "hand"})]
    assert nodes["b"].got == [] and nodes["c"].got == []


def test_buffer_before_open_delivers_in_order() -> None:
    clock, _, nodes = make_net("ab")
    # Nothing has run since set_members: no link is open yet.
    assert not nodes["b"].mesh.link_up(mid("a"))
    for i in range(5):
        nodes["b"].mesh.send(mid("a"), i)
    clock.advance(1)
    assert nodes["a"].from_(mid("b")) == [0, 1, 2, 3, 4]


def test_send_errors_are_clear() -> None:
    _, _, nodes = make_net("ab")
    m = nodes["a"].mesh
    with pytest.raises(ValueError, match="ourselves"):
        m.send(mid("a"), 1)
    with pytest.raises(KeyError, match="not in the room"):
        m.send("kbz-m-nobody", 1)
    with pytest.raises(ValueError, match="plain JSON"):
        m.send(mid("b"), {"x": object()})
    with pytest.raises(ValueError, match="plain JSON"):
        m.send(mid("b"), float("nan"))


def test_resend_buffer_bound_refuses_new_sends_and_keeps_old() -> None:
    clock, bus, nodes = make_net("ab")
    clock.advance(1)
    bus.partition(["a"], ["b"])
    clock.advance(5)
    a = nodes["a"].mesh
    blob = "x" * (4 * 1024 * 1024)
    sent = 0
    with pytest.raises(SendBufferFull, match="full"):
        while True:
            a.send(mid("b"), [sent, blob])
            sent += 1
    assert a.buffered(mid("b")) <= MAX_BUFFER_BYTES
    assert a.broadcast(["skipped", blob]) == []
    assert a.drops.by_reason["buffer-full"] == 1
    bus.heal()
    clock.advance(30)
    assert [m[0] for m in nodes["b"].from_(mid("a"))] == list(range(sent))
    a.send(mid("b"), "after")
    clock.advance(1)
    assert nodes["b"].from_(mid("a"))[-1] == "after"


def test_dropped_link_is_redialled_and_nothing_is_lost() -> None:
    clock, bus, nodes = make_net("ab")
    clock.advance(1)
    a, b = nodes["a"], nodes["b"]
    for i in range(10):
        a.mesh.send(b.id, i)
        b.mesh.send(a.id, -i)
    assert bus.drop_links_between("a", "b") == 1  # frames in flight are lost
    for i in range(10, 20):
        a.mesh.send(b.id, i)
    clock.advance(0.01)
    assert not a.mesh.link_up(b.id)
    clock.advance(5)
    assert a.mesh.link_up(b.id) and b.mesh.link_up(a.id)
    assert b.from_(a.id) == list(range(20))
    assert a.from_(b.id) == [-i for i in range(10)]
    assert bus.stats["dials"] == 2
    assert a.mesh.pending(b.id) == 0 and b.mesh.pending(a.id) == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(["send-ab", "send-ba", "drop", "tick"]), st.integers(0, 40)),
        min_size=1,
        max_size=60,
    )
)
def test_random_drop_schedules_deliver_exactly_once_in_order(ops: list[tuple[str, int]]) -> None:
    clock, bus, nodes = make_net("ab")
    a, b = nodes["a"], nodes["b"]
    sent_ab: list[int] = []
    sent_ba: list[int] = []
    for n, (op, arg) in enumerate(ops):
        if op == "send-ab":
            sent_ab.append(n)
            a.mesh.send(b.id, n)
        elif op == "send-ba":
            sent_ba.append(n)
            b.mesh.send(a.id, {"n": n, "pad": "y" * arg * 5000})
        elif op == "drop":
            bus.drop_links_between("a", "b")
        clock.advance(arg / 100)
    clock.advance(60)
    assert b.from_(a.id) == sent_ab
    assert [m["n"] for m in a.from_(b.id)] == sent_ba
    assert a.mesh.link_up(b.id) and b.mesh.link_up(a.id)
    assert a.mesh.pending(b.id) == 0 and b.mesh.pending(a.id) == 0


def test_partition_then_heal_delivers_after_recovery() -> None:
    clock, bus, nodes = make_net("abc")
    clock.advance(1)
    bus.partition(["a"], ["b", "c"])
    clock.advance(4)
    assert not nodes["a"].mesh.link_up(mid("b"))
    assert nodes["a"].mesh.broadcast("during") == [mid("b"), mid("c")]
    clock.advance(20)
    assert nodes["b"].got == []
    bus.heal()
    clock.advance(20)
    assert nodes["b"].got == [(mid("a"), "during")]
    assert nodes["c"].got == [(mid("a"), "during")]


def test_ten_megabytes_arrive_intact_with_backpressure() -> None:
    clock, _, nodes = make_net("ab", throttle=20e6)
    clock.advance(1)
    payload = {"blob": "".join(chr(0x61 + (i * 7919) % 26) for i in range(10 * 1024 * 1024)), "tail": "✓"}
    a, b = nodes["a"], nodes["b"]
    a.mesh.broadcast(payload)
    clock.advance(0.1)
    peak = a.transport.peak
    assert 0 < peak <= HIGH_WATER + CHUNK_SIZE + 64, "writer must stop near the high-water mark"
    clock.advance(5)
    assert len(b.got) == 1
    assert b.got[0][1] == payload
    assert a.mesh.pending(b.id) == 0
    assert a.transport.peak == peak or a.transport.peak <= HIGH_WATER + CHUNK_SIZE + 64


def test_large_message_survives_a_drop_mid_transfer() -> None:
    clock, bus, nodes = make_net("ab", throttle=10e6)
    clock.advance(1)
    a, b = nodes["a"], nodes["b"]
    big = "z" * (3 * 1024 * 1024)
    a.mesh.send(b.id, big)
    a.mesh.send(b.id, "after")
    clock.advance(0.1)  # part of it is through
    bus.drop_links_between("a", "b")
    clock.advance(10)
    assert b.from_(a.id) == [big, "after"]


def test_departed_member_is_parked_then_dropped_and_never_dialled() -> None:
    clock, bus, nodes = make_net("abc")
    clock.advance(1)
    a, c = nodes["a"], nodes["c"]
    a.mesh.set_members([mid("a"), mid("b")])
    c.mesh.set_members([mid("b"), mid("c")])
    assert a.mesh.members == [mid("b")] and a.mesh.parked == [mid("c")]
    # Parked, not gone: the link stays up and messages still flow both ways.
    a.mesh.send(mid("c"), "still here?")
    c.mesh.send(mid("a"), "yes")
    clock.advance(1)
    assert c.from_(mid("a")) == ["still here?"] and a.from_(mid("c")) == ["yes"]
    dials_before = bus.stats["dials"]
    bus.drop_links_between("a", "c")
    a.mesh.send(mid("c"), "queued")
    clock.advance(mesh_mod.PARK_SECONDS - 2)
    assert bus.stats["dials"] == dials_before, "nobody dials a parked member"
    assert a.mesh.pending(mid("c")) == 1
    clock.advance(3)
    assert a.mesh.parked == [] and not a.mesh.has(mid("c"))
    with pytest.raises(KeyError):
        a.mesh.send(mid("c"), 1)
    assert a.mesh.drops.by_reason["undelivered-departed"] == 1
    assert (mid("c"), False) in a.links
    clock.advance(30)
    assert bus.stats["dials"] == dials_before, "nobody re-dials a departed member"


def test_member_back_within_the_park_window_gets_everything_once_in_order() -> None:
    """A roster blip on both sides (a broker restart, a coordinator handover) while the link also
    drops: everything sent meanwhile, both ways, arrives once and in order after the return."""
    clock, bus, nodes = make_net("ab")
    clock.advance(1)
    a, b = nodes["a"], nodes["b"]
    a.mesh.send(b.id, 0)
    clock.advance(1)
    a.mesh.set_members([a.id])
    b.mesh.set_members([b.id])
    bus.drop_links_between("a", "b")
    for i in range(1, 40):
        assert a.mesh.broadcast(i) == [b.id]
        b.mesh.send(a.id, -i)
        clock.advance(0.5)
    assert not a.mesh.link_up(b.id)
    a.mesh.set_members([a.id, b.id])
    b.mesh.set_members([a.id, b.id])
    clock.advance(5)
    assert b.from_(a.id) == list(range(40))
    assert a.from_(b.id) == [-i for i in range(1, 40)]
    assert a.mesh.stats["unparked"] == 1 and b.mesh.stats["duplicates"] == 0


def test_a_member_that_says_bye_is_dropped_not_parked() -> None:
    clock, _, nodes = make_net("abc")
    clock.advance(1)
    a, c = nodes["a"], nodes["c"]
    c.mesh.depart()
    clock.advance(0.1)
    a.mesh.set_members([mid("a"), mid("b")])
    assert a.mesh.parked == [] and not a.mesh.has(mid("c"))
    # and the other order: parked first, then the goodbye
    b = nodes["b"]
    b.mesh.set_members([mid("b")])
    assert b.mesh.parked == [mid("a")]
    a.mesh.depart()
    clock.advance(0.1)
    assert b.mesh.parked == [] and not b.mesh.has(mid("a"))


def test_link_from_non_member_is_held_then_adopted() -> None:
    clock = FakeClock()
    bus = Bus(clock)
    a, b = spawn(bus, "a"), spawn(bus, "b")
    clock.advance(0.05)
    a.mesh.set_members([a.id, b.id])  # a dials b; b's roster has not caught up yet
    a.mesh.send(b.id, "early")
    clock.advance(1)
    assert b.got == [] and not a.mesh.link_up(b.id)
    b.mesh.set_members([a.id, b.id])
    clock.advance(1)
    assert b.got == [(a.id, "early")]
    assert bus.stats["dials"] == 1


def test_held_link_expires_and_is_redialled() -> None:
    clock = FakeClock()
    bus = Bus(clock)
    a, b = spawn(bus, "a"), spawn(bus, "b")
    clock.advance(0.05)
    a.mesh.set_members([a.id, b.id])
    a.mesh.send(b.id, "eventually")
    clock.advance(mesh_mod.HOLD_SECONDS + 1)
    assert b.mesh.drops.by_reason["held-expired"] == 1
    b.mesh.set_members([a.id, b.id])
    clock.advance(30)
    assert b.got == [(a.id, "eventually")]


def test_peer_restart_with_same_id_starts_a_fresh_stream() -> None:
    clock, bus, nodes = make_net("ab")
    clock.advance(1)
    a, b = nodes["a"], nodes["b"]
    for i in range(3):
        a.mesh.send(b.id, i)
    clock.advance(1)
    bus.kill("a")
    clock.advance(0.1)
    a2 = spawn(bus, "a")
    clock.advance(0.05)
    a2.mesh.set_members([a2.id, b.id])
    a2.mesh.send(b.id, "new-0")
    clock.advance(10)
    assert b.from_(a.id) == [0, 1, 2, "new-0"]
    b.mesh.send(a.id, "hello again")
    clock.advance(1)
    assert a2.got == [(b.id, "hello again")]


def test_larger_id_falls_back_to_dialling_when_the_dialler_missed_the_drop() -> None:
    clock, bus, nodes = make_net("ab")
    clock.advance(1)
    a, b = nodes["a"], nodes["b"]  # a dials b
    real_handle = a.mesh.handle
    swallowed: list[object] = []

    def deaf(ev: object) -> bool:
        from kibitz.transport import LinkClosed

        if isinstance(ev, LinkClosed):
            swallowed.append(ev)
            return True
        return real_handle(ev)  # type: ignore[arg-type]

    a.transport.bind(deaf)
    bus.drop_links_between("a", "b")
    clock.advance(0.5)
    assert swallowed and a.mesh.link_up(b.id), "a still believes its link is up"
    a.mesh.send(b.id, "lost on the dead link?")
    clock.advance(mesh_mod.FALLBACK_DIAL + mesh_mod.BACKOFF_MAX + 2)
    assert b.mesh.link_up(a.id)
    assert b.from_(a.id) == ["lost on the dead link?"]


def _live_link(node_mesh: mesh_mod.Mesh, peer: str) -> str:
    for link, pid in node_mesh._links.items():
        if pid == peer:
            return link
    raise AssertionError("no link")


BAD_FRAMES: list[tuple[object, str]] = [
    ("x" * (mesh_mod.MAX_TEXT_FRAME + 1), "oversize"),
    ("{not json", "not-json"),
    ("[1,2]", "no-kind"),
    ('{"t":"zz"}', "unknown-frame"),
    ('{"t":"m","s":"1","d":1}', "invalid:m"),
    ('{"t":"m","s":99,"d":1}', "gap"),
    ('{"t":"ack","s":-1,"sid":"x"}', "invalid:ack"),
    ('{"t":"hi","sid":5,"base":1}', "invalid:hi"),
    (b"\x00", "bad-chunk"),
    (b"XX" + bytes(40), "bad-chunk"),
    (mesh_mod._CHUNK_HEADER.pack(b"KZ", 1, 1, 0, 1000, 1000 * CHUNK_SIZE), "reassembly-too-big"),
    (mesh_mod._CHUNK_HEADER.pack(b"KZ", 1, 1, 0, 3, 10) + b"0123456789", "bad-chunk"),
    (mesh_mod._CHUNK_HEADER.pack(b"KZ", 1, 1, 1, 2, CHUNK_SIZE + 1) + b"1", "chunk-order"),
    (mesh_mod._CHUNK_HEADER.pack(b"KZ", 1, 7, 0, 2, CHUNK_SIZE + 1) + bytes(CHUNK_SIZE), "gap"),
]


@pytest.mark.parametrize(("frame", "reason"), BAD_FRAMES)
def test_bad_frames_are_dropped_and_counted(frame: str | bytes, reason: str) -> None:
    clock, _, nodes = make_net("ab")
    clock.advance(1)
    b = nodes["b"]
    link = _live_link(b.mesh, mid("a"))
    assert b.mesh.handle(LinkMessage(link, frame)) is True
    assert b.mesh.drops.by_reason[reason] == 1, b.mesh.drops
    assert b.got == []
    nodes["a"].mesh.send(b.id, "still fine")
    clock.advance(1)
    assert b.got == [(mid("a"), "still fine")]


def test_chunk_reassembly_of_non_json_is_consumed_and_counted() -> None:
    clock, _, nodes = make_net("ab")
    clock.advance(1)
    b = nodes["b"]
    link = _live_link(b.mesh, mid("a"))
    total = CHUNK_SIZE + 5
    head = mesh_mod._CHUNK_HEADER.pack
    b.mesh.handle(LinkMessage(link, head(b"KZ", 1, 1, 0, 2, total) + b"{" * CHUNK_SIZE))
    b.mesh.handle(LinkMessage(link, head(b"KZ", 1, 1, 1, 2, total) + b"xxxxx"))
    assert b.mesh.drops.by_reason["not-json"] == 1
    assert b.mesh._reasm_bytes == 0


def test_stale_link_events_are_ignored() -> None:
    clock, bus, nodes = make_net("ab")
    clock.advance(1)
    b = nodes["b"]
    old = _live_link(b.mesh, mid("a"))
    bus.drop_links_between("a", "b")
    clock.advance(5)
    assert b.mesh.link_up(mid("a")) and _live_link(b.mesh, mid("a")) != old
    assert b.mesh.handle(LinkMessage(old, '{"t":"m","s":1,"d":"ghost"}')) is True
    assert b.mesh.drops.by_reason["stale-link"] == 1
    assert b.got == []
    assert b.mesh.handle(LinkMessage("never-seen", "x")) is False


frames = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300),
    st.builds(
        lambda d: json.dumps(d),
        st.dictionaries(
            st.sampled_from(["t", "s", "d", "sid", "base", "ack", "v"]),
            st.one_of(st.sampled_from(["m", "hi", "ack", "zz"]), st.integers(-5, 2**70), st.none(),
                      st.text(max_size=10), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
        ),
    ),
    st.builds(
        lambda seq, i, n, total, body: mesh_mod._CHUNK_HEADER.pack(b"KZ", 1, seq, i, n, total) + body,
        st.integers(0, 5), st.integers(0, 5), st.integers(0, 5), st.integers(0, 2**32 - 1),
        st.binary(max_size=64),
    ),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, max_size=20))
def test_fuzzed_frames_never_raise(junk: list[str | bytes]) -> None:
    clock, _, nodes = make_net("ab")
    clock.advance(1)
    b = nodes["b"]
    link = _live_link(b.mesh, mid("a"))
    for frame in junk:
        assert b.mesh.handle(LinkMessage(link, frame)) is True
    clock.advance(1)
    assert b.mesh._reasm_bytes >= 0


def test_duplicate_frames_are_delivered_once() -> None:
    clock, _, nodes = make_net("ab")
    clock.advance(1)
    nodes["a"].mesh.send(mid("b"), "one")
    clock.advance(1)
    b = nodes["b"]
    link = _live_link(b.mesh, mid("a"))
    b.mesh.handle(LinkMessage(link, '{"t":"m","s":1,"d":"one"}'))
    assert b.got == [(mid("a"), "one")]
    assert b.mesh.stats["duplicates"] == 1
