"""``--turn-gate licence``: the tier of every /api/turn answer, room grants, metering, the routes,
the ``kibitz licence`` commands and where the state and secrets come from.

The real relay accepting what the gate mints (and refusing without it) is tests/e2e/test_turn_gate_relay.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kibitz.cli import main as cli_main
from kibitz.server.app import RunningServer, start_server, turn_provider
from kibitz.server.config import ServerConfig, default_state_dir, make_config
from kibitz.server.gate import LicenceGate
from kibitz.server.grants import licence_hash, licence_sub, mint_grant, new_licence_token, verify_grant
from kibitz.server.licences import Licence, MemoryLicenceStore
from kibitz.server.turn import TurnRestProvider

TURN_SECRET = b"0123456789abcdef-shared"
GRANT_KEY = b"g" * 32
URLS = ["turn:127.0.0.1:3478?transport=udp"]
STUN = ["stun:127.0.0.1:3478"]
NOW = 1_800_000_000.0  # 2027-01-15, UTC
MONTH = "2027-01"
ROOM = "room-3f9k2mq7p1"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


async def add(store: MemoryLicenceStore, cap: int | None = None) -> tuple[str, Licence]:
    token = new_licence_token()
    digest = licence_hash(token)
    lic = Licence(licence_sub(digest), digest, "", cap, NOW)
    await store.add(lic)
    return token, lic


def gate_of(
    store: MemoryLicenceStore, clock: Clock | None = None, stun: list[str] | None = None
) -> LicenceGate:
    clock = clock or Clock()
    relay = TurnRestProvider(URLS, TURN_SECRET, ttl=600, clock=clock)
    return LicenceGate(relay, store, GRANT_KEY, stun_urls=stun if stun is not None else STUN, clock=clock)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_relay(answer: dict[str, Any], tier: str) -> None:
    assert answer["tier"] == tier and answer["configured"] is True and answer["ttl"] == 600
    (server,) = answer["iceServers"]
    assert server["urls"] == URLS
    assert base64.b64decode(server["credential"]) == hmac.new(
        TURN_SECRET, server["username"].encode(), hashlib.sha1).digest()


def assert_no_relay(answer: dict[str, Any], tier: str, reason: str) -> None:
    assert answer["tier"] == tier and answer["configured"] is True
    assert answer["iceServers"] == [{"urls": STUN}]
    assert "ttl" not in answer
    assert reason in answer["reason"], answer["reason"]


# ------------------------------------------------------------------ tiers


async def test_no_credential_gets_free_stun_only() -> None:
    gate = gate_of(MemoryLicenceStore())
    assert_no_relay(await gate.ice_servers({}, ROOM), "free", "needs a licence or a room grant")
    no_stun = gate_of(MemoryLicenceStore(), stun=[])
    assert (await no_stun.ice_servers({}))["iceServers"] is None


async def test_a_licence_gets_premium_metered_to_it() -> None:
    store = MemoryLicenceStore()
    token, lic = await add(store)
    gate = gate_of(store)
    for _ in range(3):
        assert_relay(await gate.ice_servers(bearer(token)), "premium")
    assert [(u.licence_id, u.month, u.credentials) for u in await store.usage()] == [(lic.id, MONTH, 3)]
    # the username names no one: not the licence, not its id
    answer = await gate.ice_servers(bearer(token))
    assert token not in str(answer) and lic.id not in str(answer)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Authorization": "Bearer kbz_lic_not-a-real-one"}, "not known"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "not 'Bearer <licence>'"),
        ({"Authorization": "Bearer " + "x" * 400}, "longer than 256"),
    ],
)
async def test_bad_licences_get_free_with_the_reason(headers: dict[str, str], reason: str) -> None:
    store = MemoryLicenceStore()
    await add(store)
    gate = gate_of(store)
    assert_no_relay(await gate.ice_servers(headers, ROOM), "free", reason)
    assert await store.usage() == []


async def test_a_revoked_licence_gets_free() -> None:
    store = MemoryLicenceStore()
    token, lic = await add(store)
    gate = gate_of(store)
    assert_relay(await gate.ice_servers(bearer(token)), "premium")
    await store.revoke(lic.id, NOW)
    assert_no_relay(await gate.ice_servers(bearer(token)), "free", "revoked")
    assert gate.refusals["licence-revoked"] == 1


async def test_a_capped_licence_gets_capped_until_next_month() -> None:
    store = MemoryLicenceStore()
    clock = Clock()
    token, _lic = await add(store, cap=2)
    gate = gate_of(store, clock)
    assert_relay(await gate.ice_servers(bearer(token)), "premium")
    assert_relay(await gate.ice_servers(bearer(token)), "premium")
    assert_no_relay(await gate.ice_servers(bearer(token)), "capped", "allowance")
    clock.now += 31 * 86_400
    assert_relay(await gate.ice_servers(bearer(token)), "premium")
    assert [u.credentials for u in await store.usage()] == [2, 1]


async def test_a_room_grant_gets_tier_room_metered_to_the_opener() -> None:
    store = MemoryLicenceStore()
    clock = Clock()
    token, opener = await add(store)
    gate = gate_of(store, clock)
    minted = await gate.room_grant(f"Bearer {token}", {"room": ROOM})
    assert minted["exp"] == int(NOW) + 600
    joiner = {"X-Kibitz-Grant": minted["grant"]}
    assert_relay(await gate.ice_servers(joiner, ROOM), "room")
    assert_relay(await gate.ice_servers(joiner, ROOM), "room")
    assert [(u.licence_id, u.credentials) for u in await store.usage()] == [(opener.id, 2)]
    assert gate.tiers == {"room": 2}

    assert_no_relay(await gate.ice_servers(joiner, "room-elsewhere"), "free", "another room")
    assert_no_relay(await gate.ice_servers(joiner, None), "free", "needs the room")
    clock.now = minted["exp"]
    assert_no_relay(await gate.ice_servers(joiner, ROOM), "free", "expired")
    assert [(u.licence_id, u.credentials) for u in await store.usage()] == [(opener.id, 2)]  # nothing more


async def test_a_room_answer_renews_the_grant_for_the_whole_call() -> None:
    """The invite's grant lives 600 s; each room-tier answer carries a renewed one that outlives
    the credentials (ttl 600 here), so a page refreshing at 3/4 of their life never runs dry."""
    store = MemoryLicenceStore()
    clock = Clock()
    token, opener = await add(store)
    gate = gate_of(store, clock)
    grant = (await gate.room_grant(f"Bearer {token}", {"room": ROOM}))["grant"]
    for _ in range(8):  # an hour and more, refreshing every 450 s
        answer = await gate.ice_servers({"X-Kibitz-Grant": grant}, ROOM)
        assert_relay(answer, "room")
        renewed = verify_grant(GRANT_KEY, answer["grant"], ROOM, clock.now)
        assert renewed.sub == opener.id
        assert json.loads(base64.urlsafe_b64decode(answer["grant"].split(".")[0] + "=="))["exp"] \
            == int(clock.now) + 600 + 600
        grant = answer["grant"]
        clock.now += 450
    assert [(u.licence_id, u.credentials) for u in await store.usage()] == [(opener.id, 8)]
    await store.revoke(opener.id, clock.now)  # revocation still ends it at the next refresh
    assert_no_relay(await gate.ice_servers({"X-Kibitz-Grant": grant}, ROOM), "free", "no longer valid")


async def test_forged_grants_and_grants_of_revoked_openers_get_free() -> None:
    store = MemoryLicenceStore()
    token, opener = await add(store)
    gate = gate_of(store)
    forged, _ = mint_grant(b"another server's key, 32 bytes!!", ROOM, opener.id, NOW)
    assert_no_relay(await gate.ice_servers({"X-Kibitz-Grant": forged}, ROOM), "free", "signature")
    assert_no_relay(await gate.ice_servers({"X-Kibitz-Grant": "garbage"}, ROOM), "free", "base64url")
    # a grant for a licence this server never issued (signed with the right key)
    ghost, _ = mint_grant(GRANT_KEY, ROOM, "AAAAAAAAAAAAAAAA", NOW)
    assert_no_relay(await gate.ice_servers({"X-Kibitz-Grant": ghost}, ROOM), "free", "no longer valid")
    good = (await gate.room_grant(f"Bearer {token}", {"room": ROOM}))["grant"]
    await store.revoke(opener.id, NOW)  # revoking the opener stops its grants at once
    assert_no_relay(await gate.ice_servers({"X-Kibitz-Grant": good}, ROOM), "free", "no longer valid")
    assert await store.usage() == []
    assert gate.refusals == {"grant-forged": 1, "grant-malformed": 1, "grant-sponsor-revoked": 2}


async def test_capped_sponsor_caps_the_room_and_a_capped_guest_rides_the_grant() -> None:
    store = MemoryLicenceStore()
    opener_token, opener = await add(store, cap=1)
    guest_token, _guest = await add(store, cap=0)
    gate = gate_of(store)
    grant = (await gate.room_grant(f"Bearer {opener_token}", {"room": ROOM}))["grant"]
    both = {**bearer(guest_token), "X-Kibitz-Grant": grant}
    answer = await gate.ice_servers(both, ROOM)  # guest capped, opener's grant carries them
    assert_relay(answer, "room")
    assert "allowance" in answer["reason"]
    assert_no_relay(await gate.ice_servers(both, ROOM), "capped", "sponsor has used")
    assert [(u.licence_id, u.credentials) for u in await store.usage()] == [(opener.id, 1)]


async def test_a_valid_licence_wins_over_a_grant() -> None:
    store = MemoryLicenceStore()
    opener_token, _opener = await add(store)
    guest_token, guest = await add(store)
    gate = gate_of(store)
    grant = (await gate.room_grant(f"Bearer {opener_token}", {"room": ROOM}))["grant"]
    assert_relay(await gate.ice_servers({**bearer(guest_token), "X-Kibitz-Grant": grant}, ROOM), "premium")
    assert [(u.licence_id, u.credentials) for u in await store.usage()] == [(guest.id, 1)]


async def test_a_failing_store_fails_closed() -> None:
    class Broken(MemoryLicenceStore):
        async def by_hash(self, key_hash: bytes) -> Licence | None:
            raise OSError("disk gone")

    gate = gate_of(Broken())
    assert_no_relay(await gate.ice_servers(bearer("kbz_lic_x")), "free", "unavailable")
    assert gate.refusals["store-error"] == 1


async def test_concurrent_joiners_meter_exactly_the_sponsors_allowance() -> None:
    store = MemoryLicenceStore()
    token, _ = await add(store, cap=10)
    gate = gate_of(store)
    grant = (await gate.room_grant(f"Bearer {token}", {"room": ROOM}))["grant"]
    answers = await asyncio.gather(*(gate.ice_servers({"X-Kibitz-Grant": grant}, ROOM) for _ in range(40)))
    assert sorted(a["tier"] for a in answers) == ["capped"] * 30 + ["room"] * 10


@pytest.mark.parametrize(
    ("authorization", "body", "status"),
    [
        ("Bearer {token}", {"room": "bad room!"}, 400),
        ("Bearer {token}", {"room": ""}, 400),
        ("Bearer {token}", {"room": 7}, 400),
        ("Bearer {token}", ["room"], 400),
        ("Bearer {token}", None, 400),
        (None, {"room": ROOM}, 401),
        ("Token {token}", {"room": ROOM}, 401),
        ("Bearer kbz_lic_unknown", {"room": ROOM}, 403),
    ],
)
async def test_room_grant_refusals(authorization: str | None, body: object, status: int) -> None:
    from kibitz.server.gate import GrantError

    store = MemoryLicenceStore()
    token, _ = await add(store)
    with pytest.raises(GrantError) as err:
        await gate_of(store).room_grant(authorization.format(token=token) if authorization else None, body)
    assert err.value.status == status and err.value.reason


# ------------------------------------------------------------------ over HTTP


@pytest.fixture
async def gated(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, MemoryLicenceStore, str]]:
    store = MemoryLicenceStore()
    token, _ = await add(store, cap=3)
    relay = TurnRestProvider(URLS, TURN_SECRET, ttl=600)
    gate = LicenceGate(relay, store, GRANT_KEY, stun_urls=STUN)
    srv = await start_server(ServerConfig(port=0, broker_port=0, dist_dir=tmp_path), turn=gate, sweep=False)
    yield srv, store, token
    await srv.close()


async def test_routes_speak_the_contract(gated: tuple[RunningServer, MemoryLicenceStore, str]) -> None:
    srv, _store, token = gated
    base = srv.http_url
    async with aiohttp.ClientSession() as http:
        async with http.options(f"{base}/api/room-grant", headers={
                "Origin": "https://embedder.example", "Access-Control-Request-Method": "POST"}) as r:
            assert r.status == 204 and "POST" in r.headers["Access-Control-Allow-Methods"]
            assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
        async with http.get(f"{base}/api/turn") as r:
            body = await r.json()
            assert r.status == 200 and body["tier"] == "free" and r.headers["Cache-Control"] == "no-store"
        async with http.get(f"{base}/api/turn", headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 200 and (await r.json())["tier"] == "free"
        async with http.get(f"{base}/api/turn", headers=bearer(token)) as r:
            assert (await r.json())["tier"] == "premium"
        async with http.post(f"{base}/api/room-grant", json={"room": ROOM}, headers=bearer(token)) as r:
            assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
            minted = await r.json()
            assert set(minted) == {"grant", "exp"}
        async with http.get(f"{base}/api/turn", params={"room": ROOM},
                            headers={"X-Kibitz-Grant": minted["grant"]}) as r:
            assert (await r.json())["tier"] == "room"
        for data, headers, status in [
            (b"{not json", bearer(token), 400),
            (b'{"room": "a b"}', bearer(token), 400),
            (b'{"room": "r"}', {}, 401),
            (b'{"room": "r"}', {"Authorization": "Bearer kbz_lic_nope"}, 403),
        ]:
            async with http.post(f"{base}/api/room-grant", data=data, headers=headers) as r:
                assert r.status == status, (data, headers)
                assert (await r.json())["error"]
                assert r.headers["Access-Control-Allow-Origin"] == "*"
        async with http.get(f"{base}/api/turn", headers=bearer(token)) as r:
            assert (await r.json())["tier"] == "premium"
        async with http.get(f"{base}/api/turn", headers=bearer(token)) as r:
            assert (await r.json())["tier"] == "capped"
        async with http.get(f"{base}/metrics") as r:
            text = await r.text()
            assert 'kibitz_turn_answers_total{tier="capped"} 1' in text
            assert 'kibitz_turn_refusals_total{reason="licence-unknown"} 1' in text
            assert token not in text


async def test_room_grant_is_404_without_a_gate(tmp_path: Path) -> None:
    srv = await start_server(ServerConfig(port=0, broker_port=0, dist_dir=tmp_path), sweep=False)
    try:
        async with aiohttp.ClientSession() as http, http.post(
                f"{srv.http_url}/api/room-grant", json={"room": ROOM}) as r:
            assert r.status == 404 and "not gated" in (await r.json())["error"]
    finally:
        await srv.close()


# ------------------------------------------------------------------ configuration and commands


def test_state_dir_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KIBITZ_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "kibitz"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "kibitz"
    monkeypatch.setenv("KIBITZ_STATE_DIR", str(tmp_path / "explicit"))
    assert default_state_dir() == tmp_path / "explicit"
    assert make_config(state_dir=str(tmp_path / "flag")).state_dir == tmp_path / "flag"


def test_gate_needs_a_relay_and_a_known_name() -> None:
    with pytest.raises(ValueError, match="needs a relay"):
        make_config(turn_gate="licence")
    with pytest.raises(ValueError, match="turn_gate must be one of"):
        make_config(turn_gate="paid", turn_urls=URLS)


def test_grant_key_from_file_env_or_made_once_in_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KIBITZ_GRANT_SECRET", raising=False)
    state = tmp_path / "state"
    config = make_config(state_dir=state)
    assert not state.exists()  # nothing is written until something needs it
    made = config.grant_secret()
    assert len(made) == 64 and (state / "grant.key").stat().st_mode & 0o777 == 0o600
    assert state.stat().st_mode & 0o777 == 0o700
    assert config.grant_secret() == made  # the same key after a restart
    assert [p.name for p in state.iterdir()] == ["grant.key"]
    monkeypatch.setenv("KIBITZ_GRANT_SECRET", "from-the-environment-" + "e" * 20)
    assert config.grant_secret().startswith(b"from-the-environment-")
    (tmp_path / "k").write_text("from-a-file-" + "f" * 30 + "\n")
    assert make_config(grant_secret_file=tmp_path / "k").grant_secret() == b"from-a-file-" + b"f" * 30


def test_turn_provider_builds_the_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIBITZ_TURN_SECRET", TURN_SECRET.decode())
    monkeypatch.delenv("KIBITZ_GRANT_SECRET", raising=False)
    plain = turn_provider(make_config(turn_urls=URLS, state_dir=tmp_path / "s1"))
    assert isinstance(plain, TurnRestProvider) and not (tmp_path / "s1").exists()
    store = MemoryLicenceStore()
    gate = turn_provider(make_config(turn_urls=URLS, turn_gate="licence", stun_urls=STUN,
                                     state_dir=tmp_path / "s2"), store)
    assert isinstance(gate, LicenceGate) and gate.store is store and gate.stun_urls == STUN
    monkeypatch.setenv("KIBITZ_GRANT_SECRET", "short")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        turn_provider(make_config(turn_urls=URLS, turn_gate="licence", state_dir=tmp_path / "s3"), store)
    monkeypatch.delenv("KIBITZ_GRANT_SECRET")
    with pytest.raises(ValueError, match="stun:"):
        turn_provider(make_config(turn_urls=URLS, turn_gate="licence", stun_urls=["turn:x"],
                                  state_dir=tmp_path / "s4"), store)


def test_licence_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = ["--state-dir", str(tmp_path / "state")]
    assert cli_main(["licence", "add", "--monthly-cap", "50", "--label", "dana", *state]) == 0
    out = capsys.readouterr()
    token = out.out.strip()
    assert token.startswith("kbz_lic_") and "shown only now" in out.err
    lid = licence_sub(licence_hash(token))
    assert cli_main(["license", "add", *state]) == 0  # either spelling
    capsys.readouterr()
    assert cli_main(["licence", "list", *state]) == 0
    listing = capsys.readouterr().out
    assert lid in listing and "dana" in listing and "50" in listing and token not in listing
    assert token.encode() not in (tmp_path / "state" / "licences.sqlite3").read_bytes()

    async def meter() -> None:
        from kibitz.server.licences import SqliteLicenceStore

        store = SqliteLicenceStore(tmp_path / "state" / "licences.sqlite3")
        await store.meter(lid, "2026-05", 50)
        await store.meter(lid, "2026-05", 50)
        await store.close()

    asyncio.run(meter())
    assert cli_main(["licence", "usage", "--month", "2026-05", *state]) == 0
    usage = capsys.readouterr().out.splitlines()
    assert usage[1].split() == ["2026-05", lid, "2", "50", "dana"]
    assert cli_main(["licence", "usage", "--month", "May", *state]) == 2
    assert cli_main(["licence", "revoke", lid, *state]) == 0
    assert cli_main(["licence", "revoke", lid, *state]) == 1
    assert "already revoked" in capsys.readouterr().err
    assert cli_main(["licence", "revoke", "nobody", *state]) == 1
    # An id may begin with '-' (base64url): argparse must not take it for an option.
    assert cli_main(["licence", "revoke", "-Abc_def-123", *state]) == 1
    assert "-Abc_def-123 is not known" in capsys.readouterr().err
    assert cli_main(["licence", "add", "--monthly-cap", "-1", *state]) == 2
    assert os.stat(tmp_path / "state").st_mode & 0o777 == 0o700


# ------------------------------------------------------------------ the agent, on the same contract


async def test_agents_present_their_licence_and_fail_closed_when_relay_only(
    gated: tuple[RunningServer, MemoryLicenceStore, str]
) -> None:
    from kibitz.agent import Agent
    from kibitz.agent.agent import AgentJoinError

    srv, store, token = gated
    refused = Agent(srv.http_url, "room-agent-gate", relay_only=True)
    with pytest.raises(AgentJoinError, match=r"Hide my IP is on.*tier free"):
        await refused.start()
    assert refused._transport is None  # no connection was made at all
    await refused.leave()

    licensed = Agent(srv.http_url, "room-agent-gate", license_key=token)
    await licensed.start()
    try:
        assert licensed.relay is not None and licensed.relay.answer is not None
        assert licensed.relay.answer.tier == "premium"
        assert licensed._transport.rtc_config.ice_servers[0]["urls"] == URLS
    finally:
        await licensed.leave()
    assert [u.credentials for u in await store.usage()] == [1]
