"""The table's messages: what each one carries, and the checks every receiver runs first.

Every message is app data ``{"ns": "whist", "t": <type>, ...}``. A message that fails a check is
dropped and counted under its reason (``Table.dropped``); nothing a peer sends can raise out of the
table. The page checks the same things in ``apps/whist/wire.mjs``.

From the table's authority (the dealer): ``state`` (broadcast, public), ``hand`` (``sendTo`` one
player or one allowed watcher: the 13 cards dealt to one seat), ``error`` (``sendTo``: why a request
was refused). From a player to everyone: ``commit`` (a hash that binds its seed for this deal). From a
dealer that loses the table to the new dealer: ``handover`` (its last public state: seats and scores
carry on).
From a player to the dealer only: ``hello`` (proves the seat key), ``sit``, ``stand``, ``seed``
(the seed behind its commitment), ``play``, ``next``, ``newgame``, ``allow``/``revoke`` (let a
watcher see this seat's hand).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .rules import CARD_RE, DEAL_ID_RE, HEX64_RE, UID_RE, is_card

NS = "whist"
TO_DEALER = frozenset({"hello", "sit", "stand", "seed", "play", "next", "newgame", "allow", "revoke"})
FROM_DEALER = frozenset({"state", "hand", "error"})
PHASES = frozenset({"idle", "commit", "seed", "play", "done"})
MAX_NAME = 64
MAX_TEXT = 200
PEER_MAX = 64

Json = dict[str, Any]


class Malformed(ValueError):
    """A message that fails its checks; the text is the reason it is counted under."""


def msg(t: str, **fields: Any) -> Json:
    return {"ns": NS, "t": t, **fields}


def _int(x: object, lo: int, hi: int, what: str) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or not lo <= x <= hi:
        raise Malformed(f"{what} out of range")
    return x


def _str(x: object, what: str, limit: int = MAX_NAME) -> str:
    if not isinstance(x, str) or len(x) > limit:
        raise Malformed(f"{what} not a string")
    return x


def _re(x: object, pattern: Any, what: str) -> str:
    if not isinstance(x, str) or not pattern.match(x):
        raise Malformed(f"bad {what}")
    return x


def _cards(x: object, what: str, lo: int, hi: int) -> list[str]:
    if not isinstance(x, list) or not lo <= len(x) <= hi or not all(is_card(c) for c in x):
        raise Malformed(f"bad {what}")
    if len(set(x)) != len(x):
        raise Malformed(f"repeated card in {what}")
    return list(x)


def _peer(x: object, what: str) -> str:
    if not isinstance(x, str) or not 0 < len(x) <= PEER_MAX:
        raise Malformed(f"bad {what}")
    return x


def check(data: object) -> Json | None:
    """The message if ``data`` is a whist message that passes its checks; None when it is not ours
    (another app's data); :class:`Malformed` with a reason when it is ours but wrong."""
    if not isinstance(data, Mapping) or data.get("ns") != NS:
        return None
    t = data.get("t")
    m: Json = dict(data)
    if t in ("state", "handover"):
        check_pub(m.get("pub"))
    elif t == "hand":
        _re(m.get("table"), DEAL_ID_RE, "table")
        _re(m.get("deal"), DEAL_ID_RE, "deal id")
        _int(m.get("seat"), 0, 3, "seat")
        _cards(m.get("cards"), "hand", 13, 13)
    elif t == "error":
        _str(m.get("code"), "code")
        _str(m.get("text"), "text", MAX_TEXT)
    elif t == "commit":
        _re(m.get("deal"), DEAL_ID_RE, "deal id")
        _re(m.get("uid"), UID_RE, "uid")
        _re(m.get("c"), HEX64_RE, "commitment")
    elif t == "hello":
        _re(m.get("uid"), UID_RE, "uid")
        _re(m.get("key"), HEX64_RE, "seat key")
    elif t == "sit":
        _int(m.get("seat"), -1, 3, "seat")
    elif t in ("stand", "next", "newgame"):
        pass
    elif t == "seed":
        _re(m.get("deal"), DEAL_ID_RE, "deal id")
        _re(m.get("seed"), HEX64_RE, "seed")
    elif t == "play":
        _re(m.get("deal"), DEAL_ID_RE, "deal id")
        _re(m.get("card"), CARD_RE, "card")
    elif t == "allow":
        _peer(m.get("watcher"), "watcher")
        _int(m.get("seat"), 0, 3, "seat")
    elif t == "revoke":
        _peer(m.get("watcher"), "watcher")
    else:
        raise Malformed("unknown type")
    return m


def _pair(x: object, what: str) -> list[int]:
    if not isinstance(x, list) or len(x) != 2:
        raise Malformed(f"bad {what}")
    return [_int(v, 0, 1_000_000, what) for v in x]


def check_pub(p: object) -> Json:
    """The public state a dealer broadcasts: checked field by field before anyone reads it."""
    if not isinstance(p, Mapping):
        raise Malformed("state without pub")
    _re(p.get("table"), DEAL_ID_RE, "table")
    _int(p.get("v"), 0, 1 << 50, "version")
    _re(p.get("auth"), UID_RE, "auth uid")
    seats = p.get("seats")
    if not isinstance(seats, list) or len(seats) != 4:
        raise Malformed("bad seats")
    for s in seats:
        if not isinstance(s, Mapping):
            raise Malformed("bad seat")
        if s.get("uid") is not None:
            _re(s.get("uid"), UID_RE, "seat uid")
        if s.get("next") is not None:
            _re(s.get("next"), UID_RE, "queued uid")
        _str(s.get("name"), "seat name")
        if not isinstance(s.get("away"), bool):
            raise Malformed("bad seat")
    here = p.get("here")
    if not isinstance(here, list) or len(here) > 64:
        raise Malformed("bad here")
    for uid in here:
        _re(uid, UID_RE, "uid here")
    score = p.get("score")
    if not isinstance(score, Mapping):
        raise Malformed("bad score")
    for key in ("points", "games", "total"):
        _pair(score.get(key), "score")
    _int(score.get("game"), 1, 1_000_000, "game")
    _int(score.get("rubber"), 1, 1_000_000, "rubber")
    watchers = p.get("watchers")
    if not isinstance(watchers, list) or len(watchers) > 16:
        raise Malformed("bad watchers")
    for w in watchers:
        if not isinstance(w, Mapping):
            raise Malformed("bad watcher")
        _peer(w.get("id"), "watcher")
        _int(w.get("seat"), 0, 3, "watcher seat")
    deal = p.get("deal")
    if deal is not None:
        _check_deal(deal)
    return dict(p)


def _check_deal(d: object) -> None:
    if not isinstance(d, Mapping):
        raise Malformed("bad deal")
    _re(d.get("id"), DEAL_ID_RE, "deal id")
    _int(d.get("no"), 1, 1_000_000, "deal number")
    _int(d.get("dealer"), 0, 3, "dealer")
    if d.get("phase") not in PHASES - {"idle"}:
        raise Malformed("bad phase")
    contributors = d.get("contributors")
    if not isinstance(contributors, list) or not 0 < len(contributors) <= 5:
        raise Malformed("bad contributors")
    for uid in contributors:
        _re(uid, UID_RE, "contributor")
    for key in ("commits", "reveal"):
        table = d.get(key)
        if table is None and key == "reveal":
            continue
        if not isinstance(table, Mapping) or len(table) > 5:
            raise Malformed(f"bad {key}")
        for uid, h in table.items():
            _re(uid, UID_RE, key)
            _re(h, HEX64_RE, key)
    if d.get("turnup") is not None:
        _re(d.get("turnup"), CARD_RE, "turn-up")
    _int(d.get("leader"), -1, 3, "leader")
    _int(d.get("turn"), -1, 3, "turn")
    _cards(d.get("trick"), "trick", 0, 3)
    tricks = d.get("tricks")
    if not isinstance(tricks, list) or len(tricks) > 13:
        raise Malformed("bad tricks")
    for t in tricks:
        if not isinstance(t, Mapping):
            raise Malformed("bad trick")
        _int(t.get("leader"), 0, 3, "trick leader")
        _int(t.get("winner"), 0, 3, "trick winner")
        _cards(t.get("cards"), "trick", 4, 4)
    _pair(d.get("taken"), "taken")
    result = d.get("result")
    if result is not None:
        if not isinstance(result, Mapping):
            raise Malformed("bad result")
        for key in ("tricks", "honours", "points"):
            _pair(result.get(key), "result")


__all__ = ["FROM_DEALER", "NS", "TO_DEALER", "Json", "Malformed", "check", "check_pub", "msg"]
