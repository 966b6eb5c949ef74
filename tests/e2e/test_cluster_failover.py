"""A node of a three-node service killed mid-call: two Chromium tabs and a CPython agent share a room
whose broker lives on one ``kibitz serve --redis`` node; that node gets SIGKILL while one tab
broadcasts numbered app messages. The call goes on: the data links are peer to peer, so every
message reaches the other tab and the agent exactly once and in order, and presence heals on the
surviving nodes (every member re-claims through ``/api/signal?failed=…``, the room's broker id is
held on a live node again and all three agree on one coordinator) within the heal target.

The pages and the agent use node A's HTTP side (as behind a load balancer that stopped sending to
the dead node); the room is picked so that its broker is on another node, the one killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from agent_loop import AgentLoop
from browser_guard import guarded_context
from playwright.sync_api import Browser, Page
from redis_fixture import RedisServer, running_redis
from server_fixture import KibitzServer, running_kibitz_server

from kibitz.agent import Agent
from kibitz.ids import room_peer_id
from kibitz.server.cluster_wire import IdRecord

#: The room engine's heal target after a coordinator crash (docs/benchmarks.md, room engine); a
#: node loss was measured at 0.8-2.3 s at load averages 8-17 and 4.2 s at 20 on this 2-core box
#: (docs/scale.md). Speed is a benchmark matter, so the test only insists that presence heals well
#: within its 30 s watch (HEAL_BOUND_S) and prints the time against the target.
HEAL_TARGET_S = 3.0
HEAL_BOUND_S = 15.0
PERIOD_MS = 50

CONVERGED = """(n) => { const ps = window.call.getParticipants(); const s = window.call.getState();
  return s.connected && ps.length === n && ps.every((p) => p.linkUp); }"""


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[RedisServer, list[KibitzServer]]]:
    with running_redis() as rds, contextlib.ExitStack() as stack:
        nodes = [stack.enter_context(running_kibitz_server("--redis", rds.url)) for _ in range(3)]
        deadline = time.monotonic() + 15
        while not all(_get(f"{n.http}/healthz")["nodes"] == 3 for n in nodes):  # every node sees all
            assert time.monotonic() < deadline, "the nodes did not find each other"
            time.sleep(0.1)
        yield rds, nodes


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _signal(node: KibitzServer, room: str) -> str:
    return str(_get(f"{node.http}/api/signal?{urllib.parse.urlencode({'room': room})}")["url"])


def _live_nodes(rds: RedisServer) -> set[str]:
    r = redis.Redis.from_url(rds.url)
    try:
        return {m.decode() for m in r.smembers("kbz:nodes") if r.exists(f"kbz:node:{m.decode()}")}
    finally:
        r.close()


def _holder(rds: RedisServer, peer_id: str) -> str | None:
    r = redis.Redis.from_url(rds.url)
    try:
        rec = IdRecord.decode(r.get(f"kbz:id:{peer_id}"))
        return rec.node if rec is not None else None
    finally:
        r.close()


def _pump(pages: list[Page], ms: float = 10) -> None:
    for page in pages:
        if not page.is_closed():
            page.wait_for_timeout(ms)
            return
    time.sleep(ms / 1000)


def test_node_killed_mid_call_the_call_goes_on_and_presence_heals(
    browser: Browser, service: tuple[RedisServer, list[KibitzServer]]
) -> None:
    rds, nodes = service
    a = nodes[0]
    room = next(f"room-failover-{i}" for i in range(200) if _signal(a, f"room-failover-{i}") != a.broker)
    doomed = next(n for n in nodes if n.broker == _signal(a, room))
    outside: list[str] = []
    pages: list[Page] = []
    loop = AgentLoop()
    loop.pump = lambda: _pump(pages)
    got: list[Any] = []
    bot = Agent(server=a.http, room=room, name="Scribe", backend="test-model", egress=False)
    try:
        for name in ("ann", "bob"):
            ctx = guarded_context(browser, outside)
            page = ctx.new_page()
            page.goto(f"{a.http}/demo/follow.html?room={room}&name={name}&open=0#/home")
            pages.append(page)
        for page in pages:
            page.wait_for_function("() => window.call", timeout=30_000)
            page.evaluate("() => window.call.ready")
            page.evaluate("() => window.call.join()")
        bot.on_data(lambda data, frm: got.append(data))
        loop.run(bot.start(), 40)
        for page in pages:
            page.wait_for_function(CONVERGED, arg=3, timeout=30_000)
        ann, bob = pages
        ann_id = str(ann.evaluate("() => window.call.getState().self"))
        bob.evaluate(
            """(from) => { window.seqs = []; window.call.onMessage((d, f) => {
                 if (f === from && d && typeof d.seq === 'number') window.seqs.push(d.seq); }); }""",
            ann_id,
        )
        # ann streams numbered broadcasts across the kill
        ann.evaluate(
            """(ms) => { window.sent = 0; window.timer = setInterval(() => {
                 window.call.broadcast({ seq: window.sent }); window.sent += 1; }, ms); }""",
            PERIOD_MS,
        )
        bob.wait_for_function("() => window.seqs.length >= 10", timeout=10_000)
        holder_before = _holder(rds, room_peer_id(room))
        assert holder_before is not None

        os.killpg(doomed.pid, signal.SIGKILL)
        killed = time.monotonic()
        live_before = _live_nodes(rds)

        def healed() -> bool:
            holder = _holder(rds, room_peer_id(room))
            if holder is None or holder == holder_before or holder not in _live_nodes(rds):
                return False
            if not all(page.evaluate(CONVERGED, 3) for page in pages):
                return False
            coords = {page.evaluate("() => window.call.getState().coordinator") for page in pages}
            coords.add(loop.call(lambda: bot.session.get_state()["coordinator"]))
            return len(coords) == 1

        def diag() -> str:
            """What each member thinks (for a failure message)."""
            js = "() => [window.call.getState(), window.call.getParticipants().map((p) => [p.id, p.linkUp])]"
            tabs = [page.evaluate(js) for page in pages]
            agent = loop.call(lambda: bot.session.get_state())
            holder = _holder(rds, room_peer_id(room))
            return f"room id on {holder} (was {holder_before}), live {_live_nodes(rds)}: {tabs} agent {agent}"

        deadline = killed + 30
        while not healed():
            assert time.monotonic() < deadline, f"presence did not heal within 30 s: {diag()}"
            _pump(pages, 50)
        heal_s = time.monotonic() - killed
        assert len(_live_nodes(rds)) == 2 or len(live_before) == 3

        # keep streaming a little after the heal, then stop and count
        ann.wait_for_timeout(1000)
        sent = int(ann.evaluate("() => { clearInterval(window.timer); return window.sent; }"))
        bob.wait_for_function("(n) => window.seqs.length >= n", arg=sent, timeout=15_000)
        loop.until(lambda: sum(1 for d in got if isinstance(d, dict) and "seq" in d) >= sent, 15, "the agent")
        assert bob.evaluate("() => window.seqs") == list(range(sent))
        assert [d["seq"] for d in got if isinstance(d, dict) and "seq" in d] == list(range(sent))
        print(
            f"\nnode killed mid-call: presence healed in {heal_s:.2f} s (target {HEAL_TARGET_S} s, "
            f"load {os.getloadavg()[0]:.1f}); {sent} broadcasts, none lost"
        )
        assert heal_s <= HEAL_BOUND_S, f"presence healed only after {heal_s:.2f} s"
    finally:
        with contextlib.suppress(Exception):
            loop.run(bot.leave(), 20)
        loop.close()
        for page in pages:
            with contextlib.suppress(Exception):
                page.context.close()
    assert outside == []
