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
import statistics
import time
from pathlib import Path

from bench_docs import DOC, machine, replace_section

from kibitz.clock import FakeClock
from kibitz.room import PING_INTERVAL
from kibitz.testing import Bus

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Room engine"


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


def write_section(table: str, sizes: list[int], rounds: int, seeds: int, head: str) -> None:
    body = (
        f"{SECTION}\n\n"
        f"{head}\n\n"
        f"`bench/room_bench.py`: N members join one room on the in-memory bus (`kibitz.testing.Bus`, "
        f"5 ms link latency, fake clock). CPU is process time for simulating {rounds} settled 2.5 s rounds "
        f"(every room's timers, roster broadcasts, pings, JSON encode/decode and the bus itself), divided "
        f"by the rounds. Messages are frames sent on presence links per simulated second. Heal is the "
        f"simulated time from killing the coordinator until exactly one coordinator remains and every "
        f"survivor's roster equals the live set ({seeds} seeds; the target is under 3 s).\n\n"
        f"{table}\n"
    )
    replace_section(SECTION, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N up to 8, fewer rounds; does not write docs")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    sizes = [2, 4, 8] if args.quick else [2, 4, 8, 16, 32, 64]
    rounds, seeds = (4, 2) if args.quick else (8, 5)
    head = machine()
    print(head)
    table = run(sizes, rounds, seeds)
    if not (args.quick or args.no_write):
        write_section(table, sizes, rounds, seeds, head)
        print(f"wrote the '{SECTION}' section of {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
