"""Shared helpers for the RtcTransport tests: real brokers in subprocesses, event collection.

The ``broker`` / ``broker_url`` fixtures built on these live in ``tests/unit/conftest.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from server_fixture import running_kibitz_server

from kibitz.backends.rtc import RtcTransport
from kibitz.transport import ClaimResult, IncomingLink, LinkOpened, TransportEvent

ROOT = Path(__file__).resolve().parents[2]
PEERJS_BIN = ROOT / "node_modules" / ".bin" / "peerjs"
EXPIRE_MS = 1000
"""Broker's EXPIRE delay for undeliverable frames (npm default 5000) - short to keep tests fast."""


# ------------------------------------------------------------------------------------ brokers


@dataclass
class Broker:
    url: str
    kind: str
    sends_leave: bool
    """Does the broker announce LEAVE when a peer's socket drops? (npm ``peer`` does not.)"""
    stop: Callable[[], None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited early with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("broker did not start listening")


def start_npm_broker() -> Broker:
    """``peerjs --port P --host 127.0.0.1 --key peerjs`` in its own process group."""
    if not PEERJS_BIN.exists():
        pytest.skip("node_modules/.bin/peerjs missing (run scripts/setup.sh)")
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(PEERJS_BIN),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--key",
            "peerjs",
            "-t",
            str(EXPIRE_MS),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def stop() -> None:
        # SIGKILL: on SIGTERM the CLI waits for every open WebSocket to close first.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    try:
        _wait_port(port, proc)
    except BaseException:
        stop()
        raise
    return Broker(f"ws://127.0.0.1:{port}/", "npm", sends_leave=False, stop=stop)


def start_kibitz_broker() -> Broker:
    """Our broker (server/kibitz_server): the shared ``kibitz serve`` fixture with a short EXPIRE."""
    server = running_kibitz_server("--expire-timeout", str(EXPIRE_MS / 1000), "--dist", str(ROOT / "no-dist"))
    srv = server.__enter__()
    return Broker(srv.broker, "kibitz", sends_leave=True, stop=lambda: server.__exit__(None, None, None))


BROKERS: dict[str, Callable[[], Broker]] = {"npm": start_npm_broker, "kibitz": start_kibitz_broker}


class Events:
    """Collects a transport's events; ``next()`` awaits the next one with a timeout."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[TransportEvent] = asyncio.Queue()
        self.seen: list[TransportEvent] = []

    def __call__(self, event: TransportEvent) -> None:
        self.seen.append(event)
        self.queue.put_nowait(event)

    async def next(self, timeout: float = 5.0) -> TransportEvent:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def quiet(self, seconds: float) -> list[TransportEvent]:
        await asyncio.sleep(seconds)
        out = []
        while not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out


@dataclass
class Peer:
    transport: RtcTransport
    events: Events


async def claimed(p: Peer, peer_id: str) -> None:
    p.transport.claim(peer_id)
    assert await p.events.next() == ClaimResult(peer_id, "claimed")


async def connected(a: Peer, a_id: str, b: Peer, b_id: str, label: str = "mesh") -> tuple[str, str]:
    link_a = a.transport.dial(a_id, b_id, label)
    incoming = await b.events.next()
    assert isinstance(incoming, IncomingLink)
    assert (incoming.local_id, incoming.remote_id, incoming.label) == (b_id, a_id, label)
    assert await b.events.next() == LinkOpened(incoming.link)
    assert await a.events.next() == LinkOpened(link_a)
    return link_a, incoming.link


def uid(name: str) -> str:
    return f"{name}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
