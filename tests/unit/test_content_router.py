"""Content routing with capabilities enforced by senders and receivers, over meshes on the bus."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from mesh_helpers import Node, make_net, mid, spawn

from kibitz.capabilities import AGENT_DEFAULT, CapabilityBook, Grant
from kibitz.content import ChatLine, ContentRouter
from kibitz.testing import Bus

AGENT_META = {"role": "agent", "backend": "local", "egress": False}


@dataclass
class Peer:
    node: Node
    router: ContentRouter
    chats: list[ChatLine] = field(default_factory=list)
    apps: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.node.id


def wire(node: Node, clock_now: Any) -> Peer:
    book = CapabilityBook(self_id=node.id, now=lambda: 1_700_000_000.0)
    peer: Peer
    router = ContentRouter(
        mesh=node.mesh, book=book, now=clock_now, name_of=lambda p: p.removeprefix("kbz-m-"),
        on_chat=lambda line: peer.chats.append(line), on_app=lambda f, d: peer.apps.append((f, d)),
    )
    peer = Peer(node, router)
    return peer


def room(names: str = "hp", agent: str = "bot") -> tuple[Any, Bus, dict[str, Peer], dict[str, Any]]:
    clock, bus, nodes = make_net([*names, agent])
    peers = {n: wire(node, clock.now) for n, node in nodes.items()}
    metas: dict[str, Any] = {mid(n): None for n in names} | {mid(agent): AGENT_META}
    for p in peers.values():
        p.router.update_room(metas, host=None, coordinator=mid("h"))
    clock.advance(1)
    return clock, bus, peers, metas


def test_chat_reaches_readers_and_keeps_history() -> None:
    clock, _, peers, _ = room()
    line = peers["h"].router.send_chat("hello room")
    clock.advance(1)
    for n in ("p", "bot"):
        got = peers[n].chats
        assert [(c.sender, c.name, c.text, c.direct) for c in got] == [(mid("h"), "h", "hello room", False)]
        assert got[0].to_json()["from"] == mid("h")
    assert peers["h"].router.chat[-1] == line and peers["h"].chats == []


def test_chat_length_and_emptiness_are_refused() -> None:
    _, _, peers, _ = room()
    with pytest.raises(ValueError, match="500"):
        peers["h"].router.send_chat("x" * 501)
    with pytest.raises(ValueError, match="non-empty"):
        peers["h"].router.send_chat("   ")


def test_chat_history_keeps_the_last_50() -> None:
    clock, _, peers, _ = room()
    for i in range(60):
        peers["h"].router.send_chat(f"m{i}")
    clock.advance(2)
    hist = peers["p"].router.chat
    assert len(hist) == 50 and hist[0].text == "m10" and hist[-1].text == "m59"


def test_read_only_agent_is_refused_locally_and_dropped_remotely() -> None:
    clock, _, peers, _ = room()
    bot = peers["bot"]
    with pytest.raises(PermissionError, match="send-chat"):
        bot.router.send_chat("let me in")
    # A tampered agent skips its own check and writes straight to the mesh.
    bot.node.mesh.broadcast({"k": "chat", "text": "spam"})
    bot.node.mesh.broadcast({"k": "app", "data": {"move": "e4"}})
    clock.advance(1)
    for n in ("h", "p"):
        r = peers[n].router
        assert peers[n].chats == [] and peers[n].apps == []
        assert r.drops.by_reason["blocked:chat"] == 1 and r.drops.by_reason["blocked:app"] == 1
        audit = r.book.audit.recent(mid("bot"))
        assert [e.kind for e in audit] == ["blocked", "blocked"] and "spam" in audit[0].detail


def test_a_parked_agent_is_still_an_agent() -> None:
    """An agent that drops off the roster keeps its link for a while (mesh parking); it must not
    turn into a "human" with human defaults meanwhile."""
    clock, _, peers, metas = room()
    bot = peers["bot"]
    without_bot = {k: v for k, v in metas.items() if k != mid("bot")}
    for n in ("h", "p"):
        peers[n].router.update_room(without_bot, host=None, coordinator=mid("h"))
        assert peers[n].node.mesh.parked == [mid("bot")]
    bot.node.mesh.broadcast({"k": "app", "data": {"move": "e4"}})
    clock.advance(1)
    for n in ("h", "p"):
        assert peers[n].apps == [] and peers[n].router.drops.by_reason["blocked:app"] == 1
    # and a grant edited meanwhile keeps the parked agent's explicit grant
    peers["h"].router.set_grant(mid("bot"), Grant(perceive=AGENT_DEFAULT.perceive, act={"send-chat"}))
    peers["h"].router.set_grant(mid("p"), None)
    assert peers["h"].router.book.explicit(mid("bot")) is not None


def test_host_grant_then_revoke_send_chat() -> None:
    clock, _, peers, _ = room()
    h, bot = peers["h"].router, peers["bot"].router
    h.set_grant(mid("bot"), Grant(perceive=AGENT_DEFAULT.perceive, act={"send-chat"}))
    clock.advance(1)
    assert bot.book.version == 1 and peers["p"].router.book.version == 1
    bot.send_chat("thanks")
    clock.advance(1)
    assert [c.text for c in peers["p"].chats] == ["thanks"]
    h.set_grant(mid("bot"), None)
    clock.advance(1)
    with pytest.raises(PermissionError):
        bot.send_chat("again")
    peers["bot"].node.mesh.broadcast({"k": "chat", "text": "again"})
    clock.advance(1)
    assert [c.text for c in peers["p"].chats] == ["thanks"]


def test_agents_may_not_set_grants_and_forged_maps_are_ignored() -> None:
    clock, _, peers, _ = room()
    with pytest.raises(PermissionError):
        peers["bot"].router.set_grant(mid("bot"), Grant(act={"send-chat"}))
    grants = {mid("bot"): {"act": ["send-chat"], "perceive": []}}
    forged = {"k": "caps", "grants": grants, "v": 50, "by": mid("bot")}
    peers["bot"].node.mesh.broadcast(forged)
    clock.advance(1)
    assert peers["p"].router.book.version == 0
    assert not peers["p"].router.book.may_act(mid("bot"), "send-chat")


def test_directed_send_needs_receive_directed() -> None:
    clock, _, peers, _ = room()
    h = peers["h"].router
    h.send_to(mid("bot"), {"hand": ["AS"]})
    clock.advance(1)
    assert peers["bot"].apps == [(mid("h"), {"hand": ["AS"]})] and peers["p"].apps == []
    h.set_grant(mid("bot"), Grant(perceive={"read-chat"}))
    with pytest.raises(ValueError, match=r"bot .* may not receive directed messages"):
        h.send_to(mid("bot"), {"hand": ["KS"]})
    with pytest.raises(ValueError, match="may not receive directed"):
        h.send_chat("psst", to=mid("bot"))
    with pytest.raises(KeyError):
        h.send_to("kbz-m-ghost", 1)


def test_broadcast_skips_peers_that_may_not_read() -> None:
    clock, _, peers, _ = room()
    h = peers["h"].router
    h.set_grant(mid("bot"), Grant(perceive={"receive-directed"}))
    assert h.broadcast({"route": "#/x"}) == [mid("p")]
    clock.advance(1)
    assert peers["p"].apps == [(mid("h"), {"route": "#/x"})]
    assert peers["bot"].apps == []


def test_agent_act_envelope_needs_act() -> None:
    clock, _, peers, _ = room()
    h, bot = peers["h"].router, peers["bot"].router
    h.set_grant(mid("bot"), Grant(perceive=AGENT_DEFAULT.perceive, act={"send-chat"}))
    clock.advance(1)
    with pytest.raises(PermissionError, match="act"):
        bot.broadcast({"__kib_agent": "act", "action": "fold"})
    peers["bot"].node.mesh.broadcast({"k": "app", "data": {"__kib_agent": "act", "action": "fold"}})
    bot.broadcast({"__kib_agent": "chat", "text": "hi"})
    clock.advance(1)
    assert peers["p"].apps == [(mid("bot"), {"__kib_agent": "chat", "text": "hi"})]
    assert peers["p"].router.drops.by_reason["blocked:act"] == 1


def test_map_is_resent_to_joiners_and_survives_coordinator_migration() -> None:
    clock, bus, peers, metas = room()
    peers["h"].router.set_grant(mid("bot"), Grant(perceive=AGENT_DEFAULT.perceive, act={"send-chat"}))
    clock.advance(1)
    # A newcomer joins: the coordinator re-sends the map to it.
    q = wire(spawn(bus, "q"), clock.now)
    clock.advance(0.05)
    metas = {**metas, mid("q"): None}
    for p in [*peers.values(), q]:
        p.router.update_room(metas, host=None, coordinator=mid("h"))
    clock.advance(1)
    assert q.router.book.version == 1 and q.router.book.may_act(mid("bot"), "send-chat")
    # The coordinator's tab dies; p takes over and keeps enforcing the same map.
    bus.kill("h")
    metas = {k: v for k, v in metas.items() if k != mid("h")}
    for p in (peers["p"], peers["bot"], q):
        p.router.update_room(metas, host=None, coordinator=mid("p"))
    clock.advance(1)
    assert peers["p"].router.book.may_act(mid("bot"), "send-chat")
    peers["bot"].router.send_chat("still here")
    clock.advance(1)
    assert [c.text for c in q.chats] == ["still here"]
    # The new coordinator can revoke; its version continues from the map it inherited.
    peers["p"].router.set_grant(mid("bot"), None)
    clock.advance(1)
    assert q.router.book.stamp == (2, mid("p")) and peers["bot"].router.book.stamp == (2, mid("p"))
    with pytest.raises(PermissionError):
        peers["bot"].router.send_chat("gone quiet")
