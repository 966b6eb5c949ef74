"""Whist on the real engine: four :class:`kibitz.session.Session` players and a watching agent on the
in-memory bus (kibitz.testing), every message each one receives recorded.

Proves the hidden-hand claim end to end through the engine's own broadcast/sendTo: no client ever
receives a card of another seat before that card is played (the turn-up, public by the rules,
aside), the watcher receives exactly the one seat its player allowed, only after the engine grant
and the player's consent, and nobody but the dealer sees a seed before the deal is over. And a
dealer that deals from a stacked deck is caught by every other client's commit-reveal check.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from whist import rules
from whist.dealer import Dealer
from whist.port import Options, SessionPort
from whist.table import Table
from whist_helpers import stacked_deal, strings

from kibitz.clock import FakeClock
from kibitz.session import Session
from kibitz.testing import Bus

ROOM = "room-whist-bus-4q8z1"
CARD = re.compile(r"^[2-9TJQKA][CDHS]$")
# start_delay: on the fake clock, long enough for all four to say hello before the first deal
OPTS = Options(bot_delay=0.05, away_grace=1.0, start_delay=10.0, next_delay=0.5, phase_timeout=5.0,
               auto_next=False)


@dataclass
class Player:
    name: str
    session: Session
    table: Table
    got: list[tuple[float, str, Any]] = field(default_factory=list)


class TimedDealer(Dealer):
    """The honest dealer, recording when each card was played (the ground truth of the test)."""

    played_at: dict[str, float]
    clock: FakeClock

    def _after_play(self) -> None:
        g = self.game
        assert g is not None
        last = g.trick[-1] if g.trick else g.tricks[-1]["cards"][-1]  # type: ignore[index]
        TimedDealer.played_at[str(last)] = TimedDealer.clock.now()
        super()._after_play()


class StackedDealer(TimedDealer):
    """Deals itself every spade whatever the seeds say."""

    def make_deal(self, deck: list[str]) -> rules.Deal:
        return stacked_deal(self, deck)


def make(bus: Bus, name: str, dealer: type[Dealer], *, agent_watch: int | None = None) -> Player:
    key = None if agent_watch is not None else rules.sha256_hex(f"bus-key:{name}")
    meta: dict[str, Any] = (
        {"role": "agent", "whist": {"watch": agent_watch}} if agent_watch is not None
        else {"whist": {"uid": rules.uid_of(key or "")}}
    )
    transport = bus.transport(name)
    sched = bus.scheduler(name)
    session = Session(ROOM, transport=transport, scheduler=sched, rng=random.Random(name), name=name.title(),
                      meta=meta, identity=f"whist-{name}", wall_clock=bus.clock.now)
    rng = random.Random(f"seeds:{name}")
    port = SessionPort(session, sched, rand=lambda n: rng.randbytes(n).hex())
    table = Table(port, key=key, watch=agent_watch, options=OPTS, dealer_class=dealer)
    player = Player(name, session, table)

    def heard(data: Any, frm: str) -> None:
        player.got.append((bus.clock.now(), frm, data))
        table.on_message(data, frm)

    session.on("participants", table.on_participants)
    session.on_message(heard)
    session.start()
    return player


def run_deal(bus: Bus, players: list[Player], until: float = 120.0) -> None:
    """People play the bot's choice whenever it is their turn, until every player's deal is done."""
    people = [p for p in players if p.table.uid is not None]
    deadline = bus.clock.now() + until
    while bus.clock.now() < deadline:
        for p in people:
            v = p.table.view()
            if v["legal"]:
                deal = v["pub"]["deal"]
                p.table.play(rules.bot_play(v["hand"], deal["trick"], deal["turnup"][1]))
        bus.clock.advance(0.05)
        if all(p.table.client.last_check is not None for p in players):
            return
    raise AssertionError("the deal did not finish on the bus")


@pytest.fixture
def bus() -> Bus:
    TimedDealer.played_at = {}
    return Bus(FakeClock())


def test_four_engines_play_a_deal_and_nobody_receives_another_seats_card(bus: Bus) -> None:
    TimedDealer.clock = bus.clock
    players = [make(bus, n, TimedDealer) for n in ("ann", "bob", "cy", "dee")]
    kib = make(bus, "kib", TimedDealer, agent_watch=0)
    bus.clock.advance(3.0)
    for p in [*players, kib]:
        p.session.join()
    bus.clock.advance(3.0)
    ids = {p.session.self_id for p in [*players, kib]}
    for p in [*players, kib]:
        assert {q["id"] for q in p.session.get_participants()} == ids

    dealer = next(p for p in players if p.table.dealer is not None)
    assert sorted(p.table.client.seat() for p in players) == [0, 1, 2, 3]  # type: ignore[type-var]
    north = next(p for p in players if p.table.client.seat() == 0)
    # The kibitzer asked (roster meta) to watch North; nothing reaches it before North allows it.
    bus.clock.advance(1.0)
    assert kib.table.client.hands == {}
    # North's player grants it (the engine grant: a person may write grants in a room without a host)
    # and tells the dealer it consents.
    north.session.set_capability_grant(kib.session.self_id, {
        "perceive": ["read-chat", "read-roster", "receive-directed"], "act": ["send-chat"]})
    north.table.allow(kib.session.self_id, 0)
    run_deal(bus, [*players, kib])

    pub = dealer.table.client.pub
    assert pub is not None and pub["deal"]["phase"] == "done"
    deal = pub["deal"]
    hands = rules.deal_hands(rules.shuffle(rules.deck_seed(deal["id"], deal["reveal"])), deal["dealer"])
    owner = {c: seat for seat, hand in enumerate(hands) for c in hand}
    seats = {p.name: p.table.client.seat() for p in players}
    assert sorted(s for s in seats.values() if s is not None) == [0, 1, 2, 3]
    assert len(TimedDealer.played_at) == 52
    seeds = {u: s for u, s in deal["reveal"].items()}
    done_at = max(TimedDealer.played_at.values())

    for p in [*players, kib]:
        mine = 0 if p is kib else seats[p.name]
        assert p.got, p.name
        for at, _frm, data in p.got:
            for s in strings(data):
                if CARD.match(s) and owner[s] != mine and s != deal["turnup"]:
                    assert TimedDealer.played_at.get(s, float("inf")) <= at, (
                        f"{p.name} received {s} (seat {owner[s]}) at {at} before it was played: {data}")
                if p is not dealer and s in seeds.values() and at < done_at:
                    own = p.table.uid is not None and seeds.get(p.table.uid) == s
                    assert own, f"{p.name} received someone's seed before the deal was over"
        hands_got = [d for _, _, d in p.got if isinstance(d, dict) and d.get("t") == "hand"]
        if p is dealer:
            assert hands_got == []  # its own hand never left its process
        else:
            assert [h["seat"] for h in hands_got] == [mine], p.name
            assert sorted(hands_got[0]["cards"]) == sorted(hands[mine])
        check = p.table.client.last_check
        assert check is not None and check["ok"], (p.name, check)

    # the kibitzer: exactly one seat's cards, and it saw North's play as North's player did
    assert [h["seat"] for h in kib.table.client.hands.values()] == [0]
    assert kib.session.can("send-chat")
    assert sum(p.table.dealer.refused for p in players if p.table.dealer) == 0  # type: ignore[union-attr]


def test_a_dealer_dealing_from_a_stacked_deck_is_caught_by_every_other_client(bus: Bus) -> None:
    TimedDealer.clock = bus.clock
    players = [make(bus, n, StackedDealer) for n in ("ann", "bob", "cy", "dee")]
    bus.clock.advance(3.0)
    for p in players:
        p.session.join()
    bus.clock.advance(3.0)
    assert sorted(p.table.client.seat() for p in players) == [0, 1, 2, 3]  # type: ignore[type-var]
    run_deal(bus, players)
    dealer = next(p for p in players if p.table.dealer is not None)
    mine = dealer.table.client.seat()
    assert mine is not None
    assert all(c[1] == "S" for c in dealer.table.dealer.game.hands[mine])  # type: ignore[union-attr]
    for p in players:
        check = p.table.client.last_check
        assert check is not None
        if p is dealer:
            continue
        assert not check["ok"], p.name
        assert check["reason"] in ("the hand we were dealt is not the one the seeds deal us",
                                   "the turn-up is not the last card of the deck the seeds make")
