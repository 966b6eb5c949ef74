"""Verified identity between agents on the real network: ``kibitz serve --smtp`` with an aiosmtpd
sink, real aiortc with one persistent certificate per agent, fingerprints read from the live DTLS
sessions. Two agents sign in by email code and see each other verified with the same safety code;
an agent-key gate admits the agent holding a listed key and refuses one without; an email gate
refuses an agent whose token was made for another certificate."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from server_fixture import KibitzServer, running_kibitz_server

from kibitz.agent import Agent, AgentJoinError, agent_identity_nonce
from kibitz.agent.agent import certificate_fingerprint_of
from kibitz.crypto import PrivateKey
from kibitz.gate import JoinGate

ROOM = "room-agent-identity-7q"


class Sink:
    def __init__(self) -> None:
        self.codes: dict[str, str] = {}

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.content)
        self.codes[str(msg["To"])] = str(msg["Subject"]).rsplit(" ", 1)[-1]
        return "250 OK"


@pytest.fixture(scope="module")
def mail_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KibitzServer, Sink]]:
    sink = Sink()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        state = tmp_path_factory.mktemp("state")
        with running_kibitz_server("--smtp", f"127.0.0.1:{port}", "--state-dir", str(state)) as srv:
            yield srv, sink
    finally:
        controller.stop()


def _post(url: str, body: object) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


async def email_token(srv: KibitzServer, sink: Sink, email: str, room: str, cert: Path) -> str:
    nonce = agent_identity_nonce(room, cert)
    started = await asyncio.to_thread(_post, f"{srv.http}/api/email/start",
                                      {"email": email, "room": room, "nonce": nonce})
    verified = await asyncio.to_thread(_post, f"{srv.http}/api/email/verify",
                                       {"ticket": started["ticket"], "code": sink.codes[email]})
    return str(verified["jwt"])


async def until(pred: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def peer(agent: Agent, other: Agent) -> dict[str, Any]:
    return next((p for p in agent.participants() if p["id"] == other.id), {})


async def test_agents_signed_in_by_email_verify_each_other(mail_server: tuple[KibitzServer, Sink],
                                                           tmp_path: Path) -> None:
    srv, sink = mail_server
    certs = {n: tmp_path / f"{n}.pem" for n in ("ann", "bob")}
    tokens = {n: await email_token(srv, sink, f"{n}@allowed.example", ROOM, certs[n]) for n in certs}
    verify = {"providers": ["email"], "allowedDomains": ["allowed.example"]}
    async with Agent(srv.http, ROOM, "Ann", identity_token=tokens["ann"], cert_file=certs["ann"],
                     verify_identity=verify) as ann, \
            Agent(srv.http, ROOM, "Bob", identity_token=tokens["bob"], cert_file=certs["bob"],
                  verify_identity=verify) as bob:
        await until(lambda: peer(ann, bob).get("verifiedEmail") and peer(bob, ann).get("verifiedEmail"),
                    what="both verified")
        assert peer(ann, bob)["verifiedEmail"] == "bob@allowed.example"
        assert peer(bob, ann)["verifiedEmail"] == "ann@allowed.example"
        code = peer(ann, bob)["safetyCode"]
        assert code and code == peer(bob, ann)["safetyCode"]
        state = ann.session.get_state()
        assert state["selfEmail"] == "ann@allowed.example" and state["rosterCanShare"]
        # the fingerprint each sees is the other's certificate on disk, read from the DTLS session
        assert ann.session.identity.roster.peers[bob.id].fp == certificate_fingerprint_of(certs["bob"])


async def test_an_email_gate_refuses_a_token_made_for_another_certificate(
        mail_server: tuple[KibitzServer, Sink], tmp_path: Path) -> None:
    srv, sink = mail_server
    room = ROOM + "-gate"
    gate = JoinGate(mode="email", issuer=srv.http, allowed=("@allowed.example",))
    host_cert, thief_cert = tmp_path / "host.pem", tmp_path / "thief.pem"
    host_token = await email_token(srv, sink, "host@allowed.example", room, host_cert)
    async with Agent(srv.http, room, "Host", join_gate=gate, identity_token=host_token, cert_file=host_cert):
        with pytest.raises(AgentJoinError, match="unverified"):
            # the host's own token, presented from another certificate
            await Agent(srv.http, room, "Thief", join_gate=gate, identity_token=host_token,
                        cert_file=thief_cert, join_timeout=10).start()


async def test_an_agent_key_gate_admits_only_the_listed_agent(mail_server: tuple[KibitzServer, Sink],
                                                              tmp_path: Path) -> None:
    srv, _ = mail_server
    room = ROOM + "-keys"
    key = PrivateKey.generate()
    gate = JoinGate(agent_keys=(key.public_key.to_text(),))
    async with Agent(srv.http, room, "Known", join_gate=gate, agent_key=key.to_text()) as known:
        assert known.id in {p["id"] for p in known.participants()}
        with pytest.raises(AgentJoinError, match="unverified"):
            await Agent(srv.http, room, "Unknown", join_gate=gate, join_timeout=10).start()
        with pytest.raises(AgentJoinError, match="unverified"):
            await Agent(srv.http, room, "Impostor", join_gate=gate, agent_key=PrivateKey.generate().to_text(),
                        join_timeout=10).start()
