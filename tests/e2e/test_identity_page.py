"""Verified identity in the page, end to end: real Chromium tabs (one browser context each: a user
of their own, with their own IndexedDB and so their own DTLS certificate), the real ``kibitz serve
--smtp`` mailing real sign-in codes to an aiosmtpd sink the test reads them from, and the widget.

* two tabs sign in by email code through the widget's own sign-in element and see each other
  verified (badge on the tile), with the same safety code on both ends;
* an ``email``-gated room admits a signed-in tab at an allowed address and holds out an unsigned
  one (``unverified``) until it signs in;
* a token minted for one page's certificate is refused by another page (``provideIdentityToken``
  rejects, and a peer that is handed it never shows it verified);
* a reload keeps the certificate: the same nonce, and a token minted before the reload still holds;
* a ``require`` room holds app messages until both tabs are verified;
* OpenID Connect: one tab signs in through the widget's popup (code flow with PKCE against a real
  local issuer), the other with the app's own library; both see each other verified;
* a tab and an agent, and a Firefox and a Chromium tab, verify each other.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from agent_loop import AgentLoop
from oidc_issuer import CLIENT, running_issuer, sign_in
from playwright.sync_api import BrowserContext, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from server_fixture import KibitzServer, running_kibitz_server
from smtp_sink import Sink, running_smtp_sink
from static_server import StaticServer, ensure_dist, serve

from kibitz.agent import Agent, agent_identity_nonce
from kibitz.agent.agent import certificate_fingerprint_of
from kibitz.identity.binding import identity_nonce
from kibitz.rooms import NewRoom, create_room

BOOT_MS = 60_000
FP = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){31}$")
SEES_VERIFIED = "(e) => window.call.getParticipants().some((p) => !p.isSelf && p.verifiedEmail === e)"

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>identity</title></head>
<body><h1>A page that embeds a call</h1><div id="signin"></div>
<script src="{widget}" data-kibitz-test></script></body></html>"""


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Sink, int]]:
    with running_smtp_sink() as sink:
        yield sink


@pytest.fixture(scope="module")
def server(smtp: tuple[Sink, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[KibitzServer]:
    state = tmp_path_factory.mktemp("id-state")
    with running_kibitz_server("--smtp", f"127.0.0.1:{smtp[1]}", "--state-dir", str(state)) as srv:
        yield srv


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticServer]:
    ensure_dist()
    with serve(tmp_path_factory.mktemp("identity-origin")) as static:
        yield static


def page_url(origin: StaticServer, server: KibitzServer, fragment: str = "") -> str:
    path = f"/id-{uuid.uuid4().hex[:8]}.html"
    origin.pages[path] = PAGE.format(widget=f"{server.http}/widget.js")
    return f"{origin.url}{path}{fragment}"


def open_tab(ctx: BrowserContext, url: str, options: dict[str, Any]) -> Page:
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_function("() => window.Kibitz", timeout=10_000)
    page.evaluate("(o) => { window.call = Kibitz.mount(o); }", options)
    page.evaluate("() => window.call.ready")
    return page


def wait(page: Page, expr: str, arg: Any = None, timeout: float = 45_000) -> Any:
    try:
        return page.wait_for_function(expr, arg=arg, timeout=timeout).json_value()
    except PlaywrightTimeout:
        raise AssertionError(f"timed out waiting for {expr} ({arg!r}); the page's identity state: "
                             f"{identity_state(page)}") from None


def identity_state(page: Page) -> str:
    """What the engine knows of each peer's identity (a failure says why, not only that it failed)."""
    try:
        return str(in_engine(page, "str((IDENTITY.stats(), [(p, s.fp, s.refusal, s.token is not None, "
                                   "s.identity) for p, s in IDENTITY.roster.peers.items()]))"))
    except Exception as err:  # the page may be gone: say so rather than hide the first failure
        return f"unreadable ({err})"


def people(page: Page) -> dict[str, dict[str, Any]]:
    found = page.evaluate("() => window.call.getParticipants().map(({stream, ...p}) => p)")
    return {p["id"]: p for p in found}


def other(page: Page) -> dict[str, Any]:
    found = [p for p in people(page).values() if not p["isSelf"]]
    assert len(found) == 1, found
    return found[0]


def post(url: str, body: object) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def mint(server: KibitzServer, sink: Sink, email: str, nonce: str, room: str) -> str:
    """A token for ``nonce`` from the real server, by the same two requests the page makes."""
    n = len(sink.messages)
    started = post(f"{server.http}/api/email/start", {"email": email, "room": room, "nonce": nonce})
    got = post(f"{server.http}/api/email/verify",
               {"ticket": started["ticket"], "code": sink.code_for(email, after=n, timeout=10)})
    assert got["ok"], got
    return str(got["jwt"])


def sign_in_through_widget(page: Page, sink: Sink, email: str) -> None:
    """The widget's own sign-in (the open panel's element): address, the mailed code, done."""
    form = page.get_by_role("form", name="Sign in by email")
    expect(form).to_be_visible(timeout=30_000)
    n = len(sink.messages)
    form.get_by_label("Your email address").fill(email)
    form.get_by_role("button", name="Send code").click()
    code = sink.code_for(email, after=n, timeout=20)
    typed = page.get_by_role("form", name="Type the code")
    typed.get_by_label("The 6-digit code").fill(code)
    typed.get_by_role("button", name="Verify").click()
    wait(page, "(e) => window.call.getState().selfEmail === e", email)


def in_engine(page: Page, expr: str) -> Any:
    """``expr`` evaluated in the page's engine, ``IDENTITY`` being the mount's MemberIdentity."""
    code = ("from kibitz.backends.page_session import SESSIONS\n"
            f"IDENTITY = SESSIONS[-1].session.identity\n{expr}")
    return page.evaluate("(c) => Kibitz._engine().then((e) => e.runPython(c))", code)


def adopt(page: Page, jwt: str, email: str) -> None:
    """``provideIdentityToken``: verified now, or once the issuer's keys are in (``pending``)."""
    got = page.evaluate("(t) => window.call.provideIdentityToken(t)", jwt)
    assert got["status"] in ("verified", "pending"), got
    wait(page, "(e) => window.call.getState().selfEmail === e", email)


def made_room(**kw: Any) -> NewRoom:
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API owns this thread's event loop
        return pool.submit(asyncio.run, create_room(**kw)).result()


# ------------------------------------------------------------------------------------------------


def test_two_tabs_sign_in_by_email_and_see_each_other_verified_with_one_safety_code(
    new_context: Any, origin: StaticServer, server: KibitzServer, smtp: tuple[Sink, int]
) -> None:
    sink, _ = smtp
    room = f"room-id-{uuid.uuid4().hex[:10]}"
    opts = {"room": room, "startOpen": True, "verifyIdentity": {"providers": ["email"]}}
    ann = open_tab(new_context(), page_url(origin, server), {**opts, "name": "Ann"})
    bob = open_tab(new_context(), page_url(origin, server), {**opts, "name": "Bob"})
    for page in (ann, bob):
        wait(page, "() => window.call.getState().inCall && window.call.getParticipants().length === 2")
        assert page.evaluate("() => window.call.getState().identityEnabled") is True
    nonces = [page.evaluate("() => window.call.identityNonce()") for page in (ann, bob)]
    assert nonces[0] != nonces[1]  # two users, two certificates

    sign_in_through_widget(ann, sink, "ann@x.example")
    sign_in_through_widget(bob, sink, "bob@x.example")
    wait(ann, SEES_VERIFIED, "bob@x.example")
    wait(bob, SEES_VERIFIED, "ann@x.example")
    seen_by_ann, seen_by_bob = other(ann), other(bob)
    assert seen_by_ann["safetyCode"] and seen_by_ann["safetyCode"] == seen_by_bob["safetyCode"]
    assert len(seen_by_ann["safetyWords"]) == 4 and seen_by_ann["safetyWords"] == seen_by_bob["safetyWords"]
    state = ann.evaluate("() => window.call.getState()")
    assert state["selfEmail"] == "ann@x.example" and state["rosterActive"] and state["rosterCanShare"]
    assert not state["rosterCompromised"]
    # The tiles say it: Bob's tile in Ann's panel shows his address and the safety code.
    tile = ann.locator(f'.tile[data-id="{seen_by_ann["id"]}"]')
    expect(tile.locator(".verified")).to_have_text("✓ bob@x.example")
    expect(tile.locator(".safety")).to_have_text(seen_by_ann["safetyCode"])


def test_a_tab_and_an_agent_verify_each_other_with_one_safety_code(
    new_context: Any, origin: StaticServer, server: KibitzServer, smtp: tuple[Sink, int], tmp_path: Any
) -> None:
    """The page reads the agent's certificate with getRemoteCertificates(), the agent reads the page's
    from aiortc's DTLS session: both see the other's real certificate, and the same safety code."""
    sink, _ = smtp
    room = f"room-id-{uuid.uuid4().hex[:10]}"
    verify = {"providers": ["email"]}
    opts = {"room": room, "name": "Ann", "startOpen": True, "headless": True, "verifyIdentity": verify}
    ann = open_tab(new_context(), page_url(origin, server), opts)
    adopt(ann, mint(server, sink, "ann@x.example", ann.evaluate("() => window.call.identityNonce()"), room),
          "ann@x.example")
    cert = tmp_path / "scribe.pem"
    token = mint(server, sink, "scribe@x.example", agent_identity_nonce(room, cert), room)
    loop = AgentLoop()
    loop.pump = lambda: ann.wait_for_timeout(10)
    agent = Agent(server.http, room, "Scribe", identity_token=token, cert_file=cert, verify_identity=verify)
    try:
        loop.run(agent.start(), 60)
        wait(ann, SEES_VERIFIED, "scribe@x.example")
        ann_id = ann.evaluate("() => window.call.getState().self")
        loop.until(lambda: any(p["id"] == ann_id and p.get("verifiedEmail") == "ann@x.example"
                               for p in agent.participants()), timeout=30, what="the agent to verify Ann")
        theirs = loop.call(lambda: next(p for p in agent.participants() if p["id"] == ann_id))
        mine = other(ann)
        assert mine["safetyCode"] and mine["safetyCode"] == theirs["safetyCode"]
        seen_by_page = in_engine(ann, "[p.fp for p in IDENTITY.roster.peers.values()]")
        assert seen_by_page == [certificate_fingerprint_of(cert)]
        seen_by_agent = loop.call(lambda: agent.session.identity.roster.peers[ann_id].fp)
        assert seen_by_agent == in_engine(ann, "IDENTITY.local_fp()")
    finally:
        loop.run(agent.leave(), 20)
        loop.close()


def test_an_email_gate_admits_a_signed_in_tab_at_an_allowed_address_and_holds_out_the_rest(
    new_context: Any, origin: StaticServer, server: KibitzServer, smtp: tuple[Sink, int]
) -> None:
    sink, _ = smtp
    room = made_room(gate="email", allowed=["@allowed.example"], issuer=server.http, host="none")
    opts = {"room": room.room, "joinGate": room.gate.to_json(), "startOpen": True}
    ann = open_tab(new_context(), page_url(origin, server), {**opts, "name": "Ann"})
    eve = open_tab(new_context(), page_url(origin, server), {**opts, "name": "Eve"})
    for page in (ann, eve):  # nobody is let in without a sign-in, the first comer included
        wait(page, "() => window.call.getState().lobbyStatus === 'unverified'")
    sign_in_through_widget(ann, sink, "ann@allowed.example")
    wait(ann, "() => window.call.getState().lobbyStatus !== 'unverified' && window.call.getParticipants()"
              ".some((p) => p.isSelf && p.verifiedEmail === 'ann@allowed.example')")
    # Eve signs in too, at an address the room does not allow: she stays out.
    nonce = eve.evaluate("() => window.call.identityNonce()")
    jwt = mint(server, sink, "eve@other.example", nonce, room.room)
    eve.evaluate("(t) => window.call.provideIdentityToken(t).catch((e) => e.message)", jwt)
    eve.wait_for_timeout(1500)  # what follows must stay so; the door's answer comes well within
    assert eve.evaluate("() => window.call.getState().lobbyStatus") == "unverified"
    assert [p["name"] for p in people(ann).values()] == ["Ann"]
    # At an allowed address she is let in, and Ann sees her verified.
    jwt = mint(server, sink, "eve@allowed.example", nonce, room.room)
    adopt(eve, jwt, "eve@allowed.example")
    wait(ann, "() => window.call.getParticipants().some((p) => p.verifiedEmail === 'eve@allowed.example')")
    wait(eve, "() => window.call.getState().lobbyStatus !== 'unverified' && window.call.getParticipants()"
              ".some((p) => !p.isSelf && p.verifiedEmail === 'ann@allowed.example')")


def test_a_token_from_another_pages_certificate_is_refused_and_a_reload_keeps_the_binding(
    new_context: Any, origin: StaticServer, server: KibitzServer, smtp: tuple[Sink, int]
) -> None:
    sink, _ = smtp
    room = f"room-id-{uuid.uuid4().hex[:10]}"
    opts = {"room": room, "startOpen": True, "headless": True, "verifyIdentity": {"providers": ["email"]}}
    url = page_url(origin, server)
    ann_ctx = new_context()
    ann, bob, carol = (open_tab(ctx, url, {**opts, "name": name})
                       for ctx, name in ((ann_ctx, "Ann"), (new_context(), "Bob"), (new_context(), "Carol")))
    for page in (ann, bob, carol):
        wait(page, "() => window.call.getState().inCall && window.call.getParticipants().length === 3")
    nonce = ann.evaluate("() => window.call.identityNonce()")
    fp = in_engine(ann, "IDENTITY.local_fp()")
    assert FP.match(fp) and nonce == identity_nonce(fp, room)
    jwt = mint(server, sink, "ann@x.example", nonce, room)
    adopt(ann, jwt, "ann@x.example")
    wait(bob, "() => window.call.getParticipants().some((p) => p.verifiedEmail === 'ann@x.example')")

    # Carol copies Ann's token: her own page refuses it, and so do her peers when she sends it anyway.
    refused = carol.evaluate(
        "(t) => window.call.provideIdentityToken(t).then(() => 'adopted', (e) => e.message)", jwt)
    assert refused != "adopted" and "another" in refused, refused
    carol.evaluate("""(t) => Kibitz._engine().then((e) => { e.globals.set('JWT', t); return e.runPython(
        'from kibitz.backends.page_session import SESSIONS\\n'
        + 'ident = SESSIONS[-1].session.identity\\n'
        + 'ident.set_profile(jwt=JWT)\\n'
        + 'for peer in list(ident.roster.peers): ident.send_token(peer, JWT)'); })""", jwt)
    carol_id = carol.evaluate("() => window.call.getState().self")
    wait(bob, "() => window.call.getIdentityStats().then((s) => (s.refusals['other-cert'] || 0) >= 1)")
    assert people(bob)[carol_id]["verifiedEmail"] is None
    assert people(ann)[carol_id]["verifiedEmail"] is None

    # A reload keeps the certificate: the same nonce, and the token from before still holds.
    before = people(bob)[ann.evaluate("() => window.call.getState().self")]["safetyCode"]
    ann.reload()
    ann.wait_for_function("() => window.Kibitz", timeout=10_000)
    ann.evaluate("(o) => { window.call = Kibitz.mount(o); }", {**opts, "name": "Ann"})
    ann.evaluate("() => window.call.ready")
    assert ann.evaluate("() => window.call.identityNonce()") == nonce
    adopt(ann, jwt, "ann@x.example")
    wait(ann, "() => window.call.getState().inCall && window.call.getParticipants().length === 3")
    ann_id = ann.evaluate("() => window.call.getState().self")
    wait(bob, SEES_VERIFIED, "ann@x.example")
    assert people(bob)[ann_id]["safetyCode"] == before


def test_a_require_room_holds_content_until_both_tabs_are_verified(
    new_context: Any, origin: StaticServer, server: KibitzServer, smtp: tuple[Sink, int]
) -> None:
    """``verifyIdentity.require``: an app message sent before everyone is verified waits (nothing of it
    reaches the other page), and is delivered, in order, once both are."""
    sink, _ = smtp
    room = f"room-id-{uuid.uuid4().hex[:10]}"
    opts = {"room": room, "startOpen": True, "headless": True,
            "verifyIdentity": {"providers": ["email"], "require": True}}
    url = page_url(origin, server)
    ann, bob = (open_tab(new_context(), url, {**opts, "name": name}) for name in ("Ann", "Bob"))
    for page in (ann, bob):
        wait(page, "() => window.call.getState().inCall && window.call.getParticipants().length === 2")
        page.evaluate("() => { window.got = []; window.call.onMessage((d) => window.got.push(d)); }")
    ann.evaluate("() => window.call.broadcast({ n: 1 })")
    adopt(ann, mint(server, sink, "ann@x.example", ann.evaluate("() => window.call.identityNonce()"), room),
          "ann@x.example")
    bob.wait_for_timeout(1500)  # what follows must stay so: held while Bob is not verified
    assert bob.evaluate("() => window.got") == []
    assert ann.evaluate("() => window.call.getState().rosterCanShare") is False
    adopt(bob, mint(server, sink, "bob@x.example", bob.evaluate("() => window.call.identityNonce()"), room),
          "bob@x.example")
    wait(ann, "() => window.call.getState().rosterCanShare")
    ann.evaluate("() => window.call.broadcast({ n: 2 })")
    wait(bob, "() => window.got.length >= 2")
    assert bob.evaluate("() => window.got") == [{"n": 1}, {"n": 2}]
    assert bob.evaluate("() => window.call.getState().rosterCanShare") is True


def test_openid_connect_sign_in_in_the_widgets_popup_and_by_the_apps_own_library(
    new_context: Any, origin: StaticServer, server: KibitzServer
) -> None:
    """Google or any OIDC issuer (here a real local one). Ann signs in through the widget: its panel
    offers "Sign in with <issuer>", a popup runs the authorization code flow with PKCE and the nonce
    bound to her certificate, returns to kibitz-signin.html, and the code is redeemed in her page. Bob's
    app signs in with its own library (here: the code flow by hand) using identityNonce(). Every page
    fetches the issuer's discovery document and keys itself and checks tokens against its own link."""
    with running_issuer(("ann", "bob"), cors=True) as issuer:
        room = f"room-id-{uuid.uuid4().hex[:10]}"
        provider = {"type": "oidc", "issuer": issuer, "clientId": CLIENT}
        opts = {"room": room, "startOpen": True, "verifyIdentity": {"providers": [provider]}}
        url = page_url(origin, server)
        ann = open_tab(new_context(), url, {**opts, "name": "Ann"})
        bob = open_tab(new_context(), url, {**opts, "name": "Bob", "headless": True})
        for page in (ann, bob):
            wait(page, "() => window.call.getState().inCall && window.call.getParticipants().length === 2")
        button = ann.get_by_role("button", name=f"Sign in with {issuer.split('//')[1]}")
        expect(button).to_be_visible(timeout=30_000)
        with ann.expect_popup(timeout=15_000) as opened:
            button.click()
        popup = opened.value
        popup.get_by_role("button", name="ann-sub").click()  # the issuer's own sign-in form
        popup.wait_for_event("close", timeout=20_000)  # kibitz-signin.html handed the code back
        wait(ann, "(e) => window.call.getState().selfEmail === e", "ann@idp.example")
        expect(button).to_be_hidden()  # signed in: the panel stops offering it
        # Signing in again (a token runs out) from the same certificate in the same room: each popup
        # sign-in carries a salted nonce of its own, for issuers that refuse a nonce they have seen
        # (this one does not), and the salted token verifies like the plain one.
        ann.evaluate("() => { window.again = window.call.signInIdentity("
                     "document.getElementById('signin'), 'oidc'); }")
        with ann.expect_popup(timeout=15_000) as opened:
            ann.locator("#signin").get_by_role("button", name=re.compile("^Sign in with")).click()
        opened.value.get_by_role("button", name="ann-sub").click()
        assert ann.evaluate("() => window.again")["status"] == "verified"
        claims = ("import base64, json\np = IDENTITY.token.split('.')[1]\n"
                  "json.loads(base64.urlsafe_b64decode(p + '=' * (-len(p) % 4)))['nonce']")
        assert "." in in_engine(ann, claims)  # salt.hash
        wait(bob, SEES_VERIFIED, "ann@idp.example")

        token = sign_in(issuer, "bob-sub", bob.evaluate("() => window.call.identityNonce()"))
        adopt(bob, token, "bob@idp.example")
        wait(bob, SEES_VERIFIED, "ann@idp.example")
        wait(ann, SEES_VERIFIED, "bob@idp.example")
        stats = bob.evaluate("() => window.call.getIdentityStats()")
        assert stats["keys"].get("loaded", 0) >= 1, stats
        # The return page hands nothing to a window it does not know (no opener, no state of ours).
        stray = ann.context.new_page()
        stray.goto(f"{server.http}/kibitz-signin.html?code=abc&state=nothing")
        expect(stray.get_by_role("status")).to_have_text(re.compile("not opened by a call"))


def test_a_firefox_tab_and_a_chromium_tab_verify_each_other(
    new_context: Any, firefox_context: Any, origin: StaticServer, server: KibitzServer,
    smtp: tuple[Sink, int],
) -> None:
    """Firefox keeps and presents its own certificate and reads Chromium's off the connection too."""
    sink, _ = smtp
    room = f"room-id-{uuid.uuid4().hex[:10]}"
    opts = {"room": room, "startOpen": True, "headless": True, "verifyIdentity": {"providers": ["email"]}}
    url = page_url(origin, server)
    fox = open_tab(firefox_context(), url, {**opts, "name": "Fox"})
    chrome = open_tab(new_context(), url, {**opts, "name": "Chrome"})
    for page, email in ((fox, "fox@x.example"), (chrome, "chrome@x.example")):
        wait(page, "() => window.call.getState().inCall && window.call.getParticipants().length === 2")
        nonce = page.evaluate("() => window.call.identityNonce()")
        adopt(page, mint(server, sink, email, nonce, room), email)
    wait(fox, SEES_VERIFIED, "chrome@x.example")
    wait(chrome, SEES_VERIFIED, "fox@x.example")
    assert other(fox)["safetyCode"] and other(fox)["safetyCode"] == other(chrome)["safetyCode"]
