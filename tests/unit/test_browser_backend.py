"""kibitz.backends.browser under CPython: importable without ``js``, and the page session over the
real :class:`~kibitz.session.Session` on the in-memory bus (fake media, streams and level meter)."""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from typing import Any

import pytest

from kibitz.backends import browser
from kibitz.backends.browser import PageSession, SpeakingDetector
from kibitz.backends.page_session import NoMedia
from kibitz.clock import FakeClock
from kibitz.identity import identity_nonce, nonce_binds
from kibitz.identity.member import IdentityError
from kibitz.session import Source
from kibitz.testing import Bus

ROOM = "room-page-7q2w9x"


def test_imports_without_pyodide() -> None:
    assert "js" not in sys.modules and "pyodide" not in sys.modules
    assert browser.ws_base_of("http://127.0.0.1:8787/") == "ws://127.0.0.1:8787/"
    assert browser.ws_base_of("https://kibitz.example/x/") == "wss://kibitz.example/x/"
    assert browser.ws_base_of("ws://h/") == "ws://h/"
    with pytest.raises(ValueError):
        browser.ws_base_of("ftp://h/")
    assert browser.BrowserPeerConnectionFactory.supports_media is True


class _RawChannel:
    """An ``RTCDataChannel`` as the Worker sees it, through a fake ``kibitz_shim``."""

    label = "chat"
    readyState = "connecting"
    binaryType = "blob"

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[Any], None]] = {}

    def send(self, _data: Any) -> None:
        raise AssertionError("not sent here")


class _FakeShim:
    @staticmethod
    def listen(target: _RawChannel, event: str, fn: Callable[[Any], None]) -> Callable[[], None]:
        target.handlers[event] = fn
        return lambda: None

    listenData = listen


def test_a_channel_whose_open_event_never_came_says_open_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kibitz_shim", _FakeShim)
    raw = _RawChannel()
    channel = browser.BrowserDataChannel(raw)
    opened: list[int] = []
    channel.on("open", lambda: opened.append(1))
    channel.catch_up()
    assert opened == []  # still connecting: nothing to say
    raw.readyState = "open"  # ... and its event got lost crossing threads
    channel.catch_up()
    channel.catch_up()
    raw.handlers["open"](None)  # a late event is not a second open
    assert opened == [1]
    fresh = browser.BrowserDataChannel(_RawChannel())
    fresh.on("open", lambda: opened.append(2))
    fresh._raw.readyState = "open"
    fresh._raw.handlers["open"](None)
    fresh.catch_up()
    assert opened == [1, 2]
    born_open = _RawChannel()
    born_open.readyState = "open"  # an answerer's channel: attachers read the state, no event comes
    late = browser.BrowserDataChannel(born_open)
    late.on("open", lambda: opened.append(3))
    late.catch_up()
    assert opened == [1, 2]


class FakeTrack:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


class FakeMedia(NoMedia):
    def __init__(self, deny: set[str] | None = None) -> None:
        super().__init__()
        self.deny = deny or set()

    async def acquire(self, source: Source) -> object:
        if source in self.deny:
            raise PermissionError(f"NotAllowedError: {source}")
        track = FakeTrack("audio" if source == "mic" else "video")
        self.tracks[source] = track
        self._changed()
        return track

    def release(self, source: Source) -> None:
        track = self.tracks.pop(source, None)
        if track is not None:
            track.stop()
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


class FakeStreams:
    def new(self) -> dict[str, Any]:
        return {}

    def set_track(self, stream: Any, kind: str, track: Any) -> None:
        if track is None:
            stream.pop(kind, None)
        else:
            stream[kind] = track


class FakeMeter:
    def __init__(self, callback: Callable[[Any], None]) -> None:
        self.callback = callback
        self.watching: dict[str, Any] = {}
        self.stopped = False

    def add(self, key: str, track: Any) -> None:
        self.watching[key] = track

    def remove(self, key: str) -> None:
        self.watching.pop(key, None)

    def stop(self) -> None:
        self.stopped = True


class Page:
    """One tab: a PageSession plus everything it emitted."""

    def __init__(self, bus: Bus, name: str, **config: Any) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.meters: list[FakeMeter] = []

        def meter(cb: Callable[[Any], None]) -> FakeMeter:
            self.meters.append(FakeMeter(cb))
            return self.meters[-1]

        self.s = PageSession(
            {"room": ROOM, "name": name, **config},
            lambda *a: self.events.append(a),
            transport=bus.transport(name),
            scheduler=bus.scheduler(name),
            media=FakeMedia(),
            streams=FakeStreams(),
            meter=meter,
            rng=random.Random(name),
            wall_clock=bus.clock.now,
        )
        self.s.start()

    def last(self, event: str) -> Any:
        return [e for e in self.events if e[0] == event][-1][1]

    def messages(self) -> list[tuple[Any, str]]:
        return [(json.loads(e[1]), e[2]) for e in self.events if e[0] == "message"]


@pytest.fixture
def bus() -> Bus:
    return Bus(FakeClock())


async def test_presence_at_mount_then_join_broadcast_and_send_to(bus: Bus) -> None:
    ann, bob, cy = Page(bus, "ann"), Page(bus, "bob"), Page(bus, "cy", startOpen=True)
    bus.clock.advance(3)
    # Mounted: connected to the room's presence; only the startOpen tab is in the call.
    assert ann.last("state")["connected"] is True and ann.last("state")["inCall"] is False
    assert ann.last("state")["lobbyStatus"] == "none"
    assert cy.last("state")["inCall"] is True
    assert ann.s.broadcast_json('{"early": 1}') == 0 and ann.s.dropped == 1  # a no-op until in the call
    await ann.s.call("join", [None])
    await bob.s.call("join", [{"mic": False, "cam": False}])
    bus.clock.advance(3)
    ids = {p.s.session.self_id for p in (ann, bob, cy) if p.s.session}
    for p in (ann, bob, cy):
        people = p.last("participants")
        assert {x["id"] for x in people} == ids
        assert all(x["linkUp"] and x["speaking"] is False for x in people)
        assert all(x["stream"] is None for x in people if not x["isSelf"])  # no media on the bus
    assert ann.s.broadcast_json(json.dumps({"kind": "route", "route": "#/b"})) == 2
    assert cy.s.session is not None
    assert ann.s.send_json(cy.s.session.self_id, '{"secret": 1}') is None
    bus.clock.advance(0.5)
    ann_id = ann.s.session.self_id if ann.s.session else ""
    assert ann.messages() == []
    assert bob.messages() == [({"kind": "route", "route": "#/b"}, ann_id)]
    assert cy.messages() == [({"kind": "route", "route": "#/b"}, ann_id), ({"secret": 1}, ann_id)]


async def test_controller_methods_go_through_the_session(bus: Bus) -> None:
    ann, bob = Page(bus, "ann", startOpen=True), Page(bus, "bob", startOpen=True)
    bus.clock.advance(3)
    assert await ann.s.call("setName", ["Annie"]) is None
    assert await ann.s.call("setMeta", [{"seat": 3}]) is None
    assert await ann.s.call("toggleCam", []) is True
    line = await ann.s.call("sendChat", ["hello"])
    assert line["text"] == "hello"
    bus.clock.advance(1)
    me = next(x for x in bob.last("participants") if not x["isSelf"])
    assert me["name"] == "Annie" and me["meta"] == {"seat": 3} and me["camOn"] is True
    assert [c["text"] for c in await bob.s.call("getChat", [])] == ["hello"]
    selfie = next(x for x in ann.last("participants") if x["isSelf"])
    assert selfie["stream"] == {"video": ann.s._media.tracks["cam"]}  # the self-view
    assert await ann.s.call("toggleCam", []) is False
    assert ann.s._media.tracks == {}  # the camera was released (its light goes out)
    await bob.s.call("knock", ["Bobby"])  # already in an open room: knock is a rename
    bus.clock.advance(1)
    assert any(x["name"] == "Bobby" for x in ann.last("participants"))
    assert ann.s.send_json("kbz-m-nobody", "1") == "'kbz-m-nobody' is not in the room"
    ann.s.close()
    ann.s.close()
    with pytest.raises(RuntimeError, match="after unmount"):
        await ann.s.call("join", [{}])
    bus.clock.advance(1)  # a clean goodbye: bob drops ann at once
    assert [x["isSelf"] for x in bob.last("participants")] == [True]


async def test_speaking_from_levels(bus: Bus) -> None:
    ann = Page(bus, "ann", startOpen=True)
    bus.clock.advance(3)
    await ann.s.call("toggleMic", [])
    meter = ann.meters[0]
    me = ann.s.session.self_id if ann.s.session else ""
    assert list(meter.watching) == [me]  # our own mic while it is on
    meter.callback({me: 0.2})
    assert ("speaking", me, True) in ann.events
    assert next(x for x in ann.last("participants") if x["isSelf"])["speaking"] is True
    await ann.s.call("toggleMic", [])
    assert meter.watching == {} and ("speaking", me, False) in ann.events
    ann.s.close()
    assert meter.stopped


def test_speaking_detector_hysteresis() -> None:
    d = SpeakingDetector(threshold=0.05, hold_s=0.5)
    assert d.feed({"a": 0.01, "b": 0.2}, 0.0) == [("b", True)]
    assert d.feed({"a": 0.01, "b": 0.0}, 0.3) == []  # a pause between words
    assert d.feed({"a": 0.06, "b": 0.0}, 0.6) == [("a", True), ("b", False)]
    assert d.feed({"b": 0.0}, 0.7) == [("a", False)]  # no longer watched
    assert d.forget("a") is False


async def test_preview_never_dials() -> None:
    events: list[tuple[Any, ...]] = []
    s = PageSession({"room": ROOM, "preview": True, "name": "Me"}, lambda *a: events.append(a),
                    media=FakeMedia(), streams=FakeStreams())
    s.start()
    assert s.session is None
    await s.call("join", [{}])
    people = s.get_participants()
    assert len(people) == 1 and people[0]["isSelf"] and people[0]["camOn"] is True
    assert people[0]["stream"] == {"video": s._media.tracks["cam"]}
    assert s.broadcast_json("1") == 0
    with pytest.raises(RuntimeError, match="preview"):
        await s.call("setLobby", [True])
    await s.call("leave", [])
    assert s.get_participants() == [] and s.get_state()["inCall"] is False


def test_bad_configs_fail_clearly() -> None:
    with pytest.raises(ValueError, match="letters or digits"):
        browser.open_session(json.dumps({"room": "!!!"}), lambda *a: None)
    with pytest.raises(TypeError):
        browser.open_session("[1, 2]", lambda *a: None)
    with pytest.raises(ValueError, match="transport"):
        PageSession({"room": ROOM}, lambda *a: None)


async def test_identity_members_give_the_page_a_sign_in_plan_and_adopt_tokens(bus: Bus) -> None:
    """signInIdentity's engine half: the provider and the nonce for this tab's certificate; the page
    draws from it and hands the token to provideIdentityToken, which checks it like any peer."""
    plain = Page(bus, "plain")
    with pytest.raises(IdentityError, match="verifies no identity"):
        await plain.s.call("signInIdentity", ["email"])
    ann = Page(bus, "ann", startOpen=True, apiBase="https://kibitz.example/",
               verifyIdentity={"providers": ["email"]})
    plan = await ann.s.call("signInIdentity", ["email"])
    nonce = identity_nonce(bus.fingerprint("ann"), ROOM)
    assert plan == {"method": "email", "nonce": nonce, "room": ROOM, "apiBase": "https://kibitz.example/"}
    assert await ann.s.call("identityNonce", []) == nonce
    with pytest.raises(IdentityError, match="no google sign-in"):
        await ann.s.call("signInIdentity", ["google"])
    with pytest.raises(IdentityError, match="sign-in method"):
        await ann.s.call("signInIdentity", ["carrier-pigeon"])
    # "auto" (the widget's panel): every provider the room trusts, email first.
    both = Page(bus, "both", startOpen=True, apiBase="https://kibitz.example/", verifyIdentity={"providers": [
        {"type": "oidc", "issuer": "https://id.example", "clientId": "app"}, "email"]})
    auto = await both.s.call("signInIdentity", ["auto"])
    fp = bus.fingerprint("both")
    mine = identity_nonce(fp, ROOM)
    salted = auto["options"][1].pop("nonce")  # OpenID Connect: a salted nonce of its own per plan
    assert auto == {"method": "auto", "nonce": mine, "room": ROOM, "options": [
        {"method": "email", "nonce": mine, "room": ROOM, "apiBase": "https://kibitz.example/"},
        {"method": "oidc", "room": ROOM, "issuer": "https://id.example", "clientId": "app"}]}
    again = await both.s.call("signInIdentity", ["google"])
    assert nonce_binds(salted, fp, ROOM) and nonce_binds(again["nonce"], fp, ROOM)
    assert "." in salted and salted != again["nonce"] and not nonce_binds(salted, fp, "room-other")
    assert await both.s.call("identityNonce", ["s" * 16]) == identity_nonce(fp, ROOM, "s" * 16)
    with pytest.raises(IdentityError, match="salt"):
        await both.s.call("identityNonce", ["no.dots.here"])
    with pytest.raises(IdentityError):  # not a token of a trusted issuer
        await ann.s.call("provideIdentityToken", ["a.b.c"])
    stats = await ann.s.call("getIdentityStats", [])
    assert sum(stats["refusals"].values()) == 1
