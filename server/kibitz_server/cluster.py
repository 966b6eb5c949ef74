"""Several ``kibitz serve`` nodes as one service on Redis (``kibitz serve --redis redis://HOST:PORT/DB``).

The pattern is LiveKit's: a room lives on one node (``/api/signal`` on any node names the same one,
by rendezvous hashing over the live nodes); Redis holds who is where and carries what has to cross
nodes. Keys, records and the Lua scripts are in ``cluster_wire.py``. What this class adds to the
one-node broker:

* **Registry.** Every ``cluster_heartbeat`` s the node refreshes its key (expiry ``cluster_node_ttl``)
  and reads the live set in the same script. A node missing from it is dead: its ids are free, its
  rooms move, and peers here that had signaling contacts on it get ``LEAVE`` from them (unless the
  id is already held by a live node again).
* **Ids.** A claim is one script: ``ID-TAKEN`` if a live node holds the id under another token,
  else the id with a new fencing epoch, the offline queue popped, and the previous owner told to
  close its copy (no LEAVE: a takeover is not a departure; it sends back the contacts). Releases and
  lease refreshes only act on a matching (node, epoch). If Redis lost its data, or this node looked
  dead for a while, the next heartbeat notices and the node writes its ids back; any it lost in
  between are closed here.
* **Frames** (``cluster_frames.py``). A frame whose destination is not on this node goes into an
  ordered outbox; one writer task sends it in batches (one script call per batch: look up each
  owner, PUBLISH one payload per node, or queue for an id that is nowhere), so frames between two
  peers keep their order. Each
  node reads its own channel. Queued frames expire as on one node: the node that queued one takes
  it back after ``expire_timeout`` and, if nobody had claimed it, tells the sender ``EXPIRE``.
* **Redis down.** Claims are refused (``ERROR``, counted ``cluster_unavailable``: fail closed, no
  claim is decided locally; a node cut off for longer than its key lives may see one of its ids
  given away elsewhere until it is back and closes its copy); frames between peers on the same node
  carry on; frames for other nodes
  wait in the outbox (bounded) and go when Redis is back, or their senders get ``EXPIRE`` after
  ``expire_timeout``. Pub/sub is fire-and-forget: a frame published while a subscriber is
  reconnecting is lost (signaling retries cover it, as for a lost UDP packet).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from . import cluster_wire as wire
from .cluster_frames import Frames
from .cluster_metrics import render_cluster
from .config import ServerConfig
from .signal import BrokerInfo, rendezvous

if TYPE_CHECKING:
    from .broker import Broker, Conn

log = logging.getLogger("kibitz.cluster")

MSG_UNAVAILABLE = "Server is temporarily unavailable"

class Cluster:
    """This node's part of the service: registry, id ownership and cross-node frames over Redis."""

    def __init__(self, broker: Broker, config: ServerConfig, broker_url: str, http_url: str) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        assert config.redis_url is not None
        self.broker = broker
        self.config = config
        self.node = "n" + secrets.token_hex(6)
        self.prefix = config.redis_prefix
        self.broker_url = broker_url
        self.http_url = http_url
        self.ttl_ms = int(config.cluster_node_ttl * 1000)
        self.lease_ms = int(config.cluster_lease * 1000)
        # No automatic retries: a command that failed is handled here (a re-sent PUBLISH would
        # duplicate frames). Commands time out so a hung Redis looks like a dead one.
        kw: dict[str, Any] = {"retry": Retry(NoBackoff(), 0), "socket_connect_timeout": 2.0}
        # Bounded: a reconnect storm (a dead node's peers arriving at once) waits for a connection
        # instead of failing its claims.
        pool = aioredis.BlockingConnectionPool.from_url(
            config.redis_url, max_connections=64, timeout=5.0, socket_timeout=2.0, **kw
        )
        self.redis = aioredis.Redis(connection_pool=pool)
        # The subscriber blocks for as long as the channel is quiet: no read timeout there.
        self.sub_redis = aioredis.Redis.from_url(config.redis_url, **kw)
        self._s_beat = self.redis.register_script(wire.BEAT)
        self._s_claim = self.redis.register_script(wire.CLAIM)
        self._s_release = self.redis.register_script(wire.RELEASE)
        self._s_refresh = self.redis.register_script(wire.REFRESH)
        self._s_route = self.redis.register_script(wire.ROUTE)
        self._s_unqueue = self.redis.register_script(wire.UNQUEUE)
        self.channel = f"{self.prefix}ch:{self.node}"
        self.up = False
        self.view: dict[str, dict[str, Any]] = {}
        self.claiming: dict[str, Conn] = {}
        self._claim_tail: dict[str, asyncio.Future[None]] = {}
        self.remote_home: dict[str, str] = {}
        self.frames = Frames(self)
        #: Route a frame to wherever its dst is (mode 'q': queue it in Redis if it is nowhere).
        self.send = self.frames.send
        #: Called by the broker's sweep: take back queued frames nobody claimed in time.
        self.sweep = self.frames.sweep
        self.suspects: dict[str, float] = {}  # broker URL -> until (monotonic)
        self._probes: dict[str, tuple[float, bool]] = {}
        self.started = time.time()
        self.cross_out = 0
        self.cross_in = 0
        self.redis_errors = 0
        self.reasserts = 0
        self.kicks = 0
        self.lost_ids = 0
        self.malformed = 0
        self.beats = 0
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._sub_task: asyncio.Task[None] | None = None
        self._sub_ready = asyncio.Event()

    # lifecycle -----------------------------------------------------------------------------
    async def start(self, timeout: float = 5.0) -> bool:
        """Register and subscribe; True if Redis answered within ``timeout`` (else keep trying)."""
        self._sub_task = asyncio.get_running_loop().create_task(self._subscriber())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._sub_ready.wait(), timeout)
        await self._beat()
        for coro in (self._beat_loop(), self.frames.writer(), self._refresh_loop()):
            self._loops.append(asyncio.get_running_loop().create_task(coro))
        return self.up and self._sub_ready.is_set()

    async def leave(self) -> None:
        """Leave the live set now (graceful shutdown): other nodes stop handing out our broker."""
        for t in self._loops[:1]:
            t.cancel()
        with contextlib.suppress(Exception):
            await self.redis.delete(f"{self.prefix}node:{self.node}")
            await self.redis.srem(f"{self.prefix}nodes", self.node)

    async def close(self, drain: float = 1.0) -> None:
        """After the broker closed its sockets: send what is left, free our ids, stop."""
        deadline = time.monotonic() + drain
        while (self.frames.outbox or self._tasks) and time.monotonic() < deadline and self.up:
            await asyncio.sleep(0.02)
        self._closing = True
        held = [(c.id, c.epoch) for c in self.broker.clients.values() if c.epoch]
        if held and self.up:
            with contextlib.suppress(Exception):
                await self._release(held)
        tasks = [*self._loops, *self._tasks]
        if self._sub_task is not None:
            tasks.append(self._sub_task)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        await self.redis.aclose()
        await self.sub_redis.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("cluster task failed", exc_info=task.exception())

    def _failed(self, what: str, exc: BaseException) -> None:
        self.redis_errors += 1
        if self.up:
            log.warning("redis unavailable (%s): %r", what, exc)
        self.up = False

    # registry ------------------------------------------------------------------------------
    def info(self) -> bytes:
        m = self.broker.metrics
        return orjson.dumps(
            {
                "broker": self.broker_url, "http": self.http_url, "peers": m.connected,
                "relayed": m.relayed, "cross_out": self.cross_out, "cross_in": self.cross_in,
                "started": int(self.started),
            }
        )

    async def _beat(self) -> None:
        from redis.exceptions import RedisError

        try:
            res = await self._s_beat(args=[self.prefix, self.node, self.info(), self.ttl_ms])
        except (RedisError, OSError) as exc:
            self._failed("heartbeat", exc)
            return
        was_down = not self.up
        self.up = True
        existed = bool(res[0])
        view: dict[str, dict[str, Any]] = {}
        for i in range(1, len(res) - 1, 2):
            with contextlib.suppress(ValueError):
                info = orjson.loads(res[i + 1])
                if isinstance(info, dict) and isinstance(info.get("broker"), str):
                    view[res[i].decode()] = info
        dead = set(self.view) - set(view) - {self.node}
        self.view = view
        if self.beats and (was_down or not existed):
            # Redis restarted (lost our keys) or we looked dead for a while: put our ids back and
            # close any that were given away meanwhile; the subscription may be gone too.
            log.warning("redis: back after an outage; writing this node's ids back")
            self.reasserts += 1
            self._spawn(self.refresh_all())
            if was_down and self._sub_task is not None:
                self._sub_task.cancel()
                self._sub_ready.clear()
                self._sub_task = asyncio.get_running_loop().create_task(self._subscriber())
        self.beats += 1
        if dead:
            self._nodes_died(dead)

    async def _beat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.cluster_heartbeat)
            await self._beat()

    async def choose(self, room: str, key: str, failed: str | None = None) -> dict[str, Any]:
        """/api/signal: the broker of the room's node, the same on every node with the same view.

        ``failed``: a client could not reach that broker. If it is a live node's and a TCP probe
        fails too, the node is left out here until the registry drops it (so a room moves within a
        second of its node dying, not after ``cluster_node_ttl``). Only URLs of live nodes are ever
        probed.
        """
        now = time.monotonic()
        live = {str(i["broker"]) for i in self.view.values()}
        self.suspects = {u: t for u, t in self.suspects.items() if t > now and u in live}
        check = bool(failed) and failed in live and failed != self.broker_url and failed not in self.suspects
        if check and failed is not None and not await self._probe(failed):
            log.warning("broker %s refused a probe after a client failed to reach it", failed)
            self.suspects[failed] = now + self.config.cluster_node_ttl + self.config.cluster_heartbeat
        urls = sorted(live - set(self.suspects)) or [self.broker_url]
        pick = rendezvous(room, urls)
        return BrokerInfo(pick or self.broker_url, key).describe()

    async def _probe(self, url: str) -> bool:
        """Can we open a TCP connection to ``url``'s broker? Answers are kept for half a second."""
        now = time.monotonic()
        cached = self._probes.get(url)
        if cached is not None and now - cached[0] < 0.5:
            return cached[1]
        parts = urlsplit(url)
        ok = False
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(parts.hostname, parts.port or (443 if parts.scheme == "wss" else 80)),
                1.0,
            )
            writer.close()
            ok = True
        except (OSError, TimeoutError, ValueError):
            ok = False
        self._probes[url] = (time.monotonic(), ok)
        return ok

    def _nodes_died(self, dead: set[str]) -> None:
        """LEAVE from every id that lived on a dead node, to the peers here it had signaled with."""
        b = self.broker
        cands: dict[str, list[Conn]] = {}
        for conn in b.clients.values():
            for c in conn.contacts:
                if c not in b.clients and self.remote_home.get(c) in dead:
                    cands.setdefault(c, []).append(conn)
        self.remote_home = {k: v for k, v in self.remote_home.items() if v not in dead}
        log.warning("nodes left the live set: %s (%d remote contacts)", sorted(dead), len(cands))
        if cands:
            self._spawn(self._leave_from_dead(cands))

    async def _leave_from_dead(self, cands: dict[str, list[Conn]]) -> None:
        from redis.exceptions import RedisError

        ids = list(cands)
        try:
            recs = await self.redis.mget([f"{self.prefix}id:{i}" for i in ids])
        except (RedisError, OSError) as exc:
            self._failed("lookup", exc)
            recs = [None] * len(ids)
        for id_, raw in zip(ids, recs, strict=True):
            rec = wire.IdRecord.decode(raw if isinstance(raw, bytes) else None)
            if rec is not None and rec.node in self.view:
                continue  # it already came back on a live node: not a departure
            for conn in cands[id_]:
                if conn.registered and id_ in conn.contacts:
                    conn.contacts.discard(id_)
                    self.broker.send(conn, orjson.dumps({"type": "LEAVE", "src": id_, "dst": conn.id}))
                    self.broker.metrics.leaves_sent += 1

    # ids -----------------------------------------------------------------------------------
    def claim(self, conn: Conn) -> None:
        conn.early = []
        self.claiming[conn.id] = conn
        # Claims for one id go to Redis one after the other: the "no socket here" flag each one
        # sends must see the outcome of the one before.
        prev = self._claim_tail.get(conn.id)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._claim_tail[conn.id] = done
        self._spawn(self._claim_after(conn, prev, done))

    async def _claim_after(
        self, conn: Conn, prev: asyncio.Future[None] | None, done: asyncio.Future[None]
    ) -> None:
        try:
            if prev is not None:
                await asyncio.shield(prev)
            await self._claim(conn)
        finally:
            done.set_result(None)
            if self._claim_tail.get(conn.id) is done:
                del self._claim_tail[conn.id]

    async def _claim(self, conn: Conn) -> None:
        from redis.exceptions import RedisError

        b = self.broker
        local = b.clients.get(conn.id)
        free = "0" if local is not None and local.registered else "1"
        token = wire.token_hash(conn.token or "")
        try:
            res = await self._s_claim(
                args=[self.prefix, conn.id, self.node, token, self.lease_ms, free]
            )
        except (RedisError, OSError) as exc:
            self._failed("claim", exc)
            res = None
        if self.claiming.get(conn.id) is conn:
            del self.claiming[conn.id]
        early, conn.early = conn.early or [], None
        if res is None:
            b.refuse(conn, "cluster_unavailable", "ERROR", MSG_UNAVAILABLE)
            return
        if res[0] == b"taken":
            b.refuse(conn, "id_taken", "ID-TAKEN", "ID is taken")
            return
        epoch, prev = int(res[1]), res[2].decode()
        queued = [q for q in (wire.split_queue_value(v) for v in res[3:]) if q is not None]
        tr = conn.transport
        if tr is None or tr.is_disconnected or tr.is_close_frame_sent:
            self._spawn(self._release([(conn.id, epoch)]))  # gone while we asked
            return
        if prev and prev != self.node:
            b.metrics.takeovers += 1
        old = b.clients.get(conn.id)
        if old is not None and old is not conn and old.token != conn.token:
            b.evict(old, taken=True)  # Redis gave the id to this token: the other socket lost it
        conn.epoch = epoch
        b.accept(conn, queued)
        for m, from_node in early:
            self._deliver(m, from_node)

    async def _release(self, held: list[tuple[str, int]]) -> None:
        from redis.exceptions import RedisError

        args: list[Any] = [self.prefix, self.node]
        for id_, epoch in held:
            args += [id_, epoch]
        try:
            await self._s_release(args=args)
        except (RedisError, OSError) as exc:
            self._failed("release", exc)  # the lease runs out; the node check frees it sooner

    def released(self, conn: Conn) -> None:
        if conn.epoch and not self._closing:
            self._spawn(self._release([(conn.id, conn.epoch)]))

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.cluster_lease / 3)
            await self.refresh_all()

    async def refresh_all(self) -> None:
        """Extend (or write back) the records of every id held here; close the ones lost."""
        from redis.exceptions import RedisError

        b = self.broker
        # Forget where remote ids live once no socket here has them as a contact any more.
        contacts = {c for conn in b.clients.values() for c in conn.contacts}
        self.remote_home = {k: v for k, v in self.remote_home.items() if k in contacts}
        conns = [c for c in b.clients.values() if c.registered and c.epoch]
        for i in range(0, len(conns), 500):
            chunk = conns[i : i + 500]
            args: list[Any] = [self.prefix, self.node, self.lease_ms]
            for c in chunk:
                args += [c.id, c.epoch, wire.token_hash(c.token or "")]
            try:
                st = await self._s_refresh(args=args)
            except (RedisError, OSError) as exc:
                self._failed("refresh", exc)
                return
            for c, s in zip(chunk, st, strict=True):
                if s != ord("k") and b.clients.get(c.id) is c:
                    self.lost_ids += 1
                    b.evict(c, taken=s == ord("t"))

    # inbound -------------------------------------------------------------------------------
    async def _subscriber(self) -> None:
        from redis.exceptions import RedisError

        delay = 0.05
        while True:
            ps = self.sub_redis.pubsub(ignore_subscribe_messages=True)
            try:
                await ps.subscribe(self.channel)
                self._sub_ready.set()
                delay = 0.05
                async for msg in ps.listen():
                    if msg.get("type") == "message":
                        try:
                            self.on_batch(msg["data"])
                        except Exception:  # one bad batch must not stop the subscriber
                            self.malformed += 1
                            log.exception("cluster batch failed")
            except (RedisError, OSError) as exc:
                self._sub_ready.clear()
                self._failed("subscribe", exc)
            finally:
                with contextlib.suppress(Exception):
                    await ps.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)

    def on_batch(self, payload: bytes) -> None:
        from_node, records, bad = wire.decode_batch(payload)
        self.malformed += bad
        b = self.broker
        for r in records:
            if type(r) is wire.Message:
                self._deliver(r, from_node)
            elif type(r) is wire.Kick:
                conn = b.clients.get(r.id)
                if conn is not None and conn.registered and conn.epoch < r.epoch:
                    self.kicks += 1
                    contacts = b.evict(conn, taken=False)
                    contacts.discard(r.id)
                    if contacts and from_node != self.node:
                        self._spawn(self._publish(from_node, [wire.Contacts(r.id, r.epoch, tuple(contacts))]))
            elif type(r) is wire.Contacts:
                conn = b.clients.get(r.id)
                if conn is not None and conn.epoch == r.epoch:
                    conn.contacts.update(r.contacts)

    def _deliver(self, m: wire.Message, from_node: str) -> None:
        b = self.broker
        conn = b.clients.get(m.dst)
        if conn is not None and conn.registered:
            b.send(conn, m.body)
            b.metrics.relayed += 1
            if from_node != self.node:
                self.cross_in += 1
            if m.departure:  # as on one node: a peer that went away is no contact any more
                conn.contacts.discard(m.src)
                self.remote_home.pop(m.src, None)
            else:
                conn.contacts.add(m.src)
                if from_node != self.node:
                    self.remote_home[m.src] = from_node
            return
        pending = self.claiming.get(m.dst)
        if pending is not None and pending.early is not None:
            pending.early.append((m, from_node))
            return
        # The id left this node after the frame was routed: once more through Redis, never back here.
        self.send(m.dst, m.src, m.body, "Q" if m.queueable else "D" if m.departure else "N")

    async def _publish(self, node: str, records: list[wire.Record]) -> None:
        from redis.exceptions import RedisError

        try:
            await self.redis.publish(f"{self.prefix}ch:{node}", wire.encode_batch(self.node, records))
        except (RedisError, OSError) as exc:
            self._failed("publish", exc)

    def render(self) -> str:
        return render_cluster(self)
