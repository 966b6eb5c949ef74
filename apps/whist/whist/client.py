"""One seat's (or one watcher's) side of the table: what it knows and what it checks.

It keeps the dealer's newest public state, the hand the dealer sent it, its own seeds, and the
commitments other contributors sent it directly. It commits and reveals its seed when the dealer
asks, refusing to reveal when the published commitments differ from the ones it holds, and checks
every finished deal (``whist.verify``). A watcher (the kibitzer) runs the same class and sends
nothing.

``apps/whist/client.mjs`` is the same class in JavaScript.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .rules import Deal, commitment, legal_moves
from .verify import verify_deal
from .wire import Json, msg

KEEP = 6


def _trim(d: dict[str, Any]) -> None:
    while len(d) > KEEP:
        del d[next(iter(d))]


class Client:
    def __init__(
        self,
        uid: str | None,
        watch: int | None,
        rand: Callable[[int], str],
        to_dealer: Callable[[Json], object],
        broadcast: Callable[[Json], None],
    ) -> None:
        self.uid = uid
        self.watch = watch
        self.rand = rand
        self.to_dealer = to_dealer
        self.broadcast = broadcast
        self.pub: Json | None = None
        self.hands: dict[str, Json] = {}
        """deal id -> {"seat", "cards"}: the hands the dealer sent us."""
        self.seeds: dict[str, str] = {}
        self.revealed: set[str] = set()
        self.seen: dict[str, dict[str, str]] = {}
        """deal id -> uid -> the commitment that uid sent us itself."""
        self.checks: dict[str, Json] = {}
        self.last_check: Json | None = None
        self.error: Json | None = None

    # ------------------------------------------------------------------ from the dealer

    def on_state(self, pub: Json) -> bool:
        """A state from the dealer; False when it is older than the one we hold."""
        old = self.pub
        if old is not None and old["table"] == pub["table"] and pub["v"] <= old["v"]:
            return False
        self.pub = pub
        deal = pub["deal"]
        if deal is None:
            return True
        did = deal["id"]
        mine = self.uid is not None and self.uid in deal["contributors"] and self.uid != pub["auth"]
        if mine and deal["phase"] == "commit" and did not in self.seeds:
            assert self.uid is not None
            seed = self.rand(32)
            self.seeds[did] = seed
            _trim(self.seeds)
            c = commitment(did, self.uid, seed)
            self.seen.setdefault(did, {})[self.uid] = c
            _trim(self.seen)
            self.broadcast(msg("commit", deal=did, uid=self.uid, c=c))
        if mine and deal["phase"] == "seed" and did in self.seeds and did not in self.revealed:
            self.revealed.add(did)
            problem = self._commit_problem(deal)
            if problem:
                self._record({"deal": did, "ok": False, "reason": problem})
            else:
                self.to_dealer(msg("seed", deal=did, seed=self.seeds[did]))
        if deal["phase"] == "done" and deal["reveal"] is not None and did not in self.checks:
            hand = self.hands.get(did)
            self._record(verify_deal(
                deal,
                uid=self.uid,
                seed=self.seeds.get(did),
                hand=(int(hand["seat"]), list(hand["cards"])) if hand else None,
                seen_commits=self.seen.get(did),
            ))
        return True

    def _commit_problem(self, deal: Mapping[str, Any]) -> str:
        for u, c in sorted(self.seen.get(str(deal["id"]), {}).items()):
            if deal["commits"].get(u) != c:
                who = "our" if u == self.uid else f"{u}'s"
                return f"the dealer published another commitment than {who}: seed withheld"
        return ""

    def _record(self, check: Json) -> None:
        self.checks[str(check["deal"])] = check
        _trim(self.checks)
        self.last_check = check

    def on_hand(self, m: Json) -> bool:
        pub = self.pub
        seat = int(m["seat"])
        if self.watch is not None:
            ok = seat == self.watch
        else:
            ok = pub is not None and self.uid is not None and pub["seats"][seat]["uid"] == self.uid
        if not ok:
            return False
        self.hands[str(m["deal"])] = {"seat": seat, "cards": list(m["cards"])}
        _trim(self.hands)
        return True

    def on_commit(self, sender_uid: str | None, m: Json) -> None:
        """A commitment a contributor broadcast: kept to hold the dealer to it."""
        if sender_uid is None or m["uid"] != sender_uid or sender_uid == self.uid:
            return
        per = self.seen.setdefault(str(m["deal"]), {})
        if len(per) < 8:
            per.setdefault(sender_uid, str(m["c"]))
        _trim(self.seen)

    def on_error(self, m: Json) -> None:
        self.error = {"code": m["code"], "text": m["text"]}

    # ------------------------------------------------------------------ what we know

    def seat(self) -> int | None:
        if self.pub is None or self.uid is None:
            return None
        for i, s in enumerate(self.pub["seats"]):
            if s["uid"] == self.uid:
                return i
        return None

    def hand_record(self) -> Json | None:
        deal = self.pub["deal"] if self.pub else None
        return self.hands.get(deal["id"]) if deal else None

    def hand(self) -> list[str]:
        """The cards we (or the seat we watch) still hold in the deal in play."""
        rec = self.hand_record()
        if rec is None or self.pub is None:
            return []
        gone = set(played_by(self.pub["deal"], int(rec["seat"])))
        return [c for c in rec["cards"] if c not in gone]

    def legal(self) -> list[str]:
        deal = self.pub["deal"] if self.pub else None
        rec = self.hand_record()
        if deal is None or rec is None or deal["phase"] != "play" or deal["turn"] != rec["seat"]:
            return []
        if self.watch is None and self.seat() != rec["seat"]:
            return []
        return legal_moves(self.hand(), deal["trick"])


def played_by(deal: Mapping[str, Any], seat: int) -> list[str]:
    """The cards ``seat`` has played so far in ``deal`` (public: tricks and the trick on the table)."""
    out: list[str] = []
    for t in deal["tricks"]:
        i = (seat - int(t["leader"])) % 4
        out.append(str(t["cards"][i]))
    if deal["trick"]:
        i = (seat - int(deal["leader"])) % 4
        if i < len(deal["trick"]):
            out.append(str(deal["trick"][i]))
    return out


def replay(deal: Mapping[str, Any], hands: list[list[str]]) -> Deal:
    """A :class:`~whist.rules.Deal` rebuilt from public tricks (tests and what-ifs)."""
    d = Deal(int(deal["dealer"]), hands, str(deal["turnup"]))
    d.leader = (int(deal["dealer"]) + 1) % 4
    for t in deal["tricks"]:
        for i, card in enumerate(t["cards"]):
            d.play((d.leader + i) % 4, str(card))
    for i, card in enumerate(deal["trick"]):
        d.play((d.leader + i) % 4, str(card))
    return d


__all__ = ["Client", "played_by", "replay"]
