"""RtcTransport: real aiortc on loopback against a real PeerJS-protocol broker, plus fake adapters.

The ``broker`` fixture (tests/unit/conftest.py, helpers in rtc_helpers.py) is parametrised by
broker implementation: the npm reference server (``peer`` 1.0.2) and ours (server/kibitz_server);
every network test runs against both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from rtc_helpers import BROKERS, EXPIRE_MS, Broker, Events, Peer, claimed, connected, uid

from kibitz.backends import rtc as rtc_mod
from kibitz.backends.aio import make_aio_transport
from kibitz.backends.rtc import REMOTE_FP_WAIT_S, RtcTransport
from kibitz.backends.rtc_api import (
    CloseReason,
    EventCallback,
    IceCandidateInit,
    OnSignalingClose,
    OnSignalingMessage,
    RtcConfig,
    SessionDescription,
)
from kibitz.clock import FakeClock
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

# ------------------------------------------------------------------------------------ helpers


@pytest.fixture
async def peers(broker_url: str) -> AsyncIterator[Callable[[], Peer]]:
    made: list[RtcTransport] = []

    def make() -> Peer:
        t = make_aio_transport(broker_url, loopback_only=True, open_timeout_s=8.0)
        ev = Events()
        t.bind(ev)
        made.append(t)
        return Peer(t, ev)

    yield make
    for t in made:
        await t.shutdown()


# ---------------------------------------------------------------------- real network (aiortc)


async def test_claims_and_taken(peers: Callable[[], Peer]) -> None:
    a, b = peers(), peers()
    ida, idb = uid("a"), uid("b")
    await claimed(a, ida)
    await claimed(b, idb)
    a.transport.claim(idb)
    result = await a.events.next()
    assert isinstance(result, ClaimResult) and (result.peer_id, result.outcome) == (idb, "taken")
    # Our own id again: still ours, answered at once.
    await claimed(a, ida)
    assert a.transport.claimed_ids == [ida]
    # One process may hold several ids (a coordinator also holds the room id).
    room = uid("room")
    await claimed(a, room)
    assert sorted(a.transport.claimed_ids) == sorted([ida, room])


async def test_dial_messages_both_ways_and_close(peers: Callable[[], Peer]) -> None:
    a, b = peers(), peers()
    ida, idb = uid("a"), uid("b")
    await claimed(a, ida)
    await claimed(b, idb)
    link_a, link_b = await connected(a, ida, b, idb)

    big = bytes(range(256)) * 800  # 204,800 bytes
    sent_a: list[str | bytes] = ["one", b"\x00two", "three", big, "after-big"]
    for item in sent_a:
        a.transport.send(link_a, item)
    assert a.transport.buffered_amount(link_a) > 0  # the 200 KB message is still queued locally
    sent_b: list[str | bytes] = [f"b{i}" for i in range(20)] + [b"\xffbin"]
    for item in sent_b:
        b.transport.send(link_b, item)

    got_b = [await b.events.next() for _ in sent_a]
    assert got_b == [LinkMessage(link_b, item) for item in sent_a]
    assert type(got_b[1].data) is bytes and type(got_b[0].data) is str  # type: ignore[union-attr]
    got_a = [await a.events.next() for _ in sent_b]
    assert got_a == [LinkMessage(link_a, item) for item in sent_b]
    assert a.transport.buffered_amount(link_a) == 0

    a.transport.close(link_a)
    assert await b.events.next() == LinkClosed(link_b, "closed")
    assert await a.events.quiet(0.3) == []  # the closer hears nothing
    a.transport.send(link_a, "into the void")  # silently dropped
    assert a.transport.buffered_amount(link_a) == 0


async def test_two_links_between_the_same_ids_are_independent(peers: Callable[[], Peer]) -> None:
    a, b = peers(), peers()
    ida, idb = uid("a"), uid("b")
    await claimed(a, ida)
    await claimed(b, idb)
    a1, b1 = await connected(a, ida, b, idb, "one")
    a2, b2 = await connected(a, ida, b, idb, "two")
    assert len({a1, a2}) == 2 and len({b1, b2}) == 2
    a.transport.send(a2, "on two")
    assert await b.events.next() == LinkMessage(b2, "on two")
    b.transport.close(b1)
    assert await a.events.next() == LinkClosed(a1, "closed")
    a.transport.send(a2, "still up")
    assert await b.events.next() == LinkMessage(b2, "still up")


async def test_dial_offline_id_is_peer_unavailable(peers: Callable[[], Peer]) -> None:
    a = peers()
    ida, ghost = uid("a"), uid("ghost")
    await claimed(a, ida)
    link = a.transport.dial(ida, ghost, "mesh")
    started = time.monotonic()
    assert await a.events.next(timeout=EXPIRE_MS / 1000 + 4) == LinkClosed(link, "peer-unavailable")
    assert await a.events.next() == PeerLeft(ghost)
    assert time.monotonic() - started >= EXPIRE_MS / 1000 * 0.9
    assert await a.events.quiet(0.2) == []  # later EXPIREs (for trickled candidates) add nothing


async def test_dial_from_unclaimed_id_fails_fast(peers: Callable[[], Peer]) -> None:
    a = peers()
    link = a.transport.dial("not-mine", "whoever", "mesh")
    assert await a.events.next() == LinkClosed(link, "not-claimed")


async def test_peer_shutdown_closes_links_on_the_other_side(peers: Callable[[], Peer]) -> None:
    a, b = peers(), peers()
    ida, idb = uid("a"), uid("b")
    await claimed(a, ida)
    await claimed(b, idb)
    link_a, _ = await connected(a, ida, b, idb)
    await b.transport.shutdown()
    event = await a.events.next()
    assert event == LinkClosed(link_a, "closed") or event == PeerLeft(idb)
    assert b.events.seen[-1] == LinkOpened(b.events.seen[-1].link)  # type: ignore[union-attr]
    assert await b.events.quiet(0.2) == []  # shutting down reports nothing locally


async def test_release_frees_the_id_for_someone_else(peers: Callable[[], Peer]) -> None:
    a, b = peers(), peers()
    shared = uid("room")
    await claimed(a, shared)
    a.transport.release(shared)
    for _ in range(50):  # the broker frees the id when it sees the socket close
        b.transport.claim(shared)
        result = await b.events.next()
        assert isinstance(result, ClaimResult)
        if result.outcome == "claimed":
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("released id never became claimable")
    assert await a.events.quiet(0.1) == []


async def test_broker_going_away_is_identity_lost(broker: Broker) -> None:
    own = BROKERS[broker.kind]()  # a private instance of the same kind, to kill
    t = make_aio_transport(own.url, loopback_only=True)
    ev = Events()
    t.bind(ev)
    try:
        t.claim("solo")
        assert await ev.next() == ClaimResult("solo", "claimed")
        own.stop()
        lost = await ev.next()
        assert isinstance(lost, IdentityLost) and lost.peer_id == "solo"
        t.claim("solo")  # nobody is listening any more
        failed = await ev.next()
        assert isinstance(failed, ClaimResult) and failed.outcome == "error"
    finally:
        own.stop()
        await t.shutdown()


PEER_SCRIPT = """
import asyncio, sys
from kibitz.backends.aio import make_aio_transport

async def main():
    t = make_aio_transport(sys.argv[1], loopback_only=True)
    t.bind(lambda event: print(type(event).__name__, flush=True))
    t.claim(sys.argv[2])
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_killed_peer_process_closes_the_link_via_leave(
    broker: Broker, peers: Callable[[], Peer]
) -> None:
    """SIGKILL gives no goodbye on the data channel; a LEAVE-announcing broker tells us at once."""
    if not broker.sends_leave:
        pytest.skip(f"{broker.kind} broker does not announce LEAVE (ICE consent would take ~30 s)")
    a = peers()
    ida, idb = uid("a"), uid("b")
    await claimed(a, ida)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PEER_SCRIPT,
        broker.url,
        idb,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert child.stdout is not None
        assert (await asyncio.wait_for(child.stdout.readline(), 20)).strip() == b"ClaimResult"
        link = a.transport.dial(ida, idb, "mesh")
        assert await a.events.next(timeout=10) == LinkOpened(link)
        os.killpg(child.pid, signal.SIGKILL)
        first, second = await a.events.next(), await a.events.next()
        assert (first, second) == (PeerLeft(idb), LinkClosed(link, "peer-left"))
    finally:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
        await child.wait()


# ------------------------------------------------------------------ fake adapters, fake clock


@dataclass
class FakeSocket:
    url: str
    on_message: OnSignalingMessage
    on_close: OnSignalingClose
    sent: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False

    def send(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def close(self) -> None:
        self.closed = True

    def deliver(self, frame: dict[str, Any] | str) -> None:
        self.on_message(frame if isinstance(frame, str) else json.dumps(frame))

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.url).query)


class FakeBroker:
    def __init__(self) -> None:
        self.sockets: list[FakeSocket] = []
        self.refuse = False

    async def connect(
        self, url: str, on_message: OnSignalingMessage, on_close: OnSignalingClose
    ) -> FakeSocket:
        if self.refuse:
            raise OSError("connection refused")
        sock = FakeSocket(url, on_message, on_close)
        self.sockets.append(sock)
        return sock


class FakeChannel:
    def __init__(self, label: str) -> None:
        self.label = label
        self.ready_state = "connecting"
        self.buffered_amount = 0
        self.buffered_amount_low_threshold = 0
        self.sent: list[str | bytes] = []
        self.listeners: dict[str, list[EventCallback]] = {}

    def on(self, name: str, callback: EventCallback) -> None:
        self.listeners.setdefault(name, []).append(callback)

    def fire(self, name: str, *args: Any) -> None:
        if name == "open":
            self.ready_state = "open"
        for cb in self.listeners.get(name, []):
            cb(*args)

    def send(self, data: str | bytes) -> None:
        self.sent.append(data)
        self.buffered_amount += len(data)

    def close(self) -> None:
        self.ready_state = "closed"


class FakePC:
    def __init__(self) -> None:
        self.connection_state = "new"
        self.ice_connection_state = "new"
        self.listeners: dict[str, list[EventCallback]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.remote_gate = asyncio.Event()
        self.remote_gate.set()
        self.channels: list[FakeChannel] = []
        self.closed = False

    def on(self, name: str, callback: EventCallback) -> None:
        self.listeners.setdefault(name, []).append(callback)

    def fire(self, name: str, *args: Any) -> None:
        for cb in self.listeners.get(name, []):
            cb(*args)

    async def create_offer(self) -> SessionDescription:
        return SessionDescription("offer", "v=0 offer")

    async def create_answer(self) -> SessionDescription:
        return SessionDescription("answer", "v=0 answer")

    async def set_local_description(self, desc: SessionDescription) -> None:
        self.calls.append(("local", desc.type))
        # A browser may fire icecandidate before our OFFER/ANSWER frame is sent.
        self.fire("icecandidate", IceCandidateInit(candidate="candidate:early", sdpMid="0", sdpMLineIndex=0))

    async def set_remote_description(self, desc: SessionDescription) -> None:
        await self.remote_gate.wait()
        self.calls.append(("remote", desc.type))

    async def add_ice_candidate(self, candidate: IceCandidateInit | None) -> None:
        self.calls.append(("candidate", None if candidate is None else candidate.get("candidate")))

    def create_data_channel(self, label: str, *, ordered: bool = True) -> FakeChannel:
        ch = FakeChannel(label)
        self.channels.append(ch)
        return ch

    def restart_ice(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True


class FakeFactory:
    def __init__(self) -> None:
        self.pcs: list[FakePC] = []
        self.gate_remote = False
        self.pc_class: type[FakePC] = FakePC

    def create(self, config: RtcConfig) -> FakePC:
        pc = self.pc_class()
        if self.gate_remote:
            pc.remote_gate.clear()
        self.pcs.append(pc)
        return pc


@dataclass
class Rig:
    transport: RtcTransport
    clock: FakeClock
    broker: FakeBroker
    factory: FakeFactory
    events: list[TransportEvent]

    async def settle(self) -> None:
        for _ in range(10):
            await asyncio.sleep(0)

    async def claimed(self, peer_id: str, *, keep_probe: bool = False) -> FakeSocket:
        self.transport.claim(peer_id)
        await self.settle()
        sock = self.broker.sockets[-1]
        sock.deliver({"type": "OPEN"})
        await self.settle()
        assert self.events[-1] == ClaimResult(peer_id, "claimed")
        probe = {"type": "EXPIRE", "dst": peer_id, "payload": {"probe": 1}}
        assert sock.sent == [probe]  # the first probe: does this broker echo?
        if not keep_probe:
            sock.sent.clear()
        return sock


@pytest.fixture
def rig() -> Rig:
    clock, fb, ff = FakeClock(), FakeBroker(), FakeFactory()
    events: list[TransportEvent] = []
    t = RtcTransport(
        ff,
        fb.connect,
        broker_url="ws://127.0.0.1:1/",
        rtc_config=RtcConfig(),
        scheduler=clock,
        heartbeat_s=5.0,
    )
    t.bind(events.append)
    return Rig(t, clock, fb, ff, events)


PROBE = {"type": "EXPIRE", "dst": "me", "payload": {"probe": 1}}


def beats(sock: FakeSocket) -> list[dict[str, Any]]:
    return [f for f in sock.sent if f["type"] == "HEARTBEAT"]


async def test_claim_url_heartbeat_and_token_reuse(rig: Rig) -> None:
    sock = await rig.claimed("me")
    assert sock.query["id"] == ["me"] and sock.query["key"] == ["peerjs"]
    token = sock.query["token"]
    rig.clock.advance(4.9)
    assert beats(sock) == []
    rig.clock.advance(0.2)
    assert beats(sock) == [{"type": "HEARTBEAT"}]
    rig.clock.advance(5.0)
    assert beats(sock) == [{"type": "HEARTBEAT"}] * 2
    sock.on_close("network down")
    await rig.settle()
    assert rig.events[-1] == IdentityLost("me", "network down")
    sock2 = await rig.claimed("me")
    assert sock2.query["token"] == token  # same token: our broker lets us take our session back
    rig.clock.advance(10.0)
    assert len(beats(sock)) == 2  # the dead socket's heartbeat stopped


def echo(sock: FakeSocket, peer_id: str = "me") -> None:
    sock.deliver({"type": "EXPIRE", "src": peer_id, "dst": peer_id, "payload": {"probe": 1}})


async def test_a_socket_whose_probe_is_not_echoed_is_dropped_and_claimed_again(rig: Rig) -> None:
    """A broker socket that went dead without a close (the machine moved to another network) is
    noticed by the probe, not after TCP's minutes-long timeout."""
    sock = await rig.claimed("me", keep_probe=True)
    echo(sock)  # this broker echoes
    rig.clock.advance(15.1)  # the third beat sends the next probe
    assert sock.sent.count(PROBE) == 2
    echo(sock)
    rig.clock.advance(15.0)
    assert sock.sent.count(PROBE) == 3 and not sock.closed
    # From here on nothing comes back.
    rig.clock.advance(rtc_mod.PROBE_TIMEOUT_S + 0.1)
    await rig.settle()
    assert rig.events[-1] == IdentityLost("me", "broker unresponsive")
    assert sock.closed and rig.transport.drops.by_reason["broker:probe-timeout"] == 1


async def test_a_broker_that_never_echoes_is_not_probed_again(rig: Rig) -> None:
    sock = await rig.claimed("me", keep_probe=True)
    rig.clock.advance(60.0)
    await rig.settle()
    assert sock.sent.count(PROBE) == 1 and not sock.closed
    assert not any(isinstance(e, IdentityLost) for e in rig.events)


async def test_an_echo_is_not_a_peer_expiry(rig: Rig) -> None:
    sock = await rig.claimed("me")
    link = rig.transport.dial("me", "you", "kbz-data")
    await rig.settle()
    echo(sock)
    await rig.settle()
    assert not any(isinstance(e, PeerLeft | LinkClosed) for e in rig.events), rig.events
    assert link in rig.transport._links


async def test_real_brokers_echo_the_probe(peers: Callable[[], Peer]) -> None:
    """Ours and the npm reference server both relay a frame addressed to its sender."""
    a = peers()
    ida = uid("a")
    await claimed(a, ida)
    ident = a.transport._identities[ida]
    deadline = time.monotonic() + 5
    while ident.echoes is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert ident.echoes is True
    assert await a.events.quiet(0.2) == []  # the echo is not an event


async def test_claim_outcomes(rig: Rig) -> None:
    rig.transport.claim("x")
    await rig.settle()
    rig.broker.sockets[-1].deliver({"type": "ID-TAKEN", "payload": {"msg": "ID is taken"}})
    await rig.settle()
    assert rig.events[-1] == ClaimResult("x", "taken", "ID is taken")
    assert rig.broker.sockets[-1].closed

    rig.transport.claim("y")
    await rig.settle()
    rig.broker.sockets[-1].deliver({"type": "ERROR", "payload": {"msg": "Invalid key provided"}})
    await rig.settle()
    assert rig.events[-1] == ClaimResult("y", "error", "Invalid key provided")

    # The broker closes with 1008 after ID-TAKEN; a browser may report the close alone (Firefox).
    rig.transport.claim("w")
    await rig.settle()
    rig.broker.sockets[-1].on_close(CloseReason("closed by broker (code 1008)", 1008))
    await rig.settle()
    assert rig.events[-1] == ClaimResult("w", "taken", "ID is taken (the broker closed with 1008: "
                                                       "closed by broker (code 1008))")
    rig.transport.claim("v")
    await rig.settle()
    rig.broker.sockets[-1].on_close(CloseReason("closed by broker (code 1011)", 1011))
    await rig.settle()
    assert rig.events[-1].outcome == "error"  # type: ignore[union-attr]

    rig.broker.refuse = True
    rig.transport.claim("z")
    await rig.settle()
    assert rig.events[-1] == ClaimResult("z", "error", "cannot reach broker: connection refused")
    rig.broker.refuse = False

    rig.transport.claim("slow")
    rig.transport.claim("slow")  # in flight: answered once
    await rig.settle()
    rig.clock.advance(10.0)
    await rig.settle()
    assert rig.events[-1] == ClaimResult("slow", "error", "timeout waiting for OPEN")
    assert [e for e in rig.events if isinstance(e, ClaimResult) and e.peer_id == "slow"] == [rig.events[-1]]


async def test_events_are_never_delivered_inside_a_call_and_sink_errors_are_contained(rig: Rig) -> None:
    seen: list[TransportEvent] = []

    def sink(event: TransportEvent) -> None:
        seen.append(event)
        raise RuntimeError("engine bug")

    rig.transport.bind(sink)
    link1 = rig.transport.dial("nobody", "x", "l")
    link2 = rig.transport.dial("nobody", "y", "l")
    assert seen == []  # not re-entrant: delivered later, from the loop
    await rig.settle()
    assert seen == [LinkClosed(link1, "not-claimed"), LinkClosed(link2, "not-claimed")]


async def test_dial_to_self_is_refused(rig: Rig) -> None:
    sock = await rig.claimed("me")
    link = rig.transport.dial("me", "me", "mesh")
    await rig.settle()
    assert rig.events[-1] == LinkClosed(link, "dial-to-self")
    assert sock.sent == [] and rig.factory.pcs == []


async def test_malformed_frames_are_counted_not_raised(rig: Rig) -> None:
    sock = await rig.claimed("me")
    before = len(rig.events)
    for junk in [
        "nope",
        "[]",
        '{"type":"WHAT"}',
        '{"type":"OFFER","src":"a"}',
        '{"type":"ANSWER","src":"a",'
        '"payload":{"sdp":{"type":"answer","sdp":"v"},"connectionId":"dc_unknown"}}',
    ]:
        sock.deliver(junk)
    await rig.settle()
    assert len(rig.events) == before
    assert rig.transport.drops.total == 5
    assert rig.transport.drops.by_reason["broker:answer-unexpected"] == 1


async def test_leave_is_peer_left_and_closes_links_to_it(rig: Rig) -> None:
    sock = await rig.claimed("me")
    link = rig.transport.dial("me", "them", "mesh")
    await rig.settle()
    sock.deliver({"type": "LEAVE", "src": "them", "dst": "me"})
    await rig.settle()
    assert rig.events[-2:] == [PeerLeft("them"), LinkClosed(link, "peer-left")]
    assert rig.factory.pcs[0].closed


async def test_answering_queues_early_candidates_and_sends_ours_after_the_answer(rig: Rig) -> None:
    sock = await rig.claimed("me")
    rig.factory.gate_remote = True
    offer = {
        "sdp": {"type": "offer", "sdp": "v=0 remote"},
        "type": "data",
        "connectionId": "dc_1",
        "label": "mesh",
    }
    sock.deliver({"type": "OFFER", "src": "them", "dst": "me", "payload": offer})
    for n in (1, 2):
        cand = {"candidate": f"candidate:{n}", "sdpMid": "0", "sdpMLineIndex": 0}
        sock.deliver(
            {"type": "CANDIDATE", "src": "them", "payload": {"candidate": cand, "connectionId": "dc_1"}}
        )
    await rig.settle()
    incoming = rig.events[-1]
    assert isinstance(incoming, IncomingLink) and incoming.label == "mesh" and incoming.remote_id == "them"
    pc = rig.factory.pcs[0]
    assert pc.calls == []  # remote description still being applied
    pc.remote_gate.set()
    await rig.settle()
    assert pc.calls == [
        ("remote", "offer"),
        ("candidate", "candidate:1"),
        ("candidate", "candidate:2"),
        ("local", "answer"),
    ]
    kinds = [(f["type"], f.get("dst")) for f in sock.sent]
    assert kinds == [("ANSWER", "them"), ("CANDIDATE", "them")]  # never a candidate before the answer
    assert sock.sent[0]["payload"]["connectionId"] == "dc_1"
    ch = FakeChannel("dc_1")
    pc.fire("datachannel", ch)
    ch.fire("message", b"early")  # a message implies open: LinkOpened still comes first
    ch.fire("open")
    await rig.settle()
    assert rig.events[-2:] == [LinkOpened(incoming.link), LinkMessage(incoming.link, b"early")]
    rig.transport.send(incoming.link, "hi")
    assert ch.sent == ["hi"] and rig.transport.buffered_amount(incoming.link) == 2
    pc.fire("connectionstatechange", "failed")
    await rig.settle()
    assert rig.events[-1] == LinkClosed(incoming.link, "ice-failed")


async def open_link(rig: Rig) -> tuple[str, FakePC, FakeSocket]:
    sock = await rig.claimed("me")
    echo(sock)  # a broker that echoes probes
    link = rig.transport.dial("me", "them", "mesh")
    await rig.settle()
    pc = rig.factory.pcs[-1]
    pc.channels[0].fire("open")
    await rig.settle()
    assert rig.events[-1] == LinkOpened(link)
    sock.sent.clear()
    return link, pc, sock


async def test_a_link_disconnected_for_long_is_closed_a_blip_is_not(rig: Rig) -> None:
    link, pc, sock = await open_link(rig)
    pc.connection_state = "disconnected"
    pc.fire("connectionstatechange", "disconnected")
    assert sock.sent[-1]["type"] == "EXPIRE"  # our broker socket is checked at once
    echo(sock)
    rig.clock.advance(rtc_mod.DISCONNECTED_GRACE_S - 1)
    pc.connection_state = "connected"
    pc.fire("connectionstatechange", "connected")
    rig.clock.advance(10)
    await rig.settle()
    assert rig.events[-1] == LinkOpened(link), "a short blip keeps the link"
    pc.connection_state = "disconnected"
    pc.fire("connectionstatechange", "disconnected")
    echo(sock)
    rig.clock.advance(rtc_mod.DISCONNECTED_GRACE_S + 0.1)
    await rig.settle()
    assert rig.events[-1] == LinkClosed(link, "ice-disconnected")


async def test_dial_times_out_when_nothing_answers(rig: Rig) -> None:
    sock = await rig.claimed("me")
    link = rig.transport.dial("me", "them", "mesh")
    await rig.settle()
    assert [f["type"] for f in sock.sent] == ["OFFER", "CANDIDATE"]
    offer = sock.sent[0]["payload"]
    assert offer["label"] == "mesh" and offer["reliable"] is True and offer["connectionId"].startswith("dc_")
    assert rig.factory.pcs[0].channels[0].label == offer["connectionId"]
    rig.clock.advance(10.0)
    await rig.settle()
    assert rig.events[-1] == LinkClosed(link, "timeout")
    assert rig.factory.pcs[0].closed


async def test_messages_skip_the_loop_hop_only_when_nothing_is_queued_ahead(rig: Rig) -> None:
    sock = await rig.claimed("me")
    offer = {"sdp": {"type": "offer", "sdp": "v=0 remote"}, "type": "data", "connectionId": "dc_9"}
    sock.deliver({"type": "OFFER", "src": "them", "dst": "me", "payload": offer})
    await rig.settle()
    incoming = rig.events[-1]
    assert isinstance(incoming, IncomingLink)
    ch = FakeChannel("dc_9")
    rig.factory.pcs[0].fire("datachannel", ch)
    ch.fire("open")
    await rig.settle()
    # Idle transport: a message from the channel reaches the sink within the native callback.
    ch.fire("message", "now")
    assert rig.events[-1] == LinkMessage(incoming.link, "now")
    # Something queued ahead (a close reported by another link): the message waits its turn.
    other = rig.transport.dial("nobody", "x", "l")  # answered later, from the loop
    ch.fire("message", "after")
    assert rig.events[-1] == LinkMessage(incoming.link, "now")
    await rig.settle()
    assert rig.events[-2:] == [LinkClosed(other, "not-claimed"), LinkMessage(incoming.link, "after")]
    # A sink that sends while handling a message is not re-entered by the next one.
    depth = 0
    seen: list[str] = []

    def sink(event: TransportEvent) -> None:
        nonlocal depth
        depth += 1
        assert depth == 1, "re-entered"
        if isinstance(event, LinkMessage):
            seen.append(str(event.data))
            if event.data == "ping":
                ch.fire("message", "pong")  # a (fake) synchronous echo: must be queued, not nested
        depth -= 1

    rig.transport.bind(sink)
    ch.fire("message", "ping")
    await rig.settle()
    assert seen == ["ping", "pong"]


class LateCertPC(FakePC):
    """A peer connection whose far-end certificate is read a moment after its channel opens (the
    page's: the connection lives on another thread than the engine)."""

    def __init__(self) -> None:
        super().__init__()
        self.fp: str | None = None

    def remote_fingerprint(self) -> str | None:
        return self.fp

    def remote_fingerprint_pending(self) -> bool:
        return self.fp is None and not self.closed

    def certify(self, fp: str) -> None:
        self.fp = fp
        self.fire("remotefingerprint")


async def test_a_link_opens_only_once_the_far_end_certificate_is_read(rig: Rig) -> None:
    """Identity checks read the certificate as the link opens, so a backend that reads it late holds
    the open (and the messages that come meanwhile, in order) until it knows it, or gives up."""
    rig.factory.pc_class = LateCertPC
    sock = await rig.claimed("me")
    fp = ":".join(["ab"] * 32)
    links = []
    for n in (1, 2):
        offer = {"sdp": {"type": "offer", "sdp": "v=0 remote"}, "type": "data", "connectionId": f"dc_{n}"}
        sock.deliver({"type": "OFFER", "src": f"them{n}", "dst": "me", "payload": offer})
        await rig.settle()
        incoming = rig.events[-1]
        assert isinstance(incoming, IncomingLink)
        ch = FakeChannel(f"dc_{n}")
        pc = rig.factory.pcs[-1]
        pc.fire("datachannel", ch)
        ch.fire("open")
        ch.fire("message", "first")
        ch.fire("message", "second")
        await rig.settle()
        assert rig.events[-1] == incoming  # not open yet: the certificate is on its way
        assert rig.transport.remote_fingerprint(incoming.link) is None
        links.append((incoming.link, pc, ch))
    (one, pc1, ch1), (two, _pc2, _ch2) = links
    assert isinstance(pc1, LateCertPC)
    pc1.certify(fp)
    ch1.fire("message", "third")
    await rig.settle()
    assert rig.events[-4:] == [LinkOpened(one), LinkMessage(one, "first"), LinkMessage(one, "second"),
                               LinkMessage(one, "third")]
    assert rig.transport.remote_fingerprint(one) == fp
    # The other never learns its certificate: it opens anyway after a while, without one.
    rig.clock.advance(REMOTE_FP_WAIT_S + 0.1)
    await rig.settle()
    assert rig.events[-3:] == [LinkOpened(two), LinkMessage(two, "first"), LinkMessage(two, "second")]
    assert rig.transport.remote_fingerprint(two) is None
