"""Three ``kibitz serve`` nodes on one real redis-server, in this process, driven by raw PeerJS-wire
clients: /api/signal agrees everywhere, frames cross nodes (relay, queue, EXPIRE, LEAVE), broker ids
are unique across the service (ID-TAKEN, same-token takeover with a fencing epoch), and Redis going
away is survived (claims refused meanwhile, ids written back when it returns)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import redis.asyncio as aioredis
import websockets
from peerjs_wire import recv, send, silent
from redis_fixture import RedisServer, running_redis
from websockets.asyncio.client import ClientConnection

from kibitz.server.app import RunningServer, start_server
from kibitz.server.cluster import MSG_UNAVAILABLE
from kibitz.server.cluster_wire import IdRecord
from kibitz.server.config import ServerConfig
from kibitz.server.signal import rendezvous

BASE = ServerConfig(
    host="127.0.0.1", port=0, broker_port=0, dist_dir=ServerConfig().dist_dir / "missing",
    cluster_heartbeat=0.2, cluster_node_ttl=1.0, expire_timeout=1.0, close_grace=0.5,
)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as r:
        yield r


Nodes = Callable[..., Awaitable[list[RunningServer]]]


@pytest.fixture
async def nodes(redis_server: RedisServer) -> AsyncIterator[Nodes]:
    started: list[RunningServer] = []
    prefix = f"t{secrets.token_hex(4)}:"

    async def make(n: int = 3, **overrides: Any) -> list[RunningServer]:
        cfg = replace(BASE, redis_url=redis_server.url, redis_prefix=prefix, **overrides)
        out = [await start_server(cfg) for _ in range(n)]
        started.extend(out)
        await wait_for(lambda: all(len(s.cluster.view) == len(started) for s in started if s.cluster))
        return out

    yield make
    for s in started:
        await s.close()


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class Clients:
    def __init__(self) -> None:
        self.opened: list[ClientConnection] = []

    async def connect(
        self, node: RunningServer, id_: str, token: str = "tok", expect: str | None = "OPEN"
    ) -> ClientConnection:
        q = urlencode({"key": "peerjs", "id": id_, "token": token})
        ws = await websockets.connect(f"{node.broker_url}peerjs?{q}&version=1.5.5")
        self.opened.append(ws)
        if expect is not None:
            assert (await recv(ws))["type"] == expect
        return ws


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    c = Clients()
    yield c
    for ws in c.opened:
        await ws.close()


async def signal(node: RunningServer, room: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(f"{node.http_url}/api/signal", params={"room": room}) as r:
        assert r.status == 200
        body = await r.json()
        assert isinstance(body, dict)
        return body


# ------------------------------------------------------------------------------------------------


async def test_signal_names_the_same_broker_on_every_node(nodes: Nodes) -> None:
    a, b, c = await nodes(3)
    urls = sorted(s.broker_url for s in (a, b, c))
    seen = set()
    for i in range(30):
        room = f"Room {i}"
        answers = [await signal(n, room) for n in (a, b, c)]
        assert answers[0] == answers[1] == answers[2]
        # the room as the engine names it: "Room 7" and "room-7" meet on one broker
        assert answers[0] == await signal(a, f"room-{i}")
        assert answers[0]["url"] == rendezvous(f"room-{i}", urls)
        seen.add(answers[0]["url"])
    assert seen == set(urls)  # every node gets rooms


async def test_frames_cross_nodes_with_src_set_and_extra_fields_stripped(
    nodes: Nodes, clients: Clients
) -> None:
    a, b, _ = await nodes(3)
    alice = await clients.connect(a, "alice")
    bob = await clients.connect(b, "bob")
    await send(alice, {"type": "OFFER", "dst": "bob", "payload": {"sdp": "x", "n": [1, 2]}})
    offer = {"type": "OFFER", "src": "alice", "dst": "bob", "payload": {"sdp": "x", "n": [1, 2]}}
    assert await recv(bob) == offer
    await send(bob, {"type": "ANSWER", "dst": "alice", "src": "mallory", "payload": 7, "extra": True})
    assert await recv(alice) == {"type": "ANSWER", "src": "bob", "dst": "alice", "payload": 7}
    # order is kept across nodes
    for i in range(50):
        await send(alice, {"type": "CANDIDATE", "dst": "bob", "payload": i})
    assert [(await recv(bob))["payload"] for _ in range(50)] == list(range(50))
    assert a.cluster is not None and b.cluster is not None
    assert a.cluster.cross_out == 51 and b.cluster.cross_in == 51
    # contacts span nodes: bob leaving tells alice at once, and alice forgets him as a contact
    assert "bob" in a.broker.clients["alice"].contacts and a.cluster.remote_home["bob"] == b.cluster.node
    await bob.close()
    assert await recv(alice) == {"type": "LEAVE", "src": "bob", "dst": "alice"}
    assert "bob" not in a.broker.clients["alice"].contacts and "bob" not in a.cluster.remote_home


async def test_offline_frames_are_queued_for_a_claim_on_any_node_or_expire_back(
    nodes: Nodes, clients: Clients
) -> None:
    a, b, c = await nodes(3)
    alice = await clients.connect(a, "alice")
    await send(alice, {"type": "OFFER", "dst": "late", "payload": "hello"})
    await send(alice, {"type": "CANDIDATE", "dst": "late", "payload": "c1"})
    await send(alice, {"type": "LEAVE", "dst": "nobody"})  # LEAVE to an offline id: dropped
    await asyncio.sleep(0.2)
    late = await clients.connect(b, "late")
    assert await recv(late) == {"type": "OFFER", "src": "alice", "dst": "late", "payload": "hello"}
    assert await recv(late) == {"type": "CANDIDATE", "src": "alice", "dst": "late", "payload": "c1"}
    await send(alice, {"type": "OFFER", "dst": "ghost", "payload": 1})
    await send(alice, {"type": "OFFER", "dst": "ghost", "payload": 2})
    # nobody claims "ghost": one EXPIRE per sender after expire_timeout (1 s here)
    assert await recv(alice, 5) == {"type": "EXPIRE", "src": "ghost", "dst": "alice"}
    assert await silent(alice, 0.5)
    ghost = await clients.connect(c, "ghost")
    assert await silent(ghost)
    assert a.cluster is not None and a.broker.metrics.expired == 2


async def test_id_is_unique_across_nodes_and_the_same_token_takes_it_over_anywhere(
    nodes: Nodes, clients: Clients
) -> None:
    a, b, c = await nodes(3)
    old = await clients.connect(a, "carol", token="t1")
    dave = await clients.connect(c, "dave")
    await send(dave, {"type": "OFFER", "dst": "carol", "payload": "before"})
    assert (await recv(old))["payload"] == "before"
    # another token on another node: ID-TAKEN, then a clean close
    intruder = await clients.connect(b, "carol", token="t2", expect=None)
    assert await recv(intruder) == {"type": "ID-TAKEN", "payload": {"msg": "ID is taken"}}
    await asyncio.wait_for(intruder.wait_closed(), 3)
    assert intruder.close_code == 1008
    # the same token on node b: OPEN at once, node a closes its copy (1001) without a LEAVE
    new = await clients.connect(b, "carol", token="t1")
    await asyncio.wait_for(old.wait_closed(), 3)
    assert old.close_code == 1001
    assert await silent(dave)
    erin = await clients.connect(a, "erin")
    await send(erin, {"type": "OFFER", "dst": "carol", "payload": "after"})
    assert (await recv(new)) == {"type": "OFFER", "src": "erin", "dst": "carol", "payload": "after"}
    assert b.broker.metrics.takeovers == 1
    assert a.cluster is not None and a.cluster.kicks == 1
    assert a.broker.metrics.connected == 1 and b.broker.metrics.connected == 1
    # carol's contacts moved with her (dave never signaled the new socket): when she leaves from
    # node b, dave (node c) hears it as well as erin
    await new.close()
    assert await recv(dave) == {"type": "LEAVE", "src": "carol", "dst": "dave"}
    assert await recv(erin) == {"type": "LEAVE", "src": "carol", "dst": "erin"}


async def test_fencing_epoch_keeps_a_stale_node_from_releasing_or_keeping_an_id(
    nodes: Nodes, clients: Clients, redis_server: RedisServer
) -> None:
    a, b, _ = await nodes(3)
    assert a.cluster is not None and b.cluster is not None
    await clients.connect(a, "erin", token="t1")
    first = a.broker.clients["erin"].epoch
    await clients.connect(b, "erin", token="t1")
    second = b.broker.clients["erin"].epoch
    assert second == first + 1
    r = aioredis.Redis.from_url(redis_server.url)
    key = f"{a.config.redis_prefix}id:erin"
    rec = IdRecord.decode(await r.get(key))
    assert rec is not None and (rec.node, rec.epoch) == (b.cluster.node, second)
    # node a, acting on its old epoch, can neither delete the record...
    await a.cluster._release([("erin", first)])
    assert IdRecord.decode(await r.get(key)) == rec
    # ...nor keep a copy: a refresh (what it does every lease/3) closes whatever it still holds
    fake = await clients.connect(a, "frank", token="x")
    a.broker.clients["frank"].epoch = 1  # a record Redis never gave to this node
    await r.set(f"{a.config.redis_prefix}id:frank", f"{b.cluster.node} 2 other")
    await a.cluster.refresh_all()
    await asyncio.wait_for(fake.wait_closed(), 3)
    assert a.cluster.lost_ids == 1
    await r.aclose()


async def test_redis_outage_refuses_claims_then_nodes_write_their_ids_back(clients: Clients) -> None:
    with running_redis() as own:  # this test restarts Redis: not the module's
        cfg = replace(BASE, redis_url=own.url)
        a, b = await start_server(cfg), await start_server(cfg)
        try:
            ca, cb = a.cluster, b.cluster
            assert ca is not None and cb is not None
            await wait_for(lambda: len(ca.view) == 2 and len(cb.view) == 2)
            alice = await clients.connect(a, "alice", token="ta")
            bob = await clients.connect(b, "bob", token="tb")
            own.kill()
            await wait_for(lambda: not ca.up and not cb.up)
            # fail closed: no id can be claimed while Redis cannot say who holds it
            refused = await clients.connect(a, "carol", expect=None)
            assert await recv(refused) == {"type": "ERROR", "payload": {"msg": MSG_UNAVAILABLE}}
            own.start()  # empty: everything Redis knew is gone
            await wait_for(lambda: (ca.reasserts, cb.reasserts) == (1, 1) and not ca._tasks and not cb._tasks)
            await wait_for(lambda: len(ca.view) == 2 and len(cb.view) == 2)
            # the ids are back in Redis: another token is refused on the other node
            thief = await clients.connect(b, "alice", token="other", expect=None)
            assert (await recv(thief))["type"] == "ID-TAKEN"
            # and frames cross nodes again (the subscriptions came back)
            await wait_for(lambda: ca._sub_ready.is_set() and cb._sub_ready.is_set())
            await send(alice, {"type": "OFFER", "dst": "bob", "payload": "again"})
            assert await recv(bob) == {"type": "OFFER", "src": "alice", "dst": "bob", "payload": "again"}
        finally:
            await a.close()
            await b.close()


async def test_metrics_show_this_node_and_the_service(nodes: Nodes, clients: Clients) -> None:
    a, b, c = await nodes(3)
    alice = await clients.connect(a, "alice")
    bob = await clients.connect(b, "bob")
    await send(alice, {"type": "OFFER", "dst": "bob", "payload": 1})
    await recv(bob)
    assert a.cluster is not None and c.cluster is not None
    await wait_for(lambda: 'direction="sent"} 1' in c.cluster.render(), 5)  # c read a's heartbeat
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{c.http_url}/metrics") as r:
            text = await r.text()
        async with s.get(f"{c.http_url}/healthz") as r:
            health = await r.json()
    assert "kibitz_cluster_up 1" in text
    assert "kibitz_cluster_nodes 3" in text
    assert f'kibitz_cluster_node_peers{{node="{a.cluster.node}"}} 1' in text
    sent = f'kibitz_cluster_node_cross_node_messages_total{{node="{a.cluster.node}",direction="sent"}} 1'
    assert sent in text
    assert health["ok"] is True and health["nodes"] == 3


async def test_two_tokens_claiming_one_id_at_once_on_one_node_get_one_open(nodes: Nodes) -> None:
    """Claims for one id race on one node: Redis must see them one after the other, or the second
    would find the first's fresh record, think it stale (no socket here yet) and take it over."""
    (a,) = await nodes(1)
    for round_ in range(5):
        q = [urlencode({"key": "peerjs", "id": f"race{round_}", "token": t}) for t in ("t1", "t2")]
        socks = await asyncio.gather(*(websockets.connect(f"{a.broker_url}peerjs?{x}") for x in q))
        first = sorted([(await recv(ws))["type"] for ws in socks])
        assert first == ["ID-TAKEN", "OPEN"], first
        for ws in socks:
            await ws.close()
