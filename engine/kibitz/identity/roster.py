"""The verified roster: who in the call has proved an identity, on which certificate, and whether
content may flow (``canShare``) or must stop (``compromised``). Pure state, no I/O.

Each peer's identity is checked by *this* member (never taken from the coordinator's word): tokens
travel peer to peer (the ``idtoken`` content kind) and are verified against the certificate of the
data link they arrived on. The state the page's ``getState()`` shows:

* ``active`` — identity is configured for this room;
* ``can_share`` — we are verified, every other member is verified, and nothing is compromised
  (with ``require``, content and media wait for it);
* ``compromised`` — a member verified on one certificate now shows another: the link was
  re-established by someone else (or the member's device changed mid-call). Sharing stops until that
  member leaves; it is never cleared silently.

A member off the roster but kept by the mesh through a presence blip (*away*, see kibitz.mesh
"Presence blips") keeps its entry: its link may stay up or come back while it is away, and a
certificate change then is still a change under its identity. Away members do not hold sharing
back (they may have crashed), but a compromise among them does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from kibitz.identity.policy import Identity

MAX_REMEMBERED = 256


@dataclass
class PeerIdentity:
    fp: str | None = None
    """Certificate of the peer's current link to us."""
    identity: Identity | None = None
    token: str | None = None
    """The last token the peer sent (checked again when keys arrive or its link changes)."""
    refusal: str | None = None
    compromised: bool = False


class VerifiedRoster:
    def __init__(self, *, active: bool, require: bool) -> None:
        self.active = active
        self.require = require
        self.self_identity: Identity | None = None
        self.peers: dict[str, PeerIdentity] = {}
        self.refusals: Counter[str] = Counter()
        self.away: set[str] = set()
        """Members off the roster the mesh keeps for now (see the module doc)."""
        self._seen: dict[str, Identity] = {}
        """Identities of members who left the roster: one that comes back (a flapping presence link)
        keeps its identity, and showing another certificate then is a change under it."""

    def peer(self, peer: str) -> PeerIdentity:
        return self.peers.setdefault(peer, PeerIdentity())

    def set_members(self, others: Iterable[str], away: Iterable[str] = ()) -> bool:
        """The other members in the call now, and those ``away`` (off the roster, kept by the
        mesh). A member who left takes its compromised flag with it; its identity is remembered, so
        coming back on another certificate is still a change under a verified identity. True when
        that changed what can be shared."""
        keep = set(others)
        self.away = set(away) - keep
        keep |= self.away
        before = self.can_share
        for gone in set(self.peers) - keep:
            state = self.peers.pop(gone)
            if state.identity is not None and not state.compromised:
                self._seen[gone] = state.identity
                while len(self._seen) > MAX_REMEMBERED:
                    del self._seen[next(iter(self._seen))]
        for peer in keep:
            if peer not in self.peers:
                self.peers[peer] = PeerIdentity(identity=self._seen.pop(peer, None))
        return before != self.can_share

    def link_cert(self, peer: str, fp: str | None) -> bool:
        """A link to ``peer`` opened showing certificate ``fp``; True when that compromises a
        verified identity (it was proven on another certificate)."""
        state = self.peer(peer)
        state.fp = fp
        if state.identity is not None and fp is not None and state.identity.fp != fp:
            state.compromised = True
            self.refusals["cert-changed"] += 1
            return True
        return False

    def verified(self, peer: str, identity: Identity) -> None:
        state = self.peer(peer)
        if state.identity is not None and state.identity.fp != identity.fp:
            state.compromised = True
            self.refusals["cert-changed"] += 1
        state.identity, state.refusal = identity, None

    def refused(self, peer: str, reason: str) -> None:
        self.refusals[reason] += 1
        self.peer(peer).refusal = reason

    def verified_email(self, peer: str) -> str | None:
        state = self.peers.get(peer)
        if state is None or state.identity is None or state.compromised:
            return None
        return state.identity.email

    @property
    def self_email(self) -> str | None:
        return self.self_identity.email if self.self_identity is not None else None

    @property
    def compromised(self) -> bool:
        return any(p.compromised for p in self.peers.values())

    @property
    def can_share(self) -> bool:
        if not self.active:
            return True
        if self.self_identity is None or self.compromised:
            return False
        return all(p.identity is not None and p.identity.fp == p.fp
                   for k, p in self.peers.items() if k not in self.away)

    @property
    def holding(self) -> bool:
        """Whether content must wait now (``require`` and not everyone verified, or compromised)."""
        return self.active and (self.require or self.compromised) and not self.can_share


__all__ = ["PeerIdentity", "VerifiedRoster"]
