"""Fuzz the broker's WebSocket surface: random frames from one client never crash the server, never
let a sender forge ``src`` or smuggle fields, and never stop two well-behaved peers relaying."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from kibitz.server.app import RunningServer, start_server
from kibitz.server.config import ServerConfig


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, RunningServer] = {}

    async def boot() -> None:
        cfg = ServerConfig(port=0, broker_port=0, max_message_bytes=4096, rate_limit_per_sec=100000)
        holder["s"] = await start_server(cfg)
        ready.set()

    def run() -> None:
        loop.run_until_complete(boot())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield holder["s"]
    asyncio.run_coroutine_threadsafe(holder["s"].close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def ws(server: RunningServer, id_: str, stack: ExitStack) -> ClientConnection:
    url = f"{server.broker_url}peerjs?key=peerjs&id={id_}&token=t&version=1.5.5"
    c = stack.enter_context(connect(url, open_timeout=5))
    assert json.loads(c.recv(timeout=5)) == {"type": "OPEN"}
    return c


IDS = st.sampled_from(["good1", "good2", "fuzz", "offline1", "bad id!", ""])
TYPES = st.sampled_from(["OFFER", "ANSWER", "CANDIDATE", "LEAVE", "EXPIRE", "HEARTBEAT", "OPEN", "ERROR"])
JSONV = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "type": TYPES | st.text(max_size=10) | st.integers(),
        "dst": IDS | st.integers() | st.none(),
        "src": IDS,
        "payload": JSONV,
        "extra": JSONV,
    },
)
FRAME = st.one_of(
    MESSAGE.map(lambda m: json.dumps(m)),
    st.text(max_size=300),
    st.binary(max_size=300),
    st.lists(JSONV, max_size=3).map(json.dumps),
    st.just('{"type":"OFFER","dst":"good2","payload":"' + "x" * 5000 + '"}'),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(FRAME, min_size=1, max_size=8), marker=st.integers())
def test_random_frames_do_not_disturb_others(server: RunningServer, frames: list[Any], marker: int) -> None:
    with ExitStack() as stack:
        good1, good2, fuzz = (ws(server, name, stack) for name in ("good1", "good2", "fuzz"))
        for frame in frames:
            try:
                fuzz.send(frame)
            except ConnectionClosed:
                break  # e.g. LEAVE without dst: the fuzzer left, that is allowed
        # every answer to the fuzzer is a well-formed server message with a reason on ERROR
        try:
            while True:
                msg = json.loads(fuzz.recv(timeout=0.05))
                assert msg["type"] in ("ERROR", "EXPIRE", "OFFER", "ANSWER", "CANDIDATE", "LEAVE")
                if msg["type"] == "ERROR":
                    assert isinstance(msg["payload"]["msg"], str) and msg["payload"]["msg"]
        except (TimeoutError, ConnectionClosed):
            pass
        good1.send(json.dumps({"type": "OFFER", "dst": "good2", "payload": marker}))
        while True:
            msg = json.loads(good2.recv(timeout=5))
            assert set(msg) <= {"type", "src", "dst", "payload"}, msg
            if msg["type"] == "LEAVE" and msg["src"] == "fuzz":
                continue
            assert msg["src"] in ("good1", "fuzz"), msg  # nobody can forge src
            if msg["src"] == "good1":
                assert msg == {"type": "OFFER", "src": "good1", "dst": "good2", "payload": marker}
                break
    assert server.broker.clients.keys() <= {"good1", "good2", "fuzz"}


def test_metrics_counted_fuzz_drops(server: RunningServer) -> None:
    before = sum(server.broker.metrics.drops.values())
    with ExitStack() as stack:
        c = ws(server, "counter", stack)
        c.send("}{")
        assert json.loads(c.recv(timeout=5))["payload"]["msg"] == "Invalid JSON"
    assert sum(server.broker.metrics.drops.values()) == before + 1
