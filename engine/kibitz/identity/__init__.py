"""Verified identity, bound to the call's own DTLS certificates. Pure policy, no I/O.

- :mod:`~kibitz.identity.rsa` — RSASSA-PKCS1-v1_5/SHA-256 verification in pure Python.
- :mod:`~kibitz.identity.jwt` — RS256 JWTs: pinned algorithm, key by ``kid``, claims with leeway.
- :mod:`~kibitz.identity.binding` — fingerprints, the sign-in nonce, the safety code (SAS).
- :mod:`~kibitz.identity.policy` — providers, ``verifyIdentity``, allow lists, :func:`verify_identity`.
- :mod:`~kibitz.identity.keys` — issuers' key sets, fetched through a seam and cached.
- :mod:`~kibitz.identity.agents` — agent key assertions and agent credits.
- :mod:`~kibitz.identity.door` — the coordinator's identity check before rostering.
- :mod:`~kibitz.identity.roster` — the verified roster (``canShare``, ``compromised``).

The same golden vectors (tests/vectors/identity.json) pass in CPython and in the page.
"""

from kibitz.identity.binding import (
    fingerprint_of_der,
    identity_nonce,
    nonce_binds,
    normalize_fingerprint,
    safety_code,
    safety_words,
)
from kibitz.identity.policy import (
    IDENTITY_REFUSALS,
    Identity,
    IdentityConfig,
    IdentityConfigError,
    IdentityRefusal,
    Provider,
    verify_identity,
)
from kibitz.identity.rsa import RsaPublicKey

__all__ = [
    "IDENTITY_REFUSALS",
    "Identity",
    "IdentityConfig",
    "IdentityConfigError",
    "IdentityRefusal",
    "Provider",
    "RsaPublicKey",
    "fingerprint_of_der",
    "identity_nonce",
    "nonce_binds",
    "normalize_fingerprint",
    "safety_code",
    "safety_words",
    "verify_identity",
]
