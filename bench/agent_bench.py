"""Agent start-up benchmark: process spawn → on the roster → first chat line received.

One ``kibitz serve`` runs on 127.0.0.1; one CPython "human" (a :class:`kibitz.session.Session` on
aiortc, the coordinator) sits in the room and posts a chat line every 100 ms. Each run spawns a
fresh ``kibitz agent run bench-agent.py`` process (interpreter start, imports, /api/signal, broker
claim, room join, WebRTC data link to the human) and times, from ``Popen``:

* **roster**: the CLI's ``KIBITZ_AGENT_READY`` line (the agent is on the roster);
* **chat**: the agent's first received chat line (its ``main`` prints it and returns, and the
  agent leaves with a clean goodbye before the next run starts).

A baseline row times ``python -c "import kibitz.agent, kibitz.backends.aio"`` (interpreter plus
imports), the part no network work can shave off. Target: chat p95 ≤ 1 s.

Run: ``.venv/bin/python bench/agent_bench.py`` (``--runs N``; ``--no-write`` to print only). Writes
the ``## Agents`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bench_docs import DOC, machine, replace_section  # noqa: E402
from server_fixture import running_kibitz_server  # noqa: E402

from kibitz.backends.aio import make_aio_transport  # noqa: E402
from kibitz.clock import AsyncioScheduler  # noqa: E402
from kibitz.session import Session  # noqa: E402

SECTION = "## Agents"
KIBITZ = ROOT / ".venv" / "bin" / "kibitz"
PYTHON = ROOT / ".venv" / "bin" / "python"
CHAT_EVERY_S = 0.1
AGENT_FILE = """
import asyncio

NAME = "Bench"


async def main(agent):
    got = asyncio.Event()
    agent.on_chat(lambda line: got.set())
    await got.wait()
    print("KIBITZ_FIRST_CHAT", flush=True)
"""


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): with 20 samples p95 is the 19th smallest."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


async def one_run(agent_file: Path, room: str, server: str, timeout: float = 20.0) -> tuple[float, float]:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        str(KIBITZ), "agent", "run", str(agent_file), "--room", room, "--server", server,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    roster = chat = -1.0
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(timeout):
            while chat < 0:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"agent exited early ({await proc.wait()})")
                now = time.perf_counter() - started
                if line.startswith("KIBITZ_AGENT_READY"):
                    roster = now
                elif line.startswith("KIBITZ_FIRST_CHAT"):
                    chat = now
            await proc.wait()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    return roster, chat


async def bench(server: str, broker: str, key: str, runs: int) -> dict[str, list[float]]:
    room = f"room-bench-{os.getpid()}"
    transport = make_aio_transport(broker, key=key, loopback_only=True)
    human = Session(
        room, transport=transport, scheduler=AsyncioScheduler(asyncio.get_running_loop()), name="Hu"
    )
    human.start()
    human.join()
    while not human.get_state()["isCoordinator"]:
        await asyncio.sleep(0.02)

    async def chatter() -> None:
        n = 0
        while True:
            n += 1
            human.send_chat(f"line {n}")
            await asyncio.sleep(CHAT_EVERY_S)

    talking = asyncio.create_task(chatter())
    out: dict[str, list[float]] = {"roster": [], "chat": [], "imports": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            agent_file = Path(tmp) / "bench_agent.py"
            agent_file.write_text(AGENT_FILE)
            await one_run(agent_file, room, server)  # warm the page cache; not counted
            for i in range(runs):
                while len(human.get_participants()) > 1:  # the previous agent's goodbye
                    await asyncio.sleep(0.02)
                roster, chat = await one_run(agent_file, room, server)
                out["roster"].append(roster)
                out["chat"].append(chat)
                out["imports"].append(await import_baseline())  # interleaved: same load as the runs
                print(
                    f"run {i + 1:2d}: roster {roster * 1000:6.0f} ms  chat {chat * 1000:6.0f} ms", flush=True
                )
    finally:
        talking.cancel()
        human.close()
        await transport.shutdown()
    return out


async def import_baseline() -> float:
    """Spawn → exit of a process that only imports what an agent imports."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(str(PYTHON), "-c", "import kibitz.agent, kibitz.backends.aio")
    if await proc.wait() != 0:
        raise RuntimeError("the import baseline failed")
    return time.perf_counter() - started


def table(results: dict[str, list[float]]) -> str:
    baseline = results["imports"]
    rows = [
        "| spawn → | p50 | p95 | max | runs |",
        "|---|---:|---:|---:|---:|",
        f"| interpreter + imports (`python -c`, baseline) | {statistics.median(baseline) * 1000:.0f} ms | "
        f"{pct(baseline, 95) * 1000:.0f} ms | {max(baseline) * 1000:.0f} ms | {len(baseline)} |",
    ]
    for key, label in (
        ("roster", "on the roster (`KIBITZ_AGENT_READY`)"),
        ("chat", "**first chat received**"),
    ):
        v = results[key]
        rows.append(
            f"| {label} | {statistics.median(v) * 1000:.0f} ms | {pct(v, 95) * 1000:.0f} ms | "
            f"{max(v) * 1000:.0f} ms | {len(v)} |"
        )
    beyond = [c - b for c, b in zip(results["chat"], baseline, strict=True)]
    rows.append(
        f"| first chat − baseline of the same run (signal, claim, join, WebRTC link) | "
        f"{statistics.median(beyond) * 1000:.0f} ms | {pct(beyond, 95) * 1000:.0f} ms | "
        f"{max(beyond) * 1000:.0f} ms | {len(beyond)} |"
    )
    return "\n".join(rows)


def write_section(text: str, runs: int, head: str) -> None:
    body = (
        f"{SECTION}\n\n"
        f"{head}; {time.strftime('%Y-%m-%d')}.\n\n"
        f"`bench/agent_bench.py`: `kibitz serve` on 127.0.0.1 with one CPython human in the room (the "
        f"coordinator) posting a chat line every {CHAT_EVERY_S * 1000:.0f} ms. Each of {runs} runs spawns a "
        f"fresh `kibitz agent run` process and times from spawn to the agent being on the roster and to its "
        f"first received chat line (the agent then leaves; the next run waits for its goodbye). That covers "
        f"interpreter start, imports (aiortc), `GET /api/signal`, the broker claim, the room join and the "
        f"WebRTC data link (ICE on loopback, DTLS, SCTP). After each run a `python -c` process that only "
        f"imports what an agent imports is timed too (same load), so the last row is what the network "
        f"work adds. Target: first chat p95 ≤ 1 s. Percentiles are nearest-rank. The box is a shared "
        f"2-core VM: the import time, and with it the total, swings with its load.\n\n"
        f"{text}\n"
    )
    replace_section(SECTION, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="5 runs")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if args.quick:
        args.runs = 5
    head = machine()
    print(head, flush=True)
    with running_kibitz_server() as srv:
        results = asyncio.run(bench(srv.http, srv.broker, srv.key, args.runs))
    text = table(results)
    print(text)
    if not args.no_write:
        write_section(text, args.runs, head)
        print(f"wrote the '{SECTION}' section of {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
