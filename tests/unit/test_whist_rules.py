"""Whist rules (apps/whist/whist/rules.py): legal moves, trick winners, scoring, whole deals, bots,
the fair shuffle, and the golden vectors the page's JavaScript is held to (tests/js/whist.test.mjs)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from whist import rules
from whist.rules import Deal, IllegalMove, Score

VECTORS_FILE = Path(__file__).resolve().parents[1] / "vectors" / "whist.json"
VECTORS = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))


def seed(i: int) -> str:
    return hashlib.sha256(f"rules-test:{i}".encode()).hexdigest()


# ------------------------------------------------------------------------------ legal moves


def test_any_card_leads_and_you_must_follow_suit_when_you_can() -> None:
    hand = ["2C", "KD", "3H", "AH", "9S"]
    assert rules.legal_moves(hand, []) == hand
    assert rules.legal_moves(hand, ["5H"]) == ["3H", "AH"]
    assert rules.legal_moves(hand, ["5H", "6H"]) == ["3H", "AH"]
    # void in the suit led: anything, trumps included
    assert rules.legal_moves(["2C", "KD", "9S"], ["5H"]) == ["2C", "KD", "9S"]


def test_a_deal_refuses_revokes_wrong_turns_and_cards_not_held() -> None:
    d = Deal(3, [["2C", "3C"], ["4C", "AS"], ["5C"], ["6C"]], "AS")
    d.leader = 0
    with pytest.raises(IllegalMove, match="North's turn"):
        d.play(1, "4C")
    with pytest.raises(IllegalMove, match="not in North's hand"):
        d.play(0, "5C")
    d.play(0, "2C")
    with pytest.raises(IllegalMove, match="does not follow suit"):
        d.play(1, "AS")


# ------------------------------------------------------------------------------ trick winner


@pytest.mark.parametrize(
    ("trick", "trump", "winner"),
    [
        (["5H", "KH", "2H", "AH"], "S", 3),  # highest of the suit led
        (["5H", "KC", "2H", "3H"], "S", 0),  # a discard never wins
        (["5H", "KH", "2S", "AH"], "S", 2),  # any trump beats the suit led
        (["5H", "3S", "9S", "AH"], "S", 2),  # the highest trump
        (["QS", "KS", "2H", "AS"], "S", 3),  # trumps led: plain rank order
        (["TD"], "C", 0),
    ],
)
def test_trick_winner(trick: list[str], trump: str, winner: int) -> None:
    assert rules.trick_winner(trick, trump) == winner


# ------------------------------------------------------------------------------ scoring


def test_odd_tricks_score_one_point_each() -> None:
    result, after = rules.score_deal(Score(), (9, 4), (2, 2))
    assert result.points == (3, 0) and after.points == (3, 0) and result.game is None


def test_honours_score_for_the_side_dealt_them_even_when_it_loses_the_tricks() -> None:
    result, after = rules.score_deal(Score(), (8, 5), (0, 4))
    assert result.points == (2, 4) and after.points == (2, 4)
    result, after = rules.score_deal(Score(), (8, 5), (1, 3))
    assert result.points == (2, 2)


def test_honours_do_not_count_at_four() -> None:
    result, after = rules.score_deal(Score(points=(1, 4)), (7, 6), (0, 4))
    assert result.points == (1, 0) and after.points == (2, 4)


def test_tricks_count_before_honours() -> None:
    # side 0 goes out on tricks: side 1's honours (which would also take it out) are not scored
    result, after = rules.score_deal(Score(points=(3, 3)), (8, 5), (0, 4))
    assert result.game == 0 and result.points == (2, 0)
    assert after.points == (0, 0) and after.games == (1, 0)


def test_game_values_and_the_rubber() -> None:
    r1, s1 = rules.score_deal(Score(), (13, 0), (2, 2))  # 7 points against 0: a treble
    assert (r1.game, r1.value, r1.rubber) == (0, 3, None) and s1.total == (3, 0) and s1.game == 2
    r2, s2 = rules.score_deal(Score(points=(4, 2), games=(1, 0), total=(3, 0)), (7, 6), (2, 2))
    assert (r2.game, r2.value, r2.rubber) == (0, 2, 0)
    assert s2.total == (3 + 2 + 2, 0) and s2.games == (0, 0) and s2.rubber == 2
    r3, _ = rules.score_deal(Score(points=(3, 4)), (6, 7), (2, 2))
    assert (r3.game, r3.value) == (1, 1)


def test_a_game_can_be_won_on_honours() -> None:
    result, after = rules.score_deal(Score(points=(2, 3)), (7, 6), (0, 4))
    assert result.game == 1 and result.points == (1, 4) and after.games == (0, 1)


# ------------------------------------------------------------------------------ the shuffle


def test_shuffle_is_a_permutation_and_depends_on_every_seed() -> None:
    deck = rules.shuffle(seed(1))
    assert sorted(deck) == sorted(rules.full_deck()) and len(set(deck)) == 52
    a = rules.deck_seed("t1.1", {"a" * 24: seed(2), "b" * 24: seed(3)})
    b = rules.deck_seed("t1.1", {"a" * 24: seed(2), "b" * 24: seed(4)})
    c = rules.deck_seed("t1.2", {"a" * 24: seed(2), "b" * 24: seed(3)})
    assert len({a, b, c}) == 3
    with pytest.raises(ValueError):
        rules.shuffle("not hex")


def test_shuffle_spreads_cards_evenly() -> None:
    """Where the ace of spades lands over 5200 seeds: each of the 52 places about 100 times."""
    where = Counter(rules.shuffle(seed(10_000 + i)).index("AS") for i in range(5200))
    assert len(where) == 52
    chi2 = sum((n - 100) ** 2 / 100 for n in where.values())
    assert chi2 < 100  # 51 degrees of freedom: p < 1e-4 beyond 90


def test_deal_gives_thirteen_each_and_the_dealer_the_turn_up() -> None:
    deck = rules.shuffle(seed(5))
    hands = rules.deal_hands(deck, 2)
    assert [len(h) for h in hands] == [13] * 4
    assert deck[51] in hands[2] and deck[0] in hands[3]


# ------------------------------------------------------------------------------ whole deals, bots


def test_a_whole_deal() -> None:
    d = rules.play_out(rules.shuffle(seed(6)), 1)
    assert d.over and sum(d.taken) == 13 and len(d.tricks) == 13
    assert sorted(c for t in d.tricks for c in t["cards"]) == sorted(rules.full_deck())
    assert d.tricks[0]["leader"] == 2
    for before, after in zip(d.tricks, d.tricks[1:], strict=False):
        assert after["leader"] == before["winner"]


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(0, 3))
def test_bots_never_play_illegally(raw: bytes, dealer: int) -> None:
    d = Deal.from_deck(rules.shuffle(raw.hex()), dealer)
    while not d.over:
        seat = d.turn
        card = rules.bot_play(d.hand(seat), d.trick, d.trump)
        assert card in rules.legal_moves(d.hand(seat), d.trick)
        d.play(seat, card)  # Deal.play would raise IllegalMove too


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(0, 3), st.integers(0, 51))
def test_bots_follow_suit_from_any_position(raw: bytes, dealer: int, stop: int) -> None:
    d = rules.play_out(rules.shuffle(raw.hex()), dealer)
    replayed = Deal.from_deck(rules.shuffle(raw.hex()), dealer)
    for t in d.tricks[: stop // 4]:
        for i, card in enumerate(t["cards"]):
            assert card in replayed.legal((replayed.leader + i) % 4)
            replayed.play((replayed.leader + i) % 4, card)


# ------------------------------------------------------------------------------ golden vectors


def test_vectors_sha_uids_commitments() -> None:
    for v in VECTORS["sha256"]:
        assert rules.sha256_hex(v["text"]) == v["hex"]
        assert v["hex"] == hashlib.sha256(v["text"].encode()).hexdigest()
    for v in VECTORS["uids"]:
        assert rules.uid_of(v["key"]) == v["uid"]
    for v in VECTORS["commitments"]:
        assert rules.commitment(v["deal"], v["uid"], v["seed"]) == v["c"]
    for v in VECTORS["deck_seeds"]:
        assert rules.deck_seed(v["deal"], v["seeds"]) == v["hex"]


def test_vectors_shuffles_moves_winners_bots() -> None:
    for v in VECTORS["shuffles"]:
        assert rules.shuffle(v["seed"]) == v["deck"]
        assert rules.deal_hands(v["deck"], v["dealer"]) == v["hands"]
    for v in VECTORS["legal"]:
        assert rules.legal_moves(v["hand"], v["trick"]) == v["legal"]
    for v in VECTORS["winners"]:
        assert rules.trick_winner(v["trick"], v["trump"]) == v["winner"]
    for v in VECTORS["bots"]:
        assert rules.bot_play(v["hand"], v["trick"], v["trump"]) == v["card"]


def test_vectors_scoring_and_deals() -> None:
    for v in VECTORS["scoring"]:
        result, after = rules.score_deal(Score.from_json(v["before"]), v["tricks"], v["honours"])
        assert result.to_json() == v["result"] and after.to_json() == v["after"]
    for v in VECTORS["deals"]:
        d = rules.play_out(rules.shuffle(v["seed"]), v["dealer"])
        honours = rules.honours_held(d.hands, d.trump)
        got: dict[str, Any] = {"tricks": d.tricks, "taken": d.taken, "honours": honours}
        assert json.loads(json.dumps(got)) == {k: v[k] for k in ("tricks", "taken", "honours")}
