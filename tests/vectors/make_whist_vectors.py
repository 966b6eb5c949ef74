"""Write tests/vectors/whist.json: golden vectors for the whist rules and table, from the Python side.

Run ``.venv/bin/python tests/vectors/make_whist_vectors.py`` after a deliberate rules or protocol
change; tests/unit/test_whist_vectors.py (Python) and tests/js/whist.test.mjs (the page's
JavaScript, under Node) both check the file, so the two implementations cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "apps" / "whist"))

from whist import rules  # noqa: E402
from whist.scenarios import SCENARIOS, summary  # noqa: E402

OUT = Path(__file__).resolve().parent / "whist.json"


def seed_of(i: int) -> str:
    return hashlib.sha256(f"whist-vector-seed:{i}".encode()).hexdigest()


def main() -> None:
    rng = random.Random(16)
    out: dict[str, Any] = {"about": "made by tests/vectors/make_whist_vectors.py; checked in Python and Node"}
    out["sha256"] = [{"text": t, "hex": rules.sha256_hex(t)} for t in
                     ["", "abc", "whist", "Dana 🂡 Ünïcode", "x" * 200]]
    out["uids"] = [{"key": seed_of(i), "uid": rules.uid_of(seed_of(i))} for i in range(4)]
    out["commitments"] = [
        {"deal": f"t0a1b2c3d.{i}", "uid": rules.uid_of(seed_of(i)), "seed": seed_of(100 + i),
         "c": rules.commitment(f"t0a1b2c3d.{i}", rules.uid_of(seed_of(i)), seed_of(100 + i))}
        for i in range(4)
    ]
    seeds = {rules.uid_of(seed_of(i)): seed_of(200 + i) for i in range(3)}
    out["deck_seeds"] = [{"deal": "tfeed.7", "seeds": seeds, "hex": rules.deck_seed("tfeed.7", seeds)},
                         {"deal": "tfeed.8", "seeds": {}, "hex": rules.deck_seed("tfeed.8", {})}]
    out["shuffles"] = []
    for i in range(8):
        deck = rules.shuffle(seed_of(300 + i))
        dealer = i % 4
        out["shuffles"].append({"seed": seed_of(300 + i), "deck": deck, "dealer": dealer,
                                "hands": rules.deal_hands(deck, dealer), "turnup": deck[51]})
    legal, winners, bots = [], [], []
    for i in range(60):
        deck = rules.shuffle(seed_of(400 + i))
        d = rules.Deal.from_deck(deck, i % 4)
        stop = rng.randrange(0, 52)
        for _ in range(stop):
            seat = d.turn
            d.play(seat, rules.bot_play(d.hand(seat), d.trick, d.trump))
        seat = d.turn
        hand = d.hand(seat)
        legal.append({"hand": hand, "trick": list(d.trick), "legal": rules.legal_moves(hand, d.trick)})
        bots.append({"hand": hand, "trick": list(d.trick), "trump": d.trump,
                     "card": rules.bot_play(hand, d.trick, d.trump)})
        cards = rng.sample(rules.full_deck(), rng.randrange(1, 5))
        trump = rng.choice(rules.SUITS)
        winners.append({"trick": cards, "trump": trump, "winner": rules.trick_winner(cards, trump)})
    out["legal"], out["winners"], out["bots"] = legal, winners, bots
    scoring = []
    for _ in range(80):
        before = rules.Score((rng.randrange(5), rng.randrange(5)), (rng.randrange(2), rng.randrange(2)),
                             (rng.randrange(20), rng.randrange(20)), rng.randrange(1, 9), rng.randrange(1, 5))
        t0 = rng.randrange(14)
        honours = rng.choice([(0, 4), (4, 0), (3, 1), (1, 3), (2, 2), (0, 3), (3, 0)])
        result, after = rules.score_deal(before, (t0, 13 - t0), honours)
        scoring.append({"before": before.to_json(), "tricks": [t0, 13 - t0], "honours": list(honours),
                        "result": result.to_json(), "after": after.to_json()})
    out["scoring"] = scoring
    deals = []
    for i in range(6):
        deck = rules.shuffle(seed_of(500 + i))
        d = rules.play_out(deck, i % 4)
        deals.append({"seed": seed_of(500 + i), "dealer": i % 4, "tricks": d.tricks, "taken": d.taken,
                      "honours": rules.honours_held(d.hands, d.trump)})
    out["deals"] = deals
    out["scenarios"] = {name: summary(fn()) for name, fn in SCENARIOS.items()}
    OUT.write_text(json.dumps(out, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
