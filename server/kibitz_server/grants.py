"""Licence tokens and "opener pays" room grants: pure functions, no I/O, no clock of their own.

A **licence** is an opaque bearer token (``kbz_lic_`` + 32 random bytes, base64url). The server
keeps only its SHA-256; the licence's public id (``sub``) is the first 16 characters of that
digest in base64url, exactly as the original derived a grant's ``sub`` from the licence.

A **room grant** is the original's format, byte for byte::

    b64url(JSON{"room","sub","exp"}) + "." + b64url(HMAC-SHA256(secret, <the first part, ASCII>))

with unpadded base64url, the JSON compact and in that key order (as ``JSON.stringify`` writes
it), ``exp`` in unix seconds, 600 s after minting. The MAC is checked (constant time) before the
body is parsed, so nothing an attacker writes is interpreted unless the server signed it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Literal

LICENCE_PREFIX = "kbz_lic_"
GRANT_TTL_S = 600
#: The rooms a grant may name (the original's rule); pages send their normalised room.
ROOM_PATTERN = re.compile(r"^[\w.:-]{1,200}$", re.ASCII)
#: Longer credentials are refused before any hashing or parsing.
MAX_LICENCE_CHARS = 256
MAX_GRANT_CHARS = 1024
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not _B64URL.match(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_licence_token() -> str:
    """A fresh licence: 256 random bits, shown once to whoever runs ``kibitz licence add``."""
    return LICENCE_PREFIX + secrets.token_urlsafe(32)


def licence_hash(token: str) -> bytes:
    """What the store keeps instead of the token: SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def licence_sub(token_hash: bytes) -> str:
    """A licence's public id (the grant's ``sub``): b64url(SHA-256(licence))[:16]."""
    return b64url(token_hash)[:16]


def bearer_token(authorization: str | None) -> tuple[str | None, str | None]:
    """``(token, None)`` from an ``Authorization: Bearer <token>`` header, or ``(None, reason)``.

    ``(None, None)`` when there is no header at all (not an error: the caller is anonymous).
    """
    if authorization is None or not authorization.strip():
        return None, None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None, "the Authorization header is not 'Bearer <licence>'"
    if len(token) > MAX_LICENCE_CHARS:
        return None, f"the licence is longer than {MAX_LICENCE_CHARS} characters"
    return token, None


def mint_grant(secret: bytes, room: str, sub: str, now: float, ttl: int = GRANT_TTL_S) -> tuple[str, int]:
    """``(grant, exp)``: ``room`` must already match :data:`ROOM_PATTERN`."""
    if not ROOM_PATTERN.match(room):
        raise ValueError("room must match ^[\\w.:-]{1,200}$")
    exp = int(now) + ttl
    body = b64url(json.dumps({"room": room, "sub": sub, "exp": exp}, separators=(",", ":"),
                             ensure_ascii=False).encode("utf-8"))
    return f"{body}.{_mac(secret, body)}", exp


def _mac(secret: bytes, body: str) -> str:
    return b64url(hmac.new(secret, body.encode("ascii"), hashlib.sha256).digest())


GrantRefusal = Literal["malformed", "forged", "expired", "other-room", "no-room"]


@dataclass(frozen=True)
class GrantCheck:
    """A verified grant's sponsor (``sub``) or why it was refused (``refusal`` + ``reason`` text)."""

    sub: str | None
    refusal: GrantRefusal | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.sub is not None


def _refuse(kind: GrantRefusal, reason: str) -> GrantCheck:
    return GrantCheck(None, kind, reason)


def verify_grant(secret: bytes, grant: str, room: str | None, now: float) -> GrantCheck:
    """Accept ``grant`` only if this server signed it, for ``room``, before its ``exp``."""
    if len(grant) > MAX_GRANT_CHARS:
        return _refuse("malformed", f"the grant is longer than {MAX_GRANT_CHARS} characters")
    body, dot, mac = grant.strip().partition(".")
    if not dot or not body or not mac or not _B64URL.match(body) or not _B64URL.match(mac):
        return _refuse("malformed", "the grant is not <base64url>.<base64url>")
    if not hmac.compare_digest(_mac(secret, body).encode("ascii"), mac.encode("ascii")):
        return _refuse("forged", "the grant's signature does not match this server's key")
    try:
        claims = json.loads(b64url_decode(body))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return _refuse("malformed", "the grant's body is not JSON")
    if (
        not isinstance(claims, dict)
        or not isinstance(claims.get("room"), str)
        or not isinstance(claims.get("sub"), str)
        or not isinstance(claims.get("exp"), int)
        or isinstance(claims.get("exp"), bool)
    ):
        return _refuse("malformed", "the grant lacks room, sub or exp")
    if not room:
        return _refuse("no-room", "a grant needs the room it is used in (?room=)")
    if claims["room"] != room:
        return _refuse("other-room", "the grant is for another room")
    if now >= claims["exp"]:
        return _refuse("expired", "the grant has expired; ask the room's opener for a new link")
    return GrantCheck(str(claims["sub"]))
