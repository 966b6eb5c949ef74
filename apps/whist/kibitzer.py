"""The kibitzer: an agent that pulls up a chair behind one seat of the whist table and calls the plays.

    kibitz agent run apps/whist/kibitzer.py --room ROOM --watch S [--server URL]
        [--brain path/to/brain.py:factory] [--record FILE] [--quiet-seconds N]

It joins read-only and asks, in its roster meta (``whist.watch``), to watch one seat (N, E, S, W).
The table's dealer sends it that seat's hand only after the seat's player (or the room's host) lets
it watch: the page's "Let it watch" both grants it ``receive-directed`` + ``send-chat`` and tells the
dealer. Until then it sees the public table only. It never receives another seat's hand: it runs the
same watcher client as a page (``whist.table.Table`` with no seat key), which accepts a hand only
for the seat it watches, and it sends nothing to the table. It comments in chat once it may
(``send-chat``); before that it logs what it would have said.

``--brain file.py:factory`` plugs in another brain (``factory()`` returns an object with
``comment(moment)``, sync or async; see ``whist.brain``); the default is the rule-based
``RuleBrain``, which runs on this machine and calls no model. ``--record FILE`` writes every app
message the kibitzer receives, one JSON line each (the tests use it to show what it was sent).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import json
import logging
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from whist.brain import Brain, Commentator, Moment, RuleBrain
from whist.port import Cancel, Options
from whist.rules import SEAT_LETTERS, SEAT_NAMES
from whist.table import Table

from kibitz.agent import Agent  # type: ignore[import-not-found,unused-ignore]

NAME = "Kibitzer"
BACKEND = "rules (whist.brain.RuleBrain), on this machine"
EGRESS = False

log = logging.getLogger("kibitzer")
SEATS = {**{c: i for i, c in enumerate(SEAT_LETTERS)}, **{n.lower(): i for i, n in enumerate(SEAT_NAMES)},
         **{str(i): i for i in range(4)}}


def seat_of(text: str) -> int:
    seat = SEATS.get(text.strip().lower()) if len(text.strip()) > 1 else SEATS.get(text.strip().upper())
    if seat is None:
        raise argparse.ArgumentTypeError(f"a seat is N, E, S or W (or north ... west), not {text!r}")
    return seat


def setup(argv: list[str]) -> dict[str, Any]:
    """``kibitz agent run`` hands us the arguments it does not know."""
    parser = argparse.ArgumentParser(prog="kibitzer", description="watch one seat, comment on its plays")
    parser.add_argument("--watch", type=seat_of, required=True, help="the seat to watch: N, E, S or W")
    parser.add_argument("--brain", default=None, help="path/to/brain.py:factory (default: rule-based)")
    parser.add_argument("--record", default=None, help="write every app message received here (JSON lines)")
    parser.add_argument("--quiet-seconds", type=float, default=2.0,
                        help="at least this long between two remarks (default 2 s)")
    args = parser.parse_args(argv)
    seat = int(args.watch)
    brain = load_brain(args.brain) if args.brain else None
    return {"name": f"{NAME} ({SEAT_NAMES[seat]})", "meta": {"whist": {"watch": seat}}, "seat": seat,
            "brain": brain, "record": args.record, "quiet": args.quiet_seconds}


def load_brain(spec: str) -> Brain:
    path, _, factory = spec.partition(":")
    file = Path(path)
    module_spec = importlib.util.spec_from_file_location(f"kibitzer_brain_{file.stem}", file)
    if not file.is_file() or module_spec is None or module_spec.loader is None:
        raise ValueError(f"no brain file at {file}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    made = getattr(module, factory or "brain")()
    if not callable(getattr(made, "comment", None)):
        raise ValueError(f"{spec} made no brain (it needs a comment(moment) method)")
    return made  # type: ignore[no-any-return]


class AgentPort:
    """The table's port over the Agent SDK. The watcher never sends; these raise if it ever tried."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.loop = asyncio.get_running_loop()

    def self_id(self) -> str:
        return str(self.agent.id)

    def participants(self) -> Sequence[Mapping[str, Any]]:
        people: list[Mapping[str, Any]] = self.agent.participants()
        return people

    def broadcast(self, data: dict[str, Any]) -> None:
        raise PermissionError("the kibitzer sends nothing to the table")

    def send_to(self, peer: str, data: dict[str, Any]) -> None:
        raise PermissionError("the kibitzer sends nothing to the table")

    def call_later(self, delay: float, fn: Callable[[], None]) -> Cancel:
        return self.loop.call_later(delay, fn)

    def random_hex(self, nbytes: int) -> str:
        return secrets.token_hex(nbytes)


class Kibitzer:
    """The watcher's table, the commentator and the brain, wired to an :class:`Agent`."""

    def __init__(self, agent: Agent, seat: int, brain: Brain | None = None, *, record: str | None = None,
                 quiet: float = 2.0) -> None:
        self.agent = agent
        self.seat = seat
        self.brain: Brain = brain or RuleBrain()
        self.quiet = quiet
        self.last_said = 0.0
        self.said: list[str] = []
        self.record = open(record, "a", encoding="utf-8") if record else None  # noqa: SIM115 (closed in close())
        self.table = Table(AgentPort(agent), watch=seat, options=Options(), on_change=self.changed)
        self.commentator = Commentator(seat)
        self.pending: asyncio.Task[None] | None = None
        self.hands_seen: set[tuple[str, int]] = set()
        agent.on_roster(self.table.on_participants)
        agent.on_data(self.heard)
        self.table.on_participants(agent.participants())

    def heard(self, data: Any, frm: str) -> None:
        if self.record is not None:
            self.record.write(json.dumps({"at": time.time(), "from": frm, "data": data}) + "\n")
            self.record.flush()
        self.table.on_message(data, frm)

    def changed(self) -> None:
        for deal, rec in self.table.client.hands.items():
            if (deal, int(rec["seat"])) not in self.hands_seen:
                self.hands_seen.add((deal, int(rec["seat"])))
                log.info("watching %s's hand in deal %s", SEAT_NAMES[int(rec["seat"])], deal)
        current = self.table.client.hand_record()
        moments = self.commentator.moments(self.table.view(), current["cards"] if current else None)
        for moment in moments:
            asyncio.get_running_loop().create_task(self.remark(moment))

    async def remark(self, moment: Moment) -> None:
        try:
            answer = self.brain.comment(moment)
            text = await answer if inspect.isawaitable(answer) else answer
        except Exception:
            log.exception("the brain failed on %s", moment.kind)
            return
        if not text:
            return
        now = time.monotonic()
        if moment.kind == "play" and now - self.last_said < self.quiet:
            log.info("(quiet) %s", text)
            return
        if not self.agent.can("send-chat"):
            log.info("would say (no send-chat yet): %s", text)
            return
        self.last_said = now
        self.said.append(text)
        await self.agent.say(text)

    def close(self) -> None:
        if self.record is not None:
            self.record.close()
            self.record = None


async def main(agent: Agent, options: dict[str, Any]) -> None:
    seat = int(options["seat"])
    kib = Kibitzer(agent, seat, options.get("brain"), record=options.get("record"),
                   quiet=float(options.get("quiet", 2.0)))
    print(f"KIBITZER_WATCHING seat={SEAT_LETTERS[seat]}", flush=True)
    try:
        await agent.wait_closed()
    finally:
        kib.close()
