"""The verified roster (kibitz.identity.roster) through a presence blip: a member off the roster that
the mesh keeps (away) keeps its identity, so a link of its coming back on another certificate while
it is away compromises the roster; an away member never holds sharing back by itself."""

from __future__ import annotations

from kibitz.identity.policy import Identity
from kibitz.identity.roster import VerifiedRoster

FP_BOB, FP_EVE = "11:" * 31 + "11", "ee:" * 31 + "ee"


def identity(email: str, fp: str) -> Identity:
    return Identity(email=email, sub=email, issuer="https://id.example", provider="email", fp=fp, exp=2e9)


def verified_pair() -> VerifiedRoster:
    roster = VerifiedRoster(active=True, require=True)
    roster.self_identity = identity("ann@x.example", "aa:" * 31 + "aa")
    roster.set_members(["bob"])
    roster.link_cert("bob", FP_BOB)
    roster.verified("bob", identity("bob@x.example", FP_BOB))
    assert roster.can_share
    return roster


def test_a_certificate_change_while_away_compromises_and_survives_the_return() -> None:
    roster = verified_pair()
    roster.set_members([], away=["bob"])  # a presence blip: the mesh parks bob
    assert roster.link_cert("bob", FP_EVE)  # someone else's link, while bob is off the roster
    roster.set_members([], away=["bob"])
    roster.set_members(["bob"])  # back under the same id
    assert roster.compromised and not roster.can_share


def test_an_away_member_does_not_hold_sharing_back() -> None:
    roster = verified_pair()
    roster.set_members(["bob", "cat"])  # cat never verifies, then crashes
    assert not roster.can_share
    roster.set_members(["bob"], away=["cat"])
    assert roster.can_share and not roster.compromised
    roster.set_members(["bob"])  # the mesh gave up on cat
    assert roster.can_share and set(roster.peers) == {"bob"}


def test_a_member_that_left_comes_back_with_its_identity() -> None:
    roster = verified_pair()
    roster.set_members([])
    roster.set_members(["bob"])
    assert roster.link_cert("bob", FP_EVE) and roster.compromised
