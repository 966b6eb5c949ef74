"""Whist end to end: two Chromium players and two bots play a full deal on the real ``kibitz serve``
through ``window.whist`` (plus one play by mouse, one by keyboard, one by touch), and the kibitzer
(``kibitz agent run apps/whist/kibitzer.py --watch S``, a real CPython agent over aiortc) watches
South after South's player lets it, says something about a play in chat, and is shown, from its
own record of every message it received, to have been sent exactly one seat's cards.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_guard import guarded_context
from playwright.sync_api import Browser, Page
from server_fixture import KibitzServer, stop_group
from whist_helpers import strings

ROOT = Path(__file__).resolve().parents[2]
ROOM = "room-e2e-whist-" + format(int(time.time() * 1000) % 36**6, "x")
CARD = re.compile(r"^[2-9TJQKA][CDHS]$")
SOUTH = 2


@pytest.fixture(scope="module")
def offline_guard() -> Iterator[list[str]]:
    outside: list[str] = []
    yield outside
    assert outside == [], f"requests left 127.0.0.1: {outside}"


@pytest.fixture(scope="module")
def pages(browser: Browser, kibitz_server: KibitzServer, offline_guard: list[str]) -> Iterator[list[Page]]:
    made: list[Page] = []
    errors: list[str] = []
    for name, kw in (("Ann", {"viewport": {"width": 360, "height": 740}, "has_touch": True}),
                     ("Bob", {"viewport": {"width": 1100, "height": 800}})):
        ctx = guarded_context(browser, offline_guard, **kw)
        page = ctx.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{kibitz_server.http}/whist/?fast=1&name={name}#{ROOM}")
        made.append(page)
    try:
        for page in made:
            page.wait_for_function("() => window.whist && window.whist.state() && window.whist.state().pub",
                                   timeout=60_000)
        for page in made:
            page.wait_for_function("() => window.whist.state().pub.here.length === 2", timeout=30_000)
        yield made
        assert errors == [], errors
    finally:
        for page in made:
            page.context.close()


@pytest.fixture(scope="module")
def kibitzer(pages: list[Page], kibitz_server: KibitzServer, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[dict[str, Any]]:
    record = tmp_path_factory.mktemp("kibitzer") / "received.jsonl"
    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/kibitz"), "agent", "run", str(ROOT / "apps/whist/kibitzer.py"), "--room", ROOM,
         "--server", kibitz_server.http, "--watch", "S", "--record", str(record), "--quiet-seconds", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, cwd=ROOT,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("KIBITZ_AGENT_READY"):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        # Wait while Playwright keeps dispatching: the offline guard relays every page WebSocket (the
        # broker's signaling too) through this process, and the agent's join needs the pages' answers.
        deadline = time.monotonic() + 60
        while not ready.is_set() and proc.poll() is None and time.monotonic() < deadline:
            pages[0].wait_for_timeout(100)
        if not ready.is_set():
            pytest.fail("the kibitzer did not join:\n" + "".join(lines[-40:]))
        agent_id = next(line.split()[1] for line in lines if line.startswith("KIBITZ_AGENT_READY"))
        yield {"id": agent_id, "record": record, "lines": lines, "proc": proc}
    finally:
        stop_group(proc, grace=10)


def state(page: Page) -> dict[str, Any]:
    return dict(page.evaluate("() => window.whist.state()"))


def play_turn(page: Page, how: str) -> None:
    """One legal play: through window.whist, or as a person would, by mouse, keyboard or touch."""
    if how == "api":
        page.evaluate("() => window.whist.play(window.whist.legalMoves()[0])")
    elif how == "click":
        page.locator("#hand button.legal").first.click()
    elif how == "key":
        page.locator("#hand button.legal").first.focus()
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("Enter")
    else:
        page.locator("#hand button.legal").first.tap()


def test_two_people_two_bots_and_a_kibitzer_play_a_deal(pages: list[Page], kibitzer: dict[str, Any]) -> None:
    ann, bob = pages
    kid = kibitzer["id"]
    for page in pages:
        page.wait_for_function("(id) => window.call.getParticipants().some((p) => p.id === id)", arg=kid,
                               timeout=30_000)
    # Both sit (the second may be queued for the next deal); a new game seats everyone now.
    for page in pages:
        page.wait_for_function("""() => { const s = window.whist.state(); return s.pub.seats.some(
            (x) => x.uid === s.uid || x.next === s.uid); }""", timeout=20_000)
    seated = next(p for p in pages if state(p)["seat"] is not None)  # a queued player may not start one
    seated.evaluate("() => window.whist.newGame()")
    for page in pages:
        page.wait_for_function("() => window.whist.state().seat !== null", timeout=20_000)
    seats = {id(p): state(p)["seat"] for p in pages}
    assert SOUTH in seats.values(), seats  # the first to sit takes South
    south = next(p for p in pages if seats[id(p)] == SOUTH)
    other = bob if south is ann else ann
    # The kibitzer asked for South: nobody but South's player can let it watch.
    other.evaluate("(id) => window.whist.allow(id)", kid)
    south.evaluate("(id) => window.whist.allow(id)", kid)
    south.wait_for_function("(id) => window.whist.state().pub.watchers.some((w) => w.id === id)", arg=kid,
                            timeout=20_000)
    assert south.evaluate("(id) => window.call.getCapabilityGrant(id)", kid)["act"] == ["send-chat"]

    ways = {id(ann): iter(["click", "key", "tap"]), id(bob): iter(["click", "key"])}
    deadline = time.monotonic() + 240
    deal_id = None
    while time.monotonic() < deadline:
        states = [state(p) for p in pages]
        deal = states[0]["pub"]["deal"]
        if deal and deal_id is None and deal["phase"] == "play":
            deal_id = deal["id"]
        if all(s["pub"]["deal"] and s["pub"]["deal"]["id"] == deal_id and s["pub"]["deal"]["phase"] == "done"
               and s["check"] for s in states):
            break  # (the next deal starts half a second later: what follows reads these states)
        for page, s in zip(pages, states, strict=True):
            if s["legal"]:
                before = len(s["hand"])
                play_turn(page, next(ways[id(page)], "api"))
                page.wait_for_function("(n) => window.whist.state().hand.length < n", arg=before,
                                       timeout=10_000)
        pages[0].wait_for_timeout(40)
    else:
        pytest.fail(f"the deal did not finish: {state(ann)['pub']['deal']}")

    final = states
    for s in final:
        deal = s["pub"]["deal"]
        assert deal["phase"] == "done" and len(deal["tricks"]) == 13
        assert sum(deal["result"]["tricks"]) == 13
        assert s["check"] == {"deal": deal["id"], "ok": True, "reason": ""}, s["check"]
        assert s["hand"] == [] and s["legal"] == []
    assert final[0]["pub"]["score"] == final[1]["pub"]["score"]
    assert final[0]["pub"]["score"]["points"] != [0, 0] or final[0]["pub"]["score"]["games"] != [0, 0]
    assert next(iter(ways[id(ann)]), None) is None  # ann really clicked, typed and tapped

    # The kibitzer said something about a play, in chat, to both people.
    for page in pages:
        page.wait_for_function(
            "(id) => window.call.getChat().some((l) => l.from === id && /South/.test(l.text))", arg=kid,
            timeout=20_000)
    said = [line["text"] for line in ann.evaluate("() => window.call.getChat()") if line["from"] == kid]
    about_a_play = re.compile(r"South (leads|plays|wins|ruffs|throws|follows|overtakes)|forced")
    assert any(about_a_play.search(t) for t in said), said

    # What the kibitzer received: South's hand only, and no other card before it was on the table.
    deal = final[0]["pub"]["deal"]
    received = [json.loads(line) for line in Path(kibitzer["record"]).read_text().splitlines()]
    hands = [r["data"] for r in received if isinstance(r["data"], dict) and r["data"].get("t") == "hand"]
    assert {h["seat"] for h in hands} == {SOUTH}, hands  # (the next deal's may have come too)
    mine = {h["deal"]: set(h["cards"]) for h in hands}
    assert [h["deal"] for h in hands].count(deal["id"]) == 1
    # the hand it got is the one South played from
    played = {c for t in deal["tricks"] for i, c in enumerate(t["cards"]) if (t["leader"] + i) % 4 == SOUTH}
    assert played == mine[deal["id"]]
    public: dict[str, set[str]] = {}
    for r in received:
        data = r["data"]
        if not isinstance(data, dict):
            continue
        if data.get("t") == "state" and data["pub"]["deal"]:
            d = data["pub"]["deal"]
            public.setdefault(d["id"], set()).update(
                {c for t in d["tricks"] for c in t["cards"]} | set(d["trick"]) | ({d["turnup"]} - {None}))
        did = data.get("deal") if data.get("t") == "hand" else (data.get("pub") or {}).get("deal", {}) or {}
        did = did if isinstance(did, str) else did.get("id")
        for s in strings(data):
            if CARD.match(s):
                ok = s in mine.get(did, set()) or s in public.get(did, set())
                assert ok, f"the kibitzer got {s} before it was played: {data}"
    assert kibitzer["proc"].poll() is None, "".join(kibitzer["lines"][-30:])


def test_the_page_fits_360_px(pages: list[Page]) -> None:
    ann = pages[0]
    assert ann.viewport_size is not None and ann.viewport_size["width"] == 360
    width = ann.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 360, f"the page is {width} px wide at a 360 px viewport"
    # every seat tile and the score are on the page
    assert ann.locator(".seat .tile").count() == 4
    assert ann.locator("#score table").is_visible()
