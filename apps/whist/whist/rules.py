"""Classic (trump) whist, as pure functions: cards, the fair shuffle, legal moves, tricks, scoring, bots.

The page runs the same rules in JavaScript (``apps/whist/rules.mjs``); both are held together by the
golden vectors in ``tests/vectors/whist.json`` (deals, legal moves, trick winners, scores, bot
choices, whole deals), checked by pytest here and by ``node --test`` there. Change one side, change
the other, regenerate the vectors with ``tests/vectors/make_whist_vectors.py``.

Cards are two-character strings, rank then suit: ``"AS"`` is the ace of spades, ``"TD"`` the ten of
diamonds. Seats are 0..3 = North, East, South, West, clockwise; North-South (0, 2) is side 0,
East-West (1, 3) side 1.

Scoring is English short whist: the side that takes more than six tricks scores one point per trick
over six; a side dealt three of the four trump honours (A K Q J) scores 2, all four 4, unless it
stood at 4 points before the deal; tricks count before honours. Five points win a game, worth 3
(losers at 0), 2 (losers at 1-2) or 1 (losers at 3-4); two games win the rubber, worth 2 more.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

SUITS = "CDHS"
RANKS = "23456789TJQKA"
SEAT_NAMES = ("North", "East", "South", "West")
SEAT_LETTERS = "NESW"
CARD_RE = re.compile(r"^[2-9TJQKA][CDHS]$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
UID_RE = re.compile(r"^[0-9a-f]{24}$")
DEAL_ID_RE = re.compile(r"^[A-Za-z0-9.-]{1,64}$")
HONOURS = ("A", "K", "Q", "J")
GAME_POINTS = 5
TRICKS = 13


class IllegalMove(ValueError):
    """A play the rules refuse, with the reason in the message."""


# ------------------------------------------------------------------------------------------ cards


def is_card(x: object) -> bool:
    return isinstance(x, str) and CARD_RE.match(x) is not None


def suit(card: str) -> str:
    return card[1]


def rank(card: str) -> int:
    """0 for a two, 12 for an ace."""
    return RANKS.index(card[0])


def card_index(card: str) -> int:
    """Position in the canonical deck: clubs 2..A, diamonds, hearts, spades."""
    return SUITS.index(card[1]) * 13 + RANKS.index(card[0])


def full_deck() -> list[str]:
    return [r + s for s in SUITS for r in RANKS]


def sort_cards(cards: Iterable[str]) -> list[str]:
    return sorted(cards, key=card_index)


def side_of(seat: int) -> int:
    return seat % 2


def partner(seat: int) -> int:
    return (seat + 2) % 4


# ------------------------------------------------------------------------------- fair shuffle


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def uid_of(key: str) -> str:
    """The public seat id for a secret seat key (64 hex): who knows the key owns the seat."""
    return sha256_hex("whist/uid/v1\n" + key)[:24]


def commitment(deal_id: str, uid: str, seed: str) -> str:
    """What a contributor publishes before anyone reveals: binds its seed to this deal and to it."""
    return sha256_hex(f"whist/commit/v1\n{deal_id}\n{uid}\n{seed}")


def deck_seed(deal_id: str, seeds: Mapping[str, str]) -> str:
    """The deck's seed: every contributor's seed, in uid order, hashed with the deal id."""
    lines = "".join(f"{uid}:{seeds[uid]}\n" for uid in sorted(seeds))
    return sha256_hex(f"whist/deck/v1\n{deal_id}\n{lines}")


class _Stream:
    """32-bit big-endian words from SHA-256(seed bytes || counter u32be), block after block."""

    def __init__(self, seed_hex: str) -> None:
        self.seed = bytes.fromhex(seed_hex)
        self.block = 0
        self.words: list[int] = []

    def next(self) -> int:
        if not self.words:
            digest = hashlib.sha256(self.seed + self.block.to_bytes(4, "big")).digest()
            self.block += 1
            self.words = [int.from_bytes(digest[i : i + 4], "big") for i in range(28, -1, -4)]
        return self.words.pop()


def shuffle(seed_hex: str) -> list[str]:
    """Fisher-Yates over the canonical deck, driven by the seed's stream (rejection sampled)."""
    if not HEX64_RE.match(seed_hex):
        raise ValueError("a deck seed is 64 lower-case hex digits")
    deck = full_deck()
    stream = _Stream(seed_hex)
    for i in range(51, 0, -1):
        n = i + 1
        limit = (1 << 32) // n * n
        x = stream.next()
        while x >= limit:
            x = stream.next()
        j = x % n
        deck[i], deck[j] = deck[j], deck[i]
    return deck


def deal_hands(deck: Sequence[str], dealer: int) -> list[list[str]]:
    """One card at a time clockwise from the dealer's left; the last card (the dealer's) is the
    turn-up that names trumps. Hands come back sorted."""
    hands: list[list[str]] = [[], [], [], []]
    for k, card in enumerate(deck):
        hands[(dealer + 1 + k) % 4].append(card)
    return [sort_cards(h) for h in hands]


# ------------------------------------------------------------------------------------- tricks


def legal_moves(hand: Sequence[str], trick: Sequence[str]) -> list[str]:
    """Any card to lead; otherwise follow suit when you can."""
    if not trick:
        return list(hand)
    led = suit(trick[0])
    follow = [c for c in hand if suit(c) == led]
    return follow or list(hand)


def trick_winner(trick: Sequence[str], trump: str) -> int:
    """Index (from the leader) of the winning card: the highest trump, else the highest of the suit led."""
    best = 0
    for i in range(1, len(trick)):
        c, b = trick[i], trick[best]
        if suit(c) == suit(b):
            if rank(c) > rank(b):
                best = i
        elif suit(c) == trump:
            best = i
    return best


def honours_held(hands: Sequence[Sequence[str]], trump: str) -> list[int]:
    """How many of the trump A K Q J each side was dealt."""
    out = [0, 0]
    for seat, hand in enumerate(hands):
        out[side_of(seat)] += sum(1 for c in hand if suit(c) == trump and c[0] in HONOURS)
    return out


# ------------------------------------------------------------------------------------ scoring


@dataclass(frozen=True)
class Score:
    points: tuple[int, int] = (0, 0)
    """This game's points, per side."""
    games: tuple[int, int] = (0, 0)
    """Games won in this rubber."""
    total: tuple[int, int] = (0, 0)
    """Game values and rubber bonuses so far."""
    game: int = 1
    rubber: int = 1

    def to_json(self) -> dict[str, object]:
        return {"points": list(self.points), "games": list(self.games), "total": list(self.total),
                "game": self.game, "rubber": self.rubber}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Score:
        def pair(key: str) -> tuple[int, int]:
            v = data.get(key)
            if not (isinstance(v, list) and len(v) == 2 and all(_nat(x) for x in v)):
                raise ValueError(f"score.{key} must be two counts")
            return (int(v[0]), int(v[1]))

        game, rubber = data.get("game"), data.get("rubber")
        if not (_nat(game) and _nat(rubber)):
            raise ValueError("score.game and score.rubber must be counts")
        assert isinstance(game, int) and isinstance(rubber, int)
        return cls(pair("points"), pair("games"), pair("total"), game, rubber)


def _nat(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1_000_000


@dataclass(frozen=True)
class DealResult:
    tricks: tuple[int, int]
    honours: tuple[int, int]
    points: tuple[int, int]
    """Points scored by each side on this deal (tricks, then honours)."""
    game: int | None = None
    """The side that won the game on this deal, if one did."""
    value: int = 0
    rubber: int | None = None

    def to_json(self) -> dict[str, object]:
        return {"tricks": list(self.tricks), "honours": list(self.honours), "points": list(self.points),
                "game": self.game, "value": self.value, "rubber": self.rubber}


def score_deal(before: Score, tricks: Sequence[int], honours: Sequence[int]) -> tuple[DealResult, Score]:
    """Score one finished deal: ``tricks`` and ``honours`` per side."""
    if sum(tricks) != TRICKS:
        raise ValueError("a deal has 13 tricks")
    pts = list(before.points)
    got = [0, 0]
    winner = 0 if tricks[0] > tricks[1] else 1
    odd = tricks[winner] - 6
    pts[winner] += odd
    got[winner] += odd
    game: int | None = winner if pts[winner] >= GAME_POINTS else None
    if game is None:
        for side in (0, 1):
            bonus = 4 if honours[side] == 4 else 2 if honours[side] == 3 else 0
            if bonus and before.points[side] != GAME_POINTS - 1:
                pts[side] += bonus
                got[side] += bonus
        if pts[0] >= GAME_POINTS or pts[1] >= GAME_POINTS:
            game = 0 if pts[0] >= GAME_POINTS else 1
    result_pts = (got[0], got[1])
    if game is None:
        return (DealResult((tricks[0], tricks[1]), (honours[0], honours[1]), result_pts),
                Score((pts[0], pts[1]), before.games, before.total, before.game, before.rubber))
    loser = pts[1 - game]
    value = 3 if loser == 0 else 2 if loser <= 2 else 1
    games = list(before.games)
    total = list(before.total)
    games[game] += 1
    total[game] += value
    rubber: int | None = None
    next_rubber = before.rubber
    if games[game] == 2:
        rubber = game
        total[game] += 2
        games = [0, 0]
        next_rubber += 1
    return (DealResult((tricks[0], tricks[1]), (honours[0], honours[1]), result_pts, game, value, rubber),
            Score((0, 0), (games[0], games[1]), (total[0], total[1]), before.game + 1, next_rubber))


# ------------------------------------------------------------------------------------ one deal


@dataclass
class Deal:
    """One deal in play: the hands as dealt, the tricks so far, whose turn."""

    dealer: int
    hands: list[list[str]]
    turnup: str
    played: list[list[str]] = field(default_factory=lambda: [[], [], [], []])
    tricks: list[dict[str, object]] = field(default_factory=list)
    trick: list[str] = field(default_factory=list)
    leader: int = -1
    taken: list[int] = field(default_factory=lambda: [0, 0])

    @classmethod
    def from_deck(cls, deck: Sequence[str], dealer: int) -> Deal:
        d = cls(dealer, deal_hands(deck, dealer), deck[51])
        d.leader = (dealer + 1) % 4
        return d

    @property
    def trump(self) -> str:
        return suit(self.turnup)

    @property
    def turn(self) -> int:
        return -1 if self.over else (self.leader + len(self.trick)) % 4

    @property
    def over(self) -> bool:
        return len(self.tricks) == TRICKS

    def hand(self, seat: int) -> list[str]:
        """What ``seat`` still holds."""
        gone = set(self.played[seat])
        return [c for c in self.hands[seat] if c not in gone]

    def legal(self, seat: int) -> list[str]:
        return legal_moves(self.hand(seat), self.trick) if seat == self.turn else []

    def play(self, seat: int, card: str) -> dict[str, object] | None:
        """Play ``card`` from ``seat``; returns the finished trick when this card ends one."""
        if self.over:
            raise IllegalMove("the deal is over")
        if seat != self.turn:
            raise IllegalMove(f"it is {SEAT_NAMES[self.turn]}'s turn, not {SEAT_NAMES[seat]}'s")
        if card not in self.hand(seat):
            raise IllegalMove(f"{card} is not in {SEAT_NAMES[seat]}'s hand")
        if card not in legal_moves(self.hand(seat), self.trick):
            raise IllegalMove(f"{card} does not follow suit ({suit(self.trick[0])} led)")
        self.played[seat].append(card)
        self.trick.append(card)
        if len(self.trick) < 4:
            return None
        win = (self.leader + trick_winner(self.trick, self.trump)) % 4
        done: dict[str, object] = {"leader": self.leader, "cards": list(self.trick), "winner": win}
        self.tricks.append(done)
        self.taken[side_of(win)] += 1
        self.trick = []
        self.leader = win
        return done


# ---------------------------------------------------------------------------------------- bots


def _low(cards: Iterable[str]) -> str:
    return min(cards, key=lambda c: (rank(c), SUITS.index(suit(c))))


def _high(cards: Iterable[str]) -> str:
    return max(cards, key=lambda c: (rank(c), SUITS.index(suit(c))))


def bot_play(hand: Sequence[str], trick: Sequence[str], trump: str) -> str:
    """A plain, deterministic player: leads the ace (or king from K-Q) of its longest plain suit,
    else that suit's lowest; second hand low; third and fourth hand win as cheaply as possible
    unless the partner already wins; when void, trumps the cheapest way past the opponents or
    throws its lowest plain card."""
    legal = legal_moves(hand, trick)
    if len(legal) == 1:
        return legal[0]
    if not trick:
        plain = [s for s in SUITS if s != trump and any(suit(c) == s for c in hand)]
        pool = plain or [trump]

        def length_key(s: str) -> tuple[int, int, int]:
            cards = [c for c in hand if suit(c) == s]
            return (len(cards), max(rank(c) for c in cards), SUITS.index(s))

        lead_suit = max(pool, key=length_key)
        cards = [c for c in hand if suit(c) == lead_suit]
        ranks = {c[0] for c in cards}
        if "A" in ranks:
            return "A" + lead_suit
        if "K" in ranks and "Q" in ranks:
            return "K" + lead_suit
        return _low(cards)
    led = suit(trick[0])
    w = trick_winner(trick, trump)
    best = trick[w]
    partner_wins = len(trick) >= 2 and w == len(trick) - 2
    if any(suit(c) == led for c in hand):
        if partner_wins or len(trick) == 1:
            return _low(legal)
        beats = [c for c in legal if suit(best) == led and rank(c) > rank(best)]
        return _low(beats) if beats else _low(legal)
    trumps = [c for c in legal if suit(c) == trump]
    plain = [c for c in legal if suit(c) != trump]
    if partner_wins:
        return _low(plain or trumps)
    top = max((rank(c) for c in trick if suit(c) == trump), default=-1)
    over = [c for c in trumps if rank(c) > top]
    if over:
        return _low(over)
    return _low(plain or trumps)


def play_out(deck: Sequence[str], dealer: int) -> Deal:
    """A whole deal played by four bots (for tests, vectors and the kibitzer's what-ifs)."""
    d = Deal.from_deck(deck, dealer)
    while not d.over:
        seat = d.turn
        d.play(seat, bot_play(d.hand(seat), d.trick, d.trump))
    return d


__all__ = [
    "CARD_RE", "DEAL_ID_RE", "GAME_POINTS", "HEX64_RE", "RANKS", "SEAT_LETTERS", "SEAT_NAMES", "SUITS",
    "TRICKS", "UID_RE", "Deal", "DealResult", "IllegalMove", "Score", "bot_play", "card_index",
    "commitment", "deal_hands", "deck_seed", "full_deck", "honours_held", "is_card", "legal_moves",
    "partner", "play_out", "rank", "score_deal", "sha256_hex", "shuffle", "side_of", "sort_cards", "suit",
    "trick_winner", "uid_of",
]
