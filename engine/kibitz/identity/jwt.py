"""RS256 JSON Web Tokens: split, verify the signature against a key set, check the claims.

Pure Python over :mod:`kibitz.identity.rsa`, so the page (Pyodide) and CPython give the same answer
for every token; the golden vectors in tests/vectors/identity.json prove it in both.

Rules (the original engine's, docs/security.md "Identity"):

* the algorithm is pinned: the header's ``alg`` must be exactly ``RS256`` (``none``, ``HS256`` with
  the public key as secret, ``RS512``, ``ES256``… are all refused before any key is touched);
* the key is chosen by ``kid`` from the issuer's key set, never from the token (``jwk``, ``jku``,
  ``x5u``, ``x5c`` headers are ignored); an unknown ``kid`` is refused (the caller may fetch the
  key set again once and retry); a token without ``kid`` only when the set holds exactly one key
  (no choice to make); a header with ``crit`` is refused (we understand no extension);
* ``iss`` is one of the provider's issuers, ``aud`` holds the expected audience (and ``azp``, when
  present, is it), ``exp`` has not passed and ``nbf``/``iat`` are not in the future, with 60 s
  leeway each way; ``sub`` is a non-empty text.

Every refusal is a :class:`JwtRefusal` with one stable ``reason`` word (:data:`JWT_REFUSALS`) to
count; nothing here raises on what a peer sends.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from kibitz.crypto.b64 import b64url_decode
from kibitz.crypto.tokens import strict_json
from kibitz.identity.rsa import RsaPublicKey

MAX_JWT_CHARS = 8192
LEEWAY_S = 60.0

JwtReason = Literal[
    "oversize",
    "malformed",
    "bad-json",
    "alg",
    "crit",
    "unknown-kid",
    "bad-signature",
    "wrong-issuer",
    "wrong-audience",
    "expired",
    "not-yet-valid",
    "no-subject",
]
JWT_REFUSALS: tuple[JwtReason, ...] = get_args(JwtReason)


@dataclass(frozen=True, slots=True)
class JwtRefusal:
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class JwtParts:
    """A JWT split and decoded, not yet verified."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def split_jwt(token: object, *, max_chars: int = MAX_JWT_CHARS) -> JwtParts | JwtRefusal:
    """Three strict base64url parts, a JSON object header and a JSON object claim set."""
    if not isinstance(token, str):
        return JwtRefusal("malformed", "a token is text")
    if len(token) > max_chars:
        return JwtRefusal("oversize", f"{len(token)} characters, over the cap of {max_chars}")
    parts = token.split(".")
    if len(parts) != 3:
        return JwtRefusal("malformed", f"a JWT has three parts, this one has {len(parts)}")
    try:
        raw = [b64url_decode(p) for p in parts]
    except ValueError as exc:
        return JwtRefusal("malformed", str(exc))
    docs: list[dict[str, Any]] = []
    for what, blob in (("header", raw[0]), ("claims", raw[1])):
        try:
            value = strict_json(blob.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return JwtRefusal("bad-json", f"the {what} is not strict JSON ({exc})")
        if not isinstance(value, dict):
            return JwtRefusal("bad-json", f"the {what} is not a JSON object")
        docs.append(value)
    return JwtParts(docs[0], docs[1], f"{parts[0]}.{parts[1]}".encode("ascii"), raw[2])


def peek_claims(token: object) -> dict[str, Any] | None:
    """The claims of ``token`` without checking anything: only to route it (which issuer)."""
    parts = split_jwt(token)
    return parts.claims if isinstance(parts, JwtParts) else None


def check_signature(parts: JwtParts, keys: Mapping[str, RsaPublicKey]) -> JwtRefusal | None:
    """The pinned algorithm, a known ``kid``, and the signature."""
    alg = parts.header.get("alg")
    if alg != "RS256":
        return JwtRefusal("alg", f"algorithm {alg!r} is refused; only RS256 is accepted")
    if "crit" in parts.header:
        return JwtRefusal("crit", "the token names critical extensions this engine does not know")
    kid = parts.header.get("kid")
    if kid is None and len(keys) == 1:
        key: RsaPublicKey | None = next(iter(keys.values()))  # an issuer with one key may omit kid
    else:
        key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        return JwtRefusal("unknown-kid", f"no key {kid!r} in the issuer's key set")
    if not key.verify(parts.signature, parts.signing_input):
        return JwtRefusal("bad-signature", "the signature does not match the issuer's key")
    return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def check_claims(
    claims: Mapping[str, Any],
    *,
    issuers: Collection[str],
    audience: str | None,
    now: float,
    leeway: float = LEEWAY_S,
) -> JwtRefusal | None:
    """Issuer, audience (skipped when ``audience`` is None), times and subject."""
    if claims.get("iss") not in issuers:
        return JwtRefusal("wrong-issuer", f"issued by {str(claims.get('iss'))[:120]!r}, not a trusted issuer")
    if audience is not None:
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if audience not in auds:
            return JwtRefusal("wrong-audience", "the token is for another audience")
        azp = claims.get("azp")
        if azp is not None and azp != audience:
            return JwtRefusal("wrong-audience", "the token was requested by another client (azp)")
    exp = _number(claims.get("exp"))
    if exp is None:
        return JwtRefusal("expired", "the token has no expiry")
    if exp + leeway < now:
        return JwtRefusal("expired", f"expired {now - exp:.0f} s ago")
    for name in ("nbf", "iat"):
        if name in claims:
            value = _number(claims[name])
            if value is None:
                return JwtRefusal("malformed", f"{name} is not a number")
            if value - leeway > now:
                return JwtRefusal("not-yet-valid", f"{name} is {value - now:.0f} s in the future")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 512:
        return JwtRefusal("no-subject", "the token names no subject")
    return None


def verify_rs256(
    token: object,
    keys: Mapping[str, RsaPublicKey],
    *,
    issuers: Collection[str],
    audience: str | None,
    now: float,
    leeway: float = LEEWAY_S,
) -> dict[str, Any] | JwtRefusal:
    """The claims of an RS256 ``token`` signed by one of ``keys`` (by kid), or a refusal."""
    parts = split_jwt(token)
    if isinstance(parts, JwtRefusal):
        return parts
    bad = check_signature(parts, keys) or check_claims(
        parts.claims, issuers=issuers, audience=audience, now=now, leeway=leeway
    )
    return bad if bad is not None else parts.claims


def parse_jwks(doc: object) -> dict[str, RsaPublicKey]:
    """The RS256-usable keys of a JWKS document by ``kid`` (keys without a kid, of another type or
    another algorithm are skipped); ``ValueError`` for a document that is not a key set."""
    keys = doc.get("keys") if isinstance(doc, Mapping) else None
    if not isinstance(keys, list):
        raise ValueError("a JWKS document is an object with a keys list")
    out: dict[str, RsaPublicKey] = {}
    for jwk in keys[:64]:
        if not isinstance(jwk, Mapping) or jwk.get("kty") != "RSA":
            continue
        try:
            key = RsaPublicKey.from_jwk(jwk)
        except ValueError:
            continue
        out[key.kid or ""] = key  # a key without kid serves only tokens without one
    return out


__all__ = [
    "JWT_REFUSALS",
    "LEEWAY_S",
    "MAX_JWT_CHARS",
    "JwtParts",
    "JwtRefusal",
    "check_claims",
    "check_signature",
    "parse_jwks",
    "peek_claims",
    "split_jwt",
    "verify_rs256",
]
