"""Who pays and "hide my IP" in real Chromium, with a real coturn and real ``kibitz serve``s.

Host pages come from a third-party origin (a StaticServer) and load widget.js from a Kibitz
server. Every peer connection a page makes is recorded (what it gathers, every remote description
and candidate it is handed, its selected pair), so the tests check what a peer actually *received*:

* two ``relayOnly`` tabs meet through coturn, and neither is ever handed a host or
  server-reflexive candidate of the other, nor any of this machine's interface addresses;
  a direct tab's peer *is* handed them (the control: the check would see a leak);
* a relay-only tab that the gated relay refuses makes no peer connection at all and says why;
* a licensed opener's invite link carries ``?grant=``: the joiner adopts it (and it leaves the
  address bar), gets tier ``room``, and its relay is metered to the opener's licence;
* ``turnHost`` sends the relay request (and its bill) to a second server on another origin;
* the widget's "Hide my IP" switch moves a live call onto the relay and is remembered.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from coturn import SELECTED_PAIRS, relay_args
from playwright.sync_api import BrowserContext, Page, expect
from server_fixture import ROOT, KibitzServer, running_kibitz_server
from static_server import StaticServer, ensure_dist, serve

KIBITZ = str(ROOT / ".venv" / "bin" / "kibitz")
BOOT_MS = 30_000
LINK_MS = 40_000

# Records every RTCPeerConnection: candidates it gathers, remote descriptions and candidates it is
# handed, kept for getStats.
RECORD = """(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.__rec = { local: [], remote: [] };
  window.RTCPeerConnection = function (config, ...rest) {
    const pc = new Native(config, ...rest);
    window.__pcs.push(pc);
    pc.addEventListener("icecandidate", (e) => {
      if (e.candidate) window.__rec.local.push(e.candidate.candidate);
    });
    const srd = pc.setRemoteDescription.bind(pc);
    pc.setRemoteDescription = (d) => { window.__rec.remote.push((d && d.sdp) || ""); return srd(d); };
    const aic = pc.addIceCandidate.bind(pc);
    pc.addIceCandidate = (c) => { window.__rec.remote.push((c && c.candidate) || ""); return aic(c); };
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
})();"""

# A host page: the licence (if any) is the person's own, kept in their browser's storage; the
# mount options come from the page's query (minus whatever the widget removes).
PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>host page</title></head>
<body><h1>A third-party page</h1>
<script src="{widget}" data-kibitz-test></script>
<script>
  const q = new URLSearchParams(location.search);
  const options = JSON.parse(q.get("o") || "{{}}");
  const licence = localStorage.getItem("my-licence");
  if (licence) options.licenseKey = licence;
  window.call = Kibitz.mount(options);
</script></body></html>"""

UP = "() => window.call.getParticipants().some((p) => !p.isSelf && p.linkUp)"


def machine_addresses() -> set[str]:
    """This machine's non-loopback interface addresses: what a leak would show."""
    out = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout
    found = set()
    for link in json.loads(out):
        for info in link.get("addr_info", []):
            ip = ipaddress.ip_address(info["local"])
            if not ip.is_loopback and not ip.is_link_local:
                found.add(str(ip))
    return found


def candidates(texts: list[str]) -> list[str]:
    """The candidate lines in SDPs and trickled candidates."""
    lines: list[str] = []
    for text in texts:
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("a=candidate:") or line.startswith("candidate:"):
                lines.append(line.removeprefix("a="))
    return lines


def assert_no_address_of_the_relay_only_side(received: list[str]) -> None:
    lines = candidates(received)
    assert lines, "no candidate was received at all"
    for line in lines:
        fields = line.split()
        kind = fields[fields.index("typ") + 1]
        assert kind == "relay", f"a non-relay candidate reached the peer: {line}"
        raddr = fields[fields.index("raddr") + 1] if "raddr" in fields else "0.0.0.0"
        assert raddr in ("0.0.0.0", "::"), f"the relay candidate names a real address: {line}"
    blob = "\n".join(received)
    for addr in machine_addresses():
        assert not re.search(rf"(?<![\w.:]){re.escape(addr)}(?![\w.:])", blob), f"{addr} reached the peer"


@pytest.fixture(scope="module")
def open_relay(coturn: tuple[int, Path]) -> Iterator[KibitzServer]:
    with running_kibitz_server(*relay_args(coturn)) as srv:
        yield srv


@pytest.fixture(scope="module")
def gated(
    coturn: tuple[int, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[KibitzServer, Path]]:
    state = tmp_path_factory.mktemp("gated") / "state"
    gate = ["--turn-gate", "licence", "--state-dir", str(state)]
    with running_kibitz_server(*relay_args(coturn), *gate) as srv:
        yield srv, state


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticServer]:
    ensure_dist()
    with serve(tmp_path_factory.mktemp("host-origin")) as server:
        yield server


def licence(state: Path, *args: str) -> str:
    command = [KIBITZ, "licence", *args, "--state-dir", str(state)]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout


def page_url(host: StaticServer, srv: KibitzServer, **options: Any) -> str:
    path = f"/p-{secrets.token_hex(4)}.html"
    host.pages[path] = PAGE.format(widget=f"{srv.http}/widget.js")
    from urllib.parse import quote

    return f"{host.url}{path}?o={quote(json.dumps(options))}"


def open_tab(ctx: BrowserContext, url: str) -> Page:
    ctx.add_init_script(RECORD)
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_function("() => window.call", timeout=BOOT_MS)
    page.evaluate("() => window.call.ready")
    return page


def room() -> str:
    return "room-priv-" + secrets.token_hex(5)


def exchange(a: Page, b: Page) -> None:
    """a sends b a directed message over their (relayed) link."""
    b.evaluate("() => { window.got = []; window.call.onMessage((d) => window.got.push(d)); }")
    to = b.evaluate("() => window.call.getState().self")
    a.evaluate("(to) => window.call.sendTo(to, { via: 'relay' })", to)
    b.wait_for_function("() => window.got.length >= 1", timeout=10_000)
    assert b.evaluate("() => window.got") == [{"via": "relay"}]


def test_two_relay_only_tabs_meet_and_neither_sees_the_others_address(
    new_context: Callable[..., BrowserContext], open_relay: KibitzServer, host: StaticServer
) -> None:
    r = room()
    a, b = (open_tab(new_context(), page_url(host, open_relay, room=r, name=n, headless=True, startOpen=True,
                                             relayOnly=True)) for n in ("ann", "bob"))
    for page in (a, b):
        page.wait_for_function(UP, timeout=LINK_MS)
    exchange(a, b)
    for page in (a, b):
        assert page.evaluate("() => window.call.getState().relayOnly") is True
        pairs = page.evaluate(SELECTED_PAIRS)
        assert pairs and all(p == ["relay", "relay"] for p in pairs), pairs
        rec = page.evaluate("() => window.__rec")
        assert {line.split()[7] for line in candidates(rec["local"])} == {"relay"}  # gathered: relay only
        assert_no_address_of_the_relay_only_side(rec["remote"])


def test_a_direct_peer_of_a_relay_only_tab_receives_none_of_its_addresses(
    new_context: Callable[..., BrowserContext], open_relay: KibitzServer, host: StaticServer
) -> None:
    r = room()
    hidden = open_tab(new_context(), page_url(host, open_relay, room=r, name="hidden", headless=True,
                                              startOpen=True, relayOnly=True))
    direct = open_tab(new_context(), page_url(host, open_relay, room=r, name="direct", headless=True,
                                              startOpen=True))
    for page in (hidden, direct):
        page.wait_for_function(UP, timeout=LINK_MS)
    exchange(direct, hidden)
    assert_no_address_of_the_relay_only_side(direct.evaluate("() => window.__rec.remote"))
    # The control: the direct tab's own addresses do reach its peer, so the check above would see a leak.
    told = "\n".join(hidden.evaluate("() => window.__rec.remote"))
    assert " typ host" in told
    assert any(addr in told for addr in machine_addresses()) or not machine_addresses()
    pairs = hidden.evaluate(SELECTED_PAIRS)
    assert pairs and all(local == "relay" for local, _ in pairs), pairs


def test_a_relay_only_tab_the_relay_refuses_stays_out_and_says_why(
    new_context: Callable[..., BrowserContext], gated: tuple[KibitzServer, Path], host: StaticServer
) -> None:
    srv, _state = gated
    r = room()
    other = open_tab(new_context(), page_url(host, srv, room=r, name="other", headless=True, startOpen=True))
    refused = open_tab(new_context(), page_url(host, srv, room=r, name="private", startOpen=True,
                                               relayOnly=True))
    refused.wait_for_function("() => window.call.getState().relayError", timeout=BOOT_MS)
    state = refused.evaluate("() => window.call.getState()")
    assert state["relayOnly"] is True and state["relayTier"] == "free"
    assert "Hide my IP is on" in state["relayError"] and "tier free" in state["relayError"]
    status = refused.get_by_role("status")
    expect(status).to_contain_text("Hide my IP is on", timeout=10_000)
    expect(status).to_contain_text("Turn off Hide my IP to connect directly")
    error = refused.evaluate("() => window.call.join().then(() => 'joined', (e) => e.message)")
    assert "Hide my IP is on" in error
    refused.wait_for_timeout(1500)
    assert refused.evaluate("() => window.__pcs.length") == 0  # never a direct fallback
    assert [p["name"] for p in other.evaluate("() => window.call.getParticipants()")] == ["other"]


def test_an_openers_invite_link_sponsors_the_joiner(
    new_context: Callable[..., BrowserContext], gated: tuple[KibitzServer, Path], host: StaticServer
) -> None:
    srv, state = gated
    token = licence(state, "add", "--label", "opener").strip()
    lid = next(line.split()[0] for line in licence(state, "list").splitlines() if line.endswith("opener"))
    r = room()
    opener_ctx = new_context(permissions=["clipboard-read", "clipboard-write"])
    opener_ctx.add_init_script(f"localStorage.setItem('my-licence', {json.dumps(token)})")
    opener = open_tab(opener_ctx, page_url(host, srv, room=r, name="opener", startOpen=True, relayOnly=True))
    opener.wait_for_function("() => window.call.getState().relayTier === 'premium'", timeout=BOOT_MS)

    # The widget's Invite button copies a link with a fresh grant; the controller makes the same.
    # (Once connected and alone, the status line offers the same action: either button copies.)
    opener.get_by_role("button", name="Copy invite link").first.click()
    expect(opener.get_by_role("status")).to_contain_text("Invite link copied", timeout=10_000)
    link = opener.evaluate("() => navigator.clipboard.readText()")
    made = opener.evaluate("() => window.call.createInviteLink()")
    for url in (link, made):
        assert re.search(r"[?&]grant=[\w-]+\.[\w-]+", url), url
        assert url.split("grant=")[0] == opener.url + "&"

    joiner = open_tab(new_context(), link)  # no licence of its own, relay only: the grant carries it
    assert "grant=" not in joiner.url  # adopted and taken out of the address bar
    joiner.wait_for_function("() => window.call.getState().relayTier", timeout=BOOT_MS)
    assert joiner.evaluate("() => window.call.getState()")["relayTier"] == "room"
    joiner.evaluate("() => window.call.join({ mic: false, cam: false })")
    for page in (opener, joiner):
        page.wait_for_function(UP, timeout=LINK_MS)
    exchange(opener, joiner)
    pairs = joiner.evaluate(SELECTED_PAIRS)
    assert pairs and all(p == ["relay", "relay"] for p in pairs), pairs
    month = time.strftime("%Y-%m", time.gmtime())
    row = next(line.split() for line in licence(state, "usage", "--month", month).splitlines() if lid in line)
    assert row[2] == "2", row  # the opener's own credentials and the joiner's, both on the opener


def test_turn_host_on_another_origin_carries_the_relay_and_its_bill(
    new_context: Callable[..., BrowserContext], kibitz_server: KibitzServer, gated: tuple[KibitzServer, Path],
    host: StaticServer,
) -> None:
    relay_srv, state = gated
    token = licence(state, "add", "--label", "embedder").strip()
    r = room()
    asked: list[tuple[str, str | None]] = []
    tabs = []
    for name in ("one", "two"):
        ctx = new_context()
        ctx.on("request", lambda req: asked.append((req.url, req.headers.get("authorization")))
               if "/api/turn" in req.url else None)
        tabs.append(open_tab(ctx, page_url(host, kibitz_server, room=r, name=name, headless=True,
                                           startOpen=True, relayOnly=True, turnHost=relay_srv.http,
                                           licenseKey=token)))
    for page in tabs:
        page.wait_for_function(UP, timeout=LINK_MS)
        assert page.evaluate("() => window.call.getState().relayTier") == "premium"
    exchange(tabs[0], tabs[1])
    assert asked and all(url.startswith(f"{relay_srv.http}/api/turn?room=") for url, _ in asked), asked
    assert all(auth == f"Bearer {token}" for _, auth in asked)
    for page in tabs:
        pairs = page.evaluate(SELECTED_PAIRS)
        assert pairs and all(p == ["relay", "relay"] for p in pairs), pairs


def relayed_pairs(page: Page, timeout: float = LINK_MS / 1000) -> list[list[str]]:
    """Wait until the page has connected pairs and every one of them is relayed on its side."""
    deadline = time.monotonic() + timeout
    while True:
        pairs = page.evaluate(SELECTED_PAIRS)
        if pairs and all(local == "relay" for local, _ in pairs):
            return pairs
        assert time.monotonic() < deadline, f"still not relayed: {pairs}"
        page.wait_for_timeout(200)


def test_hide_my_ip_moves_a_live_call_onto_the_relay_and_is_remembered(
    new_context: Callable[..., BrowserContext], open_relay: KibitzServer, host: StaticServer
) -> None:
    r = room()
    me = open_tab(new_context(), page_url(host, open_relay, room=r, name="me", startOpen=True))
    peer = open_tab(new_context(), page_url(host, open_relay, room=r, name="peer", headless=True,
                                            startOpen=True))
    for page in (me, peer):
        page.wait_for_function(UP, timeout=LINK_MS)
    assert me.evaluate("() => window.call.getState().relayOnly") is False
    assert any(local != "relay" for local, _ in me.evaluate(SELECTED_PAIRS))  # direct so far

    switch = me.get_by_role("checkbox", name="Hide my IP")
    expect(switch).not_to_be_checked()
    peer.evaluate("() => { window.__rec.remote = []; }")
    switch.check()
    me.wait_for_function("() => window.call.getState().relayOnly === true && window.call.getState().inCall",
                         timeout=BOOT_MS)
    relayed_pairs(me)
    exchange(peer, me)
    assert_no_address_of_the_relay_only_side(peer.evaluate("() => window.__rec.remote"))
    assert me.evaluate("() => localStorage.getItem('kibitz:hideIp')") == "1"

    peer.evaluate("() => { window.__rec.remote = []; }")
    me.reload()  # remembered: relay only from the first connection on
    me.wait_for_function("() => window.call && window.call.getState().relayTier", timeout=BOOT_MS)
    assert me.evaluate("() => window.call.getState().relayOnly") is True
    expect(me.get_by_role("checkbox", name="Hide my IP")).to_be_checked()
    me.wait_for_function(UP, timeout=LINK_MS)
    relayed_pairs(me)
    assert_no_address_of_the_relay_only_side(peer.evaluate("() => window.__rec.remote"))


def test_a_sponsored_relay_only_joiner_keeps_relaying_past_its_first_credentials(
    new_context: Callable[..., BrowserContext], coturn: tuple[int, Path], host: StaticServer,
    tmp_path: Path,
) -> None:
    """Refresh with a grant: credentials of 10 s, a joiner let in by an opener's grant stays past
    them, and a newcomer who arrives after they expired still reaches it through the relay, which
    takes fresh room-tier credentials (asked with the grant the last answer renewed)."""
    state = tmp_path / "state"
    with running_kibitz_server(*relay_args(coturn), "--turn-gate", "licence", "--state-dir", str(state),
                               "--turn-ttl", "10") as srv:
        token = licence(state, "add").strip()
        r = room()
        opener_ctx = new_context()
        opener_ctx.add_init_script(f"localStorage.setItem('my-licence', {json.dumps(token)})")
        opener = open_tab(opener_ctx, page_url(host, srv, room=r, name="opener", headless=True,
                                               startOpen=True, relayOnly=True))
        link = opener.evaluate("() => window.call.createInviteLink()")
        opener.close()  # the opener may go: the joiner's grant keeps its relay
        joiner = open_tab(new_context(), link)
        joiner.wait_for_function("() => window.call.getState().relayTier === 'room'", timeout=BOOT_MS)
        first = joiner.evaluate(USERNAME)
        expiry = int(first.split(":", 1)[0])
        while time.time() < expiry + 1:  # past the first credentials (refreshed at 7.5 s)
            joiner.wait_for_timeout(250)
        fresh = joiner.evaluate(USERNAME)
        assert int(fresh.split(":", 1)[0]) > expiry and joiner.evaluate(
            "() => window.call.getState().relayTier") == "room"
        late_ctx = new_context()
        late_ctx.add_init_script(f"localStorage.setItem('my-licence', {json.dumps(token)})")
        late = open_tab(late_ctx, page_url(host, srv, room=r, name="late", headless=True, startOpen=True,
                                           relayOnly=True))
        for page in (joiner, late):
            page.wait_for_function(UP, timeout=LINK_MS)
        exchange(late, joiner)
        assert all(p == ["relay", "relay"] for p in relayed_pairs(joiner))


USERNAME = (
    "async () => (await Kibitz._engine()).runPython('from kibitz.backends.browser import SESSIONS\\n"
    "SESSIONS[-1]._transport.rtc_config.ice_servers[0][\"username\"]')"
)
