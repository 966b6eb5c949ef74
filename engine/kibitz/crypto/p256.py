"""ECDSA over NIST P-256 with SHA-256, in pure Python, the same in CPython and in the page.

Why pure Python: the page runs Pyodide, which has no ``cryptography`` wheel offline, and WebCrypto
is asynchronous and cannot sign deterministically (golden vectors would be impossible). Python's
big integers do the field arithmetic in C; the curve logic here is small.

- Points are Jacobian ``(X, Y, Z)`` with ``x = X/Z²``, ``y = Y/Z³`` (``Z == 0`` is infinity), so a
  scalar multiplication needs one modular inverse at the end instead of one per step.
- The base point has a table of its 64 odd multiples (``G, 3G, …, 127G``, affine), built on first
  use. Verification computes ``u1·G + u2·Q`` in one interleaved pass over width-8 (G) and width-5
  (Q) NAF digits: ~256 doublings and ~70 mixed additions.
- Signing uses RFC 6979 deterministic nonces (HMAC-SHA-256 DRBG), so a key and a message always give
  the same signature, and the RFC's appendix A.2.5 vectors hold exactly. Signatures are raw
  ``r‖s`` (64 bytes), as WebCrypto produces; verification accepts any ``s`` in ``[1, n-1]`` (no
  low-S rule: WebCrypto does not normalise) and never raises on garbage, it returns ``False``.

Not constant-time: Python integers take data-dependent time. See docs/security.md, "Primitives",
for what that exposes (signing runs on the key holder's own device). Timings are in the same place.

Text forms (all base64url without padding, see :mod:`kibitz.crypto.b64`):

- private key: ``kbzk1.`` + b64url(32-byte scalar ‖ first 4 bytes of SHA-256(``b"kbzk1."`` ‖
  scalar)), 54 characters. The prefix names the format and its version; the checksum turns a typo
  or a cut-off paste into a clear error instead of a different, valid key.
- public key: b64url of the 65-byte uncompressed point ``04 ‖ x ‖ y`` (87 characters), and JWK
  ``{"kty": "EC", "crv": "P-256", "x", "y"}`` as WebCrypto imports and exports it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator, Mapping
from typing import Any

from kibitz.crypto.b64 import b64url_decode, b64url_encode

# Curve parameters (SEC 2 / FIPS 186-4, secp256r1): y² = x³ - 3x + b over GF(p), order n, cofactor 1.
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5

PRIVATE_PREFIX = "kbzk1."
_PRIVATE_PREFIX_FAMILY = "kbzk"
_CHECK_BYTES = 4
SIGNATURE_BYTES = 64
PUBLIC_BYTES = 65

_Jac = tuple[int, int, int]
_Aff = tuple[int, int]
_INF: _Jac = (1, 1, 0)
_G_WIDTH = 8  # NAF width for the base point (table: 64 odd multiples, built once)
_Q_WIDTH = 5  # NAF width for a public key (table: 8 odd multiples, built per verification)


# --- field and group arithmetic -------------------------------------------------------------


def _on_curve(x: int, y: int) -> bool:
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x - 3 * x + B)) % P == 0


def _double(pt: _Jac) -> _Jac:
    """2·pt (dbl-2001-b, a = -3)."""
    x, y, z = pt
    if z == 0 or y == 0:
        return _INF
    delta = z * z % P
    gamma = y * y % P
    beta = x * gamma % P
    alpha = 3 * (x - delta) * (x + delta) % P
    x3 = (alpha * alpha - 8 * beta) % P
    z3 = 2 * y * z % P
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % P
    return x3, y3, z3


def _add_affine(pt: _Jac, q: _Aff) -> _Jac:
    """pt + q where q is affine (mixed addition); handles pt = ±q and pt = infinity."""
    x1, y1, z1 = pt
    x2, y2 = q
    if z1 == 0:
        return x2, y2, 1
    z1z1 = z1 * z1 % P
    h = (x2 * z1z1 - x1) % P
    r = (y2 * z1 * z1z1 - y1) % P
    if h == 0:
        return _double(pt) if r == 0 else _INF
    hh = h * h % P
    hhh = h * hh % P
    v = x1 * hh % P
    x3 = (r * r - hhh - 2 * v) % P
    y3 = (r * (v - x3) - y1 * hhh) % P
    return x3, y3, z1 * h % P


def _to_affine(pt: _Jac) -> _Aff | None:
    x, y, z = pt
    if z == 0:
        return None
    zi = pow(z, -1, P)
    zi2 = zi * zi % P
    return x * zi2 % P, y * zi2 * zi % P


def _odd_multiples(q: _Aff, width: int) -> dict[int, _Aff]:
    """{d: d·q} for every odd d with |d| < 2^(width-1), affine (one inversion for the batch)."""
    count = 1 << (width - 2)
    two_q = _to_affine(_double((q[0], q[1], 1)))
    assert two_q is not None  # q has prime order n > 2
    jac: list[_Jac] = [(q[0], q[1], 1)]
    for _ in range(count - 1):
        jac.append(_add_affine(jac[-1], two_q))
    # Montgomery's trick: invert every Z with a single modular inverse.
    prefix = [1] * (count + 1)
    for i, (_, _, z) in enumerate(jac):
        prefix[i + 1] = prefix[i] * z % P
    inv = pow(prefix[count], -1, P)
    table: dict[int, _Aff] = {}
    for i in range(count - 1, -1, -1):
        x, y, z = jac[i]
        zi = inv * prefix[i] % P
        inv = inv * z % P
        zi2 = zi * zi % P
        ax, ay = x * zi2 % P, y * zi2 * zi % P
        table[2 * i + 1] = (ax, ay)
        table[-(2 * i + 1)] = (ax, (P - ay) % P)
    return table


def _naf(k: int, width: int) -> list[int]:
    """Width-``width`` NAF digits of k >= 0, least significant first (odd digits, |d| < 2^(w-1))."""
    digits: list[int] = []
    full = 1 << width
    half = full >> 1
    while k:
        if k & 1:
            d = k & (full - 1)
            if d >= half:
                d -= full
            k -= d
        else:
            d = 0
        digits.append(d)
        k >>= 1
    return digits


_g_table: dict[int, _Aff] | None = None


def _base_table() -> dict[int, _Aff]:
    global _g_table
    if _g_table is None:
        _g_table = _odd_multiples((GX, GY), _G_WIDTH)
    return _g_table


def _mul_add(u1: int, u2: int, q: _Aff | None) -> _Jac:
    """u1·G + u2·q in one pass (Straus–Shamir with wNAF); q None means u1·G alone."""
    g_table = _base_table()
    n1 = _naf(u1, _G_WIDTH)
    if q is None or u2 == 0:
        n2: list[int] = []
        q_table: dict[int, _Aff] = {}
    else:
        n2 = _naf(u2, _Q_WIDTH)
        q_table = _odd_multiples(q, _Q_WIDTH)
    n1 += [0] * (len(n2) - len(n1))
    n2 += [0] * (len(n1) - len(n2))
    acc = _INF
    for i in range(len(n1) - 1, -1, -1):
        if acc[2]:
            acc = _double(acc)
        d = n1[i]
        if d:
            acc = _add_affine(acc, g_table[d])
        d = n2[i]
        if d:
            acc = _add_affine(acc, q_table[d])
    return acc


def _base_mul(k: int) -> _Aff:
    pt = _to_affine(_mul_add(k % N, 0, None))
    if pt is None:  # pragma: no cover - callers pass k in [1, n-1]
        raise ValueError("scalar is a multiple of the group order")
    return pt


# --- RFC 6979 deterministic nonces (SHA-256, qlen = hlen = 256) -------------------------------


def _digest_int(message: bytes) -> int:
    """bits2int(SHA-256(message)): the hash is exactly as long as n, so no shift is needed."""
    return int.from_bytes(hashlib.sha256(message).digest(), "big")


def _rfc6979_nonces(d: int, e: int) -> Iterator[int]:
    """Yields the RFC 6979 §3.2 candidate nonces k for private key d and hashed message e."""
    x = d.to_bytes(32, "big")
    h = (e % N).to_bytes(32, "big")  # bits2octets
    v = b"\x01" * 32
    k = b"\x00" * 32
    k = hmac.new(k, v + b"\x00" + x + h, hashlib.sha256).digest()
    v = hmac.new(k, v, hashlib.sha256).digest()
    k = hmac.new(k, v + b"\x01" + x + h, hashlib.sha256).digest()
    v = hmac.new(k, v, hashlib.sha256).digest()
    while True:
        v = hmac.new(k, v, hashlib.sha256).digest()
        candidate = int.from_bytes(v, "big")
        if 1 <= candidate < N:
            yield candidate
        k = hmac.new(k, v + b"\x00", hashlib.sha256).digest()
        v = hmac.new(k, v, hashlib.sha256).digest()


def rfc6979_nonce(private_scalar: int, message: bytes) -> int:
    """The first RFC 6979 nonce for signing ``message`` (exposed for the RFC's test vectors)."""
    return next(_rfc6979_nonces(private_scalar, _digest_int(message)))


# --- keys --------------------------------------------------------------------------------------


def _coord(value: object, name: str) -> int:
    if not isinstance(value, str):
        raise ValueError(f"JWK {name!r} must be a base64url string")
    try:
        raw = b64url_decode(value)
    except ValueError as exc:
        raise ValueError(f"JWK {name!r}: {exc}") from None
    if len(raw) != 32:
        raise ValueError(f"JWK {name!r} must hold 32 bytes, got {len(raw)}")
    return int.from_bytes(raw, "big")


def _check_jwk_header(jwk: Mapping[str, Any]) -> None:
    if not isinstance(jwk, Mapping):
        raise ValueError(f"a JWK must be an object, got {type(jwk).__name__}")
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise ValueError(f"not a P-256 EC key (kty={jwk.get('kty')!r}, crv={jwk.get('crv')!r})")


class PublicKey:
    """A P-256 public key (a point on the curve, never infinity). Immutable and hashable."""

    __slots__ = ("_x", "_y")
    _x: int
    _y: int

    def __init__(self, x: int, y: int) -> None:
        if not (isinstance(x, int) and isinstance(y, int) and _on_curve(x, y)):
            raise ValueError("public key: the point is not on the P-256 curve")
        object.__setattr__(self, "_x", x)
        object.__setattr__(self, "_y", y)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("PublicKey is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and (self._x, self._y) == (other._x, other._y)

    def __hash__(self) -> int:
        return hash((self._x, self._y))

    def __repr__(self) -> str:
        return f"PublicKey({self.to_text()!r})"

    @property
    def x(self) -> int:
        return self._x

    @property
    def y(self) -> int:
        return self._y

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKey:
        """From the 65-byte uncompressed SEC 1 form ``04 ‖ x ‖ y``."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"public key: expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) == 33 and data[0] in (2, 3):
            raise ValueError("public key: compressed points are not accepted; use the 65-byte form")
        if len(data) != PUBLIC_BYTES or data[0] != 4:
            raise ValueError(f"public key: expected 65 bytes starting with 04, got {len(data)} bytes")
        return cls(int.from_bytes(data[1:33], "big"), int.from_bytes(data[33:], "big"))

    @classmethod
    def from_text(cls, text: str) -> PublicKey:
        """From :meth:`to_text`'s base64url form (87 characters)."""
        if not isinstance(text, str):
            raise TypeError(f"public key: expected str, got {type(text).__name__}")
        if text.startswith(_PRIVATE_PREFIX_FAMILY):
            raise ValueError("public key: this is a private key; pass its public key instead")
        try:
            raw = b64url_decode(text)
        except ValueError as exc:
            raise ValueError(f"public key: {exc}") from None
        return cls.from_bytes(raw)

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> PublicKey:
        """From a JWK ``{"kty": "EC", "crv": "P-256", "x", "y"}`` (other members are ignored,
        but one holding a private key, with ``"d"``, is refused: it should not travel)."""
        _check_jwk_header(jwk)
        if "d" in jwk:
            raise ValueError("public key: this JWK holds a private key ('d'); pass only the public part")
        return cls(_coord(jwk.get("x"), "x"), _coord(jwk.get("y"), "y"))

    def to_bytes(self) -> bytes:
        return b"\x04" + self._x.to_bytes(32, "big") + self._y.to_bytes(32, "big")

    def to_text(self) -> str:
        return b64url_encode(self.to_bytes())

    def to_jwk(self) -> dict[str, str]:
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url_encode(self._x.to_bytes(32, "big")),
            "y": b64url_encode(self._y.to_bytes(32, "big")),
        }

    def thumbprint(self) -> str:
        """RFC 7638 JWK thumbprint: b64url(SHA-256 of the canonical ``{crv,kty,x,y}`` JSON).
        The original engine's key id for agent keys is this value."""
        j = self.to_jwk()
        canonical = f'{{"crv":"P-256","kty":"EC","x":"{j["x"]}","y":"{j["y"]}"}}'
        return b64url_encode(hashlib.sha256(canonical.encode("ascii")).digest())

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True only if ``signature`` (raw 64-byte ``r‖s``) is valid for ``message`` under this key.

        Never raises: wrong types, wrong lengths, ``r`` or ``s`` outside ``[1, n-1]`` all give False.
        """
        if not isinstance(signature, bytes | bytearray | memoryview):
            return False
        if not isinstance(message, bytes | bytearray | memoryview):
            return False
        signature = bytes(signature)
        if len(signature) != SIGNATURE_BYTES:
            return False
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        if not (1 <= r < N and 1 <= s < N):
            return False
        e = _digest_int(bytes(message))
        w = pow(s, -1, N)
        point = _to_affine(_mul_add(e * w % N, r * w % N, (self._x, self._y)))
        if point is None:
            return False
        return point[0] % N == r


class PrivateKey:
    """A P-256 private key. Its ``repr`` never shows the secret; :meth:`to_text` does."""

    __slots__ = ("_d", "_public")
    _d: int
    _public: PublicKey

    def __init__(self, scalar: int) -> None:
        if not isinstance(scalar, int) or not 1 <= scalar < N:
            raise ValueError("private key: the scalar must be in [1, n-1]")
        x, y = _base_mul(scalar)
        object.__setattr__(self, "_d", scalar)
        object.__setattr__(self, "_public", PublicKey(x, y))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("PrivateKey is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrivateKey) and hmac.compare_digest(self.to_bytes(), other.to_bytes())

    def __hash__(self) -> int:
        return hash(self._public)

    def __repr__(self) -> str:
        return f"PrivateKey(public={self._public.to_text()!r})"

    @classmethod
    def generate(cls) -> PrivateKey:
        """A fresh key from the operating system's (or the browser's) secure random source."""
        return cls(secrets.randbelow(N - 1) + 1)

    @classmethod
    def from_bytes(cls, data: bytes) -> PrivateKey:
        """From the raw 32-byte big-endian scalar."""
        if not isinstance(data, bytes | bytearray | memoryview) or len(data) != 32:
            raise ValueError("private key: expected the 32-byte scalar")
        return cls(int.from_bytes(bytes(data), "big"))

    @classmethod
    def from_text(cls, text: str) -> PrivateKey:
        """From :meth:`to_text` (surrounding whitespace, as a paste brings, is ignored).

        Every mistake gets its own ``ValueError``: not a key, a public key, another version, a
        damaged or cut-off text, a typo (checksum).
        """
        if not isinstance(text, str):
            raise TypeError(f"private key: expected str, got {type(text).__name__}")
        text = text.strip()
        if not text.startswith(PRIVATE_PREFIX):
            if text.startswith(_PRIVATE_PREFIX_FAMILY):
                version = text.split(".", 1)[0]
                raise ValueError(
                    f"private key: unsupported format {version!r} (this version reads {PRIVATE_PREFIX!r})"
                )
            if len(text) == 87 and text.startswith("B"):
                raise ValueError("private key: this looks like a public key, not a private key")
            raise ValueError(f"private key: not a Kibitz private key (it starts with {PRIVATE_PREFIX!r})")
        try:
            raw = b64url_decode(text[len(PRIVATE_PREFIX) :])
        except ValueError as exc:
            raise ValueError(f"private key: the text is damaged ({exc})") from None
        if len(raw) != 32 + _CHECK_BYTES:
            raise ValueError("private key: the text is cut off or too long")
        scalar, check = raw[:32], raw[32:]
        if not hmac.compare_digest(check, _checksum(scalar)):
            raise ValueError("private key: checksum mismatch (a typo or a damaged copy)")
        try:
            return cls.from_bytes(scalar)
        except ValueError:
            raise ValueError("private key: the scalar is out of range") from None

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> PrivateKey:
        """From a private JWK (``d``, ``x``, ``y``); ``x``/``y`` must match ``d``."""
        _check_jwk_header(jwk)
        key = cls(_coord(jwk.get("d"), "d"))
        has_xy = "x" in jwk or "y" in jwk
        if has_xy and PublicKey(_coord(jwk.get("x"), "x"), _coord(jwk.get("y"), "y")) != key._public:
            raise ValueError("private key: the JWK's x/y do not belong to its d")
        return key

    @property
    def public_key(self) -> PublicKey:
        return self._public

    def to_bytes(self) -> bytes:
        return self._d.to_bytes(32, "big")

    def to_text(self) -> str:
        scalar = self.to_bytes()
        return PRIVATE_PREFIX + b64url_encode(scalar + _checksum(scalar))

    def to_jwk(self) -> dict[str, str]:
        """The private JWK (``d`` included), e.g. for ``crypto.subtle.importKey('jwk', …)``."""
        return {**self._public.to_jwk(), "d": b64url_encode(self.to_bytes())}

    def sign(self, message: bytes) -> bytes:
        """Raw ``r‖s`` (64 bytes) over SHA-256(message), RFC 6979 nonce, ``s`` not normalised."""
        if not isinstance(message, bytes | bytearray | memoryview):
            raise TypeError(f"sign: expected bytes, got {type(message).__name__}")
        e = _digest_int(bytes(message))
        d = self._d
        for k in _rfc6979_nonces(d, e):
            r = _base_mul(k)[0] % N
            if r == 0:  # pragma: no cover - probability ~2^-256
                continue
            s = pow(k, -1, N) * (e + r * d) % N
            if s == 0:  # pragma: no cover - probability ~2^-256
                continue
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        raise AssertionError("unreachable")  # pragma: no cover


def _checksum(scalar: bytes) -> bytes:
    return hashlib.sha256(PRIVATE_PREFIX.encode("ascii") + scalar).digest()[:_CHECK_BYTES]
