"""Real ``kibitz serve --redis`` processes on one real redis-server: a node killed with SIGKILL drops
out of the live set within a few seconds and its rooms move; Redis restarted under load leaves the
nodes running and relaying, with nothing lost that was not in flight and nothing corrupted."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import websockets
from peerjs_wire import recv
from redis_fixture import RedisServer, running_redis
from server_fixture import KibitzServer, running_kibitz_server
from websockets.asyncio.client import ClientConnection

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def three_nodes(redis_url: str, *extra: str) -> Iterator[list[KibitzServer]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(running_kibitz_server("--redis", redis_url, *extra)) for _ in range(3)]


async def get_json(url: str, **params: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url, params=params) as r:
        assert r.status == 200
        return await r.json()


async def connect(node: KibitzServer | str, id_: str, token: str = "tok") -> ClientConnection:
    base = node if isinstance(node, str) else node.broker
    ws = await websockets.connect(f"{base}peerjs?{urlencode({'key': 'peerjs', 'id': id_, 'token': token})}")
    return ws


async def wait_until(check: Any, timeout: float, what: str) -> float:
    """Poll the async ``check`` until it is true; returns how long that took."""
    t0 = time.monotonic()
    while not await check():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as r:
        yield r


async def test_a_killed_node_leaves_the_live_set_and_its_rooms_move(redis_server: RedisServer) -> None:
    with three_nodes(redis_server.url) as nodes:
        a = nodes[0]
        for n in nodes:  # every node sees all three
            await wait_until(lambda n=n: _nodes_in(n, 3), 10, "three live nodes")
        # a room that does not live on node a (whose HTTP side we keep asking)
        room, doomed_url = "", a.broker
        for i in range(100):
            room = f"room-kill-{i}"
            doomed_url = await _room_node(a, room)
            if doomed_url != a.broker:
                break
        doomed = next(n for n in nodes if n.broker == doomed_url)
        others = [n for n in nodes if n is not doomed]
        # a member on the doomed node and one elsewhere have signaled each other
        m1 = await connect(doomed, "m1", "t1")
        m2 = await connect(others[1], "m2", "t2")
        assert (await recv(m1))["type"] == "OPEN" and (await recv(m2))["type"] == "OPEN"
        await m1.send(json.dumps({"type": "OFFER", "dst": "m2", "payload": 1}))
        assert (await recv(m2))["src"] == "m1"

        os.killpg(doomed.pid, signal.SIGKILL)
        t0 = time.monotonic()
        # as a client finds out: its connection is refused (once the process is really gone)
        await wait_until(lambda: _refused(doomed_url), 5, "the killed broker to refuse connections")
        # a client that failed to reach the room's broker is sent elsewhere at once (probe)
        moved = await _room_node(a, room, failed=doomed_url)
        fast = time.monotonic() - t0
        assert moved != doomed_url and moved in {n.broker for n in others}
        # every node drops it from the live set within ttl + heartbeat (3.75 s by default)
        for n in others:
            await wait_until(lambda n=n: _nodes_in(n, 2), 8, "the dead node to leave the live set")
        gone = time.monotonic() - t0
        assert [await _room_node(n, room) for n in others] == [moved, moved]
        # its ids are free for anyone, and its members' contacts elsewhere heard LEAVE
        assert await recv(m2, 8) == {"type": "LEAVE", "src": "m1", "dst": "m2"}
        thief = await connect(others[0], "m1", "another-token")
        assert (await recv(thief))["type"] == "OPEN"
        print(f"\nnode kill: moved by probe in {fast * 1e3:.0f} ms; out of the live set in {gone:.2f} s")
        for ws in (m1, m2, thief):
            await ws.close()


async def test_redis_restarted_under_load_nodes_reconnect_and_nothing_corrupts() -> None:
    with running_redis() as rds, three_nodes(rds.url) as nodes:
        for n in nodes:
            await wait_until(lambda n=n: _nodes_in(n, 3), 10, "three live nodes")
        # 6 pairs, each pair split across two nodes, streaming numbered CANDIDATEs both ways
        pairs: list[tuple[ClientConnection, ClientConnection, str, str]] = []
        for i in range(6):
            x, y = nodes[i % 3], nodes[(i + 1) % 3]
            a, b = f"pa{i}", f"pb{i}"
            wa, wb = await connect(x, a, f"ta{i}"), await connect(y, b, f"tb{i}")
            assert (await recv(wa))["type"] == "OPEN" and (await recv(wb))["type"] == "OPEN"
            pairs.append((wa, wb, a, b))
        got: dict[str, list[int]] = {}
        bad: list[Any] = []
        stop = asyncio.Event()

        async def pump(ws: ClientConnection, me: str, peer: str) -> None:
            n = 0
            while not stop.is_set():
                with contextlib.suppress(websockets.ConnectionClosed):
                    frame = {"type": "CANDIDATE", "dst": peer, "payload": {"n": n, "by": me}}
                    await ws.send(json.dumps(frame))
                n += 1
                await asyncio.sleep(0.01)

        async def drain(ws: ClientConnection, me: str, peer: str) -> None:
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") != "CANDIDATE":
                    continue  # EXPIRE while Redis was away is fine
                p = msg.get("payload")
                ok = msg.get("src") == peer and msg.get("dst") == me
                if not ok or not isinstance(p, dict) or p.get("by") != peer:
                    bad.append(msg)
                    continue
                got.setdefault(me, []).append(int(p["n"]))

        tasks = []
        for wa, wb, a, b in pairs:
            tasks += [asyncio.create_task(pump(wa, a, b)), asyncio.create_task(pump(wb, b, a))]
            tasks += [asyncio.create_task(drain(wa, a, b)), asyncio.create_task(drain(wb, b, a))]
        await asyncio.sleep(1.0)
        before = {k: len(v) for k, v in got.items()}
        assert len(before) == 12 and all(v > 10 for v in before.values())
        rds.kill()
        await asyncio.sleep(1.5)
        rds.start()  # empty: the nodes must put their ids back
        for n in nodes:
            await wait_until(lambda n=n: _cluster_up(n), 10, "the node to reach Redis again")
        mark = {k: len(v) for k, v in got.items()}
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.sleep(0.5)
        for t in tasks:
            t.cancel()
        # every pair relays again, nothing garbled, and each direction stays in order without duplicates
        assert bad == []
        for me, ns in got.items():
            assert len(ns) > mark[me] + 20, f"{me} received nothing new after Redis came back"
            assert all(x < y for x, y in itertools.pairwise(ns)), f"{me}: out of order or duplicated"
        # ids were written back: another token cannot take one
        thief = await connect(nodes[2], "pa0", "other")
        assert (await recv(thief))["type"] == "ID-TAKEN"
        for n in nodes:  # no node fell over
            assert (await get_json(f"{n.http}/healthz"))["ok"] is True
        for wa, wb, _, _ in pairs:
            await wa.close()
            await wb.close()


async def _refused(url: str) -> bool:
    try:
        ws = await connect(url, "probe", "x")
    except (OSError, websockets.InvalidHandshake):  # refused, or reset during the handshake
        return True
    await ws.close()
    return False


async def _nodes_in(node: KibitzServer, n: int) -> bool:
    try:
        return int((await get_json(f"{node.http}/healthz"))["nodes"]) == n
    except (aiohttp.ClientError, OSError):
        return False


async def _cluster_up(node: KibitzServer) -> bool:
    return bool((await get_json(f"{node.http}/healthz"))["ok"])


async def _room_node(node: KibitzServer, room: str, failed: str | None = None) -> str:
    params = {"room": room, **({"failed": failed} if failed else {})}
    return str((await get_json(f"{node.http}/api/signal", **params))["url"])
