"""An agent among real people: two Chromium tabs and one CPython :class:`~kibitz.agent.Agent` in
one room on the real ``kibitz serve`` (pages, broker, Pyodide all from 127.0.0.1).

tests/unit/test_agent.py proves the capability model with CPython "humans"; this module proves the
same list with the page engine on the human side, through the public page controller only
(``getCapabilityGrant``/``setCapabilityGrant``/``getAgentAudit``/``on('chat')``/``broadcast``/
``sendTo``/``toggleMic``) and the Agent SDK. The tabs and the agent are set up once for the module
and the tests run in order on the same call: roster and chat → ``say()`` gated by send-chat (and a
tampered agent still dropped and audited) → broadcast vs. ``sendTo`` after receive-directed is
revoked → no audio packets until hear-audio → the coordinator's tab closes and the grant map stays.

Playwright's sync API owns the main thread, so the agent lives on its own asyncio loop in a
background thread and is driven with ``asyncio.run_coroutine_threadsafe``; every read of agent
state runs on that loop too (the engine is single-threaded).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from agent_loop import AgentLoop
from browser_guard import guarded_context
from playwright.sync_api import Browser, BrowserContext, Page
from server_fixture import KibitzServer

from kibitz.agent import Agent

ROOM = "room-e2e-agent-" + format(int(time.time() * 1000) % 36**6, "x")
DEFAULT_PERCEIVE = ["read-chat", "read-roster", "receive-directed"]


# ------------------------------------------------------------------------------------ the tabs


@dataclass
class Tab:
    name: str
    ctx: BrowserContext
    page: Page
    errors: list[str]
    id: str = ""
    """Our member id, read once in the fixture: predicates that run on the agent's thread use it,
    and Playwright objects may only be touched from the main thread."""

    def js(self, code: str, arg: Any = None) -> Any:
        return self.page.evaluate(code, arg)

    def state(self) -> dict[str, Any]:
        return dict(self.js("() => window.call.getState()"))

    def people(self) -> dict[str, dict[str, Any]]:
        return {p["id"]: p for p in self.js("() => window.call.getParticipants().map(({stream, ...p}) => p)")}

    def grant_of(self, peer: str) -> dict[str, Any]:
        return dict(self.js("(id) => window.call.getCapabilityGrant(id)", peer))

    def set_grant(self, peer: str, grant: dict[str, Any] | None) -> None:
        self.js("([id, g]) => window.call.setCapabilityGrant(id, g)", [peer, grant])

    def blocked(self, peer: str) -> list[str]:
        """What the audit feed records as blocked from ``peer`` (oldest first)."""
        audit = self.js("(id) => window.call.getAgentAudit(id, 50)", peer)
        return [e["what"] for e in audit if e["kind"] == "blocked"]

    def chat_from(self, peer: str) -> list[str]:
        """Chat texts from ``peer`` this tab's ``on('chat')`` delivered."""
        return list(self.js("(id) => window.chatLog.filter((l) => l.from === id).map((l) => l.text)", peer))

    def poll(self, check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> None:
        """Poll a (Python-side) check of this tab until it holds; for async controller getters."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: timed out after {timeout} s waiting for {what}")
            self.page.wait_for_timeout(50)


@pytest.fixture(scope="module")
def offline_guard() -> Iterator[list[str]]:
    outside: list[str] = []
    yield outside
    assert outside == [], f"requests left 127.0.0.1: {outside}"


CONVERGED = """(n) => { const ps = window.call.getParticipants();
  return ps.length === n && ps.every((p) => p.linkUp); }"""


def wait_all(tabs: list[Tab], predicate: str, arg: Any = None, timeout: float = 20_000) -> None:
    for tab in tabs:
        tab.page.wait_for_function(predicate, arg=arg, timeout=timeout)


@pytest.fixture(scope="module")
def tabs(browser: Browser, kibitz_server: KibitzServer, offline_guard: list[str]) -> Iterator[list[Tab]]:
    """Two tabs in the call: ``[coordinator, other]`` (whoever reached the room first coordinates)."""
    made: list[Tab] = []
    for name in ("ann", "bob"):
        ctx = guarded_context(browser, offline_guard)
        page = ctx.new_page()
        tab = Tab(name, ctx, page, [])
        page.on("pageerror", lambda exc, errors=tab.errors: errors.append(str(exc)))
        page.goto(f"{kibitz_server.http}/demo/follow.html?room={ROOM}&name={name}&open=0#/home")
        made.append(tab)
    try:
        for tab in made:
            tab.page.wait_for_function("() => window.call", timeout=30_000)
            tab.js("() => window.call.ready")
            tab.js(
                "() => { window.chatLog = []; window.call.on('chat', (l) => l && window.chatLog.push(l)); }"
            )
        wait_all(made, "() => window.call.getState().connected === true", timeout=30_000)
        for tab in made:
            tab.js("() => window.call.join()")
        wait_all(made, CONVERGED, 2)
        for tab in made:
            tab.id = str(tab.js("() => window.call.getState().self"))
        coordinator = made[0].js("() => window.call.getState().coordinator")
        made.sort(key=lambda t: t.id != coordinator)
        assert made[0].state()["isCoordinator"] and not made[1].state()["isCoordinator"]
        yield made
    finally:
        for tab in made:
            with contextlib.suppress(Exception):
                tab.ctx.close()
    for tab in made:
        assert tab.errors == [], f"{tab.name}: uncaught page errors {tab.errors}"


@dataclass
class Seen:
    """What reached the agent through its SDK callbacks (appended on the agent's loop)."""

    chat: list[dict[str, Any]] = field(default_factory=list)
    data: list[tuple[Any, str]] = field(default_factory=list)
    rosters: list[list[dict[str, Any]]] = field(default_factory=list)


@pytest.fixture(scope="module")
def agent_loop() -> Iterator[AgentLoop]:
    runner = AgentLoop()
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def agent(
    agent_loop: AgentLoop, kibitz_server: KibitzServer, tabs: list[Tab]
) -> Iterator[tuple[Agent, Seen]]:
    """The agent, in the room with both tabs and linked to each; leaves (closing aiortc) after."""
    seen = Seen()
    made = Agent(
        server=kibitz_server.http,
        room=ROOM,
        name="Scribe",
        backend="test-model",
        egress=False,
    )
    assert made.server.startswith("http://127.0.0.1:")
    agent_loop.pump = lambda: _pump(tabs)

    async def start() -> None:
        made.on_chat(seen.chat.append)
        made.on_data(lambda data, frm: seen.data.append((data, frm)))
        made.on_roster(seen.rosters.append)
        await made.start()

    try:
        agent_loop.run(start(), 40)
        tab_ids = [tab.id for tab in tabs]
        agent_loop.until(
            lambda: all(made.session.mesh.link_up(t) for t in tab_ids), timeout=30, what="the agent's links"
        )
        yield made, seen
    finally:
        agent_loop.run(made.leave(), 20)
        assert made.closed


def _pump(tabs: list[Tab], ms: float = 10) -> None:
    """Let Playwright dispatch for a moment (through any open tab), instead of ``time.sleep``."""
    for tab in tabs:
        if not tab.page.is_closed():
            tab.page.wait_for_timeout(ms)
            return
    time.sleep(ms / 1000)


def _tamper(agent: Agent) -> None:
    """Make the agent skip its own read-only check (what a modified client would do)."""
    agent.session.content._require_own = lambda *a: None  # type: ignore[method-assign]


def _untamper(agent: Agent) -> None:
    del agent.session.content._require_own


# --------------------------------------------------------------------------------------- tests


def test_agent_sees_roster_and_chat(
    tabs: list[Tab], agent: tuple[Agent, Seen], agent_loop: AgentLoop
) -> None:
    coord, other = tabs
    bot, seen = agent
    wait_all(tabs, CONVERGED, 3)
    for tab in tabs:
        scribe = tab.people()[bot.id]
        assert (scribe["name"], scribe["kind"]) == ("Scribe", "agent")
        assert scribe["meta"] == {"role": "agent", "readOnly": True, "backend": "test-model", "egress": False}
        grant = tab.grant_of(bot.id)
        assert sorted(grant["perceive"]) == DEFAULT_PERCEIVE and grant["act"] == []
    people = agent_loop.call(lambda: {p["id"]: p for p in bot.participants()})
    assert set(people) == {coord.id, other.id, bot.id}
    assert {people[coord.id]["name"], people[other.id]["name"]} == {"ann", "bob"}
    assert people[bot.id]["isSelf"] and people[coord.id]["kind"] == "human"
    assert agent_loop.call(lambda: (bot.grant["act"], bot.can_act())) == ([], False)

    coord.js("() => window.call.sendChat('hello agent')")
    other.js("() => window.call.sendChat('hi all')")
    agent_loop.until(lambda: len(seen.chat) >= 2, what="both tabs' chat at the agent")
    got = agent_loop.call(lambda: sorted((ln["from"], ln["text"]) for ln in seen.chat))
    assert got == sorted([(coord.id, "hello agent"), (other.id, "hi all")])

    # The roster stays live at the agent: a rename in a tab shows up there.
    other.js("() => window.call.setName('robert')")
    agent_loop.until(
        lambda: any(p["id"] == other.id and p["name"] == "robert" for p in bot.participants()),
        what="the rename at the agent",
    )
    assert agent_loop.call(lambda: any(p["name"] == "robert" for r in seen.rosters for p in r))


def test_say_is_dropped_until_send_chat_then_delivered_then_dropped_again(
    tabs: list[Tab], agent: tuple[Agent, Seen], agent_loop: AgentLoop
) -> None:
    coord, other = tabs
    bot, _ = agent
    # An honest agent refuses locally: it is read-only by default.
    with pytest.raises(PermissionError, match="send-chat"):
        agent_loop.run(bot.say("let me talk"))

    # A tampered agent sends anyway: every tab drops the line and records it in the audit feed.
    agent_loop.call(lambda: _tamper(bot))
    try:
        agent_loop.run(bot.say("sneaky"))
        for tab in tabs:
            tab.poll(lambda tab=tab: tab.blocked(bot.id) == ["chat"], what="the blocked say in the audit")
    finally:
        agent_loop.call(lambda: _untamper(bot))
    for tab in tabs:  # the drop and the audit entry are one step: nothing can still be on its way
        assert tab.chat_from(bot.id) == []
        assert "sneaky" not in [ln["text"] for ln in tab.js("() => window.call.getChat()")]

    # The coordinating tab grants send-chat: the agent and the other tab learn it; say() arrives.
    coord.set_grant(bot.id, {"perceive": DEFAULT_PERCEIVE, "act": ["send-chat"]})
    agent_loop.until(lambda: bot.can("send-chat"), what="send-chat at the agent")
    other.poll(lambda: "send-chat" in other.grant_of(bot.id)["act"], what="the grant at the other tab")
    agent_loop.run(bot.say("thanks for the grant"))
    for tab in tabs:
        tab.poll(lambda tab=tab: tab.chat_from(bot.id) == ["thanks for the grant"], what="the agent's line")
    assert coord.blocked(bot.id) == other.blocked(bot.id) == ["chat"]

    # Revoke: the agent refuses again, and a tampered say is dropped (and audited) again.
    coord.set_grant(bot.id, None)
    agent_loop.until(lambda: not bot.can("send-chat"), what="the revocation at the agent")
    other.poll(lambda: other.grant_of(bot.id)["act"] == [], what="the revocation at the other tab")
    with pytest.raises(PermissionError, match="send-chat"):
        agent_loop.run(bot.say("still here?"))
    agent_loop.call(lambda: _tamper(bot))
    try:
        agent_loop.run(bot.say("sneaky again"))
        for tab in tabs:
            tab.poll(lambda tab=tab: tab.blocked(bot.id) == ["chat", "chat"], what="the second audit entry")
    finally:
        agent_loop.call(lambda: _untamper(bot))
    for tab in tabs:
        assert tab.chat_from(bot.id) == ["thanks for the grant"]


def test_broadcast_reaches_the_agent_and_send_to_is_refused_without_receive_directed(
    tabs: list[Tab], agent: tuple[Agent, Seen], agent_loop: AgentLoop
) -> None:
    coord, other = tabs
    bot, seen = agent

    def got(data: dict[str, Any], frm: str) -> bool:
        return (data, frm) in seen.data

    other.js("() => window.call.broadcast({ kind: 'route', route: '#/menu' })")
    coord.js("(id) => window.call.sendTo(id, { direct: 1 })", bot.id)
    agent_loop.until(
        lambda: got({"kind": "route", "route": "#/menu"}, other.id) and got({"direct": 1}, coord.id),
        what="the broadcast and the directed message at the agent",
    )

    coord.set_grant(bot.id, {"perceive": ["read-chat", "read-roster"], "act": []})
    for tab in tabs:
        tab.poll(
            lambda tab=tab: "receive-directed" not in tab.grant_of(bot.id)["perceive"],
            what="receive-directed revoked",
        )
    agent_loop.until(
        lambda: "receive-directed" not in bot.grant["perceive"], what="the revocation at the agent"
    )
    for tab in tabs:
        # The refusal is thrown to the caller with its reason (not swallowed, not a traceback).
        error = tab.js(
            "(id) => { try { window.call.sendTo(id, { secret: 1 }); return 'no throw'; }"
            " catch (e) { return e.message; } }",
            bot.id,
        )
        assert error.startswith(f"Kibitz: sendTo({bot.id}) refused: ")
        assert "may not receive directed messages" in error
        assert "Traceback" not in error
    # A broadcast still reaches the agent, after anything the refused sends could have carried.
    other.js("() => window.call.broadcast({ after: 'revoke' })")
    agent_loop.until(lambda: got({"after": "revoke"}, other.id), what="the broadcast after the revocation")
    assert agent_loop.call(lambda: [d for d, _ in seen.data if d == {"secret": 1}]) == []

    # Granted again: directed messages flow again (the refusal above was the grant, not the link).
    coord.set_grant(bot.id, {"perceive": DEFAULT_PERCEIVE, "act": []})
    other.poll(
        lambda: "receive-directed" in other.grant_of(bot.id)["perceive"], what="receive-directed again"
    )
    other.js("(id) => window.call.sendTo(id, { direct: 2 })", bot.id)
    agent_loop.until(lambda: got({"direct": 2}, other.id), what="the directed message after the re-grant")


def _inbound(stats: list[dict[str, Any]], kind: str) -> int:
    rtp = [s for s in stats if s.get("type") == "inbound-rtp" and s.get("kind") == kind]
    return sum(int(s.get("packetsReceived", 0)) for s in rtp)


def test_agent_receives_no_audio_packets_until_hear_audio(
    tabs: list[Tab], agent: tuple[Agent, Seen], agent_loop: AgentLoop
) -> None:
    coord, other = tabs
    bot, _ = agent
    assert coord.js("() => window.call.toggleMic()") is True  # Chromium's fake microphone
    agent_loop.until(
        lambda: any(p["id"] == coord.id and p["micOn"] for p in bot.participants()), what="micOn at the agent"
    )
    other.page.wait_for_function(
        "(id) => window.call.getParticipants().some((p) => p.id === id && p.micOn)", arg=coord.id
    )
    # The lane exists (it comes up with the link), so "no packets" below is the sender's decision.
    agent_loop.until(lambda: "audio" in bot.tracks(coord.id), what="the audio lane at the agent")
    try:
        for _ in range(5):  # ~1 s with the microphone live: not one audio packet reaches the agent
            assert _inbound(agent_loop.run(bot.media_stats(coord.id)), "audio") == 0
            coord.page.wait_for_timeout(250)

        grant = coord.grant_of(bot.id)
        coord.set_grant(bot.id, {"perceive": [*grant["perceive"], "hear-audio"], "act": grant["act"]})
        agent_loop.until(lambda: "hear-audio" in bot.grant["perceive"], what="hear-audio at the agent")
        assert sorted(agent_loop.call(lambda: bot.grant["perceive"])) == sorted(
            [*DEFAULT_PERCEIVE, "hear-audio"]
        )
        t0 = time.monotonic()
        deadline = t0 + 20
        while (packets := _inbound(agent_loop.run(bot.media_stats(coord.id)), "audio")) <= 10:
            assert time.monotonic() < deadline, f"the granted agent received only {packets} audio packets"
            coord.page.wait_for_timeout(100)
        print(
            f"\nhear-audio granted → {packets} audio packets at the agent after {time.monotonic() - t0:.2f} s"
        )
        # Video stays withheld (no see-screen), and the other tab's muted lane sends it nothing.
        assert _inbound(agent_loop.run(bot.media_stats(coord.id)), "video") == 0
        assert _inbound(agent_loop.run(bot.media_stats(other.id)), "audio") == 0
    finally:
        assert coord.js("() => window.call.toggleMic()") is False


def test_grant_map_survives_the_coordinator_tab_closing(
    tabs: list[Tab], agent: tuple[Agent, Seen], agent_loop: AgentLoop
) -> None:
    coord, other = tabs
    bot, _ = agent
    old = coord.id
    grant = coord.grant_of(bot.id)
    coord.set_grant(bot.id, {"perceive": grant["perceive"], "act": ["send-chat"]})
    agent_loop.until(lambda: bot.can("send-chat"), what="send-chat at the agent")
    other.poll(lambda: "send-chat" in other.grant_of(bot.id)["act"], what="send-chat at the other tab")

    t0 = time.monotonic()
    coord.page.close(run_before_unload=True)  # pagehide: the tab says goodbye
    coord.ctx.close()
    other.page.wait_for_function(
        "(old) => { const s = window.call.getState(); return s.isCoordinator && s.coordinator !== old; }",
        arg=old,
        timeout=30_000,
    )
    wait_all([other], CONVERGED, 2, timeout=30_000)
    took = time.monotonic() - t0
    agent_loop.until(
        lambda: bot.session.get_state()["coordinator"] == other.id, timeout=20, what="the new coordinator"
    )

    # The map moved with the coordinator role: same grant at the new coordinator and at the agent.
    after = other.grant_of(bot.id)
    assert "send-chat" in after["act"] and sorted(after["perceive"]) == sorted(grant["perceive"])
    assert agent_loop.call(lambda: bot.can("send-chat"))
    agent_loop.run(bot.say("still allowed after the failover"))
    other.poll(
        lambda: "still allowed after the failover" in other.chat_from(bot.id),
        what="the agent's line after failover",
    )
    # ...and whoever coordinates now holds the pen: the remaining tab can revoke it.
    other.set_grant(bot.id, None)
    agent_loop.until(lambda: not bot.can("send-chat"), what="the new coordinator's revocation at the agent")
    print(f"\ncoordinator's tab closed → the other tab coordinates with the grant map in {took:.2f} s")
