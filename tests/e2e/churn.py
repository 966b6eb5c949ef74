"""The churn soak of issue 19, shared by tests/e2e/test_churn.py (3 minutes) and
bench/soak_bench.py (30 minutes, docs/reliability.md).

Long-lived members (two tabs, ann and bob, in one Chromium on host ``a``; an agent, bot, on host
``c``) stream numbered broadcasts and directed messages to each other at 10/s for the whole run,
while other members come and go every few seconds: tabs in a second Chromium on host ``b`` and
agents on host ``c``; most leave cleanly, some crash (a hung renderer killed, the agent SIGKILLed).
Every minute (or ``sample_every``) the RSS of the long-lived members and of ``kibitz serve`` is
recorded. At the end: every long-lived member holds every message of the others exactly once and
in order; once the churners are gone nobody's roster names one (no zombie participant); when
everyone has left, the broker's id table is empty.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fault_scenarios as fs
from lab_tabs import LabBrowser, LabTab, pump, ready
from netlab import Host, LabAgent, LabServer, NetLab, rss_kb, sh, wait_until
from playwright.sync_api import Playwright


@dataclass
class Churner:
    kind: str  # "tab" | "agent"
    name: str
    since: float
    tab: LabTab | None = None
    agent: LabAgent | None = None


@dataclass
class Soak:
    lab: NetLab
    server: LabServer
    stable_browser: LabBrowser
    churn_browser: LabBrowser
    tabs: list[LabTab]
    agent: LabAgent
    agent_host: Host
    room: str
    rng: random.Random
    churners: list[Churner] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {
        "tab_joins": 0, "tab_leaves": 0, "tab_crashes": 0,
        "agent_joins": 0, "agent_leaves": 0, "agent_kills": 0, "failed_joins": 0,
    })
    samples: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0

    @property
    def ids(self) -> set[str]:
        return {t.id for t in self.tabs} | {self.agent.id}

    def pump(self, seconds: float) -> None:
        pump(self.tabs, seconds)

    # ---------------------------------------------------------------- churn

    def join_tab(self) -> None:
        self.seq += 1
        name = f"t{self.seq}"
        tab = self.churn_browser.open(self.server, self.room, name)
        try:
            tab.page.wait_for_function("() => window.call", timeout=60_000)
            tab.js("() => window.call.ready")
            tab.js("() => window.call.join()")
        except Exception:
            self.counts["failed_joins"] += 1
            with contextlib.suppress(Exception):
                tab.ctx.close()
            self.churn_browser.tabs.remove(tab)
            return
        self.counts["tab_joins"] += 1
        self.churners.append(Churner("tab", name, time.monotonic(), tab=tab))

    def join_agent(self) -> None:
        self.seq += 1
        name = f"a{self.seq}"
        agent = LabAgent(self.agent_host, self.server, self.room, name)
        agent.pump = lambda: self.pump(0.01)
        try:
            agent.start(timeout=60)
        except Exception:
            self.counts["failed_joins"] += 1
            agent.close()
            return
        self.counts["agent_joins"] += 1
        self.churners.append(Churner("agent", name, time.monotonic(), agent=agent))

    def drop(self, c: Churner, *, crash: bool) -> None:
        self.churners.remove(c)
        if c.tab is not None:
            if crash:
                # Hang the page, then close it: Chromium kills the hung renderer, so no goodbye
                # runs (CDP Page.crash never answers and stalls the driver).
                with contextlib.suppress(Exception):
                    c.tab.js("() => { setTimeout(() => { for (;;) {} }, 0); }")
                self.counts["tab_crashes"] += 1
            else:
                with contextlib.suppress(Exception):
                    c.tab.js("() => window.call.leave()")
                self.counts["tab_leaves"] += 1
            with contextlib.suppress(Exception):
                c.tab.ctx.close()
            self.churn_browser.tabs.remove(c.tab)
        elif c.agent is not None:
            if crash:
                c.agent.kill()
                self.counts["agent_kills"] += 1
            else:
                c.agent.close()
                self.counts["agent_leaves"] += 1

    def churn_step(self, max_tabs: int, max_agents: int, min_stay: float) -> None:
        """One change: someone new arrives, or someone who stayed a while goes (1 in 4 crashes)."""
        now = time.monotonic()
        tabs = [c for c in self.churners if c.kind == "tab"]
        agents = [c for c in self.churners if c.kind == "agent"]
        ripe = [c for c in self.churners if now - c.since >= min_stay]
        choices = []
        if len(tabs) < max_tabs:
            choices.append("tab")
        if len(agents) < max_agents:
            choices += ["agent", "agent"]
        if ripe:
            choices += ["go"] * len(ripe)
        pick = self.rng.choice(choices)
        t = time.monotonic()
        print(f"churn {time.strftime('%H:%M:%S')}: {pick} ({len(tabs)} tabs, {len(agents)} agents)",
              flush=True)
        if pick == "tab":
            self.join_tab()
        elif pick == "agent":
            self.join_agent()
        else:
            self.drop(self.rng.choice(ripe), crash=self.rng.random() < 0.25)
        print(f"churn: {pick} took {time.monotonic() - t:.1f} s", flush=True)

    # ---------------------------------------------------------------- measuring

    def sample(self, t0: float) -> None:
        heap = {t.name: round(float(t.js("() => performance.memory.usedJSHeapSize")) / 1e6, 1)
                for t in self.tabs}
        self.samples.append({
            "t_s": round(time.monotonic() - t0, 1),
            "server_rss_mb": round(self.server.rss_kb() / 1024, 1),
            "stable_browser_rss_mb": round(browser_rss_kb(self.stable_browser) / 1024, 1),
            "agent_rss_mb": round(self.agent.rss_kb() / 1024, 1),
            "tab_js_heap_mb": heap,
            "broker_ids": self.server.metrics().get("kibitz_broker_connected_peers"),
            "members": len(self.ids) + len(self.churners),
        })


def browser_rss_kb(b: LabBrowser) -> int:
    """RSS of one Chromium, all of its processes summed (the only program in ``b``'s namespace)."""
    total = 0
    for pid in sh("ip", "netns", "pids", b.host.ns, check=False).stdout.split():
        with contextlib.suppress(OSError, ValueError):
            if "chrom" in Path(f"/proc/{pid}/comm").read_text():
                total += rss_kb(int(pid))
    return total


@contextlib.contextmanager
def soak(pw: Playwright, lab: NetLab, outside: list[str], seed: int = 19) -> Any:
    room = "room-churn-" + secrets.token_hex(6)
    srv_host = lab.add_host("srv", server=True)
    a, b, c = (lab.add_host(h) for h in ("a", "b", "c"))
    server = LabServer(srv_host)
    server.start()
    stable, churny = LabBrowser(pw, lab, a, outside), LabBrowser(pw, lab, b, outside)
    agent: LabAgent | None = None
    s: Soak | None = None
    try:
        first = stable.open(server, room, "ann")
        ready([first])
        first.page.wait_for_function("() => window.call.getState().isCoordinator", timeout=30_000)
        tabs = [first, stable.open(server, room, "bob")]
        ready(tabs[1:])
        agent = LabAgent(c, server, room, "bot")
        agent.pump = lambda: pump(tabs, 0.01)
        agent.start()
        s = Soak(lab, server, stable, churny, tabs, agent, c, room, random.Random(seed))
        yield s
    finally:
        if s is not None:
            for ch in list(s.churners):
                with contextlib.suppress(Exception):
                    s.drop(ch, crash=False)
        if agent is not None:
            agent.close()
        stable.close()
        churny.close()


def run(
    s: Soak, *, duration: float, every: float = 3.0, sample_every: float = 30.0, max_tabs: int = 2,
    max_agents: int = 3, min_stay: float = 8.0, rate: float = fs.RATE,
) -> dict[str, Any]:
    """Churn for ``duration`` s with the long-lived members streaming; then settle, check, report."""
    wait_until(lambda: converged(s), 60, "the long-lived members linked", sleep=s.pump)
    coordinator = s.tabs[0]
    coordinator.js("([id, p]) => window.call.setCapabilityGrant(id, { perceive: p, act: ['send-chat'] })",
                   [s.agent.id, fs.AGENT_PERCEIVE])
    wait_until(lambda: "send-chat" in s.agent.request("report")["grant"]["act"], 20, "the agent's grant",
               sleep=s.pump)
    epoch = 1
    for t in s.tabs:
        t.start_stream(epoch, rate, sorted(s.ids - {t.id}))
    s.agent.request("stream", epoch=epoch, rate=rate, to=sorted(s.ids - {s.agent.id}))
    t0 = time.monotonic()
    s.sample(t0)
    next_sample = t0 + sample_every
    while time.monotonic() - t0 < duration:
        s.churn_step(max_tabs, max_agents, min_stay)
        step_end = time.monotonic() + every * s.rng.uniform(0.5, 1.5)
        while time.monotonic() < step_end:
            s.pump(0.2)
            if time.monotonic() >= next_sample:
                s.sample(t0)
                next_sample += sample_every
    for ch in list(s.churners):
        s.drop(ch, crash=False)
    for t in s.tabs:
        t.stop_stream()
    s.agent.request("halt")
    s.sample(t0)

    # Every message between the long-lived members, once and in order.
    def problems() -> list[str]:
        return fs.stream_problems(s.tabs, s.agent, epoch)[0]

    deadline = time.monotonic() + 90
    while (found := problems()) and time.monotonic() < deadline:
        s.pump(0.5)
    assert found == [], "\n".join(found)
    # No zombie: once the churners are gone, every roster is the long-lived three again.
    zombies_gone = wait_until(lambda: converged(s), 60, "rosters back to the long-lived ones", sleep=s.pump)
    sent = {t.name: t.sent(epoch) for t in s.tabs}
    bot_sent = s.agent.request("report")["sent"][str(epoch)]
    delivered = sum(v["b"] * 2 + sum(v["d"].values()) for v in [*sent.values(), bot_sent])
    return {
        "duration_s": round(time.monotonic() - t0, 1),
        **s.counts,
        "messages_between_long_lived": delivered,
        "lost": 0,
        "duplicated": 0,
        "rosters_clean_after_s": round(zombies_gone, 1),
        "samples": s.samples,
    }


def converged(s: Soak) -> bool:
    for t in s.tabs:
        links = t.links_up()
        if not t.state()["connected"] or set(links) != s.ids or not all(links.values()):
            return False
    report = s.agent.request("report")
    return bool(report["state"]["connected"]) and set(report["linkUp"]) == s.ids and all(
        report["linkUp"].values()
    )


def everyone_leaves(s: Soak, timeout: float = 30.0) -> float:
    """The long-lived members leave too; seconds until the broker's id table is empty."""
    for t in s.tabs:
        with contextlib.suppress(Exception):
            t.js("() => window.call.leave()")
    s.agent.close()
    s.stable_browser.close()
    start = time.monotonic()
    wait_until(lambda: s.server.metrics().get("kibitz_broker_connected_peers") == 0, timeout,
               "the broker's id table empty")
    return round(time.monotonic() - start, 2)
