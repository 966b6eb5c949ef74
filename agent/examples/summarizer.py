"""Scribe: an example Kibitz agent that needs no model.

Run it with ``kibitz agent run agent/examples/summarizer.py --room room-… --server http://127.0.0.1:8787``.

It reads the chat and answers two commands:

* ``!summary``: a deterministic extractive summary (how many lines from whom, the most frequent
  words, the most recent speakers);
* ``!who``: who is on the call, people and agents.

Agents join read-only: until the host grants this agent ``send-chat`` it keeps listening and logs
why it cannot answer (the engine refuses the send, and every peer would drop it anyway).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from kibitz.agent import Agent

NAME = "Scribe"
BACKEND = "none (extractive, on this machine)"
EGRESS = False

log = logging.getLogger("scribe")

KEEP = 200
WORD = re.compile(r"[a-zA-Z\u00C0-\u024F][\w'\u00C0-\u024F]{2,}")
STOP = frozenset(
    re.findall(
        r"\S+",
        "the and for are but not you your with this that have has had was were will would can could what "
        "when where who why how all any our out just about from into than then them they there these those "
        "its it's i'm we're don't yes yeah okay also some more very",
    )
)


def summarize(lines: Iterable[Mapping[str, Any]], top: int = 5) -> str:
    """One line about ``lines``: count per speaker, top words, last speakers. Deterministic."""
    lines = [ln for ln in lines if not str(ln.get("text", "")).startswith("!")]
    if not lines:
        return "Nothing to summarise yet."
    speakers = Counter(str(ln.get("name") or ln.get("from")) for ln in lines)
    words: Counter[str] = Counter()
    for ln in lines:
        words.update(w.lower() for w in WORD.findall(str(ln.get("text", ""))) if w.lower() not in STOP)
    # most_common breaks ties by first appearance; sort explicitly so equal counts are alphabetical
    topics = sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    recent: list[str] = []
    for ln in reversed(lines):
        who = str(ln.get("name") or ln.get("from"))
        if who not in recent:
            recent.append(who)
        if len(recent) == 3:
            break
    by_whom = ", ".join(f"{who} {n}" for who, n in sorted(speakers.items(), key=lambda kv: (-kv[1], kv[0])))
    about = ", ".join(f"{w} ({n})" for w, n in topics) or "-"
    count = f"{len(lines)} line" + ("" if len(lines) == 1 else "s")
    return f"{count} ({by_whom}). Topics: {about}. Last: {', '.join(recent)}."


def who(participants: Iterable[Mapping[str, Any]]) -> str:
    """``On the call: Ann, Bob; agents: Scribe`` from a participants list."""
    people = [str(p.get("name") or p.get("id")) for p in participants if p.get("kind") != "agent"]
    agents = [str(p.get("name") or p.get("id")) for p in participants if p.get("kind") == "agent"]
    text = f"On the call ({len(people) + len(agents)}): {', '.join(people) or 'nobody'}"
    return text + (f"; agents: {', '.join(agents)}" if agents else "")


async def main(agent: Agent) -> None:
    history: list[dict[str, Any]] = []

    async def reply(text: str) -> None:
        if not agent.can("send-chat"):
            log.info("cannot answer (read-only; ask the host to grant send-chat): %s", text)
            return
        await agent.say(text)

    @agent.on_chat
    async def heard(line: dict[str, Any]) -> None:
        history.append(line)
        del history[:-KEEP]
        command = line["text"].strip().lower()
        if command == "!summary":
            await reply(summarize(history))
        elif command == "!who":
            await reply(who(agent.participants()))

    @agent.on_grant
    def granted(grant: dict[str, Any]) -> None:
        log.info("grant now: perceive=%s act=%s", grant.get("perceive"), grant.get("act"))

    await agent.wait_closed()
