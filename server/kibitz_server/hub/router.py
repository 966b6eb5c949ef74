"""The hub's signaling router: the broker's PeerJS semantics over data channels, sans-I/O.

Each identity a peer claims at the hub is one data channel (label ``peerjs?key=..&id=..&token=..``,
see :mod:`kibitz.galaxy`); this module decides what happens to it, exactly as ``kibitz serve``'s
broker does for a WebSocket (docs/server.md), so the engine above cannot tell them apart:

* ``OPEN`` for a new id; ``ID-TAKEN`` for an id held under another token; the same token takes over
  at once (a reload never sees "ID is taken");
* OFFER/ANSWER/CANDIDATE/LEAVE/EXPIRE are relayed with ``src`` set to the sender's id, nothing
  else kept; frames for an id that is not here are queued (bounded) and ``EXPIRE`` goes back when
  they time out;
* when an id goes away, everyone it exchanged signaling with gets ``LEAVE`` from it;
* malformed, oversized or rate-limited frames get ``ERROR`` with a reason, are dropped and counted.

Content-blind: payloads are forwarded as opaque text and never logged; only counters are kept.
No sockets, no clock: the caller passes ``now`` and owns the channels (:class:`Channel`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..peerjs_rules import (
    MSG_BAD_ID,
    MSG_BAD_KEY,
    MSG_LIMIT,
    MSG_NO_PARAMS,
    MSG_TAKEN,
    RELAY_TYPES,
    OfflineQueues,
    valid_id,
)

OPEN_FRAME = '{"type":"OPEN"}'


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _error(msg: str) -> str:
    return _dumps({"type": "ERROR", "payload": {"msg": msg}})


class Channel(Protocol):
    """What the router needs of one identity channel (a data channel in the hub)."""

    def send(self, text: str) -> None:
        """Queue one text message; dropped silently once the channel is closed."""

    def close(self) -> None:
        """Close the channel (after what was sent before it)."""


@dataclass(frozen=True, slots=True)
class RouterLimits:
    key: str = "peerjs"
    alive_timeout: float = 60.0
    expire_timeout: float = 5.0
    concurrent_limit: int = 5000
    max_message: int = 64 * 1024
    rate_limit_per_sec: int = 1000
    queue_per_id: int = 128
    queue_total: int = 20000


@dataclass(eq=False, slots=True)
class Conn:
    """One identity channel and what the router knows about it."""

    channel: Channel
    id: str = ""
    token: str = ""
    registered: bool = False
    contacts: set[str] = field(default_factory=set)
    last_seen: float = 0.0
    count: int = 0
    warned: bool = False
    src_prefix: str = ""


@dataclass
class RouterMetrics:
    connected: int = 0
    connections_total: int = 0
    takeovers: int = 0
    relayed: int = 0
    queued: int = 0
    expired: int = 0
    leaves_sent: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)


class Router:
    """Registry of ids, offline queues and the periodic sweep; the caller drives it with
    :meth:`open`, :meth:`frame`, :meth:`closed` and :meth:`sweep`."""

    def __init__(self, limits: RouterLimits | None = None) -> None:
        self.limits = limits or RouterLimits()
        self.metrics = RouterMetrics()
        self.clients: dict[str, Conn] = {}
        self.queues: OfflineQueues[str] = OfflineQueues(self.limits.queue_per_id, self.limits.queue_total)
        self._window_start = 0.0

    # ----------------------------------------------------------------------------- registration

    def open(self, channel: Channel, params: dict[str, str], now: float) -> Conn:
        """A peer opened an identity channel with ``params`` (``key``, ``id``, ``token``)."""
        conn = Conn(channel, params.get("id", ""), params.get("token", ""))
        conn.last_seen = now
        key = params.get("key")
        if not conn.id or not conn.token or not key:
            self._refuse(conn, "no_params", "ERROR", MSG_NO_PARAMS)
        elif key != self.limits.key:
            self._refuse(conn, "bad_key", "ERROR", MSG_BAD_KEY)
        elif not valid_id(conn.id):
            self._refuse(conn, "bad_id", "ERROR", MSG_BAD_ID)
        else:
            old = self.clients.get(conn.id)
            if old is not None and old.token != conn.token:
                self._refuse(conn, "id_taken", "ID-TAKEN", MSG_TAKEN)
            elif old is None and len(self.clients) >= self.limits.concurrent_limit:
                self._refuse(conn, "limit", "ERROR", MSG_LIMIT)
            else:
                self._accept(conn, old)
        return conn

    def _accept(self, conn: Conn, old: Conn | None) -> None:
        m = self.metrics
        if old is not None:
            m.takeovers += 1  # same id, same token: a reload or a blip takes over at once
            conn.contacts = old.contacts
            old.contacts = set()
            old.registered = False
            old.channel.close()
        else:
            m.connected += 1
        conn.registered = True
        conn.src_prefix = '{"src":' + json.dumps(conn.id) + ","
        self.clients[conn.id] = conn
        m.connections_total += 1
        conn.channel.send(OPEN_FRAME)
        queued = self.queues.take(conn.id)
        if queued:
            for src, body in queued:
                conn.channel.send(body)
                m.relayed += 1
                conn.contacts.add(src)
                sender = self.clients.get(src)
                if sender is not None:
                    sender.contacts.add(conn.id)

    def _refuse(self, conn: Conn, reason: str, type_: str, msg: str) -> None:
        """Say why and leave the channel open: the peer closes it once it has read the reason
        (closing here could reset the stream before the frame is read); the channel's owner
        closes it after a grace period if the peer does not."""
        self.metrics.rejected[reason] += 1
        conn.channel.send(_dumps({"type": type_, "payload": {"msg": msg}}))

    def closed(self, conn: Conn) -> None:
        """The channel is gone (either side closed it, or the peer's hub connection died)."""
        if not conn.registered:
            return
        conn.registered = False
        gone = conn.id
        if self.clients.get(gone) is not conn:
            return
        del self.clients[gone]
        self.metrics.connected -= 1
        for peer in conn.contacts:
            pc = self.clients.get(peer)
            if pc is not None:
                pc.contacts.discard(gone)
                pc.channel.send(_dumps({"type": "LEAVE", "src": gone, "dst": peer}))
                self.metrics.leaves_sent += 1
        conn.contacts = set()

    # ------------------------------------------------------------------------------------ relay

    def frame(self, conn: Conn, raw: str | bytes, now: float) -> None:
        """One message from a peer on its identity channel."""
        if not conn.registered:
            return
        conn.last_seen = now
        conn.count += 1
        if conn.count > self.limits.rate_limit_per_sec:
            return self._reject(conn, "rate_limited", "Rate limit exceeded")
        if not isinstance(raw, str):
            return self._reject(conn, "binary", "Binary frames are not supported")
        if len(raw) > self.limits.max_message:
            return self._reject(conn, "too_large", "Message too large")
        try:
            msg = json.loads(raw)
        except (ValueError, RecursionError):
            return self._reject(conn, "invalid_json", "Invalid JSON")
        if type(msg) is not dict:
            return self._reject(conn, "not_object", "Message must be a JSON object")
        t = msg.get("type")
        if t in RELAY_TYPES:
            self._relay(conn, t, msg, raw)
        elif t == "HEARTBEAT":
            return
        elif type(t) is str:
            self.metrics.dropped["unknown_type"] += 1
        else:
            self._reject(conn, "no_type", "Message has no type")

    def _relay(self, conn: Conn, t: str, msg: dict[str, Any], raw: str) -> None:
        dst = msg.get("dst")
        if t == "LEAVE" and dst is None:
            self.closed(conn)  # PeerJS: a LEAVE without dst means "I am leaving"
            conn.channel.close()
            return
        if not valid_id(dst):
            return self._reject(conn, "invalid_dst", "Invalid dst")
        assert isinstance(dst, str)
        if len(msg) == 3 and "payload" in msg and raw[:1] == "{":
            body = conn.src_prefix + raw[1:]  # splice src into the original text (no re-serialising)
        elif "payload" in msg:
            body = _dumps({"type": t, "src": conn.id, "dst": dst, "payload": msg["payload"]})
        else:
            body = _dumps({"type": t, "src": conn.id, "dst": dst})
        target = self.clients.get(dst)
        if target is not None:
            target.channel.send(body)
            self.metrics.relayed += 1
            conn.contacts.add(dst)
            target.contacts.add(conn.id)
            return
        if t in ("LEAVE", "EXPIRE"):
            self.metrics.dropped["dst_offline"] += 1
            return
        if not self.queues.push(dst, conn.last_seen, conn.id, body):
            return self._queue_full(conn, dst)
        self.metrics.queued += 1

    def _queue_full(self, conn: Conn, dst: str) -> None:
        self.metrics.dropped["queue_full"] += 1
        conn.channel.send(_dumps({"type": "EXPIRE", "src": dst, "dst": conn.id}))

    def _reject(self, conn: Conn, reason: str, msg: str) -> None:
        self.metrics.dropped[reason] += 1
        if reason == "rate_limited":
            if conn.warned:
                return
            conn.warned = True
        conn.channel.send(_error(msg))

    # ----------------------------------------------------------------------------- periodic work

    def sweep(self, now: float) -> list[Conn]:
        """Reset rate windows, drop silent identities (returned: the caller closes their
        channels), expire queued frames with EXPIRE to their senders."""
        if now - self._window_start >= 1.0:
            self._window_start = now
            for c in self.clients.values():
                c.count = 0
                c.warned = False
        alive = self.limits.alive_timeout
        dead = [c for c in self.clients.values() if now - c.last_seen > alive]
        for c in dead:
            self.metrics.dropped["alive_timeout"] += 1
            self.closed(c)
        expired, owed = self.queues.expire(now, self.limits.expire_timeout)
        self.metrics.expired += expired
        for dst, src in owed:
            sender = self.clients.get(src)
            if sender is not None:
                sender.channel.send(_dumps({"type": "EXPIRE", "src": dst, "dst": src}))
        return dead

    def render_metrics(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "connected": m.connected,
            "connections_total": m.connections_total,
            "takeovers": m.takeovers,
            "relayed": m.relayed,
            "queued": m.queued,
            "queued_now": self.queues.count,
            "expired": m.expired,
            "leaves_sent": m.leaves_sent,
            "rejected": dict(m.rejected),
            "dropped": dict(m.dropped),
        }
