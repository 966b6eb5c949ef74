"""The Session controller (what the page's Kibitz.mount and the agent SDK wrap) on the in-memory bus."""

from __future__ import annotations

import random
from typing import Any

import pytest

from kibitz.clock import FakeClock
from kibitz.crypto import PrivateKey
from kibitz.gate import HostSpec, JoinGate
from kibitz.session import Session
from kibitz.testing import Bus

ROOM = "room-7hq2x9c4v1"


def make(bus: Bus, name: str, **kw: Any) -> Session:
    s = Session(
        ROOM,
        transport=bus.transport(name),
        scheduler=bus.scheduler(name),
        rng=random.Random(name),
        name=name.title(),
        wall_clock=lambda: bus.clock.now(),
        **kw,
    )
    s.start()
    return s


def settle(clock: FakeClock, seconds: float = 3.0) -> None:
    clock.advance(seconds)


@pytest.fixture
def bus() -> Bus:
    return Bus(FakeClock())


def test_three_join_converge_and_messages_route(bus: Bus) -> None:
    people = [make(bus, n) for n in ("ann", "bob", "cy")]
    settle(bus.clock)
    for s in people:
        s.join()
    settle(bus.clock)
    ids = {s.self_id for s in people}
    for s in people:
        assert {p["id"] for p in s.get_participants()} == ids
        assert all(p["linkUp"] for p in s.get_participants())
        assert sum(1 for p in s.get_participants() if p["isSelf"]) == 1
    got: dict[str, list[tuple[Any, str]]] = {s.self_id: [] for s in people}
    for s in people:
        s.on_message(lambda data, frm, me=s.self_id: got[me].append((data, frm)))
    ann, bob, cy = people
    assert sorted(ann.broadcast({"kind": "route", "route": "#/b"})) == sorted([bob.self_id, cy.self_id])
    ann.send_to(cy.self_id, {"secret": 1})
    settle(bus.clock, 0.5)
    assert got[ann.self_id] == []  # never echoed
    assert got[bob.self_id] == [({"kind": "route", "route": "#/b"}, ann.self_id)]
    assert got[cy.self_id] == [({"kind": "route", "route": "#/b"}, ann.self_id), ({"secret": 1}, ann.self_id)]


def test_chat_rename_and_leave_events(bus: Bus) -> None:
    ann, bob = make(bus, "ann"), make(bus, "bob")
    settle(bus.clock)
    ann.join()
    bob.join()
    settle(bus.clock)
    lines: list[dict[str, Any]] = []
    left: list[str] = []
    bob.on("chat", lines.append)
    bob.on("leave", lambda p: left.append(p["id"]))
    ann.send_chat("hello bob")
    with pytest.raises(ValueError, match="exceeds 500"):
        ann.send_chat("x" * 501)
    ann.set_name("Annie")
    settle(bus.clock, 1.0)
    assert [line["text"] for line in lines] == ["hello bob"]
    assert lines[0]["from"] == ann.self_id
    assert [c["text"] for c in bob.get_chat()] == ["hello bob"]
    assert {p["id"]: p["name"] for p in bob.get_participants()}[ann.self_id] == "Annie"
    ann.close()
    settle(bus.clock, 0.5)
    assert left == [ann.self_id]
    assert [p["id"] for p in bob.get_participants()] == [bob.self_id]


def test_listener_errors_are_isolated(bus: Bus) -> None:
    ann, bob = make(bus, "ann"), make(bus, "bob")
    settle(bus.clock)
    seen: list[Any] = []

    def boom(_: Any, __: str) -> None:
        raise RuntimeError("bad listener")

    bob.on_message(boom)
    bob.on_message(lambda d, f: seen.append(d))
    ann.join()
    bob.join()
    settle(bus.clock)
    ann.broadcast(1)
    settle(bus.clock, 0.5)
    assert seen == [1]
    assert bob.handler_errors == 1
    with pytest.raises(ValueError, match="unknown event"):
        bob.on("nope", print)


def test_agent_is_read_only_until_granted_and_grants_survive_migration(bus: Bus) -> None:
    host = make(bus, "ann")
    settle(bus.clock)  # ann coordinates
    bob = make(bus, "bob")
    agent = make(bus, "zed", meta={"role": "agent"})
    settle(bus.clock)
    for s in (host, bob, agent):
        s.join()
    settle(bus.clock)
    assert host.get_state()["isCoordinator"]
    seen: list[dict[str, Any]] = []
    bob.on("chat", seen.append)
    with pytest.raises(PermissionError):
        agent.send_chat("hi from the agent")
    assert not agent.can("send-chat")
    # A tampered agent that ignores its own grant is still dropped by every honest receiver.
    agent.book._grants[agent.self_id] = agent.book.grant_of(host.self_id)
    agent.send_chat("sneaky")
    settle(bus.clock, 0.5)
    assert seen == []
    assert any(e["kind"] == "blocked" for e in bob.get_agent_audit(agent.self_id))
    del agent.book._grants[agent.self_id]
    grant = {"perceive": ["read-chat", "read-roster", "receive-directed"], "act": ["send-chat"]}
    host.set_capability_grant(agent.self_id, grant)
    settle(bus.clock, 0.5)
    assert agent.can("send-chat")
    agent.send_chat("now allowed")
    settle(bus.clock, 0.5)
    assert [line["text"] for line in seen] == ["now allowed"]
    # The coordinator's process dies: the map it authored must hold under the new coordinator.
    bus.kill("ann")
    settle(bus.clock, 5.0)
    assert bob.get_state()["isCoordinator"] or agent.get_state()["isCoordinator"]
    assert "send-chat" in bob.get_capability_grant(agent.self_id)["act"]
    agent.send_chat("after migration")
    settle(bus.clock, 0.5)
    assert [line["text"] for line in seen] == ["now allowed", "after migration"]


def test_send_to_agent_refused_once_receive_directed_revoked(bus: Bus) -> None:
    ann, agent = make(bus, "ann"), make(bus, "zed", meta={"role": "agent"})
    settle(bus.clock)
    ann.join()
    agent.join()
    settle(bus.clock)
    ann.send_to(agent.self_id, {"ok": True})
    ann.set_capability_grant(agent.self_id, {"perceive": ["read-chat"], "act": []})
    with pytest.raises(ValueError, match="may not receive directed"):
        ann.send_to(agent.self_id, {"ok": False})


def test_not_in_call_means_no_data(bus: Bus) -> None:
    ann, bob = make(bus, "ann"), make(bus, "bob")
    settle(bus.clock)
    ann.join()
    settle(bus.clock)
    assert ann.broadcast("x") == []  # nobody else is in the call
    with pytest.raises(RuntimeError, match="join the call"):
        bob.send_chat("hi")
    assert not bob.get_state()["inCall"]


def test_waiting_room_knock_admit_and_deny(bus: Bus) -> None:
    key = PrivateKey.generate()
    gate = JoinGate(host=HostSpec(key=key.public_key.to_text()))
    guest = make(bus, "gus", gate=gate)  # first: it coordinates, and has no say
    settle(bus.clock)
    guest.join()
    host = make(bus, "ann", gate=gate, host_key=key.to_text())
    settle(bus.clock)
    host.join()
    settle(bus.clock)
    assert guest.get_state()["isCoordinator"] and host.get_state()["isHost"]
    assert not guest.get_state()["isHost"]
    assert not guest.set_lobby(True), "a coordinator that is not the host cannot moderate"
    assert host.set_lobby(True)
    queue: list[list[dict[str, Any]]] = []
    host.on("knocks", queue.append)
    bob, cy = make(bus, "bob", gate=gate), make(bus, "cy", gate=gate)
    statuses: dict[str, list[str]] = {"bob": [], "cy": []}
    bob.on("lobby", statuses["bob"].append)
    cy.on("lobby", statuses["cy"].append)
    settle(bus.clock)
    bob.knock("Bobby")
    cy.knock("Cyd")
    settle(bus.clock, 1.0)
    assert sorted(k["name"] for k in host.get_knocks()) == ["Bobby", "Cyd"]
    assert queue, "the host saw no knocks event"
    assert statuses["bob"][-1] == "waiting"
    assert {p["id"] for p in host.get_participants()} == {host.self_id, guest.self_id}  # nobody in yet
    assert host.admit(bob.self_id) and host.deny(cy.self_id)
    settle(bus.clock, 1.0)
    assert statuses["bob"][-1] == "admitted"
    assert statuses["cy"][-1] == "denied"
    assert {p["id"] for p in host.get_participants()} == {host.self_id, guest.self_id, bob.self_id}
    assert {p["name"] for p in bob.get_participants()} == {"Ann", "Gus", "Bobby"}
    assert host.get_state()["lobbyOn"] and bob.get_state()["lobbyOn"]
    assert [p["role"] for p in bob.get_participants() if p["id"] == host.self_id] == ["host"]
    assert not bob.set_lobby(False)  # no-op: bob is not the host
    settle(bus.clock, 0.5)
    assert host.get_state()["lobbyOn"]


def test_an_agent_that_coordinates_cannot_author_grants(bus: Bus) -> None:
    agent = make(bus, "zed", meta={"role": "agent"})
    settle(bus.clock)
    agent.join()
    settle(bus.clock)
    assert agent.get_state()["isCoordinator"]  # first in the room: it coordinates presence
    ann, bob = make(bus, "ann"), make(bus, "bob")
    settle(bus.clock)
    ann.join()
    bob.join()
    settle(bus.clock)
    everything = {
        "perceive": ["see-screen", "hear-audio", "read-chat", "read-roster", "receive-directed"],
        "act": ["send-chat", "speak", "act"],
    }
    with pytest.raises(PermissionError, match="agents may not"):
        agent.set_capability_grant(agent.self_id, everything)
    # Tampered: the agent forges its own book and pushes the map anyway; honest peers ignore it.
    from kibitz.capabilities import CapsSnapshot, sanitize
    from kibitz.protocol.content import Caps, to_wire

    forged = CapsSnapshot(99, agent.self_id, {agent.self_id: sanitize(everything)})
    agent.mesh.broadcast(to_wire(Caps.of(forged)))
    settle(bus.clock, 0.5)
    for human in (ann, bob):
        assert human.get_capability_grant(agent.self_id)["act"] == []
    # A room without a host: every person may change grants, and the newest map holds everywhere.
    ann.set_capability_grant(agent.self_id, {"perceive": ["read-chat"], "act": ["send-chat"]})
    settle(bus.clock, 0.5)
    assert bob.get_capability_grant(agent.self_id)["act"] == ["send-chat"]
    assert agent.can("send-chat")
    bob.set_capability_grant(agent.self_id, {"perceive": ["read-chat"], "act": []})
    settle(bus.clock, 0.5)
    assert ann.get_capability_grant(agent.self_id)["act"] == [] and not agent.can("send-chat")


def test_people_win_the_race_for_a_freed_coordinator_slot(bus: Bus) -> None:
    ann = make(bus, "ann")
    settle(bus.clock)
    ann.join()
    agent = make(bus, "zed", meta={"role": "agent"})
    bob = make(bus, "bob")
    settle(bus.clock)
    agent.join()
    bob.join()
    settle(bus.clock)
    bus.kill("ann")
    settle(bus.clock, 5.0)
    assert bob.get_state()["isCoordinator"] and not agent.get_state()["isCoordinator"]


def test_async_listeners_are_refused_by_the_core_not_silently_dropped(bus: Bus) -> None:
    ann = make(bus, "ann")
    calls: list[str] = []

    async def handler(_state: dict[str, Any]) -> None:
        calls.append("ran")  # pragma: no cover - the core never awaits it

    ann.on("state", handler)
    settle(bus.clock)
    ann.join()
    settle(bus.clock)
    assert calls == [] and ann.handler_errors > 0


def test_a_taken_member_id_is_replaced_before_joining(bus: Bus) -> None:
    first = make(bus, "ann", member_id="kbz-m-samesamesame0001")
    settle(bus.clock)
    copy = make(bus, "bob", member_id="kbz-m-samesamesame0001")  # e.g. a duplicated tab's identity
    settle(bus.clock)
    assert copy.self_id != "kbz-m-samesamesame0001"
    assert copy.mesh.self_id == copy.book.self_id == copy.content.self_id == copy.self_id
    first.join()
    copy.join()
    settle(bus.clock)
    got: list[Any] = []
    first.on_message(lambda data, frm: got.append((data, frm)))
    copy.broadcast("hello")
    settle(bus.clock, 0.5)
    assert got == [("hello", copy.self_id)]


def test_state_event_says_connected_again_when_a_participant_rejoins_the_same_roster(bus: Bus) -> None:
    """A participant whose presence link drops and comes back (its broker moved to another node,
    say) is told ``connected`` once the new link opens, even though the roster did not change: the
    page's ``getState()`` is the last state event."""
    ann, bob = make(bus, "ann"), make(bus, "bob")
    settle(bus.clock)
    ann.join()
    bob.join()
    settle(bus.clock)
    states: list[dict[str, Any]] = []
    bob.on("state", states.append)
    assert bob.room is not None and bob.room.presence_link is not None
    bus.drop_link(bob.room.presence_link)
    settle(bus.clock, 5.0)
    assert bob.get_state()["connected"] is True
    assert states and states[-1] == bob.get_state()
    assert any(not s["connected"] for s in states)  # it did go through a reconnect
