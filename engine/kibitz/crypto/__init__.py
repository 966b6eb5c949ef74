"""Crypto primitives for signed host commands, invites and sealed keys; pure Python in the page path.

- :mod:`~kibitz.crypto.b64`: strict base64url without padding.
- :mod:`~kibitz.crypto.p256`: ECDSA P-256/SHA-256 keys, RFC 6979 signing, raw ``r‖s`` signatures.
- :mod:`~kibitz.crypto.tokens`: the original's compact token ``b64url(JSON).b64url(sig)``.
- :mod:`~kibitz.crypto.seal`: PBKDF2 + AES-GCM passphrase sealing and code-gate hashes, through an
  async backend seam (:mod:`~kibitz.crypto.backends`: CPython or WebCrypto).

Nothing here imports a third-party package at module level, so it all imports under Pyodide.
The same golden vectors (tests/vectors/crypto.json) pass in CPython and in the page.
"""

from kibitz.crypto.b64 import b64url_decode, b64url_encode
from kibitz.crypto.p256 import PrivateKey, PublicKey
from kibitz.crypto.seal import (
    CryptoBackend,
    SealError,
    code_verifier,
    constant_time_equal,
    default_backend,
    derive_code_key,
    new_code_salt,
    seal,
    unseal,
)
from kibitz.crypto.tokens import REFUSAL_REASONS, Refusal, sign_token, verify_token

__all__ = [
    "REFUSAL_REASONS",
    "CryptoBackend",
    "PrivateKey",
    "PublicKey",
    "Refusal",
    "SealError",
    "b64url_decode",
    "b64url_encode",
    "code_verifier",
    "constant_time_equal",
    "default_backend",
    "derive_code_key",
    "new_code_salt",
    "seal",
    "sign_token",
    "unseal",
    "verify_token",
]
