"""A tiny deterministic room for tables: a roster, FIFO delivery, a fake clock, seeded randomness.

It exists for the golden transcripts (``tests/vectors/whist.json``): the same scenario run here and
by ``apps/whist/localnet.mjs`` must deliver the same messages in the same order, which holds the
Python and JavaScript tables to one protocol. The real engine's bus tests use ``kibitz.testing``.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .port import Cancel, Options
from .table import Table
from .wire import Json


def seeded_hex(seed: str, counter: int, nbytes: int) -> str:
    out = ""
    block = 0
    while len(out) < nbytes * 2:
        out += hashlib.sha256(f"{seed}:{counter}:{block}".encode()).hexdigest()
        block += 1
    return out[: nbytes * 2]


class _Timer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class LocalPort:
    def __init__(self, net: LocalNet, member: str) -> None:
        self.net = net
        self.member = member
        self.counter = 0

    def self_id(self) -> str:
        return self.member

    def participants(self) -> Sequence[Mapping[str, Any]]:
        return self.net.roster(self.member)

    def broadcast(self, data: Json) -> None:
        for other in self.net.order:
            if other != self.member:
                self.net.post(self.member, other, data)

    def send_to(self, peer: str, data: Json) -> None:
        if peer not in self.net.members:
            raise KeyError(f"{peer} is not in the room")
        if peer in self.net.no_directed:
            raise PermissionError(f"{peer} may not receive directed messages")
        self.net.post(self.member, peer, data)

    def call_later(self, delay: float, fn: Callable[[], None]) -> Cancel:
        return self.net.timer(delay, fn)

    def random_hex(self, nbytes: int) -> str:
        self.counter += 1
        return seeded_hex(self.member, self.counter, nbytes)


class LocalNet:
    def __init__(self) -> None:
        self.now = 0.0
        self.seq = 0
        self.timers: list[tuple[float, int, _Timer, Callable[[], None]]] = []
        self.members: dict[str, Json] = {}
        self.order: list[str] = []
        self.tables: dict[str, Table] = {}
        self.inbox: deque[tuple[str, str, str]] = deque()
        self.log: list[Json] = []
        self.no_directed: set[str] = set()

    def roster(self, viewer: str) -> list[Json]:
        return [{**self.members[m], "isSelf": m == viewer} for m in self.order]

    def join(
        self,
        member: str,
        *,
        name: str,
        key: str | None = None,
        watch: int | None = None,
        agent: bool = False,
        host: bool = False,
        sit: bool = True,
        options: Options | None = None,
        table_class: type[Table] = Table,
        **table_kw: Any,
    ) -> Table:
        from .rules import uid_of

        meta: Json = {"whist": {"watch": watch} if agent else {"uid": uid_of(key) if key else None}}
        if agent:
            meta["role"] = "agent"
        self.members[member] = {"id": member, "name": name, "role": "host" if host else "guest",
                                "kind": "agent" if agent else "human", "meta": meta}
        self.order.append(member)
        port = LocalPort(self, member)
        options = options or Options.fast()
        table = table_class(port, key=key, sit=sit, watch=watch, options=options, **table_kw)
        self.tables[member] = table
        self.roster_changed()
        return table

    def leave(self, member: str) -> None:
        self.members.pop(member, None)
        self.order.remove(member)
        table = self.tables.pop(member)
        if table.dealer is not None:
            table.dealer.stop()
        self.inbox = deque(d for d in self.inbox if d[1] != member)
        self.roster_changed()

    def roster_changed(self) -> None:
        for m in list(self.order):
            if m in self.tables:
                self.tables[m].on_participants(self.roster(m))
        self.pump()

    def post(self, frm: str, to: str, data: Json) -> None:
        self.inbox.append((frm, to, json.dumps(data, sort_keys=True, separators=(",", ":"))))

    def timer(self, delay: float, fn: Callable[[], None]) -> _Timer:
        t = _Timer()
        self.seq += 1
        heapq.heappush(self.timers, (self.now + delay, self.seq, t, fn))
        return t

    def pump(self) -> None:
        while self.inbox:
            frm, to, text = self.inbox.popleft()
            if to not in self.tables:
                continue
            data = json.loads(text)
            self.log.append({"at": round(self.now * 1000), "from": frm, "to": to, "data": data})
            self.tables[to].on_message(data, frm)

    def _fire_next(self) -> None:
        """Fire the earliest timer at its time (unless it was cancelled), then deliver what it sent."""
        at, _, t, fn = heapq.heappop(self.timers)
        if t.cancelled:
            return
        self.now = at
        fn()
        self.pump()

    def run(self, until: float) -> None:
        """Deliver everything, firing timers in order, until the clock reaches ``until``."""
        self.pump()
        while self.timers and self.timers[0][0] <= until:
            self._fire_next()
        self.now = max(self.now, until)

    def run_while(self, pending: Callable[[], bool], limit: float = 600.0) -> None:
        self.pump()
        while pending() and self.timers and self.timers[0][0] <= limit:
            self._fire_next()


__all__ = ["LocalNet", "LocalPort", "seeded_hex"]
