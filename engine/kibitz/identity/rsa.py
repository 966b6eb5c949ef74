"""RSA signature verification (RSASSA-PKCS1-v1_5 with SHA-256, RFC 8017 §8.2.2) in pure Python.

This is what an RS256 JSON Web Token needs from RSA: one modular exponentiation with the public
exponent, then a byte-for-byte comparison with the one encoding PKCS#1 v1.5 allows. It runs the same
in CPython and in the page under Pyodide, where ``cryptography`` is not available (see
docs/security.md, "Primitives"). Only public values are involved, so timing leaks nothing secret.

We verify by *re-encoding* the expected message (``00 01 FF…FF 00 ‖ DigestInfo(SHA-256) ‖ hash``)
and comparing it with what the signature opens to, never by parsing the opened bytes: a parser that
accepts trailing garbage or a short padding is the classic Bleichenbacher-2006 forgery for small
exponents. Keys are refused below 2048 bits and above 8192 bits (cost), and the exponent must be odd
and at least 3.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kibitz.crypto.b64 import b64url_decode, b64url_encode

MIN_BITS = 2048
MAX_BITS = 8192
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
"""DER ``DigestInfo`` prefix for SHA-256 (RFC 8017 §9.2, note 1)."""


@dataclass(frozen=True, slots=True)
class RsaPublicKey:
    """An RSA public key ``(n, e)``; ``kid`` is the JWK's key id, if it had one."""

    n: int
    e: int
    kid: str | None = None

    def __post_init__(self) -> None:
        bits = self.n.bit_length()
        if not MIN_BITS <= bits <= MAX_BITS:
            raise ValueError(f"an RSA key of {bits} bits; {MIN_BITS} to {MAX_BITS} are accepted")
        if self.e < 3 or self.e % 2 == 0 or self.e >= self.n:
            raise ValueError("the RSA public exponent must be odd, at least 3 and below n")

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> RsaPublicKey:
        """From a JWK ``{kty: "RSA", n, e, kid?, alg?, use?}``; ``ValueError`` says what is wrong.

        A key that says it is for another algorithm (``alg`` not RS256) or another use (``use`` not
        ``sig``) is refused: a key is used only as its owner declared."""
        if not isinstance(jwk, Mapping):
            raise ValueError("a JWK is an object")
        if jwk.get("kty") != "RSA":
            raise ValueError(f"not an RSA key (kty {jwk.get('kty')!r})")
        if "d" in jwk or "p" in jwk:
            raise ValueError("this JWK holds a private key; only public keys belong here")
        if jwk.get("alg") not in (None, "RS256"):
            raise ValueError(f"the key is for {jwk.get('alg')!r}, not RS256")
        if jwk.get("use") not in (None, "sig"):
            raise ValueError(f"the key is for use {jwk.get('use')!r}, not sig")
        n_text, e_text, kid = jwk.get("n"), jwk.get("e"), jwk.get("kid")
        if not isinstance(n_text, str) or not isinstance(e_text, str):
            raise ValueError("an RSA JWK needs n and e as base64url text")
        if kid is not None and not (isinstance(kid, str) and 0 < len(kid) <= 256):
            raise ValueError("kid must be a short text")
        n_raw, e_raw = b64url_decode(n_text), b64url_decode(e_text)
        if not n_raw or not e_raw or n_raw[0] == 0 or e_raw[0] == 0 or len(e_raw) > 8:
            raise ValueError("n and e must be minimal big-endian integers (no leading zero byte)")
        return cls(int.from_bytes(n_raw, "big"), int.from_bytes(e_raw, "big"), kid)

    def to_jwk(self) -> dict[str, str]:
        out = {"kty": "RSA", "alg": "RS256", "use": "sig",
               "n": b64url_encode(_int_bytes(self.n)), "e": b64url_encode(_int_bytes(self.e))}
        if self.kid is not None:
            out["kid"] = self.kid
        return out

    @property
    def size(self) -> int:
        """Modulus length in bytes (= signature length)."""
        return (self.n.bit_length() + 7) // 8

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is this key's RSASSA-PKCS1-v1_5/SHA-256 signature of ``message``.
        Never raises on garbage: returns False."""
        k = self.size
        if not isinstance(signature, bytes | bytearray) or len(signature) != k:
            return False
        s = int.from_bytes(signature, "big")
        if s >= self.n:
            return False
        opened = pow(s, self.e, self.n).to_bytes(k, "big")
        return hmac.compare_digest(opened, pkcs1_v15_encode(message, k))


def pkcs1_v15_encode(message: bytes, k: int) -> bytes:
    """EMSA-PKCS1-v1_5 encoding of ``message`` for a ``k``-byte modulus (RFC 8017 §9.2)."""
    t = SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
    pad = k - len(t) - 3
    if pad < 8:
        raise ValueError("modulus too short for SHA-256")
    return b"\x00\x01" + b"\xff" * pad + b"\x00" + t


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")


__all__ = ["MAX_BITS", "MIN_BITS", "RsaPublicKey", "pkcs1_v15_encode"]
