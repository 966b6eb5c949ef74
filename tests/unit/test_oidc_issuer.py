"""Sign-in with a real local OpenID Connect issuer (oidc-provider-mock, authlib underneath, in a thread
on loopback): the authorization code flow with our nonce, its ID token verified by kibitz.identity
with the issuer's discovery document and key set fetched over HTTP, and two agents that signed in
there verified by each other in a call. (This issuer lets one nonce sign in more than once, so the
per-sign-in salt the issue mentions for issuers that do not was not needed.)"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from oidc_issuer import CLIENT, running_issuer, sign_in
from server_fixture import KibitzServer

from kibitz.agent import Agent, agent_identity_nonce
from kibitz.identity import Identity, IdentityConfig, identity_nonce, verify_identity
from kibitz.identity.keys import KeyDirectory

FP = ":".join(f"{i:02x}" for i in range(32))


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    with running_issuer(("ann", "bob", "cy")) as url:
        yield url


def test_an_id_token_from_the_issuer_verifies_with_fetched_keys(issuer: str) -> None:
    token = sign_in(issuer, "ann-sub", identity_nonce(FP, "room-oidc"))
    config = IdentityConfig.from_json({"providers": [{"type": "oidc", "issuer": issuer, "clientId": CLIENT}]})

    def fetch(url: str, done: Any) -> None:
        with urllib.request.urlopen(url, timeout=10) as resp:
            status, body = resp.status, resp.read()
        done(status, body)

    keys = KeyDirectory(fetch, time.time)
    got = verify_identity(token, config=config, keys_of=keys.keys_of, fp=FP, room="room-oidc",
                          now=time.time())
    assert isinstance(got, Identity) and got.email == "ann@idp.example" and got.provider == "oidc"
    assert keys.stats["loaded"] == 1  # discovery document, then jwks_uri
    other = verify_identity(token, config=config, keys_of=keys.keys_of, fp=FP, room="room-other",
                            now=time.time())
    assert not isinstance(other, Identity) and other.reason == "wrong-nonce"
    wrong_app = IdentityConfig.from_json({"providers": [{"type": "oidc", "issuer": issuer, "clientId": "x"}]})
    refused = verify_identity(token, config=wrong_app, keys_of=keys.keys_of, fp=FP, room="room-oidc",
                              now=time.time())
    assert not isinstance(refused, Identity) and refused.reason == "wrong-audience"


async def test_agents_signed_in_at_the_issuer_verify_each_other(issuer: str, kibitz_server: KibitzServer,
                                                                tmp_path: Path) -> None:
    room = "room-oidc-agents"
    verify = {"providers": [{"type": "oidc", "issuer": issuer, "clientId": CLIENT}]}
    certs = {n: tmp_path / f"{n}.pem" for n in ("ann", "cy")}
    tokens = {n: await asyncio.to_thread(sign_in, issuer, f"{n}-sub", agent_identity_nonce(room, certs[n]))
              for n in certs}
    async with Agent(kibitz_server.http, room, "Ann", identity_token=tokens["ann"], cert_file=certs["ann"],
                     verify_identity=verify) as ann, \
            Agent(kibitz_server.http, room, "Cy", identity_token=tokens["cy"], cert_file=certs["cy"],
                  verify_identity=verify) as cy:
        deadline = time.monotonic() + 15
        def seen(a: Agent, b: Agent) -> Any:
            return next((p["verifiedEmail"] for p in a.participants() if p["id"] == b.id), None)
        while not (seen(ann, cy) and seen(cy, ann)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert seen(ann, cy) == "cy@idp.example" and seen(cy, ann) == "ann@idp.example"
