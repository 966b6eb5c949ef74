"""LAN hub benchmark: what one ``kibitz hub`` process holds, what a signaling message costs it, and
how long a join takes through it against ``kibitz serve``.

Everything on 127.0.0.1, the hub and ``kibitz serve`` as their own processes (their CPU time and
RSS read with psutil), the clients in this process on real aiortc:

* **held**: N members connect, each as a page does (one WebRTC connection to the hub: ICE-lite,
  DTLS, SCTP; two identity channels, presence and media, heartbeating every 5 s). Hub RSS and
  CPU while they idle; members and rooms (of 4) per GiB from the RSS per member;
* **CPU per message**: pairs of identities relay CANDIDATE-sized frames (~300 B) through the hub in
  windows of 32, and the same frames through ``kibitz serve``'s broker over WebSockets: server
  CPU time / messages relayed;
* **join**: a member joins a room that has one member (the coordinator, broadcasting every 50 ms),
  from ``Session.start`` to its first message received over the new peer-to-peer data link
  (claim, roster, link), through the hub (a fresh connection to the hub each time: the page's
  first join) and through ``kibitz serve``, alternating.

Run: ``.venv/bin/python bench/hub_bench.py`` (``--quick``: fewer members and runs; ``--no-write``).
Writes the ``## LAN hub`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bench_docs import DOC, machine, replace_section  # noqa: E402
from server_fixture import running_kibitz_server  # noqa: E402

from kibitz.backends.aio import AioPeerConnectionFactory, make_aio_transport  # noqa: E402
from kibitz.backends.hub_signaling import HubConnector, HubSocket  # noqa: E402
from kibitz.clock import AsyncioScheduler  # noqa: E402
from kibitz.galaxy import Galaxy, parse_galaxy  # noqa: E402
from kibitz.session import Session  # noqa: E402

SECTION = "## LAN hub"
KIBITZ = ROOT / ".venv" / "bin" / "kibitz"
PAYLOAD = {
    "candidate": {"candidate": "candidate:1 1 udp 2130706431 198.18.96.11 50000 typ host generation 0 "
                  "ufrag abcd network-id 1" + " " * 120, "sdpMid": "0", "sdpMLineIndex": 0},
    "type": "data", "connectionId": "dc_0123456789ab",
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


@dataclass
class Hub:
    proc: subprocess.Popen[str]
    galaxy: Galaxy

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)


@contextlib.contextmanager
def running_hub() -> Iterator[Hub]:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [str(KIBITZ), "hub", "--host", "127.0.0.1", "--udp-port", "0", "--no-http",
             "--address", "127.0.0.1", "--state-dir", tmp],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        )
        try:
            assert proc.stdout is not None
            value = ""
            for line in proc.stdout:
                if line.startswith("KIBITZ_GALAXY="):
                    value = line.strip().split("=", 1)[1]
                if line.startswith("KIBITZ_HUB_READY"):
                    break
            yield Hub(proc, parse_galaxy(value))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def cpu_s(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


# ------------------------------------------------------------------------------------ held


class Member:
    """One page's worth of hub use: one connection, two identities, heartbeats."""

    def __init__(self, galaxy: Galaxy, n: int) -> None:
        factory = AioPeerConnectionFactory(loopback_only=True)
        self.connector = HubConnector(factory, galaxy, open_timeout_s=30)
        self.ids = [f"bench-{os.getpid()}-{n}-p", f"bench-{os.getpid()}-{n}-m"]
        self.sockets: list[HubSocket] = []
        self.inbox: list[str] = []

    async def connect(self) -> None:
        for peer_id in self.ids:
            url = f"hub://galaxy/peerjs?key=peerjs&id={peer_id}&token=t{peer_id}"
            sock = await self.connector(url, self.inbox.append, lambda reason: None)
            self.sockets.append(sock)

    def heartbeat(self) -> None:
        for s in self.sockets:
            s.send('{"type":"HEARTBEAT"}')

    async def close(self) -> None:
        await self.connector.aclose()


async def held(galaxy: Galaxy, hub: Hub, members: int) -> dict[str, float]:
    ps = hub.ps
    rss0 = ps.memory_info().rss
    out: list[Member] = []
    started = time.perf_counter()
    for i in range(members):
        m = Member(galaxy, i)
        await m.connect()
        out.append(m)
    connect_s = time.perf_counter() - started
    await asyncio.sleep(2)
    rss1 = ps.memory_info().rss
    cpu0, t0 = cpu_s(ps), time.perf_counter()
    for _ in range(2):  # 10 s of idle: consent checks and 5 s heartbeats
        for m in out:
            m.heartbeat()
        await asyncio.sleep(5)
    idle_cpu = (cpu_s(ps) - cpu0) / (time.perf_counter() - t0)
    ok = all(len(m.sockets) == 2 and m.inbox[:1] == ['{"type":"OPEN"}'] for m in out)
    await asyncio.gather(*(m.close() for m in out))
    per_member = (rss1 - rss0) / members
    return {"members": members, "ok": float(ok), "connect_s": connect_s, "rss0_mb": rss0 / 2**20,
            "rss1_mb": rss1 / 2**20, "per_member_kb": per_member / 1024, "idle_cpu_pct": idle_cpu * 100,
            "members_per_gib": (2**30 - rss0) / per_member if per_member > 0 else 0.0}


# ----------------------------------------------------------------------------- CPU per message


async def relay(
    send: list[Any], inbox: list[list[str]], dsts: list[str], messages: int, window: int
) -> float:
    """Pairs i: send[i] -> dsts[i]; waits for each window to arrive. Returns seconds."""
    body = [json.dumps({"type": "CANDIDATE", "dst": d, "payload": PAYLOAD}, separators=(",", ":"))
            for d in dsts]
    started = time.perf_counter()
    sent = 0
    while sent < messages:
        base = [len(b) for b in inbox]
        for _ in range(window):
            for i, s in enumerate(send):
                s(body[i])
        sent += window * len(send)
        deadline = time.monotonic() + 30
        while any(len(b) - n < window for b, n in zip(inbox, base, strict=True)):
            if time.monotonic() > deadline:
                raise RuntimeError("relay stalled")
            await asyncio.sleep(0.001)
    return time.perf_counter() - started


async def hub_per_message(hub: Hub, pairs: int, messages: int) -> dict[str, float]:
    senders, receivers = [Member(hub.galaxy, 1000 + i) for i in range(pairs)], [
        Member(hub.galaxy, 2000 + i) for i in range(pairs)]
    for m in senders + receivers:
        await m.connect()
    inbox = [r.inbox for r in receivers]
    send = [s.sockets[0].send for s in senders]
    dsts = [r.ids[0] for r in receivers]
    await relay(send, inbox, dsts, 64 * pairs, 32)  # warm-up
    ps = hub.ps
    cpu0 = cpu_s(ps)
    secs = await relay(send, inbox, dsts, messages, 32)
    cpu = cpu_s(ps) - cpu0
    await asyncio.gather(*(m.close() for m in senders + receivers))
    return {"us_per_msg": cpu / messages * 1e6, "msgs_per_s": messages / secs}


async def broker_per_message(broker: str, pid: int, pairs: int, messages: int) -> dict[str, float]:
    from websockets.asyncio.client import connect

    socks = []
    inbox: list[list[str]] = [[] for _ in range(pairs)]
    tag = f"bb{os.getpid()}"
    for i in range(pairs):
        for side in ("s", "r"):
            url = f"{broker}peerjs?key=peerjs&id={tag}-{side}{i}&token=t{i}"
            socks.append((side, i, await connect(url, compression=None, max_size=1 << 20)))

    async def reader(i: int, ws: Any) -> None:
        async for msg in ws:
            inbox[i].append(msg)

    tasks = [asyncio.create_task(reader(i, ws)) for side, i, ws in socks if side == "r"]
    for side, _, ws in socks:
        if side == "s":
            await ws.recv()  # OPEN
    senders = [ws for side, _, ws in socks if side == "s"]
    await asyncio.sleep(0.2)
    for b in inbox:
        b.clear()

    def sender(ws: Any) -> Any:
        return lambda text: asyncio.ensure_future(ws.send(text))

    send = [sender(ws) for ws in senders]
    dsts = [f"{tag}-r{i}" for i in range(pairs)]
    await relay(send, inbox, dsts, 64 * pairs, 32)
    ps = psutil.Process(pid)
    cpu0 = cpu_s(ps)
    secs = await relay(send, inbox, dsts, messages, 32)
    cpu = cpu_s(ps) - cpu0
    for t in tasks:
        t.cancel()
    for _, _, ws in socks:
        await ws.close()
    return {"us_per_msg": cpu / messages * 1e6, "msgs_per_s": messages / secs}


# ------------------------------------------------------------------------------------ join


@contextlib.asynccontextmanager
async def resident(room: str, **transport: Any) -> AsyncIterator[Session]:
    t = make_aio_transport(transport.pop("broker", "ws://unused/"), loopback_only=True, **transport)
    s = Session(room, transport=t, scheduler=AsyncioScheduler(asyncio.get_running_loop()), name="Res")
    s.start()
    s.join()
    while not s.get_state()["isCoordinator"]:
        await asyncio.sleep(0.02)

    async def talk() -> None:
        while True:
            s.broadcast({"tick": time.time()})
            await asyncio.sleep(0.05)

    task = asyncio.create_task(talk())
    try:
        yield s
    finally:
        task.cancel()
        s.close()
        await t.shutdown()


async def one_join(room: str, **transport: Any) -> float:
    started = time.perf_counter()
    t = make_aio_transport(transport.pop("broker", "ws://unused/"), loopback_only=True, **transport)
    s = Session(room, transport=t, scheduler=AsyncioScheduler(asyncio.get_running_loop()), name="Joiner")
    got = asyncio.Event()
    s.on_message(lambda data, frm: got.set())
    s.start()
    s.join()
    try:
        await asyncio.wait_for(got.wait(), 30)
        return time.perf_counter() - started
    finally:
        s.close()
        await t.shutdown()


async def joins(hub: Hub, broker: str, key: str, runs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"hub": [], "serve": []}
    room_h, room_s = f"room-hb-{os.getpid()}", f"room-sv-{os.getpid()}"
    async with resident(room_h, galaxy=hub.galaxy) as rh, resident(room_s, broker=broker, key=key) as rs:
        await one_join(room_h, galaxy=hub.galaxy)  # warm-up, not counted
        await one_join(room_s, broker=broker, key=key)
        for i in range(runs):
            for name, room, res, kw in (("hub", room_h, rh, {"galaxy": hub.galaxy}),
                                        ("serve", room_s, rs, {"broker": broker, "key": key})):
                while len(res.get_participants()) > 1:
                    await asyncio.sleep(0.02)
                out[name].append(await one_join(room, **kw))
            print(f"join {i + 1:2d}: hub {out['hub'][-1] * 1000:5.0f} ms  "
                  f"serve {out['serve'][-1] * 1000:5.0f} ms", flush=True)
    return out


# ------------------------------------------------------------------------------------ main


QUICK_NOTE = ("A `--quick` run (few members, few joins, a shared machine under load): the per-member and "
              "per-GiB figures are extrapolated from few members and the joins are a handful; run without "
              "`--quick` for the full figures.")


def write(text: str, head: str, quick: bool = False) -> None:
    body = (
        f"{SECTION}\n\n{head}; {time.strftime('%Y-%m-%d')}.\n\n"
        "`bench/hub_bench.py`: `kibitz hub` and `kibitz serve` as their own processes on 127.0.0.1 (CPU "
        "time and RSS read with psutil), the clients in the bench process on real aiortc. A member holds "
        "what a page holds at the hub: one WebRTC connection (ICE-lite, DTLS, SCTP) with two identity "
        "channels heartbeating every 5 s. Per message: CANDIDATE-sized frames (~300 B) relayed between "
        "pairs of identities in windows of 32, the same frames through `kibitz serve`'s broker over "
        "WebSockets in the same run. Join: `Session.start` to the first message over the new data link "
        "in a room with one member, through the hub (a fresh hub connection each time, as a page's first "
        "join) and through `kibitz serve`, alternating. The clients (aiortc in Python) are the "
        "bottleneck when connecting many members; the hub's own cost is what is reported.\n\n"
        f"{text}\n" + (f"\n{QUICK_NOTE}\n" if quick else "")
    )
    replace_section(SECTION, body)


async def run(args: argparse.Namespace) -> str:
    lines: list[str] = []
    with running_hub() as hub, running_kibitz_server() as srv:
        h = await held(hub.galaxy, hub, args.members)
        print(h, flush=True)
        hm = await hub_per_message(hub, args.pairs, args.messages)
        bm = await broker_per_message(srv.broker, srv.pid, args.pairs, args.messages)
        print(hm, bm, flush=True)
        j = await joins(hub, srv.broker, srv.key, args.runs)
    lines += [
        "| held | value |", "|---|---:|",
        f"| members connected (all got OPEN on both identities) | {h['members']:.0f} "
        f"({'yes' if h['ok'] else 'NO'}) |",
        f"| time to connect them one after another | {h['connect_s']:.1f} s |",
        f"| hub RSS idle → with them | {h['rss0_mb']:.0f} → {h['rss1_mb']:.0f} MB |",
        f"| RSS per member | {h['per_member_kb']:.0f} KiB |",
        f"| hub CPU while they idle (consent checks, heartbeats) | {h['idle_cpu_pct']:.1f} % of a core |",
        f"| members (rooms of 4) in 1 GiB of RSS | {h['members_per_gib']:.0f} "
        f"({h['members_per_gib'] / 4:.0f}) |",
        "",
        "| per signaling message | server CPU | relayed/s (clients in one process) |", "|---|---:|---:|",
        f"| `kibitz hub` (DTLS + SCTP data channels) | {hm['us_per_msg']:.0f} µs | "
        f"{hm['msgs_per_s']:.0f} |",
        f"| `kibitz serve` broker (WebSocket) | {bm['us_per_msg']:.1f} µs | {bm['msgs_per_s']:.0f} |",
        "",
        "| join → first message over the link | p50 | p95 | max | runs |", "|---|---:|---:|---:|---:|",
    ]
    for name, label in (("hub", "through `kibitz hub` (new hub connection)"),
                        ("serve", "through `kibitz serve`")):
        v = j[name]
        lines.append(f"| {label} | {statistics.median(v) * 1000:.0f} ms | {pct(v, 95) * 1000:.0f} ms | "
                     f"{max(v) * 1000:.0f} ms | {len(v)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="10 members, 2000 messages, 3 joins")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if args.quick:
        args.members, args.pairs, args.messages, args.runs = 10, 4, 2048, 3
    head = (f"{machine()}; run: {args.members} members, {args.pairs} pairs x {args.messages} messages, "
            f"{args.runs} joins each way{' (--quick)' if args.quick else ''}")
    print(head, flush=True)
    text = asyncio.run(run(args))
    print(text)
    if not args.no_write:
        write(text, head, args.quick)
        print(f"wrote the '{SECTION}' section of {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
