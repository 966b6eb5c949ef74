"""kibitz.relay: what a member asks /api/turn, how it reads the answer, when it asks again, when a
relay-only member must stay out, and the invite links of "opener pays"."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from kibitz.backends.page_relay import PageRelay, relay_settings
from kibitz.relay import (
    IceAnswer,
    RelayKeeper,
    RelaySettings,
    ask_turn,
    invite_link,
    mint_room_grant,
    parse_turn_answer,
    relay_refusal,
    strip_grant,
)

GRANT = "eyJyb29tIjoiciJ9.U1yFQrSl8WeBq-lElF8zFCa3ThRiY03rWkulUUAlEV4"
RELAY = {"urls": ["turn:127.0.0.1:3478"], "username": "1:kbz-x", "credential": "c"}


class FakeHttp:
    """Answers requests from a script; records what was asked."""

    def __init__(self, *answers: tuple[int, object] | Exception) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, str, dict[str, str], str | None]] = []

    async def __call__(
        self, method: str, url: str, headers: Mapping[str, str], body: str | None
    ) -> tuple[int, str]:
        self.asked.append((method, url, dict(headers), body))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, payload = answer
        return status, payload if isinstance(payload, str) else json.dumps(payload)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_request_names_the_normalised_room_and_the_credentials() -> None:
    url, headers = RelaySettings("http://turn.example:8787", "My Room!", "kbz_lic_x", GRANT).turn_request()
    assert url == "http://turn.example:8787/api/turn?room=my-room"
    assert headers == {"Authorization": "Bearer kbz_lic_x", "X-Kibitz-Grant": GRANT}
    assert RelaySettings("http://a/", "r").turn_request() == ("http://a/api/turn?room=r", {})


@pytest.mark.parametrize(
    ("status", "text", "expect"),
    [
        (200, {"iceServers": [RELAY], "configured": True, "tier": "premium", "ttl": 3600},
         {"tier": "premium", "ttl": 3600.0, "has_relay": True, "error": None}),
        (200, {"iceServers": [{"urls": ["stun:h:3478"]}], "configured": True, "tier": "free", "reason": "no"},
         {"tier": "free", "ttl": None, "has_relay": False, "reason": "no"}),
        (200, {"iceServers": None, "configured": False}, {"configured": False, "servers": ()}),
        (200, {"iceServers": [RELAY, {"urls": 7}, "x", {"nourls": 1}], "ttl": True, "grant": GRANT},
         {"servers": (RELAY,), "ttl": None, "grant": GRANT}),
        (200, {"iceServers": [{"urls": ["turn:h"]}]}, {"has_relay": False}),  # no credentials
        (502, "bad gateway", {"error": "/api/turn answered HTTP 502"}),
        (200, "<html>", {"error": "/api/turn answered something that is not JSON"}),
        (200, "[1]", {"error": "/api/turn answered something that is not an object"}),
    ],
)
def test_answers_are_read_defensively(status: int, text: object, expect: dict[str, object]) -> None:
    answer = parse_turn_answer(status, text if isinstance(text, str) else json.dumps(text))
    for key, value in expect.items():
        assert getattr(answer, key) == value, key


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (IceAnswer(error="TypeError: Failed to fetch"), "could not be asked (TypeError: Failed to fetch)"),
        (IceAnswer(configured=False), "this server has no relay"),
        (IceAnswer(configured=True, tier="free", reason="this relay needs a licence or a room grant"),
         "refused (tier free: this relay needs a licence or a room grant)"),
        (IceAnswer(configured=True, tier="capped", reason="allowance used"), "tier capped: allowance used"),
        (IceAnswer(configured=True, tier="open", servers=({"urls": ["stun:x"]},)), "gave no credentials"),
    ],
)
def test_relay_only_without_a_relay_stays_out_and_says_why(answer: IceAnswer, why: str) -> None:
    refused = relay_refusal(RelaySettings("http://a/", "r", relay_only=True), answer)
    assert refused is not None and refused.startswith("Hide my IP is on") and why in refused
    assert relay_refusal(RelaySettings("http://a/", "r", relay_only=False), answer) is None


def test_relay_only_with_a_relay_may_connect() -> None:
    ok = IceAnswer(servers=(RELAY,), configured=True, tier="room")
    assert relay_refusal(RelaySettings("http://a/", "r", relay_only=True), ok) is None


async def test_ask_never_raises() -> None:
    settings = RelaySettings("http://a/", "r")
    assert (await ask_turn(settings, FakeHttp(OSError("refused")))).error == "OSError: refused"

    async def hang(*_: object) -> tuple[int, str]:
        import asyncio

        await asyncio.sleep(10)
        return 200, "{}"

    assert (await ask_turn(settings, hang, timeout=0.05)).error == "no answer within 0.05 s"


async def test_keeper_refreshes_at_three_quarters_and_adopts_renewed_grants() -> None:
    clock = Clock()
    renewed = GRANT.replace("U1y", "R3n")
    http = FakeHttp(
        (200, {"iceServers": [RELAY], "configured": True, "tier": "room", "ttl": 600, "grant": renewed}),
        (200, {"iceServers": [RELAY], "configured": True, "tier": "room", "ttl": 600}),
        OSError("network down"),  # keeps the servers, tries again within a minute
        (200, {"iceServers": [{"urls": ["stun:h"]}], "configured": True, "tier": "capped", "reason": "cap"}),
    )
    applied: list[str | None] = []
    keeper = RelayKeeper(RelaySettings("http://a/", "r", grant=GRANT), http, lambda a: applied.append(a.tier),
                         sleep=clock.sleep, clock=clock)
    first = await keeper.ask()
    assert first.tier == "room" and keeper.settings.grant == renewed
    await keeper.run(first)  # returns: the capped answer has nothing that expires
    assert clock.slept == [450.0, 450.0, 60.0]
    assert [h["X-Kibitz-Grant"] for _m, _u, h, _b in http.asked] == [GRANT, renewed, renewed, renewed]
    assert applied == ["room", "room", "capped"]
    assert keeper.fetches == 4 and keeper.answer is not None and keeper.answer.tier == "capped"


async def test_keeper_counts_from_the_fetch_and_stops_when_closed() -> None:
    clock = Clock()
    keeper = RelayKeeper(RelaySettings("http://a/", "r"), FakeHttp(), lambda a: None,
                         sleep=clock.sleep, clock=clock)
    answer = IceAnswer(servers=(RELAY,), ttl=40, at=clock.now)
    clock.now += 25  # the boot took a while
    assert keeper.next_wait(answer) == 5.0
    clock.now += 100
    assert keeper.next_wait(answer) == 1.0  # overdue: soon, never in a tight loop
    keeper.close()
    await keeper.run(answer)  # returns at once
    assert keeper.fetches == 0


async def test_mint_room_grant() -> None:
    settings = RelaySettings("http://a/", "Room X", licence="kbz_lic_x")
    http = FakeHttp((200, {"grant": GRANT, "exp": 1600}))
    assert await mint_room_grant(settings, http) == (GRANT, 1600)
    method, url, headers, body = http.asked[0]
    assert (method, url, headers["Authorization"], json.loads(body or "")) == (
        "POST", "http://a/api/room-grant", "Bearer kbz_lic_x", {"room": "room-x"})
    with pytest.raises(PermissionError, match=r"HTTP 403.*revoked"):
        await mint_room_grant(settings, FakeHttp((403, {"error": "the licence has been revoked"})))
    with pytest.raises(PermissionError, match="HTTP 200"):
        await mint_room_grant(settings, FakeHttp((200, {"grant": 7})))
    with pytest.raises(ConnectionError, match="could not be asked"):
        await mint_room_grant(settings, FakeHttp(OSError("down")))
    with pytest.raises(PermissionError, match="only a member with a licence"):
        await mint_room_grant(RelaySettings("http://a/", "r"), FakeHttp())


@pytest.mark.parametrize(
    ("url", "clean", "grant"),
    [
        (f"https://a.example/?grant={GRANT}#ember-a3f9", "https://a.example/#ember-a3f9", GRANT),
        (f"https://a.example/p?x=1&k={GRANT}&y=a%20b", "https://a.example/p?x=1&y=a%20b", GRANT),
        (f"https://a.example/#room-1?g=invite&grant={GRANT}", "https://a.example/#room-1?g=invite", GRANT),
        (f"https://a.example/#room-1?grant={GRANT}", "https://a.example/#room-1", GRANT),
        ("https://a.example/search?k=shoes", "https://a.example/search?k=shoes", None),  # the host's own k
        ("https://a.example/p?q=a+b#x", "https://a.example/p?q=a+b#x", None),
    ],
)
def test_strip_grant_keeps_everything_else(url: str, clean: str, grant: str | None) -> None:
    assert strip_grant(url) == (clean, grant)


def test_invite_link_puts_the_grant_where_the_original_does() -> None:
    page = f"https://shop.example/help?lang=de&grant={GRANT}#room-3f9k"
    assert invite_link(page, None) == "https://shop.example/help?lang=de#room-3f9k"
    fresh = GRANT.replace("U1y", "F5h")
    assert invite_link(page, fresh) == f"https://shop.example/help?lang=de&grant={fresh}#room-3f9k"
    assert invite_link("http://127.0.0.1:8787/#r", fresh) == f"http://127.0.0.1:8787/?grant={fresh}#r"


def test_page_settings_from_the_mount_config() -> None:
    s = relay_settings({"room": "R", "turnBase": "http://t/", "server": "http://s/", "licenseKey": "L",
                        "grant": "", "relayOnly": True})
    assert (s.base, s.room, s.licence, s.grant, s.relay_only) == ("http://t/", "R", "L", None, True)
    assert relay_settings({"room": "R", "server": "http://s/"}).base == "http://s/"


class FakeTransport:
    def __init__(self) -> None:
        from kibitz.backends.rtc_api import RtcConfig

        self.rtc_config = RtcConfig(ice_transport_policy="relay")

    def set_rtc_config(self, config: object) -> None:
        self.rtc_config = config  # type: ignore[assignment]


async def test_a_relay_only_page_without_relay_never_starts() -> None:
    started: list[bool] = []
    changes: list[str | None] = []
    free = {"iceServers": None, "configured": True, "tier": "free", "reason": "needs a licence"}
    relay = PageRelay(RelaySettings("http://a/", "r", relay_only=True), FakeTransport(),  # type: ignore[arg-type]
                      FakeHttp((200, free)), on_change=lambda: changes.append(relay.error))
    await relay.start(lambda: started.append(True))
    assert started == [] and relay.settled.is_set()
    assert relay.error is not None and "tier free: needs a licence" in relay.error
    assert relay.state() == {"relayOnly": True, "relayTier": "free", "relayError": relay.error}
    assert changes == [relay.error]


async def test_a_page_starts_once_the_relay_answered_with_its_servers() -> None:
    transport = FakeTransport()
    started: list[object] = []
    answer = {"iceServers": [RELAY], "configured": True, "tier": "premium"}  # no ttl: run() returns
    relay = PageRelay(RelaySettings("http://a/", "r", licence="L", relay_only=True), transport,  # type: ignore[arg-type]
                      FakeHttp((200, answer)))
    await relay.start(lambda: started.append(transport.rtc_config.ice_servers))
    assert started == [(RELAY,)] and relay.error is None and relay.tier == "premium"
    assert transport.rtc_config.ice_transport_policy == "relay"


async def test_a_page_without_relay_only_starts_even_when_turn_is_down() -> None:
    transport = FakeTransport()
    started: list[bool] = []
    relay = PageRelay(RelaySettings("http://a/", "r"), transport, FakeHttp(OSError("down")))  # type: ignore[arg-type]

    def start() -> None:
        started.append(True)
        relay.close()  # (so run() does not wait a minute to ask again)

    await relay.start(start)
    assert started == [True] and relay.error is None and transport.rtc_config.ice_servers == ()
