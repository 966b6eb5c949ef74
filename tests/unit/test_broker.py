"""The broker over real loopback sockets: PeerJS wire behaviour and our improvements.

Time-driven behaviour (EXPIRE, alive timeout, rate windows) uses an injected clock and explicit
``broker.sweep()`` calls instead of sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import websockets
from peerjs_wire import recv, send, silent
from websockets.asyncio.client import ClientConnection

from kibitz.server.app import RunningServer, start_server
from kibitz.server.config import ServerConfig

Connect = Callable[..., Awaitable[ClientConnection]]


class ManualClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


BASE = ServerConfig(host="127.0.0.1", port=0, broker_port=0, dist_dir=ServerConfig().dist_dir / "missing")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def config() -> ServerConfig:
    return BASE


@pytest.fixture
async def server(config: ServerConfig, clock: ManualClock) -> AsyncIterator[RunningServer]:
    srv = await start_server(config, sweep=False, clock=clock)
    yield srv
    await srv.close()


@pytest.fixture
async def connect(server: RunningServer) -> AsyncIterator[Connect]:
    opened: list[ClientConnection] = []

    async def make(
        id_: str | None, token: str | None = "tok", key: str | None = "peerjs", expect_open: bool = True
    ) -> ClientConnection:
        q = urlencode({k: v for k, v in (("key", key), ("id", id_), ("token", token)) if v is not None})
        ws = await websockets.connect(f"{server.broker_url}peerjs?{q}&version=1.5.5")
        opened.append(ws)
        if expect_open:
            assert await recv(ws) == {"type": "OPEN"}
        return ws

    yield make
    for ws in opened:
        await ws.close()


async def test_relay_overwrites_src_and_strips_extra_fields(connect: Connect, server: RunningServer) -> None:
    a = await connect("alice")
    b = await connect("bob")
    await send(a, {"type": "OFFER", "dst": "bob", "payload": {"sdp": "x", "n": [1, 2]}})
    assert await recv(b) == {
        "type": "OFFER", "src": "alice", "dst": "bob", "payload": {"sdp": "x", "n": [1, 2]}
    }
    # forged src and extra fields are not forwarded
    await send(b, {"type": "ANSWER", "dst": "alice", "src": "mallory", "payload": 7, "extra": True})
    assert await recv(a) == {"type": "ANSWER", "src": "bob", "dst": "alice", "payload": 7}
    # whitespace before the object and no payload still give the canonical four (three) fields
    await a.send('  {"type": "CANDIDATE", "dst": "bob"}')
    assert await recv(b) == {"type": "CANDIDATE", "src": "alice", "dst": "bob"}
    assert server.broker.metrics.relayed == 3


async def test_heartbeat_gets_no_reply_and_unknown_types_are_ignored(connect: Connect) -> None:
    a = await connect("alice")
    await send(a, {"type": "HEARTBEAT"})
    await send(a, {"type": "WHATEVER", "dst": "alice"})
    assert await silent(a)


async def test_id_taken_with_other_token_and_takeover_with_same_token(
    connect: Connect, server: RunningServer
) -> None:
    old = await connect("carol", token="t1")
    intruder = await connect("carol", token="t2", expect_open=False)
    assert await recv(intruder) == {"type": "ID-TAKEN", "payload": {"msg": "ID is taken"}}
    await asyncio.wait_for(intruder.wait_closed(), 2)
    # same token: the reload takes over at once with a fresh OPEN, the old socket is closed
    new = await connect("carol", token="t1")
    await asyncio.wait_for(old.wait_closed(), 2)
    other = await connect("dave")
    await send(other, {"type": "OFFER", "dst": "carol", "payload": 1})
    assert (await recv(new))["src"] == "dave"
    assert server.broker.metrics.connected == 2
    assert server.broker.metrics.takeovers == 1


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"key": "nope"}, "Invalid key provided"),
        ({"token": None}, "No id, token, or key supplied to websocket server"),
        ({"key": None}, "No id, token, or key supplied to websocket server"),
    ],
)
async def test_refused_connections_get_error_and_close(
    connect: Connect, server: RunningServer, kwargs: dict[str, Any], error: str
) -> None:
    ws = await connect("erin", expect_open=False, **kwargs)
    assert await recv(ws) == {"type": "ERROR", "payload": {"msg": error}}
    await asyncio.wait_for(ws.wait_closed(), 2)
    assert server.broker.metrics.connected == 0


async def raw_ws(url: str, query: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A hand-made WebSocket client: the handshake, then frames read and written by the test."""
    host, port = url.removeprefix("ws://").rstrip("/").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET /peerjs?{query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert head.startswith(b"HTTP/1.1 101")
    return reader, writer


async def raw_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(opcode, payload) of one unmasked server frame (payloads here are < 126 bytes)."""
    b0, b1 = await asyncio.wait_for(reader.readexactly(2), 2)
    assert b1 < 126
    return b0 & 0x0F, await reader.readexactly(b1)


@pytest.mark.parametrize(
    ("query", "first"),
    [
        ("key=peerjs&id=carol&token=t2", b'{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}'),
        ("key=wrong&id=erin&token=t", b'{"type":"ERROR","payload":{"msg":"Invalid key provided"}}'),
    ],
)
async def test_refusal_is_delivered_then_closed_with_a_full_close_handshake(
    connect: Connect, server: RunningServer, query: str, first: bytes
) -> None:
    """The frame, then CLOSE 1008, and the TCP side stays open until our CLOSE answers it.

    Dropping the socket right after CLOSE made Firefox lose the ID-TAKEN frame and report
    ``wasClean=false`` (issue 13): the client's CLOSE reply met a closed socket.
    """
    await connect("carol", token="t1")
    reader, writer = await raw_ws(server.broker_url, query)
    assert await raw_frame(reader) == (0x1, first)
    opcode, body = await raw_frame(reader)
    assert (opcode, int.from_bytes(body[:2], "big")) == (0x8, 1008)
    # The server waits for our CLOSE: no EOF while we take our time to answer.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.3)
    mask = b"\x01\x02\x03\x04"
    code = (1008).to_bytes(2, "big")
    writer.write(b"\x88\x82" + mask + bytes(c ^ mask[i] for i, c in enumerate(code)))
    assert await asyncio.wait_for(reader.read(1), 2) == b""  # then a clean TCP close (FIN, no RST)
    writer.close()
    assert server.broker.metrics.drops["close_timeout"] == 0


@pytest.mark.parametrize("config", [replace(BASE, close_grace=0.2)])
async def test_peer_that_never_answers_close_is_dropped_after_the_grace(
    connect: Connect, server: RunningServer
) -> None:
    await connect("carol", token="t1")
    reader, writer = await raw_ws(server.broker_url, "key=peerjs&id=carol&token=t2")
    assert (await raw_frame(reader))[0] == 0x1
    assert (await raw_frame(reader))[0] == 0x8
    assert await asyncio.wait_for(reader.read(1), 2) == b""
    writer.close()
    assert server.broker.metrics.drops["close_timeout"] == 1


async def test_invalid_id_is_refused(connect: Connect) -> None:
    ws = await connect("bad-id-", expect_open=False)
    assert (await recv(ws))["type"] == "ERROR"
    ok = await connect("good id_with-sep")  # spaces, underscores and dashes between alnum runs
    assert ok is not None


@pytest.mark.parametrize("config", [replace(BASE, concurrent_limit=2)])
async def test_concurrent_limit(connect: Connect) -> None:
    await connect("p1")
    await connect("p2")
    third = await connect("p3", expect_open=False)
    assert await recv(third) == {
        "type": "ERROR",
        "payload": {"msg": "Server has reached its concurrent user limit"},
    }


async def test_message_to_offline_id_is_queued_then_delivered(connect: Connect) -> None:
    a = await connect("alice")
    await send(a, {"type": "OFFER", "dst": "late", "payload": "hello"})
    late = await connect("late")
    assert await recv(late) == {"type": "OFFER", "src": "alice", "dst": "late", "payload": "hello"}
    # they are contacts now: late going away tells alice
    await late.close()
    assert await recv(a) == {"type": "LEAVE", "src": "late", "dst": "alice"}


async def test_undelivered_message_expires_back_to_sender(
    connect: Connect, server: RunningServer, clock: ManualClock
) -> None:
    a = await connect("alice")
    await send(a, {"type": "OFFER", "dst": "ghost", "payload": 1})
    await send(a, {"type": "CANDIDATE", "dst": "ghost", "payload": 2})
    await send(a, {"type": "HEARTBEAT"})
    await asyncio.sleep(0.05)
    clock.t += 4.9
    server.broker.sweep()
    assert await silent(a, 0.05)
    clock.t += 0.2
    server.broker.sweep()
    assert await recv(a) == {"type": "EXPIRE", "src": "ghost", "dst": "alice"}  # once per sender
    assert await silent(a, 0.05)
    assert server.broker.metrics.expired == 2
    ghost = await connect("ghost")
    assert await silent(ghost, 0.05)


async def test_leave_is_sent_to_every_contact_on_disconnect(connect: Connect) -> None:
    coord = await connect("room-1")
    m1 = await connect("m1")
    m2 = await connect("m2")
    bystander = await connect("by")
    await send(m1, {"type": "OFFER", "dst": "room-1", "payload": 1})  # m1 -> coordinator
    await send(coord, {"type": "OFFER", "dst": "m2", "payload": 2})  # coordinator -> m2
    assert (await recv(coord))["src"] == "m1"
    assert (await recv(m2))["src"] == "room-1"
    await coord.close()
    assert await recv(m1) == {"type": "LEAVE", "src": "room-1", "dst": "m1"}
    assert await recv(m2) == {"type": "LEAVE", "src": "room-1", "dst": "m2"}
    assert await silent(bystander, 0.05)


async def test_silent_peer_is_dropped_after_alive_timeout(
    connect: Connect, server: RunningServer, clock: ManualClock
) -> None:
    talker = await connect("talker")
    quiet = await connect("quiet")
    await send(quiet, {"type": "OFFER", "dst": "talker", "payload": 1})
    await recv(talker)
    for _ in range(3):  # talker heartbeats, quiet does not
        clock.t += 25
        await send(talker, {"type": "HEARTBEAT"})
        await asyncio.sleep(0.05)
        server.broker.sweep()
    await asyncio.wait_for(quiet.wait_closed(), 2)
    assert await recv(talker) == {"type": "LEAVE", "src": "quiet", "dst": "talker"}
    assert server.broker.metrics.drops["alive_timeout"] == 1


@pytest.mark.parametrize(
    ("frame", "reason", "msg"),
    [
        ("not json", "invalid_json", "Invalid JSON"),
        ("[1,2]", "not_object", "Message must be a JSON object"),
        ('{"dst":"bob"}', "no_type", "Message has no type"),
        ('{"type":"OFFER","dst":"bad id!"}', "invalid_dst", "Invalid dst"),
        ('{"type":"OFFER","dst":42}', "invalid_dst", "Invalid dst"),
        (b"\x00\x01binary", "binary", "Binary frames are not supported"),
        ('{"type":"OFFER","dst":"bob","payload":"' + "x" * 70000 + '"}', "too_large", "Message too large"),
    ],
)
async def test_bad_frames_get_error_are_counted_and_connection_survives(
    connect: Connect, server: RunningServer, frame: str | bytes, reason: str, msg: str
) -> None:
    a = await connect("alice")
    b = await connect("bob")
    await a.send(frame)
    assert await recv(a) == {"type": "ERROR", "payload": {"msg": msg}}
    assert server.broker.metrics.drops[reason] == 1
    await send(a, {"type": "OFFER", "dst": "bob", "payload": "still here"})
    assert (await recv(b))["payload"] == "still here"


@pytest.mark.parametrize("config", [replace(BASE, rate_limit_per_sec=5)])
async def test_rate_limit_drops_excess_with_one_error_per_window(
    connect: Connect, server: RunningServer, clock: ManualClock
) -> None:
    a = await connect("alice")
    b = await connect("bob")
    for i in range(8):
        await send(a, {"type": "CANDIDATE", "dst": "bob", "payload": i})
    got = [(await recv(b))["payload"] for _ in range(5)]
    assert got == [0, 1, 2, 3, 4]
    assert await recv(a) == {"type": "ERROR", "payload": {"msg": "Rate limit exceeded"}}
    assert await silent(a, 0.05)
    assert server.broker.metrics.drops["rate_limited"] == 3
    clock.t += 1.0
    server.broker.sweep()  # new window
    await send(a, {"type": "CANDIDATE", "dst": "bob", "payload": "again"})
    assert (await recv(b))["payload"] == "again"


async def test_leave_without_dst_means_leaving(connect: Connect, server: RunningServer) -> None:
    a = await connect("alice")
    b = await connect("bob")
    await send(a, {"type": "OFFER", "dst": "bob", "payload": 1})
    await recv(b)
    await send(a, {"type": "LEAVE"})
    assert await recv(b) == {"type": "LEAVE", "src": "alice", "dst": "bob"}
    await asyncio.wait_for(a.wait_closed(), 2)
    assert "alice" not in server.broker.clients


async def test_peerjs_http_endpoints_on_the_broker_port(server: RunningServer) -> None:
    base = server.broker_url.replace("ws://", "http://")
    async with aiohttp.ClientSession() as s:
        async with s.get(base) as r:
            assert r.status == 200
            assert (await r.json())["name"] == "PeerJS Server"
            assert r.headers["Access-Control-Allow-Origin"] == "*"
        async with s.get(base + "peerjs/id?ts=1&version=1.5.5") as r:
            assert r.status == 200
            new_id = await r.text()
            assert len(new_id) == 36 and new_id.count("-") == 4
        async with s.get(base + "peerjs/peers") as r:
            assert r.status == 401
        async with s.get(base + "nope/elsewhere") as r:
            assert r.status == 404


@pytest.mark.parametrize("config", [replace(BASE, allow_discovery=True)])
async def test_discovery_lists_peers_when_enabled(connect: Connect, server: RunningServer) -> None:
    await connect("visible")
    url = server.broker_url.replace("ws://", "http://") + "peerjs/peers"
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert await r.json() == ["visible"]
