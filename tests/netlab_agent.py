"""A CPython agent for the fault lab, driven over stdin/stdout with one JSON object per line.

``tests/netlab.py`` (:class:`netlab.LabAgent`) starts it inside a namespace. Every command gets
exactly one answer line; ``{"error": ...}`` when it failed. Commands (``op``):

* ``start``: join the room; answers ``{"id"}`` once on the roster;
* ``stream`` ``{epoch, rate, to}``: every 1/rate s broadcast ``{"rl":1,"e":epoch,"k":"b","s":n}``
  and send ``{"rl":1,"e":epoch,"k":"d","s":n}`` to each id in ``to`` (own counter per
  destination); refusals are counted, never fatal (the agent is read-only until a host grants
  ``send-chat``);
* ``halt``: stop streaming; ``report``: what was sent and received (sequence numbers per epoch,
  sender and kind), presence samples (every 100 ms), participants, state, RSS;
* ``leave``: leave the room and exit.

Received ``{"rl":1,"k":"big",...}`` messages are checked (length and SHA-256) and timed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import resource
import sys
import time
from typing import Any

from kibitz.agent import Agent


class Driver:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.agent: Agent | None = None
        self.recv: dict[str, dict[str, dict[str, list[int]]]] = {}
        self.big: list[dict[str, Any]] = []
        self.sent: dict[str, dict[str, Any]] = {}
        self.stream_task: asyncio.Task[None] | None = None
        self.samples: list[list[Any]] = []
        self.sampler: asyncio.Task[None] | None = None

    def on_data(self, data: Any, sender: str) -> None:
        if not isinstance(data, dict) or data.get("rl") != 1:
            return
        kind = data.get("k")
        if kind == "big":
            body = data.get("body", "")
            ok = isinstance(body, str) and len(body) == data.get("len") and \
                hashlib.sha256(body.encode()).hexdigest() == data.get("sha")
            self.big.append({"from": sender, "s": data.get("s"), "ok": ok, "at": time.time() * 1000})
            return
        by_sender = self.recv.setdefault(str(data.get("e")), {}).setdefault(sender, {})
        by_sender.setdefault(str(kind), []).append(int(data.get("s", -1)))

    async def stream(self, epoch: int, rate: float, to: list[str]) -> None:
        assert self.agent is not None
        sent: dict[str, Any] = {"b": 0, "d": {}, "refused": 0, "errors": []}
        self.sent[str(epoch)] = sent
        while True:
            try:
                await self.agent.send({"rl": 1, "e": epoch, "k": "b", "s": sent["b"] + 1})
                sent["b"] += 1
            except Exception as exc:
                sent["refused"] += 1
                sent["errors"] = [*sent["errors"][-19:], repr(exc)]
            for peer in to:
                m = sent["d"].get(peer, 0) + 1
                try:
                    await self.agent.send({"rl": 1, "e": epoch, "k": "d", "s": m}, to=peer)
                    sent["d"][peer] = m
                except Exception as exc:
                    sent["refused"] += 1
                    sent["errors"] = [*sent["errors"][-19:], repr(exc)]
            await asyncio.sleep(1 / rate)

    async def sample(self) -> None:
        """Presence as this agent sees it, every 100 ms: [epoch ms, connected, participants, links up]."""
        assert self.agent is not None
        while True:
            people = self.agent.participants()
            state = self.agent.session.get_state()
            self.samples.append([time.time() * 1000, state["connected"], len(people),
                                 sum(1 for p in people if p["linkUp"])])
            del self.samples[:-20000]
            await asyncio.sleep(0.1)

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd.get("op")
        if op == "start":
            self.agent = Agent(
                server=self.args.server, room=self.args.room, name=self.args.name, join_timeout=45
            )
            self.agent.on_data(self.on_data)
            await self.agent.start()
            self.sampler = asyncio.create_task(self.sample())
            return {"id": self.agent.id}
        agent = self.agent
        if agent is None:
            raise RuntimeError("start first")
        if op == "stream":
            if self.stream_task is not None:
                self.stream_task.cancel()
            epoch, rate, to = int(cmd["epoch"]), float(cmd.get("rate", 10)), list(cmd.get("to", []))
            self.stream_task = asyncio.create_task(self.stream(epoch, rate, to))
            return {}
        if op == "halt":
            if self.stream_task is not None:
                self.stream_task.cancel()
                self.stream_task = None
            return {}
        if op == "report":
            session = agent.session
            return {
                "id": agent.id,
                "sent": self.sent,
                "recv": self.recv,
                "big": self.big,
                "samples": [x for x in self.samples if x[0] >= float(cmd.get("since_ms", 0))],
                "participants": [p["id"] for p in agent.participants()],
                "linkUp": {p["id"]: p["linkUp"] for p in agent.participants()},
                "state": session.get_state(),
                "grant": agent.grant,
                "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "drops": dict(session.mesh.drops.by_reason),
                "mesh": dict(session.mesh.stats),
            }
        if op == "leave":
            await agent.leave()
            return {"left": True}
        raise ValueError(f"unknown op {op!r}")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--room", required=True)
    ap.add_argument("--name", required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    driver = Driver(args)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        try:
            cmd = json.loads(line)
            answer = await driver.handle(cmd)
        except Exception as exc:
            logging.exception("command failed")
            answer = {"error": repr(exc)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
        if cmd.get("op") == "leave":
            break


if __name__ == "__main__":
    asyncio.run(main())
