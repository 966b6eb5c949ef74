"""Room engine benchmark: N members on the in-memory bus, simulated time.

For N in 2..64 it measures
- CPU per roster round: process time spent (all N rooms + the bus) simulating one 2.5 s round,
- presence messages (and bytes) per second of simulated time in a settled room,
- simulated time from a coordinator crash until every survivor's roster equals the live set with
  exactly one coordinator (median and worst of several seeds).

Run: ``.venv/bin/python bench/room_bench.py`` (``--quick`` for a smoke run). Prints a markdown table
and writes it into the ``## Room engine`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from kibitz.clock import FakeClock
from kibitz.room import PING_INTERVAL
from kibitz.testing import Bus

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Room engine"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or cpu
    try:
        cores = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        cores = "?"
    python = f"Python {platform.python_version()} ({sys.implementation.name})"
    return f"Machine: {cpu}, {cores} CPUs (nproc), {python}, {platform.system()} {platform.machine()}"


def settled_room(n: int, seed: int) -> tuple[FakeClock, Bus]:
    clock = FakeClock()
    bus = Bus(clock, seed=seed)
    for i in range(n):
        bus.spawn_member(f"m{i}", "bench-room")
    if bus.run_until_converged(10.0) is None:
        raise RuntimeError(f"{n} members did not converge")
    clock.advance(5.0)
    return clock, bus


def run(sizes: list[int], rounds: int, seeds: int) -> str:
    rows = [
        "| N | CPU per 2.5 s round (ms, all members + bus) | CPU per member per round (µs) "
        "| presence msgs / s | presence KiB / s | heal after coordinator crash (s, median / worst) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(rows), flush=True)
    for n in sizes:
        clock, bus = settled_room(n, seed=0)
        m0, b0 = bus.stats["messages"], bus.stats["bytes"]
        start = time.process_time()
        for _ in range(rounds):
            clock.advance(PING_INTERVAL)
        cpu = (time.process_time() - start) / rounds
        simulated = rounds * PING_INTERVAL
        msgs = (bus.stats["messages"] - m0) / simulated
        kib = (bus.stats["bytes"] - b0) / simulated / 1024
        heal: list[float] = []
        for seed in range(seeds):
            clock, bus = settled_room(n, seed=seed)
            coordinator = next(name for name, r in bus.rooms.items() if r.is_coordinator)
            bus.kill(coordinator)
            took = bus.run_until_converged(30.0, step=0.01)
            if took is None:
                raise RuntimeError(f"N={n} seed={seed}: no convergence 30 s after a coordinator crash")
            heal.append(took)
        row = (
            f"| {n} | {cpu * 1000:.2f} | {cpu * 1e6 / n:.0f} | {msgs:.1f} | {kib:.1f} "
            f"| {statistics.median(heal):.2f} / {max(heal):.2f} |"
        )
        rows.append(row)
        print(row, flush=True)
    return "\n".join(rows)


def write_section(table: str, sizes: list[int], rounds: int, seeds: int) -> None:
    body = (
        f"{SECTION}\n\n"
        f"{machine()}\n\n"
        f"`bench/room_bench.py`: N members join one room on the in-memory bus (`kibitz.testing.Bus`, "
        f"5 ms link latency, fake clock). CPU is process time for simulating {rounds} settled 2.5 s rounds "
        f"(every room's timers, roster broadcasts, pings, JSON encode/decode and the bus itself), divided "
        f"by the rounds. Messages are frames sent on presence links per simulated second. Heal is the "
        f"simulated time from killing the coordinator until exactly one coordinator remains and every "
        f"survivor's roster equals the live set ({seeds} seeds; the target is under 3 s).\n\n"
        f"{table}\n"
    )
    if DOC.exists():
        text = DOC.read_text()
        pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
        text = pattern.sub(body + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + body
    else:
        text = f"# Benchmarks\n\n{machine()}\n\n{body}"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N up to 8, fewer rounds; does not write docs")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    sizes = [2, 4, 8] if args.quick else [2, 4, 8, 16, 32, 64]
    rounds, seeds = (4, 2) if args.quick else (8, 5)
    print(machine())
    table = run(sizes, rounds, seeds)
    if not (args.quick or args.no_write):
        write_section(table, sizes, rounds, seeds)
        print(f"wrote the '{SECTION}' section of {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
