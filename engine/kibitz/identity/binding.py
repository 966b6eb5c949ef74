"""Binding an identity to the call's own encryption keys: fingerprints, the sign-in nonce, safety codes.

A token proves an identity only for the DTLS certificate it was minted for. Sign-in asks the issuer
to put :func:`identity_nonce` in the token: ``b64url(SHA-256(lower(trim(fp)) + "|" + room))`` with the
room normalised as the broker id normalises it (:func:`kibitz.ids.normalize_room`), the original
engine's formula and golden vector. A peer that receives the token checks the nonce against the
fingerprint of the certificate on the link the token arrived on, taken from the live DTLS session
(never from SDP, which the signalling path could rewrite), so a token copied to another certificate
or another room proves nothing.

The safety code (:func:`safety_code`) is the original's SAS: SHA-256 over both fingerprints, sorted
and joined with ``|``; four symbols, each the low five bits of one digest byte indexing a 32-emoji
alphabet (20 bits). Both ends of a link compute the same four symbols from the same two
certificates; a machine in the middle holds different certificates on each side and so shows two
different codes.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from kibitz.crypto.b64 import b64url_encode
from kibitz.ids import normalize_room

FP_PATTERN = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){31}$")
"""A normalised SHA-256 fingerprint: 32 lower-case hex pairs joined by colons."""

SAS_ALPHABET: tuple[str, ...] = (
    "🐶", "🐱", "🦊", "🐻", "🐼", "🐨", "🐯", "🦁",
    "🐮", "🐷", "🐸", "🐵", "🐔", "🐧", "🦉", "🐙",
    "🦋", "🐢", "🐍", "🐳", "🦀", "🐝", "🌵", "🌻",
    "🍄", "🍎", "🍋", "🍇", "🥕", "🌙", "⭐", "🔥",
)
"""32 symbols that are easy to tell apart and to say out loud (animal, plant, food, sky)."""
SAS_NAMES: tuple[str, ...] = (
    "dog", "cat", "fox", "bear", "panda", "koala", "tiger", "lion",
    "cow", "pig", "frog", "monkey", "chicken", "penguin", "owl", "octopus",
    "butterfly", "turtle", "snake", "whale", "crab", "bee", "cactus", "sunflower",
    "mushroom", "apple", "lemon", "grapes", "carrot", "moon", "star", "fire",
)
SAS_SYMBOLS = 4


def normalize_fingerprint(fp: str) -> str:
    """``fp`` trimmed and lower-cased, as the nonce and the safety code use it; ``ValueError`` unless
    it is a SHA-256 fingerprint in colon-hex form (an ``sha-256 `` prefix is allowed)."""
    if not isinstance(fp, str):
        raise ValueError("a fingerprint is text")
    text = fp.strip().lower()
    if text.startswith("sha-256 "):
        text = text[len("sha-256 ") :].strip()
    if not FP_PATTERN.match(text):
        raise ValueError("a certificate fingerprint is SHA-256 as 32 colon-separated hex pairs")
    return text


def fingerprint_of_der(der: bytes) -> str:
    """Colon-hex SHA-256 of a DER certificate, as ``getRemoteCertificates()`` gives it (lower case)."""
    digest = hashlib.sha256(bytes(der)).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 64, 2))


SALT_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
"""A per-sign-in salt: 16 to 64 characters of the base64url alphabet (which has no ``.``)."""


def identity_nonce(fp: str, room: str, salt: str | None = None) -> str:
    """The sign-in nonce that binds a token to certificate ``fp`` in ``room`` (the original's formula:
    ``fp`` is only trimmed and lower-cased, not validated, so its golden vector holds as is).

    With ``salt`` (fresh for each sign-in, for issuers that refuse a nonce they have seen before):
    ``salt + "." + b64url(SHA-256(fp + "|" + room + "|" + salt))``. The salt travels in the nonce
    itself, so a verifier needs nothing beside the token (:func:`nonce_binds`)."""
    text = fp.strip().lower() + "|" + normalize_room(room)
    if salt is None:
        return b64url_encode(hashlib.sha256(text.encode("utf-8")).digest())
    if not isinstance(salt, str) or not SALT_PATTERN.match(salt):
        raise ValueError("a nonce salt is 16 to 64 characters of A-Z a-z 0-9 _ -")
    digest = hashlib.sha256(f"{text}|{salt}".encode()).digest()
    return f"{salt}.{b64url_encode(digest)}"


def nonce_binds(nonce: object, fp: str, room: str) -> bool:
    """Whether a token's ``nonce`` claim was made for certificate ``fp`` in ``room``: the plain
    nonce, or a salted one (``salt.hash``) whose hash matches its own salt."""
    if not isinstance(nonce, str):
        return False
    salt, dot, _ = nonce.partition(".")
    if not dot:
        return hmac.compare_digest(nonce.encode(), identity_nonce(fp, room).encode())
    if not SALT_PATTERN.match(salt):
        return False
    return hmac.compare_digest(nonce.encode(), identity_nonce(fp, room, salt).encode())


def safety_code_digest(fp_a: str, fp_b: str) -> bytes:
    a, b = sorted((normalize_fingerprint(fp_a), normalize_fingerprint(fp_b)))
    return hashlib.sha256(f"{a}|{b}".encode("ascii")).digest()


def safety_code(fp_a: str, fp_b: str) -> str:
    """Four emoji from both ends' certificate fingerprints; the same whichever end computes it."""
    digest = safety_code_digest(fp_a, fp_b)
    return "".join(SAS_ALPHABET[digest[i] & 31] for i in range(SAS_SYMBOLS))


def safety_words(fp_a: str, fp_b: str) -> tuple[str, ...]:
    """The safety code's symbols by name (for screen readers and for reading out)."""
    digest = safety_code_digest(fp_a, fp_b)
    return tuple(SAS_NAMES[digest[i] & 31] for i in range(SAS_SYMBOLS))


__all__ = [
    "SAS_ALPHABET",
    "SAS_NAMES",
    "fingerprint_of_der",
    "identity_nonce",
    "normalize_fingerprint",
    "safety_code",
    "safety_words",
]
