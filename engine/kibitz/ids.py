"""Room ids and broker ids.

A room string maps to one deterministic broker id, so whoever arrives first can claim it and
everyone else knows where to find the coordinator. The mapping is frozen: it must match the
original engine's (``kbz-v1-`` + normalised room), or mixed rooms would never meet.
"""

from __future__ import annotations

import re
import secrets

ROOM_ID_PREFIX = "kbz-v1-"
MAX_ROOM_CHARS = 40
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
# The broker's id rule (PeerJS): alphanumeric runs joined by single ' ', '_' or '-'.
PEER_ID_PATTERN = re.compile(r"^[A-Za-z0-9]+(?:[ _-][A-Za-z0-9]+)*$")


def normalize_room(room: str) -> str:
    """Lower-case, collapse anything but a-z/0-9 into one ``-``, trim dashes, cut to 40 chars."""
    slug = _NOT_SLUG.sub("-", room.lower()).strip("-")
    # Cut after trimming, exactly as the original does (a trailing dash may survive the cut).
    return slug[:MAX_ROOM_CHARS]


def room_peer_id(room: str) -> str:
    """The broker id the room's coordinator claims, e.g. ``room_peer_id("My Room!") == "kbz-v1-my-room"``.

    Raises ``ValueError`` when nothing usable is left after normalisation.
    """
    if not isinstance(room, str):
        raise TypeError(f"room must be a str, got {type(room).__name__}")
    slug = normalize_room(room)
    if not slug:
        raise ValueError(
            f"room {room!r} has no letters or digits; pick an unguessable id like 'room-3f9k2mq7p1'"
        )
    return ROOM_ID_PREFIX + slug


def new_member_id(rng: secrets.SystemRandom | None = None) -> str:
    """A fresh, unguessable broker id for one participant (one tab or one agent process)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    pick = (rng or secrets.SystemRandom()).choice
    return "kbz-m-" + "".join(pick(alphabet) for _ in range(16))
