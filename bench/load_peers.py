"""Simulated PeerJS-wire peers for bench/load_bench.py: one process holds ``--peers`` broker sockets.

Each peer registers (``/peerjs?key&id&token``), sends HEARTBEAT every 5 s, and about once a minute
runs a signaling exchange with its partner as a re-dial would: an OFFER (~1.2 KB of SDP-shaped
text) answered by an ANSWER, plus two CANDIDATE frames each way. ``--reconnect-per-s`` sockets per
second close and register again (the broker sends LEAVE to their contacts). Prints one JSON line
per ``--report-every`` seconds: registered peers, frames sent and received, and the round trip of
OFFER → ANSWER through the broker (p50/p99, ms). Stops on SIGTERM or when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time

import orjson
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

SDP = ("v=0\\r\\no=- 4611731400430051336 2 IN IP4 127.0.0.1\\r\\ns=-\\r\\nt=0 0\\r\\na=group:BUNDLE 0\\r\\n"
       + "a=candidate:842163049 1 udp 1677729535 198.18.64.10 54321 typ host generation 0\\r\\n" * 12)


class Stats:
    def __init__(self) -> None:
        self.registered = 0
        self.sent = 0
        self.received = 0
        self.rtt: list[float] = []
        self.errors = 0
        self.leaves = 0


class Peer(WSListener):
    def __init__(self, stats: Stats, pid: str, partner: str) -> None:
        super().__init__()
        self.stats = stats
        self.pid = pid
        self.partner = partner
        self.tr: WSTransport | None = None
        self.open = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.tr = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.open:
            self.stats.registered -= 1
        self.open = False
        self.tr = None

    def send(self, obj: dict[str, object]) -> None:
        if self.tr is not None and self.open:
            self.tr.send(WSMsgType.TEXT, orjson.dumps(obj))
            self.stats.sent += 1

    def offer(self) -> None:
        self.send({"type": "OFFER", "dst": self.partner, "payload": {
            "sdp": {"type": "offer", "sdp": SDP}, "type": "data", "connectionId": "dc_load",
            "t": time.perf_counter()}})
        for _ in range(2):
            self.candidate()

    def candidate(self) -> None:
        self.send({"type": "CANDIDATE", "dst": self.partner, "payload": {
            "candidate": {"candidate": "candidate:1 1 udp 1 198.18.64.10 5000 typ host", "sdpMid": "0",
                          "sdpMLineIndex": 0}, "type": "data", "connectionId": "dc_load"}})

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not WSMsgType.TEXT:
            return
        msg = orjson.loads(frame.get_payload_as_bytes())
        t = msg.get("type")
        self.stats.received += 1
        if t == "OPEN":
            self.open = True
            self.stats.registered += 1
        elif t == "OFFER":
            self.send({"type": "ANSWER", "dst": msg["src"], "payload": {
                "sdp": {"type": "answer", "sdp": SDP}, "type": "data", "connectionId": "dc_load",
                "t": msg["payload"].get("t")}})
            for _ in range(2):
                self.candidate()
        elif t == "ANSWER":
            sent = msg["payload"].get("t")
            if isinstance(sent, float):
                self.stats.rtt.append(time.perf_counter() - sent)
        elif t == "LEAVE":
            self.stats.leaves += 1
        elif t in ("ERROR", "ID-TAKEN"):
            self.stats.errors += 1


async def connect(url: str, stats: Stats, pid: str, partner: str) -> Peer | None:
    try:
        _, peer = await ws_connect(lambda: Peer(stats, pid, partner),
                                   f"{url}peerjs?key=peerjs&id={pid}&token=t{pid}&version=1.5.5")
    except Exception:
        stats.errors += 1
        return None
    assert isinstance(peer, Peer)
    return peer


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    ap.add_argument("--peers", type=int, required=True)
    ap.add_argument("--prefix", default="ld")
    ap.add_argument("--exchange-every", type=float, default=60.0)
    ap.add_argument("--reconnect-per-s", type=float, default=10.0)
    ap.add_argument("--report-every", type=float, default=5.0)
    args = ap.parse_args()
    stats = Stats()
    rng = random.Random(args.prefix)
    ids = [f"{args.prefix}p{i}" for i in range(args.peers)]
    peers: dict[str, Peer] = {}
    sem = asyncio.Semaphore(200)
    t0 = time.monotonic()

    async def one(i: int) -> None:
        async with sem:
            p = await connect(args.broker, stats, ids[i], ids[i ^ 1] if (i ^ 1) < len(ids) else ids[0])
            if p is not None:
                peers[ids[i]] = p

    await asyncio.gather(*(one(i) for i in range(args.peers)))
    while stats.registered < len(peers) and time.monotonic() - t0 < 120:
        await asyncio.sleep(0.05)
    print(json.dumps({"connected": stats.registered, "connect_s": round(time.monotonic() - t0, 2),
                      "errors": stats.errors}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.readline() else None)

    async def heartbeats() -> None:
        beat = b'{"type":"HEARTBEAT"}'
        order = list(peers.values())
        while not stop.is_set():  # every peer once per 5 s, spread evenly
            start = time.monotonic()
            for k, p in enumerate(order):
                if p.tr is not None and p.open:
                    p.tr.send(WSMsgType.TEXT, beat)
                    stats.sent += 1
                if k % 200 == 0:
                    await asyncio.sleep(max(0.0, start + 5.0 * k / len(order) - time.monotonic()))
            await asyncio.sleep(max(0.0, start + 5.0 - time.monotonic()))

    async def exchanges() -> None:
        order = list(peers.values())
        per_s = len(order) / args.exchange_every
        while not stop.is_set():
            for _ in range(max(1, round(per_s / 10))):
                rng.choice(order).offer()
            await asyncio.sleep(0.1)

    async def churn() -> None:
        while not stop.is_set() and args.reconnect_per_s > 0:
            await asyncio.sleep(1 / args.reconnect_per_s)
            pid = rng.choice(ids)
            old = peers.get(pid)
            if old is not None and old.tr is not None:
                old.tr.disconnect()
            i = ids.index(pid)
            new = await connect(args.broker, stats, pid, ids[i ^ 1] if (i ^ 1) < len(ids) else ids[0])
            if new is not None:
                peers[pid] = new

    async def report() -> None:
        while not stop.is_set():
            await asyncio.sleep(args.report_every)
            rtt = sorted(stats.rtt)
            stats.rtt = []

            def q(x: float, rtt: list[float] = rtt) -> float | None:
                return round(rtt[min(len(rtt) - 1, int(x * len(rtt)))] * 1e3, 1) if rtt else None

            print(json.dumps({"registered": stats.registered, "sent": stats.sent, "received": stats.received,
                              "leaves": stats.leaves, "errors": stats.errors, "exchanges": len(rtt),
                              "rtt_p50_ms": q(0.5), "rtt_p99_ms": q(0.99)}), flush=True)

    tasks = [asyncio.create_task(c()) for c in (heartbeats, exchanges, churn, report)]
    await stop.wait()
    for t in tasks:
        t.cancel()
    for p in peers.values():
        if p.tr is not None:
            p.tr.disconnect()


if __name__ == "__main__":
    uvloop.run(main())
