"""/api/turn with a relay configured: TURN REST credentials as coturn's --use-auth-secret checks them.

The end-to-end proof (two pages relaying through a real coturn with these credentials) is
tests/e2e/test_turn_relay.py; here: the credential arithmetic, the configuration rules and the route.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from kibitz.cli import main as cli_main
from kibitz.server.app import RunningServer, start_server, turn_provider
from kibitz.server.config import ServerConfig, make_config
from kibitz.server.turn import TurnRestProvider, rest_credential

SECRET = b"0123456789abcdef-shared"
URLS = ["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"]


def test_rest_credential_is_base64_hmac_sha1_of_the_username() -> None:
    # RFC 2104 test case 2 (key "Jefe"), base64 of the published hex digest.
    digest = bytes.fromhex("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
    assert rest_credential(b"Jefe", "what do ya want for nothing?") == base64.b64encode(digest).decode()


async def test_each_answer_is_fresh_short_lived_and_names_no_one() -> None:
    provider = TurnRestProvider(URLS, SECRET, ttl=600, clock=lambda: 1_800_000_000.0)
    first = await provider.ice_servers({"Authorization": "Bearer someone"})
    second = await provider.ice_servers({})
    assert first["configured"] is True and first["tier"] == "open" and first["ttl"] == 600
    (server,) = first["iceServers"]
    assert server["urls"] == URLS
    expiry, opaque = server["username"].split(":", 1)
    assert int(expiry) == 1_800_000_600
    assert opaque.startswith("kbz-") and "someone" not in server["username"]
    expected = hmac.new(SECRET, server["username"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(server["credential"]) == expected
    assert SECRET.decode() not in str(first)
    assert second["iceServers"][0]["username"] != server["username"]


@pytest.mark.parametrize(
    ("urls", "secret", "ttl", "why"),
    [
        ([], SECRET, 600, "at least one"),
        (["stun:127.0.0.1:3478"], SECRET, 600, "turn: or turns:"),
        (URLS, b"short", 600, "16 bytes"),
        (URLS, SECRET, 5, "10 s to 24 h"),
        (URLS, SECRET, 7 * 86_400, "10 s to 24 h"),
    ],
)
def test_bad_relay_settings_are_refused_with_a_reason(
    urls: list[str], secret: bytes, ttl: float, why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        TurnRestProvider(urls, secret, ttl=ttl)


def test_secret_comes_from_a_file_or_the_environment_never_a_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KIBITZ_TURN_SECRET", raising=False)
    assert turn_provider(ServerConfig()) is None  # no relay: /api/turn says so
    with pytest.raises(ValueError, match="shared secret"):
        turn_provider(make_config(turn_urls=URLS))
    with pytest.raises(ValueError, match="turn_urls is empty"):
        make_config(turn_secret_file=tmp_path / "nowhere")
    monkeypatch.setenv("KIBITZ_TURN_SECRET", SECRET.decode())
    assert isinstance(turn_provider(make_config(turn_urls=URLS)), TurnRestProvider)
    file = tmp_path / "turn.secret"
    file.write_bytes(b"another-secret-of-enough-length\n")
    provider = turn_provider(make_config(turn_urls=URLS, turn_secret_file=file, turn_ttl=120))
    assert isinstance(provider, TurnRestProvider) and provider.ttl == 120
    assert provider._secret == b"another-secret-of-enough-length"


def test_serve_refuses_a_relay_without_a_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KIBITZ_TURN_SECRET", raising=False)
    assert cli_main(["serve", "--port", "0", "--turn-url", URLS[0]]) == 2
    assert "shared secret" in capsys.readouterr().err


@pytest.fixture
async def relay_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    (tmp_path / "secret").write_bytes(SECRET)
    config = make_config(port=0, broker_port=0, dist_dir=tmp_path, turn_urls=URLS,
                         turn_secret_file=tmp_path / "secret")
    srv = await start_server(config, sweep=False)
    yield srv
    await srv.close()


async def test_route_mints_credentials_that_are_never_cached(relay_server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        bodies = []
        for _ in range(2):
            async with http.get(f"{relay_server.http_url}/api/turn") as r:
                assert r.status == 200
                assert r.headers["Cache-Control"] == "no-store"
                assert r.headers["Access-Control-Allow-Origin"] == "*"
                bodies.append(await r.json())
    users = [b["iceServers"][0]["username"] for b in bodies]
    assert users[0] != users[1]
    for body in bodies:
        server = body["iceServers"][0]
        assert server["urls"] == URLS
        assert base64.b64decode(server["credential"]) == hmac.new(
            SECRET, server["username"].encode(), hashlib.sha1
        ).digest()


async def test_agents_read_the_same_route(relay_server: RunningServer, tmp_path: Path) -> None:
    from kibitz.agent.agent import resolve_ice

    servers, ttl = await resolve_ice(relay_server.http_url)
    assert ttl == 3600 and servers[0]["urls"] == URLS
    assert base64.b64decode(servers[0]["credential"]) == hmac.new(
        SECRET, servers[0]["username"].encode(), hashlib.sha1
    ).digest()
    plain = await start_server(ServerConfig(port=0, broker_port=0, dist_dir=tmp_path), sweep=False)
    try:
        assert await resolve_ice(plain.http_url) == ([], None)  # no relay configured
    finally:
        await plain.close()
    assert await resolve_ice("http://127.0.0.1:9", timeout=2) == ([], None)  # nobody there
