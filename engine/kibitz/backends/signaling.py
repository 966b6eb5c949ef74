"""The PeerJS client wire protocol, sans-I/O: broker URLs, frames out, frames in.

Kibitz speaks the PeerJS broker protocol (``peer`` 1.0.x server, ``peerjs`` 1.5.x client) so stock
PeerJS peers and servers interoperate. Every frame is one JSON text ``{type, src, dst, payload}``;
the broker overwrites ``src``. OFFER/ANSWER/CANDIDATE payloads copy the PeerJS 1.5.x *data*
connection shapes so a PeerJS peer (or a human reading a capture) sees familiar messages.

Parsing never raises: anything malformed is dropped and counted in a :class:`DropCounter`.
Nothing here touches a socket, a clock or a global RNG.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast
from urllib.parse import urlencode

from kibitz.backends.rtc_api import IceCandidateInit, SessionDescription
from kibitz.protocol.base import DropCounter

PEERJS_VERSION: Final = "1.5.5"
"""What we announce in the ``version`` query parameter (the PeerJS client we are shaped like)."""

MAX_BROKER_FRAME: Final = 64 * 1024
"""An SDP with candidates is a few KB; anything this big from the broker is garbage."""

FrameType = Literal[
    "OPEN", "ID-TAKEN", "ERROR", "EXPIRE", "HEARTBEAT", "OFFER", "ANSWER", "CANDIDATE", "LEAVE"
]
FRAME_TYPES: Final[frozenset[str]] = frozenset(
    ("OPEN", "ID-TAKEN", "ERROR", "EXPIRE", "HEARTBEAT", "OFFER", "ANSWER", "CANDIDATE", "LEAVE")
)

_ALNUM: Final = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_token(rng: random.Random) -> str:
    """A broker token (PeerJS uses ``Math.random().toString(36).slice(2)``: ~11 base-36 chars)."""
    return "".join(rng.choice(_ALNUM) for _ in range(12))


def new_connection_id(rng: random.Random) -> str:
    """A data connection id shaped like PeerJS's (``dc_`` + random base-36)."""
    return "dc_" + "".join(rng.choice(_ALNUM) for _ in range(12))


def signaling_url(ws_base: str, *, key: str, peer_id: str, token: str, version: str = PEERJS_VERSION) -> str:
    """``{ws_base}peerjs?key=&id=&token=&version=``; ``ws_base`` is e.g. ``ws://127.0.0.1:9000/``,
    or ``hub://galaxy/`` for a broker reached through a LAN hub (:mod:`kibitz.backends.hub_signaling`).

    A missing trailing slash is added, since the broker path is always ``<path>/peerjs``.
    """
    if not ws_base.startswith(("ws://", "wss://", "hub://")):
        raise ValueError(f"broker url must start with ws://, wss:// or hub://, got {ws_base!r}")
    base = ws_base if ws_base.endswith("/") else ws_base + "/"
    query = urlencode({"key": key, "id": peer_id, "token": token, "version": version})
    return f"{base}peerjs?{query}"


# --------------------------------------------------------------------------------------- frames out


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def heartbeat_frame() -> str:
    return '{"type":"HEARTBEAT"}'


def probe_frame(self_id: str) -> str:
    """A frame to ourselves that the broker relays straight back: proof the socket still works.

    ``EXPIRE`` because every PeerJS broker relays it to a connected ``dst`` and no peer acts on one
    from itself."""
    return _dump({"type": "EXPIRE", "dst": self_id, "payload": {"probe": 1}})


def offer_frame(
    dst: str,
    *,
    connection_id: str,
    sdp: SessionDescription,
    label: str,
    metadata: Any = None,
    serialization: str = "raw",
) -> str:
    """OFFER for a reliable data connection, shaped like PeerJS 1.5.x ``DataConnection`` offers."""
    payload = {
        "sdp": sdp.to_json(),
        "type": "data",
        "connectionId": connection_id,
        "label": label,
        "reliable": True,
        "serialization": serialization,
        "metadata": metadata,
    }
    return _dump({"type": "OFFER", "dst": dst, "payload": payload})


def answer_frame(dst: str, *, connection_id: str, sdp: SessionDescription) -> str:
    payload = {"sdp": sdp.to_json(), "type": "data", "connectionId": connection_id}
    return _dump({"type": "ANSWER", "dst": dst, "payload": payload})


def candidate_frame(dst: str, *, connection_id: str, candidate: IceCandidateInit) -> str:
    payload = {"candidate": dict(candidate), "type": "data", "connectionId": connection_id}
    return _dump({"type": "CANDIDATE", "dst": dst, "payload": payload})


# ---------------------------------------------------------------------------------------- frames in


@dataclass(frozen=True, slots=True)
class OfferPayload:
    connection_id: str
    sdp: SessionDescription
    kind: str
    """``"data"`` or ``"media"`` (PeerJS's ``type``); only data offers are answered for now."""
    label: str
    reliable: bool
    serialization: str
    metadata: Any = None


@dataclass(frozen=True, slots=True)
class AnswerPayload:
    connection_id: str
    sdp: SessionDescription


@dataclass(frozen=True, slots=True)
class CandidatePayload:
    connection_id: str
    candidate: IceCandidateInit


@dataclass(frozen=True, slots=True)
class BrokerFrame:
    """One parsed frame. ``payload`` is typed for OFFER/ANSWER/CANDIDATE, raw otherwise."""

    type: str
    src: str | None = None
    dst: str | None = None
    payload: OfferPayload | AnswerPayload | CandidatePayload | dict[str, Any] | None = field(default=None)

    @property
    def message(self) -> str:
        """The human text of ERROR / ID-TAKEN frames (``payload.msg``), or ``""``."""
        if isinstance(self.payload, dict):
            msg = self.payload.get("msg")
            if isinstance(msg, str):
                return msg
        return ""


def _sdp(obj: Any, expected: str) -> SessionDescription | None:
    if not isinstance(obj, dict):
        return None
    kind, text = obj.get("type"), obj.get("sdp")
    if kind != expected or not isinstance(text, str) or not text:
        return None
    return SessionDescription(type=kind, sdp=text)


def _connection_id(payload: dict[str, Any]) -> str | None:
    cid = payload.get("connectionId")
    return cid if isinstance(cid, str) and cid else None


def _candidate(obj: Any) -> IceCandidateInit | None:
    if not isinstance(obj, dict):
        return None
    cand = obj.get("candidate")
    mid = obj.get("sdpMid")
    index = obj.get("sdpMLineIndex")
    ufrag = obj.get("usernameFragment")
    if not isinstance(cand, str):
        return None
    if mid is not None and not isinstance(mid, str):
        return None
    if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
        return None
    if ufrag is not None and not isinstance(ufrag, str):
        return None
    if mid is None and index is None:
        return None
    return IceCandidateInit(candidate=cand, sdpMid=mid, sdpMLineIndex=index, usernameFragment=ufrag)


def _typed_payload(kind: str, payload: Any) -> OfferPayload | AnswerPayload | CandidatePayload | None:
    if not isinstance(payload, dict):
        return None
    cid = _connection_id(payload)
    if cid is None:
        return None
    if kind == "OFFER":
        sdp = _sdp(payload.get("sdp"), "offer")
        label = payload.get("label", cid)
        conn_kind = payload.get("type", "data")
        serialization = payload.get("serialization", "raw")
        reliable = payload.get("reliable", True)
        if sdp is None or not isinstance(label, str) or not isinstance(conn_kind, str):
            return None
        if not isinstance(serialization, str) or not isinstance(reliable, bool):
            return None
        return OfferPayload(cid, sdp, conn_kind, label, reliable, serialization, payload.get("metadata"))
    if kind == "ANSWER":
        sdp = _sdp(payload.get("sdp"), "answer")
        return None if sdp is None else AnswerPayload(cid, sdp)
    cand = _candidate(payload.get("candidate"))
    return None if cand is None else CandidatePayload(cid, cand)


def parse_frame(raw: str | bytes, drops: DropCounter) -> BrokerFrame | None:
    """Parse one broker frame, or count why not (reason in ``drops``) and return ``None``."""
    if len(raw) > MAX_BROKER_FRAME:
        drops.drop("broker:oversize")
        return None
    try:
        obj: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        drops.drop("broker:not-json")
        return None
    if not isinstance(obj, dict):
        drops.drop("broker:not-object")
        return None
    kind = obj.get("type")
    if not isinstance(kind, str):
        drops.drop("broker:no-type")
        return None
    if kind not in FRAME_TYPES:
        drops.drop("broker:unknown-type")
        return None
    src, dst = obj.get("src"), obj.get("dst")
    if (src is not None and not isinstance(src, str)) or (dst is not None and not isinstance(dst, str)):
        drops.drop(f"broker:invalid:{kind}")
        return None
    raw_payload = obj.get("payload")
    if kind in ("OFFER", "ANSWER", "CANDIDATE"):
        typed = _typed_payload(kind, raw_payload)
        if typed is None or not src:
            drops.drop(f"broker:invalid:{kind}")
            return None
        return BrokerFrame(kind, src, dst, typed)
    if kind in ("EXPIRE", "LEAVE") and not src:
        drops.drop(f"broker:invalid:{kind}")
        return None
    payload = cast(dict[str, Any], raw_payload) if isinstance(raw_payload, dict) else None
    return BrokerFrame(kind, src, dst, payload)
