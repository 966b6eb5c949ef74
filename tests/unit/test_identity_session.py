"""The verified roster, identity gates, the host by email and agent admission on the in-memory bus.

Sessions run the real engine; the bus gives every process a certificate fingerprint (as a DTLS
session would) and tokens are minted by a test issuer (PyJWT), bound with the sign-in nonce.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from identity_helpers import ISSUER, FakeFetch, Issuer

from kibitz.clock import FakeClock
from kibitz.crypto import PrivateKey
from kibitz.gate import HostSpec, JoinGate
from kibitz.identity.agents import sign_assertion
from kibitz.identity.member import IdentityError
from kibitz.session import Session
from kibitz.testing import Bus

ROOM = "room-identity-7hq2x9c4"
VERIFY = {"providers": [{"type": "email", "apiBase": ISSUER}]}
NOW = 1_800_000_000.0


@pytest.fixture
def bus() -> Bus:
    return Bus(FakeClock(start=NOW))


@pytest.fixture
def issuer() -> Issuer:
    return Issuer()


def make(bus: Bus, name: str, issuer: Issuer, *, delay: float = 0.01, **kw: Any) -> Session:
    fetch = FakeFetch(bus.clock.call_later, {f"{ISSUER}/api/email/jwks": issuer.jwks()}, delay)
    kw.setdefault("verify_identity", VERIFY)
    s = Session(ROOM, transport=bus.transport(name), scheduler=bus.scheduler(name), rng=random.Random(name),
                name=name.title(), fetch=fetch, **kw)
    s.start()
    return s


def token_for(issuer: Issuer, bus: Bus, name: str, email: str, **extra: Any) -> str:
    return issuer.mint(email, fp=bus.fingerprint(name), room=ROOM, now=bus.clock.now(), **extra)


def signed_in_pair(bus: Bus, issuer: Issuer, settle: float) -> tuple[Session, Session]:
    """Ann and Bob, each with a token for their own certificate, joined; ``settle`` seconds later."""
    ann, bob = make(bus, "ann", issuer), make(bus, "bob", issuer)
    bus.clock.advance(1.0)
    ann.provide_identity_token(token_for(issuer, bus, "ann", "ann@x.example"))
    bob.provide_identity_token(token_for(issuer, bus, "bob", "bob@x.example"))
    ann.join()
    bob.join()
    bus.clock.advance(settle)
    return ann, bob


def people(s: Session) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in s.get_participants()}


def test_two_members_verify_each_other_with_equal_safety_codes(bus: Bus, issuer: Issuer) -> None:
    ann, bob = make(bus, "ann", issuer), make(bus, "bob", issuer)
    bus.clock.advance(1.0)
    assert ann.get_state()["identityEnabled"] and ann.get_state()["selfEmail"] is None
    ann.provide_identity_token(token_for(issuer, bus, "ann", "ann@allowed.example"))
    bob.provide_identity_token(token_for(issuer, bus, "bob", "Bob@Allowed.Example"))
    ann.join()
    bob.join()
    bus.clock.advance(3.0)
    a, b = people(ann), people(bob)
    assert a[bob.self_id]["verifiedEmail"] == "bob@allowed.example"
    assert b[ann.self_id]["verifiedEmail"] == "ann@allowed.example"
    assert a[ann.self_id]["verifiedEmail"] == "ann@allowed.example"
    code = a[bob.self_id]["safetyCode"]
    assert code and len(code) == 4 and code == b[ann.self_id]["safetyCode"]
    state = ann.get_state()
    assert state["rosterActive"] and state["rosterCanShare"] and not state["rosterCompromised"]


def test_a_copied_token_proves_nothing_on_another_certificate(bus: Bus, issuer: Issuer) -> None:
    ann, bob, eve = (make(bus, n, issuer) for n in ("ann", "bob", "eve"))
    bus.clock.advance(1.0)
    stolen = token_for(issuer, bus, "ann", "ann@allowed.example")
    ann.provide_identity_token(stolen)
    for s in (ann, bob, eve):
        s.join()
    bus.clock.advance(3.0)
    with pytest.raises(IdentityError) as err:
        eve.provide_identity_token(stolen)  # eve's own check refuses it: bound to ann's certificate
    assert err.value.reason == "other-cert"
    eve.content.send_idtoken(bob.self_id, stolen)  # a tampered client sends it anyway
    bus.clock.advance(1.0)
    assert people(bob)[eve.self_id]["verifiedEmail"] is None
    assert bob.get_identity_stats()["refusals"].get("other-cert") == 1
    assert people(bob)[ann.self_id]["verifiedEmail"] == "ann@allowed.example"


@pytest.mark.parametrize(("change", "reason"), [
    ({"aud": "another-app"}, "wrong-audience"),
    ({"ttl": -120}, "expired"),
])
def test_peers_count_each_refusal(bus: Bus, issuer: Issuer, change: dict[str, Any], reason: str) -> None:
    ann, bob = make(bus, "ann", issuer), make(bus, "bob", issuer)
    bus.clock.advance(1.0)
    ann.join()
    bob.join()
    bus.clock.advance(3.0)
    ann.content.send_idtoken(bob.self_id, token_for(issuer, bus, "ann", "ann@x.example", **change))
    bus.clock.advance(1.0)
    assert bob.get_identity_stats()["refusals"] == {reason: 1}


def test_require_holds_content_until_everyone_is_verified(bus: Bus, issuer: Issuer) -> None:
    verify = {**VERIFY, "require": True}
    ann = make(bus, "ann", issuer, verify_identity=verify)
    bob = make(bus, "bob", issuer, verify_identity=verify)
    got: list[Any] = []
    bob.on_message(lambda data, frm: got.append(data))
    bus.clock.advance(1.0)
    ann.join()
    bob.join()
    bus.clock.advance(3.0)
    assert ann.broadcast({"n": 1}) == []  # held: nobody is verified
    ann.provide_identity_token(token_for(issuer, bus, "ann", "ann@x.example"))
    bus.clock.advance(1.0)
    assert got == [] and not ann.get_state()["rosterCanShare"]
    bob.provide_identity_token(token_for(issuer, bus, "bob", "bob@x.example"))
    bus.clock.advance(1.0)
    assert ann.get_state()["rosterCanShare"] and bob.get_state()["rosterCanShare"]
    assert got == [{"n": 1}]
    ann.broadcast({"n": 2})
    bus.clock.advance(0.5)
    assert got == [{"n": 1}, {"n": 2}]


def test_a_certificate_change_under_a_verified_identity_stops_sharing(bus: Bus, issuer: Issuer) -> None:
    ann, bob = signed_in_pair(bus, issuer, 3.0)
    assert ann.get_state()["rosterCanShare"]
    got: list[Any] = []
    ann.on_message(lambda data, frm: got.append(data))
    bus.set_fingerprint("bob", "aa:" * 31 + "aa")  # someone else answers for bob from now on
    bus.drop_links_between("ann", "bob")
    bus.clock.advance(8.0)  # the mesh re-dials
    state = ann.get_state()
    assert state["rosterCompromised"] and not state["rosterCanShare"]
    assert people(ann)[bob.self_id]["verifiedEmail"] is None
    bob.broadcast({"secret": 1})
    bus.clock.advance(1.0)
    assert got == []  # held by ann: the roster is compromised


def test_an_email_gate_admits_allowed_addresses_only(bus: Bus, issuer: Issuer) -> None:
    gate = JoinGate(mode="email", issuer=ISSUER, allowed=("@allowed.example",))
    host = make(bus, "host", issuer, gate=gate, verify_identity=None)
    ann = make(bus, "ann", issuer, gate=gate, verify_identity=None)
    eve = make(bus, "eve", issuer, gate=gate, verify_identity=None)
    nobody = make(bus, "nobody", issuer, gate=gate, verify_identity=None)
    bus.clock.advance(1.0)
    host.provide_identity_token(token_for(issuer, bus, "host", "host@allowed.example"))
    ann.provide_identity_token(token_for(issuer, bus, "ann", "ann@allowed.example"))
    eve_token = token_for(issuer, bus, "eve", "eve@elsewhere.example")
    with pytest.raises(IdentityError, match="not-allowed"):
        eve.provide_identity_token(eve_token)  # an honest engine knows it will not get in
    eve._update_profile(jwt=eve_token)  # a tampered one announces it anyway
    host.join()
    bus.clock.advance(1.0)
    for s in (ann, eve, nobody):
        s.join()
    bus.clock.advance(3.0)
    assert set(people(host)) == {host.self_id, ann.self_id}
    assert ann.get_state()["lobbyStatus"] in (None, "admitted")
    assert eve.get_state()["lobbyStatus"] == "unverified"
    assert nobody.get_state()["lobbyStatus"] == "unverified"
    door = host.get_identity_stats()["door"]
    assert door.get("needs-identity", 0) >= 1 and door.get("not-allowed", 0) >= 1


def test_the_door_waits_for_the_issuers_keys(bus: Bus, issuer: Issuer) -> None:
    gate = JoinGate(mode="email", issuer=ISSUER)
    host = make(bus, "host", issuer, gate=gate, verify_identity=None)
    bus.clock.advance(0.5)
    host.provide_identity_token(token_for(issuer, bus, "host", "h@x.example"))
    host.join()
    bus.clock.advance(1.0)
    ann = make(bus, "ann", issuer, gate=gate, verify_identity=None)
    bus.clock.advance(0.5)
    ann.provide_identity_token(token_for(issuer, bus, "ann", "a@x.example"))
    ann.join()
    bus.clock.advance(3.0)
    assert ann.self_id in people(host)


def test_the_host_by_email_is_whoever_proves_the_address(bus: Bus, issuer: Issuer) -> None:
    gate = JoinGate(mode="open", host=HostSpec(email="boss@x.example"))
    first = make(bus, "first", issuer, gate=gate)  # coordinates, is not the host
    boss = make(bus, "boss", issuer, gate=gate)
    bus.clock.advance(1.0)
    first.provide_identity_token(token_for(issuer, bus, "first", "first@x.example"))
    first.join()
    bus.clock.advance(1.0)
    boss.provide_identity_token(token_for(issuer, bus, "boss", "boss@x.example"))
    boss.join()
    bus.clock.advance(3.0)
    assert first.get_state()["isCoordinator"] and not first.get_state()["isHost"]
    assert boss.get_state()["isHost"]
    assert people(first)[boss.self_id]["role"] == "host"
    assert not first.set_locked(True)
    assert boss.set_locked(True)
    bus.clock.advance(1.0)
    assert first.get_state()["locked"]


def test_an_agent_key_gate_admits_only_known_agents(bus: Bus, issuer: Issuer) -> None:
    agent_key = PrivateKey.generate()
    gate = JoinGate(mode="open", agent_keys=(agent_key.public_key.to_text(),))
    host = make(bus, "host", issuer, gate=gate, verify_identity=None)
    known = make(bus, "known", issuer, gate=gate, verify_identity=None, agent_key=agent_key.to_text(),
                 meta={"role": "agent"})
    stranger = make(bus, "stranger", issuer, gate=gate, verify_identity=None, meta={"role": "agent"},
                    agent_key=PrivateKey.generate().to_text())
    bare = make(bus, "bare", issuer, gate=gate, verify_identity=None, meta={"role": "agent"})
    human = make(bus, "human", issuer, gate=gate, verify_identity=None)
    host.join()
    bus.clock.advance(1.0)
    for s in (known, stranger, bare, human):
        s.join()
    bus.clock.advance(3.0)
    assert set(people(host)) == {host.self_id, known.self_id, human.self_id}
    assert stranger.get_state()["lobbyStatus"] == "unverified"
    assert bare.get_state()["lobbyStatus"] == "unverified"
    door = host.get_identity_stats()["door"]
    assert door.get("agent:unknown-key") and door.get("agent:needs-agent-key")
    # a copied assertion is useless from another certificate
    copied = sign_assertion(agent_key, room=ROOM, fp=bus.fingerprint("known"), now=bus.clock.now())
    thief = make(bus, "thief", issuer, gate=gate, verify_identity=None, meta={"role": "agent"})
    bus.clock.advance(0.5)
    thief._update_profile(agent_assertion=copied)
    thief.join()
    bus.clock.advance(3.0)
    assert thief.get_state()["lobbyStatus"] == "unverified"
    assert host.get_identity_stats()["door"].get("agent:other-cert")


def test_a_first_comer_whose_token_waits_for_keys_is_held_not_refused(bus: Bus, issuer: Issuer) -> None:
    """A token provided before the issuer's keys are in: the coordinator holds itself out until they
    arrive, never saying ``unverified`` (an agent takes that as a refusal and gives up)."""
    gate = JoinGate(mode="email", issuer=ISSUER)
    host = make(bus, "host", issuer, gate=gate, verify_identity=None, delay=2.0)  # slow key fetch
    statuses: list[str] = []
    host.on("lobby", statuses.append)
    assert host.provide_identity_token(token_for(issuer, bus, "host", "h@x.example"))["status"] == "pending"
    host.join()
    bus.clock.advance(1.0)
    assert host.get_state()["isCoordinator"] and host.self_id not in people(host)
    bus.clock.advance(2.0)
    assert host.self_id in people(host) and host.get_state()["lobbyStatus"] in (None, "admitted")
    assert "unverified" not in statuses, statuses


def test_a_coordinator_holds_itself_to_its_email_gate(bus: Bus, issuer: Issuer) -> None:
    gate = JoinGate(mode="email", issuer=ISSUER)
    host = make(bus, "host", issuer, gate=gate, verify_identity=None)
    bus.clock.advance(0.5)
    host.join()
    bus.clock.advance(1.0)
    assert host.get_state()["isCoordinator"] and host.get_state()["lobbyStatus"] == "unverified"
    assert host.self_id not in people(host)
    host.provide_identity_token(token_for(issuer, bus, "host", "h@x.example"))
    bus.clock.advance(0.5)
    assert host.self_id in people(host) and host.get_state()["lobbyStatus"] == "admitted"


def test_agent_credits_are_checked_on_announce_and_expired_agents_reaped(bus: Bus, issuer: Issuer) -> None:
    credits = Issuer(issuer="https://credits.example", kid="c1")
    jwks = {"https://credits.example/jwks": credits.jwks(), f"{ISSUER}/api/email/jwks": issuer.jwks()}
    config = {"issuer": "https://credits.example", "jwksUrl": "https://credits.example/jwks"}

    def session(name: str, **kw: Any) -> Session:
        s = Session(ROOM, transport=bus.transport(name), scheduler=bus.scheduler(name),
                    rng=random.Random(name), name=name, fetch=FakeFetch(bus.clock.call_later, jwks),
                    agent_credits=config, **kw)
        s.start()
        return s

    def credit(ttl: float) -> str:
        return credits.mint("agent-1", fp="", room=ROOM, now=bus.clock.now(), ttl=ttl, aud="any")

    host = session("host")
    host.join()
    bus.clock.advance(1.0)
    paid = session("paid", meta={"role": "agent"}, agent_credit=credit(60))
    unpaid = session("unpaid", meta={"role": "agent"})
    human = session("human")
    for s in (paid, unpaid, human):
        s.join()
    bus.clock.advance(3.0)
    assert set(people(host)) == {host.self_id, paid.self_id, human.self_id}
    assert unpaid.get_state()["lobbyStatus"] == "unverified"
    assert host.get_identity_stats()["door"].get("credit:needs-credit")
    bus.clock.advance(60 + 60 + 95)  # the credit expired (plus leeway), then 90 s more: reaped
    assert paid.self_id not in people(host)
    assert host.room is not None and host.room.drops.by_reason["door:credit-expired"] == 1


@pytest.mark.parametrize("late", [0.3, 6.0])
def test_a_certificate_read_late_still_verifies_the_peer(issuer: Issuer, late: float) -> None:
    """The page reads the far certificate off the DTLS transport after the channel opens (under load,
    seconds after): tokens checked before that are looked at again once it can be read."""
    bus = Bus(FakeClock(start=NOW), cert_delay=late)
    ann, bob = signed_in_pair(bus, issuer, 2.0)
    if late > 2.0:  # not readable yet: nobody is shown verified, and the reason is counted
        assert people(ann)[bob.self_id]["verifiedEmail"] is None
        assert ann.get_identity_stats()["refusals"].get("no-fingerprint")
    bus.clock.advance(late + 16.0)
    a, b = people(ann), people(bob)
    assert a[bob.self_id]["verifiedEmail"] == "bob@x.example"
    assert b[ann.self_id]["verifiedEmail"] == "ann@x.example"
    assert a[bob.self_id]["safetyCode"] and a[bob.self_id]["safetyCode"] == b[ann.self_id]["safetyCode"]


def test_a_certificate_never_read_gives_up_and_says_why(issuer: Issuer) -> None:
    bus = Bus(FakeClock(start=NOW), cert_delay=1e9)
    ann, bob = make(bus, "ann", issuer), make(bus, "bob", issuer)
    bus.clock.advance(1.0)
    bob.provide_identity_token(token_for(issuer, bus, "bob", "bob@allowed.example"))
    ann.join()
    bob.join()
    bus.clock.advance(120.0)
    assert people(ann)[bob.self_id]["verifiedEmail"] is None
    assert not ann.identity._cert_waits  # it stopped looking
    assert ann.get_identity_stats()["refusals"]["no-fingerprint"] >= 1
