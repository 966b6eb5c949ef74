"""The whist table protocol (apps/whist/whist/) on LocalNet: the golden transcripts the page's
JavaScript table must reproduce, the commit-reveal checks against dishonest dealers, seats,
watchers and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from whist import rules
from whist.dealer import Dealer
from whist.localnet import LocalNet
from whist.port import elect
from whist.scenarios import KEYS, SCENARIOS, canonical, drive, summary
from whist.table import Table
from whist_helpers import stacked_deal

VECTORS_FILE = Path(__file__).resolve().parents[1] / "vectors" / "whist.json"
VECTORS = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))


def phase(t: Table) -> str | None:
    pub = t.client.pub
    return pub["deal"]["phase"] if pub and pub["deal"] else None


def test_transcripts_match_the_vectors() -> None:
    """The Python side of the vectors the JS table is checked against (make_whist_vectors.py)."""
    for name, run in SCENARIOS.items():
        got = json.loads(canonical(summary(run())))
        assert got == VECTORS["scenarios"][name], f"{name}: regenerate the vectors after a deliberate change"


def test_every_client_verifies_an_honest_deal() -> None:
    net = SCENARIOS["two_people_and_a_kibitzer"]()
    checks = {m: t.client.checks for m, t in net.tables.items()}
    assert all(len(c) == 1 and next(iter(c.values()))["ok"] for c in checks.values()), checks


class StackedDealer(Dealer):
    """Deals itself every spade, whatever the seeds say."""

    def make_deal(self, deck: list[str]) -> rules.Deal:
        return stacked_deal(self, deck)


def test_a_stacked_deck_is_caught_by_every_other_client() -> None:
    net = LocalNet()
    tables = [net.join(f"m-{n}", name=n.title(), key=KEYS[n], dealer_class=StackedDealer)
              for n in ("ann", "bob", "cy")]
    drive(net, lambda: all(t.client.last_check is not None for t in tables))
    dealer = next(t for t in tables if t.dealer is not None)
    for t in tables:
        if t is not dealer:
            check = t.client.last_check
            assert check is not None and check["ok"] is False, check
            assert "hand we were dealt" in check["reason"] or "turn-up" in check["reason"]


class SeedSwappingDealer(Dealer):
    """Reveals a seed of its own choosing for itself at the end (to make the deck it wants)."""

    def pub(self) -> dict[str, Any]:
        p = super().pub()
        if p["deal"] and p["deal"]["reveal"]:
            p["deal"]["reveal"][self.uid] = "0" * 64
        return p


def test_a_swapped_seed_is_caught() -> None:
    net = LocalNet()
    ann = net.join("m-ann", name="Ann", key=KEYS["ann"], dealer_class=SeedSwappingDealer)
    bob = net.join("m-bob", name="Bob", key=KEYS["bob"], dealer_class=SeedSwappingDealer)
    drive(net, lambda: phase(ann) == "done" and phase(bob) == "done")
    other = bob if ann.dealer is not None else ann
    assert other.client.last_check is not None
    check = other.client.last_check
    assert not check["ok"] and "does not match its commitment" in check["reason"]


class CommitSwappingDealer(Dealer):
    """Publishes another commitment for a player than the one it sent (to replace its seed later)."""

    def _commit(self, uid: str, m: dict[str, Any]) -> None:
        super()._commit(uid, {**m, "c": "f" * 64} if uid != self.uid else m)


def test_a_player_withholds_its_seed_when_its_commitment_was_swapped() -> None:
    net = LocalNet()
    ann = net.join("m-ann", name="Ann", key=KEYS["ann"], dealer_class=CommitSwappingDealer)
    bob = net.join("m-bob", name="Bob", key=KEYS["bob"], dealer_class=CommitSwappingDealer)
    net.run(1.0)
    other = bob if ann.dealer is not None else ann
    assert other.client.last_check is not None
    assert "seed withheld" in other.client.last_check["reason"]
    sent = [e for e in net.log if e["from"] == other.me and e["data"]["t"] == "seed"]
    assert sent == []


def test_hands_go_only_to_their_players() -> None:
    net = SCENARIOS["two_people_and_a_kibitzer"]()
    hands = [(e["data"]["deal"], e["to"], e["data"]["seat"]) for e in net.log if e["data"]["t"] == "hand"]
    seats = {m: t.client.seat() for m, t in net.tables.items()}
    for _, to, seat in hands:
        assert seat == (2 if to == "m-kib" else seats[to]), (to, seat)
    # per deal, everyone but the dealer (whose own hand never leaves its process) got exactly one
    deals = sorted({d for d, _, _ in hands})
    assert len(deals) == 2
    for deal in deals:
        got = sorted(to for d, to, _ in hands if d == deal)
        assert got == sorted(m for m, t in net.tables.items() if t.dealer is None)


def test_the_watcher_gets_the_hand_only_after_its_seats_player_allows_it() -> None:
    net = LocalNet()
    ann = net.join("m-ann", name="Ann", key=KEYS["ann"])
    bob = net.join("m-bob", name="Bob", key=KEYS["bob"])
    kib = net.join("m-kib", name="Kibitzer", watch=2, agent=True)  # South: where the first person sits
    drive(net, lambda: phase(ann) == "play" and len(ann.client.pub["deal"]["tricks"]) >= 1)  # type: ignore[index]
    assert kib.client.hands == {}
    watched = kib.client.watch
    holder = next(t for t in (ann, bob) if t.client.seat() == watched)
    stranger = bob if holder is ann else ann
    stranger.allow("m-kib", watched)
    net.run(net.now + 0.3)
    assert kib.client.hands == {}
    assert stranger.client.error is not None and stranger.client.error["code"] == "allow"
    holder.allow("m-kib", watched)
    net.run(net.now + 0.3)
    assert [h["seat"] for h in kib.client.hands.values()] == [watched]
    assert kib.view()["hand"] == holder.view()["hand"]
    holder.revoke("m-kib")
    drive(net, lambda: phase(ann) == "done")
    net.run(net.now + 2.0)  # the next deal is dealt: no hand for the watcher any more
    assert len(kib.client.hands) == 1


def test_a_seat_key_is_needed_to_take_a_seat_uid() -> None:
    """A member that copies Ann's uid into its roster meta gets no seat and no hand."""
    net = LocalNet()
    ann = net.join("m-ann", name="Ann", key=KEYS["ann"])
    net.join("m-bob", name="Bob", key=KEYS["bob"])
    drive(net, lambda: phase(ann) == "play")
    net.join("m-eve", name="Eve", key=KEYS["cy"])
    net.members["m-eve"]["meta"] = {"whist": {"uid": rules.uid_of(KEYS["ann"])}}
    net.roster_changed()
    drive(net, lambda: phase(ann) == "done")
    assert not [e for e in net.log if e["to"] == "m-eve" and e["data"]["t"] == "hand"]
    assert ann.client.seat() is not None
    dealer = next(t for t in net.tables.values() if t.dealer is not None)
    assert dealer.dealer is not None and dealer.dealer.refused >= 1


def test_malformed_messages_are_counted_and_change_nothing() -> None:
    net = LocalNet()
    ann = net.join("m-ann", name="Ann", key=KEYS["ann"])
    drive(net, lambda: phase(ann) == "play")
    before = canonical(ann.view())
    for bad in [
        {"ns": "whist", "t": "state", "pub": {"table": "x"}},
        {"ns": "whist", "t": "hand", "table": "t", "deal": "d", "seat": 9, "cards": []},
        {"ns": "whist", "t": "play", "deal": "x", "card": "ZZ"},
        {"ns": "whist", "t": "warp"},
        {"ns": "whist", "t": "seed", "deal": "x", "seed": "nothex"},
    ]:
        ann.on_message(bad, "m-nobody")
    ann.on_message({"kind": "route"}, "m-nobody")  # another app's data: ignored, not counted
    ann.on_message({"ns": "whist", "t": "state", "pub": ann.client.pub}, "m-nobody")  # not the dealer
    assert canonical(ann.view()) == before
    assert sum(ann.dropped.values()) == 6


def test_an_away_player_is_played_by_a_bot_after_the_grace_and_gets_the_seat_back() -> None:
    net = SCENARIOS["reload_keeps_the_seat"]()
    bob = net.tables["m-bob2"]
    assert bob.client.seat() == 0 and bob.client.last_check is not None and bob.client.last_check["ok"]


def test_the_host_deals_even_with_a_higher_uid() -> None:
    people: list[dict[str, Any]] = [
        {"id": "m1", "role": "guest", "kind": "human", "meta": {"whist": {"uid": "0" * 24}}},
        {"id": "m2", "role": "host", "kind": "human", "meta": {"whist": {"uid": "f" * 24}}},
        {"id": "m3", "role": "guest", "kind": "agent", "meta": {"role": "agent", "whist": {"uid": "1" * 24}}},
    ]
    assert elect(people) == "m2"
    assert elect([people[0], people[2]]) == "m1"
    assert elect([people[2]]) is None  # an agent never deals


def test_stand_up_and_new_game() -> None:
    net = LocalNet()
    ann = net.join("m-ann", name="Ann", key=KEYS["ann"])
    bob = net.join("m-bob", name="Bob", key=KEYS["bob"])
    drive(net, lambda: phase(ann) == "play")
    bob.stand()
    net.run(net.now + 0.1)
    seat = next(i for i, s in enumerate(ann.client.pub["seats"]) if s["uid"] == bob.uid)
    assert ann.client.pub["seats"][seat]["away"] is True
    drive(net, lambda: phase(ann) == "done")
    net.run(net.now + 1.0)
    assert bob.client.seat() is None
    ann.new_game()
    net.run(net.now + 0.1)
    assert ann.client.pub["score"]["points"] == [0, 0] and ann.client.pub["deal"]["no"] == 1


def test_a_newcomer_with_a_lower_uid_deals_on_with_the_same_seats_and_score() -> None:
    net = LocalNet()
    ann = net.join("m-ann", name="Ann", key=KEYS["ann"])
    bob = net.join("m-bob", name="Bob", key=KEYS["bob"])
    drive(net, lambda: phase(ann) == "done")
    old = ann.client.pub
    assert old is not None
    before = (old["score"], [s["uid"] for s in old["seats"]], old["deal"]["no"])
    cy = net.join("m-cy", name="Cy", key=KEYS["cy"], sit=False)
    assert rules.uid_of(KEYS["cy"]) < min(str(ann.uid), str(bob.uid)) and cy.dealer is not None
    drive(net, lambda: phase(ann) == "play")
    pub = ann.client.pub
    assert pub is not None and pub["auth"] == cy.uid
    assert (pub["score"], [s["uid"] for s in pub["seats"]]) == before[:2]
    assert pub["deal"]["no"] == before[2] + 1


def test_a_refused_hello_is_said_again_on_the_next_roster() -> None:
    """The engine refuses a send while our own roster entry is not in yet: the hello is retried."""
    net = LocalNet()
    ann = net.join("m-ann", name="Ann", key=KEYS["ann"])
    dealer = "m-ann"
    net.no_directed.add(dealer)  # sends to the dealer fail for now
    bob = net.join("m-bob", name="Bob", key=KEYS["bob"])
    if bob.dealer is not None:  # Bob's uid is lower: then Ann is the one whose hello fails
        net.no_directed.discard(dealer)
        net.no_directed.add("m-bob")
        dealer, bob = "m-bob", ann
    net.run(net.now + 1.0)
    assert bob.dropped and bob.client.seat() is None
    net.no_directed.discard(dealer)
    net.roster_changed()
    net.run(net.now + 0.5)
    pub = bob.client.pub
    assert pub is not None and bob.uid in pub["here"]
    assert any(bob.uid in (s["uid"], s["next"]) for s in pub["seats"])  # seated, or sits next deal
