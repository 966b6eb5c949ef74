"""The room: claim-or-join, the presence star, failover, and the roster everyone agrees on.

A room string maps to one broker id (:func:`kibitz.ids.room_peer_id`). Whoever holds that id is the
*coordinator*: it keeps the roster and rebroadcasts it. Everyone else is a *participant* that dials
the room id from its own member id over a ``kbz-presence`` link and announces itself with ``voice``.
The broker arbitrates: the first claim wins, later claims are told "taken" and join instead.

The :class:`Room` is sans-I/O. It is fed every :data:`~kibitz.transport.TransportEvent` through
:meth:`Room.handle` and acts only through the injected :class:`~kibitz.transport.Transport`,
:class:`~kibitz.clock.Scheduler` and :class:`random.Random`; it never raises out of ``handle``.

Roles: ``idle`` → ``claiming`` → ``coordinator`` | ``participant``; a participant whose coordinator
goes (link closed, the broker's LEAVE for the room id, or 12 s of silence) becomes ``reclaiming``
and races to claim after a short random delay; ``left`` is final. Every role change bumps a
generation counter and cancels the timers of the old role, so nothing from an old role (a late
timer, a late claim result, an event on an old link) can start a second one.

Routing contract with the session layer: ``handle`` returns True for the room's own claim (the room
id), its ``kbz-presence`` links (current and retired), ``IdentityLost``/``PeerLeft`` of the room id.
``PeerLeft`` of a *member* id is acted on (the member is dropped at once) but returns False, because
the data mesh also holds links to that member and must hear it too.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from kibitz.clock import Scheduler, TimerHandle
from kibitz.ids import room_peer_id
from kibitz.protocol.base import PROTOCOL_VERSION, DropCounter, decode, encode
from kibitz.protocol.presence import (
    CLIENT_FAMILY,
    COORDINATOR_FAMILY,
    MAX_MEMBERS,
    MAX_META_BYTES,
    MAX_NAME_CHARS,
    MAX_TOKEN_CHARS,
    ClientMessage,
    CoordinatorMessage,
    Kick,
    Knock,
    Leave,
    LobbyMsg,
    LobbyState,
    Mod,
    Ping,
    Reset,
    RosterMember,
    RosterMsg,
    Voice,
    meta_size,
)
from kibitz.transport import (
    ClaimResult,
    IdentityLost,
    IncomingLink,
    LinkClosed,
    LinkId,
    LinkMessage,
    LinkOpened,
    Payload,
    PeerLeft,
    Transport,
    TransportEvent,
)

log = logging.getLogger(__name__)

PRESENCE_LABEL = "kbz-presence"
DEFAULT_FEATURES: tuple[str, ...] = ("presence.v1",)

# Timing (seconds). The first five match the original engine; the reclaim delay is much shorter
# because we react to the transport's close and the broker's LEAVE instead of waiting for silence.
PING_INTERVAL = 2.5
FULL_ROSTER_EVERY = 4
"""Heartbeat ticks between unconditional full rosters; other ticks send a changed roster or a ping
(a full roster to everyone every tick made presence traffic grow with N²)."""
REAP_AFTER = 12.0
FREEZE_GAP = 6.0
CLAIM_TIMEOUT = 8.0
CLAIM_RETRY = 3.0
OPEN_TIMEOUT = 8.0
COORDINATOR_SILENCE = 12.0
REANNOUNCE_AFTER = (0.6, 1.8)
REANNOUNCE_MIN_GAP = 0.25
RECLAIM_DELAY = (0.05, 0.6)
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
STABLE_AFTER = 10.0
GRANDFATHER_GRACE = 6.0
_RETIRED_LINKS_KEPT = 1024

Role = Literal["idle", "claiming", "coordinator", "participant", "reclaiming", "left"]
_PROFILE_FIELDS = frozenset({"name", "on", "cam", "mic", "avatar", "meta", "token"})


@dataclass(frozen=True)
class MemberProfile:
    """What this member announces about itself."""

    name: str = ""
    on: bool = True
    """False: connected to the room (e.g. in a preview) but not in the call, so not on the roster."""
    cam: bool = False
    mic: bool = False
    avatar: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    token: str | None = None
    """Stable per tab/identity: a reconnect with the same token replaces the old roster entry."""


@dataclass(frozen=True)
class Member:
    """One roster entry; ``id`` is the member's broker id, its address on the data mesh."""

    id: str
    name: str
    cam: bool
    mic: bool
    avatar: str | None
    meta: Mapping[str, Any]
    features: tuple[str, ...]


@dataclass(frozen=True)
class Roster:
    members: tuple[Member, ...] = ()
    coordinator: str | None = None
    host: str = ""
    lobby: bool = False
    locked: bool = False

    def ids(self) -> frozenset[str]:
        return frozenset(m.id for m in self.members)

    def get(self, member_id: str) -> Member | None:
        for m in self.members:
            if m.id == member_id:
                return m
        return None


@dataclass(frozen=True)
class Knocker:
    """Someone waiting at the door of a room with a waiting room."""

    id: str
    name: str
    avatar: str | None


@dataclass(frozen=True)
class RosterChanged:
    roster: Roster


@dataclass(frozen=True)
class RoleChanged:
    role: Role


@dataclass(frozen=True)
class Kicked:
    pass


@dataclass(frozen=True)
class LobbyStatus:
    status: LobbyState


@dataclass(frozen=True)
class RoomReset:
    pass


@dataclass(frozen=True)
class KnocksChanged:
    """Coordinator only: the waiting room's queue changed."""

    knocks: tuple[Knocker, ...]


@dataclass(frozen=True)
class ModRequested:
    """Coordinator only: a participant sent a signed host command; the host layer verifies it."""

    member_id: str
    token: str


RoomEvent = RosterChanged | RoleChanged | Kicked | LobbyStatus | RoomReset | KnocksChanged | ModRequested


@dataclass
class _Entry:
    """Coordinator-side bookkeeping for one roster member."""

    member: Member
    link: LinkId | None
    token: str | None
    last_seen: float
    provisional_until: float | None = None
    """Grandfathered from the previous coordinator's roster and not yet re-announced."""


@dataclass
class _Waiting:
    link: LinkId
    voice: Voice | None
    knocker: Knocker
    token: str | None


def _check_profile(profile: MemberProfile) -> None:
    if len(profile.name) > MAX_NAME_CHARS:
        raise ValueError(f"name is {len(profile.name)} characters; the limit is {MAX_NAME_CHARS}")
    if profile.token is not None and len(profile.token) > MAX_TOKEN_CHARS:
        raise ValueError(f"token is {len(profile.token)} characters; the limit is {MAX_TOKEN_CHARS}")
    if not isinstance(profile.meta, dict):
        raise ValueError("meta must be a dict of JSON values")
    try:
        size = meta_size(profile.meta)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta must be plain JSON: {exc}") from None
    if size > MAX_META_BYTES:
        raise ValueError(f"meta is {size} bytes of JSON; the limit is {MAX_META_BYTES}")


class Room:
    """One member's view of one room; see the module docstring for the protocol."""

    def __init__(
        self,
        room: str,
        *,
        self_id: str,
        transport: Transport,
        scheduler: Scheduler,
        rng: random.Random,
        profile: MemberProfile,
        on_event: Callable[[RoomEvent], None] | None = None,
        features: Sequence[str] = DEFAULT_FEATURES,
        reclaim_bias: float = 0.0,
    ) -> None:
        _check_profile(profile)
        self.room = room
        self.room_id = room_peer_id(room)
        self.self_id = self_id
        self._transport = transport
        self._scheduler = scheduler
        self._rng = rng
        self._profile = profile
        self._on_event = on_event
        self.features = tuple(features)
        self.reclaim_bias = reclaim_bias
        """Extra seconds before racing for a freed room id: agents yield coordination to people."""
        self.role: Role = "idle"
        self.roster = Roster()
        self.drops = DropCounter()
        self.lobby_status: LobbyState | None = None
        self._gen = 0
        self._timers: dict[str, TimerHandle] = {}
        self._retired: OrderedDict[LinkId, None] = OrderedDict()
        # participant side
        self._link: LinkId | None = None
        self._link_open = False
        self._failures = 0
        self._last_heard = 0.0
        self._last_ping_tick = 0.0
        self._last_announce = -1e9
        self._in_roster_here = False
        # coordinator side
        self._entries: dict[str, _Entry] = {}
        self._links: dict[LinkId, str] = {}
        self._open: set[LinkId] = set()
        self._subscribed: set[LinkId] = set()
        """Links that passed the gate with a voice (on or off): they get every roster."""
        self._waiting: dict[str, _Waiting] = {}
        self._admitted_ids: set[str] = set()
        self._admitted_tokens: set[str] = set()
        self._kicked_ids: set[str] = set()
        self._kicked_tokens: set[str] = set()
        self._lobby = False
        self._locked = False
        self._host = ""
        self._last_tick = 0.0
        self._ticks_since_full = 0
        self.stats: dict[str, int] = {"claims": 0, "dials": 0, "sent": 0, "received": 0}

    # --- public API -----------------------------------------------------------------------------

    @property
    def is_coordinator(self) -> bool:
        return self.role == "coordinator"

    @property
    def connected(self) -> bool:
        """Coordinating, or holding an open presence link to the coordinator."""
        return self.role == "coordinator" or (self.role == "participant" and self._link_open)

    @property
    def profile(self) -> MemberProfile:
        return self._profile

    @property
    def knocks(self) -> tuple[Knocker, ...]:
        return tuple(w.knocker for w in self._waiting.values())

    def start(self) -> None:
        """Claim the room id (become coordinator) or, if taken, join whoever holds it."""
        if self.role != "idle":
            raise RuntimeError(f"start() called in role {self.role!r}; a Room starts once")
        self._claim()

    def leave(self) -> None:
        """Leave cleanly: peers see us gone at once instead of after a timeout. Idempotent."""
        if self.role == "left":
            return
        if self.role == "participant" and self._link is not None:
            if self._link_open:
                self._send(self._link, Leave())
            self._drop_own_link()
        elif self.role == "coordinator":
            self._entries.pop(self.self_id, None)
            self._broadcast()
            for link in list(self._links):
                self._close(link)
            self._transport.release(self.room_id)
        elif self.role == "claiming":
            self._transport.release(self.room_id)
        self._enter("left")

    def update_profile(self, **changes: Any) -> None:
        """Change name/on/cam/mic/avatar/meta/token and tell the room (a bad value is a ValueError)."""
        unknown = set(changes) - _PROFILE_FIELDS
        if unknown:
            raise ValueError(f"unknown profile fields {sorted(unknown)}; allowed: {sorted(_PROFILE_FIELDS)}")
        if "meta" in changes and changes["meta"] is None:
            changes["meta"] = {}
        profile = replace(self._profile, **changes)
        _check_profile(profile)
        if profile == self._profile:
            return
        self._profile = profile
        if self.role == "coordinator":
            self._put_self()
            self._broadcast()
        elif self.role == "participant" and self._link_open:
            self._announce()

    # coordinator-only moderation (the host layer calls these after verifying a host command)

    def set_flags(
        self, *, lobby: bool | None = None, locked: bool | None = None, host: str | None = None
    ) -> None:
        """Coordinator: change the waiting-room / lock / host flags that ride the roster."""
        self._require_coordinator()
        if lobby is not None:
            self._lobby = lobby
        if locked is not None:
            self._locked = locked
        if host is not None:
            self._host = host
        self._broadcast()

    def admit(self, member_id: str) -> None:
        """Coordinator: let a knocker in."""
        self._require_coordinator()
        waiting = self._waiting.pop(member_id, None)
        if waiting is None:
            raise KeyError(f"{member_id!r} is not waiting")
        self._admitted_ids.add(member_id)
        if waiting.token:
            self._admitted_tokens.add(waiting.token)
        self._send(waiting.link, LobbyMsg(status="admitted"))
        self._emit(KnocksChanged(self.knocks))
        if waiting.voice is not None:
            self._apply_voice(waiting.link, member_id, waiting.voice)
        else:
            self._send_roster(waiting.link)

    def deny(self, member_id: str) -> None:
        """Coordinator: turn a knocker away."""
        self._require_coordinator()
        waiting = self._waiting.pop(member_id, None)
        if waiting is None:
            raise KeyError(f"{member_id!r} is not waiting")
        self._send(waiting.link, LobbyMsg(status="denied"))
        self._emit(KnocksChanged(self.knocks))

    def kick(self, member_id: str) -> None:
        """Coordinator: remove a member and keep its id and token out for this coordinator's tenure."""
        self._require_coordinator()
        if member_id == self.self_id:
            raise ValueError("the coordinator cannot kick itself")
        entry = self._entries.get(member_id)
        self._kicked_ids.add(member_id)
        if entry is not None and entry.token:
            self._kicked_tokens.add(entry.token)
        for link, mid in list(self._links.items()):
            if mid == member_id:
                self._send(link, Kick())
        self._remove(member_id)
        self._waiting.pop(member_id, None)
        self._broadcast()

    def reset_room(self) -> None:
        """Coordinator: tell every participant the room was reset (what that means is the app's)."""
        self._require_coordinator()
        for link in list(self._links):
            if link in self._open:
                self._send(link, Reset())
        self._emit(RoomReset())

    # --- event intake ---------------------------------------------------------------------------

    def handle(self, event: TransportEvent) -> bool:
        """Feed one transport event; True when it belonged to the room (see the module docstring)."""
        ours = self._is_ours(event)
        try:
            self._dispatch(event)
        except Exception:  # a bug must not take the peer down; it is counted and logged
            self.drops.drop("internal-error")
            log.exception("room %s: error handling %r", self.room_id, type(event).__name__)
        return ours

    def _is_ours(self, ev: TransportEvent) -> bool:
        if isinstance(ev, ClaimResult | IdentityLost):
            return ev.peer_id == self.room_id
        if isinstance(ev, IncomingLink):
            return ev.label == PRESENCE_LABEL and ev.local_id == self.room_id
        if isinstance(ev, PeerLeft):
            return ev.peer_id == self.room_id
        return ev.link == self._link or ev.link in self._links or ev.link in self._retired

    def _dispatch(self, ev: TransportEvent) -> None:
        if isinstance(ev, ClaimResult):
            if ev.peer_id == self.room_id:
                self._on_claim(ev)
        elif isinstance(ev, IdentityLost):
            if ev.peer_id == self.room_id:
                self._on_identity_lost()
        elif isinstance(ev, IncomingLink):
            if ev.label == PRESENCE_LABEL and ev.local_id == self.room_id:
                self._on_incoming(ev)
        elif isinstance(ev, PeerLeft):
            self._on_peer_left(ev.peer_id)
        elif ev.link in self._retired:
            pass  # a late event on a link we are done with
        elif ev.link == self._link:
            self._on_own_link(ev)
        elif ev.link in self._links:
            self._on_member_link(ev)

    # --- roles ----------------------------------------------------------------------------------

    def _enter(self, role: Role) -> None:
        self._gen += 1
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        changed = role != self.role
        self.role = role
        if role != "participant":
            self._link = None
            self._link_open = False
        if role != "coordinator":
            self._links.clear()
            self._open.clear()
            self._subscribed.clear()
            self._entries.clear()
            self._waiting.clear()
        if changed:
            self._emit(RoleChanged(role))

    def _claim(self) -> None:
        self._enter("claiming")
        self.stats["claims"] += 1
        self._transport.claim(self.room_id)
        self._set_timer("claim-timeout", CLAIM_TIMEOUT, self._on_claim_timeout)

    def _on_claim_timeout(self) -> None:
        self._transport.release(self.room_id)
        self._enter("reclaiming")
        self._set_timer("retry", CLAIM_RETRY, self._claim)

    def _on_claim(self, ev: ClaimResult) -> None:
        if self.role != "claiming":
            # A late answer to a claim we gave up on: never let it start a second role.
            if ev.outcome == "claimed" and self.role != "coordinator":
                self._transport.release(self.room_id)
            return
        if ev.outcome == "claimed":
            self._become_coordinator()
        elif ev.outcome == "taken":
            self._become_participant()
        else:
            self._enter("reclaiming")
            self._set_timer("retry", CLAIM_RETRY, self._claim)

    def _on_identity_lost(self) -> None:
        if self.role == "coordinator":
            # Someone else may hold the room now: step down, keep the roster to grandfather from.
            for link in list(self._links):
                self._close(link)
            self._schedule_reclaim()
        elif self.role == "claiming":
            self._enter("reclaiming")
            self._set_timer("retry", CLAIM_RETRY, self._claim)

    def _schedule_reclaim(self) -> None:
        k = self._failures
        self._failures += 1
        if k == 0:
            delay = self._rng.uniform(*RECLAIM_DELAY)
        else:
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2**k) * self._rng.uniform(0.5, 1.0)
        delay += self.reclaim_bias
        self._enter("reclaiming")
        self._set_timer("reclaim", delay, self._claim)

    # --- coordinator ----------------------------------------------------------------------------

    def _require_coordinator(self) -> None:
        if self.role != "coordinator":
            raise RuntimeError(f"only the coordinator can do that; this member is {self.role!r}")

    def _become_coordinator(self) -> None:
        last = self.roster
        self._enter("coordinator")
        now = self._scheduler.now()
        self._lobby, self._locked, self._host = last.lobby, last.locked, ""
        self._admitted_ids, self._admitted_tokens = set(), set()
        self._kicked_ids, self._kicked_tokens = set(), set()
        self._put_self()
        for m in last.members:
            if m.id in (self.self_id, last.coordinator) or len(self._entries) >= MAX_MEMBERS:
                continue
            self._entries[m.id] = _Entry(m, None, None, now, provisional_until=now + GRANDFATHER_GRACE)
            self._admitted_ids.add(m.id)
        self._last_tick = now
        self._broadcast()
        self._set_timer("tick", PING_INTERVAL, self._tick)

    def _self_member(self) -> Member:
        p = self._profile
        return Member(self.self_id, p.name, p.cam, p.mic, p.avatar, dict(p.meta), self.features)

    def _put_self(self) -> None:
        if self._profile.on:
            now = self._scheduler.now()
            self._entries[self.self_id] = _Entry(self._self_member(), None, self._profile.token, now)
        else:
            self._entries.pop(self.self_id, None)

    def _tick(self) -> None:
        now = self._scheduler.now()
        gap = now - self._last_tick
        self._last_tick = now
        if gap > FREEZE_GAP:
            # We were frozen: everyone looks silent, but that is our fault. Give them a fresh window.
            for entry in self._entries.values():
                entry.last_seen = max(entry.last_seen, now)
                if entry.provisional_until is not None:
                    entry.provisional_until = max(entry.provisional_until, now + GRANDFATHER_GRACE)
        else:
            for mid, entry in list(self._entries.items()):
                if mid == self.self_id:
                    continue
                expired = (
                    now >= entry.provisional_until
                    if entry.provisional_until is not None
                    else now - entry.last_seen > REAP_AFTER
                )
                if expired:
                    self._remove(mid)
        for w in self._waiting.values():
            self._send(w.link, Ping())
        self._ticks_since_full += 1
        if not self._broadcast(force=self._ticks_since_full >= FULL_ROSTER_EVERY):
            ping = encode(Ping())
            for link in self._links:
                if link in self._subscribed and link in self._open:
                    self._send_raw(link, ping)
        self._set_timer("tick", PING_INTERVAL, self._tick)

    def _on_incoming(self, ev: IncomingLink) -> None:
        if self.role == "claiming":
            self._become_coordinator()  # the broker routed a dial to us: our claim went through
        if self.role != "coordinator" or ev.remote_id in self._kicked_ids:
            self._close(ev.link)
            return
        self._links[ev.link] = ev.remote_id

    def _on_member_link(self, ev: TransportEvent) -> None:
        if isinstance(ev, LinkOpened):
            self._open.add(ev.link)
        elif isinstance(ev, LinkClosed):
            mid = self._links.pop(ev.link)
            self._open.discard(ev.link)
            self._subscribed.discard(ev.link)
            self._retire(ev.link)
            self._drop_waiting_on(mid, ev.link)
            entry = self._entries.get(mid)
            if entry is not None and entry.link == ev.link:
                self._remove(mid)
                self._broadcast()
        elif isinstance(ev, LinkMessage):
            self._open.add(ev.link)  # a message proves the link is open, whatever the event order
            self._on_client_frame(ev.link, self._links[ev.link], ev.data)

    def _on_client_frame(self, link: LinkId, mid: str, data: Payload) -> None:
        msg = decode(data, CLIENT_FAMILY, self.drops)
        if msg is None:
            return
        self.stats["received"] += 1
        now = self._scheduler.now()
        entry = self._entries.get(mid)
        if entry is not None and entry.link == link:
            entry.last_seen = now
        if isinstance(msg, Voice):
            self._on_voice(link, mid, msg)
        elif isinstance(msg, Ping):
            pass
        elif isinstance(msg, Leave):
            self._drop_waiting_on(mid, link)
            if entry is not None and entry.link in (link, None):
                self._remove(mid)
                self._broadcast()
            else:
                self._close(link)
        elif isinstance(msg, Knock):
            self._on_knock(link, mid, msg)
        elif isinstance(msg, Mod):
            self._emit(ModRequested(mid, msg.token))

    def _gate(self, mid: str, token: str | None) -> Literal["ok", "kicked", "locked", "waiting"]:
        if mid in self._kicked_ids or (token and token in self._kicked_tokens):
            return "kicked"
        if mid in self._entries or mid in self._admitted_ids or (token and token in self._admitted_tokens):
            return "ok"
        if self._locked:
            return "locked"
        if self._lobby:
            return "waiting"
        return "ok"

    def _on_knock(self, link: LinkId, mid: str, msg: Knock) -> None:
        verdict = self._gate(mid, msg.token)
        if verdict == "ok":
            self._send(link, LobbyMsg(status="admitted"))
        else:
            self._turn_away(link, mid, verdict, None, Knocker(mid, msg.name, msg.avatar), msg.token)

    def _turn_away(
        self,
        link: LinkId,
        mid: str,
        verdict: Literal["kicked", "locked", "waiting"],
        voice: Voice | None,
        knocker: Knocker,
        token: str | None,
    ) -> None:
        if verdict == "kicked":
            self._send(link, Kick())
            self._close(link)
        elif verdict == "locked":
            self._send(link, LobbyMsg(status="locked"))
        else:
            previous = self._waiting.get(mid)
            voice = voice or (previous.voice if previous else None)
            self._waiting[mid] = _Waiting(link, voice, knocker, token)
            self._send(link, LobbyMsg(status="waiting"))
            if previous is None or previous.knocker != knocker:
                self._emit(KnocksChanged(self.knocks))

    def _on_voice(self, link: LinkId, mid: str, msg: Voice) -> None:
        verdict = self._gate(mid, msg.token)
        if not msg.on:
            # In the room but not in the call: off the roster, still told who is in it.
            self._drop_waiting_on(mid, link)
            entry = self._entries.get(mid)
            if entry is not None and entry.link in (link, None):
                self._remove(mid, close_link=False)
            if verdict == "ok":
                self._subscribed.add(link)
                if not self._broadcast():
                    self._send_roster(link)
            return
        if verdict != "ok":
            self._turn_away(link, mid, verdict, msg, Knocker(mid, msg.name, msg.avatar), msg.token)
            return
        self._apply_voice(link, mid, msg)

    def _apply_voice(self, link: LinkId, mid: str, msg: Voice) -> None:
        member = Member(mid, msg.name, msg.cam, bool(msg.mic), msg.avatar, msg.meta or {}, tuple(msg.f or ()))
        changed = False  # True once the roster others see differs
        if msg.token:
            for other, entry in list(self._entries.items()):
                if other not in (mid, self.self_id) and entry.token == msg.token:
                    self._remove(other)  # the same tab reconnected under a new id
                    changed = True
        old = self._entries.get(mid)
        if old is None and len(self._entries) >= MAX_MEMBERS:
            self.drops.drop("room-full")
            self._send(link, LobbyMsg(status="denied"))
            return
        if old is not None and old.link not in (None, link):
            self._close(old.link)
        changed = changed or old is None or old.member != member
        self._entries[mid] = _Entry(member, link, msg.token, self._scheduler.now())
        self._subscribed.add(link)
        self._admitted_ids.add(mid)
        if msg.token:
            self._admitted_tokens.add(msg.token)
        if changed:
            self._broadcast()
        else:
            self._send_roster(link)

    def _drop_waiting_on(self, mid: str, link: LinkId) -> None:
        waiting = self._waiting.get(mid)
        if waiting is not None and waiting.link == link:
            del self._waiting[mid]
            self._emit(KnocksChanged(self.knocks))

    def _remove(self, mid: str, *, close_link: bool = True) -> bool:
        entry = self._entries.pop(mid, None)
        if entry is None:
            return False
        if close_link and entry.link is not None:
            self._close(entry.link)
        return True

    def _current_roster(self) -> Roster:
        members = tuple(e.member for e in self._entries.values())
        return Roster(members, self.self_id, self._host, self._lobby, self._locked)

    def _roster_frame(self, roster: Roster) -> str:
        msg = RosterMsg(
            members=[
                RosterMember(
                    id=m.id,
                    name=m.name,
                    cam=m.cam,
                    mic=m.mic or None,
                    avatar=m.avatar,
                    meta=dict(m.meta) or None,
                    f=list(m.features) or None,
                )
                for m in roster.members
            ],
            lobby=roster.lobby,
            host=roster.host,
            locked=roster.locked,
            c=roster.coordinator,
            v=PROTOCOL_VERSION,
        )
        try:
            return encode(msg)
        except ValueError:
            # 256 members with full meta can exceed one frame: keep presence working without meta.
            self.drops.drop("roster-oversize")
            stripped = [m.model_copy(update={"meta": None}) for m in msg.members]
            return encode(msg.model_copy(update={"members": stripped}))

    def _broadcast(self, *, force: bool = False) -> bool:
        """Publish the roster locally; send it to every subscribed link if it changed (or ``force``)."""
        roster = self._current_roster()
        changed = roster != self.roster
        if not (changed or force):
            return False
        frame = self._roster_frame(roster)
        self._ticks_since_full = 0
        for link in self._links:
            if link in self._subscribed and link in self._open:
                self._send_raw(link, frame)
        self._set_roster(roster)
        return True

    def _send_roster(self, link: LinkId) -> None:
        self._send_raw(link, self._roster_frame(self._current_roster()))

    # --- participant ----------------------------------------------------------------------------

    def _become_participant(self) -> None:
        self._enter("participant")
        self.lobby_status = None  # a new coordinator decides afresh
        self.stats["dials"] += 1
        self._link = self._transport.dial(self.self_id, self.room_id, PRESENCE_LABEL)
        self._link_open = False
        self._set_timer("open-timeout", OPEN_TIMEOUT, self._on_open_timeout)

    def _on_open_timeout(self) -> None:
        self._drop_own_link()
        self._schedule_reclaim()

    def _drop_own_link(self) -> None:
        if self._link is not None:
            self._close(self._link)
            self._link = None
            self._link_open = False

    def _on_own_link(self, ev: TransportEvent) -> None:
        if isinstance(ev, LinkOpened):
            if self._link_open:
                return
            now = self._scheduler.now()
            self._link_open = True
            self._cancel_timer("open-timeout")
            self._last_heard = self._last_ping_tick = now
            self._in_roster_here = False
            self._announce()
            for i, delay in enumerate(REANNOUNCE_AFTER):
                self._set_timer(f"reannounce{i}", delay, self._reannounce_if_missing)
            self._set_timer("ping", PING_INTERVAL, self._ping_tick)
            self._set_timer("stable", STABLE_AFTER, self._mark_stable)
        elif isinstance(ev, LinkClosed):
            self._retire(ev.link)
            self._link = None
            self._link_open = False
            self._schedule_reclaim()
        elif isinstance(ev, LinkMessage):
            self._on_coordinator_frame(ev.data)

    def _mark_stable(self) -> None:
        self._failures = 0

    def _reannounce_if_missing(self) -> None:
        if not self._in_roster_here and self._profile.on and self.lobby_status != "waiting":
            self._announce(throttle=True)

    def _voice(self) -> Voice:
        p = self._profile
        return Voice(
            on=p.on,
            cam=p.cam,
            mic=p.mic,
            name=p.name,
            avatar=p.avatar,
            token=p.token,
            meta=p.meta or None,
            v=PROTOCOL_VERSION,
            f=list(self.features) or None,
        )

    def _announce(self, *, throttle: bool = False) -> None:
        if self._link is None or not self._link_open:
            return
        if self.lobby_status in ("denied", "locked"):
            return
        now = self._scheduler.now()
        wait = self._last_announce + REANNOUNCE_MIN_GAP - now
        if throttle and wait > 0:
            # Too soon after the last one: try once more when the gap has passed, if still missing.
            if "reannounce-later" not in self._timers:
                self._set_timer("reannounce-later", wait, self._reannounce_if_missing)
            return
        self._last_announce = now
        self._send(self._link, self._voice())

    def _ping_tick(self) -> None:
        now = self._scheduler.now()
        gap = now - self._last_ping_tick
        self._last_ping_tick = now
        if gap > FREEZE_GAP:
            self._last_heard = now  # we were frozen, not the coordinator silent
        elif now - self._last_heard > COORDINATOR_SILENCE:
            self._drop_own_link()
            self._schedule_reclaim()
            return
        if self._link is not None:
            self._send(self._link, Ping())
        self._set_timer("ping", PING_INTERVAL, self._ping_tick)

    def _on_coordinator_frame(self, data: Payload) -> None:
        msg = decode(data, COORDINATOR_FAMILY, self.drops)
        if msg is None:
            return
        self.stats["received"] += 1
        self._last_heard = self._scheduler.now()
        if isinstance(msg, RosterMsg):
            roster = Roster(
                tuple(
                    Member(m.id, m.name, m.cam, bool(m.mic), m.avatar, m.meta or {}, tuple(m.f or ()))
                    for m in msg.members
                ),
                msg.c,
                msg.host or "",
                bool(msg.lobby),
                bool(msg.locked),
            )
            mine = roster.get(self.self_id)
            self._in_roster_here = mine is not None
            if mine is not None and self.lobby_status == "waiting":
                self._set_lobby_status("admitted")
            self._set_roster(roster)
            stale = mine is None or mine != self._self_member_as_seen(mine)
            if self._profile.on and stale and self.lobby_status != "waiting":
                self._announce(throttle=True)
        elif isinstance(msg, LobbyMsg):
            self._set_lobby_status(msg.status)
        elif isinstance(msg, Kick):
            self._emit(Kicked())
            self._drop_own_link()
            self._enter("left")
        elif isinstance(msg, Reset):
            self._emit(RoomReset())

    def _self_member_as_seen(self, seen: Member) -> Member:
        """Our profile as the roster should show it (features as the coordinator relays them)."""
        return replace(self._self_member(), features=seen.features)

    def _set_lobby_status(self, status: LobbyState) -> None:
        if status != self.lobby_status:
            self.lobby_status = status
            self._emit(LobbyStatus(status))

    # --- shared ---------------------------------------------------------------------------------

    def _on_peer_left(self, peer_id: str) -> None:
        if peer_id == self.room_id:
            if self.role == "participant":
                # The broker says the coordinator's process is gone: drop it now, reclaim soon.
                gone = self.roster.coordinator
                if gone and gone != self.self_id and self.roster.get(gone) is not None:
                    self._forget_locally(gone)
                self._drop_own_link()
                self._schedule_reclaim()
            return
        if peer_id == self.self_id or self.roster.get(peer_id) is None:
            return
        if self.role == "coordinator":
            self._drop_waiting_any(peer_id)
            if self._remove(peer_id):
                self._broadcast()
        else:
            self._forget_locally(peer_id)

    def _forget_locally(self, peer_id: str) -> None:
        """Drop a member the broker says is gone before the coordinator's next roster says so."""
        kept = tuple(m for m in self.roster.members if m.id != peer_id)
        self._set_roster(replace(self.roster, members=kept))

    def _drop_waiting_any(self, mid: str) -> None:
        if self._waiting.pop(mid, None) is not None:
            self._emit(KnocksChanged(self.knocks))

    def _set_roster(self, roster: Roster) -> None:
        if roster != self.roster:
            self.roster = roster
            self._emit(RosterChanged(roster))

    def _send(self, link: LinkId, msg: ClientMessage | CoordinatorMessage) -> None:
        self._send_raw(link, encode(msg))

    def _send_raw(self, link: LinkId, frame: str) -> None:
        self.stats["sent"] += 1
        self._transport.send(link, frame)

    def _close(self, link: LinkId) -> None:
        """Close a link and remember it, so its late events are recognised and ignored."""
        self._links.pop(link, None)
        self._open.discard(link)
        self._subscribed.discard(link)
        self._retire(link)
        self._transport.close(link)

    def _retire(self, link: LinkId) -> None:
        self._retired[link] = None
        while len(self._retired) > _RETIRED_LINKS_KEPT:
            self._retired.popitem(last=False)

    def _set_timer(self, key: str, delay: float, fn: Callable[[], None]) -> None:
        self._cancel_timer(key)
        gen = self._gen

        def fire() -> None:
            if gen != self._gen:
                return
            self._timers.pop(key, None)
            try:
                fn()
            except Exception:
                self.drops.drop("internal-error")
                log.exception("room %s: error in timer %s", self.room_id, key)

        self._timers[key] = self._scheduler.call_later(delay, fire)

    def _cancel_timer(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _emit(self, event: RoomEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:  # one bad listener must not break the room
            log.exception("room %s: on_event handler raised for %s", self.room_id, type(event).__name__)


__all__ = [
    "DEFAULT_FEATURES",
    "PRESENCE_LABEL",
    "Kicked",
    "Knocker",
    "KnocksChanged",
    "LobbyStatus",
    "Member",
    "MemberProfile",
    "ModRequested",
    "Role",
    "RoleChanged",
    "Room",
    "RoomEvent",
    "RoomReset",
    "Roster",
    "RosterChanged",
]
