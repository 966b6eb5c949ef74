"""A test issuer of RS256 identity tokens (PyJWT + ``cryptography``, not kibitz) and a fetch seam
that serves its key set on the bus's fake clock."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import rsa

from kibitz.identity import identity_nonce
from kibitz.identity.keys import Done

ISSUER = "https://kibitz.example"


class Issuer:
    """Mints tokens like ``POST /api/email/verify`` does (aud kibitz-email, email, nonce, 10 min)."""

    def __init__(self, issuer: str = ISSUER, kid: str = "k1") -> None:
        self.issuer = issuer
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def mint(self, email: str, *, fp: str, room: str, now: float, aud: str = "kibitz-email",
             ttl: float = 600, **extra: Any) -> str:
        claims = {"iss": self.issuer, "aud": aud, "sub": email, "email": email,
                  "nonce": identity_nonce(fp, room), "iat": int(now), "exp": int(now + ttl), **extra}
        return pyjwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})


class FakeFetch:
    """``fetch(url, done)`` answering from ``docs`` after ``delay`` on the given ``call_later``."""

    def __init__(self, call_later: Callable[[float, Callable[[], None]], object], docs: dict[str, Any],
                 delay: float = 0.01) -> None:
        self.call_later = call_later
        self.docs = docs
        self.delay = delay
        self.asked: list[str] = []

    def __call__(self, url: str, done: Done) -> None:
        self.asked.append(url)
        doc = self.docs.get(url)
        if doc is None:
            self.call_later(self.delay, lambda: done(404, b""))
        else:
            body = json.dumps(doc).encode()
            self.call_later(self.delay, lambda: done(200, body))
