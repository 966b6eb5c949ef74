"""The participant's side of the presence star: one tenure of a link to the coordinator.

A participant dials the room id from its member id over a ``kbz-presence`` link, announces itself with
``voice``, pings every beat, re-announces whenever a roster arrives without it (or with a stale view of
it), and takes the roster, lobby verdicts, kicks and resets the coordinator sends. When the link closes,
fails to open, or goes silent, the tenure ends and the :class:`~kibitz.room.Room` facade races to
reclaim the room id.

A coordinator that goes silent while its link stays open (a frozen tab, a stopped process: the
browser's network stack keeps the link alive) still holds the room id at the broker, so nobody can
take over. The participant keeps the link, and every :data:`SILENT_RECHECK` s it dials the room id
once more (a *spare* link) and asks the facade to check whether the id is free
(:meth:`ParticipantCore.coordinator_silent`). The moment the coordinator speaks again on the old
link the tenure simply goes on (the spare is dropped). If the spare opens, a live coordinator holds
the id (one that had forgotten our link): the spare becomes the link. If the broker frees the id
(the coordinator's socket expired), the facade takes over as usual.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from kibitz.gate import JoinGate
from kibitz.protocol.base import PROTOCOL_VERSION, decode
from kibitz.protocol.presence import (
    COORDINATOR_FAMILY,
    Kick,
    Knocks,
    Leave,
    LobbyMsg,
    LobbyState,
    Mod,
    Ping,
    Reset,
    RosterMsg,
    Voice,
)
from kibitz.room.base import RoomCore, Timers
from kibitz.room.model import (
    COORDINATOR_SILENCE,
    FREEZE_GAP,
    OPEN_TIMEOUT,
    PING_INTERVAL,
    PRESENCE_LABEL,
    REANNOUNCE_AFTER,
    REANNOUNCE_MIN_GAP,
    SILENT_RECHECK,
    STABLE_AFTER,
    ConnectedChanged,
    Knocker,
    KnocksChanged,
    Member,
    RoomReset,
    Roster,
)
from kibitz.transport import LinkClosed, LinkId, LinkMessage, LinkOpened, Payload, TransportEvent


class ParticipantCore(RoomCore, Protocol):
    """What a participant needs from the facade beyond :class:`RoomCore`."""

    lobby_status: LobbyState | None
    gate: JoinGate

    def set_lobby_status(self, status: LobbyState) -> None: ...

    def own_claim(self) -> str | None:
        """A fresh host claim for ourselves if we hold the host key, else None."""

    def checked_roster(self, roster: Roster) -> Roster:
        """``roster`` with its host cleared unless the host's claim checks out for us."""

    def lost_coordinator(self, reason: str = "") -> None:
        """The link is gone (closed, never opened, or silent): end this tenure and reclaim.
        ``reason`` is the link's close reason when there is one."""

    def kicked(self) -> None:
        """The coordinator removed us: end this tenure and leave the room for good."""

    def mark_stable(self) -> None:
        """The link has held long enough: forget earlier failures when backing off next time."""

    def coordinator_silent(self) -> None:
        """The coordinator has been silent past :data:`COORDINATOR_SILENCE` on a link that is still
        open: check whether the room id is still held (again every :data:`SILENT_RECHECK` s)."""


class Participant:
    """One tenure as a participant (see the module docstring)."""

    def __init__(self, core: ParticipantCore) -> None:
        self._core = core
        self.timers = Timers(core.scheduler, core.drops, f"room {core.room_id} participant")
        self.link: LinkId | None = None
        self.link_open = False
        self._last_heard = 0.0
        self._last_ping_tick = 0.0
        self._last_announce = -1e9
        self._in_roster_here = False
        self.knocks: tuple[Knocker, ...] = ()
        """The waiting room as the coordinator forwards it to us, the host."""
        self.silent = False
        """The coordinator has gone quiet on an open link (see the module docstring)."""
        self.spare: LinkId | None = None
        self._silent_checked = 0.0

    def begin(self) -> None:
        core = self._core
        core.stats["dials"] += 1
        self.link = core.transport.dial(core.self_id, core.room_id, PRESENCE_LABEL)
        self.link_open = False
        self.timers.set("open-timeout", OPEN_TIMEOUT, self._on_open_timeout)

    def stop(self) -> None:
        self.timers.stop()
        self._drop_spare()

    def leave(self) -> None:
        """Say goodbye (if the link is up) and close it."""
        if self.link is not None and self.link_open:
            self._core.send(self.link, Leave())
        self.drop_link()

    def drop_link(self) -> None:
        self._drop_spare()
        if self.link is not None:
            self._core.close(self.link)
            self.link = None
            self.link_open = False

    def owns(self, link: LinkId) -> bool:
        return link == self.link or (self.spare is not None and link == self.spare)

    def _drop_spare(self) -> None:
        if self.spare is not None:
            self._core.close(self.spare)
            self.spare = None

    def _dial_spare(self) -> None:
        core = self._core
        if self.spare is None:
            core.stats["dials"] += 1
            self.spare = core.transport.dial(core.self_id, core.room_id, PRESENCE_LABEL)

    def _on_spare(self, ev: LinkOpened | LinkMessage | LinkClosed) -> None:
        """An event on the spare link: it opening means a live coordinator answered; adopt it."""
        if isinstance(ev, LinkClosed):
            self._core.retire(ev.link)
            self.spare = None
            return
        old, self.link, self.spare = self.link, self.spare, None
        self.link_open = False
        self.silent = False
        if old is not None:
            self._core.close(old)
        if isinstance(ev, LinkMessage):
            self.on_link(LinkOpened(ev.link))  # a message proves the link is open
        self.on_link(ev)

    def profile_changed(self) -> None:
        if self.link_open:
            self._announce(force=True)

    def send_mod(self, token: str) -> bool:
        """Hand a host command or record to the coordinator; False when there is no open link."""
        if self.link is None or not self.link_open:
            return False
        self._core.send(self.link, Mod(token=token))
        return True

    # --- events -----------------------------------------------------------------------------------

    def on_link(self, ev: TransportEvent) -> None:
        core = self._core
        if self.spare is not None and isinstance(ev, LinkOpened | LinkMessage | LinkClosed) \
                and ev.link == self.spare:
            self._on_spare(ev)
            return
        if isinstance(ev, LinkOpened):
            if self.link_open:
                return
            now = core.scheduler.now()
            self.link_open = True
            self.timers.cancel("open-timeout")
            self._last_heard = self._last_ping_tick = now
            self._in_roster_here = False
            self._announce()
            for i, delay in enumerate(REANNOUNCE_AFTER):
                self.timers.set(f"reannounce{i}", delay, self._reannounce_if_missing)
            self.timers.set("ping", PING_INTERVAL, self._ping_tick)
            self.timers.set("stable", STABLE_AFTER, core.mark_stable)
            core.emit(ConnectedChanged(True))
        elif isinstance(ev, LinkClosed):
            core.retire(ev.link)
            self.link = None
            self.link_open = False
            core.lost_coordinator(ev.reason)
        elif isinstance(ev, LinkMessage):
            self._on_coordinator_frame(ev.data)

    def _on_open_timeout(self) -> None:
        self.drop_link()
        self._core.lost_coordinator()

    def _reannounce_if_missing(self) -> None:
        core = self._core
        if not self._in_roster_here and core.profile.on and core.lobby_status != "waiting":
            self._announce(throttle=True)

    def _voice(self) -> Voice:
        core = self._core
        p = core.profile
        return Voice(
            on=p.on,
            cam=p.cam,
            mic=p.mic,
            name=p.name,
            avatar=p.avatar,
            token=p.token,
            meta=p.meta or None,
            cred=p.cred,
            jwt=p.jwt,
            agentAssertion=p.agent_assertion,
            agentCredit=p.agent_credit,
            hc=core.own_claim(),
            v=PROTOCOL_VERSION,
            f=list(core.features) or None,
        )

    def _announce(self, *, throttle: bool = False, force: bool = False) -> None:
        """Send our voice. Once the door has said no, only a change of ours (``force``: a new name, a
        new credential) announces again; re-announces stop."""
        core = self._core
        if self.link is None or not self.link_open:
            return
        if core.lobby_status in _REFUSED and not force:
            return
        now = core.scheduler.now()
        wait = self._last_announce + REANNOUNCE_MIN_GAP - now
        if throttle and wait > 0:
            # Too soon after the last one: try once more when the gap has passed, if still missing.
            if "reannounce-later" not in self.timers:
                self.timers.set("reannounce-later", wait, self._reannounce_if_missing)
            return
        self._last_announce = now
        core.send(self.link, self._voice())

    def _ping_tick(self) -> None:
        core = self._core
        now = core.scheduler.now()
        gap = now - self._last_ping_tick
        self._last_ping_tick = now
        if gap > FREEZE_GAP:
            self._last_heard = now  # we were frozen, not the coordinator silent
        elif now - self._last_heard > COORDINATOR_SILENCE:
            if not self.link_open:
                self.drop_link()
                core.lost_coordinator()
                return
            if not self.silent or now - self._silent_checked >= SILENT_RECHECK:
                self._silent_checked = now
                self.silent = True
                self._dial_spare()
                core.coordinator_silent()
        if self.link is not None:
            core.send(self.link, Ping())
            if core.lobby_status == "credential-in-use":
                self._announce(throttle=True)  # the seat frees when its holder leaves: ask again
        self.timers.set("ping", PING_INTERVAL, self._ping_tick)

    def _on_coordinator_frame(self, data: Payload) -> None:
        core = self._core
        msg = decode(data, COORDINATOR_FAMILY, core.drops)
        if msg is None:
            return
        core.stats["received"] += 1
        self._last_heard = core.scheduler.now()
        if self.silent:
            self.silent = False
            self._drop_spare()
        if isinstance(msg, RosterMsg):
            roster = core.checked_roster(
                Roster(
                    tuple(
                        Member(m.id, m.name, m.cam, bool(m.mic), m.avatar, m.meta or {}, tuple(m.f or ()),
                               m.tk)
                        for m in msg.members
                    ),
                    msg.c,
                    msg.host or "",
                    bool(msg.lobby),
                    bool(msg.locked),
                    msg.hp,
                    tuple(msg.rec or ()),
                )
            )
            mine = roster.get(core.self_id)
            self._in_roster_here = mine is not None
            if mine is not None and core.lobby_status not in (None, "admitted"):
                core.set_lobby_status("admitted")
            core.publish(roster)
            stale = mine is None or mine != self._self_member_as_seen(mine)
            if core.profile.on and stale and core.lobby_status not in ("waiting", *_REFUSED):
                self._announce(throttle=True)
        elif isinstance(msg, LobbyMsg):
            core.set_lobby_status(msg.status)
        elif isinstance(msg, Kick):
            core.kicked()
        elif isinstance(msg, Reset):
            core.emit(RoomReset())
        elif isinstance(msg, Knocks):
            knocks = tuple(Knocker(k.id, k.name, k.avatar) for k in msg.list_)
            if knocks != self.knocks:
                self.knocks = knocks
                core.emit(KnocksChanged(knocks))

    def _self_member_as_seen(self, seen: Member) -> Member:
        """Our profile as the roster should show it (features, token hash and an invite's fixed name
        as the coordinator relays them)."""
        core = self._core
        p = core.profile
        mine = Member(core.self_id, p.name, p.cam, p.mic, p.avatar, dict(p.meta), core.features)
        name = seen.name if p.cred and core.gate.mode == "invite" else p.name
        return replace(mine, name=name, features=seen.features, tk=seen.tk)


_REFUSED: frozenset[str] = frozenset(
    {"denied", "locked", "removed", "full", "needs-credential", "bad-credential", "expired-credential",
     "not-listed", "unverified"}
)
