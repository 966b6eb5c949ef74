"""Test scaffolding for the data mesh: meshes on the in-memory bus, plus a throttled transport.

The bus reports ``buffered_amount() == 0``; :class:`Throttled` wraps a bus transport with a send
buffer drained at a fixed byte rate, so backpressure is exercised deterministically on the clock.
"""

from __future__ import annotations

import random
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kibitz.clock import FakeClock, TimerHandle
from kibitz.mesh import Mesh
from kibitz.testing import Bus, BusTransport, ProcessScheduler
from kibitz.transport import EventSink, LinkId, Payload, TransportEvent


class Throttled:
    """A Transport whose sends wait in a per-link buffer drained at ``rate`` bytes/s."""

    def __init__(self, inner: BusTransport, scheduler: ProcessScheduler, rate: float = 20e6,
                 tick: float = 0.005) -> None:
        self.inner = inner
        self.clock = scheduler
        self.rate = rate
        self.tick = tick
        self.queues: dict[LinkId, deque[Payload]] = defaultdict(deque)
        self.amount: dict[LinkId, int] = defaultdict(int)
        self.peak = 0
        self.on_drain: Callable[[], None] | None = None
        self._timer: TimerHandle | None = None

    def bind(self, sink: EventSink) -> None:
        self.inner.bind(sink)

    def claim(self, peer_id: str) -> None:
        self.inner.claim(peer_id)

    def release(self, peer_id: str) -> None:
        self.inner.release(peer_id)

    def dial(self, local_id: str, remote_id: str, label: str) -> LinkId:
        return self.inner.dial(local_id, remote_id, label)

    def send(self, link: LinkId, data: Payload) -> None:
        self.queues[link].append(data)
        self.amount[link] += len(data)
        self.peak = max(self.peak, self.amount[link])
        if self._timer is None:
            self._timer = self.clock.call_later(self.tick, self._drain)

    def buffered_amount(self, link: LinkId) -> int:
        return self.amount[link]

    def close(self, link: LinkId) -> None:
        self.queues.pop(link, None)
        self.amount.pop(link, None)
        self.inner.close(link)

    def _drain(self) -> None:
        self._timer = None
        budget = self.rate * self.tick
        for link, q in list(self.queues.items()):
            while q and budget > 0:
                frame = q.popleft()
                budget -= len(frame)
                self.amount[link] -= len(frame)
                self.inner.send(link, frame)
        if any(self.queues.values()):
            self._timer = self.clock.call_later(self.tick, self._drain)
        if self.on_drain is not None:
            self.on_drain()


@dataclass
class Node:
    name: str
    id: str
    mesh: Mesh
    transport: Any
    got: list[tuple[str, Any]] = field(default_factory=list)
    links: list[tuple[str, bool]] = field(default_factory=list)
    other_events: list[TransportEvent] = field(default_factory=list)

    def from_(self, peer: str) -> list[Any]:
        return [m for f, m in self.got if f == peer]


def mid(name: str) -> str:
    return f"kbz-m-{name}"


def spawn(bus: Bus, name: str, *, throttle: float | None = None, member_id: str | None = None) -> Node:
    inner = bus.transport(name)
    sched = bus.scheduler(name)
    transport: Any = Throttled(inner, sched, rate=throttle) if throttle else inner
    node_id = member_id or mid(name)
    node: Node
    mesh = Mesh(
        self_id=node_id,
        transport=transport,
        scheduler=sched,
        rng=random.Random(f"{name}:{sched.now()}"),
        on_message=lambda f, m: node.got.append((f, m)),
        on_link=lambda p, up: node.links.append((p, up)),
    )
    node = Node(name, node_id, mesh, transport)

    def sink(ev: TransportEvent) -> None:
        if not mesh.handle(ev):
            node.other_events.append(ev)

    transport.bind(sink)
    transport.claim(node_id)
    return node


def make_net(names: Iterable[str], *, clock: FakeClock | None = None, throttle: float | None = None,
             **bus_kwargs: Any) -> tuple[FakeClock, Bus, dict[str, Node]]:
    clock = clock or FakeClock()
    bus = Bus(clock, **bus_kwargs)
    nodes = {n: spawn(bus, n, throttle=throttle) for n in names}
    clock.advance(0.05)  # claims answered
    ids = [n.id for n in nodes.values()]
    for n in nodes.values():
        n.mesh.set_members(ids)
    return clock, bus, nodes
