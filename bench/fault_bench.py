"""Fault scenarios of issue 19, measured: broker restarts, an address change, a lossy and slow link,
frozen members. The same scenario code as tests/e2e/test_faults.py (tests/e2e/fault_scenarios.py),
with the full sizes and repetitions, plus a plain-JavaScript data channel on the same impaired link
for comparison. Rewrites the ``## Measured: faults`` section of docs/reliability.md.

Run (root: it builds network namespaces): ``.venv/bin/python bench/fault_bench.py [--quick]``
``--quick``: one restart, a 256 KB broadcast under loss and delay, 15 s freezes (a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

import fault_scenarios as fs  # noqa: E402
from bench_docs import machine, replace_section  # noqa: E402
from netlab import NetLab, lab_available  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

DOC = ROOT / "docs" / "reliability.md"
SECTION = "## Measured: faults"
RAW = ROOT / "docs" / "reliability-faults.json"

# A plain RTCPeerConnection pair between two pages (no engine): the platform's own throughput.
RAW_SETUP = """async (offer) => {
  const pc = new RTCPeerConnection(); window.pc = pc; window.got = 0; window.tEnd = 0;
  const done = new Promise((r) => pc.onicegatheringstatechange = () =>
    pc.iceGatheringState === 'complete' && r());
  if (!offer) {
    window.dc = pc.createDataChannel('x', { ordered: true });
    await pc.setLocalDescription(await pc.createOffer());
  } else {
    pc.ondatachannel = (e) => { window.dc = e.channel; e.channel.onmessage = (m) => {
      window.got += m.data.length;
      if (window.got >= window.want && !window.tEnd) window.tEnd = Date.now(); }; };
    await pc.setRemoteDescription(offer); await pc.setLocalDescription(await pc.createAnswer());
  }
  await done; return pc.localDescription.toJSON();
}"""
RAW_SEND = """async (n) => { const dc = window.dc;
  await new Promise((r) => dc.readyState === 'open' ? r() : dc.onopen = r);
  const chunk = 'x'.repeat(65536); const t0 = Date.now(); dc.bufferedAmountLowThreshold = 1 << 20;
  for (let sent = 0; sent < n; sent += chunk.length) {
    if (dc.bufferedAmount > 4 << 20) await new Promise((r) => dc.onbufferedamountlow = r);
    dc.send(chunk);
  }
  return t0; }"""


def raw_channel(w: fs.World, size: int, timeout: float) -> float:
    """Seconds for ``size`` bytes over a plain data channel from host a to host b (cat's host)."""
    a = w.browsers[0].browser.new_page()
    b = w.browsers[1].browser.new_page()
    try:
        for p in (a, b):
            p.goto(f"{w.server.http}/demo/embed.html")
        offer = a.evaluate(RAW_SETUP, None)
        answer = b.evaluate(RAW_SETUP, offer)
        a.evaluate("(x) => pc.setRemoteDescription(x)", answer)
        b.evaluate("(n) => window.want = n", size)
        t0 = float(a.evaluate(RAW_SEND, size))
        deadline = time.monotonic() + timeout
        while not (t1 := float(b.evaluate("() => window.tEnd"))):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{size} bytes not through a plain data channel in {timeout} s")
            w.pump(0.5)
        return round((t1 - t0) / 1000, 2)
    finally:
        for p in (a, b):
            p.close()


def impaired_raw(w: fs.World, size: int, timeout: float) -> dict[str, float]:
    """The same link cat has in lossy_link, plain JavaScript, clean then with loss and delay."""
    b = w.cat.host
    clean = raw_channel(w, size, 120)
    w.lab.loss(b, 5)
    w.lab.delay(b, 150, 30)
    try:
        both = raw_channel(w, size, timeout)
    finally:
        w.lab.loss(b, 0)
        w.lab.undelay(b)
    return {"bytes": size, "clean_s": clean, "loss+delay_s": both,
            "loss+delay_MBps": round(size / 1e6 / both, 3)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": machine(), "quick": args.quick, "started": time.strftime("%Y-%m-%d %H:%M"),
    }
    outside: list[str] = []
    with NetLab() as lab, sync_playwright() as pw, fs.world(pw, lab, outside) as w:
        epoch = 0
        restarts = []
        for _ in range(1 if args.quick else 5):
            epoch += 1
            restarts.append(fs.broker_restart(w, epoch))
            print("restart", restarts[-1], flush=True)
        results["broker_restart"] = restarts
        epoch += 1
        results["network_change"] = fs.network_change(w, epoch)
        print("network change", results["network_change"], flush=True)
        epoch += 1
        big = 256 * 1024 if args.quick else fs.BIG
        results["lossy_link"] = fs.lossy_link(w, epoch, impaired_big=big, big_timeout=1800)
        print("lossy", results["lossy_link"], flush=True)
        results["plain_channel"] = impaired_raw(w, 256 * 1024 if args.quick else 2 * 1024 * 1024, 900)
        print("plain channel", results["plain_channel"], flush=True)
        frozen = 15.0 if args.quick else 30.0
        epoch += 1
        results["freeze_participants"] = fs.freeze(w, epoch, target="participants", frozen_for=frozen)
        print("freeze participants", results["freeze_participants"], flush=True)
        epoch += 1
        results["freeze_coordinator"] = fs.freeze(w, epoch, target="coordinator", frozen_for=frozen)
        print("freeze coordinator", results["freeze_coordinator"], flush=True)
    results["outside_requests"] = outside
    results["finished_load"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return results


def render(r: dict[str, Any]) -> str:
    rs = r["broker_restart"]
    gaps = [max(x["longest_presence_gap_s"].values()) for x in rs]
    ids_back = [x["ids_back_after_restart_s"] for x in rs]
    conv = [x["converged_after_restart_s"] for x in rs]
    nc, ll, pc = r["network_change"], r["lossy_link"], r["plain_channel"]
    fp, fc = r["freeze_participants"], r["freeze_coordinator"]
    msgs = sum(x["messages_delivered"] for x in [*rs, nc, ll, fp, fc])

    def span(xs: list[float]) -> str:
        if len(xs) == 1:
            return f"{xs[0]:.2f} s"
        return f"{min(xs):.2f}–{max(xs):.2f} s (median {statistics.median(xs):.2f})"

    lines = [
        SECTION,
        "",
        f"Run {r['started']} with `bench/fault_bench.py{' --quick' if r['quick'] else ''}`. "
        f"{r['machine']}; "
        f"load average at the end {r['finished_load']}. Raw figures: `docs/reliability-faults.json`."
        + (" A --quick run: one restart, a 256 KB broadcast under loss and delay, 15 s freezes; the "
           "full run repeats the restart 5 times, sends 10 MB and freezes for 30 s." if r["quick"] else ""),
        "",
        "| scenario | figure | value |",
        "|---|---|---|",
        f"| broker SIGKILL + restart ({len(rs)}×, down {span([x['down_s'] for x in rs])}) | longest "
        f"presence gap on any member | {span(gaps)} |",
        f"| | every id registered again after the restart | {span(ids_back)} |",
        f"| | everyone on one roster with all links up after the restart | {span(conv)} |",
        f"| address change ({nc['from']} → {nc['to']}) | links carrying data again | "
        f"{nc['links_back_s']:.2f} s |",
        f"| | longest presence gap | {max(nc['longest_presence_gap_s'].values()):.2f} s |",
        f"| | a newcomer linked to everyone (the moved member's signaling recovered) | "
        f"{nc['newcomer_linked_to_all_s']:.1f} s |",
        f"| lossy link: {ll['big_MB']:.1f} MB broadcast to the impaired member | clean / 5 % loss | "
        f"{ll['clean_s']['cat']:.2f} s ({ll['cat_MBps']['clean']} MB/s) / {ll['lossy_s']['cat']:.2f} s "
        f"({ll['cat_MBps']['loss']} MB/s, {ll['cat_MBps']['loss'] / ll['cat_MBps']['clean']:.2f}× clean) |",
        f"| | {ll['impaired_big_MB']:.2f} MB with 5 % loss + 150 ± 30 ms | "
        f"{ll['lossy_and_delayed_s']['cat']:.1f} s ({ll['cat_MBps']['loss+delay'] * 1000:.0f} kB/s) |",
        f"| | plain-JS data channel, same link, {pc['bytes'] / 1e6:.1f} MB | clean {pc['clean_s']:.2f} s, "
        f"loss + delay {pc['loss+delay_s']:.1f} s ({pc['loss+delay_MBps'] * 1000:.0f} kB/s) |",
        f"| tab frozen + agent SIGSTOPped {fp['frozen_s']:.0f} s | reaped by the others after | "
        f"{fp['reaped_after_s']} s |",
        f"| | back on every roster, all links up, after the thaw | {fp['back_after_thaw_s']:.2f} s |",
        f"| coordinator's tab frozen {fc['frozen_s']:.0f} s | everyone back after the thaw | "
        f"{fc['back_after_thaw_s']:.2f} s |",
        f"| all of the above | numbered messages delivered, lost, duplicated, duplicate participants | "
        f"{msgs}, 0, 0, 0 |",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--write", action="store_true",
                    help="write the figures of a --quick run too (the section says it was --quick)")
    args = ap.parse_args()
    reason = lab_available()
    if reason is not None:
        print(f"fault bench skipped: {reason}")
        return 0
    results = run(args)
    text = render(results)
    print(text)
    if not args.no_write and (args.write or not args.quick):
        RAW.write_text(json.dumps(results, indent=1) + "\n")
        replace_section(SECTION, text, DOC)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
