"""Agents that prove who they are: key assertions (a room admits only known agents) and credits.

**Agent keys.** A room's settings may list agent public keys (``gak`` in the link, ``agentKeys`` in
``joinGate``). An agent holding one of the private keys signs, with the original's compact ECDSA
token (:mod:`kibitz.crypto.tokens`), the assertion ``{k: "kbz-agent-key.v1", room, fp, iat}``: this
room, *this DTLS certificate*, now. The coordinator checks it against the certificate of the link it
arrived on, so a copied assertion is useless on another connection; it is fresh for 300 s (60 s of
clock skew the other way) and the agent re-signs it on a timer. The key id is the RFC 7638 thumbprint
(the original's agent key id).

**Credits** (optional, off by default): an RS256 credential ``{iss, sub, exp, iat?, nbf?, room?, k?}``
minted by a payment or quota service for about a minute at a time. The coordinator verifies it on
every announce (no audience check, as in the original; a pinned kind ``k`` and the room when
present) and removes an agent whose credit has been expired for 90 s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kibitz.crypto import PrivateKey, PublicKey, Refusal, sign_token, verify_token
from kibitz.identity.binding import normalize_fingerprint
from kibitz.identity.jwt import JwtRefusal, verify_rs256
from kibitz.identity.rsa import RsaPublicKey
from kibitz.ids import normalize_room

AGENT_KEY_KIND = "kbz-agent-key.v1"
ASSERTION_FRESH_S = 300.0
ASSERTION_SKEW_S = 60.0
RESIGN_EVERY_S = 120.0
MAX_AGENT_KEYS = 16
MAX_ASSERTION_CHARS = 2048
CREDIT_REAP_S = 90.0


@dataclass(frozen=True, slots=True)
class AgentKey:
    """One agent key a room trusts."""

    key: str
    """Public key text (b64url P-256 point, as ``gh``/``gk``)."""
    label: str = ""

    @property
    def kid(self) -> str:
        return PublicKey.from_text(self.key).thumbprint()


@dataclass(frozen=True, slots=True)
class AgentProof:
    kid: str
    label: str
    fp: str
    iat: float


@dataclass(frozen=True, slots=True)
class AgentRefusal:
    reason: str
    detail: str


def sign_assertion(key: PrivateKey | str, *, room: str, fp: str, now: float) -> str:
    """The agent's side: a fresh assertion for ``room`` and our own certificate ``fp``."""
    private = PrivateKey.from_text(key) if isinstance(key, str) else key
    return sign_token(private, {"k": AGENT_KEY_KIND, "room": normalize_room(room),
                                "fp": normalize_fingerprint(fp), "iat": int(now)})


def check_assertion(
    token: object, keys: Sequence[AgentKey], *, fp: str | None, room: str, now: float
) -> AgentProof | AgentRefusal:
    """Which of ``keys`` signed ``token`` for this room and the link's certificate ``fp``, if any."""
    if not isinstance(token, str) or len(token) > MAX_ASSERTION_CHARS:
        return AgentRefusal("malformed", "an agent assertion is text of at most 2048 characters")
    if not keys:
        return AgentRefusal("no-agent-keys", "this room lists no agent keys")
    found: tuple[AgentKey, dict[str, Any]] | None = None
    last: Refusal | None = None
    for k in keys[:MAX_AGENT_KEYS]:
        body = verify_token(PublicKey.from_text(k.key), token, max_chars=MAX_ASSERTION_CHARS)
        if isinstance(body, Refusal):
            last = body
            if body.reason != "bad-signature":
                return AgentRefusal(body.reason, body.detail)
            continue
        found = (k, body)
        break
    if found is None:
        return AgentRefusal("unknown-key", "no key of this room signed it" if last else "no keys")
    key, body = found
    if body.get("k") != AGENT_KEY_KIND:
        return AgentRefusal("wrong-kind", "not an agent key assertion")
    if body.get("room") != normalize_room(room):
        return AgentRefusal("wrong-room", "the assertion is for another room")
    if not fp:
        return AgentRefusal("no-fingerprint", "the link's certificate cannot be read")
    claimed = body.get("fp")
    try:
        same = isinstance(claimed, str) and normalize_fingerprint(claimed) == normalize_fingerprint(fp)
    except ValueError:
        same = False
    if not same:
        return AgentRefusal("other-cert", "the assertion was made for another certificate")
    iat = body.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
        return AgentRefusal("malformed", "the assertion has no issue time")
    if iat < now - ASSERTION_FRESH_S:
        return AgentRefusal("stale", f"signed {now - iat:.0f} s ago; assertions live {ASSERTION_FRESH_S:g} s")
    if iat > now + ASSERTION_SKEW_S:
        return AgentRefusal("future", f"signed {iat - now:.0f} s in the future")
    return AgentProof(key.kid, key.label, normalize_fingerprint(fp), float(iat))


# --- credits ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreditIssuer:
    """Who mints agent credits (the ``agentCredits`` option): issuer, key set URL, optional kind."""

    issuer: str
    jwks_url: str | None = None
    kind: str | None = None

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @classmethod
    def from_json(cls, obj: object) -> CreditIssuer:
        if not isinstance(obj, Mapping) or set(obj) - {"issuer", "jwksUrl", "kind"}:
            raise ValueError("agentCredits is {issuer, jwksUrl?, kind?}")
        issuer, jwks, kind = obj.get("issuer"), obj.get("jwksUrl"), obj.get("kind")
        for name, value in (("issuer", issuer), ("jwksUrl", jwks)):
            if value is not None and not (isinstance(value, str) and value.startswith(("https://", "http://"))):
                raise ValueError(f"agentCredits.{name} must be an http(s) URL")
        if not isinstance(issuer, str):
            raise ValueError("agentCredits needs issuer")
        if kind is not None and not (isinstance(kind, str) and 0 < len(kind) <= 64):
            raise ValueError("agentCredits.kind is a short text")
        return cls(issuer.rstrip("/"), jwks, kind)


@dataclass(frozen=True, slots=True)
class Credit:
    sub: str
    exp: float


def check_credit(
    token: object, keys: Mapping[str, RsaPublicKey], issuer: CreditIssuer, *, room: str, now: float
) -> Credit | JwtRefusal:
    claims = verify_rs256(token, keys, issuers=(issuer.issuer,), audience=None, now=now)
    if isinstance(claims, JwtRefusal):
        return claims
    if issuer.kind is not None and claims.get("k") != issuer.kind:
        return JwtRefusal("wrong-kind", "a credit of another kind")
    if "room" in claims and claims["room"] != normalize_room(room):
        return JwtRefusal("wrong-room", "a credit for another room")
    return Credit(str(claims["sub"]), float(claims["exp"]))


__all__ = [
    "AGENT_KEY_KIND",
    "ASSERTION_FRESH_S",
    "CREDIT_REAP_S",
    "RESIGN_EVERY_S",
    "AgentKey",
    "AgentProof",
    "AgentRefusal",
    "Credit",
    "CreditIssuer",
    "check_assertion",
    "check_credit",
    "sign_assertion",
]
