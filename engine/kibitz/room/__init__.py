"""The room engine: claim-or-join, the presence star, failover, and the roster everyone agrees on.

- :mod:`kibitz.room.room` — :class:`Room`, the facade: claim/reclaim and which role runs now.
- :mod:`kibitz.room.coordinator` — the coordinator's protocol (roster, door, reaping).
- :mod:`kibitz.room.participant` — the participant's protocol (announce, ping, follow the roster).
- :mod:`kibitz.room.model` — profiles, members, rosters, events and timings they share.
"""

from kibitz.room.model import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    CLAIM_RETRY,
    CLAIM_TIMEOUT,
    COORDINATOR_SILENCE,
    DEFAULT_FEATURES,
    FREEZE_GAP,
    FULL_ROSTER_EVERY,
    GRANDFATHER_GRACE,
    OPEN_TIMEOUT,
    PING_INTERVAL,
    PRESENCE_LABEL,
    REANNOUNCE_AFTER,
    REAP_AFTER,
    RECLAIM_DELAY,
    STABLE_AFTER,
    ConnectedChanged,
    Kicked,
    Knocker,
    KnocksChanged,
    LobbyStatus,
    Member,
    MemberProfile,
    Role,
    RoleChanged,
    RoomEvent,
    RoomReset,
    Roster,
    RosterChanged,
)
from kibitz.room.room import Room

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "CLAIM_RETRY",
    "CLAIM_TIMEOUT",
    "COORDINATOR_SILENCE",
    "DEFAULT_FEATURES",
    "FREEZE_GAP",
    "FULL_ROSTER_EVERY",
    "GRANDFATHER_GRACE",
    "OPEN_TIMEOUT",
    "PING_INTERVAL",
    "PRESENCE_LABEL",
    "REANNOUNCE_AFTER",
    "REAP_AFTER",
    "RECLAIM_DELAY",
    "STABLE_AFTER",
    "ConnectedChanged",
    "Kicked",
    "Knocker",
    "KnocksChanged",
    "LobbyStatus",
    "Member",
    "MemberProfile",
    "Role",
    "RoleChanged",
    "Room",
    "RoomEvent",
    "RoomReset",
    "Roster",
    "RosterChanged",
]
