"""Load on one broker (issue 19): thousands of simulated PeerJS-wire peers (bench/load_peers.py:
registrations, heartbeats, offer/answer/candidate exchanges, reconnects) on one ``kibitz serve``
while a real browser call runs on it. Reports the call's signaling latency (a tab joining the
running call until it is linked with everyone, without and with the load; the simulated peers'
own OFFER → ANSWER round trip through the broker) and the broker's RSS and CPU. Rewrites the
``## Measured: load on one broker`` section of docs/reliability.md.

Run (root: namespaces): ``.venv/bin/python bench/load_bench.py [--quick] [--peers 19900]``
``--quick``: 2000 peers, 30 s of traffic, nothing written.

Every process on this machine may hold at most 20 000 open files (hard limit, not raisable without
CAP_SYS_RESOURCE), and the broker needs a few beyond its sockets, so the full run simulates 19 900.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

import fault_scenarios as fs  # noqa: E402
import psutil  # noqa: E402
from bench_docs import machine, replace_section  # noqa: E402
from lab_tabs import LabBrowser, LabTab, check_stream, pump, ready  # noqa: E402
from netlab import PYTHON, LabServer, NetLab, lab_available, wait_until  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

DOC = ROOT / "docs" / "reliability.md"
SECTION = "## Measured: load on one broker"
RAW = ROOT / "docs" / "reliability-load.json"


class LoadProc:
    """One bench/load_peers.py process in the load host's namespace; its JSON lines collected."""

    def __init__(self, lab: NetLab, host: Any, broker: str, peers: int, prefix: str) -> None:
        self.lines: list[dict[str, Any]] = []
        self.proc = host.popen(
            [str(PYTHON), str(ROOT / "bench/load_peers.py"), "--broker", broker, "--peers", str(peers),
             "--prefix", prefix],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=(lab.tmp / f"{prefix}.log").open("w"),
            text=True,
        )
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, out: IO[str]) -> None:
        for line in out:
            self.lines.append(json.loads(line))

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def cpu_s(pid: int) -> float:
    p = psutil.Process(pid)
    total = 0.0
    for q in [p, *p.children(recursive=True)]:
        t = q.cpu_times()
        total += t.user + t.system
    return total


def join_time(browser: LabBrowser, server: LabServer, room: str, call: list[LabTab], name: str) -> float:
    """Seconds from opening a tab that joins the running call to it and the call linked both ways
    (the engine's boot excluded: timed from join())."""
    tab = browser.open(server, room, name)
    try:
        tab.page.wait_for_function("() => window.call", timeout=120_000)
        tab.js("() => window.call.ready")
        t0 = time.monotonic()
        tab.js("() => window.call.join()")
        tab.id = str(tab.js("() => window.call.getState().self"))
        ids = {t.id for t in call} | {tab.id}

        def linked() -> bool:
            return all(set(t.links_up()) == ids and all(t.links_up().values()) for t in [*call, tab])

        wait_until(linked, 120, f"{name} linked", interval=0.05, sleep=lambda s: pump(call, s))
        return round(time.monotonic() - t0, 2)
    finally:
        tab.js("() => window.call.leave()")
        tab.ctx.close()
        browser.tabs.remove(tab)
        wait_until(lambda: all(len(t.links_up()) == len(call) for t in call), 60, "the joiner gone",
                   sleep=lambda s: pump(call, s))


def run(args: argparse.Namespace) -> dict[str, Any]:
    peers = 2000 if args.quick else args.peers
    traffic = 30.0 if args.quick else args.seconds
    joins = 2 if args.quick else 3
    r: dict[str, Any] = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M"), "peers": peers,
                         "seconds": traffic,
                         "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)}
    outside: list[str] = []
    room = "room-load-" + secrets.token_hex(5)
    with NetLab() as lab, sync_playwright() as pw:
        srv_host = lab.add_host("srv", server=True)
        a, load_host = lab.add_host("a"), lab.add_host("l")
        cfg = lab.tmp / "serve.toml"
        cfg.write_text("concurrent_limit = 25000\nqueue_total = 100000\n")
        server = LabServer(srv_host, args=["--config", str(cfg)])
        server.start()
        browser = LabBrowser(pw, lab, a, outside)
        gens: list[LoadProc] = []
        try:
            first = browser.open(server, room, "ann")
            ready([first])
            first.page.wait_for_function("() => window.call.getState().isCoordinator", timeout=60_000)
            call = [first, browser.open(server, room, "bob")]
            ready(call[1:])
            ids = {t.id for t in call}
            wait_until(lambda: all(set(t.links_up()) == ids and all(t.links_up().values()) for t in call),
                       60, "the call", sleep=lambda s: pump(call, s))
            assert server.proc is not None
            pid = server.proc.pid
            r["rss_idle_mb"] = round(server.rss_kb() / 1024, 1)
            r["join_idle_s"] = [join_time(browser, server, room, call, f"j{i}") for i in range(joins)]
            print("idle", r, flush=True)
            # The call streams throughout: its messages must still arrive once and in order.
            for t in call:
                t.start_stream(1, fs.RATE, sorted(ids - {t.id}))
            t0 = time.monotonic()
            half = peers // 2
            gens = [LoadProc(lab, load_host, server.broker, n, f"g{k}")
                    for k, n in enumerate((half, peers - half))]
            wait_until(lambda: all(g.lines and "connected" in g.lines[0] for g in gens), 600,
                       "the load connected", interval=0.5, sleep=lambda s: pump(call, s))
            r["connect_s"] = round(time.monotonic() - t0, 1)
            r["connected"] = sum(g.lines[0]["connected"] for g in gens)
            r["connect_errors"] = sum(g.lines[0]["errors"] for g in gens)
            r["broker_ids_loaded"] = server.metrics().get("kibitz_broker_connected_peers")
            r["rss_connected_mb"] = round(server.rss_kb() / 1024, 1)
            print("connected", r, flush=True)
            c0, w0 = cpu_s(pid), time.monotonic()
            pump(call, min(10.0, traffic / 3))
            r["join_loaded_s"] = [join_time(browser, server, room, call, f"k{i}") for i in range(joins)]
            rest = traffic - (time.monotonic() - w0)
            pump(call, max(0.0, rest))
            r["server_cpu_pct"] = round(100 * (cpu_s(pid) - c0) / (time.monotonic() - w0), 1)
            r["rss_loaded_mb"] = round(server.rss_kb() / 1024, 1)
            m = server.metrics()
            r["relayed_total"] = m.get("kibitz_broker_messages_relayed_total")
            r["drops"] = {k: v for k, v in m.items() if k.startswith("kibitz_broker_drops_total")}
            reports = [ln for g in gens for ln in g.lines[1:]]
            steady = [ln for ln in reports if ln.get("rtt_p50_ms") is not None][2:]
            r["load_rtt_p50_ms"] = (
                round(statistics.median(x["rtt_p50_ms"] for x in steady), 1) if steady else None
            )
            r["load_rtt_p99_ms"] = max((x["rtt_p99_ms"] for x in steady), default=None)
            r["load_frames_per_s"] = round(
                sum(x["sent"] for x in (g.lines[-1] for g in gens)) / (time.monotonic() - t0), 0)
            for t in call:
                t.stop_stream()
            sent = {t.id: t.sent(1) for t in call}

            def clean() -> bool:
                return all(not check_stream(t.received(1), sent, t.id) for t in call)

            wait_until(clean, 60, "the call's messages", sleep=lambda s: pump(call, s))
            r["call_messages"] = sum(s["b"] + sum(s["d"].values()) for s in sent.values())
        finally:
            for g in gens:
                g.stop()
            browser.close()
        r["rss_after_mb"] = round(server.rss_kb() / 1024, 1)
    r["outside_requests"] = outside
    r["finished_load"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return r


def render(r: dict[str, Any]) -> str:
    def span(xs: list[float]) -> str:
        return f"{min(xs):.2f}–{max(xs):.2f} s"

    return "\n".join([
        SECTION,
        "",
        f"Run {r['started']} with `bench/load_bench.py`. {r['machine']}; load average at the end "
        f"{r['finished_load']}. Raw figures: `docs/reliability-load.json`.",
        "",
        f"{r['connected']} simulated PeerJS-wire peers (two client processes on their own host in the lab) "
        f"registered in {r['connect_s']} s ({r['connect_errors']} errors), then each sent HEARTBEAT "
        "every 5 s, "
        "ran an OFFER → ANSWER + 2×2 CANDIDATE exchange with its partner about once a minute, and 10 sockets "
        f"a second reconnected, for {r['seconds']:.0f} s of traffic. Meanwhile two tabs held a call on "
        "the same `kibitz serve` and streamed to "
        f"each other at 10/s ({r['call_messages']} messages, none lost or duplicated), and a third tab "
        "joined and left, timed from `join()` until every link was up both ways.",
        "",
        "| figure | idle broker | under the load |",
        "|---|---|---|",
        f"| a tab joining the running call | {span(r['join_idle_s'])} | {span(r['join_loaded_s'])} |",
        f"| broker RSS | {r['rss_idle_mb']:.0f} MB | {r['rss_connected_mb']:.0f} MB connected, "
        f"{r['rss_loaded_mb']:.0f} MB after the traffic |",
        f"| broker CPU | | {r['server_cpu_pct']:.0f} % of one core |",
        f"| simulated OFFER → ANSWER round trip through the broker | | p50 {r['load_rtt_p50_ms']} ms, "
        f"worst p99 {r['load_rtt_p99_ms']} ms |",
        f"| frames from the simulated peers | | {r['load_frames_per_s']:.0f}/s |",
        "",
        f"Why {r['peers']} and not 20 000: every process here may hold at most {r['fd_limit'][1]} open "
        "files (a hard limit this machine does not let root raise), and the broker needs a few beyond its "
        "sockets.",
        "",
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--peers", type=int, default=19_900)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    reason = lab_available()
    if reason is not None:
        print(f"load bench skipped: {reason}")
        return 0
    r = run(args)
    text = render(r)
    print(text)
    if not args.no_write and not args.quick:
        RAW.write_text(json.dumps(r, indent=1) + "\n")
        replace_section(SECTION, text, DOC)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
