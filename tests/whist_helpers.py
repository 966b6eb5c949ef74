"""Helpers shared by the whist tests (unit on the bus and on LocalNet, e2e in Chromium)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from whist import rules
from whist.dealer import Dealer


def strings(x: Any) -> Iterator[str]:
    """Every string in a JSON value, dict keys included (to look for a card where none may be)."""
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from strings(v)


def stacked_deal(dealer: Dealer, deck: list[str]) -> rules.Deal:
    """A cheat's deal: ``dealer``'s own seat gets every spade, whatever the seeds say."""
    mine = next(i for i, s in enumerate(dealer.seats) if s.uid == dealer.uid)
    spades = iter(c for c in deck if c[1] == "S")
    rest = iter(c for c in deck if c[1] != "S")
    stacked = [next(spades) if (dealer.dealer_seat + 1 + k) % 4 == mine else next(rest) for k in range(52)]
    return rules.Deal.from_deck(stacked, dealer.dealer_seat)
