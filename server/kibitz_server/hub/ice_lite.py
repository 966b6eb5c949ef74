"""ICE-lite for the hub (RFC 8445 §2.5): answer connectivity checks, never send any.

The hub's ufrag and password are fixed (they are in the galaxy link), so a check from any peer is
authenticated with the hub's own password alone: its USERNAME is ``<hub ufrag>:<peer ufrag>`` and
its MESSAGE-INTEGRITY is keyed by the hub's password (the controlling side signs with the remote
password). A lite agent never sends checks, so it never needs the peer's password, which never
reaches the hub (the peer's offer stays in the peer). The peer's ufrag tells peers apart, whatever
address their checks come from. Pure: bytes in, bytes out.
"""

from __future__ import annotations

from dataclasses import dataclass

from aioice import stun


@dataclass(frozen=True, slots=True)
class Check:
    """An authenticated binding request: who sent it and whether it nominates this path."""

    peer_ufrag: str
    nominated: bool


def is_stun(data: bytes) -> bool:
    """RFC 7983 demultiplexing: the first byte of a STUN message is 0..3."""
    return len(data) >= 20 and data[0] < 4


def is_dtls(data: bytes) -> bool:
    return len(data) >= 13 and 19 < data[0] < 64


class IceLite:
    """Answers binding requests for one ufrag/password pair."""

    def __init__(self, ufrag: str, pwd: str) -> None:
        self.ufrag = ufrag
        self._key = pwd.encode("utf-8")
        self.refused = 0

    def handle(self, data: bytes, addr: tuple[str, int]) -> tuple[bytes | None, Check | None]:
        """``(response to send back or None, the check if it was a valid one)``."""
        try:
            msg = stun.parse_message(data)
        except ValueError:
            self.refused += 1
            return None, None
        if msg.message_class != stun.Class.REQUEST:
            return None, None  # responses or indications: a lite agent sends no requests
        if msg.message_method != stun.Method.BINDING:
            return self._error(msg, addr, (400, "Bad Request")), None
        username = msg.attributes.get("USERNAME")
        if not isinstance(username, str) or "MESSAGE-INTEGRITY" not in msg.attributes:
            self.refused += 1
            return self._error(msg, addr, (400, "Bad Request")), None
        ours, _, theirs = username.partition(":")
        if ours != self.ufrag or not theirs or not msg.check_message_integrity(self._key):
            self.refused += 1
            return self._error(msg, addr, (401, "Unauthenticated")), None
        if "ICE-CONTROLLED" in msg.attributes:
            # A lite agent is always controlled: the peer must take the controlling role.
            return self._error(msg, addr, (487, "Role Conflict")), None
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=msg.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        response.add_message_integrity(self._key)
        return bytes(response), Check(theirs, "USE-CANDIDATE" in msg.attributes)

    def _error(self, request: stun.Message, addr: tuple[str, int], code: tuple[int, str]) -> bytes:
        response = stun.Message(
            message_method=request.message_method,
            message_class=stun.Class.ERROR,
            transaction_id=request.transaction_id,
        )
        response.attributes["ERROR-CODE"] = code
        if code[0] == 487:  # the peer is authenticated: sign it
            response.add_message_integrity(self._key)
        else:
            response.add_fingerprint()
        return bytes(response)
