"""One broker socket (``Conn``) and the wire helpers it shares with the broker.

``Conn.on_ws_frame`` is the broker's hot path (see broker.py): picows parses the frame in C; we
``orjson.loads`` it once to check type and dst, then splice ``"src":<id>`` into the original bytes
instead of re-serialising, and queue it on the destination for the batched flush.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson
from picows import (
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
)

from .peerjs_rules import RELAY_TYPES

if TYPE_CHECKING:
    from .broker import Broker
    from .cluster_wire import Message

_TEXT = WSMsgType.TEXT
_CLOSE = WSMsgType.CLOSE
_LOADS = orjson.loads
_DUMPS = orjson.dumps
_JSONError = orjson.JSONDecodeError
_SMALL_HDR = [bytes((0x81, n)) for n in range(126)]

OPEN_FRAME = b'{"type":"OPEN"}'
INFO_BODY = orjson.dumps(
    {
        "name": "PeerJS Server",
        "description": "A server side element to broker connections between PeerJS clients.",
        "website": "https://peerjs.com/",
    }
)


def text_header(n: int) -> bytes:
    """Header of an unmasked, final server->client text frame with an n-byte payload."""
    if n < 126:
        return _SMALL_HDR[n]
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big")
    return b"\x81\x7f" + n.to_bytes(8, "big")


def error_frame(msg: str) -> bytes:
    return _DUMPS({"type": "ERROR", "payload": {"msg": msg}})


class Conn(WSListener):
    """One broker socket. All state the hot path touches lives in slots here."""

    __slots__ = (
        "broker",
        "closer",
        "contacts",
        "count",
        "early",
        "epoch",
        "id",
        "key",
        "last_dst",
        "last_seen",
        "out",
        "raw",
        "registered",
        "src_prefix",
        "token",
        "transport",
        "warned",
    )

    def __init__(self, broker: Broker, id_: str | None, token: str | None, key: str | None) -> None:
        super().__init__()
        self.broker = broker
        self.id = id_ or ""
        self.token = token
        self.key = key
        self.src_prefix = b""
        self.transport: WSTransport | None = None
        self.raw: Any = None
        self.out: list[bytes] = []
        self.contacts: set[str] = set()
        self.last_dst: Conn | None = None
        self.last_seen = 0.0
        self.count = 0
        self.warned = False
        self.registered = False
        self.closer: asyncio.TimerHandle | None = None
        #: Fencing epoch of this id in the cluster (0 on a single node).
        self.epoch = 0
        #: Frames that reached this node for the id while its cluster claim was in flight.
        self.early: list[tuple[Message, str]] | None = None

    # picows callbacks -------------------------------------------------------------------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.raw = transport.underlying_transport
        self.broker.register(self)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.closer is not None:
            self.closer.cancel()
            self.closer = None
            self.broker.closing.discard(self)
        self.broker.unregister(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        b = self.broker
        if frame.msg_type is not _TEXT or not frame.fin or not self.registered:
            b.odd_frame(self, frame)
            return
        self.last_seen = b.coarse_now
        self.count += 1
        if self.count > b.rate_limit:
            b.reject_frame(self, "rate_limited", "Rate limit exceeded")
            return
        if frame.payload_size > b.max_message:
            b.reject_frame(self, "too_large", "Message too large")
            return
        raw = frame.get_payload_as_bytes()  # one copy; orjson parses bytes faster than a memoryview
        try:
            msg = _LOADS(raw)
        except _JSONError:
            b.reject_frame(self, "invalid_json", "Invalid JSON")
            return
        if type(msg) is not dict:
            b.reject_frame(self, "not_object", "Message must be a JSON object")
            return
        t = msg.get("type")
        if t in RELAY_TYPES:
            dst = msg.get("dst")
            target = b.clients.get(dst) if type(dst) is str else None
            if target is not None:
                # Fast path: splice src into the original bytes when nothing else must be stripped.
                if len(msg) == 3 and "payload" in msg and raw[0] == 0x7B:
                    body = self.src_prefix + raw[1:]
                else:
                    body = b.build(t, self.id, dst, msg)  # type: ignore[arg-type]
                out = target.out
                if not out:
                    b.mark_dirty(target)
                n = len(body)
                out.append(_SMALL_HDR[n] if n < 126 else text_header(n))
                out.append(body)
                b.metrics.relayed += 1
                if self.last_dst is not target:
                    self.last_dst = target
                    self.contacts.add(dst)  # type: ignore[arg-type]
                    target.contacts.add(self.id)
            else:
                b.relay_offline(self, t, dst, msg, raw)
        elif t == "HEARTBEAT":
            return
        elif type(t) is str:
            b.metrics.drop("unknown_type")  # the reference ignores these silently; so do we
        else:
            b.reject_frame(self, "no_type", "Message has no type")
