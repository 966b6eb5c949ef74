"""What the room engine talks about: profiles, members, rosters, the events it emits, its timings.

Plain immutable records shared by the :class:`~kibitz.room.Room` facade and its two role protocols
(:mod:`kibitz.room.coordinator`, :mod:`kibitz.room.participant`). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kibitz.protocol.presence import (
    MAX_META_BYTES,
    MAX_NAME_CHARS,
    MAX_TOKEN_CHARS,
    LobbyState,
    meta_size,
)

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
CLAIM_RETRY = (0.5, 1.5)
"""Seconds (uniform) before claiming again after a claim failed (broker unreachable, error)."""
RECLAIM_ID_RETRY = (0.3, 1.0)
"""A coordinator that lost its hold on the room id (the broker went away) keeps coordinating over
its peer-to-peer links and claims the id back, retrying this often (uniform) while it fails."""
SILENT_RECHECK = 5.0
"""A participant whose coordinator went silent (frozen, hung) but whose link is still open asks the
broker this often whether the room id is free; while it is held, the link is kept."""
NOT_CLAIMED_RETRY = 0.5
"""Our own member id is not registered yet (it is being claimed again): try joining this soon,
without counting it as a failed attempt."""
OPEN_TIMEOUT = 8.0
COORDINATOR_SILENCE = 12.0
REANNOUNCE_AFTER = (0.6, 1.8)
REANNOUNCE_MIN_GAP = 0.25
RECLAIM_DELAY = (0.05, 0.6)
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
STABLE_AFTER = 10.0
GRANDFATHER_GRACE = 6.0
RETIRED_LINKS_KEPT = 1024

Role = Literal["idle", "claiming", "coordinator", "participant", "reclaiming", "left"]
PROFILE_FIELDS = frozenset(
    {"name", "on", "cam", "mic", "avatar", "meta", "token", "cred", "jwt", "agent_assertion", "agent_credit"}
)


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
    cred: str | None = None
    """This member's join credential for a gated room (a code proof or an invite token), or None."""
    jwt: str | None = None
    """This member's identity token, bound to its certificate (:mod:`kibitz.identity`), or None."""
    agent_assertion: str | None = None
    """An agent's key assertion (rooms that admit only known agents), re-signed on a timer."""
    agent_credit: str | None = None
    """An agent's credit (rooms that meter agents), renewed by its issuer every minute or so."""


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
    tk: str | None = None
    """Public hash of the member's stable token: what a host's ban names besides the member id."""


@dataclass(frozen=True)
class Roster:
    members: tuple[Member, ...] = ()
    coordinator: str | None = None
    host: str = ""
    lobby: bool = False
    locked: bool = False
    host_proof: str | None = None
    """The host's signed claim (tier key), so every peer can check ``host`` for itself."""
    records: tuple[str, ...] = ()
    """Host-signed moderation records (bans, unbans) that outlive any one coordinator."""

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
class ConnectedChanged:
    """A participant's presence link to the coordinator opened, maybe with the roster unchanged
    (the same coordinator, reached again after its broker moved). Losing the link changes the
    role, which says so already."""

    connected: bool


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
    """The waiting room's queue changed (as the coordinator, or the host it is forwarded to, sees it)."""

    knocks: tuple[Knocker, ...]


RoomEvent = (
    RosterChanged | RoleChanged | ConnectedChanged | Kicked | LobbyStatus | RoomReset | KnocksChanged
)


def check_profile(profile: MemberProfile) -> None:
    """Refuse (``ValueError``, with the limit) a profile no coordinator would accept."""
    if len(profile.name) > MAX_NAME_CHARS:
        raise ValueError(f"name is {len(profile.name)} characters; the limit is {MAX_NAME_CHARS}")
    capped = (("token", profile.token), ("credential", profile.cred), ("identity token", profile.jwt),
              ("agent credit", profile.agent_credit))
    for label, value in capped:
        if value is not None and len(value) > MAX_TOKEN_CHARS:
            raise ValueError(f"{label} is {len(value)} characters; the limit is {MAX_TOKEN_CHARS}")
    if not isinstance(profile.meta, dict):
        raise ValueError("meta must be a dict of JSON values")
    try:
        size = meta_size(profile.meta)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta must be plain JSON: {exc}") from None
    if size > MAX_META_BYTES:
        raise ValueError(f"meta is {size} bytes of JSON; the limit is {MAX_META_BYTES}")
