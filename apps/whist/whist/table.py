"""One client at the whist table: elects the dealer, routes messages, runs the dealer when it is us.

Feed it the room's roster (:meth:`Table.on_participants`) and app messages
(:meth:`Table.on_message`); call the actions (:meth:`play`, :meth:`sit`, ...) for the person at this
client. Messages the dealer sends to us, and ours to it when we are the dealer, go through a local
queue, so both roles see the same order as over the wire. ``apps/whist/table.mjs`` is the same in
JavaScript.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .client import Client
from .dealer import Dealer
from .port import Cancel, Options, Port, elect, uid_in_roster
from .rules import uid_of
from .wire import FROM_DEALER, TO_DEALER, Json, Malformed, check, msg


class Table:
    def __init__(
        self,
        port: Port,
        *,
        key: str | None = None,
        sit: bool = True,
        watch: int | None = None,
        options: Options | None = None,
        dealer_class: type[Dealer] = Dealer,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.port = port
        self.key = key
        self.uid = uid_of(key) if key else None
        self.want_seat = sit and self.uid is not None
        self.opts = options or Options()
        self.dealer_class = dealer_class
        self.on_change = on_change
        self.me = port.self_id()
        self.people: list[Mapping[str, Any]] = []
        self.auth: str | None = None
        self.dealer: Dealer | None = None
        self.client = Client(self.uid, watch, port.random_hex, self._to_dealer, self._broadcast)
        self.queue: deque[tuple[str, str, Json]] = deque()
        self.dropped: Counter[str] = Counter()
        self._draining = False
        self.hello_mark: tuple[str, int] = ("*", 0)
        self.hello_sent = True
        """Where we last said hello (table, version): unanswered, we say it again 5 versions on."""

    # ------------------------------------------------------------------ events in

    def on_participants(self, people: Sequence[Mapping[str, Any]]) -> None:
        self.people = list(people)
        auth = elect(self.people)
        if auth != self.auth:
            self.auth = auth
            if self.dealer is not None and auth != self.me:
                self.dealer.stop()
                if auth is not None:
                    self._send(auth, msg("handover", pub=self.dealer.pub()))
                self.dealer = None
            if auth == self.me and self.dealer is None and self.uid is not None:
                self.dealer = self.dealer_class(
                    self.port, self, self.uid, self.opts, self._schedule, adopt=self.client.pub
                )
            if auth is not None:
                self._hello()
                self.hello_mark = ("*", 0)
        elif auth is not None and not self.hello_sent:
            self._hello()  # the last one was refused (our own roster entry was not in yet): again
        if self.dealer is not None:
            self.dealer.on_roster(self.people)
        self._drain()

    def on_message(self, data: Any, frm: str) -> None:
        try:
            m = check(data)
        except Malformed as exc:
            self.dropped[str(exc)] += 1
            return
        if m is None:
            return
        self.queue.append(("in", frm, m))
        self._drain()

    # ------------------------------------------------------------------ actions

    def play(self, card: str) -> None:
        """Play ``card`` from our hand; ValueError with the reason when it is not ours to play."""
        deal = self.client.pub["deal"] if self.client.pub else None
        if deal is None or deal["phase"] != "play":
            raise ValueError("no deal in play")
        if self.client.seat() is None or deal["turn"] != self.client.seat():
            raise ValueError("it is not your turn")
        if card not in self.client.legal():
            raise ValueError(f"{card} is not a legal play now")
        self._act(msg("play", deal=deal["id"], card=card))

    def sit(self, seat: int = -1) -> None:
        self.want_seat = True
        self._act(msg("sit", seat=seat))

    def stand(self) -> None:
        self.want_seat = False
        self._act(msg("stand"))

    def new_game(self) -> None:
        self._act(msg("newgame"))

    def next_deal(self) -> None:
        self._act(msg("next"))

    def allow(self, watcher: str, seat: int) -> None:
        self._act(msg("allow", watcher=watcher, seat=seat))

    def revoke(self, watcher: str) -> None:
        self._act(msg("revoke", watcher=watcher))

    def _act(self, m: Json) -> None:
        if self.uid is None:
            raise ValueError("a watcher cannot act at the table")
        self._to_dealer(m)
        self._drain()

    # ------------------------------------------------------------------ what this seat knows

    def view(self) -> Json:
        c = self.client
        return {
            "uid": self.uid,
            "seat": c.seat(),
            "watch": c.watch,
            "dealer": self.auth,
            "isDealer": self.dealer is not None,
            "pub": c.pub,
            "hand": c.hand(),
            "legal": c.legal(),
            "check": c.last_check,
            "error": c.error,
        }

    # ------------------------------------------------------------------ routing

    def _to_dealer(self, m: Json) -> bool:
        if self.auth is None:
            return False
        if self.auth == self.me:
            self.queue.append(("dealer", self.me, m))
            return True
        return self._send(self.auth, m)

    def _send(self, peer: str, m: Json) -> bool:
        try:
            self.port.send_to(peer, m)
        except Exception as exc:  # the engine refused: the dealer left, or is not our peer yet
            self.dropped[f"send: {type(exc).__name__}"] += 1
            return False
        return True

    def _broadcast(self, m: Json) -> None:
        self.port.broadcast(m)
        if self.dealer is not None:
            self.queue.append(("dealer", self.me, m))

    # Outbox (for our dealer)
    def send(self, member: str, data: Json) -> bool:
        if member == self.me:
            self.queue.append(("client", self.me, data))
            return True
        try:
            self.port.send_to(member, data)
        except Exception as exc:
            self.dropped[f"send: {type(exc).__name__}"] += 1
            return False
        return True

    def broadcast(self, data: Json) -> None:
        self.port.broadcast(data)
        self.queue.append(("client", self.me, data))

    def _schedule(self, delay: float, fn: Callable[[], None]) -> Cancel:
        def fire() -> None:
            fn()
            self._drain()

        return self.port.call_later(delay, fire)

    def _drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        changed = False
        try:
            while True:
                if self.dealer is not None:
                    self.dealer.flush()
                if not self.queue:
                    break
                where, frm, m = self.queue.popleft()
                changed = self._deliver(where, frm, m) or changed
        finally:
            self._draining = False
        if changed and self.on_change is not None:
            self.on_change()

    def _deliver(self, where: str, frm: str, m: Json) -> bool:
        t = m["t"]
        if where == "dealer":
            if self.dealer is not None:
                self.dealer.on_message(frm, m)
            return False
        if where == "client" or t in FROM_DEALER:
            if frm != self.auth:
                self.dropped["not from the dealer"] += 1
                return False
            if t == "state":
                fresh = self.client.on_state(m["pub"])
                if fresh:
                    self._hello_again(m["pub"])
                return fresh
            if t == "hand":
                return self.client.on_hand(m)
            self.client.on_error(m)
            return True
        if t == "handover":
            if self.dealer is not None and self._uid_of_member(frm) == m["pub"]["auth"]:
                self.dealer.take_over(m["pub"])
            else:
                self.dropped["handover not for us"] += 1
            return False
        if t == "commit":
            self.client.on_commit(self._uid_of_member(frm), m)
            if self.dealer is not None:
                self.dealer.on_message(frm, m)
            return False
        if t in TO_DEALER:
            if self.dealer is None:
                self.dropped["not the dealer"] += 1
            else:
                self.dealer.on_message(frm, m)
        return False

    def _hello(self) -> None:
        if self.uid is None or self.key is None:
            return
        self.hello_sent = self._to_dealer(msg("hello", uid=self.uid, key=self.key))
        if self.want_seat and self.hello_sent:
            self._to_dealer(msg("sit", seat=-1))

    def _hello_again(self, pub: Json) -> None:
        """The dealer's state does not know us yet: our hello got lost (say, the dealer's link to us
        was not up); say it again, at most every 5 versions."""
        if self.uid is None or self.uid in pub["here"]:
            return
        table, v = self.hello_mark
        if table == "*":
            self.hello_mark = (pub["table"], pub["v"])
        elif table != pub["table"] or pub["v"] >= v + 5:
            self.hello_mark = (pub["table"], pub["v"])
            self._hello()

    def _uid_of_member(self, member: str) -> str | None:
        for p in self.people:
            if p.get("id") == member:
                return uid_in_roster(p)
        return None


__all__ = ["Table"]
