"""Presence messages: the star between participants and the room's coordinator.

Two families travel over a ``kbz-presence`` link. A participant sends :data:`CLIENT_FAMILY`
(``voice``, ``ping``, ``leave``, ``knock``, ``mod``); the coordinator answers with
:data:`COORDINATOR_FAMILY` (``roster``, ``ping``, ``lobby``, ``kick``, ``reset``). The kind tag is ``t``,
as in the original engine, and field names match it (``voiceId``, ``agentAssertion``…), so JSON text
written by either side reads the same.

Mixed versions share a room: ``v`` carries the protocol version and ``f`` the sender's features;
unknown fields are ignored and unknown kinds are dropped and counted (see :mod:`kibitz.protocol.base`).
Every string and list has a cap, so one peer cannot make another hold megabytes of presence state.
Types are strict: JSON ``"true"`` is not a bool and ``1`` is not a string.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, field_validator

from kibitz.protocol.base import WireModel

MAX_NAME_CHARS = 80
MAX_AVATAR_CHARS = 2048
MAX_ID_CHARS = 64
MAX_TOKEN_CHARS = 8192
MAX_ASSERTION_CHARS = 2048
MAX_META_BYTES = 4096
MAX_MEMBERS = 256
MAX_FEATURES = 64
MAX_FEATURE_CHARS = 32

Name = Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS)]
Avatar = Annotated[str, StringConstraints(max_length=MAX_AVATAR_CHARS)]
PeerIdStr = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
Token = Annotated[str, StringConstraints(max_length=MAX_TOKEN_CHARS)]
Assertion = Annotated[str, StringConstraints(max_length=MAX_ASSERTION_CHARS)]
Feature = Annotated[str, StringConstraints(min_length=1, max_length=MAX_FEATURE_CHARS)]
Features = Annotated[list[Feature], Field(max_length=MAX_FEATURES)]

LobbyState = Literal[
    "waiting",
    "admitted",
    "denied",
    "locked",
    "unverified",
    "full",
    "removed",
    "needs-credential",
    "bad-credential",
    "expired-credential",
    "not-listed",
    "credential-in-use",
]
"""Where a joiner stands at the door (the original's five words, plus ours: see kibitz.admission)."""
MAX_RECORDS = 64


def meta_size(meta: dict[str, Any]) -> int:
    """Bytes of ``meta`` as compact JSON: the unit of the 4 KiB cap on both sides."""
    return len(json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode())


def _check_meta(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    if meta is None:
        return None
    try:
        size = meta_size(meta)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"meta is not plain JSON: {exc}") from None
    if size > MAX_META_BYTES:
        raise ValueError(f"meta is {size} bytes of JSON; the limit is {MAX_META_BYTES}")
    return meta


class PresenceModel(WireModel):
    """Strict typing for presence frames (no coercion of ``"1"`` into ``True``)."""

    model_config = ConfigDict(strict=True)


# --- participant → coordinator ------------------------------------------------------------------


class Voice(PresenceModel):
    """Announce (or update) oneself: sent on open, on every profile change, and as re-announce.

    The coordinator trusts the link's authenticated remote id, not ``voiceId``; ``voiceId`` is kept for
    wire compatibility with the original engine, where it named the separate media peer.
    """

    t: Literal["voice"] = "voice"
    on: bool = True
    cam: bool = False
    mic: bool | None = None
    name: Name = ""
    avatar: Avatar | None = None
    voiceId: PeerIdStr | None = None
    token: Token | None = None
    meta: dict[str, Any] | None = None
    jwt: Token | None = None
    agentAssertion: Assertion | None = None
    agentCredit: Token | None = None
    cred: Token | None = None
    """Join credential for a gated room: a code proof or an invite token."""
    hc: Token | None = None
    """A fresh host claim (signed), when the sender holds the room's host key."""
    v: int | None = None
    f: Features | None = None

    _meta = field_validator("meta")(_check_meta)


class Ping(PresenceModel):
    """Heartbeat, both ways (every 2.5 s)."""

    t: Literal["ping"] = "ping"


class Leave(PresenceModel):
    """A clean goodbye: the coordinator drops the sender at once instead of after 12 s of silence."""

    t: Literal["leave"] = "leave"


class Knock(PresenceModel):
    """Ask to be let in to a room with a waiting room."""

    t: Literal["knock"] = "knock"
    name: Name = ""
    avatar: Avatar | None = None
    token: Token | None = None
    voiceId: PeerIdStr | None = None
    jwt: Token | None = None
    agentAssertion: Assertion | None = None
    agentCredit: Token | None = None
    cred: Token | None = None
    hc: Token | None = None


class Mod(PresenceModel):
    """A host command, claim or ban record (see :mod:`kibitz.authority`); the coordinator verifies it."""

    t: Literal["mod"] = "mod"
    token: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TOKEN_CHARS)]


# --- coordinator → participant ------------------------------------------------------------------


class RosterMember(PresenceModel):
    """One member as the roster carries it. ``id`` is the member's broker id (the data-mesh address)."""

    id: PeerIdStr
    name: Name = ""
    cam: bool = False
    mic: bool | None = None
    avatar: Avatar | None = None
    meta: dict[str, Any] | None = None
    f: Features | None = None
    tk: Annotated[str, StringConstraints(max_length=MAX_ID_CHARS)] | None = None
    """Public hash of the member's stable token (what a host's ban covers besides the id)."""

    _meta = field_validator("meta")(_check_meta)


class RosterMsg(PresenceModel):
    """The full roster; rebroadcast on every change and every 2.5 s. ``c`` names the coordinator;
    ``hp`` is the host's signed claim and ``rec`` the host's moderation records, so every peer can
    check them itself."""

    t: Literal["roster"] = "roster"
    members: Annotated[list[RosterMember], Field(max_length=MAX_MEMBERS)]
    lobby: bool | None = None
    host: Annotated[str, StringConstraints(max_length=MAX_ID_CHARS)] | None = None
    locked: bool | None = None
    c: PeerIdStr | None = None
    v: int | None = None
    hp: Token | None = None
    rec: Annotated[list[Token], Field(max_length=MAX_RECORDS)] | None = None


class LobbyMsg(PresenceModel):
    """Where the receiver stands at the door."""

    t: Literal["lobby"] = "lobby"
    status: LobbyState


class Kick(PresenceModel):
    t: Literal["kick"] = "kick"


class Knocker(PresenceModel):
    id: PeerIdStr
    name: Name = ""
    avatar: Avatar | None = None


class Knocks(PresenceModel):
    """Coordinator → host: the waiting room's queue (the host moderates it from any seat)."""

    t: Literal["knocks"] = "knocks"
    list_: Annotated[list[Knocker], Field(max_length=MAX_MEMBERS, alias="list")]

    model_config = ConfigDict(
        strict=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )


class Reset(PresenceModel):
    t: Literal["reset"] = "reset"


ClientMessage = Voice | Ping | Leave | Knock | Mod
CoordinatorMessage = RosterMsg | Ping | LobbyMsg | Kick | Reset | Knocks

CLIENT_FAMILY: dict[str, type[ClientMessage]] = {
    "voice": Voice,
    "ping": Ping,
    "leave": Leave,
    "knock": Knock,
    "mod": Mod,
}
"""What a coordinator accepts on a presence link (for :func:`kibitz.protocol.base.decode`)."""

COORDINATOR_FAMILY: dict[str, type[CoordinatorMessage]] = {
    "roster": RosterMsg,
    "ping": Ping,
    "lobby": LobbyMsg,
    "kick": Kick,
    "reset": Reset,
    "knocks": Knocks,
}
"""What a participant accepts from the coordinator."""

__all__ = [
    "CLIENT_FAMILY",
    "COORDINATOR_FAMILY",
    "MAX_MEMBERS",
    "MAX_META_BYTES",
    "MAX_NAME_CHARS",
    "MAX_TOKEN_CHARS",
    "ClientMessage",
    "CoordinatorMessage",
    "Kick",
    "Knock",
    "Knocker",
    "Knocks",
    "Leave",
    "LobbyMsg",
    "LobbyState",
    "Mod",
    "Ping",
    "PresenceModel",
    "Reset",
    "RosterMember",
    "RosterMsg",
    "Voice",
    "meta_size",
]
