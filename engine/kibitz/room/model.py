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
RETIRED_LINKS_KEPT = 1024

Role = Literal["idle", "claiming", "coordinator", "participant", "reclaiming", "left"]
PROFILE_FIELDS = frozenset({"name", "on", "cam", "mic", "avatar", "meta", "token"})


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


def check_profile(profile: MemberProfile) -> None:
    """Refuse (``ValueError``, with the limit) a profile no coordinator would accept."""
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
