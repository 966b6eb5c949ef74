"""The signaling broker: the PeerJS server wire protocol (``peer@1.0.2``), content-blind and lean.

Wire facts are in docs/server.md. Where we differ from the reference, on purpose:

* same id + same token reconnecting takes over at once and gets a fresh OPEN (the old socket is
  closed), so a reload never sees "ID is taken";
* when an id goes away, every peer it exchanged signaling with gets ``LEAVE`` from it;
* malformed, binary, fragmented, oversized or rate-limited frames get ``ERROR`` with a reason, are
  dropped and counted; the connection and everyone else carry on;
* queues for offline ids and unsent data per socket are bounded; payloads are never logged.

Hot path (one relayed message): picows parses the frame in C; we ``orjson.loads`` it once to check
type and dst, then splice ``"src":<id>`` into the original bytes instead of re-serialising
(when the frame has exactly type/dst/payload, which is what PeerJS clients send). Outgoing frames
are framed here and written once per destination per loop iteration (``call_soon`` flush), so a
burst of N messages to one peer costs one ``send()`` syscall rather than N.
"""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from picows import (
    WSCloseCode,
    WSFrame,
    WSMsgType,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from .broker_conn import (
    _CLOSE,
    _DUMPS,
    INFO_BODY,
    OPEN_FRAME,
    Conn,
    error_frame,
    text_header,
)
from .config import ServerConfig
from .metrics import Metrics
from .peerjs_rules import (
    MSG_BAD_ID,
    MSG_BAD_KEY,
    MSG_LIMIT,
    MSG_NO_PARAMS,
    MSG_TAKEN,
    OfflineQueues,
    valid_id,
)

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["Broker", "Conn", "text_header", "valid_id"]


class Broker:
    """Registry of connected ids, offline queues, and the periodic sweep (timeouts, expiry)."""

    def __init__(
        self,
        config: ServerConfig,
        metrics: Metrics | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.key = config.key
        self.rate_limit = config.rate_limit_per_sec
        self.max_message = config.max_message_bytes
        self.max_write_buffer = config.max_write_buffer
        self.clients: dict[str, Conn] = {}
        self.queues: OfflineQueues[bytes] = OfflineQueues(config.queue_per_id, config.queue_total)
        self._dirty: list[Conn] = []
        #: Sockets we sent CLOSE to and wait on for the peer's CLOSE (then we drop the TCP side).
        self.closing: set[Conn] = set()
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock = clock
        self.coarse_now = self.now()
        self._window_start = self.coarse_now
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.port = 0
        #: Set by ``kibitz serve --redis``: ids, queues and frames for other nodes go through it.
        self.cluster: Cluster | None = None

    def now(self) -> float:
        if self._clock is not None:
            return self._clock()
        return (self._loop or asyncio.get_event_loop()).time()

    # lifecycle ----------------------------------------------------------------------------
    async def start(self, host: str, port: int, *, sweep: bool = True) -> int:
        """Listen on host:port (0 = any free port); returns the bound port."""
        self._loop = asyncio.get_running_loop()
        self.coarse_now = self._window_start = self.now()
        self._server = await ws_create_server(
            self._route,
            host,
            port,
            max_frame_size=self.config.hard_frame_bytes,
            # Signaling frames are small; start each socket's read buffer small (it grows on demand)
            # so 2000 idle peers do not pin 2000 x 16 KiB.
            read_buffer_init_size=4096,
            websocket_handshake_timeout=5,
            logger_name="kibitz.broker",
            use_aiofastnet=False,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if sweep:
            self._schedule_sweep()
        return int(self.port)

    def _schedule_sweep(self) -> None:
        assert self._loop is not None
        self._sweeper = self._loop.call_later(self.config.sweep_interval, self._sweep_tick)

    def _sweep_tick(self) -> None:
        try:
            self.sweep()
        finally:
            self._schedule_sweep()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.clients.values()):
            self._close(conn, WSCloseCode.GOING_AWAY)
        # Give peers a moment to answer our CLOSE (a clean close on their side), then drop the rest.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(1.0, self.config.close_grace)
        while self.closing and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.closing):
            self._drop(conn)
        if self._server is not None:
            await self._server.wait_closed()

    # handshake / plain HTTP on the broker port -----------------------------------------------
    def _route(self, request: WSUpgradeRequest) -> Any:
        try:
            target = request.path.decode("latin-1")
        except Exception:  # pragma: no cover - picows gives bytes
            target = "/"
        path, _, query = target.partition("?")
        base = self.config.path
        if path == base + "peerjs":
            q = parse_qs(query)
            return Conn(self, _first(q, "id"), _first(q, "token"), _first(q, "key"))
        cors = {"Access-Control-Allow-Origin": "*", "Cache-Control": "no-store"}
        json_h = {**cors, "Content-Type": "application/json"}
        if path in (base, base.rstrip("/")):
            return _http(200, INFO_BODY, json_h)
        if path == f"{base}{self.key}/id":
            return _http(200, str(uuid.uuid4()).encode(), {**cors, "Content-Type": "text/html"})
        if path == f"{base}{self.key}/peers":
            if not self.config.allow_discovery:
                return _http(401, b"", cors)
            return _http(200, _DUMPS(list(self.clients)), json_h)
        if path.startswith(base) and path.endswith(("/id", "/peers")):
            return _http(401, b"", cors)
        return _http(404, b"", cors)

    # registration ------------------------------------------------------------------------
    def register(self, conn: Conn) -> None:
        if not conn.id or not conn.token or not conn.key:
            return self._refuse(conn, "no_params", "ERROR", MSG_NO_PARAMS)
        if conn.key != self.key:
            return self._refuse(conn, "bad_key", "ERROR", MSG_BAD_KEY)
        if not valid_id(conn.id):
            return self._refuse(conn, "bad_id", "ERROR", MSG_BAD_ID)
        old = self.clients.get(conn.id)
        if self.cluster is not None:
            if old is None and len(self.clients) + len(self.cluster.claiming) >= self.config.concurrent_limit:
                return self._refuse(conn, "limit", "ERROR", MSG_LIMIT)
            return self.cluster.claim(conn)  # Redis decides; accept() or refuse() follows
        if old is not None and old.token != conn.token:
            return self._refuse(conn, "id_taken", "ID-TAKEN", MSG_TAKEN)
        if old is None and len(self.clients) >= self.config.concurrent_limit:
            return self._refuse(conn, "limit", "ERROR", MSG_LIMIT)
        self.accept(conn, self.queues.take(conn.id))
        return None

    def accept(self, conn: Conn, queued: list[tuple[str, bytes]] | None) -> None:
        """``conn`` holds its id now: OPEN, then what was queued for the id (src, body)."""
        m = self.metrics
        old = self.clients.get(conn.id)
        if old is not None and old is not conn:
            # Same id, same token: a reload or a blip. The new socket takes over right now.
            m.takeovers += 1
            conn.contacts = old.contacts
            old.contacts = set()
            old.registered = False
            self._close(old, WSCloseCode.GOING_AWAY)
        else:
            m.connected += 1
        conn.registered = True
        conn.src_prefix = b'{"src":"' + conn.id.encode() + b'",'
        conn.last_seen = self.coarse_now
        self.clients[conn.id] = conn
        m.connections_total += 1
        self.send(conn, OPEN_FRAME)
        if queued:
            for src, body in queued:
                self.send(conn, body)
                m.relayed += 1
                conn.contacts.add(src)
                sender = self.clients.get(src)
                if sender is not None:
                    sender.contacts.add(conn.id)

    def _refuse(self, conn: Conn, reason: str, type_: str, msg: str) -> None:
        self.refuse(conn, reason, type_, msg)

    def refuse(self, conn: Conn, reason: str, type_: str, msg: str) -> None:
        self.metrics.rejected[reason] += 1
        self.send(conn, _DUMPS({"type": type_, "payload": {"msg": msg}}))
        self._close(conn, WSCloseCode.POLICY_VIOLATION)

    def unregister(self, conn: Conn) -> None:
        conn.out = []
        conn.last_dst = None
        if not conn.registered:
            return
        conn.registered = False
        gone = conn.id
        if self.clients.get(gone) is not conn:
            return
        del self.clients[gone]
        self.metrics.connected -= 1
        cluster = self.cluster
        for peer in conn.contacts:
            pc = self.clients.get(peer)
            if pc is not None and pc is not conn:
                pc.contacts.discard(gone)
                self.send(pc, _DUMPS({"type": "LEAVE", "src": gone, "dst": peer}))
                self.metrics.leaves_sent += 1
            elif pc is None and cluster is not None:
                cluster.send(peer, gone, _DUMPS({"type": "LEAVE", "src": gone, "dst": peer}), "d")
                self.metrics.leaves_sent += 1
        conn.contacts = set()
        if cluster is not None:
            cluster.released(conn)

    def evict(self, conn: Conn, *, taken: bool) -> set[str]:
        """The cluster gave ``conn``'s id to another socket: close it without LEAVE (a takeover is
        not a departure; ``taken``: another token holds it now, so say ID-TAKEN). Returns its contacts."""
        if self.clients.get(conn.id) is conn:
            del self.clients[conn.id]
            self.metrics.connected -= 1
        conn.registered = False
        contacts, conn.contacts = conn.contacts, set()
        if taken:
            self.send(conn, _DUMPS({"type": "ID-TAKEN", "payload": {"msg": MSG_TAKEN}}))
        self._close(conn, WSCloseCode.GOING_AWAY)
        return contacts

    def _close(self, conn: Conn, code: WSCloseCode) -> None:
        """Flush what is queued, send CLOSE, and wait for the peer's CLOSE before dropping TCP.

        Dropping the socket right after our CLOSE (as we once did) lets the peer's reply hit a
        closed socket: the RST that follows can discard our last frames (ID-TAKEN, ERROR) before
        the browser reads them, and the browser reports ``wasClean=false``. So the TCP side is
        closed when the peer's CLOSE arrives (``odd_frame``), or after ``close_grace`` at the latest.
        """
        self._flush_one(conn)
        tr = conn.transport
        if tr is None or tr.is_disconnected or conn.closer is not None:
            return
        tr.send_close(code)
        loop = self._loop or asyncio.get_event_loop()
        conn.closer = loop.call_later(self.config.close_grace, self._drop, conn)
        self.closing.add(conn)

    def _drop(self, conn: Conn) -> None:
        """The peer never answered our CLOSE: close the TCP side anyway."""
        self.closing.discard(conn)
        if conn.closer is not None:
            conn.closer.cancel()
            conn.closer = None
        tr = conn.transport
        if tr is not None and not tr.is_disconnected:
            self.metrics.drop("close_timeout")
            tr.disconnect()

    # relay ---------------------------------------------------------------------------------
    def build(self, t: str, src: str, dst: str, msg: dict[str, Any]) -> bytes:
        """Re-serialise with only the four forwarded fields (slow path: extra keys, odd spacing)."""
        if "payload" in msg:
            return _DUMPS({"type": t, "src": src, "dst": dst, "payload": msg["payload"]})
        return _DUMPS({"type": t, "src": src, "dst": dst})

    def relay_offline(self, conn: Conn, t: str, dst: Any, msg: dict[str, Any], raw: bytes = b"") -> None:
        if t == "LEAVE" and dst is None:
            # PeerJS semantics: a LEAVE without dst means "I am leaving".
            self.unregister(conn)
            self._close(conn, WSCloseCode.OK)
            return
        if not valid_id(dst):
            self.reject_frame(conn, "invalid_dst", "Invalid dst")
            return
        if self.cluster is not None:
            # Not on this node: wherever it is in the service (or queued in Redis).
            if len(msg) == 3 and "payload" in msg and raw[:1] == b"{":
                body = conn.src_prefix + raw[1:]
            else:
                body = self.build(t, conn.id, dst, msg)
            conn.contacts.add(dst)
            conn.last_dst = None
            self.cluster.send(dst, conn.id, body, "n" if t == "LEAVE" or t == "EXPIRE" else "q")
            return
        if t == "LEAVE" or t == "EXPIRE":
            self.metrics.drop("dst_offline")  # the reference ignores these too
            return
        if not self.queues.push(dst, self.coarse_now, conn.id, self.build(t, conn.id, dst, msg)):
            return self._queue_full(conn, dst)
        self.metrics.queued += 1

    def _queue_full(self, conn: Conn, dst: str) -> None:
        self.metrics.drop("queue_full")
        self.send(conn, _DUMPS({"type": "EXPIRE", "src": dst, "dst": conn.id}))

    def reject_frame(self, conn: Conn, reason: str, msg: str) -> None:
        self.metrics.drop(reason)
        if reason == "rate_limited":
            if conn.warned:
                return
            conn.warned = True
        self.send(conn, error_frame(msg))

    def odd_frame(self, conn: Conn, frame: WSFrame) -> None:
        mt = frame.msg_type
        if mt is _CLOSE:
            tr = conn.transport
            if tr is not None:
                if not tr.is_close_frame_sent:
                    tr.send_close(WSCloseCode.OK)
                tr.disconnect()
            return
        if not conn.registered or mt in (WSMsgType.PING, WSMsgType.PONG):
            return
        if mt is WSMsgType.BINARY:
            self.reject_frame(conn, "binary", "Binary frames are not supported")
        elif mt is WSMsgType.CONTINUATION:
            self.metrics.drop("fragmented")
        else:
            self.reject_frame(conn, "fragmented", "Fragmented frames are not supported")

    # output batching ----------------------------------------------------------------------
    def send(self, conn: Conn, body: bytes) -> None:
        out = conn.out
        if not out:
            self.mark_dirty(conn)
        out.append(text_header(len(body)))
        out.append(body)

    def mark_dirty(self, conn: Conn) -> None:
        self._dirty.append(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop = self._loop or asyncio.get_event_loop()
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            self._flush_one(conn)

    def _flush_one(self, conn: Conn) -> None:
        out = conn.out
        if not out:
            return
        conn.out = []
        raw = conn.raw
        tr = conn.transport
        if raw is None or tr is None or tr.is_disconnected or tr.is_close_frame_sent:
            return
        if raw.get_write_buffer_size() > self.max_write_buffer:
            self.metrics.drop("backpressure", len(out) // 2)
            return
        raw.write(b"".join(out))

    # periodic work -------------------------------------------------------------------------
    def sweep(self) -> None:
        """Refresh the coarse clock, reset rate windows, close silent sockets, expire queues."""
        now = self.coarse_now = self.now()
        if now - self._window_start >= 1.0:
            self._window_start = now
            for c in self.clients.values():
                c.count = 0
                c.warned = False
        alive = self.config.alive_timeout
        dead = [c for c in self.clients.values() if now - c.last_seen > alive]
        for c in dead:
            self.metrics.drop("alive_timeout")
            self._close(c, WSCloseCode.GOING_AWAY)
            self.unregister(c)
        expire = self.config.expire_timeout
        if self.cluster is not None:
            self.cluster.sweep(now)
        expired, owed = self.queues.expire(now, expire)
        self.metrics.expired += expired
        for dst, src in owed:
            sender = self.clients.get(src)
            if sender is not None:
                self.send(sender, _DUMPS({"type": "EXPIRE", "src": dst, "dst": src}))


def _first(q: dict[str, list[str]], name: str) -> str | None:
    v = q.get(name)
    return v[0] if v else None


def _http(status: int, body: bytes, headers: dict[str, str]) -> WSUpgradeResponseWithListener:
    if status == 200:
        resp = WSUpgradeResponse.create_ok_response(body, headers)
    else:
        resp = WSUpgradeResponse.create_error_response(status, body or None, headers)
    return WSUpgradeResponseWithListener(resp, None)
