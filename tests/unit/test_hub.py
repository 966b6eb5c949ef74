"""The LAN hub (``kibitz hub``): its router, ICE-lite, galaxy links, and rooms through it with real
aiortc on loopback (two CPython "humans" and an agent), restarts and a forged link.

The browser side, on a virtual LAN in network namespaces, is tests/e2e/test_hub_lan.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aioice import stun

from kibitz.agent import Agent, AgentJoinError
from kibitz.backends.aio import AioPeerConnectionFactory, make_aio_transport
from kibitz.backends.hub_signaling import HUB_BROKER_URL, HubConnector, HubUnreachable
from kibitz.backends.rtc import RtcTransport
from kibitz.backends.rtc_api import RtcConfig
from kibitz.clock import AsyncioScheduler
from kibitz.galaxy import Galaxy, GalaxyError, galaxy_from_link, parse_galaxy
from kibitz.gate import parse_link
from kibitz.server.hub.app import HubConfig, RunningHub, galaxy_link, start_hub
from kibitz.server.hub.ice_lite import IceLite
from kibitz.server.hub.identity import load_or_create
from kibitz.server.hub.router import Router, RouterLimits
from kibitz.session import Session
from kibitz.transport import ClaimResult, IdentityLost, TransportEvent

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"
sys.path.insert(0, str(VECTORS))
from galaxy_check import check_all  # noqa: E402


async def until(pred: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


# ----------------------------------------------------------------------------- galaxy vectors


def test_galaxy_vectors_pass_in_cpython() -> None:
    results = check_all(json.loads((VECTORS / "galaxy.json").read_text("utf-8")))
    assert results.failed == []
    assert len(results.passed) >= 25


def test_a_galaxy_in_a_link_is_read_and_off_means_none() -> None:
    value = json.loads((VECTORS / "galaxy.json").read_text("utf-8"))["parsed"][0]["value"]
    link = galaxy_link("https://site.example/call?x=1#room-abc", value)
    assert link.startswith("https://site.example/call?x=1&galaxy=g1|") and link.endswith("#room-abc")
    assert galaxy_from_link(link) == parse_galaxy(value)
    assert galaxy_from_link("https://site.example/call?galaxy=off") is None
    assert galaxy_from_link("https://site.example/call") is None
    with pytest.raises(GalaxyError):
        galaxy_from_link("https://site.example/call?galaxy=g1|nope")
    # A galaxy is not a room setting: the gate reader leaves it alone (it refuses unknown g* ones).
    parsed = parse_link(link)
    assert parsed.room == "room-abc" and parsed.gate is None


# ----------------------------------------------------------------------------------- router


class FakeChannel:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.closed = False

    def send(self, text: str) -> None:
        self.raw.append(text)
        self.sent.append(json.loads(text))

    def close(self) -> None:
        self.closed = True

    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]


def _open(router: Router, peer_id: str, token: str = "t1", now: float = 0.0) -> tuple[Any, FakeChannel]:
    ch = FakeChannel()
    return router.open(ch, {"key": "peerjs", "id": peer_id, "token": token}, now), ch


def test_router_claims_take_over_and_refuse_like_the_broker() -> None:
    r = Router()
    a, ach = _open(r, "alice")
    assert ach.types() == ["OPEN"] and a.registered
    b, bch = _open(r, "alice", token="other")
    assert bch.sent == [{"type": "ID-TAKEN", "payload": {"msg": "ID is taken"}}] and not b.registered
    assert not bch.closed  # the peer closes it once it has read why (the hub closes it later)
    a2, a2ch = _open(r, "alice")  # same token: a reload takes over at once
    assert a2ch.types() == ["OPEN"] and ach.closed and r.clients["alice"] is a2
    for params, reason in (({"key": "peerjs", "id": "x"}, "no_params"),
                           ({"key": "nope", "id": "x", "token": "t"}, "bad_key"),
                           ({"key": "peerjs", "id": "bad id!", "token": "t"}, "bad_id")):
        ch = FakeChannel()
        assert not r.open(ch, params, 0).registered and ch.types() == ["ERROR"]
        assert r.metrics.rejected[reason] == 1
    full = Router(RouterLimits(concurrent_limit=1))
    _open(full, "one")
    _, ch = _open(full, "two")
    assert ch.sent[0]["payload"]["msg"] == "Server has reached its concurrent user limit"


def test_router_relays_with_src_and_tells_contacts_when_an_id_leaves() -> None:
    r = Router()
    a, _ = _open(r, "alice")
    b, bch = _open(r, "bob")
    offer = ('{"type":"OFFER","dst":"bob",'
             '"payload":{"sdp":{"type":"offer","sdp":"v=0"},"connectionId":"dc_1"}}')
    r.frame(a, offer, 1.0)
    assert bch.sent[-1] == {"type": "OFFER", "src": "alice", "dst": "bob",
                            "payload": {"sdp": {"type": "offer", "sdp": "v=0"}, "connectionId": "dc_1"}}
    r.frame(a, '{"type":"ANSWER","dst":"bob","src":"mallory","payload":{},"extra":1}', 1.0)
    assert bch.sent[-1] == {"type": "ANSWER", "src": "alice", "dst": "bob", "payload": {}}
    r.closed(a)
    assert bch.sent[-1] == {"type": "LEAVE", "src": "alice", "dst": "bob"}
    assert "alice" not in r.clients and r.metrics.leaves_sent == 1
    r.frame(b, '{"type":"LEAVE"}', 2.0)  # PeerJS: LEAVE without dst = "I am leaving"
    assert bch.closed and "bob" not in r.clients


def test_router_queues_for_absent_ids_then_delivers_or_expires() -> None:
    r = Router(RouterLimits(expire_timeout=5.0))
    a, ach = _open(r, "alice")
    r.frame(a, '{"type":"OFFER","dst":"bob","payload":{"n":1}}', 1.0)
    r.frame(a, '{"type":"OFFER","dst":"carol","payload":{"n":2}}', 1.0)
    _, bch = _open(r, "bob", now=2.0)
    assert bch.sent == [{"type": "OPEN"},
                        {"type": "OFFER", "src": "alice", "dst": "bob", "payload": {"n": 1}}]
    r.sweep(7.0)
    assert ach.sent[-1] == {"type": "EXPIRE", "src": "carol", "dst": "alice"} and r.queues.count == 0


def test_router_refuses_bad_frames_with_a_reason_and_carries_on() -> None:
    r = Router(RouterLimits(max_message=100, rate_limit_per_sec=3))
    a, ach = _open(r, "alice")
    bad: list[str | bytes] = ["not json", "[1]", '{"no":"type"}', b"\x00binary", "x" * 200,
                              '{"type":"OFFER","dst":"bad id!"}']
    for frame in bad:
        r.frame(a, frame, 0.5)
    msgs = [m["payload"]["msg"] for m in ach.sent[1:]]
    assert msgs == ["Invalid JSON", "Message must be a JSON object", "Message has no type",
                    "Rate limit exceeded"]
    assert r.metrics.dropped["rate_limited"] == 3  # warned once per window
    r.sweep(1.5)  # a new window
    for frame in (b"\x00binary", "x" * 200, '{"type":"OFFER","dst":"bad id!"}'):
        r.frame(a, frame, 1.6)
    assert [m["payload"]["msg"] for m in ach.sent[5:]] == [
        "Binary frames are not supported", "Message too large", "Invalid dst"]
    r.sweep(2.7)
    r.frame(a, '{"type":"WHAT"}', 2.8)  # unknown types are ignored, as the reference does
    assert r.metrics.dropped["unknown_type"] == 1 and len(ach.sent) == 8 and "alice" in r.clients


def test_router_drops_silent_ids() -> None:
    r = Router(RouterLimits(alive_timeout=10.0))
    a, _ = _open(r, "alice")
    b, bch = _open(r, "bob")
    r.frame(a, '{"type":"CANDIDATE","dst":"bob","payload":{}}', 1.0)
    r.frame(b, '{"type":"HEARTBEAT"}', 9.0)
    assert r.sweep(11.5) == [a]
    assert bch.sent[-1] == {"type": "LEAVE", "src": "alice", "dst": "bob"} and list(r.clients) == ["bob"]


# ---------------------------------------------------------------------------------- ICE-lite


def _check(ufrag: str, pwd: str, **attrs: Any) -> bytes:
    msg = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    msg.attributes["USERNAME"] = ufrag
    msg.attributes.update(attrs)
    msg.add_message_integrity(pwd.encode())
    return bytes(msg)


def test_ice_lite_answers_only_checks_signed_with_the_hub_password() -> None:
    ice = IceLite("hubU", "hubPassword0123456789ab")
    addr = ("198.18.96.5", 50000)
    resp, check = ice.handle(_check("hubU:peer", "hubPassword0123456789ab", **{"USE-CANDIDATE": None,
                                    "ICE-CONTROLLING": 7}), addr)
    assert check is not None and check.peer_ufrag == "peer" and check.nominated
    assert resp is not None
    parsed = stun.parse_message(resp)
    assert parsed.message_class == stun.Class.RESPONSE and parsed.attributes["XOR-MAPPED-ADDRESS"] == addr
    assert parsed.check_message_integrity(b"hubPassword0123456789ab")
    for data in (_check("hubU:peer", "wrong-password-0123456789"),
                 _check("other:peer", "hubPassword0123456789ab")):
        resp, check = ice.handle(data, addr)
        assert check is None and resp is not None and stun.parse_message(resp).error_code == 401
    resp, check = ice.handle(_check("hubU:peer", "hubPassword0123456789ab", **{"ICE-CONTROLLED": 1}), addr)
    assert check is None and resp is not None and stun.parse_message(resp).error_code == 487
    assert ice.handle(b"\x00\x01" + b"\xff" * 40, addr) == (None, None)
    assert ice.refused == 3


# ------------------------------------------------------------------- rooms through a real hub


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[RunningHub]:
    running = await start_hub(HubConfig(state_dir=tmp_path / "hub", host="127.0.0.1", udp_port=0,
                                        http=False, addresses=["127.0.0.1"]))
    yield running
    await running.close()


def _transport(galaxy: Galaxy, **options: Any) -> RtcTransport:
    return make_aio_transport("ws://unused/", loopback_only=True, galaxy=galaxy, **options)


class Human:
    def __init__(self, galaxy: Galaxy, room: str, name: str) -> None:
        self.transport = _transport(galaxy)
        self.session = Session(room, transport=self.transport,
                               scheduler=AsyncioScheduler(asyncio.get_running_loop()), name=name)
        self.chat: list[str] = []
        self.messages: list[Any] = []
        self.session.on("chat", lambda line: self.chat.append(line["text"]) if line else None)
        self.session.on_message(lambda data, frm: self.messages.append(data))
        self.session.start()
        self.session.join()

    def names(self) -> list[str]:
        return sorted(p["name"] for p in self.session.get_participants())


async def test_two_people_and_an_agent_share_a_room_through_the_hub(hub: RunningHub) -> None:
    galaxy = parse_galaxy(hub.value)
    ann, bob = Human(galaxy, "room-hub-1", "Ann"), Human(galaxy, "room-hub-1", "Bob")
    try:
        await until(lambda: ann.names() == ["Ann", "Bob"] and bob.names() == ["Ann", "Bob"], what="roster")
        agent = Agent(room="room-hub-1", name="Scribe", galaxy=hub.value, server="")
        async with agent:
            assert agent.broker_url == HUB_BROKER_URL
            await until(lambda: ann.names() == ["Ann", "Bob", "Scribe"], what="agent on the roster")
            marker = "secret-payload-" + base64.b32encode(os.urandom(10)).decode()
            ann.session.send_chat(marker)
            await until(lambda: marker in bob.chat and any(c["text"] == marker for c in agent.chat()),
                        what="chat to Bob and the agent")
            ann.session.broadcast({"app": marker})
            await until(lambda: {"app": marker} in bob.messages, what="app data")
        await until(lambda: ann.names() == ["Ann", "Bob"], what="agent gone")
        m = hub.router.render_metrics()
        assert m["relayed"] > 0 and hub.endpoint.sessions_established >= 3
    finally:
        for h in (ann, bob):
            h.session.close()
            await h.transport.shutdown()


async def test_the_hub_routes_signaling_and_never_the_content(hub: RunningHub, monkeypatch: Any) -> None:
    """Everything the router is handed is broker signaling; content goes peer to peer."""
    seen: list[str] = []
    frame = hub.router.frame
    monkeypatch.setattr(hub.router, "frame",
                        lambda conn, raw, now: (seen.append(str(raw)), frame(conn, raw, now)))
    galaxy = parse_galaxy(hub.value)
    ann, bob = Human(galaxy, "room-hub-2", "Ann"), Human(galaxy, "room-hub-2", "Bob")
    try:
        await until(lambda: bob.names() == ["Ann", "Bob"], what="roster")
        marker = "content-" + base64.b32encode(os.urandom(10)).decode()
        ann.session.send_chat(marker)
        bob.session.send_to(ann.session.get_state()["self"], {"direct": marker})
        await until(lambda: marker in bob.chat and {"direct": marker} in ann.messages, what="content")
        frames = [json.loads(s) for s in seen]
        kinds = {f["type"] for f in frames}
        assert kinds and kinds <= {"OFFER", "ANSWER", "CANDIDATE", "HEARTBEAT", "EXPIRE"}
        # EXPIRE here is only the liveness probe a peer addresses to itself (issue 19), no content.
        assert all(f.get("payload") == {"probe": 1} for f in frames if f["type"] == "EXPIRE")
        assert not any(marker in s for s in seen)
    finally:
        for h in (ann, bob):
            h.session.close()
            await h.transport.shutdown()


async def test_a_forged_link_never_connects(hub: RunningHub) -> None:
    """Another certificate digest in the link (a LAN impostor's): DTLS fails, the claim errors."""
    real = parse_galaxy(hub.value)
    forged = Galaxy(real.ufrag, real.pwd, bytes(32), real.addresses)
    connector = HubConnector(AioPeerConnectionFactory(loopback_only=True), forged, open_timeout_s=4)
    with pytest.raises(HubUnreachable):
        await connector("hub://galaxy/peerjs?key=peerjs&id=alice&token=t", lambda m: None, lambda r: None)
    assert hub.router.metrics.connections_total == 0
    before = hub.endpoint.sessions_total
    wrong_pwd = Galaxy(real.ufrag, "x" * 24, real.fingerprint, real.addresses)
    connector = HubConnector(AioPeerConnectionFactory(loopback_only=True), wrong_pwd, open_timeout_s=3)
    with pytest.raises(HubUnreachable):
        await connector("hub://galaxy/peerjs?key=peerjs&id=alice&token=t", lambda m: None, lambda r: None)
    assert hub.endpoint.ice.refused > 0 and hub.endpoint.sessions_total == before  # checks refused


async def test_a_restarted_hub_keeps_its_link_and_peers_reclaim(tmp_path: Path) -> None:
    config = HubConfig(state_dir=tmp_path / "hub", host="127.0.0.1", udp_port=0, http=False,
                       addresses=["127.0.0.1"])
    first = await start_hub(config)
    value, port = first.value, first.udp_port
    events: list[TransportEvent] = []
    t = _transport(parse_galaxy(value))
    t.bind(events.append)
    t.claim("alice")
    await until(lambda: ClaimResult("alice", "claimed") in events, what="claim")
    await first.close()
    await until(lambda: any(isinstance(e, IdentityLost) for e in events), what="identity lost", timeout=40)
    config.udp_port = None  # the saved port
    second = await start_hub(config)
    try:
        assert (second.value, second.udp_port, second.created) == (value, port, False)
        events.clear()
        t.claim("alice")
        await until(lambda: ClaimResult("alice", "claimed") in events, what="claim again")
    finally:
        await t.shutdown()
        await second.close()
    saved = json.loads((tmp_path / "hub" / "hub.json").read_text())
    assert oct((tmp_path / "hub" / "hub.json").stat().st_mode & 0o777) == "0o600"
    assert saved["udp_port"] == port
    fresh, created = load_or_create(tmp_path / "hub", udp_port=None, http_port=None, fresh=True)
    assert created and fresh.fingerprint != parse_galaxy(value).fingerprint


async def test_a_hub_that_goes_silent_is_given_up_in_seconds(hub: RunningHub) -> None:
    """A killed or unplugged hub sends nothing more (no close): the keepalive notices it."""
    factory = AioPeerConnectionFactory(loopback_only=True)
    connector = HubConnector(factory, parse_galaxy(hub.value), ping_s=0.3, silent_s=1.5)
    t = RtcTransport(factory, connector, broker_url=HUB_BROKER_URL, rtc_config=RtcConfig(),
                     scheduler=AsyncioScheduler(asyncio.get_running_loop()))
    events: list[TransportEvent] = []
    t.bind(events.append)
    t.claim("alice")
    await until(lambda: ClaimResult("alice", "claimed") in events, what="claim")
    await asyncio.sleep(1.0)
    assert not any(isinstance(e, IdentityLost) for e in events)  # pongs keep it alive
    hub.endpoint.datagram_received = lambda data, addr: None  # type: ignore[method-assign]
    started = time.monotonic()
    await until(lambda: any(isinstance(e, IdentityLost) for e in events), what="identity lost", timeout=10)
    assert time.monotonic() - started < 5  # not the ~30 s of ICE consent
    await t.shutdown()


async def test_an_agent_with_hide_my_ip_stays_out_of_a_hub_room(hub: RunningHub) -> None:
    agent = Agent(room="room-hub-3", galaxy=hub.value, server="", relay_only=True)
    with pytest.raises(AgentJoinError, match="relay"):
        await agent.start()
    assert hub.router.metrics.connections_total == 0


# ------------------------------------------------------------------------------ the command


def test_kibitz_hub_prints_its_link_and_qr_serves_its_page_and_keeps_its_identity(tmp_path: Path) -> None:
    import urllib.request

    kibitz = str(ROOT / ".venv" / "bin" / "kibitz")
    args = [kibitz, "hub", "--host", "127.0.0.1", "--udp-port", "0", "--http-port", "0",
            "--address", "127.0.0.1", "--state-dir", str(tmp_path / "st"),
            "--site", "https://site.example/call"]

    def run_once() -> tuple[str, list[str]]:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                if line.startswith("KIBITZ_HUB_READY"):
                    break
            http = int(lines[-1].split("http=")[1])
            page = urllib.request.urlopen(f"http://127.0.0.1:{http}/", timeout=10).read().decode()
            info = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{http}/galaxy.json",
                                                     timeout=10).read())
            value = next(ln.split("=", 1)[1] for ln in lines if ln.startswith("KIBITZ_GALAXY="))
            assert info["galaxy"] == value and info["link"].startswith("https://site.example/call?galaxy=g1|")
            assert "<svg" in page and value in page
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        return value, lines

    value, lines = run_once()
    parse_galaxy(value)
    assert any("▀" in ln or "█" in ln or "▄" in ln for ln in lines), "a QR code in the terminal"
    assert any(ln.startswith("Open on each device: https://site.example/call?galaxy=g1|") for ln in lines)
    again, _ = run_once()
    assert again.split("|")[:4] == value.split("|")[:4]  # same credentials and certificate
