"""The engine host (kibitz.backends.worker_host) and the controller's member list (kibitz.controller)
under CPython: page sessions on the in-memory bus, driven by the messages the page sends."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from kibitz.backends.page_bridge import Bridge
from kibitz.backends.page_rtc import ChannelRelay
from kibitz.backends.page_session import PageSession
from kibitz.backends.worker_host import Host
from kibitz.clock import FakeClock
from kibitz.controller import ENGINE_MEMBERS, ENGINE_METHODS, Member, check_members
from kibitz.testing import Bus

ROOM = "room-host-7q2w9x"


class Tab:
    """One page's engine host: its outgoing messages, split as the page would see them."""

    def __init__(self, bus: Bus, name: str) -> None:
        self.json: list[dict[str, Any]] = []
        self.app: list[tuple[int, str, str]] = []
        self.hidden = 0

        def open_session(config_json: str, emit: Callable[..., Any]) -> PageSession:
            page = PageSession(json.loads(config_json), emit, transport=bus.transport(name),
                               scheduler=bus.scheduler(name), rng=random.Random(name),
                               wall_clock=bus.clock.now)
            page.start()
            return page

        def hide() -> None:
            self.hidden += 1

        bridge = Bridge(lambda text: self.json.append(json.loads(text)))
        self.host = Host(lambda text: self.json.append(json.loads(text)),
                         lambda m, text, sender: self.app.append((m, text, sender)),
                         bridge, ChannelRelay(lambda h, d: None), open_session, hide)

    def send(self, msg: dict[str, Any]) -> None:
        self.host.receive(json.dumps(msg))

    def done(self, call_id: int) -> dict[str, Any]:
        return next(m for m in self.json if m["t"] == "done" and m["id"] == call_id)

    def emitted(self, event: str) -> list[Any]:
        return [m["args"] for m in self.json if m["t"] == "emit" and m["event"] == event]


async def settle(bus: Bus, seconds: float = 1.0) -> None:
    for _ in range(5):
        await asyncio.sleep(0)
    bus.clock.advance(seconds)
    for _ in range(5):
        await asyncio.sleep(0)


async def test_controller_calls_by_name_emits_and_app_data() -> None:
    bus = Bus(FakeClock())
    ann, bob = Tab(bus, "ann"), Tab(bus, "bob")
    for tab, name in ((ann, "ann"), (bob, "bob")):
        tab.host.open(1, json.dumps({"room": ROOM, "name": name}))
        tab.send({"t": "ctl", "mount": 1, "id": 1, "m": "join", "args": [{"mic": False}]})
    await settle(bus, 3)
    assert ann.done(1) == {"t": "done", "id": 1, "ok": True, "v": None}
    people = ann.emitted("participants")[-1][0]
    assert sorted(p["name"] for p in people) == ["ann", "bob"]
    bob_id = next(p["id"] for p in people if not p["isSelf"])
    # The page's mirror of what may be sent: everyone in the mesh may get directed messages.
    assert ann.emitted("policy")[-1] == [{"send": True, "act": True, "peers": {bob_id: None}}]
    ann.send({"t": "ctl", "mount": 1, "id": 2, "m": "sendChat", "args": ["hi"]})
    ann.send({"t": "ctl", "mount": 1, "id": 3, "m": "nope", "args": []})
    ann.send({"t": "ctl", "mount": 1, "id": 4, "m": "identityNonce", "args": []})
    ann.send({"t": "ctl", "mount": 9, "id": 5, "m": "join", "args": []})
    ann.send({"t": "ctl", "mount": 1, "id": 6, "m": "setName", "args": "not a list"})
    await settle(bus)
    assert ann.done(2)["ok"] and ann.done(2)["v"]["text"] == "hi"
    assert ann.done(3)["e"] == ["NotImplementedError", "Kibitz: nope() is not available in this build"]
    # The nonce binds tokens to this member's certificate (the bus gives every process one).
    assert ann.done(4)["ok"] and len(ann.done(4)["v"]) == 43
    assert ann.done(5)["e"] == ["RuntimeError", "join() after unmount"]
    assert ann.done(6)["e"][0] == "TypeError"
    ann.host.broadcast(1, '{"kind":"hi"}')
    ann.host.send_to(1, bob_id, '{"secret":1}')
    ann.host.send_to(1, "kbz-m-nobody", "1")
    ann.host.broadcast(2, "1")  # no such mount: ignored
    await settle(bus)
    ann_id = next(p["id"] for p in people if p["isSelf"])
    assert [(json.loads(t), s) for _m, t, s in bob.app] == [({"kind": "hi"}, ann_id), ({"secret": 1}, ann_id)]
    refused = [m for m in ann.json if m["t"] == "refused"]
    reason = "'kbz-m-nobody' is not in the room"
    assert refused == [{"t": "refused", "mount": 1, "peer": "kbz-m-nobody", "reason": reason}]
    assert bob.emitted("chat")[-1][0]["text"] == "hi"
    # Unmount and pagehide.
    ann.send({"t": "close", "mount": 1})
    ann.send({"t": "hide"})
    assert ann.host.mounts == {} and ann.hidden == 1
    ann.host.receive("not json")
    ann.send({"t": "what"})
    assert ann.host.errors == 2


async def test_a_page_error_keeps_its_name() -> None:
    bus = Bus(FakeClock())
    tab = Tab(bus, "ann")
    tab.host.open(1, json.dumps({"room": ROOM, "name": "ann", "startOpen": True}))
    await settle(bus)
    tab.send({"t": "ctl", "mount": 1, "id": 1, "m": "toggleMic", "args": []})  # no media here
    await settle(bus)
    assert tab.done(1)["e"] == ["RuntimeError", "no local media here: cannot turn on mic"]


def test_member_list_is_well_formed_and_dispatched() -> None:
    check_members()
    assert len(ENGINE_METHODS) == len(set(ENGINE_METHODS)) == len(ENGINE_MEMBERS)
    page = PageSession({"room": ROOM, "preview": True}, lambda *a: None)
    assert set(ENGINE_METHODS) <= set(page.handlers)
    for m in ENGINE_MEMBERS:
        if m.py is not None and not m.py.startswith("session."):
            assert callable(getattr(page, m.py)), m.name
    for bad in (Member("Bad", "(): Promise<void>", None, "x"), Member("ok", "nope", None, "x"),
                Member("ok", "(): Promise<void>", "session.Bad-Name", "x")):
        with pytest.raises(ValueError):
            check_members((bad,))
    with pytest.raises(ValueError, match="twice"):
        check_members((ENGINE_MEMBERS[0], ENGINE_MEMBERS[0]))
