"""``kibitz serve --turn-gate licence`` in front of a real coturn, over HTTP, with the real commands.

A licence made with ``kibitz licence add`` gets relay credentials (tier premium) that coturn
accepts: an allocation succeeds and a datagram is relayed through it. A room grant minted with
that licence gets a joiner the same (tier room), metered to the licence (``kibitz licence usage``).
Without a credential the answer is STUN only, and coturn refuses an allocation with anything the
caller could make up; after ``kibitz licence revoke`` the licence and its grant get nothing.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_loop import AgentLoop
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint
from coturn import relay_args, running_coturn
from server_fixture import ROOT, KibitzServer, running_kibitz_server

KIBITZ = str(ROOT / ".venv" / "bin" / "kibitz")
ROOM = "room-gate-3f9k2mq7p1"


@pytest.fixture(scope="module")
def loop() -> Iterator[AgentLoop]:
    lp = AgentLoop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KibitzServer, int, Path]]:
    where = tmp_path_factory.mktemp("gate")
    state = where / "state"
    with running_coturn(where) as relay, running_kibitz_server(
        *relay_args(relay), "--turn-gate", "licence", "--stun-url", f"stun:127.0.0.1:{relay[0]}",
        "--state-dir", str(state),
    ) as srv:
        yield srv, relay[0], state


def licence(state: Path, *args: str) -> str:
    done = subprocess.run([KIBITZ, "licence", *args, "--state-dir", str(state)], capture_output=True,
                          text=True, timeout=30, check=True)
    return done.stdout


def http(url: str, *, headers: dict[str, str] | None = None, body: object = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {**(headers or {}), "Content-Type": "application/json"}
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait(data)


async def relay_once(port: int, username: str | None, password: str | None) -> bytes:
    """Allocate on coturn with these credentials and relay one datagram to a local socket."""
    loop = asyncio.get_running_loop()
    sink, inbox = await loop.create_datagram_endpoint(_Inbox, local_addr=("127.0.0.1", 0))
    try:
        turn, _ = await asyncio.wait_for(create_turn_endpoint(
            asyncio.DatagramProtocol, ("127.0.0.1", port), username, password), 10)
        try:
            turn.sendto(b"through the relay", sink.get_extra_info("sockname"))
            return await asyncio.wait_for(inbox.got.get(), 10)
        finally:
            turn.close()
    finally:
        sink.close()


def refused(loop: AgentLoop, port: int, username: str | None, password: str | None) -> str:
    with pytest.raises(TransactionFailed) as err:
        loop.run(relay_once(port, username, password), 30)
    return str(err.value)


def creds(answer: dict[str, Any]) -> tuple[str, str]:
    (server,) = answer["iceServers"]
    return server["username"], server["credential"]


def test_licence_and_grant_flows_against_a_real_relay(
    gated: tuple[KibitzServer, int, Path], loop: AgentLoop
) -> None:
    srv, port, state = gated
    turn = f"{srv.http}/api/turn"

    # Nobody: STUN only, and coturn refuses an allocation with made-up credentials.
    status, free = http(turn)
    assert status == 200 and free["tier"] == "free"
    assert free["iceServers"] == [{"urls": [f"stun:127.0.0.1:{port}"]}]
    assert "401" in refused(loop, port, f"{int(time.time()) + 600}:kbz-guess", "bm90LXRoZS1zZWNyZXQ=")
    assert "401" in refused(loop, port, None, None)

    token = licence(state, "add", "--monthly-cap", "3", "--label", "opener").strip()
    lid = licence(state, "list").splitlines()[1].split()[0]

    # Premium: the licence's own credentials relay.
    status, premium = http(turn, headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and premium["tier"] == "premium"
    assert loop.run(relay_once(port, *creds(premium)), 30) == b"through the relay"

    # Opener pays: a grant minted with the licence gets a joiner tier room, metered to the licence.
    status, minted = http(f"{srv.http}/api/room-grant", headers={"Authorization": f"Bearer {token}"},
                          body={"room": ROOM})
    assert status == 200 and minted["exp"] > time.time() + 590
    status, room = http(f"{turn}?room={ROOM}", headers={"X-Kibitz-Grant": minted["grant"]})
    assert room["tier"] == "room"
    assert loop.run(relay_once(port, *creds(room)), 30) == b"through the relay"
    status, elsewhere = http(f"{turn}?room=room-other", headers={"X-Kibitz-Grant": minted["grant"]})
    assert elsewhere["tier"] == "free" and "another room" in elsewhere["reason"]

    month = time.strftime("%Y-%m", time.gmtime())
    usage = licence(state, "usage", "--month", month).splitlines()
    assert usage[1].split()[:4] == [month, lid, "2", "3"]

    # The cap: one more credential, then capped.
    assert http(f"{turn}?room={ROOM}", headers={"X-Kibitz-Grant": minted["grant"]})[1]["tier"] == "room"
    capped = http(turn, headers={"Authorization": f"Bearer {token}"})[1]
    assert capped["tier"] == "capped" and "iceServers" in capped and "ttl" not in capped

    # Revoked: neither the licence nor its grant gets anything, at once (server still running).
    licence(state, "revoke", lid)
    for answer in (http(turn, headers={"Authorization": f"Bearer {token}"})[1],
                   http(f"{turn}?room={ROOM}", headers={"X-Kibitz-Grant": minted["grant"]})[1]):
        assert answer["tier"] == "free", answer
        assert "revoked" in answer["reason"] or "no longer valid" in answer["reason"], answer
    assert http(f"{srv.http}/api/room-grant", headers={"Authorization": f"Bearer {token}"},
                body={"room": ROOM})[0] == 403
    # Only hashes on disk: the token appears nowhere in the state directory.
    for path in state.iterdir():
        assert token.encode() not in path.read_bytes(), path
