"""One participant in one room: the controller every surface drives.

A :class:`Session` composes the parts of the engine for one member: it claims the member's broker
id, runs the :class:`~kibitz.room.Room` (presence star), the :class:`~kibitz.mesh.Mesh` (content
links) and the :class:`~kibitz.content.ContentRouter` (chat, app data, grants), and answers with
the public controller API. The page's ``Kibitz.mount`` controller and the CPython agent SDK are thin
wrappers over it, so a feature exists once and both surfaces get it.

Like the rest of the core it touches no sockets or clocks: the transport, scheduler and local media
come in through the seams. Listener errors are caught and logged (LiveKit-style): one bad handler
never breaks the call.
"""

from __future__ import annotations

import inspect
import logging
import random
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from kibitz.authority import HostAuthority, HostKeyring, Op
from kibitz.capabilities import AGENT_DEFAULT, CapabilityBook, Grant, GrantTier
from kibitz.clock import Scheduler, TimerHandle
from kibitz.content import ChatLine, ContentRouter
from kibitz.gate import JoinGate, check_room, make_link
from kibitz.identity.agents import CreditIssuer
from kibitz.identity.keys import Fetch
from kibitz.identity.member import IdentityError, MemberIdentity
from kibitz.ids import new_member_id
from kibitz.mesh import Mesh
from kibitz.room import (
    ConnectedChanged,
    Kicked,
    KnocksChanged,
    LobbyStatus,
    MemberProfile,
    RoleChanged,
    Room,
    RoomEvent,
    RoomReset,
    Roster,
    RosterChanged,
)
from kibitz.rooms import unseal_host_key
from kibitz.transport import (
    PLACEHOLDER,
    ClaimResult,
    IdentityLost,
    IncomingLink,
    Lane,
    LaneDefault,
    LinkMessage,
    MediaTransport,
    TrackArrived,
    Transport,
    TransportEvent,
)

log = logging.getLogger(__name__)

EVENTS: frozenset[str] = frozenset(
    {"participants", "join", "leave", "state", "chat", "message", "knocks", "lobby", "caps", "tracks"}
)
Source = Literal["mic", "cam", "screen"]

MEMBER_CLAIM_RETRY_S = (0.25, 0.5, 1.0, 2.0)
"""Backoff (seconds, each scaled by a random 0.5–1.0) before claiming our member id again after the
broker lost it or refused: short, so a restarted broker has everyone back within about two seconds,
and jittered, so they do not all arrive in the same instant."""
AGENT_RECLAIM_BIAS_S = 1.5


class LocalMedia(Protocol):
    """Local capture, supplied by the backend (the page's getUserMedia, an agent's tone track).

    ``acquire`` may prompt the user and fail (``PermissionError``). Flowing placeholders (2×2 black
    video, silence) are the transport's business: a lane never goes sample-less unless we say so.
    """

    def acquire(self, source: Source) -> Awaitable[object]: ...

    def release(self, source: Source) -> None: ...


@dataclass
class _LocalState:
    mic: bool = False
    cam: bool = False
    sharing: bool = False
    tracks: dict[str, object] = field(default_factory=dict)


class Session:
    """The controller of one member of one room (snake_case twin of the page's MountedWidget)."""

    def __init__(
        self,
        room: str,
        *,
        transport: Transport,
        scheduler: Scheduler,
        rng: random.Random | None = None,
        name: str = "",
        meta: Mapping[str, Any] | None = None,
        identity: str | None = None,
        member_id: str | None = None,
        media: LocalMedia | None = None,
        wall_clock: Callable[[], float] | None = None,
        gate: JoinGate | Mapping[str, Any] | None = None,
        credential: str | None = None,
        host_key: str | None = None,
        verify_identity: Mapping[str, Any] | None = None,
        identity_token: str | None = None,
        api_base: str | None = None,
        fetch: Fetch | None = None,
        agent_key: str | None = None,
        agent_credits: CreditIssuer | Mapping[str, Any] | None = None,
        agent_credit: str | None = None,
    ) -> None:
        """``gate``: the room's settings (a :class:`~kibitz.gate.JoinGate` or the ``joinGate`` JSON);
        checked against the room id, so a committed room opened with the wrong settings raises
        :class:`~kibitz.gate.GateError` here. ``credential``: what gets us through the gate (an
        invite token, or a code proof made by :func:`prepare_credential`). ``host_key``: the host's
        private key (``kbzk1.…``) when we are the room's host.

        Identity (:mod:`kibitz.identity`): ``verify_identity`` is the ``verifyIdentity`` option
        (providers, allowed addresses, ``require``); ``api_base`` the Kibitz server whose email codes
        we trust; ``fetch`` the HTTP seam that loads issuers' keys; ``identity_token`` a token bound to
        this member's certificate (adopted once it checks out); ``agent_key`` an agent key
        (``kbzk1.…``) for rooms that admit only known agents; ``agent_credits`` the credit issuer the
        door demands of agents when we coordinate; ``agent_credit`` our own credit."""
        self.room_name = room
        self.gate = check_room(room, JoinGate.from_json(gate) if gate is not None else None)
        self.authority = HostAuthority(self.gate, room)
        self._keyring: HostKeyring | None = None
        if host_key:
            if self.gate.host.tier != "key":
                raise ValueError("this room's settings name no host key: a hostKey cannot make you its host")
            self._keyring = HostKeyring(host_key, room)
            if self._keyring.public_text != self.gate.host.key:
                raise ValueError("this hostKey is not the host key of this room (wrong key, or another room)")
        self._transport = transport
        self._scheduler = scheduler
        self.identity = MemberIdentity(room, gate=self.gate, transport=transport, scheduler=scheduler,
                                       wall=wall_clock or scheduler.wall, verify=verify_identity,
                                       api_base=api_base, fetch=fetch, agent_key=agent_key,
                                       agent_credits=agent_credits)
        self._identity_token = identity_token
        self._rng = rng or random.Random()
        self._media = media
        self._wall = wall_clock or scheduler.wall
        self.self_id = member_id or new_member_id()
        token = identity or f"tok-{secrets.token_hex(16)}"
        self._profile = MemberProfile(name=name, on=False, meta=dict(meta or {}), token=token,
                                      cred=credential, agent_credit=agent_credit)
        self.room: Room | None = None
        self._make_parts()
        self._listeners: dict[str, list[Callable[..., Any]]] = {e: [] for e in EVENTS}
        self._local = _LocalState()
        self._arrived: dict[str, dict[str, object]] = {}
        """Every remote track by peer and lane, as the transport handed it over."""
        self._remote_tracks: dict[str, dict[str, object]] = {}
        """What we play: the arrived tracks the sender may use (audio needs its ``speak``)."""
        self._claim_attempts = 0
        self._claim_timer: TimerHandle | None = None
        self._started = False
        self._left = False
        self._roster = Roster()
        self._lobby_status: str | None = None
        self.handler_errors = 0
        self._wire_identity()

    def _make_parts(self) -> None:
        """The per-identity parts: grant book, data mesh and content router, all keyed by self_id."""
        keyring, authority = self._keyring, self.authority
        # Tier email: the verified host writes unsigned maps, as in tier name.
        tier: GrantTier = "name" if authority.tier == "email" else authority.tier
        self.book = CapabilityBook(
            self_id=self.self_id,
            now=self._wall,
            tier=tier,
            sign=(lambda v, h: keyring.caps(version=v, digest=h, now=self._wall())) if keyring else None,
            check=lambda sig, v, h: authority.check_caps(sig, version=v, digest=h),
        )
        self.mesh = Mesh(
            self_id=self.self_id,
            transport=self._transport,
            scheduler=self._scheduler,
            rng=self._rng,
            on_link=self._on_link,
        )
        self.content = ContentRouter(
            mesh=self.mesh,
            book=self.book,
            now=self._wall,
            name_of=self._name_of,
            on_chat=self._on_chat,
            on_app=self._on_app,
            on_caps=self._on_caps,
            on_idtoken=lambda peer, jwt: self.identity.on_token(peer, jwt),
            hold=lambda: self.identity.roster.holding,
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Claim our member id at the broker, then connect to the room (not yet in the call)."""
        if self._started:
            return
        self._started = True
        self._transport.bind(self._on_transport)
        self._transport.claim(self.self_id)
        self.identity.start()
        if self._identity_token:
            token, self._identity_token = self._identity_token, None
            try:
                self.identity.provide(token)
            except IdentityError as exc:
                log.warning("identity token refused: %s", exc)

    def join(self, *, mic: bool = False, cam: bool = False) -> None:
        """Enter the call: appear on the roster, bring up data links. Joins muted, camera off by default."""
        self._require_live()
        self._local.mic = self._local.mic or mic
        self._local.cam = self._local.cam or cam
        self._update_profile(on=True, mic=self._local.mic, cam=self._local.cam)

    def knock(self, name: str | None = None, avatar: str | None = None) -> None:
        """Introduce ourselves to a gated room: in a room with a waiting room this puts us in the
        host's queue (a voice without a prior knock counts as one); re-callable to rename while
        waiting. In an open room it simply joins."""
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = name
        if avatar is not None:
            changes["avatar"] = avatar
        if changes:
            self._update_profile(**changes)
        if not self._profile.on:
            self.join()

    def leave(self) -> None:
        """Leave the call but stay connected to the room (the launcher still shows who is there)."""
        if self.room is not None and self._profile.on:
            self._update_profile(on=False)
        self.mesh.depart()
        self._emit_state()

    def close(self) -> None:
        """Tear everything down with a clean goodbye, so peers drop us at once. Idempotent."""
        if self._left:
            return
        self._left = True
        self.identity.stop()
        if self._claim_timer is not None:
            self._claim_timer.cancel()
        if self.room is not None:
            self.room.leave()
        self.mesh.close()
        self._transport.release(self.self_id)
        for source in list(self._local.tracks):
            if self._media is not None:
                self._media.release(source)  # type: ignore[arg-type]
        self._local.tracks.clear()

    # ------------------------------------------------------------------ controller: reading

    @property
    def in_call(self) -> bool:
        return self._profile.on and not self._left

    def get_state(self) -> dict[str, Any]:
        r = self._roster
        return {
            "inCall": self.in_call,
            "micOn": self._local.mic,
            "camOn": self._local.cam,
            "sharing": self._local.sharing,
            "self": self.self_id,
            "isHost": self.room is not None and self.room.is_host,
            "hostTier": self.gate.host.tier,
            "gateMode": self.gate.mode,
            "canGrant": self.book.may_edit(),
            "hostKeySealed": bool(self.gate.sealed_host_key) and self._keyring is None,
            "lobbyOn": r.lobby,
            "locked": r.locked,
            "lobbyStatus": self._lobby_status,
            "coordinator": r.coordinator,
            "isCoordinator": self.room is not None and self.room.is_coordinator,
            "connected": self.room is not None and self.room.connected,
            **self.identity.state(self.in_call),
        }

    def get_participants(self) -> list[dict[str, Any]]:
        """Everyone on the call (ourselves included while in it), roster order."""
        people = []
        host = self.identity.verified_host(self._roster.host, self.self_id)
        for m in self._roster.members:
            meta = dict(m.meta)
            people.append(
                {
                    "id": m.id,
                    "name": m.name,
                    "isSelf": m.id == self.self_id,
                    "camOn": m.cam,
                    "micOn": m.mic,
                    "avatar": m.avatar,
                    "meta": meta,
                    "role": "host" if host and m.id == host else "guest",
                    "kind": "agent" if meta.get("role") == "agent" else "human",
                    "speaking": False,
                    "linkUp": m.id == self.self_id or self.mesh.link_up(m.id),
                    **self.identity.participant(m.id, self.self_id),
                }
            )
        return people

    def get_chat(self) -> list[dict[str, Any]]:
        return [line.to_json() for line in self.content.chat]

    def get_knocks(self) -> list[dict[str, Any]]:
        if self.room is None:
            return []
        return [{"id": k.id, "name": k.name, "avatar": k.avatar} for k in self.room.knocks]

    def remote_tracks(self, peer: str) -> dict[str, object]:
        return dict(self._remote_tracks.get(peer, {}))

    # ------------------------------------------------------------------ controller: content

    def broadcast(self, data: Any) -> list[str]:
        """App data to everyone else who may perceive it; never echoed to us. Returns recipients."""
        if not self.in_call:
            return []
        return self.content.broadcast(data)

    def send_to(self, peer: str, data: Any) -> None:
        """App data to one participant, directly over our link to it (no one relays it)."""
        self._require_in_call("send")
        self.content.send_to(peer, data)

    def broadcast_json(self, text: str) -> list[str]:
        """:meth:`broadcast` for data that is already JSON text (the page): parsed once, never re-encoded."""
        if not self.in_call:
            return []
        return self.content.broadcast_json(text)

    def send_json(self, peer: str, text: str) -> None:
        """:meth:`send_to` for data that is already JSON text."""
        self._require_in_call("send")
        self.content.send_json(peer, text)

    def send_chat(self, text: str, to: str | None = None) -> dict[str, Any]:
        self._require_in_call("chat")
        line = self.content.send_chat(text, to)
        self._emit("chat", line.to_json())
        return line.to_json()

    def on_message(self, callback: Callable[[Any, str], Any]) -> Callable[[], None]:
        """``callback(data, from_id)`` for app data; returns an unsubscribe function."""
        return self.on("message", callback)

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[[], None]:
        """Subscribe to a controller event; returns an unsubscribe function (safe to call twice)."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; events are {sorted(EVENTS)}")
        self._listeners[event].append(callback)

        def off() -> None:
            if callback in self._listeners[event]:
                self._listeners[event].remove(callback)

        return off

    # ------------------------------------------------------------------ controller: profile + media

    def set_name(self, name: str) -> None:
        self._update_profile(name=name)

    def set_avatar(self, avatar: str | None) -> None:
        self._update_profile(avatar=avatar)

    def set_meta(self, meta: Mapping[str, Any] | None) -> None:
        self._update_profile(meta=dict(meta or {}))

    async def set_mic(self, on: bool) -> bool:
        await self._set_source("mic", on)
        self._local.mic = on
        self._update_profile(mic=on)
        return on

    async def set_cam(self, on: bool) -> bool:
        await self._set_source("cam", on)
        self._local.cam = on
        self._update_profile(cam=on)
        return on

    async def toggle_mic(self) -> bool:
        return await self.set_mic(not self._local.mic)

    async def toggle_cam(self) -> bool:
        return await self.set_cam(not self._local.cam)

    async def share_screen(self, track: object | None = None) -> None:
        """Share the screen (the backend's picker), or publish ``track`` in its place."""
        if track is None:
            await self._set_source("screen", True)
        else:
            self._local.tracks["screen"] = track
        self._local.sharing = True
        self._apply_lanes()
        self._emit_state()

    def stop_share(self) -> None:
        if self._local.tracks.pop("screen", None) is not None and self._media is not None:
            self._media.release("screen")
        self._local.sharing = False
        self._apply_lanes()
        self._emit_state()

    # ------------------------------------------------------------------ controller: moderation + caps

    # Moderation belongs to the room's host, never to whoever coordinates: as anyone else these
    # are no-ops that return False (the seeds: "no-op unless you are the room's host").

    def set_lobby(self, on: bool) -> bool:
        return self._moderate("lobbyon" if on else "lobbyoff")

    def set_locked(self, on: bool) -> bool:
        return self._moderate("lock" if on else "unlock")

    def admit(self, member_id: str) -> bool:
        return self._moderate("admit", member_id)

    def deny(self, member_id: str) -> bool:
        return self._moderate("deny", member_id)

    def remove(self, member_id: str) -> bool:
        """Remove a member and keep it out however often the coordinator changes (a host record)."""
        done = self.room is not None and self.room.remove(member_id)
        if not done:
            log.info("remove(%s) ignored: only the room's host can remove people", member_id)
        return done

    def unban(self, member_id: str) -> bool:
        """Let a removed member back in (a newer host record lifts the ban)."""
        return self.room is not None and self.room.remove(member_id, ban=False)

    def reset_room(self) -> bool:
        return self._moderate("reset")

    def _moderate(self, op: Op, target: str | None = None) -> bool:
        done = self.room is not None and self.room.moderate(op, target)
        if not done:
            log.info("%s ignored: only the room's host can moderate", op)
        return done

    def set_host_key(self, host_key: str) -> None:
        """Become the room's host now (a key given after the start, e.g. unsealed from the link)."""
        if self.gate.host.tier != "key":
            raise ValueError("this room's settings name no host key: a hostKey cannot make you its host")
        keyring = HostKeyring(host_key, self.room_name)
        if keyring.public_text != self.gate.host.key:
            raise ValueError("this hostKey is not the host key of this room (wrong key, or another room)")
        self._keyring = keyring
        self.book.set_signer(lambda v, h: keyring.caps(version=v, digest=h, now=self._wall()))
        if self.room is not None:
            self.room.set_host_key(keyring)
        self._emit_state()

    async def claim_host(self, password: str) -> None:
        """Open the host key the link carries sealed (``ghk``) with the host password, and become
        the host. ``ValueError`` for a wrong password or a link without a sealed key."""
        self.set_host_key(await unseal_host_key(self.gate, password))

    def invite_link(self, base: str) -> str:
        """The room's link for guests: ``base`` + the room + its gate (never a secret: no sealed
        host key, no invite of ours)."""
        return make_link(base, self.room_name, self.gate.without_secrets())

    def set_credential(self, credential: str | None) -> None:
        """A new join credential (a code proof or an invite token): the door is asked again."""
        self._update_profile(cred=credential or None)

    def get_capability_grant(self, peer: str) -> dict[str, Any]:
        return _grant_json(self.book.grant_of(peer))

    def set_capability_grant(self, peer: str, grant: Grant | Mapping[str, Any] | None) -> dict[str, Any]:
        """Widen or revoke ``peer``'s grant (host, else coordinator); the whole room enforces it."""
        return _grant_json(self.content.set_grant(peer, grant))

    def get_agent_audit(self, peer: str | None = None, n: int = 6) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.book.audit.recent(peer, n)]

    # ------------------------------------------------------------------ controller: identity

    def identity_nonce(self, salt: str | None = None) -> str:
        """The nonce a sign-in must put in the token: binds it to this member's certificate and room.
        With ``salt`` (fresh per sign-in), a salted nonce, for issuers that refuse a nonce twice."""
        return self.identity.nonce(salt)

    def provide_identity_token(self, jwt: str) -> dict[str, Any]:
        """Adopt an identity token minted elsewhere: ``{"status": "verified", "email"}`` or
        ``{"status": "pending"}`` (the issuer's keys are on their way); ``IdentityError`` (a
        ``ValueError`` with ``reason``) for a token bound to another certificate or room, expired,
        for another audience, and so on."""
        return self.identity.provide(jwt)

    def provide_agent_credit(self, credit: str | None) -> None:
        """A fresh agent credit (rooms that meter agents): announced at once."""
        self._update_profile(agent_credit=credit or None)

    def get_identity_stats(self) -> dict[str, Any]:
        """Refusals by reason (peers' tokens, ours, the door), key fetches."""
        return self.identity.stats()

    def _wire_identity(self) -> None:
        ident = self.identity
        ident.send_token = lambda peer, jwt: self.content.send_idtoken(peer, jwt)
        ident.set_profile = self._update_profile
        ident.link_of = lambda peer: self.mesh.link_of(peer)
        ident.changed = self._identity_changed
        ident.keys_arrived_hook = lambda: self.room.identity_keys_arrived() if self.room is not None else None

    def _identity_changed(self) -> None:
        if self.room is not None:
            self.room.identity_changed()
        roster = self._roster
        if self.in_call and self.self_id in roster.ids():
            host = self.identity.verified_host(roster.host, self.self_id)
            self.content.update_room({m.id: m.meta for m in roster.members}, host=host or None,
                                     coordinator=roster.coordinator)
        self.content.release_held()
        self._apply_lanes()
        self._emit("participants", self.get_participants())
        self._emit_state()

    def can(self, act: str) -> bool:
        """Whether our own grant allows ``act`` (send-chat, speak, act)."""
        return self.book.may_act(self.self_id, act)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ transport events

    def _on_transport(self, event: TransportEvent) -> None:
        try:
            # The hot path first: a frame on one of the mesh's links (link ids are never shared, so
            # nothing else could want it) skips the room's and the other kinds' checks.
            if type(event) is LinkMessage and self.mesh.handle_message(event):
                return
            if isinstance(event, ClaimResult) and event.peer_id == self.self_id:
                self._on_member_claim(event)
                return
            if isinstance(event, IdentityLost) and event.peer_id == self.self_id:
                if not self._left:
                    self._schedule_claim()
                return
            if self.room is not None and self.room.handle(event):
                return
            if self.mesh.handle(event):
                if isinstance(event, IncomingLink):
                    # Decide the lanes before the answer goes out: an agent that may not perceive
                    # media must never see a single placeholder packet.
                    peer = self.mesh.peer_of(event.link)
                    if peer is not None:
                        self._apply_lanes(only=peer)
                return
            if isinstance(event, TrackArrived):
                peer = self.mesh.peer_of(event.link)
                if peer is not None:
                    self._arrived.setdefault(peer, {})[event.lane] = event.track
                    self._expose_tracks(peer)
        except Exception:
            # The engine must outlive any single bad event.
            log.exception("session failed on %r", event)
            self.handler_errors += 1

    def _on_member_claim(self, ev: ClaimResult) -> None:
        if self._left:
            return
        if ev.outcome == "claimed":
            self._claim_attempts = 0
            if self.room is None:
                self.room = Room(
                    self.room_name,
                    self_id=self.self_id,
                    transport=self._transport,
                    scheduler=self._scheduler,
                    rng=self._rng,
                    profile=self._profile,
                    on_event=self._on_room,
                    # People win the race for a freed coordinator slot; an agent takes it only
                    # when no person does.
                    reclaim_bias=AGENT_RECLAIM_BIAS_S if self._profile.meta.get("role") == "agent" else 0.0,
                    gate=self.gate,
                    host_key=self._keyring,
                    may_read_roster=lambda mid: self.book.may_perceive(mid, "read-roster"),
                    door=self.identity.door,
                    own_email=lambda: self.identity.roster.self_email,
                    known_fps=self.identity.known_fps,
                )
                self.room.start()
            return
        if ev.outcome == "taken" and self.room is None:
            # Another tab holds this id (a copied identity): pick a fresh one before we are known,
            # and rebuild what is keyed by it (nothing has been sent under the old one yet).
            self.self_id = new_member_id()
            self._make_parts()
        self._schedule_claim()

    def _schedule_claim(self) -> None:
        delay = MEMBER_CLAIM_RETRY_S[min(self._claim_attempts, len(MEMBER_CLAIM_RETRY_S) - 1)]
        delay *= self._rng.uniform(0.5, 1.0)
        self._claim_attempts += 1
        if self._claim_timer is not None:
            self._claim_timer.cancel()
        self._claim_timer = self._scheduler.call_later(delay, self._reclaim_member)

    def _reclaim_member(self) -> None:
        self._claim_timer = None
        if not self._left:
            self._transport.claim(self.self_id)

    # ------------------------------------------------------------------ room events

    def _on_room(self, event: RoomEvent) -> None:
        if isinstance(event, RosterChanged):
            self._on_roster(event.roster)
        elif isinstance(event, RoleChanged | ConnectedChanged):
            self._emit_state()
        elif isinstance(event, LobbyStatus):
            self._lobby_status = event.status
            self._emit("lobby", event.status)
            self._emit_state()
        elif isinstance(event, KnocksChanged):
            self._emit("knocks", self.get_knocks())
        elif isinstance(event, Kicked):
            self._lobby_status = "removed"
            self._emit_state()
            self.close()
        elif isinstance(event, RoomReset):
            self.content.chat.clear()
            self._emit("chat", None)

    def _on_roster(self, roster: Roster) -> None:
        before = {m.id: m for m in self._roster.members}
        self._roster = roster
        in_call = self.in_call and self.self_id in roster.ids()
        metas: dict[str, Mapping[str, Any] | None] = (
            {m.id: m.meta for m in roster.members} if in_call else {self.self_id: self._profile.meta}
        )
        others = [mid for mid in metas if mid != self.self_id]
        # Members the mesh may park through a presence blip stay in the verified roster (away):
        # a link of theirs that comes back on another certificate meanwhile is a change under their
        # identity. First everyone the mesh may keep, then exactly those it parked.
        self.identity.set_members(others, [*self.mesh.members, *self.mesh.parked])
        host = self.identity.verified_host(roster.host, self.self_id)
        self.content.update_room(metas, host=host or None, coordinator=roster.coordinator)
        self.identity.set_members(others, self.mesh.parked)
        after = {m.id: m for m in roster.members}
        for mid in after.keys() - before.keys():
            self._emit("join", self._participant(mid))
        for mid in before.keys() - after.keys():
            self._remote_tracks.pop(mid, None)
            self._arrived.pop(mid, None)
            self._emit("leave", {"id": mid, "name": before[mid].name})
        self._apply_lanes()
        for peer in list(self._arrived):
            self._expose_tracks(peer)
        self._emit("participants", self.get_participants())
        self._emit_state()

    def _participant(self, member_id: str) -> dict[str, Any]:
        for p in self.get_participants():
            if p["id"] == member_id:
                return p
        return {"id": member_id}

    # ------------------------------------------------------------------ content events

    def _on_chat(self, line: ChatLine) -> None:
        self._emit("chat", line.to_json())

    def _on_app(self, sender: str, data: Any) -> None:
        self._emit("message", data, sender)

    def _on_caps(self) -> None:
        self._apply_lanes()
        for peer in list(self._arrived):
            self._expose_tracks(peer)
        if self.room is not None:
            self.room.grants_changed()
        self._emit("caps", self.get_capability_grant(self.self_id))

    def _on_link(self, peer: str, up: bool) -> None:
        if up:
            self.identity.link_up(peer)
            self._apply_lanes(only=peer)
        self._emit("participants", self.get_participants())

    # ------------------------------------------------------------------ media lanes

    def _expose_tracks(self, peer: str) -> None:
        """Receiver-side enforcement of ``speak``: a peer's audio is played (exposed, and the
        ``tracks`` event fired) only while its grant allows it to speak, so a tampered client that
        sends audio anyway is not heard. A withdrawn track is announced as ``None``. Not audited:
        every link has an audio lane (a silent placeholder from an honest agent), so a withheld lane
        is no blocked act."""
        shown = self._remote_tracks.setdefault(peer, {})
        for lane, track in self._arrived.get(peer, {}).items():
            if lane != "audio" or self.book.may_act(peer, "speak"):
                if shown.get(lane) is not track:
                    shown[lane] = track
                    self._emit("tracks", peer, lane, track)
            elif shown.pop(lane, None) is not None:
                self._emit("tracks", peer, lane, None)

    async def _set_source(self, source: Source, on: bool) -> None:
        self._require_live()
        if on and source not in self._local.tracks:
            if self._media is None:
                raise RuntimeError(f"this session has no local media: cannot turn on {source}")
            self._local.tracks[source] = await self._media.acquire(source)
        elif not on and source in self._local.tracks:
            self._local.tracks.pop(source)
            if self._media is not None:
                self._media.release(source)
        self._apply_lanes()

    def lane_track(self, peer: str, lane: Lane) -> object | LaneDefault | None:
        """What we send ``peer`` on ``lane`` now: the real track, a flowing placeholder, or nothing.

        The decision is the capability book's; an agent that may not perceive a lane gets nothing
        at all (no packets), a human gets the placeholder (some browsers kill a sample-less lane).
        """
        real: object | None
        if lane == "audio":
            real = self._local.tracks.get("mic") if self._local.mic else None
        else:
            real = self._local.tracks.get("screen") if self._local.sharing else None
            if real is None and self._local.cam:
                real = self._local.tracks.get("cam")
        if self.identity.roster.holding:  # the verified roster: nothing real until everyone is verified
            real = None
        if real is not None and self.book.lane_track(peer, lane, self._local.sharing) == "real":
            return real
        member = self._roster.get(peer)
        if member is not None and member.meta.get("role") == "agent":
            return None
        return PLACEHOLDER

    def _apply_lanes(self, only: str | None = None) -> None:
        planner = self._transport
        if not isinstance(planner, MediaTransport):
            return
        for peer in [only] if only else self.mesh.members:
            if peer == self.self_id:
                continue
            link = self.mesh.link_of(peer)
            if link is None:
                continue
            for lane in ("audio", "video"):
                planner.set_lane(link, lane, self.lane_track(peer, lane))

    # ------------------------------------------------------------------ plumbing

    def _name_of(self, peer: str) -> str:
        m = self._roster.get(peer)
        return m.name if m is not None and m.name else peer

    def _update_profile(self, **changes: Any) -> None:
        if "name" in changes and not isinstance(changes["name"], str):
            raise ValueError("name must be a string")
        self._profile = MemberProfile(**{**self._profile.__dict__, **changes})
        if self.room is not None and self.room.role != "left":
            self.room.update_profile(**changes)
        self._emit_state()

    def _require_live(self) -> None:
        if self._left:
            raise RuntimeError("this session has left the room")
        if not self._started:
            raise RuntimeError("start() the session first")

    def _require_in_call(self, doing: str) -> None:
        if not self.in_call:
            raise RuntimeError(f"join the call before you {doing}")

    def _emit_state(self) -> None:
        self._emit("state", self.get_state())

    def _emit(self, event: str, *args: Any) -> None:
        """Listeners are plain functions (the agent SDK adapts async ones on its own loop): the
        core schedules nothing. A listener that raises is counted and logged, never fatal."""
        for cb in list(self._listeners.get(event, ())):
            try:
                result = cb(*args)
            except Exception:
                self.handler_errors += 1
                log.exception("%s listener failed", event)
                continue
            if result is not None and inspect.isawaitable(result):
                self.handler_errors += 1
                if inspect.iscoroutine(result):
                    result.close()  # never awaited: close it rather than leak a warning
                log.error("%s listener returned an awaitable; Session listeners must be plain "
                          "functions (kibitz.agent.Agent accepts async callbacks)", event)


def _grant_json(grant: Grant) -> dict[str, Any]:
    return grant.model_dump(mode="json", by_alias=True)


__all__ = ["AGENT_DEFAULT", "EVENTS", "LocalMedia", "Session"]
