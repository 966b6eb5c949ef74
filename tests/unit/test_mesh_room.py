"""The real room engine driving the data mesh and the content router on the bus (a minimal session)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from kibitz.capabilities import AGENT_DEFAULT, CapabilityBook, Grant
from kibitz.clock import FakeClock
from kibitz.content import ChatLine, ContentRouter
from kibitz.mesh import Mesh
from kibitz.room import MemberProfile, Room, RoomEvent, RosterChanged
from kibitz.testing import Bus
from kibitz.transport import TransportEvent

ROOM = "mesh-room-3f9k2mq7p1"


@dataclass
class Session:
    name: str
    room: Room
    mesh: Mesh
    router: ContentRouter
    chats: list[ChatLine] = field(default_factory=list)
    apps: list[tuple[str, Any]] = field(default_factory=list)


def join(bus: Bus, name: str, meta: dict[str, Any] | None = None) -> Session:
    transport = bus.transport(name)
    sched = bus.scheduler(name)
    self_id = f"kbz-m-{name}"
    rng = random.Random(f"{name}:{sched.now()}")
    session: Session

    def on_room(ev: RoomEvent) -> None:
        if isinstance(ev, RosterChanged):
            r = ev.roster
            metas = {m.id: m.meta for m in r.members}
            metas.setdefault(self_id, meta or {})
            session.router.update_room(metas, host=r.host or None, coordinator=r.coordinator)

    room = Room(ROOM, self_id=self_id, transport=transport, scheduler=sched, rng=rng,
                profile=MemberProfile(name=name, meta=meta or {}), on_event=on_room)
    mesh = Mesh(self_id=self_id, transport=transport, scheduler=sched, rng=rng)
    book = CapabilityBook(self_id=self_id, now=lambda: 1_700_000_000.0)
    router = ContentRouter(mesh=mesh, book=book, now=sched.now,
                           on_chat=lambda line: session.chats.append(line),
                           on_app=lambda f, d: session.apps.append((f, d)))
    session = Session(name, room, mesh, router)

    def sink(ev: TransportEvent) -> None:
        if not room.handle(ev):
            mesh.handle(ev)

    transport.bind(sink)
    transport.claim(self_id)
    room.start()
    return session


def test_room_roster_drives_the_mesh_and_grants_survive_migration() -> None:
    clock = FakeClock()
    bus = Bus(clock)
    a = join(bus, "a")
    clock.advance(1)
    b = join(bus, "b")
    bot = join(bus, "bot", {"role": "agent"})
    clock.advance(5)
    assert a.room.is_coordinator
    everyone = [a, b, bot]
    for s in everyone:
        others = [o.mesh.self_id for o in everyone if o is not s]
        assert sorted(s.mesh.members) == sorted(others)
        assert all(s.mesh.link_up(o) for o in others), s.name

    assert a.router.broadcast({"route": "#/2"}) == ["kbz-m-b", "kbz-m-bot"]
    bot.mesh.broadcast({"k": "chat", "text": "tampered"})
    a.router.set_grant("kbz-m-bot", Grant(perceive=AGENT_DEFAULT.perceive, act={"send-chat"}))
    clock.advance(1)
    assert b.apps == [("kbz-m-a", {"route": "#/2"})] and bot.apps == b.apps
    assert b.chats == [] and b.router.book.audit.recent("kbz-m-bot")[0].kind == "blocked"
    assert bot.router.book.may_act("kbz-m-bot", "send-chat")

    bus.kill("a")
    clock.advance(10)
    assert b.room.is_coordinator or bot.room.is_coordinator
    assert b.mesh.members == ["kbz-m-bot"] and b.mesh.link_up("kbz-m-bot")
    bot.router.send_chat("hello after migration")
    clock.advance(1)
    assert [c.text for c in b.chats] == ["hello after migration"]

    c = join(bus, "c")
    clock.advance(5)
    assert c.router.book.stamp == b.router.book.stamp == (1, "kbz-m-a"), "joiner got the inherited map"
    assert c.router.book.may_act("kbz-m-bot", "send-chat")
