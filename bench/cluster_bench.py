"""Several nodes on Redis vs one node: ``kibitz serve`` alone, and three ``kibitz serve --redis``
nodes on one ``redis-server``, under the same client load, side by side in one run.

Run: ``.venv/bin/python bench/cluster_bench.py [--quick] [--peers N] [--no-write]``

Each configuration gets N peers (N/2 pairs) from one picows+uvloop client process (the broker
bench's client). For the cluster, pair k's first peer connects to node k mod 3 and its partner to
the same node (a pair that stays on one node) or the next one (a pair that crosses nodes); 0 %,
50 % and 100 % of the pairs cross, so that share of the relayed messages goes through Redis. Then
CANDIDATE-shaped messages (~230 bytes) bounce inside every pair with ``--window`` in flight, and we
measure msgs/s, one-way p50/p99, **server CPU per relayed message** (all node processes, user+sys,
psutil) and **Redis CPU per message**, plus connects/s and the CPU (server, Redis) per connect.
Peers per node at a fixed RSS: the nodes' RSS just before and after the N peers connect gives the
memory per peer, hence how many peers fit in 1 GiB next to the idle process. Writes the
``## Several nodes on Redis`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import uvloop
from broker_bench import Bench, Peer, ServerProc, free_port, pct, publish, raise_fd_limit, start_kibitz_serve
from picows import ws_connect

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Several nodes on Redis"
RSS_BUDGET_MB = 1024.0


@dataclass
class RedisProc:
    proc: subprocess.Popen[bytes]
    port: int
    workdir: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cpu(self) -> float:
        t = psutil.Process(self.proc.pid).cpu_times()
        return float(t.user + t.system)

    def rss_mb(self) -> float:
        return float(psutil.Process(self.proc.pid).memory_info().rss) / 1e6

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis() -> RedisProc:
    port = free_port()
    work = tempfile.mkdtemp(prefix="kbz-bench-redis-")
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(exe):
        raise SystemExit("redis-server is missing: scripts/setup.sh --tests installs Debian's")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", work],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    import socket

    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(8).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    return RedisProc(proc, port, work)


def start_node(redis_url: str | None) -> ServerProc:
    extra = ["--redis", redis_url] if redis_url else []
    return start_kibitz_serve(
        "node", "rate_limit_per_sec = 10000000\nconcurrent_limit = 100000\n", "--host", "127.0.0.1",
        *extra,
    )


async def connect_peers(urls: list[str], tag: str, bench: Bench) -> tuple[list[Peer], float]:
    """Connect peer i to ``urls[i]`` (partners are i ^ 1); returns (peers, seconds)."""
    sem = asyncio.Semaphore(64)
    peers: list[Peer | None] = [None] * len(urls)

    async def one(i: int) -> None:
        pid, partner = f"{tag}p{i}", f"{tag}p{i ^ 1}"
        async with sem:
            url = f"{urls[i]}peerjs?key=peerjs&id={pid}&token=tok{i}&version=1.5.5"
            _, peer = await ws_connect(lambda: Peer(bench, pid, partner), url, max_frame_size=1 << 20)
            assert isinstance(peer, Peer)
            await asyncio.wait_for(peer.opened, 20)
            peers[i] = peer

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(len(urls))))
    return [p for p in peers if p is not None], time.perf_counter() - t0


def cpu_of(nodes: list[ServerProc]) -> float:
    return sum(n.cpu() for n in nodes)


async def run_config(
    nodes: list[ServerProc], rds: RedisProc | None, n: int, cross: float, window: int, seconds: float,
    tag: str,
) -> dict[str, Any]:
    k = len(nodes)
    pairs = n // 2
    crossing = round(cross * pairs)
    urls: list[str] = []
    for p in range(pairs):
        home = nodes[p % k].ws_url
        away = nodes[(p + 1) % k].ws_url if p < crossing and k > 1 else home
        urls += [home, away]
    bench = Bench()
    rss_before = [x.rss_mb() for x in nodes]
    c0, r0 = cpu_of(nodes), rds.cpu() if rds else 0.0
    peers, dt = await connect_peers(urls, tag, bench)
    c1, r1 = cpu_of(nodes), rds.cpu() if rds else 0.0
    res: dict[str, Any] = {
        "connects_per_s": n / dt, "server_us_per_connect": 1e6 * (c1 - c0) / n,
        "redis_us_per_connect": 1e6 * (r1 - r0) / n if rds else None,
        "rss_before_mb": rss_before, "rss_connected_mb": [x.rss_mb() for x in nodes],
    }
    bench.running = True
    for a in peers[0::2]:
        for _ in range(window):
            a.send_one()
    await asyncio.sleep(0.7)
    bench.lat = []
    bench.recording = True
    m0, c0, r0, t0 = bench.received, cpu_of(nodes), rds.cpu() if rds else 0.0, time.perf_counter()
    await asyncio.sleep(seconds)
    m1, c1, r1, t1 = bench.received, cpu_of(nodes), rds.cpu() if rds else 0.0, time.perf_counter()
    bench.recording = bench.running = False
    msgs = max(1, m1 - m0)
    lat = sorted(bench.lat)
    res.update({
        "msgs_per_s": msgs / (t1 - t0), "p50_ms": pct(lat, 0.5) * 1e3, "p99_ms": pct(lat, 0.99) * 1e3,
        "server_us_per_msg": 1e6 * (c1 - c0) / msgs,
        "redis_us_per_msg": 1e6 * (r1 - r0) / msgs if rds else None,
        "redis_cpu_pct": 100 * (r1 - r0) / (t1 - t0) if rds else None,
        "server_cpu_pct": 100 * (c1 - c0) / (t1 - t0),
        "unexpected": dict(bench.other),
    })
    await asyncio.sleep(0.5)
    for p in peers:
        if p.tr is not None:
            p.tr.disconnect()
    await asyncio.sleep(1.0)
    print(f"  {tag}: {json.dumps(res)}", flush=True)
    return res


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    n, w, secs = args.peers, args.window, args.seconds
    out: dict[str, Any] = {"peers": n, "window": w, "seconds": secs}
    one = start_node(None)
    try:
        await asyncio.sleep(0.5)
        idle = one.rss_mb()
        out["one"] = await run_config([one], None, n, 0.0, w, secs, "one")
        out["one"]["idle_rss_mb"] = idle
    finally:
        one.stop()
    for cross in (0.0, 0.5, 1.0):  # a fresh Redis and fresh nodes for each, so RSS starts alike
        key = f"three_{int(cross * 100)}"
        rds = start_redis()
        nodes: list[ServerProc] = []
        try:
            nodes = [start_node(rds.url) for _ in range(3)]
            await asyncio.sleep(1.5)  # every node sees the others
            idle = nodes[0].rss_mb()
            out[key] = await run_config(nodes, rds, n, cross, w, secs, key)
            out[key]["idle_rss_mb"] = idle
            out[key]["redis_rss_mb"] = rds.rss_mb()
        finally:
            for node in nodes:
                node.stop()
            rds.stop()
    return out


def render(r: dict[str, Any], args: argparse.Namespace, load: tuple[float, float, float]) -> str:
    n = r["peers"]
    cols = [("one", "one node"), ("three_0", "3 nodes, 0 % cross"), ("three_50", "3 nodes, 50 % cross"),
            ("three_100", "3 nodes, 100 % cross")]
    lines = [
        SECTION,
        "",
        f"`bench/cluster_bench.py{' --quick' if args.quick else ''}` on {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}; load average at start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}. "
        f"One client process (the broker bench's picows+uvloop client) drives {n} peers ({n // 2} pairs) "
        f"with {r['window']} messages in flight per pair for {r['seconds']:g} s after a 0.7 s warm-up, "
        "against one `kibitz serve`, then against three `kibitz serve --redis` nodes on one "
        "`redis-server` (7.0, no persistence) with 0 %, 50 % and 100 % of the pairs split across two "
        "nodes. Everything shares this 2-core box (client, nodes, Redis), so msgs/s and connects/s are "
        "bound by it; the costs per message and per connect are the comparable figures. Server CPU is "
        "all node processes together; Redis CPU is the redis-server process.",
        "",
        "| metric | " + " | ".join(label for _, label in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]

    def row(label: str, key: str, fmt: str) -> None:
        vals = []
        for c, _ in cols:
            v = r[c].get(key)
            vals.append("–" if v is None else format(v, fmt))
        lines.append(f"| {label} | " + " | ".join(vals) + " |")

    row("relayed msgs/s", "msgs_per_s", ".0f")
    row("one-way p50 ms", "p50_ms", ".2f")
    row("one-way p99 ms", "p99_ms", ".2f")
    row("**server CPU-µs / msg** (all nodes)", "server_us_per_msg", ".2f")
    row("**Redis CPU-µs / msg**", "redis_us_per_msg", ".2f")
    row("Redis CPU %", "redis_cpu_pct", ".0f")
    row("connects/s", "connects_per_s", ".0f")
    row("server CPU-µs / connect", "server_us_per_connect", ".0f")
    row("Redis CPU-µs / connect", "redis_us_per_connect", ".0f")
    per_peer = {}
    for c, _ in cols:
        peers_on_node0 = n  # all nodes together hold the n peers
        grown = sum(r[c]["rss_connected_mb"]) - sum(r[c]["rss_before_mb"])
        per_peer[c] = max(grown, 0.001) / peers_on_node0
    lines.append(
        "| node RSS idle → with its peers, MB (first node) | "
        + " | ".join(f"{r[c]['rss_before_mb'][0]:.0f} → {r[c]['rss_connected_mb'][0]:.0f}" for c, _ in cols)
        + " |"
    )
    lines.append(
        f"| **peers per node in {RSS_BUDGET_MB:.0f} MB RSS** | "
        + " | ".join(
            f"{(RSS_BUDGET_MB - r[c]['idle_rss_mb']) / per_peer[c]:,.0f} ({1e3 * per_peer[c]:.0f} kB/peer)"
            for c, _ in cols
        )
        + " |"
    )
    lines.append("")
    lines.append(f"Redis RSS with {n} ids held: {r['three_100']['redis_rss_mb']:.0f} MB.")
    odd = {c: r[c]["unexpected"] for c, _ in cols if r[c]["unexpected"]}
    if odd:
        lines.append(f"\nUnexpected frames seen by the client: `{odd}`")
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="300 peers, 2 s windows")
    ap.add_argument("--peers", type=int, default=None)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    ap.add_argument("--json", help="also write raw results to this file")
    args = ap.parse_args()
    args.peers = args.peers or (300 if args.quick else 1200)
    args.seconds = args.seconds or (2.0 if args.quick else 4.0)
    raise_fd_limit()
    load = os.getloadavg()
    results = uvloop.run(main_async(args))
    publish(args, SECTION, render(results, args, load), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
