"""Frames for other nodes: the ordered outbox, its single writer, and the queue's expiry.

Part of :class:`~kibitz.server.cluster.Cluster` (see its docstring): a frame whose destination is
not on this node goes into the outbox; one writer task sends the outbox in batches with the ROUTE
script (cluster_wire.py), so frames between two peers keep their order, and a batch re-sent after
a lost reply is not published twice. Frames queued in Redis for an id that is nowhere are taken
back after ``expire_timeout`` and their senders told ``EXPIRE``, as on one node.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson

from . import cluster_wire as wire

if TYPE_CHECKING:
    from .cluster import Cluster

BATCH_MAX = 256
BATCH_BYTES = 1 << 20

# (enqueued at, dst, src, body, mode)
Outgoing = tuple[float, str, str, bytes, str]


class Frames:
    """The outbox and the Redis-side offline queue of one node."""

    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster
        self.outbox: deque[Outgoing] = deque()
        self.queued: deque[tuple[float, str, str, bytes]] = deque()  # (t, dst, src, value) in Redis
        self._wake = asyncio.Event()
        self._seq = 0

    def send(self, dst: str, src: str, body: bytes, mode: str) -> None:
        """Route a frame to wherever ``dst`` is (mode 'q': queue it if it is nowhere)."""
        if mode == "q" and len(self.queued) + len(self.outbox) >= self.c.config.queue_total:
            self.c.broker.metrics.drop("queue_full")
            self._tell_expired(src, dst)
            return
        self.outbox.append((self.c.broker.coarse_now, dst, src, body, mode))
        if len(self.outbox) == 1:
            self._wake.set()

    def _tell_expired(self, src: str, dst: str) -> None:
        """``EXPIRE`` from ``dst`` to ``src`` (wherever ``src`` is)."""
        b = self.c.broker
        frame = orjson.dumps({"type": "EXPIRE", "src": dst, "dst": src})
        sender = b.clients.get(src)
        if sender is not None:
            b.send(sender, frame)
        else:
            self.send(src, dst, frame, "n")

    async def writer(self) -> None:
        from redis.exceptions import RedisError

        out = self.outbox
        while True:
            if not out:
                self._wake.clear()
                await self._wake.wait()
                continue
            n = size = 0
            args: list[Any] = [self.c.prefix, self.c.node, 0, self.c.config.queue_per_id,
                               int(self.c.config.expire_timeout * 1000) + 5000]
            for item in out:
                if n >= BATCH_MAX or (n and size + len(item[3]) > BATCH_BYTES):
                    break
                args += item[1:]
                n += 1
                size += len(item[3])
            self._seq += 1
            args[2] = self._seq
            delay = 0.05
            while True:
                try:
                    st = await self.c._s_route(args=args)
                    break
                except (RedisError, OSError) as exc:
                    self.c._failed("route", exc)
                    await asyncio.sleep(delay)
                    delay = min(1.0, delay * 2)
                    if self.c.broker.coarse_now - out[0][0] > self.c.config.expire_timeout:
                        st = None  # Redis has been away too long: these frames are lost
                        break
            batch = [out.popleft() for _ in range(n)]
            self._settle(batch, st)

    def _settle(self, batch: list[Outgoing], st: bytes | None) -> None:
        b = self.c.broker
        now = b.coarse_now
        told: set[tuple[str, str]] = set()
        for i, (_, dst, src, body, mode) in enumerate(batch):
            s = st[i] if st is not None else ord("l")
            if s == ord("d"):
                self.c.cross_out += 1
            elif s == ord("q"):
                self.queued.append((now, dst, src, wire.queue_value(src, body)))
                b.metrics.queued += 1
            elif s == ord("x"):
                b.metrics.drop("dst_offline")
            else:  # 'f': the id's queue is full; 'l': lost while Redis was away
                b.metrics.drop("queue_full" if s == ord("f") else "cluster_unavailable")
                if mode in "qQ" and (src, dst) not in told:
                    told.add((src, dst))
                    self._tell_expired(src, dst)

    def sweep(self, now: float) -> None:
        """Take back frames queued in Redis that nobody claimed within ``expire_timeout``."""
        q = self.queued
        expire = self.c.config.expire_timeout
        if not q or now - q[0][0] < expire:
            return
        due = []
        while q and now - q[0][0] >= expire:
            due.append(q.popleft())
        self.c._spawn(self._unqueue(due))

    async def _unqueue(self, due: list[tuple[float, str, str, bytes]]) -> None:
        from redis.exceptions import RedisError

        args: list[Any] = [self.c.prefix]
        for _, dst, _src, value in due:
            args += [dst, value]
        try:
            st = await self.c._s_unqueue(args=args)
        except (RedisError, OSError) as exc:
            self.c._failed("expire", exc)  # Redis is away: the queue went with it, or expires there
            return
        told: set[tuple[str, str]] = set()
        b = self.c.broker
        for (_, dst, src, _), s in zip(due, st, strict=True):
            if s == ord("1"):
                b.metrics.expired += 1
                if (src, dst) not in told:  # one EXPIRE per sender, like peer
                    told.add((src, dst))
                    self._tell_expired(src, dst)
