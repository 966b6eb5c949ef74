"""The identity part of the door: what the coordinator asks before it rosters a joiner.

A pure check (:meth:`IdentityDoor.check`) over what the joiner announced (``jwt``,
``agentAssertion``, ``agentCredit``) and the certificate of the presence link it announced on:

* a room with **agent keys** (``gak``) admits an agent (``meta.role == "agent"``) only with a fresh
  assertion, bound to that certificate, from one of the keys; the assertion also satisfies an
  email/google gate (the room said which agents it trusts);
* an **email/google gate** admits only a token that :func:`~kibitz.identity.policy.verify_identity`
  accepts for that certificate and this room, with an allowed address;
* with **agent credits** configured, an agent needs a valid credit too (checked on every announce).

Any verified token also yields the member's email, which the coordinator needs for the host tier
"email" (``gho``): the host is whoever proves that address. Results: ``ok``, ``pending`` (the
issuer's keys are being fetched: hold the joiner, check again when they arrive) or ``unverified``
with a stable reason, counted in :attr:`IdentityDoor.refusals`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from kibitz.identity.agents import (
    AgentKey,
    AgentProof,
    AgentRefusal,
    Credit,
    CreditIssuer,
    check_assertion,
    check_credit,
)
from kibitz.identity.jwt import JwtRefusal
from kibitz.identity.keys import KeyDirectory
from kibitz.identity.policy import Identity, IdentityConfig, IdentityRefusal, verify_identity

log = logging.getLogger(__name__)

DoorResult = Literal["ok", "pending", "unverified"]


@dataclass(frozen=True, slots=True)
class DoorCheck:
    result: DoorResult
    reason: str = ""
    identity: Identity | None = None
    agent: AgentProof | None = None
    credit: Credit | None = None

    @property
    def email(self) -> str | None:
        return self.identity.email if self.identity is not None else None


class IdentityDoor:
    def __init__(
        self,
        *,
        room: str,
        keys: KeyDirectory,
        gate_identity: IdentityConfig | None = None,
        token_identity: IdentityConfig | None = None,
        agent_keys: Sequence[AgentKey] = (),
        credits: CreditIssuer | None = None,
    ) -> None:
        """``gate_identity``: what an email/google gate demands (None: the gate demands no identity).
        ``token_identity``: providers whose tokens are read anyway (for the host tier email and to
        show who is verified); defaults to ``gate_identity``."""
        self.room = room
        self.keys = keys
        self.gate_identity = gate_identity
        self.token_identity = token_identity or gate_identity
        self.agent_keys = tuple(agent_keys)
        self.credits = credits
        self.refusals: Counter[str] = Counter()
        self.self_pending: Callable[[], bool] = lambda: False
        """Whether our own token waits for its issuer's keys (set by the member that owns the door):
        coordinating, we then hold ourselves out (neither in nor refused) until they arrive."""

    @property
    def enforcing(self) -> bool:
        return bool(self.gate_identity or self.agent_keys or self.credits)

    def check(
        self,
        *,
        jwt: str | None,
        assertion: str | None,
        credit: str | None,
        is_agent: bool,
        fp: str | None,
        now: float,
        known_fps: Collection[str] = (),
    ) -> DoorCheck:
        identity: Identity | None = None
        token_reason = "needs-identity"
        config = self.token_identity
        if jwt and config is not None:
            got = verify_identity(jwt, config=config, keys_of=self.keys.keys_of, fp=fp, room=self.room,
                                  now=now, known_fps=known_fps)
            if isinstance(got, Identity):
                identity = got
            else:
                if got.reason in ("no-keys", "unknown-kid") and got.provider is not None:
                    if got.reason == "unknown-kid":
                        self.keys.refresh(got.provider)
                    if self.gate_identity is not None:
                        return DoorCheck("pending", got.reason)
                token_reason = got.reason
        agent: AgentProof | None = None
        if is_agent and self.agent_keys:
            proof = check_assertion(assertion, self.agent_keys, fp=fp, room=self.room, now=now) \
                if assertion else AgentRefusal("needs-agent-key", "this room admits only known agents")
            if isinstance(proof, AgentRefusal):
                return self._refuse(f"agent:{proof.reason}")
            agent = proof
        if self.gate_identity is not None and agent is None:
            if identity is None:
                return self._refuse(token_reason)
            if not self.gate_identity.allows(identity.email):
                return self._refuse("not-allowed")
        paid: Credit | None = None
        if is_agent and self.credits is not None:
            keys = self.keys.keys_of(self.credits)
            if keys is None:
                return DoorCheck("pending", "no-keys")
            got_credit = check_credit(credit, keys, self.credits, room=self.room, now=now) if credit \
                else JwtRefusal("needs-credit", "this room admits agents with a credit only")
            if isinstance(got_credit, JwtRefusal):
                if got_credit.reason == "unknown-kid":
                    self.keys.refresh(self.credits)
                return self._refuse(f"credit:{got_credit.reason}")
            paid = got_credit
        return DoorCheck("ok", identity=identity, agent=agent, credit=paid)

    def _refuse(self, reason: str) -> DoorCheck:
        self.refusals[reason] += 1
        log.info("room %s: the door refuses a joiner (%s)", self.room, reason)
        return DoorCheck("unverified", reason)


__all__ = ["DoorCheck", "DoorResult", "IdentityDoor", "IdentityRefusal"]
