"""The room: claim-or-join, failover, and which of the two presence protocols this member runs now.

A room string maps to one broker id (:func:`kibitz.ids.room_peer_id`). Whoever holds that id is the
*coordinator*: it keeps the roster and rebroadcasts it. Everyone else is a *participant* that dials
the room id from its own member id over a ``kbz-presence`` link and announces itself with ``voice``.
The broker arbitrates: the first claim wins, later claims are told "taken" and join instead.

:class:`Room` is the facade: it owns the claim/reclaim state machine and the roster this member last
saw, and delegates the two protocols to one role object per tenure —
:class:`~kibitz.room.coordinator.Coordinator` or :class:`~kibitz.room.participant.Participant`. It is
sans-I/O: it is fed every :data:`~kibitz.transport.TransportEvent` through :meth:`Room.handle` and acts
only through the injected :class:`~kibitz.transport.Transport`, :class:`~kibitz.clock.Scheduler` and
:class:`random.Random`; it never raises out of ``handle``.

Roles: ``idle`` → ``claiming`` → ``coordinator`` | ``participant``; a participant whose coordinator
goes (link closed, the broker's LEAVE for the room id, or 12 s of silence) becomes ``reclaiming``
and races to claim after a short random delay; ``left`` is final. Every role change ends the old
tenure (its timers die with it), so nothing from an old role can start a second one.

Broker outages: the presence star runs over peer-to-peer links, so a coordinator that loses its hold
on the room id (the broker restarted, or dropped its socket) goes on coordinating and claims the id
back in the background. Only if someone else holds it by then (a newcomer reached the restarted
broker first) does it step down and join that coordinator, so a deploy of the broker changes nobody's
roster in the usual case.

Routing contract with the session layer: ``handle`` returns True for the room's own claim (the room
id), its ``kbz-presence`` links (current and retired), ``IdentityLost``/``PeerLeft`` of the room id.
``PeerLeft`` of a *member* id is acted on (the member is dropped at once) but returns False, because
the data mesh also holds links to that member and must hear it too.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from kibitz.authority import FRESH_S, BanRecord, HostAuthority, HostCommand, HostKeyring, Op
from kibitz.clock import Scheduler
from kibitz.gate import JoinGate
from kibitz.identity.door import IdentityDoor
from kibitz.ids import room_peer_id
from kibitz.protocol.base import DropCounter, encode
from kibitz.protocol.presence import ClientMessage, CoordinatorMessage, LobbyState
from kibitz.room.base import Timers
from kibitz.room.coordinator import Coordinator
from kibitz.room.model import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    CLAIM_RETRY,
    CLAIM_TIMEOUT,
    DEFAULT_FEATURES,
    NOT_CLAIMED_RETRY,
    PRESENCE_LABEL,
    PROFILE_FIELDS,
    RECLAIM_DELAY,
    RECLAIM_ID_RETRY,
    RETIRED_LINKS_KEPT,
    Kicked,
    Knocker,
    LobbyStatus,
    MemberProfile,
    Role,
    RoleChanged,
    RoomEvent,
    Roster,
    RosterChanged,
    check_profile,
)
from kibitz.room.participant import Participant
from kibitz.transport import (
    CertifiedTransport,
    ClaimResult,
    IdentityLost,
    IncomingLink,
    LinkId,
    PeerLeft,
    Transport,
    TransportEvent,
)

log = logging.getLogger("kibitz.room")


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
        gate: JoinGate | None = None,
        host_key: HostKeyring | None = None,
        may_read_roster: Callable[[str], bool] | None = None,
        door: IdentityDoor | None = None,
        own_email: Callable[[], str | None] | None = None,
        known_fps: Callable[[], list[str]] | None = None,
    ) -> None:
        """``door``: the identity part of admission when we coordinate (email/google gates, agent keys,
        credits); ``own_email``: our verified address (host tier email); ``known_fps``: certificates
        of our other links (to recognise a token copied from another member)."""
        check_profile(profile)
        self.room = room
        self.room_id = room_peer_id(room)
        self.gate = gate or JoinGate()
        """The settings this member enforces when it coordinates (checked against the room id by the
        caller: :func:`kibitz.gate.check_room`)."""
        self.authority = HostAuthority(self.gate, room)
        self._keyring = host_key
        if host_key is not None and host_key.public_text != self.gate.host.key:
            raise ValueError("this host key is not the key this room's settings name as its host")
        self._host_claim: tuple[float, str] | None = None
        self._may_read_roster = may_read_roster
        self.door = door
        self._own_email = own_email
        self._known_fps = known_fps
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
        self.stats: dict[str, int] = {"claims": 0, "dials": 0, "sent": 0, "received": 0}
        self._timers = Timers(scheduler, self.drops, f"room {self.room_id}")
        self._coordinator: Coordinator | None = None
        self._participant: Participant | None = None
        self._failures = 0
        self._retired: OrderedDict[LinkId, None] = OrderedDict()
        self._holds_id = False
        """A coordinator holds the room id at the broker (False while it claims it back)."""
        self._checking_id = False
        """A participant asked for the room id because its coordinator went silent."""

    # --- public API -----------------------------------------------------------------------------

    @property
    def is_coordinator(self) -> bool:
        return self.role == "coordinator"

    @property
    def connected(self) -> bool:
        """Coordinating, or holding an open presence link to the coordinator."""
        p = self._participant
        return self.role == "coordinator" or (p is not None and p.link_open)

    @property
    def presence_link(self) -> LinkId | None:
        """A participant's link to the coordinator (None in any other role)."""
        return self._participant.link if self._participant is not None else None

    @property
    def profile(self) -> MemberProfile:
        return self._profile

    @property
    def transport(self) -> Transport:
        return self._transport

    @property
    def scheduler(self) -> Scheduler:
        return self._scheduler

    @property
    def knocks(self) -> tuple[Knocker, ...]:
        """The waiting room: our own as coordinator, or as the coordinator forwards it to us, the host."""
        if self._coordinator is not None:
            return self._coordinator.knocks
        if self._participant is not None and self.is_host:
            return self._participant.knocks
        return ()

    @property
    def is_host(self) -> bool:
        """Whether we may moderate: we hold the host key (tier key), or the roster names us (tier
        name: whoever carries the host's name)."""
        tier = self.authority.tier
        if tier == "key":
            return self._keyring is not None
        return tier in ("name", "email") and bool(self.roster.host) and self.roster.host == self.self_id

    def start(self) -> None:
        """Claim the room id (become coordinator) or, if taken, join whoever holds it."""
        if self.role != "idle":
            raise RuntimeError(f"start() called in role {self.role!r}; a Room starts once")
        self._claim()

    def leave(self) -> None:
        """Leave cleanly: peers see us gone at once instead of after a timeout. Idempotent."""
        if self.role == "left":
            return
        if self._participant is not None:
            self._participant.leave()
        elif self._coordinator is not None:
            self._coordinator.leave()
            self._transport.release(self.room_id)
        elif self.role == "claiming":
            self._transport.release(self.room_id)
        self._enter("left")

    def update_profile(self, **changes: Any) -> None:
        """Change name/on/cam/mic/avatar/meta/token and tell the room (a bad value is a ValueError)."""
        unknown = set(changes) - PROFILE_FIELDS
        if unknown:
            raise ValueError(f"unknown profile fields {sorted(unknown)}; allowed: {sorted(PROFILE_FIELDS)}")
        if "meta" in changes and changes["meta"] is None:
            changes["meta"] = {}
        profile = replace(self._profile, **changes)
        check_profile(profile)
        if profile == self._profile:
            return
        self._profile = profile
        if self._coordinator is not None:
            self._coordinator.profile_changed()
        elif self._participant is not None:
            self._participant.profile_changed()

    # moderation: the host's acts, from whichever seat the host has

    def moderate(self, op: Op, target: str | None = None) -> bool:
        """As the host: lobbyon/lobbyoff, lock/unlock, admit/deny ``target``, reset. Carried out at
        once when we coordinate, else signed (tier key) and sent to the coordinator, who checks it.
        Returns False (and does nothing) when we are not the host or cannot reach a coordinator."""
        if not self.is_host or op == "claim":
            return False
        if self._coordinator is not None:
            self._coordinator.carry_out(op, target)
            return True
        coordinator = self.roster.coordinator
        unsigned = self._keyring is None and self.authority.tier == "key"
        if self._participant is None or not coordinator or unsigned:
            return False
        keyring = self._keyring or HostKeyring(None, self.room)
        token = keyring.command(op, by=self.self_id, coordinator=coordinator, now=self._scheduler.wall(),
                                target=target)
        return self._participant.send_mod(token)

    def remove(self, member_id: str, *, ban: bool = True) -> bool:
        """As the host: remove ``member_id`` and keep it out (a record that outlives every
        coordinator), or with ``ban=False`` lift such a ban. False when we are not the host, or when
        we would remove ourselves."""
        if not self.is_host or (ban and member_id == self.self_id):
            return False
        member = self.roster.get(member_id)
        keys = [member.tk] if member is not None and member.tk else []
        keyring = self._keyring or HostKeyring(None, self.room)
        token = keyring.record(ban=ban, target=member_id, keys=keys, now=self._scheduler.wall())
        if self._coordinator is not None:
            record = self.authority.check_record(token)
            if not isinstance(record, BanRecord):
                return False
            self._coordinator.enforce(record)
            return True
        return self._participant is not None and self._participant.send_mod(token)

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
        p, c = self._participant, self._coordinator
        if ev.link in self._retired:
            return True
        return (p is not None and p.owns(ev.link)) or (c is not None and c.owns(ev.link))

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
        elif self._participant is not None and self._participant.owns(ev.link):
            self._participant.on_link(ev)
        elif self._coordinator is not None and self._coordinator.owns(ev.link):
            self._coordinator.on_link(ev)

    # --- roles ----------------------------------------------------------------------------------

    def _enter(self, role: Role) -> None:
        """End the current tenure (its timers and role object) and the facade's own timers."""
        self._timers.stop()
        self._timers = Timers(self._scheduler, self.drops, f"room {self.room_id}")
        if self._participant is not None:
            self._participant.stop()
            self._participant = None
        if self._coordinator is not None:
            self._coordinator.stop()
            self._coordinator = None
        changed = role != self.role
        self.role = role
        if changed:
            self.emit(RoleChanged(role))

    def _claim(self) -> None:
        self._enter("claiming")
        self.stats["claims"] += 1
        self._transport.claim(self.room_id)
        self._timers.set("claim-timeout", CLAIM_TIMEOUT, self._on_claim_timeout)

    def _on_claim_timeout(self) -> None:
        self._transport.release(self.room_id)
        self._retry_claim()

    def _retry_claim(self) -> None:
        self._enter("reclaiming")
        self._timers.set("retry", self._rng.uniform(*CLAIM_RETRY), self._claim)

    def _on_claim(self, ev: ClaimResult) -> None:
        if self._coordinator is not None and not self._holds_id:
            self._on_reclaim_id(ev)
            return
        if self._checking_id:
            if self._participant is not None:
                self._on_id_check(ev)
                return
            self._checking_id = False
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
            self._retry_claim()

    def _on_identity_lost(self) -> None:
        if self._coordinator is not None:
            # The star is peer to peer: keep coordinating and claim the id back (see the module doc).
            self._holds_id = False
            self._timers.set("reclaim-id", self._rng.uniform(*RECLAIM_ID_RETRY), self._reclaim_id)
        elif self.role == "claiming":
            self._retry_claim()

    def _reclaim_id(self) -> None:
        if self._coordinator is not None and not self._holds_id:
            self.stats["claims"] += 1
            self._transport.claim(self.room_id)
            self._timers.set("reclaim-id-timeout", CLAIM_TIMEOUT, self._reclaim_id)

    def _on_reclaim_id(self, ev: ClaimResult) -> None:
        """The answer to a coordinator's claim for the id it lost."""
        assert self._coordinator is not None
        self._timers.cancel("reclaim-id-timeout")
        if ev.outcome == "claimed":
            self._holds_id = True
        elif ev.outcome == "taken":
            # Someone reached the broker first: hand over and join them (keep our roster: the
            # members we knew are grandfathered by nobody, they re-announce to the new holder).
            self._coordinator.step_down()
            self._become_participant()
        else:
            self._timers.set("reclaim-id", self._rng.uniform(*RECLAIM_ID_RETRY), self._reclaim_id)

    def _schedule_reclaim(self) -> None:
        k = self._failures
        self._failures += 1
        if k == 0:
            delay = self._rng.uniform(*RECLAIM_DELAY)
        else:
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2**k) * self._rng.uniform(0.5, 1.0)
        delay += self.reclaim_bias
        self._enter("reclaiming")
        self._timers.set("reclaim", delay, self._claim)

    def _become_coordinator(self) -> None:
        last = self.roster
        self._enter("coordinator")
        self._holds_id = True
        self._coordinator = Coordinator(self)
        self._coordinator.begin(last)

    def _become_participant(self) -> None:
        self._enter("participant")
        self.lobby_status = None  # a new coordinator decides afresh
        self._participant = Participant(self)
        self._participant.begin()

    def _on_incoming(self, ev: IncomingLink) -> None:
        if self.role == "claiming":
            self._become_coordinator()  # the broker routed a dial to us: our claim went through
        if self._coordinator is None:
            self.close(ev.link)
            return
        self._coordinator.on_incoming(ev)

    def _on_peer_left(self, peer_id: str) -> None:
        if peer_id == self.room_id:
            if self._participant is not None:
                # The broker says the coordinator's process is gone: drop it now, reclaim soon.
                gone = self.roster.coordinator
                if gone and gone != self.self_id and self.roster.get(gone) is not None:
                    self._forget_locally(gone)
                self._participant.drop_link()
                self._schedule_reclaim()
            return
        if peer_id == self.self_id or self.roster.get(peer_id) is None:
            return
        if self._coordinator is not None:
            self._coordinator.on_member_left(peer_id)
        else:
            self._forget_locally(peer_id)

    def _forget_locally(self, peer_id: str) -> None:
        """Drop a member the broker says is gone before the coordinator's next roster says so."""
        kept = tuple(m for m in self.roster.members if m.id != peer_id)
        self.publish(replace(self.roster, members=kept))

    # --- what the role objects call (RoomCore / ParticipantCore) -------------------------------

    def emit(self, event: RoomEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:  # one bad listener must not break the room
            log.exception("room %s: on_event handler raised for %s", self.room_id, type(event).__name__)

    def publish(self, roster: Roster) -> None:
        if roster != self.roster:
            self.roster = roster
            self.emit(RosterChanged(roster))

    def send(self, link: LinkId, msg: ClientMessage | CoordinatorMessage) -> None:
        self.send_raw(link, encode(msg))

    def send_raw(self, link: LinkId, frame: str) -> None:
        self.stats["sent"] += 1
        self._transport.send(link, frame)

    def close(self, link: LinkId) -> None:
        self.retire(link)
        self._transport.close(link)

    def retire(self, link: LinkId) -> None:
        self._retired[link] = None
        while len(self._retired) > RETIRED_LINKS_KEPT:
            self._retired.popitem(last=False)

    def own_claim(self) -> str | None:
        """Our host claim, re-signed when half its freshness window has passed (tier key only)."""
        if self._keyring is None or self.authority.tier != "key":
            return None
        now = self._scheduler.wall()
        if self._host_claim is None or now - self._host_claim[0] > FRESH_S / 2:
            self._host_claim = (now, self._keyring.claim(by=self.self_id, now=now))
        return self._host_claim[1]

    def set_host_key(self, keyring: HostKeyring) -> None:
        """Become the host mid-session (the key was typed in, or unsealed from the link): prove it to
        the coordinator now (or, coordinating, name ourselves host)."""
        if keyring.public_text != self.gate.host.key:
            raise ValueError("this host key is not the key this room's settings name as its host")
        self._keyring, self._host_claim = keyring, None
        if self._coordinator is not None:
            self._coordinator.profile_changed()
        elif self._participant is not None:
            self._participant.profile_changed()

    def link_fp(self, link: LinkId) -> str | None:
        t = self._transport
        return t.remote_fingerprint(link) if isinstance(t, CertifiedTransport) else None

    def known_fps(self) -> list[str]:
        return self._known_fps() if self._known_fps is not None else []

    def own_email(self) -> str | None:
        return self._own_email() if self._own_email is not None else None

    def identity_keys_arrived(self) -> None:
        """An issuer's keys arrived: as coordinator, check the announces that waited for them."""
        if self._coordinator is not None:
            self._coordinator.recheck_identity()

    def identity_changed(self) -> None:
        """Our own verified identity changed (host tier email): as coordinator, say who hosts now."""
        if self._coordinator is not None:
            self._coordinator.profile_changed()

    def may_read_roster(self, member_id: str) -> bool:
        return self._may_read_roster is None or self._may_read_roster(member_id)

    def grants_changed(self) -> None:
        """The room's grants changed: as coordinator, re-send the roster (some may now read it, or no
        longer)."""
        if self._coordinator is not None:
            self._coordinator.broadcast(force=True)

    def checked_roster(self, roster: Roster) -> Roster:
        """A coordinator's roster as we believe it: in tier key its host stands only with a claim that
        checks out against the room's host key (a coordinator cannot make anyone host)."""
        if self.authority.tier != "key" or not roster.host:
            return roster
        claim = self.authority.check_claim(roster.host_proof, by=roster.host, now=None)
        if isinstance(claim, HostCommand):
            return roster
        self.drops.drop("roster:bad-host-claim")
        return replace(roster, host="", host_proof=None)

    def removed_self(self) -> None:
        """A valid host record removes us while we coordinate: leave with the record on the roster."""
        if self._coordinator is not None:
            self._coordinator.leave()
            self._transport.release(self.room_id)
        self.emit(Kicked())
        self._enter("left")

    def set_lobby_status(self, status: LobbyState) -> None:
        if status != self.lobby_status:
            self.lobby_status = status
            self.emit(LobbyStatus(status))

    def lost_coordinator(self, reason: str = "") -> None:
        if reason in ("not-claimed", "not-registered"):
            # Our own member id is being claimed again (the broker came back): no failure, just soon.
            self._enter("reclaiming")
            self._timers.set("reclaim", NOT_CLAIMED_RETRY, self._claim)
            return
        self._schedule_reclaim()

    def kicked(self) -> None:
        self.emit(Kicked())
        if self._participant is not None:
            self._participant.drop_link()
        self._enter("left")

    def mark_stable(self) -> None:
        self._failures = 0

    def coordinator_silent(self) -> None:
        """Ask the broker whether the room id is still held (see :mod:`kibitz.room.participant`)."""
        if self._participant is not None and not self._checking_id:
            self._checking_id = True
            self.stats["claims"] += 1
            self._transport.claim(self.room_id)

    def _on_id_check(self, ev: ClaimResult) -> None:
        """The answer to a silent coordinator's participant asking for the room id."""
        self._checking_id = False
        if ev.outcome == "claimed":
            # The broker let the old holder go: we take over (its link is of no more use).
            assert self._participant is not None
            self._participant.drop_link()
            self._become_coordinator()
