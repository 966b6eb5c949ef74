"""Who may perceive what and do what, for every participant (human or agent).

A :class:`Grant` says what a peer may *perceive* (content that flows to it) and *act* (content it
may emit). Enforcement is split the only way a server-less room allows: the **sender withholds**
what a peer may not perceive (broadcasts skip it, directed sends refuse, media lanes carry a
placeholder), and **every honest receiver drops** content from a peer lacking the act (and audits
it). Nobody has to trust the peer the grant is about.

The room's grant map lives in a :class:`CapabilityBook`. It carries a version stamp
``(version, author)`` that only grows, so the newest map wins whichever peer coordinates. The
original accepted maps only from a "host" that open rooms never have (its known bug 7.1); here the
author is the host when the room has one, otherwise the coordinator, and maps from either role are
accepted, so the map keeps holding when the coordinator migrates. A map from a peer that is not
(yet) an authority is kept aside and applied if that peer becomes one (a new coordinator's
re-send can arrive before the roster that names it).

Wall-clock expiry (``expires_at``, epoch seconds) is judged with an injected ``now``: the core never
reads a clock itself.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

Perceive = Literal["see-screen", "hear-audio", "read-chat", "read-roster", "receive-directed"]
Act = Literal["send-chat", "speak", "act"]
Lane = Literal["audio", "video", "screen"]
LaneTrack = Literal["real", "placeholder"]

PERCEIVE: frozenset[str] = frozenset(get_args(Perceive))
ACT: frozenset[str] = frozenset(get_args(Act))
MAX_BACKEND_CHARS = 80
MAX_GRANTS = 256
"""A caps map never names more peers than this (older entries for departed peers are pruned)."""
AUDIT_KEEP = 80
AUDIT_RECENT = 6


def _known(values: Any, allowed: frozenset[str]) -> frozenset[str]:
    """Keep only the strings we understand: a newer peer's extra capabilities are ignored."""
    if isinstance(values, str) or not isinstance(values, Iterable):
        return frozenset()
    return frozenset(v for v in values if isinstance(v, str) and v in allowed)


class Grant(BaseModel):
    """One peer's capabilities. Lenient on input (unknown strings dropped), strict in shape.

    ``backend`` and ``egress`` are the agent's own disclosure (which model sees the room, and
    whether what it perceives leaves it); they are shown to the host and never widen anything.
    """

    model_config = ConfigDict(
        frozen=True, extra="ignore", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    perceive: frozenset[Perceive] = frozenset()
    act: frozenset[Act] = frozenset()
    backend: str | None = Field(default=None, max_length=MAX_BACKEND_CHARS)
    egress: bool = False
    expires_at: float | None = Field(default=None, alias="expiresAt")

    @field_validator("perceive", mode="before")
    @classmethod
    def _perceive(cls, v: Any) -> frozenset[str]:
        return _known(v, PERCEIVE)

    @field_validator("act", mode="before")
    @classmethod
    def _act(cls, v: Any) -> frozenset[str]:
        return _known(v, ACT)

    @field_validator("expires_at")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("expiresAt must be a finite epoch time in seconds")
        return v

    @field_serializer("perceive", "act")
    def _sorted(self, v: frozenset[str]) -> list[str]:
        return sorted(v)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


HUMAN_DEFAULT = Grant(perceive=PERCEIVE, act=ACT)
AGENT_DEFAULT = Grant(perceive=frozenset({"read-chat", "read-roster", "receive-directed"}))
NOTHING = Grant()


def sanitize(raw: Any) -> Grant:
    """A :class:`Grant` from untrusted input: unknown capabilities dropped, junk fields cleared.

    Raises ``ValueError`` only when ``raw`` is not a mapping (or a Grant) at all.
    """
    if isinstance(raw, Grant):
        return raw
    if not isinstance(raw, Mapping):
        raise ValueError(f"a grant must be an object, got {type(raw).__name__}")
    backend = raw.get("backend")
    expires = raw.get("expiresAt", raw.get("expires_at"))
    egress = raw.get("egress")
    numeric = isinstance(expires, int | float) and not isinstance(expires, bool) and math.isfinite(expires)
    return Grant(
        perceive=_known(raw.get("perceive"), PERCEIVE),
        act=_known(raw.get("act"), ACT),
        backend=backend[:MAX_BACKEND_CHARS] if isinstance(backend, str) else None,
        egress=egress if isinstance(egress, bool) else False,
        expires_at=float(expires) if numeric else None,
    )


def intersect(request: Grant, allowed: Grant) -> Grant:
    """What a peer asked for, cut down to what it may have; the earlier expiry wins.

    Disclosure (``backend``, ``egress``) comes from the request: it is the peer's statement.
    """
    expiries = [e for e in (request.expires_at, allowed.expires_at) if e is not None]
    return Grant(
        perceive=request.perceive & allowed.perceive,
        act=request.act & allowed.act,
        backend=request.backend,
        egress=request.egress,
        expires_at=min(expiries) if expiries else None,
    )


def is_agent(meta: Mapping[str, Any] | None) -> bool:
    if meta is None:
        return False
    # ``type(...) is dict`` first: an ABC isinstance check costs more than the rest of a decision.
    return (type(meta) is dict or isinstance(meta, Mapping)) and meta.get("role") == "agent"


def default_for(meta: Mapping[str, Any] | None) -> Grant:
    """The grant a peer has before anyone sets one: agents read-only, everyone else everything."""
    return AGENT_DEFAULT if is_agent(meta) else HUMAN_DEFAULT


def lane_needs(lane: Lane, sharing: bool) -> Perceive:
    """Which perceive capability a media lane needs.

    Audio needs ``hear-audio``; the screen lane needs ``see-screen``; the camera lane needs
    ``see-screen`` too (it carries the screen while ``sharing``, and otherwise a camera frame can
    show as much as a screen does), so a default agent receives no media at all. ``sharing`` is
    kept in the signature so a future camera-only capability slots in without touching callers.
    """
    del sharing
    return "hear-audio" if lane == "audio" else "see-screen"


# ---------------------------------------------------------------------------------------------
# Audit feed

AuditKind = Literal["blocked", "grant", "refused"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    ts: float
    peer: str
    kind: AuditKind
    what: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"ts": self.ts, "peer": self.peer, "kind": self.kind, "what": self.what, "detail": self.detail}


class AuditLog:
    """A local ring of blocked acts and grant changes (newest last), for the host's consent panel."""

    def __init__(self, keep: int = AUDIT_KEEP) -> None:
        self._ring: deque[AuditEntry] = deque(maxlen=keep)

    def record(self, ts: float, peer: str, kind: AuditKind, what: str, detail: str = "") -> AuditEntry:
        entry = AuditEntry(ts, peer, kind, what, detail[:200])
        self._ring.append(entry)
        return entry

    def recent(self, peer: str | None = None, n: int = AUDIT_RECENT) -> list[AuditEntry]:
        """The last ``n`` entries (about ``peer`` if given), oldest first."""
        if n <= 0:
            return []
        picked = [e for e in self._ring if peer is None or e.peer == peer]
        return picked[-n:]

    def __len__(self) -> int:
        return len(self._ring)


# ---------------------------------------------------------------------------------------------
# The room's grant map

Stamp = tuple[int, str]
"""(version, author): compared as a tuple, so equal versions from two authors still order."""


@dataclass(frozen=True, slots=True)
class CapsSnapshot:
    """The whole map at one stamp: what a ``caps`` message carries."""

    version: int
    author: str
    grants: Mapping[str, Grant]

    @property
    def stamp(self) -> Stamp:
        return (self.version, self.author)


class CapabilityBook:
    """The room's grant map as this peer enforces it, plus the decision helpers.

    * ``set_members`` tells it who is in the room and their roster ``meta`` (for kind defaults).
    * ``set_authority`` tells it who the host and the coordinator are (from the room engine).
    * ``set_grant`` is a local edit (allowed only for the current author); it bumps the version and
      returns the snapshot to distribute. ``apply`` takes a remote map: accepted from the host or
      the coordinator when its stamp is newer, ignored when older.
    """

    def __init__(self, *, self_id: str, now: Callable[[], float], audit: AuditLog | None = None) -> None:
        self.self_id = self_id
        self._now = now
        self.audit = audit if audit is not None else AuditLog()
        self._grants: dict[str, Grant] = {}
        self._stamp: Stamp = (0, "")
        self._metas: dict[str, Mapping[str, Any] | None] = {}
        self._host: str | None = None
        self._coordinator: str | None = None
        self._held: dict[str, CapsSnapshot] = {}
        self.ignored = 0
        """Remote maps ignored (stale or from a non-authority that never became one)."""

    # -- room facts ---------------------------------------------------------------------------

    def set_members(self, metas: Mapping[str, Mapping[str, Any] | None]) -> None:
        self._metas = dict(metas)
        self._held = {k: v for k, v in self._held.items() if k in self._metas}

    def set_authority(self, *, host: str | None, coordinator: str | None) -> bool:
        """Record the room's host and coordinator; apply a map held from an authority. True if applied."""
        self._host = host or None
        self._coordinator = coordinator or None
        applied = False
        for who in dict.fromkeys((self._coordinator, self._host, self.author)):
            snap = self._held.pop(who, None) if who and self.is_authority(who) else None
            if snap is not None and who is not None:
                applied = self._accept(who, snap) or applied
        return applied

    def _is_agent(self, peer: str) -> bool:
        meta = self._metas.get(peer)
        return bool(meta) and meta is not None and meta.get("role") == "agent"

    @property
    def author(self) -> str | None:
        """Who may edit the map now: the host if the room has one, else the coordinator — unless
        that is an agent. An agent never authors grants (it could grant itself everything); then the
        human member with the smallest id does, which every honest peer derives from the roster."""
        for who in (self._host, self._coordinator):
            if who and not self._is_agent(who):
                return who
        humans = sorted(p for p in self._metas if not self._is_agent(p))
        return humans[0] if humans else None

    def is_authority(self, peer: str) -> bool:
        """Whether a map from ``peer`` may be accepted: the host, the coordinator or the author,
        never an agent."""
        return peer in (self._host, self._coordinator, self.author) and not self._is_agent(peer)

    # -- the map ------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._stamp[0]

    @property
    def stamp(self) -> Stamp:
        return self._stamp

    def snapshot(self) -> CapsSnapshot:
        return CapsSnapshot(self._stamp[0], self._stamp[1], dict(self._grants))

    def explicit(self, peer: str) -> Grant | None:
        return self._grants.get(peer)

    def set_grant(self, peer: str, grant: Grant | Mapping[str, Any] | None) -> CapsSnapshot:
        """Widen, narrow or clear (``None``) one peer's grant; returns the new map to distribute.

        Raises ``PermissionError`` unless this peer is the current author.
        """
        if self.author != self.self_id:
            who = self.author or "nobody (no coordinator yet)"
            raise PermissionError(f"only the room's host or, without one, its coordinator (never an agent) "
                                  f"may change grants; that is {who}")
        clean = None if grant is None else sanitize(grant)
        grants = {k: v for k, v in self._grants.items() if k in self._metas or k == peer}
        if clean is None:
            grants.pop(peer, None)
        else:
            grants[peer] = clean
        while len(grants) > MAX_GRANTS:
            grants.pop(next(iter(grants)))
        self._grants = grants
        self._stamp = (self._stamp[0] + 1, self.self_id)
        self.audit.record(self._now(), peer, "grant", "cleared" if clean is None else "set", _describe(clean))
        return self.snapshot()

    def apply(self, sender: str, snapshot: CapsSnapshot) -> bool:
        """A map that arrived from ``sender``. True when it replaced ours."""
        if not self.is_authority(sender):
            # Maybe a new coordinator whose roster has not reached us yet: keep the newest.
            held = self._held.get(sender)
            if sender in self._metas and (held is None or snapshot.stamp > held.stamp):
                self._held[sender] = snapshot
            self.ignored += 1
            return False
        return self._accept(sender, snapshot)

    def _accept(self, sender: str, snapshot: CapsSnapshot) -> bool:
        if snapshot.stamp <= self._stamp:
            self.ignored += 1
            return False
        before = self._grants
        self._grants = dict(list(snapshot.grants.items())[:MAX_GRANTS])
        self._stamp = snapshot.stamp
        now = self._now()
        for peer in sorted(set(before) | set(self._grants)):
            if before.get(peer) != self._grants.get(peer):
                self.audit.record(now, peer, "grant", f"from {sender}", _describe(self._grants.get(peer)))
        return True

    # -- decisions ----------------------------------------------------------------------------

    def grant_of(self, peer: str) -> Grant:
        """The effective grant: the explicit one while unexpired, else the default for its kind."""
        explicit = self._grants.get(peer)
        if explicit is not None:
            # Read the clock only for a grant that can expire: this runs for every message.
            until = explicit.expires_at
            if until is None or self._now() < until:
                return explicit
        return default_for(self._metas.get(peer))

    def may_perceive(self, peer: str, what: Perceive) -> bool:
        return what in self.grant_of(peer).perceive

    def may_act(self, peer: str, what: Act) -> bool:
        return what in self.grant_of(peer).act

    def lane_track(self, peer: str, lane: Lane, sharing: bool) -> LaneTrack:
        """What our media lane toward ``peer`` carries: the real track or a flowing placeholder."""
        return "real" if self.may_perceive(peer, lane_needs(lane, sharing)) else "placeholder"

    def blocked(self, peer: str, what: str, detail: str = "") -> AuditEntry:
        """Record that content from ``peer`` was dropped for lack of a capability."""
        return self.audit.record(self._now(), peer, "blocked", what, detail)


def _describe(grant: Grant | None) -> str:
    if grant is None:
        return "default"
    perceive = ",".join(sorted(grant.perceive)) or "-"
    parts = [f"perceive={perceive}", f"act={','.join(sorted(grant.act)) or '-'}"]
    if grant.expires_at is not None:
        parts.append(f"expires={grant.expires_at:.0f}")
    return " ".join(parts)
