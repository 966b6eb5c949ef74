"""The PeerJS broker's rules shared by ``kibitz serve``'s broker and the LAN hub's router.

Pure (no sockets, no clock, no JSON library choice): what an id may look like, which frames are
relayed, the reference server's error texts, and the bounded queue of frames held for an id that is
not connected yet (with ``EXPIRE`` owed to each sender whose frames time out).
"""

from __future__ import annotations

import re
from typing import Generic, TypeVar

ID_RE = re.compile(r"^[A-Za-z0-9]+(?:[ _-][A-Za-z0-9]+)*$")
MAX_ID_LEN = 256
RELAY_TYPES = frozenset(("OFFER", "ANSWER", "CANDIDATE", "LEAVE", "EXPIRE"))

MSG_NO_PARAMS = "No id, token, or key supplied to websocket server"
MSG_BAD_KEY = "Invalid key provided"
MSG_LIMIT = "Server has reached its concurrent user limit"
MSG_BAD_ID = "Invalid id"
MSG_TAKEN = "ID is taken"


def valid_id(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_ID_LEN and ID_RE.match(value) is not None


B = TypeVar("B")


class OfflineQueues(Generic[B]):
    """Frames (``body``: text or bytes) held for ids that are not here, bounded per id and in all."""

    def __init__(self, per_id: int, total: int) -> None:
        self.per_id = per_id
        self.total = total
        self.by_id: dict[str, list[tuple[float, str, B]]] = {}
        self.count = 0
        """Frames held now, over all ids."""

    def push(self, dst: str, at: float, src: str, body: B) -> bool:
        """Hold ``body`` from ``src`` for ``dst``; False when a bound is reached (the caller answers
        the sender with EXPIRE)."""
        q = self.by_id.get(dst)
        if q is None:
            if len(self.by_id) >= self.total:
                return False
            q = self.by_id[dst] = []
        if len(q) >= self.per_id or self.count >= self.total:
            if not q:
                del self.by_id[dst]
            return False
        q.append((at, src, body))
        self.count += 1
        return True

    def take(self, dst: str) -> list[tuple[str, B]] | None:
        """What was held for ``dst`` (src, body), in order; forgotten here."""
        q = self.by_id.pop(dst, None)
        if not q:
            return None
        self.count -= len(q)
        return [(src, body) for _, src, body in q]

    def expire(self, now: float, timeout: float) -> tuple[int, list[tuple[str, str]]]:
        """Drop frames held ``timeout`` seconds or more: (how many, and the (dst, src) pairs owed an
        EXPIRE: one per sender and id, as the reference server sends)."""
        dropped = 0
        owed: list[tuple[str, str]] = []
        for dst in [d for d, q in self.by_id.items() if now - q[0][0] >= timeout]:
            q = self.by_id[dst]
            keep = [item for item in q if now - item[0] < timeout]
            told: set[str] = set()
            for _, src, _ in q[: len(q) - len(keep)]:
                dropped += 1
                if src not in told:
                    told.add(src)
                    owed.append((dst, src))
            self.count -= len(q) - len(keep)
            if keep:
                self.by_id[dst] = keep
            else:
                del self.by_id[dst]
        return dropped, owed


__all__ = [
    "ID_RE", "MAX_ID_LEN", "MSG_BAD_ID", "MSG_BAD_KEY", "MSG_LIMIT", "MSG_NO_PARAMS", "MSG_TAKEN",
    "RELAY_TYPES", "OfflineQueues", "valid_id",
]
