"""The coordinator's side of the presence star: one tenure of holding the room id.

The coordinator keeps the roster: it accepts ``kbz-presence`` links from members, lets them in (or
holds them at the door), rebroadcasts the roster on change and every few beats, reaps the silent, and
grandfathers the previous coordinator's roster so a migration does not flicker. It never relays
content. Every transition of this protocol is here; the :class:`~kibitz.room.Room` facade only decides
when a tenure starts and ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kibitz.protocol.base import PROTOCOL_VERSION, decode, encode
from kibitz.protocol.presence import (
    CLIENT_FAMILY,
    MAX_MEMBERS,
    Kick,
    Knock,
    Leave,
    LobbyMsg,
    Mod,
    Ping,
    Reset,
    RosterMember,
    RosterMsg,
    Voice,
)
from kibitz.room.base import RoomCore, Timers
from kibitz.room.model import (
    FREEZE_GAP,
    FULL_ROSTER_EVERY,
    GRANDFATHER_GRACE,
    PING_INTERVAL,
    REAP_AFTER,
    Knocker,
    KnocksChanged,
    Member,
    ModRequested,
    RoomReset,
    Roster,
)
from kibitz.transport import (
    IncomingLink,
    LinkClosed,
    LinkId,
    LinkMessage,
    LinkOpened,
    Payload,
    TransportEvent,
)

Verdict = Literal["ok", "kicked", "locked", "waiting"]


@dataclass
class _Entry:
    """Bookkeeping for one roster member."""

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


class Coordinator:
    """One tenure as the room's coordinator (see the module docstring)."""

    def __init__(self, core: RoomCore) -> None:
        self._core = core
        self.timers = Timers(core.scheduler, core.drops, f"room {core.room_id} coordinator")
        self._entries: dict[str, _Entry] = {}
        self.links: dict[LinkId, str] = {}
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

    # --- tenure -----------------------------------------------------------------------------------

    def begin(self, last: Roster) -> None:
        """Take over from ``last`` (the roster this member saw before): inherit the room's flags and
        grandfather its members for a grace period, so nobody flickers out during a migration."""
        core = self._core
        now = core.scheduler.now()
        self._lobby, self._locked, self._host = last.lobby, last.locked, ""
        self._put_self()
        for m in last.members:
            if m.id in (core.self_id, last.coordinator) or len(self._entries) >= MAX_MEMBERS:
                continue
            self._entries[m.id] = _Entry(m, None, None, now, provisional_until=now + GRANDFATHER_GRACE)
            self._admitted_ids.add(m.id)
        self._last_tick = now
        self.broadcast()
        self.timers.set("tick", PING_INTERVAL, self._tick)

    def stop(self) -> None:
        """End the tenure: timers die; links stay as they are (see :meth:`step_down`, :meth:`leave`)."""
        self.timers.stop()

    def step_down(self) -> None:
        """Someone else may hold the room id now: close every member link."""
        for link in list(self.links):
            self.close(link)

    def leave(self) -> None:
        """A clean goodbye: everyone sees us gone at once, then every link closes."""
        self._entries.pop(self._core.self_id, None)
        self.broadcast()
        self.step_down()

    def owns(self, link: LinkId) -> bool:
        return link in self.links

    @property
    def knocks(self) -> tuple[Knocker, ...]:
        return tuple(w.knocker for w in self._waiting.values())

    def profile_changed(self) -> None:
        self._put_self()
        self.broadcast()

    # --- moderation (the host layer calls these after verifying a host command) -------------------

    def set_flags(
        self, *, lobby: bool | None = None, locked: bool | None = None, host: str | None = None
    ) -> None:
        """Change the waiting-room / lock / host flags that ride the roster."""
        if lobby is not None:
            self._lobby = lobby
        if locked is not None:
            self._locked = locked
        if host is not None:
            self._host = host
        self.broadcast()

    def admit(self, member_id: str) -> None:
        """Let a knocker in."""
        waiting = self._waiting.pop(member_id, None)
        if waiting is None:
            raise KeyError(f"{member_id!r} is not waiting")
        self._admitted_ids.add(member_id)
        if waiting.token:
            self._admitted_tokens.add(waiting.token)
        self._core.send(waiting.link, LobbyMsg(status="admitted"))
        self._core.emit(KnocksChanged(self.knocks))
        if waiting.voice is not None:
            self._apply_voice(waiting.link, member_id, waiting.voice)
        else:
            self._send_roster(waiting.link)

    def deny(self, member_id: str) -> None:
        """Turn a knocker away."""
        waiting = self._waiting.pop(member_id, None)
        if waiting is None:
            raise KeyError(f"{member_id!r} is not waiting")
        self._core.send(waiting.link, LobbyMsg(status="denied"))
        self._core.emit(KnocksChanged(self.knocks))

    def kick(self, member_id: str) -> None:
        """Remove a member and keep its id and token out for this tenure."""
        if member_id == self._core.self_id:
            raise ValueError("the coordinator cannot kick itself")
        entry = self._entries.get(member_id)
        self._kicked_ids.add(member_id)
        if entry is not None and entry.token:
            self._kicked_tokens.add(entry.token)
        for link, mid in list(self.links.items()):
            if mid == member_id:
                self._core.send(link, Kick())
        self._remove(member_id)
        self._waiting.pop(member_id, None)
        self.broadcast()

    def reset_room(self) -> None:
        """Tell every participant the room was reset (what that means is the app's)."""
        for link in list(self.links):
            if link in self._open:
                self._core.send(link, Reset())
        self._core.emit(RoomReset())

    # --- events -----------------------------------------------------------------------------------

    def on_incoming(self, ev: IncomingLink) -> None:
        if ev.remote_id in self._kicked_ids:
            self.close(ev.link)
            return
        self.links[ev.link] = ev.remote_id

    def on_link(self, ev: TransportEvent) -> None:
        """An event on one of our member links."""
        if isinstance(ev, LinkOpened):
            self._open.add(ev.link)
        elif isinstance(ev, LinkClosed):
            mid = self.links.pop(ev.link)
            self._open.discard(ev.link)
            self._subscribed.discard(ev.link)
            self._core.retire(ev.link)
            self._drop_waiting_on(mid, ev.link)
            entry = self._entries.get(mid)
            if entry is not None and entry.link == ev.link:
                self._remove(mid)
                self.broadcast()
        elif isinstance(ev, LinkMessage):
            self._open.add(ev.link)  # a message proves the link is open, whatever the event order
            self._on_client_frame(ev.link, self.links[ev.link], ev.data)

    def on_member_left(self, peer_id: str) -> None:
        """The broker says a member's process is gone: drop it now instead of after the reap."""
        self._drop_waiting_any(peer_id)
        if self._remove(peer_id):
            self.broadcast()

    def _tick(self) -> None:
        core = self._core
        now = core.scheduler.now()
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
                if mid == core.self_id:
                    continue
                expired = (
                    now >= entry.provisional_until
                    if entry.provisional_until is not None
                    else now - entry.last_seen > REAP_AFTER
                )
                if expired:
                    self._remove(mid)
        for w in self._waiting.values():
            core.send(w.link, Ping())
        self._ticks_since_full += 1
        if not self.broadcast(force=self._ticks_since_full >= FULL_ROSTER_EVERY):
            ping = encode(Ping())
            for link in self.links:
                if link in self._subscribed and link in self._open:
                    core.send_raw(link, ping)
        self.timers.set("tick", PING_INTERVAL, self._tick)

    def _on_client_frame(self, link: LinkId, mid: str, data: Payload) -> None:
        core = self._core
        msg = decode(data, CLIENT_FAMILY, core.drops)
        if msg is None:
            return
        core.stats["received"] += 1
        now = core.scheduler.now()
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
                self.broadcast()
            else:
                self.close(link)
        elif isinstance(msg, Knock):
            self._on_knock(link, mid, msg)
        elif isinstance(msg, Mod):
            core.emit(ModRequested(mid, msg.token))

    # --- the door ---------------------------------------------------------------------------------

    def _gate(self, mid: str, token: str | None) -> Verdict:
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
            self._core.send(link, LobbyMsg(status="admitted"))
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
        core = self._core
        if verdict == "kicked":
            core.send(link, Kick())
            self.close(link)
        elif verdict == "locked":
            core.send(link, LobbyMsg(status="locked"))
        else:
            previous = self._waiting.get(mid)
            voice = voice or (previous.voice if previous else None)
            self._waiting[mid] = _Waiting(link, voice, knocker, token)
            core.send(link, LobbyMsg(status="waiting"))
            if previous is None or previous.knocker != knocker:
                core.emit(KnocksChanged(self.knocks))

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
                if not self.broadcast():
                    self._send_roster(link)
            return
        if verdict != "ok":
            self._turn_away(link, mid, verdict, msg, Knocker(mid, msg.name, msg.avatar), msg.token)
            return
        self._apply_voice(link, mid, msg)

    def _apply_voice(self, link: LinkId, mid: str, msg: Voice) -> None:
        core = self._core
        member = Member(mid, msg.name, msg.cam, bool(msg.mic), msg.avatar, msg.meta or {}, tuple(msg.f or ()))
        changed = False  # True once the roster others see differs
        if msg.token:
            for other, entry in list(self._entries.items()):
                if other not in (mid, core.self_id) and entry.token == msg.token:
                    self._remove(other)  # the same tab reconnected under a new id
                    changed = True
        old = self._entries.get(mid)
        if old is None and len(self._entries) >= MAX_MEMBERS:
            core.drops.drop("room-full")
            core.send(link, LobbyMsg(status="denied"))
            return
        if old is not None and old.link not in (None, link):
            self.close(old.link)
        changed = changed or old is None or old.member != member
        self._entries[mid] = _Entry(member, link, msg.token, core.scheduler.now())
        self._subscribed.add(link)
        self._admitted_ids.add(mid)
        if msg.token:
            self._admitted_tokens.add(msg.token)
        if changed:
            self.broadcast()
        else:
            self._send_roster(link)

    def _drop_waiting_on(self, mid: str, link: LinkId) -> None:
        waiting = self._waiting.get(mid)
        if waiting is not None and waiting.link == link:
            del self._waiting[mid]
            self._core.emit(KnocksChanged(self.knocks))

    def _drop_waiting_any(self, mid: str) -> None:
        if self._waiting.pop(mid, None) is not None:
            self._core.emit(KnocksChanged(self.knocks))

    # --- the roster -------------------------------------------------------------------------------

    def _self_member(self) -> Member:
        core = self._core
        p = core.profile
        return Member(core.self_id, p.name, p.cam, p.mic, p.avatar, dict(p.meta), core.features)

    def _put_self(self) -> None:
        core = self._core
        if core.profile.on:
            now = core.scheduler.now()
            self._entries[core.self_id] = _Entry(self._self_member(), None, core.profile.token, now)
        else:
            self._entries.pop(core.self_id, None)

    def _remove(self, mid: str, *, close_link: bool = True) -> bool:
        entry = self._entries.pop(mid, None)
        if entry is None:
            return False
        if close_link and entry.link is not None:
            self.close(entry.link)
        return True

    def _current_roster(self) -> Roster:
        members = tuple(e.member for e in self._entries.values())
        return Roster(members, self._core.self_id, self._host, self._lobby, self._locked)

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
            self._core.drops.drop("roster-oversize")
            stripped = [m.model_copy(update={"meta": None}) for m in msg.members]
            return encode(msg.model_copy(update={"members": stripped}))

    def broadcast(self, *, force: bool = False) -> bool:
        """Publish the roster locally; send it to every subscribed link if it changed (or ``force``)."""
        core = self._core
        roster = self._current_roster()
        changed = roster != core.roster
        if not (changed or force):
            return False
        frame = self._roster_frame(roster)
        self._ticks_since_full = 0
        for link in self.links:
            if link in self._subscribed and link in self._open:
                core.send_raw(link, frame)
        core.publish(roster)
        return True

    def _send_roster(self, link: LinkId) -> None:
        self._core.send_raw(link, self._roster_frame(self._current_roster()))

    def close(self, link: LinkId) -> None:
        self.links.pop(link, None)
        self._open.discard(link)
        self._subscribed.discard(link)
        self._core.close(link)
