"""The end-of-deal check every client runs once the dealer reveals the seeds.

It re-derives the deck from the revealed seeds and holds the dealer to it: every seed matches the
commitment published before anyone revealed, the commitments are the ones their authors sent to
everyone, our own seed is in it unchanged, our hand is the one those seeds deal us, the turn-up is
the deck's last card, and every card played came from the hand that seeds dealt that seat and
followed suit. A dealer that stacks the deck, swaps a seed or a commitment, or lets a seat play a
card it was never dealt fails here, at every honest client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .rules import Deal, IllegalMove, commitment, deck_seed, honours_held, shuffle
from .wire import Json


def verify_deal(
    deal: Mapping[str, Any],
    *,
    uid: str | None = None,
    seed: str | None = None,
    hand: tuple[int, Sequence[str]] | None = None,
    seen_commits: Mapping[str, str] | None = None,
) -> Json:
    """``{"deal", "ok", "reason"}`` for a finished deal from the public state (with ``reveal``).

    ``uid``/``seed``: ours, when we contributed; ``hand``: (seat, cards) the dealer sent us;
    ``seen_commits``: the commitments other contributors sent us directly."""
    did = str(deal["id"])

    def bad(reason: str) -> Json:
        return {"deal": did, "ok": False, "reason": reason}

    reveal = deal.get("reveal")
    commits = deal["commits"]
    contributors = sorted(deal["contributors"])
    if not isinstance(reveal, Mapping) or sorted(reveal) != contributors or sorted(commits) != contributors:
        return bad("the revealed seeds are not the contributors' seeds")
    for u in contributors:
        if commitment(did, u, str(reveal[u])) != commits[u]:
            return bad(f"the seed revealed for {u} does not match its commitment")
    for u, c in sorted((seen_commits or {}).items()):
        if commits.get(u) != c:
            return bad(f"the dealer published another commitment for {u} than {u} sent")
    if uid is not None and seed is not None and reveal.get(uid) != seed:
        return bad("our own seed was replaced")
    deck = shuffle(deck_seed(did, {u: str(reveal[u]) for u in contributors}))
    game = Deal.from_deck(deck, int(deal["dealer"]))
    if deal.get("turnup") != game.turnup:
        return bad("the turn-up is not the last card of the deck the seeds make")
    if hand is not None and sorted(hand[1]) != sorted(game.hands[hand[0]]):
        return bad("the hand we were dealt is not the one the seeds deal us")
    for n, trick in enumerate(deal["tricks"], 1):
        if int(trick["leader"]) != game.leader:
            return bad(f"trick {n} was led by the wrong seat")
        try:
            for i, card in enumerate(trick["cards"]):
                game.play((game.leader + i) % 4, str(card))
        except IllegalMove as exc:
            return bad(f"trick {n}: {exc}")
        if game.tricks[-1]["winner"] != int(trick["winner"]):
            return bad(f"trick {n} was given to the wrong seat")
    if not game.over:
        return bad("the deal was revealed before its last trick")
    result = deal.get("result")
    if not isinstance(result, Mapping) or list(result["tricks"]) != list(game.taken) or (
        list(result["honours"]) != honours_held(game.hands, game.trump)
    ):
        return bad("the result is not what the deal's tricks and honours make")
    return {"deal": did, "ok": True, "reason": ""}


__all__ = ["verify_deal"]
