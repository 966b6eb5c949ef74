"""The fault scenarios of issue 19 on a real network, shared by tests/e2e/test_faults.py (asserts,
short) and bench/fault_bench.py (measures, records docs/reliability.md).

One :class:`World`: ``kibitz serve`` in its own namespace; host ``a`` with one Chromium and two tabs
(ann, the coordinator: she arrives first; bob); host ``b`` with one Chromium and one tab (cat: the
member whose link is impaired, whose address moves, whose tab is frozen); host ``c`` with a CPython
agent (bot, granted send-chat by the coordinator so it streams too). Every member streams numbered
broadcasts and directed messages to every other member at 10/s in each scenario ("epoch"); at the
end each member must hold every message of the epoch from every other member exactly once and in
order.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from lab_tabs import LabBrowser, LabTab, check_stream, pump, ready
from netlab import LabAgent, LabServer, NetLab, wait_until
from playwright.sync_api import Playwright

RATE = 10.0
BIG = 10 * 1024 * 1024
AGENT_PERCEIVE = ["read-chat", "read-roster", "receive-directed"]


@dataclass
class World:
    lab: NetLab
    server: LabServer
    browsers: list[LabBrowser]
    tabs: list[LabTab]
    agent: LabAgent
    room: str
    frozen: set[str] = field(default_factory=set)
    """Names of tabs whose JavaScript is paused (nothing may be evaluated in them)."""

    @property
    def cat(self) -> LabTab:
        return self.tabs[2]

    @property
    def ids(self) -> set[str]:
        return {t.id for t in self.tabs} | {self.agent.id}

    def pump(self, seconds: float) -> None:
        pump([t for t in self.tabs if t.name not in self.frozen], seconds)

    def tab_converged(self, tab: LabTab) -> bool:
        state = tab.state()
        links = tab.links_up()
        return bool(state["connected"]) and set(links) == self.ids and all(links.values())

    def agent_converged(self, report: dict[str, Any] | None = None) -> bool:
        report = report or self.agent.request("report")
        links = report["linkUp"]
        return bool(report["state"]["connected"]) and set(links) == self.ids and all(links.values())

    def converged(self, skip: LabTab | None = None) -> bool:
        return all(self.tab_converged(t) for t in self.tabs if t is not skip) and self.agent_converged()

    def wait_converged(self, timeout: float, what: str = "everyone on one roster, all links up") -> float:
        start = time.monotonic()
        while not self.converged():
            if time.monotonic() - start > timeout:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}: {self.describe()}")
            self.pump(0.2)
        return time.monotonic() - start

    def describe(self) -> str:
        out = []
        for t in self.tabs:
            with contextlib.suppress(Exception):
                out.append(f"{t.name}: {t.state()['connected']} {t.links_up()}")
        with contextlib.suppress(Exception):
            r = self.agent.request("report", timeout=5)
            out.append(f"bot: {r['state']['connected']} {r['linkUp']}")
        return "; ".join(out)

    # ---------------------------------------------------------------- streams

    def start(self, epoch: int, rate: float = RATE) -> None:
        for t in self.tabs:
            t.start_stream(epoch, rate, sorted(self.ids - {t.id}))
        self.agent.request("stream", epoch=epoch, rate=rate, to=sorted(self.ids - {self.agent.id}))

    def stop(self) -> None:
        for t in self.tabs:
            t.stop_stream()
        self.agent.request("halt")

    def problems(self, epoch: int) -> list[str]:
        found, sent = stream_problems(self.tabs, self.agent, epoch)
        for who, s in sent.items():
            if s["refused"]:
                found.append(f"{who} had {s['refused']} sends refused: {s['errors'][:3]}")
        return found

    def stop_and_check(self, epoch: int, timeout: float = 60.0) -> dict[str, int]:
        """Stop streaming; wait until every message of ``epoch`` arrived (or time out); assert."""
        self.stop()
        deadline = time.monotonic() + timeout
        while (found := self.problems(epoch)) and time.monotonic() < deadline:
            self.pump(0.5)
        assert found == [], "\n".join(found)
        sent = {t.name: t.sent(epoch) for t in self.tabs}
        delivered = sum(s["b"] * 3 + sum(s["d"].values()) for s in sent.values())
        bot = self.agent.request("report")["sent"][str(epoch)]
        delivered += bot["b"] * 3 + sum(bot["d"].values())
        return {"messages_delivered": delivered, "lost": 0, "duplicated": 0}

    def flow(self, epoch: int, member: LabTab) -> dict[str, int]:
        """How many directed messages ``member`` got from each other member, and each got from it."""
        counts: dict[str, int] = {}
        for sender, kinds in member.received(epoch).items():
            counts[f"from:{sender}"] = len(kinds.get("d", []))
        for t in self.tabs:
            if t is not member:
                counts[f"to:{t.id}"] = len(t.received(epoch).get(member.id, {}).get("d", []))
        got = self.agent.request("report")["recv"].get(str(epoch), {}).get(member.id, {})
        counts[f"to:{self.agent.id}"] = len(got.get("d", []))
        return counts

    def flowing(self, epoch: int, member: LabTab, before: dict[str, int]) -> bool:
        now = self.flow(epoch, member)
        others = self.ids - {member.id}
        keys = {f"from:{o}" for o in others} | {f"to:{o}" for o in others}
        return all(now.get(k, 0) > before.get(k, 0) for k in keys)

    # ---------------------------------------------------------------- presence gaps

    def gaps(self, since_ms: float, until_ms: float) -> dict[str, float]:
        """Per member: the longest stretch (s) within the window when it was not connected with
        everyone on its roster and every link up (from its own 100 ms samples)."""
        n = len(self.ids)
        out: dict[str, float] = {}
        series = {t.name: t.samples(since_ms - 1000) for t in self.tabs}
        series["bot"] = self.agent.request("report", since_ms=since_ms - 1000)["samples"]
        for name, samples in series.items():
            longest, down_since = 0.0, None
            for at, connected, people, up in samples:
                if at > until_ms:
                    break
                ok = connected and people == n and up == n
                if not ok and down_since is None:
                    down_since = at
                elif ok and down_since is not None:
                    if at >= since_ms:
                        longest = max(longest, (at - max(down_since, since_ms)) / 1000)
                    down_since = None
            if down_since is not None:
                longest = max(longest, (until_ms - max(down_since, since_ms)) / 1000)
            out[name] = round(longest, 2)
        return out


def stream_problems(tabs: list[LabTab], agent: LabAgent, epoch: int) -> tuple[list[str], dict[str, Any]]:
    """Every message of stream ``epoch`` that a member sent and another did not receive once and in
    order (as ``check_stream`` words it); and what each member says it sent, by id."""
    sent: dict[str, Any] = {t.id: t.sent(epoch) for t in tabs}
    report = agent.request("report")
    sent[agent.id] = report["sent"][str(epoch)]
    found: list[str] = []
    for t in tabs:
        found += check_stream(t.received(epoch), sent, t.id)
    found += check_stream(report["recv"].get(str(epoch), {}), sent, agent.id)
    return found, sent


def now_ms() -> float:
    return time.time() * 1000


@contextlib.contextmanager
def world(
    pw: Playwright, lab: NetLab, outside: list[str], server_args: tuple[str, ...] = ()
) -> Iterator[World]:
    room = "room-faults-" + secrets.token_hex(6)
    srv_host = lab.add_host("srv", server=True)
    hosts = [lab.add_host(h) for h in ("a", "b", "c")]
    server = LabServer(srv_host, args=server_args)
    server.start()
    browsers = [LabBrowser(pw, lab, hosts[0], outside), LabBrowser(pw, lab, hosts[1], outside)]
    agent: LabAgent | None = None
    try:
        first = browsers[0].open(server, room, "ann")
        ready([first])
        first.page.wait_for_function("() => window.call.getState().isCoordinator", timeout=30_000)
        tabs = [first, browsers[0].open(server, room, "bob"), browsers[1].open(server, room, "cat")]
        ready(tabs[1:])
        agent = LabAgent(hosts[2], server, room, "bot")
        agent.pump = lambda: tabs[0].page.wait_for_timeout(10)
        agent.start()
        w = World(lab, server, browsers, tabs, agent, room)
        w.wait_converged(60)
        grant_agent(w)
        yield w
    finally:
        if agent is not None:
            agent.close()
        for b in browsers:
            b.close()


def grant_agent(w: World) -> None:
    """The coordinator lets the agent send (agents start read-only), so it streams too."""
    coordinator = next(t for t in w.tabs if t.state()["isCoordinator"])
    coordinator.js(
        "([id, p]) => window.call.setCapabilityGrant(id, { perceive: p, act: ['send-chat'] })",
        [w.agent.id, AGENT_PERCEIVE],
    )
    wait_until(lambda: "send-chat" in w.agent.request("report")["grant"]["act"], 20, "the agent's grant",
               sleep=w.pump)


# ------------------------------------------------------------------------------ scenarios


def broker_restart(w: World, epoch: int, *, down: float = 2.0, stream_before: float = 3.0) -> dict[str, Any]:
    """SIGKILL ``kibitz serve`` mid-call and start it again on the same port ``down`` s later."""
    expected_ids = len(w.ids) + 1  # every member id, plus the room id the coordinator holds
    before = w.server.metrics().get("kibitz_broker_connected_peers")
    assert before == expected_ids, f"{before} ids registered before the restart, expected {expected_ids}"
    w.start(epoch)
    w.pump(stream_before)
    t_kill = now_ms()
    w.server.kill()
    w.pump(down)
    w.server.start()
    t_up = now_ms()
    seen: list[float | None] = []

    def all_ids_back() -> bool:
        seen.append(w.server.metrics().get("kibitz_broker_connected_peers"))
        return seen[-1] == expected_ids

    try:
        ids_back = wait_until(all_ids_back, 30, "every id registered again", interval=0.1, sleep=w.pump)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; ids registered: {seen[-20:]}; {w.describe()}") from None
    w.pump(0.1)
    heal = w.wait_converged(30)
    w.pump(5)
    gaps = w.gaps(t_kill, now_ms())
    counts = w.stop_and_check(epoch)
    return {
        "down_s": round((t_up - t_kill) / 1000, 2),
        "ids_back_after_restart_s": round(ids_back, 2),
        "converged_after_restart_s": round(heal + ids_back, 2),
        "longest_presence_gap_s": gaps,
        **counts,
    }


def big_transfer(w: World, seq: int, size: int, timeout: float) -> dict[str, float]:
    """ann broadcasts ``size`` bytes; seconds until each other member holds it intact."""
    sender = w.tabs[0]
    t0 = float(sender.js("([s, n]) => __rl.sendBig(s, n)", [seq, size]))
    out: dict[str, float] = {}

    def arrived() -> bool:
        for t in w.tabs[1:]:
            for got in t.big():
                if got["s"] == seq and got["ok"] is not None and t.name not in out:
                    assert got["ok"], f"{t.name}: the big broadcast arrived corrupted"
                    out[t.name] = (got["at"] - t0) / 1000
        for got in w.agent.request("report")["big"]:
            if got["s"] == seq and "bot" not in out:
                assert got["ok"], "bot: the big broadcast arrived corrupted"
                out["bot"] = (got["at"] - t0) / 1000
        return len(out) == len(w.tabs)

    wait_until(arrived, timeout, f"the {size / 1e6:g} MB broadcast everywhere", interval=0.5, sleep=w.pump)
    return {k: round(v, 2) for k, v in out.items()}


def lossy_link(
    w: World, epoch: int, *, loss: int = 5, delay_ms: float = 150, jitter_ms: float = 30,
    stream_for: float = 10.0, impaired_big: int = BIG, big_timeout: float = 900.0,
) -> dict[str, Any]:
    """cat's link: ``loss`` % of the UDP to it dropped at random, then also delayed ``delay_ms`` ±
    ``jitter_ms`` each way. A :data:`BIG` broadcast on the clean link, on the lossy one, and an
    ``impaired_big`` one with loss and delay; the message streams run under loss and delay."""
    b = w.cat.host
    mb = BIG / 1e6
    clean = big_transfer(w, 100 + epoch, BIG, 120)
    w.lab.loss(b, loss)
    try:
        lossy = big_transfer(w, 200 + epoch, BIG, 300)
        w.lab.delay(b, delay_ms, jitter_ms)
        w.start(epoch)
        w.pump(stream_for)
        both = big_transfer(w, 300 + epoch, impaired_big, big_timeout)
        counts = w.stop_and_check(epoch, timeout=120)
        impairment = list(b.impairments)
    finally:
        w.lab.loss(b, 0)
        w.lab.undelay(b)
    return {
        "impairment": impairment,
        "big_MB": mb,
        "clean_s": clean,
        "lossy_s": lossy,
        "impaired_big_MB": impaired_big / 1e6,
        "lossy_and_delayed_s": both,
        "cat_MBps": {
            "clean": round(mb / clean["cat"], 2),
            "loss": round(mb / lossy["cat"], 2),
            "loss+delay": round(impaired_big / 1e6 / both["cat"], 3),
        },
        **counts,
    }


def network_change(w: World, epoch: int, *, stream_before: float = 3.0) -> dict[str, Any]:
    """cat's address moves to another subnet mid-call (its old address stops working at once).

    Its data links must carry on (ICE finds the new path) and nothing sent meanwhile may be lost;
    and its signaling must recover too, which a newcomer proves: eve (a second agent) joins after
    the move and needs the broker to reach cat."""
    w.start(epoch)
    w.pump(stream_before)
    old = w.cat.host.ip
    before = w.flow(epoch, w.cat)
    t_move = now_ms()
    new = w.lab.move(w.cat.host)
    # Links "up" is no proof after a move (a dead link looks up until ICE gives up): wait until new
    # messages arrive both ways between cat and every other member.
    heal = wait_until(lambda: w.flowing(epoch, w.cat, before), 90, "data to and from cat after the move",
                      interval=0.2, sleep=w.pump)
    w.wait_converged(30)
    w.pump(3)
    gaps = w.gaps(t_move, now_ms())
    counts = w.stop_and_check(epoch)
    eve = LabAgent(w.agent.host, w.server, w.room, "eve")
    eve.pump = lambda: w.pump(0.01)
    try:
        t_eve = time.monotonic()
        eve_id = eve.start()
        everyone = w.ids | {eve_id}

        def eve_linked() -> bool:
            r = eve.request("report")
            return set(r["linkUp"]) == everyone and all(r["linkUp"].values()) and all(
                t.links_up().get(eve_id) for t in w.tabs
            )

        wait_until(eve_linked, 90, "a newcomer linked to everyone, cat included", interval=0.5, sleep=w.pump)
        joined = round(time.monotonic() - t_eve, 2)
    finally:
        eve.close()
    w.wait_converged(30, "the room without eve")
    takeovers = w.server.metrics().get("kibitz_broker_takeovers_total", 0)
    return {"from": old, "to": new, "links_back_s": round(heal, 2), "longest_presence_gap_s": gaps,
            "newcomer_linked_to_all_s": joined, "broker_takeovers": takeovers, **counts}


def freeze(
    w: World, epoch: int, *, target: str = "participants", frozen_for: float = 30.0,
    stream_before: float = 2.0,
) -> dict[str, Any]:
    """``target="participants"``: cat's tab frozen and the agent SIGSTOPped, together;
    ``"coordinator"``: ann's tab (she holds the room id) frozen.

    A tab is frozen with CDP ``Page.setWebLifecycleState`` *and* a paused debugger, in the page and
    in its engine's Worker: in headless Chromium 156 the lifecycle state alone leaves a visible
    page's timers running (measured), while a paused debugger stops all of its JavaScript, as a
    frozen tab is stopped (the page's debugger does not stop its Workers: the engine's is paused
    on its own); the browser's network stack (ICE, DTLS, SCTP) keeps running in both."""
    w.start(epoch)
    w.pump(stream_before)
    tabs = [w.cat] if target == "participants" else [w.tabs[0]]
    sessions = []
    resumes: list[Callable[[], None]] = []
    for tab in tabs:
        cdp = tab.cdp()
        cdp.send("Page.enable")
        cdp.send("Debugger.enable")
        cdp.send("Page.setWebLifecycleState", {"state": "frozen"})
        cdp.send("Debugger.pause")
        resumes.append(tab.pause_engine())
        w.frozen.add(tab.name)
        sessions.append(cdp)
    if target == "participants":
        w.agent.stop_process()
    t_freeze = now_ms()
    others = [t for t in w.tabs if t.name not in w.frozen]
    reaped = None
    try:
        if target == "participants":
            # Meanwhile the others drop them from the roster (reaped) and keep everything for them.
            def dropped() -> bool:
                return all(w.cat.id not in t.links_up() and w.agent.id not in t.links_up() for t in others)

            reaped = wait_until(dropped, frozen_for + 10, "the frozen members reaped", interval=0.5,
                                sleep=w.pump)
        w.pump(max(0.0, frozen_for - (now_ms() - t_freeze) / 1000))
    finally:
        if target == "participants":
            w.agent.continue_process()
        for resume in resumes:
            resume()
        for cdp in sessions:
            cdp.send("Debugger.resume")
            cdp.send("Page.setWebLifecycleState", {"state": "active"})
            cdp.send("Debugger.disable")
        w.frozen.clear()
    t_thaw = now_ms()
    heal = w.wait_converged(60, f"the frozen {target} back")
    w.pump(3)
    for t in w.tabs:
        names = list(t.js("() => window.call.getParticipants().map((p) => p.name)"))
        assert sorted(names) == ["ann", "bob", "bot", "cat"], f"{t.name} sees {names}"
    bot_people = w.agent.request("report")["participants"]
    assert sorted(bot_people) == sorted(w.ids), f"bot sees {bot_people}"
    gaps = w.gaps(t_thaw, now_ms())
    counts = w.stop_and_check(epoch)
    return {
        "frozen": [t.name for t in tabs] + (["bot (SIGSTOP)"] if target == "participants" else []),
        "frozen_s": round((t_thaw - t_freeze) / 1000, 1),
        "reaped_after_s": None if reaped is None else round(reaped, 1),
        "back_after_thaw_s": round(heal, 2),
        "longest_gap_after_thaw_s": gaps,
        "duplicate_participants": 0,
        **counts,
    }
