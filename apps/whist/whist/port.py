"""What the table needs from the room: the controller's roster and messages, a clock and randomness.

The page implements it over ``Kibitz.mount({headless: true})`` (``apps/whist/app.mjs``), the bus
tests over :class:`kibitz.session.Session` (:class:`SessionPort`), and ``localnet`` over plain
queues for the golden transcripts.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .rules import UID_RE

Json = dict[str, Any]


class Cancel(Protocol):
    def cancel(self) -> None: ...


class Port(Protocol):
    def self_id(self) -> str: ...

    def participants(self) -> Sequence[Mapping[str, Any]]: ...

    def broadcast(self, data: Json) -> None: ...

    def send_to(self, peer: str, data: Json) -> None:
        """Raises when the engine refuses (the peer left, or may not receive directed messages)."""
        ...

    def call_later(self, delay: float, fn: Callable[[], None]) -> Cancel: ...

    def random_hex(self, nbytes: int) -> str: ...


@dataclass(frozen=True)
class Options:
    """Pacing, in seconds. Tests shrink them; the page uses the defaults."""

    bot_delay: float = 0.7
    away_grace: float = 10.0
    start_delay: float = 2.0
    next_delay: float = 8.0
    phase_timeout: float = 15.0
    auto_next: bool = True

    @classmethod
    def fast(cls) -> Options:
        return cls(bot_delay=0.05, away_grace=1.0, start_delay=0.2, next_delay=0.5, phase_timeout=3.0)


def whist_meta(p: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = p.get("meta")
    w = meta.get("whist") if isinstance(meta, Mapping) else None
    return w if isinstance(w, Mapping) else {}


def is_agent(p: Mapping[str, Any]) -> bool:
    meta = p.get("meta")
    return p.get("kind") == "agent" or (isinstance(meta, Mapping) and meta.get("role") == "agent")


def uid_in_roster(p: Mapping[str, Any]) -> str | None:
    """The seat uid a person announces in the roster (never an agent's)."""
    uid = whist_meta(p).get("uid")
    if is_agent(p) or not isinstance(uid, str) or not UID_RE.match(uid):
        return None
    return uid


def watch_request(p: Mapping[str, Any]) -> int | None:
    """The seat an agent asks to watch (roster meta ``whist.watch``), else None."""
    seat = whist_meta(p).get("watch")
    if not is_agent(p) or not isinstance(seat, int) or isinstance(seat, bool) or not 0 <= seat <= 3:
        return None
    return seat


def elect(participants: Sequence[Mapping[str, Any]]) -> str | None:
    """The table's authority: the room's host if it plays whist, else the person with the lowest
    seat uid. Every client computes the same from the same roster."""
    people: list[tuple[str, str]] = []
    hosts: list[tuple[str, str]] = []
    for p in participants:
        uid = uid_in_roster(p)
        if uid is not None:
            people.append((uid, str(p.get("id"))))
            if p.get("role") == "host":
                hosts.append((uid, str(p.get("id"))))
    pool = hosts or people
    return min(pool)[1] if pool else None


class SessionPort:
    """A :class:`Port` over a :class:`kibitz.session.Session` (CPython: bus tests, agents)."""

    def __init__(self, session: Any, scheduler: Any, rand: Callable[[int], str] | None = None) -> None:
        self.session = session
        self.scheduler = scheduler
        self._rand = rand or secrets.token_hex

    def self_id(self) -> str:
        return str(self.session.self_id)

    def participants(self) -> Sequence[Mapping[str, Any]]:
        return list(self.session.get_participants())

    def broadcast(self, data: Json) -> None:
        self.session.broadcast(data)

    def send_to(self, peer: str, data: Json) -> None:
        self.session.send_to(peer, data)

    def call_later(self, delay: float, fn: Callable[[], None]) -> Cancel:
        handle: Cancel = self.scheduler.call_later(delay, fn)
        return handle

    def random_hex(self, nbytes: int) -> str:
        return self._rand(nbytes)


__all__ = ["Cancel", "Options", "Port", "SessionPort", "elect", "is_agent", "uid_in_roster", "watch_request",
           "whist_meta"]
