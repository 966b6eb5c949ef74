"""One member's side of the identity layer: its own token, every peer's, the door it keeps when it
coordinates, and what ``getState()``/``getParticipants()`` show. No I/O: keys come through the
:data:`~kibitz.identity.keys.Fetch` seam, certificates through the transport's
:class:`~kibitz.transport.CertifiedTransport` side, time through the scheduler.

:class:`kibitz.session.Session` composes one :class:`MemberIdentity` and calls it at the moments
that matter (a data link came up, an ``idtoken`` arrived, the roster changed, keys arrived); it
answers through three callbacks: send our token to a peer, change our announced profile (the
coordinator's door reads ``jwt``, ``agentAssertion``, ``agentCredit`` from it), and "something
changed" (re-render, release held content, re-decide media lanes).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kibitz.clock import Scheduler, TimerHandle
from kibitz.gate import GateError, JoinGate
from kibitz.identity.agents import RESIGN_EVERY_S, AgentKey, CreditIssuer, sign_assertion
from kibitz.identity.binding import identity_nonce, safety_code, safety_words
from kibitz.identity.door import IdentityDoor
from kibitz.identity.keys import Fetch, KeyDirectory
from kibitz.identity.policy import (
    GOOGLE_ISSUER,
    Identity,
    IdentityConfig,
    IdentityRefusal,
    Provider,
    normalize_email,
    parse_allowed,
    verify_identity,
)
from kibitz.identity.roster import VerifiedRoster
from kibitz.transport import CertifiedTransport, LinkId, Transport

log = logging.getLogger(__name__)

PENDING = frozenset({"no-keys", "unknown-kid"})
CERT_WAITS_S = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
"""When a link is up but its far certificate cannot be read yet (the page reads it off the DTLS
transport a moment after the channel opens; under load the channel can win by seconds), look again
after each of these delays: about half a minute in all, then the refusal ``no-fingerprint`` stands."""


class IdentityError(ValueError):
    """A token this member will not adopt; ``reason`` is one of the stable refusal words."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def gate_identity(gate: JoinGate, api_base: str | None) -> IdentityConfig | None:
    """What an email/google gate demands at the door (None for the other modes)."""
    if not gate.identity_mode:
        return None
    if gate.mode == "email":
        issuer = gate.issuer or api_base
        if not issuer:
            raise GateError("missing-param", "an email gate needs the server that mails the codes: gi in the "
                            "link, or the apiBase this page or agent uses")
        provider = Provider.from_json({"type": "email", "apiBase": issuer})
    else:
        kind = "google" if gate.issuer in (None, GOOGLE_ISSUER) else "oidc"
        provider = Provider.from_json({"type": kind, "issuer": gate.issuer or GOOGLE_ISSUER,
                                       "clientId": gate.client_id})
    emails, domains = parse_allowed(gate.allowed)
    return IdentityConfig((provider,), allowed_emails=emails, allowed_domains=domains)


class MemberIdentity:
    def __init__(
        self,
        room: str,
        *,
        gate: JoinGate,
        transport: Transport,
        scheduler: Scheduler,
        wall: Callable[[], float],
        verify: IdentityConfig | Mapping[str, Any] | None = None,
        api_base: str | None = None,
        fetch: Fetch | None = None,
        agent_key: str | None = None,
        agent_credits: CreditIssuer | Mapping[str, Any] | None = None,
    ) -> None:
        self.room = room
        self.gate = gate
        self._transport = transport
        self._scheduler = scheduler
        self._wall = wall
        door_config = gate_identity(gate, api_base)
        user = IdentityConfig.from_json(verify, api_base=api_base) if verify is not None else None
        self.config = _merge(user, door_config)
        """Whose tokens we read from peers (the mount's ``verifyIdentity``, plus the gate's issuer)."""
        self.keys = KeyDirectory(fetch, wall, on_keys=self._keys_arrived)
        credits = (CreditIssuer.from_json(agent_credits) if isinstance(agent_credits, Mapping)
                   else agent_credits)
        agent_keys = [AgentKey(k) for k in gate.agent_keys]
        self.door: IdentityDoor | None = None
        if self.config is not None or agent_keys or credits is not None:
            self.door = IdentityDoor(room=room, keys=self.keys, gate_identity=door_config,
                                     token_identity=self.config, agent_keys=agent_keys, credits=credits)
            self.door.self_pending = lambda: self._pending_token is not None
        self.roster = VerifiedRoster(active=self.config is not None,
                                     require=bool(self.config and self.config.require))
        self.token: str | None = None
        self._pending_token: str | None = None
        self.self_refusal: str | None = None
        self._agent_key = agent_key
        self._resign: TimerHandle | None = None
        self._cert_waits: dict[str, tuple[TimerHandle, int]] = {}
        # Wired by the session:
        self.send_token: Callable[[str, str], None] = lambda peer, jwt: None
        self.set_profile: Callable[..., None] = lambda **changes: None
        self.changed: Callable[[], None] = lambda: None
        self.link_of: Callable[[str], LinkId | None] = lambda peer: None
        self.keys_arrived_hook: Callable[[], None] = lambda: None
        if gate.host.email and self.config is None:
            log.warning("room %s names a host by email but trusts no identity provider: no host", room)

    # ------------------------------------------------------------------ certificates

    def local_fp(self) -> str | None:
        t = self._transport
        return t.local_fingerprint() if isinstance(t, CertifiedTransport) else None

    def remote_fp(self, peer: str) -> str | None:
        link = self.link_of(peer)
        t = self._transport
        return t.remote_fingerprint(link) if link is not None and isinstance(t, CertifiedTransport) else None

    def nonce(self, salt: str | None = None) -> str:
        """The sign-in nonce for this member's certificate and room (``identityNonce(salt?)``)."""
        fp = self.local_fp()
        if not fp:
            raise RuntimeError("this member's certificate is not ready yet; ask again in a moment")
        if salt is not None and not isinstance(salt, str):
            raise IdentityError("bad-salt", "a nonce salt is text")
        try:
            return identity_nonce(fp, self.room, salt)
        except ValueError as exc:
            raise IdentityError("bad-salt", str(exc)) from None

    def known_fps(self) -> list[str]:
        return [p.fp for p in self.roster.peers.values() if p.fp]

    # ------------------------------------------------------------------ our own token

    def start(self) -> None:
        """Fetch the providers' keys early, and start signing agent assertions if we hold a key."""
        if self.config is not None:
            for provider in self.config.providers:
                self.keys.keys_of(provider)
        if self.door is not None and self.door.credits is not None:
            self.keys.keys_of(self.door.credits)
        if self._agent_key:
            self._sign_assertion()

    def stop(self) -> None:
        if self._resign is not None:
            self._resign.cancel()
            self._resign = None
        for timer, _ in self._cert_waits.values():
            timer.cancel()
        self._cert_waits.clear()

    def provide(self, jwt: str) -> dict[str, Any]:
        """Adopt an identity token minted elsewhere (a popup, another origin, an agent's flag). It must
        be bound to our own certificate in this room; ``IdentityError`` says why not."""
        if self.config is None:
            raise IdentityError("no-providers", "this room verifies no identity (no verifyIdentity, no "
                                "email/google gate)")
        if not isinstance(jwt, str) or not jwt:
            raise IdentityError("malformed", "an identity token is text")
        got = self._check(jwt, self.local_fp())
        if isinstance(got, Identity):
            self._adopt(jwt, got)
            return {"status": "verified", "email": got.email}
        if got.reason in PENDING:
            self._pending_token = jwt
            return {"status": "pending"}
        self.self_refusal = got.reason
        self.roster.refusals[f"self:{got.reason}"] += 1
        self.changed()
        raise IdentityError(got.reason, got.detail)

    def _check(self, jwt: str, fp: str | None) -> Identity | IdentityRefusal:
        assert self.config is not None
        got = verify_identity(jwt, config=self.config, keys_of=self.keys.keys_of, fp=fp, room=self.room,
                              now=self._wall(), known_fps=self.known_fps())
        if isinstance(got, IdentityRefusal) and got.reason == "unknown-kid" and got.provider is not None:
            self.keys.refresh(got.provider)
        return got

    def _adopt(self, jwt: str, identity: Identity) -> None:
        self.token, self._pending_token, self.self_refusal = jwt, None, None
        self.roster.self_identity = identity
        self.set_profile(jwt=jwt)
        for peer in list(self.roster.peers):
            if self.link_of(peer) is not None:
                self.send_token(peer, jwt)
        self.changed()

    # ------------------------------------------------------------------ peers

    def link_up(self, peer: str) -> None:
        """A data link to ``peer`` opened: note its certificate, send our token, check theirs again."""
        fp = self.remote_fp(peer)
        self._await_cert(peer, fp)
        if not self.roster.active:
            self.roster.peer(peer).fp = fp  # the safety code still shows; nothing to verify
            return
        if self.roster.link_cert(peer, fp):
            log.warning("room %s: %s's certificate changed under its verified identity", self.room, peer)
        if self.token:
            self.send_token(peer, self.token)
        state = self.roster.peer(peer)
        if state.token and (state.identity is None or state.identity.fp != fp) and not state.compromised:
            self._check_peer(peer, state.token)
        self.changed()

    def _await_cert(self, peer: str, fp: str | None, tries: int = 0) -> None:
        """Look at ``peer``'s link again shortly while its certificate is unreadable (bounded)."""
        waiting = self._cert_waits.pop(peer, None)
        if waiting is not None:
            waiting[0].cancel()
        if fp is None and tries < len(CERT_WAITS_S) and self.link_of(peer) is not None:
            timer = self._scheduler.call_later(CERT_WAITS_S[tries], lambda: self._cert_due(peer))
            self._cert_waits[peer] = (timer, tries)

    def _cert_due(self, peer: str) -> None:
        waiting = self._cert_waits.pop(peer, None)
        if waiting is None or self.link_of(peer) is None:
            return
        if self.remote_fp(peer) is None:
            self._await_cert(peer, None, waiting[1] + 1)  # the next, longer wait (or give up)
            return
        self.link_up(peer)  # now with the certificate: the safety code, and the token checked again

    def on_token(self, peer: str, jwt: str) -> None:
        """An ``idtoken`` from ``peer``, checked against the certificate of our link to it."""
        if self.config is None:
            self.roster.refusals["not-configured"] += 1
            return
        state = self.roster.peer(peer)
        if jwt == state.token and (state.identity is not None or state.refusal not in (None, *PENDING)):
            return  # the same token again: the verdict stands
        state.token = jwt
        self._check_peer(peer, jwt)
        self.changed()

    def _check_peer(self, peer: str, jwt: str) -> None:
        got = self._check(jwt, self.remote_fp(peer))
        if isinstance(got, Identity):
            self.roster.verified(peer, got)
        else:
            self.roster.refused(peer, got.reason)

    def set_members(self, others: list[str], away: list[str] | None = None) -> None:
        self.roster.set_members(others, away or ())

    def _keys_arrived(self) -> None:
        if self._pending_token is not None:
            token = self._pending_token
            got = self._check(token, self.local_fp())
            if isinstance(got, Identity):
                self._adopt(token, got)
            elif got.reason not in PENDING:
                self._pending_token, self.self_refusal = None, got.reason
                self.roster.refusals[f"self:{got.reason}"] += 1
        for peer, state in list(self.roster.peers.items()):
            if state.token and state.identity is None and state.refusal in (None, *PENDING):
                self._check_peer(peer, state.token)
        self.keys_arrived_hook()
        self.changed()

    # ------------------------------------------------------------------ agents

    def _sign_assertion(self) -> None:
        fp = self.local_fp()
        if fp and self._agent_key:
            self.set_profile(agent_assertion=sign_assertion(self._agent_key, room=self.room, fp=fp,
                                                            now=self._wall()))
        self._resign = self._scheduler.call_later(RESIGN_EVERY_S if fp else 1.0, self._sign_assertion)

    # ------------------------------------------------------------------ what the controller shows

    def verified_host(self, host: str, self_id: str) -> str:
        """The roster's host as we believe it: in tier email only a member whose token for the
        committed address *we* verified (or ourselves with ours)."""
        if not host or self.gate.host.tier != "email":
            return host
        wanted = normalize_email(self.gate.host.email or "")
        email = self.roster.self_email if host == self_id else self.roster.verified_email(host)
        return host if email == wanted else ""

    def state(self, in_call: bool) -> dict[str, Any]:
        r = self.roster
        return {
            "identityEnabled": r.active,
            "selfEmail": r.self_email,
            "rosterActive": r.active and in_call,
            "rosterCanShare": r.can_share,
            "rosterCompromised": r.compromised,
        }

    def participant(self, peer: str, self_id: str) -> dict[str, Any]:
        if peer == self_id:
            return {"verifiedEmail": self.roster.self_email, "safetyCode": None, "safetyWords": None}
        mine, theirs = self.local_fp(), self.roster.peers.get(peer)
        fp = theirs.fp if theirs is not None else None
        code = words = None
        if mine and fp:
            with contextlib.suppress(ValueError):
                code, words = safety_code(mine, fp), list(safety_words(mine, fp))
        return {"verifiedEmail": self.roster.verified_email(peer), "safetyCode": code, "safetyWords": words}

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"refusals": dict(self.roster.refusals), "keys": dict(self.keys.stats)}
        if self.door is not None:
            out["door"] = dict(self.door.refusals)
        if self.self_refusal:
            out["selfRefusal"] = self.self_refusal
        return out


def _merge(user: IdentityConfig | None, gate: IdentityConfig | None) -> IdentityConfig | None:
    if user is None or gate is None:
        return user or gate
    extra = tuple(p for p in gate.providers if p not in user.providers)
    return IdentityConfig(user.providers + extra, user.allowed_emails, user.allowed_domains, user.require)


__all__ = ["IdentityError", "MemberIdentity", "gate_identity"]
