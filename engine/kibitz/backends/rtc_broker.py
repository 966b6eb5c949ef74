"""The broker half of :class:`~kibitz.backends.rtc.RtcTransport`: our ids on a PeerJS broker.

Every claimed broker id is one WebSocket to the broker (PeerJS protocol, heartbeats), checked for
life with a probe the broker echoes (see :meth:`BrokerIdentities._probe`): a socket whose network
went away without a close (the machine changed networks, a NAT forgot it) is otherwise "open" for
many minutes while nothing reaches it. :class:`BrokerIdentities` claims and releases ids, keeps
their sockets, parses what the broker sends and resolves the broker's URL again after a failure.

It knows nothing of peer connections: the OFFER/ANSWER/CANDIDATE frames it receives and the
news that a peer or one of our ids went away go to the link half through :class:`LinkSide`
(implemented by :class:`~kibitz.backends.rtc_links.RtcLinks`), which sends its own frames back
through :meth:`BrokerIdentities.send_frame`.

This module must stay importable under Pyodide: asyncio only, no websockets or ``js``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from kibitz.backends import signaling
from kibitz.backends.rtc_api import CLOSE_POLICY_VIOLATION, ConnectSignaling, SignalingSocket
from kibitz.backends.rtc_loop import RtcLoop
from kibitz.backends.signaling import AnswerPayload, CandidatePayload, OfferPayload
from kibitz.clock import Scheduler, TimerHandle
from kibitz.protocol.base import DropCounter
from kibitz.transport import ClaimOutcome, ClaimResult, IdentityLost, PeerLeft

log = logging.getLogger("kibitz.backends.rtc")  # one logger for the whole transport

PROBE_EVERY_BEATS = 3
"""Probe the broker every this many heartbeats (every 15 s with the default 5 s beat)."""
PROBE_TIMEOUT_S = 3.0
"""No echo this long after a probe: the socket is dead whatever its state says; drop it, so the
identity is claimed again over a fresh one (same token: the broker hands the id over)."""


class LinkSide(Protocol):
    """What the broker half tells the link half. ``local_id`` is our id the frame came to,
    ``src`` the peer id it came from."""

    def on_offer(self, local_id: str, src: str, offer: OfferPayload) -> None: ...

    def on_answer(self, local_id: str, src: str, answer: AnswerPayload) -> None: ...

    def on_candidate(self, local_id: str, src: str, cand: CandidatePayload) -> None: ...

    def on_peer_left(self, src: str) -> None:
        """LEAVE: ``src`` left the broker; every link to it fails."""

    def on_peer_unreachable(self, local_id: str, src: str) -> bool:
        """EXPIRE: a frame to ``src`` expired undelivered; the links still negotiating with it
        fail. True when one did."""

    def on_identity_lost(self, local_id: str) -> None:
        """``local_id`` lost its broker socket; the links still negotiating through it fail."""


@dataclass(eq=False)
class _Identity:
    peer_id: str
    token: str
    state: Literal["connecting", "open", "closed"] = "connecting"
    socket: SignalingSocket | None = None
    heartbeat: TimerHandle | None = None
    claim_timer: TimerHandle | None = None
    beats: int = 0
    echoes: bool | None = None
    """Whether the broker echoes our probes: unknown until the first one after OPEN comes back
    (a broker that does not relay frames addressed to their sender is never probed again)."""
    probe_timer: TimerHandle | None = None


class BrokerIdentities:
    """Our claimed ids on the broker: one signaling socket each, heartbeats, probes, frame parsing.

    Emits :class:`~kibitz.transport.ClaimResult`, :class:`~kibitz.transport.IdentityLost` and
    :class:`~kibitz.transport.PeerLeft`; everything about links goes to ``links``. ``drops`` counts
    malformed or unexpected broker frames (they are never raised).
    """

    links: LinkSide
    """The link half; set by the transport right after both halves are made (each needs the other)."""

    def __init__(
        self,
        connect_signaling: ConnectSignaling,
        *,
        broker_url: str,
        key: str,
        scheduler: Scheduler,
        heartbeat_s: float,
        claim_timeout_s: float,
        rng: random.Random,
        out: RtcLoop,
        drops: DropCounter,
    ) -> None:
        signaling.signaling_url(broker_url, key=key, peer_id="x", token="x")  # fail fast on a bad URL
        self._connect = connect_signaling
        self._broker_url = broker_url
        self._key = key
        self._scheduler = scheduler
        self._heartbeat_s = heartbeat_s
        self._claim_timeout_s = claim_timeout_s
        self._rng = rng
        self._out = out
        self.drops = drops
        self.identities: dict[str, _Identity] = {}
        self._tokens: dict[str, str] = {}
        self._resolve_broker: Callable[[str], Awaitable[str | None]] | None = None
        self._resolving: asyncio.Future[None] | None = None
        self._broker_suspect = False

    # ------------------------------------------------------------------ claims, for the transport

    def claim(self, peer_id: str) -> None:
        current = self.identities.get(peer_id)
        if current is not None:
            if current.state == "open":
                self._out.emit(ClaimResult(peer_id, "claimed"))
            return  # a claim is in flight: it will be answered once
        # Reuse the token for this id so a re-claim can take over our own stale session.
        token = self._tokens.setdefault(peer_id, signaling.new_token(self._rng))
        ident = _Identity(peer_id, token)
        self.identities[peer_id] = ident
        ident.claim_timer = self._scheduler.call_later(
            self._claim_timeout_s, lambda: self._claim_failed(ident, "error", "timeout waiting for OPEN")
        )
        self._out.spawn(self._open_identity(ident))

    def release(self, peer_id: str) -> None:
        """Forget ``peer_id`` and close its socket (no event); its links are the caller's."""
        ident = self.identities.get(peer_id)
        if ident is not None:
            self._drop_identity(ident)

    @property
    def claimed_ids(self) -> list[str]:
        return [i.peer_id for i in self.identities.values() if i.state == "open"]

    # ------------------------------------------------------------------ for the link half

    def is_open(self, local_id: str) -> bool:
        """``local_id`` is claimed and its socket is open (links can be dialled from it)."""
        ident = self.identities.get(local_id)
        return ident is not None and ident.state == "open"

    def send_frame(self, local_id: str, text: str) -> bool:
        """Send ``text`` over ``local_id``'s socket; False (nothing sent) when it has no open one."""
        ident = self.identities.get(local_id)
        if ident is None or ident.state != "open" or ident.socket is None:
            return False
        ident.socket.send(text)
        return True

    def probe(self, local_id: str) -> None:
        """Check ``local_id``'s socket now, not at the next periodic probe (a link failed: maybe
        it is our side that lost the network, and a re-dial through a dead socket would only time
        out again)."""
        ident = self.identities.get(local_id)
        if ident is not None and ident.state == "open":
            self._probe(ident)

    # ------------------------------------------------------------------------------ broker URL

    def set_broker_resolver(self, resolve: Callable[[str], Awaitable[str | None]] | None) -> None:
        """Ask ``resolve(failed_url)`` (``GET /api/signal?failed=`` again) for the broker URL before
        the next claim whenever the current broker could not be reached or dropped a socket: a
        service of several nodes moves a room to another node when its node dies (docs/scale.md).
        ``None`` or a failure keeps the URL we have."""
        self._resolve_broker = resolve

    @property
    def broker_url(self) -> str:
        return self._broker_url

    async def _fresh_broker_url(self) -> str:
        if self._resolve_broker is None or not self._broker_suspect:
            return self._broker_url
        if self._resolving is None:  # one request for every identity reconnecting at once
            self._resolving = self._out.get_loop().create_future()
            resolving = self._resolving
            try:
                failed = self._broker_url if len(self._broker_url) <= 128 else ""  # the server's limit
                url = await asyncio.wait_for(self._resolve_broker(failed), 5.0)
                if url:
                    signaling.signaling_url(url, key=self._key, peer_id="x", token="x")
                    if url != self._broker_url:
                        log.info("broker moved: %s -> %s", self._broker_url, url)
                    self._broker_url = url
                    self._broker_suspect = False
            except Exception as exc:
                log.warning("could not ask for the broker again: %r", exc)
            finally:
                self._resolving = None
                resolving.set_result(None)
        else:
            await asyncio.shield(self._resolving)
        return self._broker_url

    # ------------------------------------------------------------------------------ identities

    def _is_current(self, ident: _Identity) -> bool:
        return self.identities.get(ident.peer_id) is ident and ident.state != "closed"

    async def _open_identity(self, ident: _Identity) -> None:
        broker = await self._fresh_broker_url()
        if not self._is_current(ident):
            return
        url = signaling.signaling_url(broker, key=self._key, peer_id=ident.peer_id, token=ident.token)
        on_message = self._out.guard(lambda text: self._on_frame(ident, text))
        on_close = self._out.guard(lambda reason: self._on_socket_close(ident, reason))
        try:
            sock = await self._connect(url, on_message, on_close)
        except Exception as exc:
            if getattr(exc, "code", None) == CLOSE_POLICY_VIOLATION:  # closed before we saw it open
                self._claim_failed(ident, "taken", f"ID is taken (the broker closed with 1008: {exc})")
            else:
                self._claim_failed(ident, "error", f"cannot reach broker: {exc}")
            return
        if not self._is_current(ident):
            sock.close()
            return
        ident.socket = sock

    def _claim_failed(self, ident: _Identity, outcome: ClaimOutcome, detail: str) -> None:
        if not self._is_current(ident) or ident.state != "connecting":
            return
        if outcome != "taken":
            self._broker_suspect = True
        self._drop_identity(ident)
        self._out.emit(ClaimResult(ident.peer_id, outcome, detail))

    def _drop_identity(self, ident: _Identity) -> None:
        """Forget ``ident`` and close its socket; the caller decides which event (if any) to emit."""
        ident.state = "closed"
        if self.identities.get(ident.peer_id) is ident:
            del self.identities[ident.peer_id]
        for timer in (ident.heartbeat, ident.claim_timer, ident.probe_timer):
            if timer is not None:
                timer.cancel()
        ident.heartbeat = ident.claim_timer = ident.probe_timer = None
        if ident.socket is not None:
            sock, ident.socket = ident.socket, None
            try:
                sock.close()
            except Exception:
                log.debug("closing broker socket for %s failed", ident.peer_id, exc_info=True)

    def _lose_identity(self, ident: _Identity, reason: str) -> None:
        if not reason.startswith("taken"):
            self._broker_suspect = True
        self._drop_identity(ident)
        self._out.emit(IdentityLost(ident.peer_id, reason))
        # Links still negotiating need the broker; established ones are peer-to-peer and survive.
        self.links.on_identity_lost(ident.peer_id)

    def _on_socket_close(self, ident: _Identity, reason: str) -> None:
        if not self._is_current(ident):
            return
        if ident.state == "connecting":
            if getattr(reason, "code", None) == CLOSE_POLICY_VIOLATION:
                # What our broker (and PeerJS's) closes with after ID-TAKEN; a browser may not have
                # delivered the frame before the close (Firefox, when the socket is dropped at once).
                self._claim_failed(ident, "taken", f"ID is taken (the broker closed with 1008: {reason})")
                return
            self._claim_failed(ident, "error", f"broker closed the socket before OPEN: {reason}")
        else:
            self._lose_identity(ident, reason or "closed")

    def _heartbeat(self, ident: _Identity) -> None:
        if not self._is_current(ident) or ident.socket is None:
            return
        ident.socket.send(signaling.heartbeat_frame())
        ident.beats += 1
        if ident.beats % PROBE_EVERY_BEATS == 0:
            self._probe(ident)
        ident.heartbeat = self._scheduler.call_later(self._heartbeat_s, lambda: self._heartbeat(ident))

    def _probe(self, ident: _Identity) -> None:
        """Send a frame addressed to ourselves; the broker relays it back (``EXPIRE`` is relayed by
        every PeerJS broker and means nothing to a peer). No echo within :data:`PROBE_TIMEOUT_S`
        on a broker known to echo: the socket is dead."""
        if ident.echoes is False or ident.probe_timer is not None or ident.socket is None:
            return
        ident.socket.send(signaling.probe_frame(ident.peer_id))
        ident.probe_timer = self._scheduler.call_later(PROBE_TIMEOUT_S, lambda: self._probe_timeout(ident))

    def _probe_timeout(self, ident: _Identity) -> None:
        ident.probe_timer = None
        if not self._is_current(ident) or ident.state != "open":
            return
        if ident.echoes is None:
            ident.echoes = False  # never echoed: a broker that does not relay to the sender
            log.info("broker does not echo probes for %s; not probing it", ident.peer_id)
            return
        self.drops.drop("broker:probe-timeout")
        log.warning("broker socket for %s is dead (no echo in %.0f s); reconnecting", ident.peer_id,
                    PROBE_TIMEOUT_S)
        self._lose_identity(ident, "broker unresponsive")

    def _on_echo(self, ident: _Identity) -> None:
        ident.echoes = True
        if ident.probe_timer is not None:
            ident.probe_timer.cancel()
            ident.probe_timer = None

    # ------------------------------------------------------------------------------ frames in

    def _on_frame(self, ident: _Identity, text: str) -> None:
        if not self._is_current(ident):
            return
        frame = signaling.parse_frame(text, self.drops)
        if frame is None:
            return
        kind = frame.type
        if kind == "OPEN":
            if ident.state == "connecting":
                ident.state = "open"
                if ident.claim_timer is not None:
                    ident.claim_timer.cancel()
                    ident.claim_timer = None
                self._out.emit(ClaimResult(ident.peer_id, "claimed"))
                ident.heartbeat = self._scheduler.call_later(
                    self._heartbeat_s, lambda: self._heartbeat(ident)
                )
                self._probe(ident)  # learn whether this broker echoes
        elif kind == "ID-TAKEN":
            if ident.state == "connecting":
                self._claim_failed(ident, "taken", frame.message or "ID is taken")
            else:
                self._lose_identity(ident, "taken: " + (frame.message or "ID is taken"))
        elif kind == "ERROR":
            if ident.state == "connecting":
                self._claim_failed(ident, "error", frame.message or "broker error")
            else:
                self._lose_identity(ident, "error: " + (frame.message or "broker error"))
        elif kind == "HEARTBEAT":
            pass
        elif ident.state != "open":
            self.drops.drop("broker:before-open")
        elif kind == "LEAVE":
            src = frame.src or ""
            self._out.emit(PeerLeft(src))
            self.links.on_peer_left(src)
        elif kind == "EXPIRE" and frame.src == ident.peer_id:
            self._on_echo(ident)
        elif kind == "EXPIRE":
            # A frame we sent to ``src`` expired undelivered: ``src`` is not on the broker. One
            # EXPIRE arrives per queued frame (OFFER and each CANDIDATE), so PeerLeft is reported
            # only when a link was closed.
            src = frame.src or ""
            if self.links.on_peer_unreachable(ident.peer_id, src):
                self._out.emit(PeerLeft(src))
        elif isinstance(frame.payload, OfferPayload):
            self.links.on_offer(ident.peer_id, frame.src or "", frame.payload)
        elif isinstance(frame.payload, AnswerPayload):
            self.links.on_answer(ident.peer_id, frame.src or "", frame.payload)
        elif isinstance(frame.payload, CandidatePayload):
            self.links.on_candidate(ident.peer_id, frame.src or "", frame.payload)
