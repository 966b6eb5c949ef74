"""Two pages that may only use relayed candidates still meet, through a real coturn on loopback.

``kibitz serve --turn-url … --turn-secret-file …`` mints TURN REST credentials at /api/turn; the
widget fetches them and the engine hands them to RTCPeerConnection. The pages force
``iceTransportPolicy: "relay"`` (as a peer behind a symmetric NAT effectively is), so the call
connects only if coturn accepts the credentials and relays. The selected candidate pair proves it.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from agent_loop import AgentLoop
from coturn import SELECTED_PAIRS, relay_args
from playwright.sync_api import BrowserContext, Page
from server_fixture import KibitzServer, running_kibitz_server

from kibitz.agent import Agent

ROOM = "room-turn-" + secrets.token_hex(5)
TTL = 10
"""Seconds the relay's credentials last here: short, so a page outlives its first ones in a test."""

# Every peer connection the page makes may only use relay candidates, and is kept for the stats.
RELAY_ONLY = """(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (config, ...rest) {
    const pc = new Native({ ...(config || {}), iceTransportPolicy: "relay" }, ...rest);
    window.__pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
})();"""

@pytest.fixture(scope="module")
def relay_server(coturn: tuple[int, Path]) -> Iterator[KibitzServer]:
    with running_kibitz_server(*relay_args(coturn), "--turn-ttl", str(TTL)) as srv:
        yield srv


def _relay_tab(ctx: BrowserContext, srv: KibitzServer, name: str, room: str = ROOM) -> Page:
    ctx.add_init_script(RELAY_ONLY)
    page = ctx.new_page()
    page.goto(f"{srv.http}/demo/follow.html?room={room}&name={name}#/home")
    page.wait_for_function("() => window.call", timeout=10_000)
    return page


def test_relay_only_pages_meet_through_coturn(
    new_context: Callable[..., BrowserContext], relay_server: KibitzServer, coturn: tuple[int, Path]
) -> None:
    a, b = (_relay_tab(new_context(), relay_server, name) for name in ("ann", "bob"))
    up = "() => window.call.getParticipants().some((p) => !p.isSelf && p.linkUp)"
    for page in (a, b):
        page.wait_for_function(up, timeout=30_000)
    b.evaluate("() => { window.got = []; window.call.onMessage((d, from) => window.got.push([d, from])); }")
    bob = b.evaluate("() => window.call.getState().self")
    ann = a.evaluate("() => window.call.getState().self")
    a.evaluate("(to) => window.call.sendTo(to, { via: 'relay' })", bob)
    b.wait_for_function("() => window.got.length >= 1", timeout=10_000)
    assert b.evaluate("() => window.got") == [[{"via": "relay"}, ann]]

    for page in (a, b):
        pairs = page.evaluate(SELECTED_PAIRS)
        assert pairs, "no connected peer connection"
        assert all(local == "relay" for local, _remote in pairs), pairs
    # What the page was handed: credentials for our relay, never the shared secret.
    ice = a.evaluate("async () => (await (await fetch('/api/turn')).json())")
    assert ice["configured"] is True and ice["iceServers"][0]["urls"][0].startswith("turn:127.0.0.1:")
    assert set(ice["iceServers"][0]) == {"urls", "username", "credential"}
    assert coturn[1].read_text() not in json.dumps(ice)


def _turn_username(page: Page) -> str:
    """The TURN username the page's next connection would use (waits for the first answer)."""
    code = (
        "from kibitz.backends.browser import SESSIONS\n"
        "servers = SESSIONS[-1]._transport.rtc_config.ice_servers\n"
        "servers[0]['username'] if servers else ''"
    )
    deadline = time.monotonic() + 20
    while not (name := str(page.evaluate("async (c) => (await Kibitz._engine()).runPython(c)", code))):
        assert time.monotonic() < deadline, "the page never got ICE servers from /api/turn"
        time.sleep(0.1)
    return name


def test_a_page_open_past_its_credentials_still_relays_to_newcomers(
    new_context: Callable[..., BrowserContext], relay_server: KibitzServer
) -> None:
    """The page fetches fresh credentials at 3/4 of their life; a peer that arrives after the first
    ones expired is reached through the relay with the new ones (with the old ones the page's
    connection would have no relay candidate at all)."""
    room = "room-turn-late-" + secrets.token_hex(4)
    early = _relay_tab(new_context(), relay_server, "early", room)
    early.wait_for_function("() => window.call.getState().self", timeout=20_000)
    first = _turn_username(early)
    expiry = int(first.split(":", 1)[0])
    deadline = time.monotonic() + TTL + 5
    while (fresh := _turn_username(early)) == first:  # due at 3/4 of the first ones' life
        assert time.monotonic() < deadline, "the page never fetched new TURN credentials"
        time.sleep(0.25)
    assert int(fresh.split(":", 1)[0]) > expiry, (first, fresh)
    while time.time() < expiry + 1:  # the first credentials are now refused by the relay
        time.sleep(0.25)
    late = _relay_tab(new_context(), relay_server, "late", room)
    up = "() => window.call.getParticipants().some((p) => !p.isSelf && p.linkUp)"
    for page in (early, late):
        page.wait_for_function(up, timeout=30_000)
    pairs = early.evaluate(SELECTED_PAIRS)
    assert pairs and all(local == "relay" for local, _remote in pairs), pairs


def test_a_relay_only_agent_meets_a_relay_only_page(
    new_context: Callable[..., BrowserContext], relay_server: KibitzServer
) -> None:
    """The CPython agent takes its ICE servers from the same /api/turn: with both ends restricted
    to relay candidates, the page's directed message reaches the agent only through coturn."""
    room = "room-turn-agent-" + secrets.token_hex(4)
    page = _relay_tab(new_context(), relay_server, "host", room)
    page.wait_for_function("() => window.call.getState().self", timeout=20_000)
    loop = AgentLoop()
    loop.pump = lambda: page.wait_for_timeout(10)
    got: list[tuple[object, str]] = []
    try:
        agent = Agent(relay_server.http, room, name="relay-bot", relay_only=True)
        agent.on_data(lambda data, sender: got.append((data, sender)))
        loop.run(agent.start(), 40)
        agent_id = loop.call(lambda: agent.id)
        page.wait_for_function(
            "(id) => window.call.getParticipants().some((p) => p.id === id && p.linkUp)", arg=agent_id,
            timeout=30_000,
        )
        page.evaluate("(to) => window.call.sendTo(to, { via: 'relay' })", agent_id)
        loop.until(lambda: bool(got), what="the page's message at the agent")
        host = page.evaluate("() => window.call.getState().self")
        assert loop.call(lambda: list(got)) == [({"via": "relay"}, host)]
        pairs = page.evaluate(SELECTED_PAIRS)
        assert pairs and all(local == "relay" for local, _remote in pairs), pairs
        loop.run(agent.leave(), 15)
    finally:
        loop.close()
