"""The agent SDK on the real network: our server (``kibitz serve``), real aiortc, loopback only.

Two CPython "humans" (plain :class:`~kibitz.session.Session` objects on aiortc transports, as a
page would run them) and one :class:`~kibitz.agent.Agent` share a room. The capability checks are
the engine's: these tests prove the agent is read-only by default from both ends (its own refusal
and every receiver's drop), that grants change that live, and that the SDK's conveniences (view
envelopes, callback isolation, the CLI) hold up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from server_fixture import KibitzServer

import kibitz.transport
from kibitz.agent import Agent, AgentJoinError, resolve_broker
from kibitz.agent.cli import AgentFileError, load_agent_file
from kibitz.backends.aio import make_aio_transport
from kibitz.backends.rtc import RtcTransport
from kibitz.clock import AsyncioScheduler
from kibitz.crypto import PrivateKey
from kibitz.gate import HostSpec, JoinGate
from kibitz.session import Session

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "agent" / "examples" / "summarizer.py"
DEFAULT_PERCEIVE = ["read-chat", "read-roster", "receive-directed"]


# ------------------------------------------------------------------------------------ helpers


async def until(pred: Callable[[], Any], timeout: float = 8.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


HOST_KEY = PrivateKey.from_bytes(bytes(range(40, 72)))
GATE = JoinGate(host=HostSpec(key=HOST_KEY.public_key.to_text()))
"""Ann holds the host key: she grants and removes from whatever seat she has."""


class Human:
    """A person's engine in CPython: the same Session a page runs, on an aiortc transport."""

    def __init__(self, srv: KibitzServer, room: str, name: str, host_key: str | None = None) -> None:
        self.transport: RtcTransport = make_aio_transport(srv.broker, key=srv.key, loopback_only=True)
        self.session = Session(
            room,
            transport=self.transport,
            scheduler=AsyncioScheduler(asyncio.get_running_loop()),
            name=name,
            gate=GATE,
            host_key=host_key,
        )
        self.chat: list[dict[str, Any]] = []
        self.messages: list[tuple[Any, str]] = []
        self.session.on("chat", lambda line: self.chat.append(line) if line is not None else None)
        self.session.on_message(lambda data, frm: self.messages.append((data, frm)))
        self.session.start()
        self.session.join()

    def texts(self, sender: str | None = None) -> list[str]:
        return [line["text"] for line in self.chat if sender is None or line["from"] == sender]

    def sees(self, member: str) -> bool:
        return any(p["id"] == member and p["linkUp"] for p in self.session.get_participants())

    async def close(self) -> None:
        self.session.close()
        await self.transport.shutdown()


@pytest.fixture
def room(request: pytest.FixtureRequest) -> str:
    return f"room-agent-{os.getpid()}-{time.monotonic_ns() % 10**9}"


@pytest.fixture
async def humans(kibitz_server: KibitzServer, room: str) -> AsyncIterator[tuple[Human, Human]]:
    """Ann (the coordinator: she arrives first, and the host) and Bob, both linked."""
    ann = Human(kibitz_server, room, "Ann", host_key=HOST_KEY.to_text())
    await until(lambda: ann.session.get_state()["isCoordinator"], what="Ann to coordinate")
    bob = Human(kibitz_server, room, "Bob")
    try:
        await until(lambda: ann.sees(bob.session.self_id) and bob.sees(ann.session.self_id), what="humans")
        yield ann, bob
    finally:
        await bob.close()
        await ann.close()


@contextlib.asynccontextmanager
async def joined(srv: KibitzServer, room: str, humans: tuple[Human, ...], **kw: Any) -> AsyncIterator[Agent]:
    kw.setdefault("join_gate", GATE)
    async with Agent(server=srv.http, room=room, name=kw.pop("name", "Scribe"), **kw) as agent:
        await until(
            lambda: all(h.sees(agent.id) and agent.session.mesh.link_up(h.session.self_id) for h in humans),
            what="agent links",
        )
        yield agent


# ------------------------------------------------------------------------ roster, chat, grants


async def test_agent_sees_roster_and_chat_and_is_on_everyones_roster(
    kibitz_server: KibitzServer, room: str, humans: tuple[Human, Human]
) -> None:
    ann, bob = humans
    rosters: list[list[dict[str, Any]]] = []
    lines: list[dict[str, Any]] = []
    async with joined(kibitz_server, room, humans, backend="test-model", egress=True) as agent:
        agent.on_roster(rosters.append)
        agent.on_chat(lines.append)
        assert agent.broker_url == kibitz_server.broker  # found through /api/signal
        people = {p["id"]: p for p in agent.participants()}
        assert set(people) == {ann.session.self_id, bob.session.self_id, agent.id}
        assert people[agent.id]["isSelf"] and people[agent.id]["kind"] == "agent"
        # Every human sees the agent for what it is, with its disclosure; disclosure grants nothing.
        for h in humans:
            seen = {p["id"]: p for p in h.session.get_participants()}[agent.id]
            assert seen["meta"] == {
                "role": "agent",
                "readOnly": True,
                "backend": "test-model",
                "egress": True,
            }
            assert seen["kind"] == "agent"
            assert h.session.get_capability_grant(agent.id)["act"] == []
        assert agent.grant["perceive"] == DEFAULT_PERCEIVE and agent.grant["act"] == []
        assert not agent.can_act()
        ann.session.send_chat("hello agent")
        bob.session.send_chat("hi all")
        await until(lambda: len(lines) == 2, what="chat at the agent")
        # two senders, two links: no order between them
        assert sorted((ln["name"], ln["text"]) for ln in lines) == [("Ann", "hello agent"), ("Bob", "hi all")]
        bob.session.set_name("Robert")
        await until(lambda: any(p["name"] == "Robert" for r in rosters for p in r), what="roster update")
    await until(
        lambda: not ann.sees(agent.id) and agent.id not in {p["id"] for p in bob.session.get_participants()},
        what="agent gone from the roster",
    )


async def test_say_needs_send_chat_and_tampered_say_is_dropped_and_audited(
    kibitz_server: KibitzServer, room: str, humans: tuple[Human, Human]
) -> None:
    ann, bob = humans
    grants: list[dict[str, Any]] = []
    async with joined(kibitz_server, room, humans) as agent:
        agent.on_grant(grants.append)
        with pytest.raises(PermissionError, match="send-chat"):
            await agent.say("let me talk")
        with pytest.raises(PermissionError):
            await agent.send({"x": 1})
        with pytest.raises(PermissionError, match="act"):
            await agent.act({"move": "e4"})
        # A tampered agent skips its own check: every honest receiver still drops it and audits it.
        agent.session.content._require_own = lambda *a: None
        await agent.say("sneaky")
        await until(
            lambda: all(
                any(e["kind"] == "blocked" for e in h.session.get_agent_audit(agent.id)) for h in humans
            ),
            what="audit entries",
        )
        await asyncio.sleep(0.2)
        for h in humans:
            assert "sneaky" not in h.texts()
            assert [e["what"] for e in h.session.get_agent_audit(agent.id) if e["kind"] == "blocked"] == [
                "chat"
            ]
        del agent.session.content._require_own  # honest again

        # The coordinator widens the grant: delivered to both.
        ann.session.set_capability_grant(agent.id, {"perceive": DEFAULT_PERCEIVE, "act": ["send-chat"]})
        await until(lambda: agent.can("send-chat"), what="grant at the agent")
        assert grants and "send-chat" in grants[-1]["act"]
        await agent.say("thanks for the grant")
        await until(
            lambda: all("thanks for the grant" in h.texts(agent.id) for h in humans), what="agent chat"
        )
        assert await agent.send({"note": 1}) != []
        await until(lambda: ({"note": 1}, agent.id) in bob.messages, what="agent data")

        # Revoke: refused locally again, and a tampered say is dropped again.
        ann.session.set_capability_grant(agent.id, None)
        await until(lambda: not agent.can("send-chat"), what="revocation at the agent")
        with pytest.raises(PermissionError):
            await agent.say("still here?")
        await until(lambda: not bob.session.get_capability_grant(agent.id)["act"], what="revocation at Bob")
        agent.session.content._require_own = lambda *a: None
        await agent.say("sneaky again")
        await until(
            lambda: len([e for e in bob.session.get_agent_audit(agent.id) if e["kind"] == "blocked"]) == 2,
            what="second audit entry",
        )
        assert "sneaky again" not in bob.texts() and "sneaky again" not in ann.texts()


async def test_act_needs_the_act_grant(
    kibitz_server: KibitzServer, room: str, humans: tuple[Human, Human]
) -> None:
    ann, bob = humans
    async with joined(kibitz_server, room, humans) as agent:
        ann.session.set_capability_grant(agent.id, {"perceive": DEFAULT_PERCEIVE, "act": ["send-chat"]})
        await until(lambda: agent.can("send-chat"), what="send-chat")
        assert not agent.can_act()
        with pytest.raises(PermissionError, match="act"):
            await agent.act({"move": "e4"})
        ann.session.set_capability_grant(
            agent.id, {"perceive": DEFAULT_PERCEIVE, "act": ["send-chat", "act"]}
        )
        await until(agent.can_act, what="act grant")
        await agent.act({"move": "e4"})
        envelope = {"__kib_agent": "act", "action": {"move": "e4"}}
        await until(
            lambda: (envelope, agent.id) in bob.messages and (envelope, agent.id) in ann.messages,
            what="act at the humans",
        )
        # Removed by the host: the agent notices, leaves, and wait_closed() returns.
        ann.session.remove(agent.id)
        await asyncio.wait_for(agent.wait_closed(), 5)
        assert agent.closed
        await until(lambda: agent.id not in {p["id"] for p in bob.session.get_participants()}, what="removal")


async def test_data_view_directed_and_callback_isolation(
    kibitz_server: KibitzServer, room: str, humans: tuple[Human, Human]
) -> None:
    ann, bob = humans
    data: list[tuple[Any, str]] = []
    views: list[Any] = []
    chat: list[str] = []
    async with joined(kibitz_server, room, humans) as agent:

        def boom(*_: Any) -> None:
            raise RuntimeError("bad plain callback")

        async def aboom(*_: Any) -> None:
            raise RuntimeError("bad async callback")

        async def async_chat(line: dict[str, Any]) -> None:
            await asyncio.sleep(0)
            chat.append(line["text"])

        for register in (agent.on_data, agent.on_view, agent.on_chat):
            register(boom)
            register(aboom)
        agent.on_data(lambda d, frm: data.append((d, frm)))
        agent.on_view(views.append)
        agent.on_chat(async_chat)

        bob.session.broadcast({"kind": "route", "route": "#/b"})
        ann.session.broadcast({"__kib_agent": "view", "view": {"board": "rnbqkbnr", "turn": "w"}})
        ann.session.send_to(agent.id, {"direct": True})
        ann.session.send_chat("still alive?")
        await until(lambda: len(data) == 2 and views and chat, what="data, view and chat at the agent")
        assert sorted(data, key=repr) == sorted(
            [
                ({"kind": "route", "route": "#/b"}, bob.session.self_id),
                ({"direct": True}, ann.session.self_id),
            ],
            key=repr,
        )
        assert views == [{"board": "rnbqkbnr", "turn": "w"}] and agent.view == views[0]
        assert chat == ["still alive?"]
        await agent.drain()
        assert agent.callback_errors == 8  # a plain and an async failure for each of 4 deliveries
        assert not agent.closed

        # Revoke receive-directed: the sender refuses; a broadcast still arrives.
        ann.session.set_capability_grant(agent.id, {"perceive": ["read-chat", "read-roster"]})
        await until(
            lambda: "receive-directed" not in bob.session.get_capability_grant(agent.id)["perceive"],
            what="revocation at Bob",
        )
        with pytest.raises(ValueError, match="may not receive directed"):
            bob.session.send_to(agent.id, {"secret": 1})
        bob.session.broadcast({"after": "revoke"})
        await until(lambda: ({"after": "revoke"}, bob.session.self_id) in data, what="broadcast after revoke")


# ------------------------------------------------------------------------------------ media


async def test_tracks_reach_late_subscribers_and_publishing_audio_needs_speak(
    kibitz_server: KibitzServer, room: str, humans: tuple[Human, Human]
) -> None:
    if not hasattr(kibitz.transport, "TrackArrived"):
        pytest.skip("this transport has no media lanes yet")
    from aiortc.mediastreams import AudioStreamTrack

    ann, bob = humans
    async with joined(kibitz_server, room, humans) as agent:
        await until(lambda: len(agent.tracks(ann.session.self_id)) == 2, what="Ann's lanes")
        seen: list[tuple[str, str]] = []
        agent.on_track(lambda peer, lane, track: seen.append((peer, lane)))
        await until(lambda: (ann.session.self_id, "audio") in seen, what="replayed lanes")
        assert (ann.session.self_id, "video") in seen
        tone = AudioStreamTrack()
        with pytest.raises(PermissionError, match="speak"):
            await agent.publish_audio(tone)
        ann.session.set_capability_grant(agent.id, {"perceive": DEFAULT_PERCEIVE, "act": ["speak"]})
        await until(lambda: agent.can("speak"), what="speak grant")
        await agent.publish_audio(tone)
        await until(
            lambda: {p["id"]: p for p in bob.session.get_participants()}[agent.id]["micOn"],
            what="mic on at Bob",
        )
        await agent.stop_audio()
        await until(
            lambda: not {p["id"]: p for p in bob.session.get_participants()}[agent.id]["micOn"],
            what="mic off at Bob",
        )
        tone.stop()


# ------------------------------------------------------------------------------- the CLI


async def test_cli_runs_the_example_agent_which_answers_who(
    kibitz_server: KibitzServer, room: str, humans: tuple[Human, Human]
) -> None:
    ann, bob = humans
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv" / "bin" / "kibitz"),
        "agent",
        "run",
        str(EXAMPLE),
        "--room",
        room,
        "--server",
        kibitz_server.http,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith("KIBITZ_AGENT_READY "), line
        agent_id = line.split()[1]
        await until(lambda: ann.sees(agent_id) and bob.sees(agent_id), what="the CLI agent")
        scribe = {p["id"]: p for p in ann.session.get_participants()}[agent_id]
        assert (scribe["name"], scribe["kind"]) == ("Scribe", "agent")
        ann.session.set_capability_grant(agent_id, {"perceive": DEFAULT_PERCEIVE, "act": ["send-chat"]})
        for _ in range(20):  # ask until the grant has reached the agent (it stays silent before)
            bob.session.send_chat("!who")
            with contextlib.suppress(AssertionError):
                await until(
                    lambda: any(t.startswith("On the call") for t in bob.texts(agent_id)), timeout=0.5
                )
                break
        else:
            pytest.fail("the CLI agent never answered !who")
        answer = next(t for t in bob.texts(agent_id) if t.startswith("On the call"))
        assert answer == "On the call (3): Ann, Bob; agents: Scribe"
        ann.session.send_chat("the budget review moves to friday, budget owners please confirm")
        ann.session.send_chat("!summary")  # same sender as the line before: ordered after it
        await until(
            lambda: any(t.startswith("1 line (Ann 1)") for t in ann.texts(agent_id)),
            what="the !summary answer",
        )
        # SIGTERM: the agent leaves cleanly (no goodbye timeout) and exits 0.
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        await until(
            lambda: agent_id not in {p["id"] for p in ann.session.get_participants()},
            timeout=3,
            what="the agent's goodbye",
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


def test_cli_rejects_a_file_without_main(tmp_path: Path) -> None:
    bad = tmp_path / "nomain.py"
    bad.write_text("def main(agent):\n    return None\n")
    with pytest.raises(AgentFileError, match="async def main"):
        load_agent_file(bad)
    with pytest.raises(AgentFileError, match="no agent file"):
        load_agent_file(tmp_path / "missing.py")
    out = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "kibitz"), "agent", "run", str(bad), "--room", "room-x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "async def main" in out.stderr


# --------------------------------------------------------------------------- joining errors


async def test_unreachable_server_is_a_clear_error() -> None:
    with contextlib.closing(__import__("socket").socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(AgentJoinError, match="cannot reach the Kibitz server"):
        async with Agent(server=f"http://127.0.0.1:{port}", room="room-nowhere"):
            pass
    with pytest.raises(ValueError, match="needs a room"):
        Agent(server="http://127.0.0.1:1", room="  ")


async def test_unreachable_broker_times_out_with_a_clear_error() -> None:
    with contextlib.closing(__import__("socket").socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(AgentJoinError, match="did not reach the broker"):
        async with Agent(broker=f"ws://127.0.0.1:{port}/", room="room-nowhere", join_timeout=1.0):
            pass
    assert time.monotonic() - started < 4


async def test_signal_without_a_broker_falls_back_to_the_default_layout() -> None:
    answers: list[dict[str, Any]] = [
        {"host": None},
        {"host": "10.0.0.5", "port": 9000, "path": "/b/", "secure": True, "key": "k1"},
        {
            "host": "127.0.0.1",
            "port": 1,
            "path": "/",
            "secure": False,
            "key": "k2",
            "url": "ws://127.0.0.1:1/",
        },
    ]
    rooms: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        rooms.append(request.query["room"])
        return web.json_response(answers[len(rooms) - 1])

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for piece in (b'{"host": "127.0.0.1", "port": 7, ', b'"path": "/x/", "key": "kc"}'):
            await resp.write(piece)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/api/signal", handler)
    app.router.add_get("/chunked/api/signal", chunked)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        base = f"http://127.0.0.1:{port}"
        assert await resolve_broker(base, "room-a") == (f"ws://127.0.0.1:{port + 1}/", "peerjs")
        assert await resolve_broker(base + "/", "room-b") == ("wss://10.0.0.5:9000/b/", "k1")
        assert await resolve_broker(base, "room c") == ("ws://127.0.0.1:1/", "k2")
        assert rooms == ["room-a", "room-b", "room c"]
        assert await resolve_broker(base + "/chunked", "r") == ("ws://127.0.0.1:7/x/", "kc")
        with pytest.raises(AgentJoinError, match="HTTP 404"):
            await resolve_broker(base + "/missing", "r")
    finally:
        await runner.cleanup()
    with pytest.raises(ValueError, match="http"):
        await resolve_broker("ws://127.0.0.1:1", "room")


# ------------------------------------------------------------------------- the example's logic


def test_example_summary_and_who_are_deterministic() -> None:
    module, main = load_agent_file(EXAMPLE)
    assert main.__name__ == "main" and module.NAME == "Scribe"
    lines = [
        {"from": "a", "name": "Ann", "text": "The budget review is on Friday"},
        {"from": "b", "name": "Bob", "text": "budget owners: confirm the review"},
        {"from": "a", "name": "Ann", "text": "!summary"},
        {"from": "c", "name": "Cy", "text": "ok"},
    ]
    text = module.summarize(lines)
    assert text == module.summarize(list(lines))
    assert text == (
        "3 lines (Ann 1, Bob 1, Cy 1). Topics: budget (2), review (2), confirm (1), friday (1), "
        "owners (1). Last: Cy, Bob, Ann."
    )
    assert module.summarize([]) == "Nothing to summarise yet."
    people = [
        {"name": "Ann", "kind": "human"},
        {"name": "Scribe", "kind": "agent"},
        {"id": "x", "kind": "human"},
    ]
    assert module.who(people) == "On the call (3): Ann, x; agents: Scribe"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


# ------------------------------------------------------------------------------ media gating


class ToneMic:
    """LocalMedia for a CPython human: the 'microphone' is a 440 Hz tone."""

    def __init__(self) -> None:
        from kibitz.backends.aio_media import ToneTrack

        self.track = ToneTrack()

    async def acquire(self, source: str) -> object:
        if source != "mic":
            raise PermissionError(f"no {source} here")
        return self.track

    def release(self, source: str) -> None:
        pass


def _inbound(stats: list[dict[str, Any]], kind: str) -> int:
    rtp = [s for s in stats if s.get("type") == "inbound-rtp" and s.get("kind") == kind]
    return sum(int(s.get("packetsReceived", 0)) for s in rtp)


async def test_agent_gets_no_audio_packets_until_hear_audio_is_granted(
    kibitz_server: KibitzServer, room: str
) -> None:
    transport = make_aio_transport(kibitz_server.broker, key=kibitz_server.key, loopback_only=True)
    ann = Session(
        room, transport=transport, scheduler=AsyncioScheduler(asyncio.get_running_loop()), name="Ann",
        media=ToneMic(),
    )
    ann.start()
    ann.join()
    try:
        await until(lambda: ann.get_state()["isCoordinator"], what="Ann to coordinate")
        await ann.set_mic(True)
        async with Agent(server=kibitz_server.http, room=room, name="Ear") as agent:
            await until(lambda: agent.session.mesh.link_up(ann.self_id), what="agent link")
            await asyncio.sleep(1.0)
            before = _inbound(await agent.media_stats(ann.self_id), "audio")
            assert before == 0, f"agent without hear-audio received {before} audio packets"
            ann.set_capability_grant(agent.id, {"perceive": [*DEFAULT_PERCEIVE, "hear-audio"], "act": []})
            await until(lambda: "hear-audio" in agent.grant["perceive"], what="grant at the agent")
            await asyncio.sleep(1.0)
            after = _inbound(await agent.media_stats(ann.self_id), "audio")
            assert after > 10, f"granted agent received only {after} audio packets"
            # Video stays withheld: the agent may not see-screen.
            assert _inbound(await agent.media_stats(ann.self_id), "video") == 0
    finally:
        ann.close()
        await transport.shutdown()
