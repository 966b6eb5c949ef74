"""Who may perceive what and do what, for every participant (human or agent).

A :class:`Grant` says what a peer may *perceive* (content that flows to it) and *act* (content it
may emit). Enforcement is split the only way a server-less room allows: the **sender withholds**
what a peer may not perceive (broadcasts skip it, directed sends refuse, media lanes carry a
placeholder), and **every honest receiver drops** content from a peer lacking the act (and audits
it). Nobody has to trust the peer the grant is about.

The room's grant map lives in a :class:`CapabilityBook`. It carries a version stamp
``(version, author)`` that only grows, so the newest map wins whichever peer coordinates. Who may
write it follows the room's host tier: in a room whose host holds a key, only maps signed with it
count, whoever forwards them (so no coordinator can widen anyone's grant); with a host by name, only
that host; in a room without a host, any person (never an agent). The original accepted maps only
from a "host" that open rooms never have (its known bug 7.1); the map here survives migration
because the coordinator (or the host) re-sends it to every joiner.

Wall-clock expiry (``expires_at``, epoch seconds) is judged with an injected ``now``: the core never
reads a clock itself.
"""

from __future__ import annotations

import hashlib
import json
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
GrantTier = Literal["none", "name", "key"]
HOST_AUTHOR = "host"
"""The author of every map in a room whose host signs (tier key): stamps then order by version."""


@dataclass(frozen=True, slots=True)
class CapsSnapshot:
    """The whole map at one stamp: what a ``caps`` message carries (with the host's signature in a
    room whose host signs)."""

    version: int
    author: str
    grants: Mapping[str, Grant]
    sig: str | None = None

    @property
    def stamp(self) -> Stamp:
        return (self.version, self.author)


def grants_digest(grants: Mapping[str, Grant]) -> str:
    """SHA-256 (hex) of a map in one canonical JSON spelling: what the host's signature covers."""
    canon = {peer: g.model_dump(mode="json", by_alias=True, exclude_none=True) for peer, g in grants.items()}
    text = json.dumps(canon, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class CapabilityBook:
    """The room's grant map as this peer enforces it, plus the decision helpers.

    Who may change the map follows the room's host tier (:mod:`kibitz.authority`):

    * ``key`` — only the holder of the host key: every map carries the host's signature over its
      digest, and a map is accepted from *any* sender iff that signature checks out (so anyone may
      forward it, and no coordinator can forge one). ``sign``/``check`` are the seam to the host
      key and the room's :class:`~kibitz.authority.HostAuthority`.
    * ``name`` — only the member the roster names as host (soft, like the tier itself).
    * ``none`` — a room without an admin: every person is equal and may change grants; agents never
      (an agent could grant itself everything). The newest stamp wins everywhere.

    ``set_members`` tells it who is in the room (for kind defaults), ``set_authority`` who the host
    and coordinator are; ``set_grant`` is a local edit, ``apply`` takes a map from the mesh.
    """

    def __init__(
        self,
        *,
        self_id: str,
        now: Callable[[], float],
        audit: AuditLog | None = None,
        tier: GrantTier = "none",
        sign: Callable[[int, str], str] | None = None,
        check: Callable[[str | None, int, str], bool] | None = None,
    ) -> None:
        self.self_id = self_id
        self._now = now
        self.audit = audit if audit is not None else AuditLog()
        self.tier: GrantTier = tier
        self._sign = sign
        self._check = check
        self._grants: dict[str, Grant] = {}
        self._stamp: Stamp = (0, "")
        self._sig: str | None = None
        self._metas: dict[str, Mapping[str, Any] | None] = {}
        self._kept: dict[str, Mapping[str, Any] | None] = {}
        self._host: str | None = None
        self._coordinator: str | None = None
        self._held: dict[str, CapsSnapshot] = {}
        self.ignored = 0
        """Remote maps ignored (stale, unsigned, or from a peer that may not author them)."""

    def set_signer(self, sign: Callable[[int, str], str]) -> None:
        """We now hold the host key (tier key): our edits are signed from here on."""
        self._sign = sign

    # -- room facts ---------------------------------------------------------------------------

    def set_members(
        self,
        metas: Mapping[str, Mapping[str, Any] | None],
        kept: Mapping[str, Mapping[str, Any] | None] | None = None,
    ) -> None:
        """``metas``: the roster. ``kept``: members off the roster whose links the mesh keeps through
        a presence blip; they keep their kind (an agent stays an agent) and their grants, but never
        count towards who authors the map."""
        self._metas = dict(metas)
        self._kept = {k: v for k, v in (kept or {}).items() if k not in self._metas}
        self._held = {k: v for k, v in self._held.items() if k in self._metas}

    def set_authority(self, *, host: str | None, coordinator: str | None) -> bool:
        """Record the room's host and coordinator; apply a map held from a peer that may now author
        it. True if one was applied."""
        self._host = host or None
        self._coordinator = coordinator or None
        applied = False
        for who, snap in list(self._held.items()):
            if self.is_authority(who):
                del self._held[who]
                applied = self._accept(who, snap) or applied
        return applied

    def _meta(self, peer: str) -> Mapping[str, Any] | None:
        meta = self._metas.get(peer)
        return self._kept.get(peer) if meta is None else meta

    def _is_agent(self, peer: str) -> bool:
        meta = self._meta(peer)
        return bool(meta) and meta is not None and meta.get("role") == "agent"

    @property
    def author(self) -> str | None:
        """Who re-sends the map to joiners: the host (tiers key and name) or, when it is not here
        (key) or the room has none, the coordinator — unless that is an agent; then the person with
        the smallest id, which every honest peer derives from the roster."""
        if self.tier == "name":
            return self._host
        for who in (self._host, self._coordinator):
            if who and who in self._metas and not self._is_agent(who):
                return who
        humans = sorted(p for p in self._metas if not self._is_agent(p))
        return humans[0] if humans else None

    def may_edit(self) -> bool:
        """Whether a local :meth:`set_grant` is allowed here (see the class docstring)."""
        if self._is_agent(self.self_id):
            return False
        if self.tier == "key":
            return self._sign is not None
        if self.tier == "name":
            return self._host == self.self_id
        return True

    def is_authority(self, peer: str) -> bool:
        """Whether an unsigned map from ``peer`` may be accepted (tiers name and none)."""
        if self.tier == "key" or self._is_agent(peer):
            return False
        if self.tier == "name":
            return peer == self._host
        return peer in self._metas

    # -- the map ------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._stamp[0]

    @property
    def stamp(self) -> Stamp:
        return self._stamp

    def snapshot(self) -> CapsSnapshot:
        return CapsSnapshot(self._stamp[0], self._stamp[1], dict(self._grants), self._sig)

    def explicit(self, peer: str) -> Grant | None:
        return self._grants.get(peer)

    def set_grant(self, peer: str, grant: Grant | Mapping[str, Any] | None) -> CapsSnapshot:
        """Widen, narrow or clear (``None``) one peer's grant; returns the new map to distribute.

        Raises ``PermissionError`` unless this peer may edit the map (:meth:`may_edit`).
        """
        if not self.may_edit():
            raise PermissionError(_who_may(self.tier))
        clean = None if grant is None else sanitize(grant)
        grants = {k: v for k, v in self._grants.items() if k in self._metas or k in self._kept or k == peer}
        if clean is None:
            grants.pop(peer, None)
        else:
            grants[peer] = clean
        while len(grants) > MAX_GRANTS:
            grants.pop(next(iter(grants)))
        if self.tier == "key":
            assert self._sign is not None
            # Milliseconds since the epoch, at least one past ours: a host that reloads (and
            # forgot its counter) still writes a newer map than any it wrote before.
            version = max(self._stamp[0] + 1, int(self._now() * 1000))
            self._stamp, self._sig = (version, HOST_AUTHOR), self._sign(version, grants_digest(grants))
        else:
            self._stamp, self._sig = (self._stamp[0] + 1, self.self_id), None
        self._grants = grants
        self.audit.record(self._now(), peer, "grant", "cleared" if clean is None else "set", _describe(clean))
        return self.snapshot()

    def apply(self, sender: str, snapshot: CapsSnapshot) -> bool:
        """A map that arrived from ``sender``. True when it replaced ours."""
        if self.tier == "key":
            digest = grants_digest(snapshot.grants)
            if snapshot.author != HOST_AUTHOR or self._check is None or not self._check(
                snapshot.sig, snapshot.version, digest
            ):
                self.ignored += 1
                return False
            return self._accept(sender, snapshot)
        if not self.is_authority(sender):
            # Maybe a host whose roster has not reached us yet: keep the newest.
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
        self._sig = snapshot.sig
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
        return default_for(self._meta(peer))

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


def _who_may(tier: GrantTier) -> str:
    if tier == "key":
        return "only the room's host (who holds its host key) may change grants"
    if tier == "name":
        return "only the room's host may change grants"
    return "agents may not change grants"


def _describe(grant: Grant | None) -> str:
    if grant is None:
        return "default"
    perceive = ",".join(sorted(grant.perceive)) or "-"
    parts = [f"perceive={perceive}", f"act={','.join(sorted(grant.act)) or '-'}"]
    if grant.expires_at is not None:
        parts.append(f"expires={grant.expires_at:.0f}")
    return " ".join(parts)
