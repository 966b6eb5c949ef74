"""The kibitzer's brain: what it says about the plays of the seat it watches.

The kibitzer (``apps/whist/kibitzer.py``) sees what one seat's player allowed it to see: that seat's
hand and the public table. :class:`Commentator` turns the table's views into :class:`Moment` s (a
play by the watched seat, the end of a deal) and asks a :class:`Brain` for a line of chat.

:class:`RuleBrain` ships: it compares each play with what the plain bot would have done and names
the situation (forced, ruff, discard, second hand low, winning cheaply, overtaking a partner). To
plug a model in, implement ``Brain.comment`` (sync or async), or wrap a completion function in
:class:`PromptBrain`, which hands the model the same view in words and nothing more.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .client import played_by
from .rules import SEAT_NAMES, bot_play, legal_moves, partner, rank, suit, trick_winner

SUIT_SIGN = {"C": "♣", "D": "♦", "H": "♥", "S": "♠"}
SIDES = ("North–South", "East–West")


def show(card: str) -> str:
    return ("10" if card[0] == "T" else card[0]) + SUIT_SIGN[card[1]]


@dataclass(frozen=True)
class Moment:
    """Something worth a word. ``kind`` is ``"play"`` (the watched seat played ``card``) or
    ``"deal"`` (a deal ended: ``result`` and ``check`` are set)."""

    kind: str
    seat: int
    deal: str
    card: str = ""
    hand_before: tuple[str, ...] = ()
    trick_before: tuple[str, ...] = ()
    leader: int = -1
    trump: str = ""
    trick_no: int = 0
    result: Mapping[str, Any] | None = None
    check: Mapping[str, Any] | None = None


class Brain(Protocol):
    def comment(self, moment: Moment) -> str | Awaitable[str | None] | None: ...


class RuleBrain:
    """Plain rules, no model: names the play and compares it with the bot's choice."""

    def comment(self, moment: Moment) -> str | None:
        if moment.kind == "deal":
            return self._deal(moment)
        if moment.kind != "play":
            return None
        who = SEAT_NAMES[moment.seat]
        card, trump = moment.card, moment.trump
        trick, hand = list(moment.trick_before), list(moment.hand_before)
        legal = legal_moves(hand, trick)
        advice = bot_play(hand, trick, trump)
        if len(legal) == 1:
            return f"{who} {show(card)}: forced, the only legal card."
        if not trick:
            what = f"{who} leads {show(card)}"
            if card[0] == "A":
                why = "cashing an ace early."
            elif suit(card) == trump:
                why = "a trump lead, drawing the opponents' trumps."
            elif rank(card) <= 5:
                why = "a low lead from length."
            else:
                why = "a middling lead."
        else:
            led = suit(trick[0])
            best = trick_winner(trick, trump)
            partner_wins = (moment.leader + best) % 4 == partner(moment.seat)
            would_win = trick_winner([*trick, card], trump) == len(trick)
            if suit(card) != led and suit(card) == trump:
                what = f"{who} ruffs with {show(card)}"
                why = "over the partner's winner: a wasted trump." if partner_wins else "taking the trick."
            elif suit(card) != led:
                what = f"{who} throws {show(card)}"
                why = "void in " + {"C": "clubs", "D": "diamonds", "H": "hearts", "S": "spades"}[led] + "."
            elif partner_wins and would_win:
                what = f"{who} overtakes the partner with {show(card)}"
                why = "the partner was already winning."
            elif would_win:
                what = f"{who} wins with {show(card)}"
                wins = [c for c in legal if trick_winner([*trick, c], trump) == len(trick)]
                cheaper = [c for c in wins if rank(c) < rank(card)]
                low = min(cheaper, key=rank) if cheaper else None
                why = f"though {show(low)} would do." if low else "as cheaply as can be."
            elif len(trick) == 1:
                what = f"{who} plays {show(card)}"
                why = "second hand low."
            else:
                what = f"{who} follows with {show(card)}"
                why = "leaving the trick to the partner." if partner_wins else "nothing to win with."
        verdict = "Sound." if card == advice else f"I'd have played {show(advice)}."
        return f"{what}: {why} {verdict}"

    def _deal(self, moment: Moment) -> str | None:
        r = moment.result
        if r is None:
            return None
        tricks = list(r["tricks"])
        win = 0 if tricks[0] > tricks[1] else 1
        mine = moment.seat % 2
        line = f"Deal over: {SIDES[win]} took {tricks[win]} tricks"
        line += " — well played, " + SEAT_NAMES[moment.seat] + "." if win == mine else "."
        check = moment.check
        if check is not None:
            ok = bool(check.get("ok"))
            line += " The shuffle checks out." if ok else f" The deal FAILED its check: {check.get('reason')}"
        return line


class PromptBrain:
    """A model's brain: ``complete(prompt) -> text`` (sync or async) gets the watched seat's view in
    words (its hand, the trick, the play) and nothing else; an empty answer says nothing."""

    def __init__(
        self, complete: Callable[[str], str | Awaitable[str]], fallback: Brain | None = None
    ) -> None:
        self.complete = complete
        self.fallback = fallback

    def prompt(self, moment: Moment) -> str:
        who = SEAT_NAMES[moment.seat]
        if moment.kind == "deal":
            return (f"You are a kibitzer at a whist table, watching {who}. "
                    f"The deal ended: {dict(moment.result or {})}. Say one short friendly sentence.")
        trick = ", ".join(show(c) for c in moment.trick_before) or "nothing (a lead)"
        return (f"You are a kibitzer at a whist table, watching {who}. Trumps are {SUIT_SIGN[moment.trump]}. "
                f"{who} held {' '.join(show(c) for c in moment.hand_before)}; the trick so far: {trick}. "
                f"{who} played {show(moment.card)}. In one short sentence, comment on that play.")

    async def comment(self, moment: Moment) -> str | None:
        answer = self.complete(self.prompt(moment))
        text = await answer if inspect.isawaitable(answer) else answer
        text = str(text or "").strip()
        if not text and self.fallback is not None:
            fallback = self.fallback.comment(moment)
            return await fallback if inspect.isawaitable(fallback) else fallback
        return text[:400] or None


class Commentator:
    """Turns successive table views (``Table.view()``) of a watcher into :class:`Moment` s, once each."""

    def __init__(self, seat: int) -> None:
        self.seat = seat
        self.seen: dict[str, int] = {}
        """deal id -> how many of the watched seat's plays were already turned into moments."""
        self.ended: set[str] = set()

    def moments(self, view: Mapping[str, Any], dealt: Sequence[str] | None) -> list[Moment]:
        pub = view.get("pub")
        deal = pub.get("deal") if pub else None
        if not deal or not deal.get("turnup"):
            return []
        did = str(deal["id"])
        out: list[Moment] = []
        plays = played_by(deal, self.seat)
        done = self.seen.get(did, 0)
        if dealt is not None and len(plays) > done:
            n = len(plays) - 1  # only the newest play: a burst of states is one remark, not several
            card = plays[n]
            trick, leader = self._trick_of(deal, n)
            before = [c for c in dealt if c not in plays[:n]]
            out.append(Moment("play", self.seat, did, card, tuple(before), tuple(trick), leader,
                              str(deal["turnup"])[1], n + 1))
        self.seen[did] = len(plays)
        if deal["phase"] == "done" and did not in self.ended:
            self.ended.add(did)
            out.append(Moment("deal", self.seat, did, result=deal.get("result"), check=view.get("check")))
        while len(self.seen) > 8:
            del self.seen[next(iter(self.seen))]
        return out

    def _trick_of(self, deal: Mapping[str, Any], n: int) -> tuple[list[str], int]:
        """The cards on the table before the watched seat's n-th play (0-based), and who led."""
        tricks = deal["tricks"]
        if n < len(tricks):
            t = tricks[n]
            pos = (self.seat - int(t["leader"])) % 4
            return list(t["cards"][:pos]), int(t["leader"])
        pos = (self.seat - int(deal["leader"])) % 4
        return list(deal["trick"][:pos]), int(deal["leader"])


__all__ = ["Brain", "Commentator", "Moment", "PromptBrain", "RuleBrain", "show"]
