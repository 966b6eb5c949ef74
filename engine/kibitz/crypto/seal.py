"""Passphrase sealing (as the original's ``ghk``/``ge``) and slow hashes for "code" join gates.

Blob, version 1: ``b64url(ver ‖ salt ‖ iv ‖ ciphertext ‖ tag)`` with ``ver = 0x01``, a 16-byte
salt, a 12-byte IV and AES-256-GCM's 16-byte tag; the key is PBKDF2-HMAC-SHA256 over the
NFKC-normalised passphrase (UTF-8) with 210 000 iterations. The version byte pins every parameter:
a blob cannot ask for fewer iterations.

The format lives here; the primitives (PBKDF2, AES-GCM) come through :class:`CryptoBackend`, an
async seam with two implementations in :mod:`kibitz.crypto.backends`: CPython (``hashlib`` +
``cryptography``) and the page (WebCrypto, because Pyodide has neither ``hashlib.pbkdf2_hmac`` nor
``cryptography``). :func:`default_backend` picks the right one.

Honest limit: whoever holds a blob can try passphrases offline; 210 000 iterations make each guess
cost ~50 ms of one core (far less on a GPU), which stops nothing against a short or common passphrase.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sys
import unicodedata
from typing import Literal, Protocol

from kibitz.crypto.b64 import b64url_decode, b64url_encode

SEAL_VERSION = 1
ITERATIONS = 210_000
SALT_BYTES = 16
IV_BYTES = 12
KEY_BYTES = 32
TAG_BYTES = 16
MAX_BLOB_CHARS = 65_536
_HEADER = 1 + SALT_BYTES + IV_BYTES

SealReason = Literal["malformed", "oversize", "version", "wrong-passphrase", "empty-passphrase"]


class SealError(ValueError):
    """Sealing or unsealing failed; ``reason`` is one stable word, the message says more."""

    def __init__(self, reason: SealReason, message: str) -> None:
        super().__init__(message)
        self.reason: SealReason = reason


class CryptoBackend(Protocol):
    """The primitives sealing needs, async because WebCrypto is.

    ``aes_gcm_decrypt`` raises (any exception) when the tag does not verify.
    """

    async def pbkdf2_sha256(self, password: bytes, salt: bytes, iterations: int) -> bytes:
        """32 bytes of PBKDF2-HMAC-SHA256."""
        ...

    async def aes_gcm_encrypt(self, key: bytes, iv: bytes, plaintext: bytes) -> bytes:
        """AES-GCM (128-bit tag, no associated data): ciphertext ‖ tag."""
        ...

    async def aes_gcm_decrypt(self, key: bytes, iv: bytes, sealed: bytes) -> bytes:
        """The plaintext of ciphertext ‖ tag; raises if the tag does not verify."""
        ...


def default_backend() -> CryptoBackend:
    """WebCrypto in the page (Pyodide), ``hashlib`` + ``cryptography`` elsewhere."""
    from kibitz.crypto.backends import CPythonCrypto, WebCrypto

    return WebCrypto() if sys.platform == "emscripten" else CPythonCrypto()


def _secret_bytes(text: str, what: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be str, got {type(text).__name__}")
    normal = unicodedata.normalize("NFKC", text)
    if not normal:
        raise SealError("empty-passphrase", f"the {what} is empty")
    try:
        return normal.encode("utf-8")
    except UnicodeEncodeError:
        raise SealError("malformed", f"the {what} holds a lone surrogate") from None


async def seal(
    passphrase: str,
    plaintext: bytes,
    *,
    backend: CryptoBackend | None = None,
    salt: bytes | None = None,
    iv: bytes | None = None,
) -> str:
    """``plaintext`` sealed under ``passphrase`` (version-1 blob, base64url).

    ``salt`` and ``iv`` are fresh random bytes unless given (only golden vectors give them: an IV
    must never repeat under one key).
    """
    if not isinstance(plaintext, bytes | bytearray | memoryview):
        raise TypeError(f"plaintext must be bytes, got {type(plaintext).__name__}")
    password = _secret_bytes(passphrase, "passphrase")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else bytes(salt)
    iv = secrets.token_bytes(IV_BYTES) if iv is None else bytes(iv)
    if len(salt) != SALT_BYTES or len(iv) != IV_BYTES:
        raise ValueError(f"salt must be {SALT_BYTES} bytes and iv {IV_BYTES} bytes")
    backend = backend or default_backend()
    key = await backend.pbkdf2_sha256(password, salt, ITERATIONS)
    sealed = await backend.aes_gcm_encrypt(key, iv, bytes(plaintext))
    if len(sealed) != len(plaintext) + TAG_BYTES:  # pragma: no cover - a broken backend
        raise RuntimeError("the AES-GCM backend returned the wrong length")
    blob = b64url_encode(bytes([SEAL_VERSION]) + salt + iv + sealed)
    if len(blob) > MAX_BLOB_CHARS:
        raise ValueError(f"the sealed blob would be {len(blob)} characters, over {MAX_BLOB_CHARS}")
    return blob


async def unseal(
    passphrase: str,
    blob: str,
    *,
    backend: CryptoBackend | None = None,
    max_chars: int = MAX_BLOB_CHARS,
) -> bytes:
    """The plaintext sealed in ``blob``; :class:`SealError` for anything else (a wrong passphrase
    and a tampered blob look the same: GCM cannot tell them apart)."""
    if not isinstance(blob, str):
        raise SealError("malformed", f"a sealed blob is text, got {type(blob).__name__}")
    if len(blob) > max_chars:
        raise SealError("oversize", f"the sealed blob is {len(blob)} characters, over {max_chars}")
    try:
        raw = b64url_decode(blob)
    except ValueError as exc:
        raise SealError("malformed", f"the sealed blob is damaged ({exc})") from None
    if not raw:
        raise SealError("malformed", "the sealed blob is empty")
    if raw[0] != SEAL_VERSION:
        raise SealError("version", f"sealed blob version {raw[0]} is not supported (this engine reads 1)")
    if len(raw) < _HEADER + TAG_BYTES:
        raise SealError("malformed", "the sealed blob is cut off")
    password = _secret_bytes(passphrase, "passphrase")
    salt, iv, sealed = raw[1 : 1 + SALT_BYTES], raw[1 + SALT_BYTES : _HEADER], raw[_HEADER:]
    backend = backend or default_backend()
    key = await backend.pbkdf2_sha256(password, salt, ITERATIONS)
    try:
        return bytes(await backend.aes_gcm_decrypt(key, iv, sealed))
    except Exception:
        raise SealError("wrong-passphrase", "wrong passphrase, or the sealed blob was altered") from None


# --- "code" join gates ---------------------------------------------------------------------------

CODE_SALT_BYTES = 16


def new_code_salt() -> bytes:
    """Fresh random salt for :func:`derive_code_key` (16 bytes)."""
    return secrets.token_bytes(CODE_SALT_BYTES)


async def derive_code_key(code: str, salt: bytes, *, backend: CryptoBackend | None = None) -> bytes:
    """32 bytes of PBKDF2-HMAC-SHA256 (210 000 iterations) over the NFKC-normalised ``code``, with
    surrounding whitespace dropped (a pasted code often brings a newline). ``salt``: 16 to 64
    bytes, random per room (:func:`new_code_salt`), so one table of guesses cannot serve every room."""
    if not isinstance(salt, bytes | bytearray | memoryview) or not CODE_SALT_BYTES <= len(salt) <= 64:
        raise ValueError(f"the code salt must be {CODE_SALT_BYTES} to 64 bytes")
    if not isinstance(code, str):
        raise TypeError(f"code must be str, got {type(code).__name__}")
    password = _secret_bytes(code.strip(), "code")
    backend = backend or default_backend()
    return await backend.pbkdf2_sha256(password, bytes(salt), ITERATIONS)


def code_verifier(key: bytes) -> str:
    """What a link may publish about a code: b64url(SHA-256(derived key)), 43 characters.

    A checker holding only the verifier compares ``code_verifier(presented key)`` with it through
    :func:`constant_time_equal`. The verifier does not reveal the key, but whoever holds it can
    guess codes offline at PBKDF2's cost per guess: a short code is no secret from them."""
    if not isinstance(key, bytes | bytearray | memoryview) or len(key) != KEY_BYTES:
        raise ValueError(f"a code key is {KEY_BYTES} bytes")
    return b64url_encode(hashlib.sha256(bytes(key)).digest())


def constant_time_equal(a: str | bytes, b: str | bytes) -> bool:
    """``a == b`` in time that depends only on the lengths (``hmac.compare_digest``); text is
    compared as UTF-8. Mixed or other types are simply unequal."""
    if isinstance(a, str) and isinstance(b, str):
        try:
            return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
        except UnicodeEncodeError:
            return False
    if isinstance(a, bytes | bytearray) and isinstance(b, bytes | bytearray):
        return hmac.compare_digest(bytes(a), bytes(b))
    return False
