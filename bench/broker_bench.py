"""Signaling broker benchmark: the npm reference ``peer@1.0.2`` vs ``kibitz serve``, same load.

Run: ``.venv/bin/python bench/broker_bench.py [--quick] [--window-seconds 3] [--no-write]``

For each server (own process, own process group, killed afterwards) and each N in 200/1000/2000
peers (N/2 pairs): connect all N (connects/s, p99 handshake->OPEN), then relay CANDIDATE-shaped
messages (~230 bytes) between partners with 1 and with 16 messages in flight per pair (each
received message is answered to its sender) and measure msgs/s, one-way p50/p99 latency, server
CPU time per relayed message (psutil, process + children) and server RSS. One Python client
(picows + uvloop) drives both; on a 2-core box the client saturates first, which is why CPU-µs per
message is the headline. Writes a table into the ``## Signaling broker`` section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
import uvloop
from bench_docs import replace_section
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Signaling broker"
PAYLOAD_TMPL = (
    b'{"type":"CANDIDATE","payload":{"t":%.9f,"candidate":{"candidate":"candidate:842163049 1 udp '
    b'1677729535 192.0.2.10 54321 typ srflx raddr 0.0.0.0 rport 0 generation 0","sdpMid":"0",'
    b'"sdpMLineIndex":0},"type":"data","connectionId":"dc_bench0001"},"dst":"%s"}'
)


# ---------------------------------------------------------------------------------------------
# client
# ---------------------------------------------------------------------------------------------
class Peer(WSListener):
    def __init__(self, bench: Bench, pid: str, partner: str) -> None:
        super().__init__()
        self.bench = bench
        self.pid = pid
        self.partner = partner.encode()
        self.tr: WSTransport | None = None
        self.opened: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.tr = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before OPEN"))

    def send_one(self) -> None:
        assert self.tr is not None
        self.tr.send(WSMsgType.TEXT, PAYLOAD_TMPL % (time.perf_counter(), self.partner))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not WSMsgType.TEXT:
            return
        msg = orjson.loads(frame.get_payload_as_memoryview())
        t = msg.get("type")
        b = self.bench
        if t == "CANDIDATE":
            now = time.perf_counter()
            b.received += 1
            if b.recording:
                b.lat.append(now - msg["payload"]["t"])
            if b.running:
                transport.send(WSMsgType.TEXT, PAYLOAD_TMPL % (now, self.partner))
        elif t == "OPEN":
            if not self.opened.done():
                self.opened.set_result(time.perf_counter())
        else:
            b.other[str(t)] = b.other.get(str(t), 0) + 1


@dataclass
class Bench:
    received: int = 0
    running: bool = False
    recording: bool = False
    lat: list[float] = field(default_factory=list)
    other: dict[str, int] = field(default_factory=dict)


def pct(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, int(q * len(sorted_vals)))]


# ---------------------------------------------------------------------------------------------
# server processes
# ---------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProc:
    name: str
    proc: subprocess.Popen[bytes]
    ws_url: str

    def cpu(self) -> float:
        user, system = self.cpu_split()
        return user + system

    def cpu_split(self) -> tuple[float, float]:
        p = psutil.Process(self.proc.pid)
        user = system = 0.0
        for q in [p, *p.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = q.cpu_times()
                user += t.user
                system += t.system
        return user, system

    def rss_mb(self) -> float:
        p = psutil.Process(self.proc.pid)
        total = 0
        for q in [p, *p.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += q.memory_info().rss
        return total / 1e6

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def start_reference() -> ServerProc:
    port = free_port()
    proc = subprocess.Popen(
        [str(ROOT / "node_modules/.bin/peerjs"), "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=ROOT,
    )
    wait_http(f"http://127.0.0.1:{port}/")
    return ServerProc("peer@1.0.2 (node)", proc, f"ws://127.0.0.1:{port}/")


def start_kibitz() -> ServerProc:
    # The reference has no per-connection rate limit; ours (default 1000 frames/s) would drop part
    # of this synthetic load, so the benchmark lifts it to compare the same work.
    return start_kibitz_serve("kibitz serve", "rate_limit_per_sec = 10000000\n")


def start_kibitz_serve(name: str, config: str, *args: str) -> ServerProc:
    """``kibitz serve`` on free ports with this TOML ``config`` (and extra ``args``), in its own
    process group, once it has printed KIBITZ_READY."""
    cfg = Path(tempfile.mkdtemp()) / "bench.toml"
    cfg.write_text(config)
    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/kibitz"), "serve", *args, "--port", "0", "--broker-port", "0",
         "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    m = re.match(r"KIBITZ_READY (\S+) broker=(\S+)", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"kibitz serve did not start: {line!r}")
    # Keep reading what it prints: closing the pipe would kill it on its next line (its banner
    # goes on after KIBITZ_READY; closing here killed about one start in three).
    threading.Thread(target=lambda: [None for _ in proc.stdout or []], daemon=True).start()
    return ServerProc(name, proc, m.group(2))


def raise_fd_limit() -> None:
    """Thousands of sockets in one process: the soft open-files limit up to the hard one."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def publish(args: argparse.Namespace, section: str, text: str, results: dict[str, Any]) -> None:
    """Print the section, write the raw results to ``--json`` if given, and the section into
    docs/benchmarks.md unless ``--no-write``."""
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if not args.no_write:
        replace_section(section, text)


# ---------------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------------
async def connect_all(
    server: ServerProc, n: int, tag: str, bench: Bench
) -> tuple[list[Peer], dict[str, float]]:
    sem = asyncio.Semaphore(64)
    peers: list[Peer] = []
    lat: list[float] = []
    cpu0 = server.cpu()

    async def one(i: int) -> None:
        pid = f"{tag}p{i}"
        partner = f"{tag}p{i ^ 1}"
        async with sem:
            t0 = time.perf_counter()
            url = f"{server.ws_url}peerjs?key=peerjs&id={pid}&token=tok{i}&version=1.5.5"
            _, peer = await ws_connect(lambda: Peer(bench, pid, partner), url, max_frame_size=1 << 20)
            assert isinstance(peer, Peer)
            t1 = await asyncio.wait_for(peer.opened, 10)
            lat.append(t1 - t0)
            peers.append(peer)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    dt = time.perf_counter() - t0
    cpu = server.cpu() - cpu0
    lat.sort()
    peers.sort(key=lambda p: int(p.pid.split("p")[-1]))
    return peers, {
        "connects_per_s": n / dt, "connect_p99_ms": pct(lat, 0.99) * 1e3, "connect_cpu_ms": cpu * 1e3,
    }


async def relay_window(
    server: ServerProc, peers: list[Peer], bench: Bench, window: int, seconds: float
) -> dict[str, float]:
    bench.running = True
    bench.recording = False
    for a in peers[0::2]:
        for _ in range(window):
            a.send_one()
    await asyncio.sleep(0.5)  # warm-up
    bench.lat = []
    bench.recording = True
    r0, (u0, s0), t0 = bench.received, server.cpu_split(), time.perf_counter()
    await asyncio.sleep(seconds)
    r1, (u1, s1), t1 = bench.received, server.cpu_split(), time.perf_counter()
    c0, c1 = u0 + s0, u1 + s1
    rss = server.rss_mb()
    bench.recording = False
    bench.running = False
    await asyncio.sleep(0.4)  # drain in-flight messages
    msgs = r1 - r0
    lat = sorted(bench.lat)
    return {
        "msgs_per_s": msgs / (t1 - t0),
        "p50_ms": pct(lat, 0.5) * 1e3,
        "p99_ms": pct(lat, 0.99) * 1e3,
        "cpu_pct": 100 * (c1 - c0) / (t1 - t0),
        "cpu_us_per_msg": 1e6 * (c1 - c0) / max(1, msgs),
        "user_us_per_msg": 1e6 * (u1 - u0) / max(1, msgs),
        "sys_us_per_msg": 1e6 * (s1 - s0) / max(1, msgs),
        "rss_mb": rss,
    }


async def run_server(server: ServerProc, sizes: list[int], seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"name": server.name, "idle_rss_mb": server.rss_mb(), "rounds": {}}
    for rnd, n in enumerate(sizes):
        bench = Bench()
        peers, conn = await connect_all(server, n, f"r{rnd}n{n}x", bench)
        res: dict[str, Any] = dict(conn)
        res["rss_connected_mb"] = server.rss_mb()
        for window in (1, 16):
            res[f"w{window}"] = await relay_window(server, peers, bench, window, seconds)
        res["unexpected"] = dict(bench.other)
        for p in peers:
            if p.tr is not None:
                p.tr.disconnect()
        await asyncio.sleep(0.8)
        out["rounds"][str(n)] = res
        print(f"  {server.name} N={n}: {json.dumps(res)}", flush=True)
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [200] if args.quick else [200, 1000, 2000]
    results: dict[str, Any] = {}
    for key, starter in (("reference", start_reference), ("kibitz", start_kibitz)):
        server = starter()
        try:
            await asyncio.sleep(0.3)
            print(f"{server.name}: {server.ws_url}", flush=True)
            results[key] = await run_server(server, sizes, args.window_seconds)
        finally:
            server.stop()
    return results


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    ref, kib = results["reference"], results["kibitz"]
    cpu = platform.processor() or platform.machine()
    lines = [
        SECTION,
        "",
        f"`bench/broker_bench.py{' --quick' if args.quick else ''}` on {os.cpu_count()} cores ({cpu}), "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}. One picows+uvloop client "
        f"process drives each server in turn; measurement windows {args.window_seconds:g} s after 0.5 s "
        "warm-up; messages are ~230-byte CANDIDATE frames; one-way latency; CPU = server process "
        "user+sys time. The client saturates one core first, so msgs/s and connects/s are mostly "
        "client-bound for both; **server CPU-µs per relayed message** (and per connect) is the "
        "comparable cost. kibitz runs with its per-connection rate limit lifted (the reference has "
        "none). The box is shared and 2-core: expect ±30 % run-to-run noise; the load average at "
        f"start was {os.getloadavg()[0]:.1f}.",
        "",
        "| N peers | metric | peer@1.0.2 (node) | kibitz serve | kibitz / ref |",
        "|---|---|---|---|---|",
    ]

    def row(n: str, label: str, a: float, b: float, fmt: str, better_low: bool) -> None:
        ratio = b / a if a else float("nan")
        lines.append(f"| {n} | {label} | {a:{fmt}} | {b:{fmt}} | {ratio:.2f}× |")

    for n in ref["rounds"]:
        r, k = ref["rounds"][n], kib["rounds"][n]
        row(n, "connects/s", r["connects_per_s"], k["connects_per_s"], ".0f", False)
        row(n, "connect p99 ms", r["connect_p99_ms"], k["connect_p99_ms"], ".1f", True)
        row(
            n, "server CPU-µs / connect", 1e3 * r["connect_cpu_ms"] / int(n),
            1e3 * k["connect_cpu_ms"] / int(n), ".0f", True,
        )
        for w in ("w1", "w16"):
            win = w[1:]
            row(n, f"window {win}: msgs/s", r[w]["msgs_per_s"], k[w]["msgs_per_s"], ".0f", False)
            lines.append(
                f"| {n} | window {win}: p50 / p99 ms | {r[w]['p50_ms']:.2f} / {r[w]['p99_ms']:.2f} "
                f"| {k[w]['p50_ms']:.2f} / {k[w]['p99_ms']:.2f} | |"
            )
            row(n, f"window {win}: server CPU %", r[w]["cpu_pct"], k[w]["cpu_pct"], ".0f", True)
            row(
                n, f"**window {win}: CPU-µs / msg**", r[w]["cpu_us_per_msg"], k[w]["cpu_us_per_msg"],
                ".2f", True,
            )
            lines.append(
                f"| {n} | window {win}: user / sys µs per msg | {r[w]['user_us_per_msg']:.2f} / "
                f"{r[w]['sys_us_per_msg']:.2f} | {k[w]['user_us_per_msg']:.2f} / "
                f"{k[w]['sys_us_per_msg']:.2f} | |"
            )
        row(n, "RSS MB after load", r["w16"]["rss_mb"], k["w16"]["rss_mb"], ".1f", True)
    lines.append(
        f"| – | idle RSS MB | {ref['idle_rss_mb']:.1f} | {kib['idle_rss_mb']:.1f} | "
        f"{kib['idle_rss_mb'] / ref['idle_rss_mb']:.2f}× |"
    )
    lines.append("")
    lines.append("Targets (issue 3): CPU-µs/msg ≤ 0.5× reference, connects/s ≥ reference, RSS ≤ reference.")
    verdicts = []
    for n in ref["rounds"]:
        r, k = ref["rounds"][n], kib["rounds"][n]
        cpu_ok = all(k[w]["cpu_us_per_msg"] <= 0.5 * r[w]["cpu_us_per_msg"] for w in ("w1", "w16"))
        conn_ok = k["connects_per_s"] >= r["connects_per_s"]
        rss_ok = k["w16"]["rss_mb"] <= r["w16"]["rss_mb"]
        verdicts.append(
            f"- N={n}: CPU/msg ≤ 0.5× {'met' if cpu_ok else '**not met**'} "
            f"(w1 {k['w1']['cpu_us_per_msg'] / r['w1']['cpu_us_per_msg']:.2f}×, "
            f"w16 {k['w16']['cpu_us_per_msg'] / r['w16']['cpu_us_per_msg']:.2f}×); "
            f"connect rate {'met' if conn_ok else '**not met**'}; RSS {'met' if rss_ok else '**not met**'}."
        )
    lines += verdicts
    unexpected = {k: v["rounds"][n]["unexpected"] for k, v in results.items() for n in v["rounds"]}
    if any(unexpected.values()):
        lines.append(f"\nUnexpected frames seen by the client: `{unexpected}`")
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="200 peers only, 2 s windows")
    ap.add_argument("--window-seconds", type=float, default=None)
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    ap.add_argument("--json", help="also write raw results to this file")
    args = ap.parse_args()
    if args.window_seconds is None:
        args.window_seconds = 2.0 if args.quick else 3.0
    raise_fd_limit()
    results = uvloop.run(main_async(args))
    publish(args, SECTION, render(results, args), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
