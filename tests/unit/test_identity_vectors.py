"""The golden vectors of kibitz.identity (tests/vectors/identity.json) in CPython.

tests/vectors/identity_check.py is the very code the page runs under Pyodide; the checks here do not
trust kibitz at all: PyJWT with ``cryptography`` verifies the accepted tokens and refuses the others'
signatures the same way, hashlib recomputes the nonces and the safety-code digests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest

VECTORS_DIR = Path(__file__).resolve().parents[1] / "vectors"
sys.path.insert(0, str(VECTORS_DIR))

from identity_check import check_all  # noqa: E402

VECTORS: dict[str, Any] = json.loads((VECTORS_DIR / "identity.json").read_text(encoding="utf-8"))


def test_every_vector_passes_in_cpython() -> None:
    results = check_all(VECTORS)
    assert results.failed == []
    assert len(results.passed) >= 60


def test_original_nonce_vector_by_hashlib() -> None:
    case = VECTORS["nonce"][0]
    digest = hashlib.sha256(f"{case['fp'].strip().lower()}|room-salt".encode()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == case["nonce"]
    assert case["nonce"] == "jr1LLr5BsB5Y2nbZiWzrzU2SCJjNQu4GuhlOyN361zo"


def test_sas_digests_by_hashlib() -> None:
    for c in VECTORS["sas"]:
        a, b = sorted((c["a"].strip().lower(), c["b"].strip().lower()))
        digest = hashlib.sha256(f"{a}|{b}".encode()).digest()
        assert digest.hex() == c["digest"]
        assert [digest[i] & 31 for i in range(4)] == c["indexes"]


@pytest.mark.parametrize("case", VECTORS["jwt"]["cases"], ids=lambda c: c["name"])
def test_pyjwt_agrees_on_signatures(case: dict[str, Any]) -> None:
    """Where our verdict is about the signature or the algorithm, PyJWT (RS256 pinned) agrees; every
    token we accept has a signature PyJWT accepts."""
    j = VECTORS["jwt"]
    key = pyjwt.PyJWK(j["jwks"]["keys"][0]).key
    reason = case.get("reason")
    if reason not in (None, "bad-signature", "alg") or case["name"].startswith("alg none"):
        return
    try:
        pyjwt.decode(case["token"], key, algorithms=["RS256"], options={"verify_signature": True,
                     "verify_aud": False, "verify_exp": False, "verify_iat": False, "verify_nbf": False})
        accepted = True
    except pyjwt.InvalidTokenError:
        accepted = False
    assert accepted is (reason is None)
