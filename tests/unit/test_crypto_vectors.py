"""The golden vectors of kibitz.crypto (tests/vectors/crypto.json) in CPython.

Two kinds of check: tests/vectors/crypto_check.py, the very code the page runs under Pyodide
(tests/e2e/test_crypto_page.py), and independent ones here that do not trust kibitz.crypto at all:
every signature in the file verified by ``cryptography``, every public key derived by it, every
sealed blob opened with ``hashlib`` + ``cryptography`` by the format's definition, every code key
recomputed with ``hashlib``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kibitz.crypto.backends import CPythonCrypto

VECTORS_DIR = Path(__file__).resolve().parents[1] / "vectors"
sys.path.insert(0, str(VECTORS_DIR))

from crypto_check import check_all  # noqa: E402

VECTORS: dict[str, Any] = json.loads((VECTORS_DIR / "crypto.json").read_text(encoding="utf-8"))


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def crypto_verify(x: int, y: int, signature: bytes, message: bytes) -> bool:
    """``cryptography``'s verdict on a raw r‖s signature (OpenSSL, not our code)."""
    if len(signature) != 64:
        return False
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    pub = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    try:
        pub.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def point(public_text: str) -> tuple[int, int]:
    raw = b64d(public_text)
    assert len(raw) == 65 and raw[0] == 4
    return int.from_bytes(raw[1:33], "big"), int.from_bytes(raw[33:], "big")


async def test_every_golden_vector_passes_in_cpython() -> None:
    results = await check_all(VECTORS, CPythonCrypto())
    assert results.failed == []
    assert len(results.passed) >= 200


def test_rfc6979_vectors_are_the_rfcs_and_verify_with_cryptography() -> None:
    sample, test = VECTORS["p256"]["rfc6979"]
    # The RFC's own numbers, typed here a second time so an edit of the file cannot slip through.
    assert sample["r"] + sample["s"] == (
        "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716"
        "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8"
    )
    assert test["k"] == "D16B6AE827F17175E040871A1C7EC3500192C4C92677336EC2537ACAEE0008E0"
    for v in (sample, test):
        key = ec.derive_private_key(int(v["d"], 16), ec.SECP256R1())
        nums = key.public_key().public_numbers()
        assert (nums.x, nums.y) == (int(v["qx"], 16), int(v["qy"], 16))
        assert crypto_verify(nums.x, nums.y, bytes.fromhex(v["r"] + v["s"]), v["message"].encode())


def test_key_vectors_agree_with_cryptography() -> None:
    for v in VECTORS["p256"]["keys"]:
        nums = ec.derive_private_key(int(v["scalar"], 16), ec.SECP256R1()).public_key().public_numbers()
        assert point(v["public_text"]) == (nums.x, nums.y)
        assert b64d(v["jwk"]["x"]) == nums.x.to_bytes(32, "big")
        assert b64d(v["jwk"]["y"]) == nums.y.to_bytes(32, "big")
        canonical = json.dumps({k: v["jwk"][k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
        assert (
            base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
            == (v["thumbprint"])
        )
        # The text form: prefix, scalar, 4 bytes of SHA-256("kbzk1." + scalar).
        assert v["private_text"].startswith("kbzk1.")
        raw = b64d(v["private_text"][6:])
        assert raw[:32].hex() == v["scalar"]
        assert raw[32:] == hashlib.sha256(b"kbzk1." + raw[:32]).digest()[:4]


def test_signature_vectors_agree_with_cryptography() -> None:
    for v in VECTORS["p256"]["signatures"]:
        x, y = point(v["public_text"])
        verdict = crypto_verify(x, y, bytes.fromhex(v["signature_hex"]), bytes.fromhex(v["message_hex"]))
        assert verdict is v["valid"], v["case"]


@pytest.mark.parametrize("section", ["signed", "webcrypto"])
def test_token_signatures_verify_with_cryptography(section: str) -> None:
    tokens = VECTORS["tokens"]
    for v in tokens[section]:
        x, y = (b64i(v["jwk"]["x"]), b64i(v["jwk"]["y"])) if "jwk" in v else point(tokens["public_text"])
        body, sig = v["token"].split(".")
        assert crypto_verify(x, y, b64d(sig), body.encode("ascii"))
        assert json.loads(b64d(body)) == v["payload"]


def b64i(text: str) -> int:
    return int.from_bytes(b64d(text), "big")


def open_blob(passphrase: str, blob: str) -> bytes:
    """The format's definition, written out with hashlib + cryptography only."""
    raw = b64d(blob)
    assert raw[0] == 1
    salt, iv, sealed = raw[1:17], raw[17:29], raw[29:]
    key = hashlib.pbkdf2_hmac("sha256", unicodedata.normalize("NFKC", passphrase).encode(), salt, 210_000, 32)
    return AESGCM(key).decrypt(iv, sealed, None)


def test_sealed_blobs_open_by_the_formats_definition() -> None:
    seal = VECTORS["seal"]
    for v in seal["sealed"]:
        raw = b64d(v["blob"])
        assert raw[1:17].hex() == v["salt_hex"] and raw[17:29].hex() == v["iv_hex"]
        assert open_blob(v["passphrase"], v["blob"]).hex() == v["plaintext_hex"]
    for v in seal["same"]:
        assert open_blob(v["passphrase"], v["blob"]).hex() == v["plaintext_hex"]


def test_code_keys_are_pbkdf2_of_the_normalised_code() -> None:
    for v in VECTORS["seal"]["codes"]:
        code = unicodedata.normalize("NFKC", v["code"].strip()).encode()
        key = hashlib.pbkdf2_hmac("sha256", code, bytes.fromhex(v["salt_hex"]), 210_000, 32)
        assert key.hex() == v["key_hex"]
        digest = base64.urlsafe_b64encode(hashlib.sha256(key).digest()).rstrip(b"=").decode()
        assert digest == v["verifier"]
