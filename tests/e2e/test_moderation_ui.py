"""Moderation you can trust, end to end: real Chromium tabs, the real server, the widget, an agent.

Pages are on a third-party origin (a StaticServer) and load widget.js from the real ``kibitz serve``
(``data-kibitz-test`` opens the widget's shadow root so Playwright's locators reach in). Rooms with
settings are made by ``Kibitz.createRoom`` in a page, or by ``kibitz.rooms`` in CPython; their links
ride the page URL's fragment, where the widget reads them, as a guest who opens the link would.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from agent_loop import AgentLoop
from page_vectors import VECTORS_DIR, check_in_page, vectors
from playwright.sync_api import BrowserContext, Page, expect
from server_fixture import KibitzServer
from static_server import StaticServer, ensure_dist, serve

from kibitz.agent import Agent
from kibitz.gate import parse_link
from kibitz.rooms import NewRoom, create_room

sys.path.insert(0, str(VECTORS_DIR))

from moderation_check import check_all

BOOT_MS = 60_000

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>moderation</title></head>
<body><h1>A page that embeds a call</h1>
<script src="{widget}" data-kibitz-test></script>
<script>{script}</script></body></html>"""


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticServer]:
    ensure_dist()
    with serve(tmp_path_factory.mktemp("moderation-origin")) as server:
        yield server


def add_page(origin: StaticServer, kibitz: KibitzServer, script: str = "") -> str:
    path = f"/m-{uuid.uuid4().hex[:8]}.html"
    origin.pages[path] = PAGE.format(widget=f"{kibitz.http}/widget.js", script=script)
    return f"{origin.url}{path}"


def made_room(**kw: Any) -> NewRoom:
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API owns this thread's event loop
        return pool.submit(asyncio.run, create_room(**kw)).result()


def link_on(page_url: str, room: NewRoom, invite: str | None = None) -> str:
    """The room's link, opening ``page_url``: the fragment carries room and settings (and ``gt``)."""
    fragment = room.link.split("#", 1)[1]
    if invite:
        fragment += f"&gt={invite}"
    return f"{page_url}#{fragment}"


def open_tab(ctx: BrowserContext, url: str) -> Page:
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_function("() => window.Kibitz", timeout=10_000)
    return page


def mount(page: Page, options: dict[str, Any]) -> None:
    page.evaluate("(o) => { window.call = Kibitz.mount(o); }", options)
    page.evaluate("() => window.call.ready")


def state(page: Page) -> dict[str, Any]:
    return dict(page.evaluate("() => window.call.getState()"))


def people(page: Page) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in page.evaluate(
        "() => window.call.getParticipants().map(({stream, ...p}) => p)")}


def wait(page: Page, expr: str, arg: Any = None, timeout: float = 30_000) -> None:
    page.wait_for_function(expr, arg=arg, timeout=timeout)


def panel(page: Page) -> Any:
    return page.get_by_role("dialog", name="Kibitz call")


def open_panel(page: Page) -> None:
    page.get_by_role("button", name=re.compile(r"^Kibitz call: Open the call panel")).click()
    expect(panel(page)).to_be_visible()
    wait(page, "() => window.Kibitz.auto || window.call")


# --------------------------------------------------------------------------------- the host


def test_the_host_is_not_the_coordinator_and_its_removal_outlasts_a_reload(
    new_context: Any, origin: StaticServer, kibitz_server: KibitzServer
) -> None:
    host_ctx, guest_ctx = new_context(), new_context()
    host = open_tab(host_ctx, add_page(origin, kibitz_server))
    made = host.evaluate("() => Kibitz.createRoom({ gate: 'open', baseUrl: 'https://app.example/call' })")
    assert made["room"].startswith("kz") and made["hostKey"].startswith("kbzk1.")
    assert made["link"].startswith("https://app.example/call#" + made["room"] + "?g=open&gh=")
    room, gate = made["room"], made["joinGate"]
    guest_url = add_page(origin, kibitz_server)
    guest = open_tab(guest_ctx, guest_url)
    mount(guest, {"room": room, "joinGate": gate, "name": "Gus", "headless": True})
    guest.evaluate("() => window.call.join()")
    wait(guest, "() => window.call.getState().isCoordinator", timeout=BOOT_MS)
    mount(host, {"room": room, "joinGate": gate, "hostKey": made["hostKey"], "name": "Hana",
                 "headless": True})
    host.evaluate("() => window.call.join()")
    wait(host, "() => window.call.getParticipants().length === 2 && window.call.getState().isHost")
    host_id, guest_id = state(host)["self"], state(guest)["self"]
    wait(guest, "(h) => window.call.getParticipants().some((p) => p.id === h && p.role === 'host')", host_id)
    assert not state(guest)["isHost"] and state(guest)["isCoordinator"]
    # The coordinator is not the host: its remove(host) does nothing.
    assert guest.evaluate("(h) => window.call.remove(h)", host_id) is False
    guest.wait_for_timeout(1500)
    assert host_id in people(guest)
    # The host removes the coordinator itself.
    assert host.evaluate("(g) => window.call.remove(g)", guest_id) is True
    wait(guest, "() => window.call.getState().lobbyStatus === 'removed'")
    wait(host, "(g) => !window.call.getParticipants().some((p) => p.id === g)", guest_id)
    wait(host, "() => window.call.getState().isCoordinator", timeout=30_000)
    # The removed tab reloads (same tab: same token) and cannot come back.
    guest.reload()
    guest.wait_for_function("() => window.Kibitz", timeout=10_000)
    mount(guest, {"room": room, "joinGate": gate, "name": "Gus again", "headless": True})
    guest.evaluate("() => window.call.join()")
    wait(guest, "() => window.call.getState().lobbyStatus === 'removed'", timeout=BOOT_MS)
    host.wait_for_timeout(1000)
    assert [p["name"] for p in people(host).values()] == ["Hana"]
    # A stripped gate is refused outright, not opened.
    with pytest.raises(Exception, match=r"not the ones the room was made with"):
        mount(guest, {"room": room, "joinGate": {"mode": "open"}, "headless": True})


# ------------------------------------------------------------------------------- the door


def test_a_wrong_code_and_an_expired_invite_are_refused_in_the_widget(
    new_context: Any, origin: StaticServer, kibitz_server: KibitzServer
) -> None:
    code_room = made_room(gate="code", code="tulip-42", host="none")
    first = open_tab(new_context(), add_page(origin, kibitz_server))
    mount(first, {"room": code_room.room, "joinGate": code_room.gate.to_json(), "joinCredential": "tulip-42",
                  "headless": True, "name": "Ann"})
    first.evaluate("() => window.call.join()")
    wait(first, "() => window.call.getState().isCoordinator && window.call.getParticipants().length === 1",
         timeout=BOOT_MS)
    # A guest opens the link (no code in it) and joins through the widget.
    page_url = add_page(origin, kibitz_server, "window.call = Kibitz.mount({ room: location.hash.slice(1)"
                        ".split('?')[0], name: 'Guest', startOpen: true });")
    guest = open_tab(new_context(), link_on(page_url, code_room))
    guest.evaluate("() => window.call.ready")
    dialog = panel(guest)  # startOpen: the panel is open and the guest knocks at once
    expect(dialog.get_by_text("This room needs a code")).to_be_visible(timeout=30_000)
    dialog.get_by_label("Room code").fill("tulip-43")
    dialog.get_by_role("button", name="Enter").click()
    expect(dialog.get_by_text("That code is not right")).to_be_visible(timeout=30_000)
    assert len(people(first)) == 1
    dialog.get_by_label("Room code").fill("tulip-42")
    dialog.get_by_role("button", name="Enter").click()
    wait(first, "() => window.call.getParticipants().length === 2")
    expect(dialog.get_by_label("Room code")).to_be_hidden()

    invite_room = made_room(gate="invite", host="none")
    now = time.time()
    first_invite, _ = invite_room.mint_invite("Ann", 3600, now=now)
    expired, _ = invite_room.mint_invite("Late", 60, now=now - 7200)
    mount(first, {"room": invite_room.room, "joinGate": invite_room.gate.to_json(),
                  "joinCredential": first_invite, "headless": True})
    first.evaluate("() => window.call.join()")
    wait(first, "() => window.call.getState().isCoordinator", timeout=BOOT_MS)
    late = open_tab(new_context(), link_on(page_url, invite_room, invite=expired))
    late.evaluate("() => window.call.ready")
    expect(panel(late).get_by_text("Your invite has expired")).to_be_visible(timeout=30_000)
    assert [p["name"] for p in people(first).values()] == ["Ann"]


def test_the_host_admits_a_knocking_guest_and_removes_after_a_confirmation(
    new_context: Any, origin: StaticServer, kibitz_server: KibitzServer
) -> None:
    room = made_room(gate="open", lobby=True)
    page_url = add_page(origin, kibitz_server, "window.call = Kibitz.mount({ room: location.hash.slice(1)"
                        ".split('?')[0], name: new URLSearchParams(location.search).get('name'),"
                        " startOpen: true, hostKey: sessionStorage.getItem('hostKey') || undefined });")
    host = open_tab(new_context(), link_on(page_url + "?name=Hana", room))
    host.evaluate("(k) => sessionStorage.setItem('hostKey', k)", room.host_key)
    host.reload()
    host.evaluate("() => window.call.ready")
    wait(host, "() => window.call.getState().isHost && window.call.getState().inCall", timeout=BOOT_MS)
    tools = panel(host).locator("section.host-tools")
    expect(tools).to_be_visible()
    expect(tools.get_by_role("switch", name="Waiting room")).to_be_checked()  # gl=1: on from the start
    guest = open_tab(new_context(), link_on(page_url + "?name=Gus", room))
    guest.evaluate("() => window.call.ready")
    expect(panel(guest).get_by_text("Waiting for the host to let you in")).to_be_visible(timeout=30_000)
    tools.get_by_role("button", name="Admit Gus").click()
    wait(guest, "() => window.call.getState().inCall && window.call.getParticipants().length === 2")
    guest_id = state(guest)["self"]
    tile = panel(host).locator(f'.tile[data-id="{guest_id}"]')
    expect(panel(guest).locator(f'.tile[data-id="{state(host)["self"]}"] .tag.host')).to_have_text("Host")
    tile.get_by_role("button", name="Remove Gus").click()
    expect(tile.get_by_text("Remove Gus? They cannot come back.")).to_be_visible()
    tile.get_by_role("button", name="Yes, remove Gus").click()
    expect(panel(guest).get_by_text("The host removed you from this call")).to_be_visible(timeout=30_000)
    wait(host, "() => window.call.getParticipants().length === 1")
    # The Invite button copies the room's link with its settings (no secret in it).
    invite = host.evaluate("() => window.call.createInviteLink()")
    parsed = parse_link(invite)
    assert parsed.room == room.room and parsed.gate == room.gate.without_secrets()
    assert room.host_key not in invite


# ------------------------------------------------------------------------- consent panel


def test_an_agents_grant_changes_through_the_consent_panel(
    new_context: Any, origin: StaticServer, kibitz_server: KibitzServer
) -> None:
    room = made_room(gate="open")
    page_url = add_page(origin, kibitz_server, "window.call = Kibitz.mount({ room: location.hash.slice(1)"
                        ".split('?')[0], name: 'Hana', startOpen: true, hostKey: window.HOST_KEY });")
    ctx = new_context()
    ctx.add_init_script(f"window.HOST_KEY = {json.dumps(room.host_key)};")
    host = open_tab(ctx, link_on(page_url, room))
    host.evaluate("() => window.call.ready")
    wait(host, "() => window.call.getState().isHost && window.call.getState().inCall", timeout=BOOT_MS)
    loop = AgentLoop()
    loop.pump = lambda: host.wait_for_timeout(10)
    agent = Agent(server=kibitz_server.http, link=room.link, name="Scribe", backend="test-model", egress=True)
    try:
        loop.run(agent.start(), 60)
        consent = panel(host).locator("section.consent")
        expect(consent).to_be_visible(timeout=30_000)
        expect(consent.get_by_text("model: test-model")).to_be_visible()
        expect(consent.get_by_text("what it perceives leaves this call")).to_be_visible()
        post = consent.get_by_role("checkbox", name="Scribe: Post chat")
        expect(post).not_to_be_checked()
        expect(post).to_be_enabled(timeout=15_000)
        post.check()
        loop.until(lambda: agent.can("send-chat"), timeout=20, what="the grant to reach the agent")
        loop.run(agent.say("thanks for the grant"))
        wait(host, "() => window.call.getChat().some((l) => l.text === 'thanks for the grant')")
        expect(consent.locator("ol.audit li").first).to_contain_text("Grant")
        post.uncheck()
        loop.until(lambda: not agent.can("send-chat"), timeout=20, what="the revoke to reach the agent")
    finally:
        loop.run(agent.leave(), 20)
        loop.close()


# --------------------------------------------------------------------------- golden vectors

def test_the_moderation_vectors_pass_in_the_page_as_in_cpython(
    new_context: Any, origin: StaticServer, kibitz_server: KibitzServer
) -> None:
    page = open_tab(new_context(), add_page(origin, kibitz_server))
    got = check_in_page(page, "moderation")
    assert got["platform"] == "emscripten" and got["failed"] == []
    with ThreadPoolExecutor(1) as pool:
        here = pool.submit(asyncio.run, check_all(json.loads(vectors("moderation")))).result()
    assert here.failed == [] and got["passed"] == here.passed


# ------------------------------------------------------------------------ the demo, as a new user


def test_a_new_user_makes_a_gated_room_on_the_demo_page_shares_it_and_moderates(
    new_context: Any, kibitz_server: KibitzServer
) -> None:
    host = new_context().new_page()
    host.goto(f"{kibitz_server.http}/")
    form = host.locator("#new-room")
    form.locator("select[name=gate]").select_option("code")
    form.locator("input[name=lobby]").check()
    form.locator("input[name=password]").fill("correct horse battery")
    form.get_by_role("button", name="New room").click()
    host.wait_for_url(re.compile(r"#kz[a-z2-7]{38}\?g=code"), timeout=BOOT_MS)
    link = host.locator("#made-link").inner_text(timeout=BOOT_MS)
    code = host.locator("#made-code").inner_text()
    assert "ghk=" in link and code not in link
    host.evaluate("() => window.call.ready")
    host.evaluate("() => window.call.join()")
    wait(host, "() => window.call.getState().isHost && window.call.getState().inCall", timeout=BOOT_MS)
    # The guest opens the shared link, knocks with the code, and waits for the host.
    guest = new_context().new_page()
    guest.goto(link)
    guest.wait_for_function("() => window.call", timeout=10_000)
    guest.evaluate("() => window.call.ready")
    guest.evaluate("() => window.call.join()")
    wait(guest, "() => window.call.getState().lobbyStatus === 'needs-credential'", timeout=BOOT_MS)
    guest.evaluate("(c) => window.call.setJoinCredential(c)", code)
    wait(guest, "() => window.call.getState().lobbyStatus === 'waiting'")
    wait(host, "() => window.call.getKnocks().length === 1")
    assert host.evaluate("() => window.call.admit(window.call.getKnocks()[0].id)") is True
    wait(guest, "() => window.call.getState().inCall && window.call.getParticipants().length === 2")
    # The host, on another device, opens the same link and unlocks the host tools with the password.
    again = new_context().new_page()
    again.goto(link)
    again.wait_for_function("() => window.call", timeout=10_000)
    again.evaluate("() => window.call.ready")
    again.evaluate("(c) => window.call.setJoinCredential(c)", code)
    wait(again, "() => window.call.getState().hostKeySealed", timeout=BOOT_MS)
    again.evaluate("() => window.call.claimHost('correct horse battery')")
    wait(again, "() => window.call.getState().isHost && !!window.call.getState().coordinator")
    assert again.evaluate("() => window.call.setLocked(true)") is True
    wait(guest, "() => window.call.getState().locked")
