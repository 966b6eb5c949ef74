"""Ack coalescing and write credit in the data mesh, on the in-memory bus (deterministic clock).

A reply rides back with the ack of the request it answers (``"a"`` in the ``m`` frame), so a
request/reply exchange costs two frames, not four; one-way traffic is still acknowledged by
``ack`` frames (every :data:`ACK_EVERY` messages or after :data:`ACK_DELAY`). The writer reads the
link's buffered amount once and spends the room left instead of asking before every frame.
"""

from __future__ import annotations

import json
from typing import Any

from mesh_helpers import Node, make_net, mid

from kibitz.clock import FakeClock
from kibitz.mesh import ACK_DELAY, ACK_EVERY, HIGH_WATER
from kibitz.transport import LinkId, LinkMessage, Payload


def _record(node: Node) -> list[dict[str, Any]]:
    """Every text frame ``node`` writes from now on, parsed (chunks are not used here)."""
    frames: list[dict[str, Any]] = []
    send = node.transport.send

    def recording(link: LinkId, data: Payload) -> None:
        if isinstance(data, str):
            frames.append(json.loads(data))
        send(link, data)

    node.transport.send = recording
    return frames


def _pair() -> tuple[FakeClock, Node, Node]:
    """Two members with their data link up."""
    clock, _, nodes = make_net("ab")
    clock.advance(1)
    return clock, nodes["a"], nodes["b"]


def _kinds(frames: list[dict[str, Any]]) -> list[str]:
    return [f["t"] for f in frames]


def _echoing(node: Node) -> None:
    """``node`` answers every message at once, from inside the delivery (as a page callback does)."""

    def on_message(sender: str, message: Any) -> None:
        node.got.append((sender, message))
        node.mesh.send(sender, {"re": message})

    node.mesh.on_message = on_message


def _live_link(node: Node, peer: str) -> LinkId:
    link = node.mesh.link_of(peer)
    assert link is not None
    return link


def test_reply_carries_the_ack_and_no_ack_frames_follow() -> None:
    clock, a, b = _pair()
    _echoing(b)
    sent_a, sent_b = _record(a), _record(b)
    for i in range(40):  # more than ACK_EVERY, each answered before the next
        a.mesh.send(b.id, i)
        clock.advance(0.02)
    clock.advance(5 * ACK_DELAY)
    assert b.got == [(a.id, i) for i in range(40)]
    assert a.got == [(b.id, {"re": i}) for i in range(40)]
    assert _kinds(sent_b) == ["m"] * 40, "every reply acks its request; no ack frame is needed"
    assert [f["a"] for f in sent_b] == list(range(1, 41))
    assert a.mesh.pending(b.id) == 0
    # a's requests carry the ack of the previous reply; the reply that arrives after a request
    # left is acked by the timer, at most once per ACK_DELAY, never once per reply.
    carried = [f.get("a") for f in sent_a if f["t"] == "m"]
    assert all(a_ is None or a_ == i for i, a_ in enumerate(carried)), carried
    ack_frames = _kinds(sent_a).count("ack")
    assert 1 <= ack_frames <= 40 * 0.02 / ACK_DELAY + 2
    assert sum(a_ is not None for a_ in carried) + ack_frames >= 40
    assert b.mesh.pending(a.id) == 0


def test_one_way_traffic_is_acked_by_ack_frames() -> None:
    clock, a, b = _pair()
    sent_b = _record(b)
    for i in range(3):
        a.mesh.send(b.id, i)
    clock.advance(0.02)
    assert a.mesh.pending(b.id) == 3 and sent_b == []
    clock.advance(ACK_DELAY + 0.02)
    assert _kinds(sent_b) == ["ack"] and sent_b[0]["s"] == 3
    assert a.mesh.pending(b.id) == 0


def test_ack_every_n_messages_goes_out_without_waiting() -> None:
    clock, a, b = _pair()
    sent_b = _record(b)
    for i in range(ACK_EVERY):
        a.mesh.send(b.id, i)
    clock.advance(0.02)  # one bus latency, far below ACK_DELAY
    assert _kinds(sent_b) == ["ack"] and sent_b[0]["s"] == ACK_EVERY


def test_a_duplicate_after_a_piggybacked_ack_is_acked_again() -> None:
    clock, a, b = _pair()
    _echoing(b)
    a.mesh.send(b.id, "one")
    clock.advance(1)
    sent_b = _record(b)
    # The peer resends message 1 (say it never saw the reply): it must hear an ack, not silence.
    b.mesh.handle(LinkMessage(_live_link(b, a.id), '{"t":"m","s":1,"d":"one"}'))
    clock.advance(1)
    assert b.got == [(a.id, "one")] and b.mesh.stats["duplicates"] == 1
    assert _kinds(sent_b) == ["ack"] and sent_b[0]["s"] == 1


def test_piggybacked_ack_releases_the_resend_buffer() -> None:
    clock, a, b = _pair()
    a.mesh.send(b.id, "x")
    a.mesh.send(b.id, "y")
    clock.advance(0.02)
    assert a.mesh.pending(b.id) == 2
    b.mesh.send(a.id, "back")  # carries "a": 2
    clock.advance(0.02)
    assert a.mesh.pending(b.id) == 0 and a.got == [(b.id, "back")]


def test_bad_piggybacked_ack_drops_the_frame() -> None:
    clock, _, nodes = make_net("ab")
    clock.advance(1)
    b = nodes["b"]
    link = _live_link(b, mid("a"))
    for bad in ('"2"', "-1", "true", "1.5"):
        assert b.mesh.handle(LinkMessage(link, '{"t":"m","s":1,"a":' + bad + ',"d":1}')) is True
    assert b.mesh.drops.by_reason["invalid:m"] == 4 and b.got == []


def test_buffered_amount_is_read_once_per_credit_not_per_frame() -> None:
    clock, a, b = _pair()
    reads = 0
    amount = a.transport.buffered_amount

    def counting(link: LinkId) -> int:
        nonlocal reads
        reads += 1
        return int(amount(link))

    a.transport.buffered_amount = counting
    for i in range(200):
        a.mesh.send(b.id, {"i": i, "pad": "p" * 100})
    clock.advance(1)
    assert len(b.got) == 200
    assert reads == 1, "200 small frames fit in one read's credit"
    # A drain signal (pump) forgets the credit: the next write reads the buffer again.
    a.mesh.pump(b.id)
    a.mesh.send(b.id, "after")
    assert reads == 2
    clock.advance(1)
    assert b.got[-1] == (a.id, "after")


def test_credit_never_lets_the_buffer_pass_high_water() -> None:
    clock, _, nodes = make_net("ab", throttle=5e6)
    clock.advance(1)
    a, b = nodes["a"], nodes["b"]
    for i in range(400):
        a.mesh.send(b.id, {"i": i, "pad": "é" * 8000})  # 2 bytes per character on the wire
    clock.advance(0.001)
    assert a.transport.peak <= HIGH_WATER + 64 * 1024 + 64
    clock.advance(10)
    assert [m["i"] for _, m in b.got] == list(range(400))
    assert a.transport.peak <= HIGH_WATER + 64 * 1024 + 64


def test_a_peer_that_does_not_read_piggybacked_acks_gets_ack_frames() -> None:
    """Mixed versions: an older peer's ``hi`` has no ``"pa":1``; it must still be acked by frames,
    or its resend buffer would never be released."""
    clock, _, nodes = make_net("ab")
    a, b = nodes["a"], nodes["b"]
    send_a = a.transport.send

    def like_an_old_peer(link: LinkId, data: Payload) -> None:
        if isinstance(data, str) and data.startswith('{"t":"hi"'):
            hello = json.loads(data)
            hello.pop("pa")
            data = json.dumps(hello, separators=(",", ":"))
        send_a(link, data)

    a.transport.send = like_an_old_peer
    clock.advance(1)
    _echoing(b)
    sent_b = _record(b)
    for i in range(5):
        a.mesh.send(b.id, i)
        clock.advance(0.02)
    clock.advance(5 * ACK_DELAY)
    assert a.got == [(b.id, {"re": i}) for i in range(5)]
    assert all("a" not in f for f in sent_b if f["t"] == "m")
    assert "ack" in _kinds(sent_b)
    assert a.mesh.pending(b.id) == 0


def test_acks_owed_to_many_peers_share_one_timer() -> None:
    """Arming a timer crosses into JS in the page: acks owed to several peers, and every message
    within the delay, ride on one sweep timer, and every peer is still acked within ACK_DELAY."""
    clock, _, nodes = make_net("abc")
    clock.advance(1)
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    armed: list[float] = []
    call_later = a.mesh._clock.call_later

    def counting(delay: float, callback: Any) -> Any:
        if delay == ACK_DELAY:
            armed.append(delay)
        return call_later(delay, callback)

    a.mesh._clock.call_later = counting  # type: ignore[method-assign]
    sent_a = _record(a)
    for i in range(3):
        b.mesh.send(a.id, i)
        c.mesh.send(a.id, i)
        clock.advance(0.005)
    clock.advance(ACK_DELAY)
    assert len(armed) == 1, armed
    acks = {f["sid"] for f in sent_a if f["t"] == "ack"}
    assert len(acks) == 2, sent_a  # one ack frame for each sender's stream
    assert b.mesh.pending(a.id) == 0 and c.mesh.pending(a.id) == 0
