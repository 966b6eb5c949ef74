"""The reliable message stream of :class:`~kibitz.mesh.Mesh`: ordered, exactly-once JSON over links.

The mesh (:mod:`kibitz.mesh`) owns the links: which members to dial, one link per peer, holding,
parking, timeouts and retries. This module owns what flows over them, in the frames of
:mod:`kibitz.mesh_wire`. :class:`Streams` is what all peers of one mesh share (writes, the
reassembly budget, the one ack timer, departed peers' receive positions, delivery, broadcast);
:class:`PeerStream` is one peer's two streams (ours to it, its to us) and outlives its links.

Interface (the rest is private to this module):

* members: :meth:`Streams.stream` makes a member's stream, :meth:`Streams.retire` drops it,
  :meth:`Streams.close` stops the ack timer;
* each link: :meth:`PeerStream.open` once the mesh's link is open (it says ``hi``), every frame
  received on it to :meth:`PeerStream.on_text` (text) or :meth:`PeerStream.on_frame` (any), and
  :meth:`PeerStream.detach` when it is gone; :attr:`PeerStream.greeted`: data flows;
* sending (messages checked by :func:`~kibitz.mesh_wire.encode`): :meth:`PeerStream.enqueue`
  (:class:`SendBufferFull`), :meth:`Streams.broadcast`, :meth:`PeerStream.drained` after a drain
  signal, :meth:`PeerStream.say_bye`;
* back to the mesh, about the stream's own peer, through :class:`LinkSide`: ``on_greeted`` (its
  ``hi`` arrived: the link is up), ``on_bye`` (it leaves on purpose) and ``on_overload`` (close this
  link and plan the next: a reassembly over the shared budget).

Reliable delivery
    Each direction between two peers is a *stream* named by a random stream id (``sid``) chosen
    when the sender starts talking to that peer. Every message on it carries a sequence number
    (1, 2, …). The receiver delivers only the next number, skips duplicates and acknowledges
    cumulatively; the sender keeps every unacknowledged message and, on each new link, resends
    them from the oldest. Data sent while a link is down is queued and arrives after recovery, in
    order, exactly once. The resend buffer is bounded per peer (:data:`MAX_BUFFER_BYTES`): when
    it is full, what is queued is kept and new sends to that peer are refused with
    :class:`SendBufferFull` (a broadcast skips that peer and counts it). A message that alone
    exceeds the bound is still accepted when the buffer is empty.

Acks
    Acks are coalesced: one rides on the next message going back when there is one (a request and
    its reply cost two frames, not four); otherwise an ``ack`` frame follows after
    :data:`ACK_EVERY` messages, :data:`ACK_BYTES` bytes or :data:`ACK_DELAY` seconds.

Backpressure
    The writer stops while ``transport.buffered_amount(link)`` is above :data:`HIGH_WATER` and
    resumes on a short timer (:data:`PUMP_RETRY`); a backend with a drain signal may also call
    :meth:`~kibitz.mesh.Mesh.pump`. None is wired yet: page-to-page bulk transfers were measured
    bound by the receiver's CPU, not by this wait. Only our own writes fill that buffer, so after
    reading it the writer spends the room left (its *credit*) without asking again: a stream of
    small messages reads the buffer once per megabyte instead of once per frame (in the page every
    read is a crossing into JS).

Bad input (oversize, malformed, unknown or out-of-order frames, reassemblies too large or over the
memory budget) is dropped and counted in the mesh's drops; nothing a peer sends raises here.

Pure like the mesh: time through the :class:`~kibitz.clock.Scheduler`, I/O through the
:class:`~kibitz.transport.Transport`. :mod:`kibitz.mesh` re-exports the constants; they are read
here (or in :mod:`kibitz.mesh_wire`), so patch them here.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kibitz.clock import Scheduler, TimerHandle
from kibitz.mesh_wire import (
    BYE_FRAME,
    CHUNK_HEADER,
    CHUNK_SIZE,
    CONTROL_ENCODER,
    FRAME_VERSION,
    MAGIC,
    MAX_MESSAGE_BYTES,
    MAX_TEXT_FRAME,
    Encoded,
    is_int,
    loads_text,
)
from kibitz.protocol.base import DropCounter
from kibitz.transport import LinkId, Payload, Transport

log = logging.getLogger("kibitz.mesh")  # one logger for the whole mesh

HIGH_WATER = 1024 * 1024
"""Stop writing while this many bytes wait in the link's send buffer."""
PUMP_RETRY = 0.02
MAX_BUFFER_BYTES = 16 * 1024 * 1024
"""Resend buffer per peer (unacknowledged messages)."""
REASSEMBLY_BUDGET = 128 * 1024 * 1024
"""Bytes reserved by all incoming reassemblies together."""
ACK_DELAY = 0.05
ACK_EVERY = 16
ACK_BYTES = 256 * 1024
RECV_MEMORY = 256
"""Departed peers whose receive position (stream id, last delivered) we remember."""


class SendBufferFull(ValueError):
    """The resend buffer toward a peer is full: its link is down or it is not keeping up."""


class LinkSide(Protocol):
    """What a stream asks of the mesh's link half, always about the stream's own peer."""

    def on_greeted(self, first: bool) -> None:
        """The peer's ``hi`` arrived on the current link (``first``: the link was not up yet)."""

    def on_bye(self) -> None:
        """The peer said ``bye``: it leaves on purpose."""

    def on_overload(self) -> None:
        """Close the current link and plan the next one (the sender resends over it)."""


@dataclass(slots=True)
class _Out:
    """One message not yet acknowledged; ``text`` for one-frame messages, ``blob`` for chunked."""

    seq: int
    size: int
    text: str | None = None
    blob: bytes | None = None

    @property
    def chunks(self) -> int:
        return 1 if self.blob is None else max(1, math.ceil(len(self.blob) / CHUNK_SIZE))


@dataclass(slots=True)
class _Reassembly:
    seq: int
    total: int
    count: int
    next: int = 0
    buf: bytearray = field(default_factory=bytearray)


class Streams:
    """What the streams of one mesh share; makes and retires each member's :class:`PeerStream`.

    ``stats`` and ``drops`` are the mesh's own (this half counts ``delivered``, ``duplicates``,
    ``frames_out``, ``bytes_out`` and ``replayed``); ``on_message(peer, value)`` gets every
    delivered message.
    """

    def __init__(
        self,
        *,
        transport: Transport,
        scheduler: Scheduler,
        rng: random.Random,
        stats: dict[str, int],
        drops: DropCounter,
        on_message: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.transport = transport
        self.clock = scheduler
        self.stats = stats
        self.drops = drops
        self.on_message = on_message
        self.reasm_bytes = 0
        """Bytes reserved by every reassembly in progress (at most :data:`REASSEMBLY_BUDGET`)."""
        self._rng = rng
        self._live: dict[str, PeerStream] = {}
        """Every member's stream, in the order the mesh added them (the ack sweep's order)."""
        self._recv_memory: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._ack_sweep: TimerHandle | None = None
        """One timer for every ack owed, not one per peer or message: arming a timer is a crossing
        into JS in the page, and a request/reply exchange would otherwise arm one per round trip."""

    def stream(self, peer: str, side: LinkSide) -> PeerStream:
        """A new stream for member ``peer`` (our side under a fresh id; where its side stood if it
        was here before)."""
        s = PeerStream(hub=self, side=side, peer=peer, sid=f"{self._rng.getrandbits(48):012x}")
        memory = self._recv_memory.pop(peer, None)
        if memory is not None:
            s.rsid, s.delivered = memory
        self._live[peer] = s
        return s

    def retire(self, s: PeerStream) -> None:
        """``s``'s member was dropped (its link already detached): count what it never got and
        remember how far we read its stream, should it come back."""
        if self._live.get(s.peer) is s:
            del self._live[s.peer]
        if s.out:
            self.drops.by_reason["undelivered-departed"] += len(s.out)
        if s.rsid is not None:
            self._recv_memory[s.peer] = (s.rsid, s.delivered)
            while len(self._recv_memory) > RECV_MEMORY:
                self._recv_memory.popitem(last=False)

    def close(self) -> None:
        """Stop the ack timer."""
        if self._ack_sweep is not None:
            self._ack_sweep.cancel()
            self._ack_sweep = None

    def broadcast(self, encoded: Encoded, only: Callable[[str], bool] | None) -> list[str]:
        """Queue one message for every member ``only`` admits; a full resend buffer skips one."""
        text, blob, size = encoded
        sent: list[str] = []
        for peer in sorted(self._live):
            if only is not None and not only(peer):
                continue
            try:
                self._live[peer].enqueue(text, blob, size)
            except SendBufferFull:
                self.drops.drop("buffer-full")
                continue
            sent.append(peer)
        return sent

    def write(self, link: LinkId, frame: Payload) -> None:
        self.stats["frames_out"] += 1
        self.stats["bytes_out"] += len(frame)
        try:
            self.transport.send(link, frame)
        except Exception as exc:  # a dying link: its LinkClosed will follow
            log.debug("send on %s failed: %s", link, exc)

    def owe_ack(self) -> None:
        if self._ack_sweep is None:
            self._ack_sweep = self.clock.call_later(ACK_DELAY, self._sweep_acks)

    def _sweep_acks(self) -> None:
        """Every ack still owed, at most :data:`ACK_DELAY` after the message that first owed one
        since the last sweep (later ones are acked sooner, never later)."""
        self._ack_sweep = None
        for s in list(self._live.values()):
            if s.unacked_in:
                s.send_ack()


@dataclass(slots=True, eq=False, repr=False)
class PeerStream:
    """Our stream to one peer and its stream to us, over whichever link the mesh has to it."""

    hub: Streams
    side: LinkSide
    peer: str
    sid: str
    link: LinkId | None = None
    """The mesh's link to the peer once it opened (we write on it), else None."""
    greeted: bool = False
    """We have the peer's ``hi`` on the current link: data may flow."""
    pump_timer: TimerHandle | None = None
    # sending
    next_seq: int = 1
    out: deque[_Out] = field(default_factory=deque)
    out_bytes: int = 0
    cursor: int = 0
    chunk: int = 0
    credit: int = 0
    """Bytes we may still write on the current link before reading its buffered amount again."""
    # receiving
    rsid: str | None = None
    delivered: int = 0
    reasm: _Reassembly | None = None
    unacked_in: int = 0
    unacked_in_bytes: int = 0
    ack_sent: int = 0
    """The highest ``delivered`` we told the peer (-1: we owe it an ack whatever it knows)."""
    piggyback: bool = False
    """The peer's ``hi`` said it reads acks carried on messages (``"pa":1``)."""

    def base(self) -> int:
        return self.out[0].seq if self.out else self.next_seq

    # ------------------------------------------------------------------ the link

    def open(self, link: LinkId | None) -> None:
        """The mesh's link to the peer opened: greet the peer on it (data waits for its ``hi``)."""
        self.link = link
        ack = {"sid": self.rsid, "s": self.delivered} if self.rsid is not None else None
        if self.rsid is not None:
            self.ack_sent = self.delivered
        self._send_control({"t": "hi", "v": FRAME_VERSION, "sid": self.sid, "base": self.base(),
                            "ack": ack, "pa": 1})

    def detach(self) -> None:
        """The link is gone: stop writing; what is unacknowledged is resent on the next one."""
        self.link = None
        self.greeted = False
        if self.pump_timer is not None:
            self.pump_timer.cancel()
            self.pump_timer = None
        self._drop_reassembly()
        self.cursor = self.chunk = 0
        self.credit = 0

    def say_bye(self) -> None:
        """Tell the peer we leave on purpose (on an open link only)."""
        if self.link is not None:
            self.hub.write(self.link, BYE_FRAME)

    # ------------------------------------------------------------------ sending

    def enqueue(self, text: str | None, blob: bytes | None, size: int) -> None:
        """Queue one checked message (:func:`~kibitz.mesh_wire.encode`); write what the link takes."""
        if self.out and self.out_bytes + size > MAX_BUFFER_BYTES:
            raise SendBufferFull(
                f"resend buffer toward {self.peer} is full ({self.out_bytes} bytes queued, limit "
                f"{MAX_BUFFER_BYTES}); its link is down or slow, try again later"
            )
        self.out.append(_Out(self.next_seq, size, text, blob))
        self.next_seq += 1
        self.out_bytes += size
        self.pump()

    def drained(self) -> None:
        """The link's send buffer drained: read it afresh and write on."""
        self.credit = 0
        self.pump()

    def pump(self) -> None:
        if self.pump_timer is not None:
            self.pump_timer.cancel()
            self.pump_timer = None
        link = self.link
        if link is None or not self.greeted:
            return
        hub = self.hub
        while self.cursor < len(self.out):
            if self.credit <= 0:
                self.credit = HIGH_WATER - hub.transport.buffered_amount(link)
                if self.credit <= 0:
                    self.pump_timer = hub.clock.call_later(PUMP_RETRY, self.pump)
                    return
            m = self.out[self.cursor]
            if m.text is not None:
                if self.piggyback and self.delivered > self.ack_sent and self.rsid is not None:
                    # Piggyback the ack we owe: the timer, if armed, finds nothing left to send.
                    frame: Payload = f'{{"t":"m","s":{m.seq},"a":{self.delivered},"d":{m.text}}}'
                    self.ack_sent = self.delivered
                    self.unacked_in = self.unacked_in_bytes = 0
                else:
                    frame = f'{{"t":"m","s":{m.seq},"d":{m.text}}}'
                self.credit -= m.size + 48
                self.cursor += 1
            else:
                assert m.blob is not None
                i = self.chunk
                body = m.blob[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]
                frame = CHUNK_HEADER.pack(MAGIC, FRAME_VERSION, m.seq, i, m.chunks, len(m.blob)) + body
                self.credit -= len(frame)
                self.chunk += 1
                if self.chunk >= m.chunks:
                    self.cursor += 1
                    self.chunk = 0
            hub.write(link, frame)
            if self.link != link:  # the transport reported something re-entrantly
                return

    def _send_control(self, obj: dict[str, Any]) -> None:
        if self.link is not None:
            text = CONTROL_ENCODER.encode(obj)  # ASCII: the encoder escapes the rest
            self.credit -= len(text)
            self.hub.write(self.link, text)

    def _acked(self, upto: int) -> None:
        upto = min(upto, self.next_seq - 1)
        while self.out and self.out[0].seq <= upto:
            m = self.out.popleft()
            self.out_bytes -= m.size
            if self.cursor > 0:
                self.cursor -= 1
            else:
                self.chunk = 0

    # ------------------------------------------------------------------ receiving

    def on_frame(self, data: Payload) -> None:
        """One frame from the peer on the current link, text or binary."""
        if isinstance(data, str):
            self.on_text(data)
        elif isinstance(data, bytes | bytearray | memoryview):
            self._on_chunk(bytes(data))
        else:
            self.hub.drops.drop("bad-frame-type")

    def on_text(self, data: str) -> None:
        """One text frame from the peer on the current link."""
        drops = self.hub.drops
        if len(data) > MAX_TEXT_FRAME:
            drops.drop("oversize")
            return
        try:
            obj: Any = loads_text(data)
        except (ValueError, RecursionError):
            drops.drop("not-json")
            return
        if type(obj) is not dict or not isinstance(obj.get("t"), str):
            drops.drop("no-kind")
            return
        kind = obj["t"]
        if kind == "hi":
            self._on_hello(obj)
        elif kind == "ack":
            sid, s = obj.get("sid"), obj.get("s")
            if not isinstance(sid, str) or not is_int(s):
                drops.drop("invalid:ack")
            elif sid == self.sid:
                self._acked(s)
        elif kind == "bye":
            self.side.on_bye()
        elif kind == "m":
            s, a = obj.get("s"), obj.get("a")
            if (type(s) is not int or not 0 <= s < 2**63 or "d" not in obj
                    or (a is not None and not is_int(a))):
                drops.drop("invalid:m")
            elif not self.greeted:
                drops.drop("before-hello")
            else:
                if a is not None:
                    self._acked(a)
                self._on_message(s, obj["d"], len(data))
        else:
            drops.drop("unknown-frame")

    def _on_hello(self, obj: dict[str, Any]) -> None:
        sid, base, ack = obj.get("sid"), obj.get("base"), obj.get("ack")
        if not isinstance(sid, str) or not sid or len(sid) > 64 or not is_int(base) or base < 1:
            self.hub.drops.drop("invalid:hi")
            return
        if sid != self.rsid:
            self.rsid, self.delivered = sid, base - 1
            self.ack_sent = self.delivered  # the peer no longer holds what lies below its base
        else:
            self.delivered = max(self.delivered, base - 1)
        self.piggyback = obj.get("pa") == 1
        self._drop_reassembly()
        if isinstance(ack, dict) and ack.get("sid") == self.sid and is_int(ack.get("s")):
            self._acked(ack["s"])
        first = not self.greeted
        self.greeted = True
        self.cursor = self.chunk = 0
        if self.out:
            self.hub.stats["replayed"] += len(self.out)
        self.side.on_greeted(first)
        self.pump()  # a no-op if the link went away meanwhile (or the peer was dropped)

    def _on_message(self, seq: int, value: Any, size: int) -> None:
        if seq <= self.delivered:
            self.hub.stats["duplicates"] += 1
            self.ack_sent = -1  # the peer missed our ack: send one whatever we think it knows
            self._note_delivered(0)
            return
        if seq != self.delivered + 1 or self.reasm is not None:
            self.hub.drops.drop("gap")
            return
        self.delivered = seq
        self._deliver(value)
        self._note_delivered(size)

    def _on_chunk(self, data: bytes) -> None:
        hub = self.hub
        drops = hub.drops
        if len(data) < CHUNK_HEADER.size or len(data) > CHUNK_HEADER.size + CHUNK_SIZE:
            drops.drop("bad-chunk")
            return
        magic, version, seq, index, count, total = CHUNK_HEADER.unpack_from(data)
        body = data[CHUNK_HEADER.size :]
        if magic != MAGIC or version != FRAME_VERSION:
            drops.drop("bad-chunk")
            return
        if not self.greeted:
            drops.drop("before-hello")
            return
        if seq <= self.delivered:
            if index == count - 1:
                hub.stats["duplicates"] += 1
                self.ack_sent = -1
                self._note_delivered(0)
            return
        if seq != self.delivered + 1:
            drops.drop("gap")
            return
        if total > MAX_MESSAGE_BYTES:
            drops.drop("reassembly-too-big")
            return
        if count != max(1, math.ceil(total / CHUNK_SIZE)) or index >= count:
            drops.drop("bad-chunk")
            return
        expected = CHUNK_SIZE if index < count - 1 else total - (count - 1) * CHUNK_SIZE
        if len(body) != expected:
            drops.drop("bad-chunk")
            return
        r = self.reasm
        if index == 0:
            if r is not None:
                drops.drop("chunk-order")
                self._drop_reassembly()
            if hub.reasm_bytes + total > REASSEMBLY_BUDGET:
                # Refuse for now; closing makes the sender resend later over a new link.
                drops.drop("reassembly-budget")
                self.side.on_overload()
                return
            r = self.reasm = _Reassembly(seq, total, count)
            hub.reasm_bytes += total
        elif r is None or r.seq != seq or r.next != index or r.total != total or r.count != count:
            drops.drop("chunk-order")
            self._drop_reassembly()
            return
        r.buf += body
        r.next += 1
        if r.next < r.count:
            return
        payload = bytes(r.buf)
        self._drop_reassembly()
        self.delivered = seq
        try:
            value = json.loads(payload)
        except (ValueError, RecursionError):
            drops.drop("not-json")
        else:
            self._deliver(value)
        self._note_delivered(total)

    def _drop_reassembly(self) -> None:
        if self.reasm is not None:
            self.hub.reasm_bytes -= self.reasm.total
            self.reasm = None

    def _deliver(self, value: Any) -> None:
        hub = self.hub
        hub.stats["delivered"] += 1
        if hub.on_message is None:
            return
        try:
            hub.on_message(self.peer, value)
        except Exception:
            log.exception("on_message callback failed for a message from %s", self.peer)
            hub.drops.drop("callback-error")

    def _note_delivered(self, size: int) -> None:
        if self.ack_sent >= self.delivered:
            return  # a reply sent while the message was being handled already carried its ack
        self.unacked_in += 1
        self.unacked_in_bytes += size
        if self.unacked_in >= ACK_EVERY or self.unacked_in_bytes >= ACK_BYTES:
            self.send_ack()
        else:
            self.hub.owe_ack()

    def send_ack(self) -> None:
        """Acknowledge what we delivered, unless a message already carried it (or no link is open)."""
        if self.rsid is None or self.link is None:
            return
        self.unacked_in = self.unacked_in_bytes = 0
        if self.ack_sent >= self.delivered:
            return  # piggybacked on a message since the timer was armed
        self.ack_sent = self.delivered
        self._send_control({"t": "ack", "sid": self.rsid, "s": self.delivered})

