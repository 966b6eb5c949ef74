"""The table's authority (the dealer): seats, the fair deal, moves, bots, scores, watchers.

One client of the room runs this: the room's host, else the person with the lowest seat uid
(:func:`whist.port.elect`). It validates every request, broadcasts the public state (``state``, a
new version on every change) and sends each hand only to its player (and to a watcher that player
allowed), with ``sendTo``. The deal is a commit-reveal shuffle: every seated person and the dealer
commit to a random seed (the commitments go to everyone), then hand their seed to the dealer only;
the deck is a hash of all the seeds; at the end of the deal the dealer reveals the seeds and every
client re-derives the deal and checks it against what it saw (``whist.verify``).

``apps/whist/dealer.mjs`` is the same class in JavaScript, line for line; the transcripts in
``tests/vectors/whist.json`` hold the two to the same messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .port import Cancel, Options, Port, uid_in_roster, watch_request
from .rules import (
    Deal,
    DealResult,
    IllegalMove,
    Score,
    bot_play,
    commitment,
    deck_seed,
    honours_held,
    score_deal,
    shuffle,
    uid_of,
)
from .wire import Json, msg

SIT_ORDER = (2, 0, 1, 3)
MAX_PENDING = 8


class Outbox(Protocol):
    def send(self, member: str, data: Json) -> bool:
        """Directed; False when the room refused it (the peer left, or may not receive it)."""
        ...

    def broadcast(self, data: Json) -> None: ...


@dataclass
class Seat:
    uid: str | None = None
    name: str = ""
    away: bool = False
    leaving: bool = False
    next: str | None = None

    def to_json(self) -> Json:
        return {"uid": self.uid, "name": self.name, "away": self.away or self.leaving, "next": self.next}


class Dealer:
    def __init__(
        self,
        port: Port,
        out: Outbox,
        uid: str,
        options: Options,
        schedule: Callable[[float, Callable[[], None]], Cancel],
        adopt: Mapping[str, Any] | None = None,
    ) -> None:
        self.port = port
        self.out = out
        self.uid = uid
        self.opts = options
        self.schedule = schedule
        self.me = port.self_id()
        self.table = "t" + port.random_hex(4)
        self.v = 0
        self.seats = [Seat() for _ in range(4)]
        self.score = Score()
        self.deal_no = 0
        self.dealer_seat = 3
        self.members: dict[str, str] = {self.me: uid}
        self.names: dict[str, str] = {}
        self.present: dict[str, Mapping[str, Any]] = {}
        self.pending: dict[str, list[Json]] = {}
        self.phase = "idle"
        self.attempt = 0
        self.deal_id = ""
        self.contributors: list[str] = []
        self.commits: dict[str, str] = {}
        self.seeds: dict[str, str] = {}
        self.excluded: set[str] = set()
        self.game: Deal | None = None
        self.result: DealResult | None = None
        self.allowed: dict[str, int] = {}
        self.hands_sent: set[str] = set()
        self.timer: Cancel | None = None
        self.turn_timer: Cancel | None = None
        self.turn_key = ""
        self.changed = True
        self.refused = 0
        if adopt is not None:
            self._adopt(adopt)

    # ------------------------------------------------------------------ state

    def _adopt(self, pub: Mapping[str, Any]) -> None:
        """Take over from a dealer that left: seats and scores carry on; a deal in play is void and
        dealt again (its hands and seeds left with the old dealer)."""
        self.v = int(pub["v"])
        for i, s in enumerate(pub["seats"]):
            self.seats[i] = Seat(s.get("uid"), str(s["name"]), False, False, s.get("next"))
        self.score = Score.from_json(pub["score"])
        deal = pub["deal"]
        if deal is not None:
            self.deal_no = int(deal["no"])
            self.dealer_seat = int(deal["dealer"])
            if deal["phase"] != "done":
                self.deal_no -= 1
                self.dealer_seat = (self.dealer_seat + 3) % 4

    def take_over(self, pub: Mapping[str, Any]) -> None:
        """The dealer before us handed the table over (someone with a lower uid, us, arrived): carry
        on with its seats and scores, unless we have dealt already."""
        if self.deal_no != 0 or self.phase != "idle" or self.score != Score():
            return
        members = sorted(self.members.items())
        sat = [(s.uid, mid) for s in self.seats for mid, u in members if s.uid and u == s.uid]
        self._adopt(pub)
        here = set(self.members.values())
        for s in self.seats:
            s.away = s.uid is not None and s.uid not in here
        for uid, mid in sat:  # who sat with us before the handover keeps a seat
            if self._seat_of(uid) is None:
                self._sit(mid, uid, -1)
        self.changed = True
        self._maybe_start()

    def pub(self) -> Json:
        g = self.game
        deal: Json | None = None
        if self.phase != "idle":
            deal = {
                "id": self.deal_id,
                "no": self.deal_no,
                "dealer": self.dealer_seat,
                "phase": self.phase,
                "contributors": list(self.contributors),
                "commits": {u: self.commits[u] for u in sorted(self.commits)},
                "turnup": g.turnup if g else None,
                "leader": g.leader if g else -1,
                "turn": g.turn if g else -1,
                "trick": list(g.trick) if g else [],
                "tricks": [dict(t) for t in g.tricks] if g else [],
                "taken": list(g.taken) if g else [0, 0],
                "result": self.result.to_json() if self.result else None,
                "reveal": {u: self.seeds[u] for u in sorted(self.seeds)} if self.phase == "done" else None,
            }
        return {
            "table": self.table,
            "v": self.v,
            "auth": self.uid,
            "seats": [s.to_json() for s in self.seats],
            "here": sorted(set(self.members.values())),
            "score": self.score.to_json(),
            "deal": deal,
            "watchers": [{"id": w, "seat": s} for w, s in sorted(self.allowed.items())],
        }

    def flush(self) -> None:
        """Broadcast the public state once per handled event, if it changed."""
        if self.changed:
            self.changed = False
            self.v += 1
            self.out.broadcast(msg("state", pub=self.pub()))

    def stop(self) -> None:
        for t in (self.timer, self.turn_timer):
            if t is not None:
                t.cancel()
        self.timer = self.turn_timer = None

    # ------------------------------------------------------------------ the room

    def on_roster(self, people: Sequence[Mapping[str, Any]]) -> None:
        before = set(self.present)
        self.present = {str(p.get("id")): p for p in people}
        if set(self.present) - before:
            self.changed = True  # someone new needs the state
        for mid in list(self.members):
            if mid not in self.present:
                del self.members[mid]
        for mid in list(self.pending):
            if mid not in self.present:
                del self.pending[mid]
        for w in list(self.allowed):
            p = self.present.get(w)
            if p is None or watch_request(p) != self.allowed[w]:
                del self.allowed[w]
                self.changed = True
        here = set(self.members.values())
        for s in self.seats:
            away = s.uid is not None and s.uid not in here
            if away != s.away:
                s.away = away
                self.changed = True
        if self.phase in ("commit", "seed") and any(u not in here for u in self.contributors):
            self._attempt()
        for mid in list(self.pending):
            if uid_in_roster(self.present[mid]) is not None:
                for m in self.pending.pop(mid):
                    self._handle(mid, m)
        self._send_watchers()
        self._schedule_turn()
        self._maybe_start()

    def on_message(self, frm: str, m: Json) -> None:
        self._handle(frm, m)
        self._maybe_start()

    def _maybe_start(self) -> None:
        if self.phase == "idle" and self.timer is None and any(
            s.uid is not None and not s.away for s in self.seats
        ):
            self._arm(self.opts.start_delay, self._next_deal)

    def _handle(self, frm: str, m: Json) -> None:
        t = m["t"]
        if frm not in self.present or (t == "hello" and uid_in_roster(self.present[frm]) is None):
            queue = self.pending.setdefault(frm, [])
            if len(queue) < MAX_PENDING:
                queue.append(m)
            return
        if t == "hello":
            self._hello(frm, m)
            return
        uid = self.members.get(frm)
        if uid is None:
            self._refuse(frm, "hello", "say hello first")
            return
        if t == "sit":
            self._sit(frm, uid, int(m["seat"]))
        elif t == "stand":
            self._stand(uid)
        elif t == "commit":
            self._commit(uid, m)
        elif t == "seed":
            self._seed(frm, uid, m)
        elif t == "play":
            self._play(frm, uid, m)
        elif t == "newgame":
            if self._seat_of(uid) is None and not self._is_host(frm):
                self._refuse(frm, "newgame", "only a player or the host can start a new game")
                return
            self.score = Score()
            self.deal_no = 0
            self.dealer_seat = 3
            self._next_deal()
        elif t == "next":
            if self.phase == "done" and (self._seat_of(uid) is not None or self._is_host(frm)):
                self._next_deal()
        elif t == "allow":
            self._allow(frm, uid, str(m["watcher"]), int(m["seat"]))
        elif t == "revoke":
            w = str(m["watcher"])
            if w in self.allowed and self._may_allow(frm, uid, self.allowed[w]):
                del self.allowed[w]
                self.changed = True

    # ------------------------------------------------------------------ requests

    def _hello(self, frm: str, m: Json) -> None:
        uid = str(m["uid"])
        if uid_in_roster(self.present[frm]) != uid or uid_of(str(m["key"])) != uid:
            self._refuse(frm, "hello", "that seat key does not match your uid")
            return
        for mid, u in list(self.members.items()):
            if u == uid and mid != frm:
                del self.members[mid]
        self.members[frm] = uid
        self.names[uid] = str(self.present[frm].get("name") or "")[:64]
        self.changed = True
        seat = self._seat_of(uid)
        if seat is not None:
            self.seats[seat].away = False
            self.seats[seat].name = self.names[uid]
            if self.phase == "play":
                self._send_hand(frm, seat)
            self._schedule_turn()

    def _sit(self, frm: str, uid: str, seat: int) -> None:
        current = self._seat_of(uid)
        if seat == -1:
            if current is not None or any(s.next == uid for s in self.seats):
                return
            free = [i for i in SIT_ORDER if self.seats[i].uid is None and self.seats[i].next is None]
            if not free:
                self._refuse(frm, "sit", "every seat is taken")
                return
            seat = free[0]
        if current == seat:
            return
        target = self.seats[seat]
        if (target.uid is not None and not target.leaving) or target.next not in (None, uid):
            self._refuse(frm, "sit", "that seat is taken")
            return
        for s in self.seats:
            if s.next == uid:
                s.next = None
        self.changed = True
        if self.phase in ("idle", "done") and target.uid is None:
            if current is not None:
                self._free(current)
            target.uid, target.name, target.away = uid, self.names.get(uid, ""), False
        else:
            target.next = uid

    def _stand(self, uid: str) -> None:
        for s in self.seats:
            if s.next == uid:
                s.next = None
                self.changed = True
        seat = self._seat_of(uid)
        if seat is None:
            return
        self.changed = True
        if self.phase in ("idle", "done"):
            self._free(seat)
        else:
            self.seats[seat].leaving = True
            self._schedule_turn()

    def _commit(self, uid: str, m: Json) -> None:
        if (self.phase != "commit" or m["deal"] != self.deal_id or m["uid"] != uid
                or uid not in self.contributors or uid in self.commits):
            return
        self.commits[uid] = str(m["c"])
        self.changed = True
        self._advance()

    def _seed(self, frm: str, uid: str, m: Json) -> None:
        if self.phase != "seed" or m["deal"] != self.deal_id:
            return
        if uid not in self.contributors or uid in self.seeds:
            return
        if commitment(self.deal_id, uid, str(m["seed"])) != self.commits.get(uid):
            self._refuse(frm, "seed", "that seed does not match your commitment")
            return
        self.seeds[uid] = str(m["seed"])
        self._advance()

    def _play(self, frm: str, uid: str, m: Json) -> None:
        g = self.game
        if self.phase != "play" or g is None or m["deal"] != self.deal_id:
            self._refuse(frm, "play", "no deal in play")
            return
        seat = self._seat_of(uid)
        if seat is None or seat != g.turn or self.seats[seat].leaving:
            self._refuse(frm, "play", "it is not your turn")
            return
        try:
            g.play(seat, str(m["card"]))
        except IllegalMove as exc:
            self._refuse(frm, "play", str(exc))
            return
        self._after_play()

    def _allow(self, frm: str, uid: str, watcher: str, seat: int) -> None:
        p = self.present.get(watcher)
        if p is None or watch_request(p) != seat:
            self._refuse(frm, "allow", "no watcher asks for that seat")
            return
        if not self._may_allow(frm, uid, seat):
            self._refuse(frm, "allow", "only that seat's player (or the host) can let it watch")
            return
        if self.allowed.get(watcher) != seat:
            self.allowed[watcher] = seat
            self.changed = True
        self._send_watchers()

    def _may_allow(self, frm: str, uid: str, seat: int) -> bool:
        holder = self.seats[seat].uid
        if holder is not None:
            return holder == uid or self._is_host(frm)
        hosted = any(p.get("role") == "host" for p in self.present.values())
        return self._is_host(frm) or (not hosted and frm == self.me)

    # ------------------------------------------------------------------ the deal

    def _next_deal(self) -> None:
        """Seat who was waiting, free who stood up, then deal the next hand (or wait for people)."""
        self._disarm()
        for i in range(4):
            if self.seats[i].leaving:
                self._free(i)
            s = self.seats[i]
            if s.next is not None and s.uid is None:
                s.uid, s.name, s.next = s.next, self.names.get(s.next, ""), None
                s.away = s.uid not in self.members.values()
        self.changed = True
        if not any(s.uid is not None and not s.away for s in self.seats):
            self.phase, self.game, self.result = "idle", None, None
            return
        self.deal_no += 1
        self.dealer_seat = (self.dealer_seat + 1) % 4
        self.excluded = set()
        self._attempt()

    def _attempt(self) -> None:
        """Open a commit round for the current deal (again, without whoever did not answer)."""
        self._disarm()
        self.attempt += 1
        self.deal_id = f"{self.table}.{self.attempt}"
        here = set(self.members.values())
        seated = {s.uid for s in self.seats if s.uid is not None}
        people = {u for u in seated if u in here and u not in self.excluded}
        self.contributors = sorted(people | {self.uid})
        seed = self.port.random_hex(32)
        self.seeds = {self.uid: seed}
        self.commits = {self.uid: commitment(self.deal_id, self.uid, seed)}
        self.phase, self.game, self.result = "commit", None, None
        self.hands_sent = set()
        self.changed = True
        self._arm(self.opts.phase_timeout, self._phase_timeout)
        self._advance()

    def _phase_timeout(self) -> None:
        self.timer = None
        if self.phase not in ("commit", "seed"):
            return
        got = self.commits if self.phase == "commit" else self.seeds
        self.excluded |= {u for u in self.contributors if u not in got}
        self._attempt()

    def _advance(self) -> None:
        if self.phase == "commit" and all(u in self.commits for u in self.contributors):
            self.phase = "seed"
            self.changed = True
        if self.phase == "seed" and all(u in self.seeds for u in self.contributors):
            self._begin_play()

    def make_deal(self, deck: list[str]) -> Deal:
        """The deal from the shuffled deck (a tampered dealer overrides this in the tests)."""
        return Deal.from_deck(deck, self.dealer_seat)

    def _begin_play(self) -> None:
        self._disarm()
        self.game = self.make_deal(shuffle(deck_seed(self.deal_id, self.seeds)))
        self.phase = "play"
        self.changed = True
        for seat, s in enumerate(self.seats):
            if s.uid is None:
                continue
            for mid, u in sorted(self.members.items()):
                if u == s.uid:
                    self._send_hand(mid, seat)
        self._send_watchers()
        self._schedule_turn()

    def _send_hand(self, member: str, seat: int) -> None:
        g = self.game
        key = f"{member}|{self.deal_id}|{seat}"
        if g is None or key in self.hands_sent:
            return
        hand = msg("hand", table=self.table, deal=self.deal_id, seat=seat, cards=list(g.hands[seat]))
        if self.out.send(member, hand):
            self.hands_sent.add(key)

    def _send_watchers(self) -> None:
        if self.phase == "play":
            for w, seat in sorted(self.allowed.items()):
                self._send_hand(w, seat)

    def _after_play(self) -> None:
        g = self.game
        assert g is not None
        self.changed = True
        if g.over:
            self._finish()
        else:
            self._send_watchers()
            self._schedule_turn()

    def _finish(self) -> None:
        g = self.game
        assert g is not None
        self._cancel_turn()
        honours = honours_held(g.hands, g.trump)
        self.result, self.score = score_deal(self.score, g.taken, honours)
        self.phase = "done"
        self.changed = True
        if self.opts.auto_next:
            self._arm(self.opts.next_delay, self._next_deal)

    # ------------------------------------------------------------------ bots and turns

    def _schedule_turn(self) -> None:
        g = self.game
        if self.phase != "play" or g is None or g.over:
            self._cancel_turn()
            return
        s = self.seats[g.turn]
        if s.uid is None or s.leaving:
            delay = self.opts.bot_delay
        elif s.away:
            delay = self.opts.away_grace
        else:
            self._cancel_turn()
            return
        key = f"{self.deal_id}|{sum(len(p) for p in g.played)}|{delay}"
        if key == self.turn_key and self.turn_timer is not None:
            return
        self._cancel_turn()
        self.turn_key = key
        self.turn_timer = self.schedule(delay, self._bot_turn)

    def _bot_turn(self) -> None:
        self.turn_timer = None
        self.turn_key = ""
        g = self.game
        if self.phase != "play" or g is None or g.over:
            return
        s = self.seats[g.turn]
        if s.uid is None or s.away or s.leaving:
            g.play(g.turn, bot_play(g.hand(g.turn), g.trick, g.trump))
            self._after_play()

    def _cancel_turn(self) -> None:
        if self.turn_timer is not None:
            self.turn_timer.cancel()
        self.turn_timer = None
        self.turn_key = ""

    # ------------------------------------------------------------------ plumbing

    def _arm(self, delay: float, fn: Callable[[], None]) -> None:
        self._disarm()

        def fire() -> None:
            self.timer = None
            fn()

        self.timer = self.schedule(delay, fire)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None

    def _free(self, seat: int) -> None:
        queued = self.seats[seat].next
        self.seats[seat] = Seat(next=queued)
        for w in [w for w, s in self.allowed.items() if s == seat]:
            del self.allowed[w]

    def _seat_of(self, uid: str) -> int | None:
        for i, s in enumerate(self.seats):
            if s.uid == uid:
                return i
        return None

    def _is_host(self, member: str) -> bool:
        p = self.present.get(member)
        return p is not None and p.get("role") == "host" and uid_in_roster(p) is not None

    def _refuse(self, frm: str, code: str, text: str) -> None:
        self.refused += 1
        self.out.send(frm, msg("error", code=code, text=text))


__all__ = ["SIT_ORDER", "Dealer", "Outbox", "Seat"]
