"""Checks kibitz.crypto against the golden vectors in crypto.json, case by case.

The same function runs in CPython (tests/unit/test_crypto_vectors.py) and in the page under
Pyodide (tests/e2e/test_crypto_page.py sends this file's text into the page and runs it there),
so it uses only the standard library and kibitz.crypto. Sealing goes through whatever backend the
caller passes: ``hashlib`` + ``cryptography`` in CPython, WebCrypto in the page.
"""

from __future__ import annotations

from typing import Any

from kibitz.crypto import (
    CryptoBackend,
    PrivateKey,
    PublicKey,
    Refusal,
    SealError,
    b64url_decode,
    b64url_encode,
    code_verifier,
    constant_time_equal,
    derive_code_key,
    seal,
    sign_token,
    unseal,
    verify_token,
)
from kibitz.crypto.p256 import rfc6979_nonce


def expand(value: Any) -> Any:
    """``{"repeat": text, "times": n}`` stands for ``text * n`` in the file."""
    if isinstance(value, dict) and set(value) == {"repeat", "times"}:
        return value["repeat"] * value["times"]
    return value


class Results:
    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[str] = []

    def check(self, case: str, ok: bool, detail: str = "") -> None:
        (self.passed if ok else self.failed).append(case if ok else f"{case}: {detail}")

    def raises(self, case: str, fn: Any, needle: str) -> None:
        try:
            fn()
        except ValueError as exc:
            self.check(case, needle in str(exc), f"error {str(exc)!r} does not mention {needle!r}")
        except Exception as exc:
            self.check(case, False, f"raised {type(exc).__name__}: {exc}")
        else:
            self.check(case, False, "did not raise")


def check_b64(v: dict[str, Any], out: Results) -> None:
    for i, c in enumerate(v["valid"]):
        raw = bytes.fromhex(c["hex"])
        out.check(f"b64.valid[{i}].encode", b64url_encode(raw) == c["text"], b64url_encode(raw))
        out.check(f"b64.valid[{i}].decode", b64url_decode(c["text"]) == raw)
    for i, c in enumerate(v["invalid"]):
        out.raises(f"b64.invalid[{i}] {c['text']!r}", lambda c=c: b64url_decode(c["text"]), c["error"])


def check_p256(v: dict[str, Any], out: Results) -> None:
    for c in v["rfc6979"]:
        case = f"p256.rfc6979[{c['message']}]"
        d = int(c["d"], 16)
        key = PrivateKey(d)
        pub = key.public_key
        out.check(case + ".public", (pub.x, pub.y) == (int(c["qx"], 16), int(c["qy"], 16)))
        out.check(case + ".k", rfc6979_nonce(d, c["message"].encode()) == int(c["k"], 16))
        sig = key.sign(c["message"].encode())
        out.check(case + ".signature", sig.hex().upper() == c["r"] + c["s"], sig.hex())
        out.check(case + ".verify", pub.verify(sig, c["message"].encode()))
    for i, c in enumerate(v["keys"]):
        case = f"p256.keys[{i}]"
        key = PrivateKey.from_bytes(bytes.fromhex(c["scalar"]))
        pub = key.public_key
        out.check(case + ".private_text", key.to_text() == c["private_text"], key.to_text())
        out.check(case + ".from_text", PrivateKey.from_text(c["private_text"]) == key)
        out.check(case + ".from_text(pasted)", PrivateKey.from_text("  " + c["private_text"] + "\n") == key)
        out.check(case + ".public_text", pub.to_text() == c["public_text"], pub.to_text())
        out.check(case + ".public_from_text", PublicKey.from_text(c["public_text"]) == pub)
        out.check(case + ".jwk", pub.to_jwk() == c["jwk"], repr(pub.to_jwk()))
        out.check(case + ".from_jwk", PublicKey.from_jwk(c["jwk"]) == pub)
        out.check(case + ".private_jwk", PrivateKey.from_jwk(key.to_jwk()) == key)
        out.check(case + ".thumbprint", pub.thumbprint() == c["thumbprint"], pub.thumbprint())
        out.check(
            case + ".repr_hides_secret", c["private_text"] not in repr(key) and c["scalar"] not in repr(key)
        )
    for i, c in enumerate(v["signatures"]):
        pub = PublicKey.from_text(c["public_text"])
        ok = pub.verify(bytes.fromhex(c["signature_hex"]), bytes.fromhex(c["message_hex"]))
        out.check(f"p256.signatures[{i}] {c['case']}", ok is c["valid"], f"verify gave {ok}")
    for i, c in enumerate(v["bad_private_texts"]):
        out.raises(f"p256.bad_private[{i}]", lambda c=c: PrivateKey.from_text(c["text"]), c["error"])
    for i, c in enumerate(v["bad_public_texts"]):
        out.raises(f"p256.bad_public[{i}]", lambda c=c: PublicKey.from_text(c["text"]), c["error"])
    for i, c in enumerate(v["bad_jwks"]):
        out.raises(f"p256.bad_jwk[{i}]", lambda c=c: PublicKey.from_jwk(c["jwk"]), c["error"])


def check_tokens(v: dict[str, Any], out: Results) -> None:
    key = PrivateKey.from_text(v["private_text"])
    pub = PublicKey.from_text(v["public_text"])
    out.check("tokens.key", key.public_key == pub)
    for i, c in enumerate(v["signed"]):
        token = sign_token(key, c["payload"])
        out.check(f"tokens.signed[{i}].sign", token == c["token"], token)
        got = verify_token(pub, c["token"])
        out.check(f"tokens.signed[{i}].verify", got == c["payload"], repr(got))
    for i, c in enumerate(v["refused"]):
        kwargs = {"max_chars": c["max_chars"]} if "max_chars" in c else {}
        got = verify_token(pub, expand(c["token"]), **kwargs)
        ok = isinstance(got, Refusal) and got.reason == c["reason"]
        out.check(f"tokens.refused[{i}] {c['case']}", ok, f"expected {c['reason']}, got {got!r}")
    for i, c in enumerate(v["webcrypto"]):
        wpub = PublicKey.from_jwk(c["jwk"])
        got = verify_token(wpub, c["token"])
        out.check(f"tokens.webcrypto[{i}]", got == c["payload"], repr(got))
        other = verify_token(pub, c["token"])
        out.check(
            f"tokens.webcrypto[{i}].other_key", isinstance(other, Refusal) and other.reason == "bad-signature"
        )


async def _unseal_or_none(passphrase: str, blob: str, backend: CryptoBackend) -> bytes | str:
    try:
        return await unseal(passphrase, blob, backend=backend)
    except SealError as exc:
        return f"SealError({exc.reason}: {exc})"


async def check_seal(v: dict[str, Any], backend: CryptoBackend, out: Results) -> None:
    for i, c in enumerate(v["sealed"]):
        plaintext = bytes.fromhex(c["plaintext_hex"])
        blob = await seal(
            c["passphrase"],
            plaintext,
            backend=backend,
            salt=bytes.fromhex(c["salt_hex"]),
            iv=bytes.fromhex(c["iv_hex"]),
        )
        out.check(f"seal.sealed[{i}].seal", blob == c["blob"], blob)
        opened = await _unseal_or_none(c["passphrase"], c["blob"], backend)
        out.check(f"seal.sealed[{i}].unseal", opened == plaintext, repr(opened))
    for i, c in enumerate(v["same"]):
        opened = await _unseal_or_none(c["passphrase"], c["blob"], backend)
        out.check(f"seal.same[{i}] {c['case']}", opened == bytes.fromhex(c["plaintext_hex"]), repr(opened))
    for i, c in enumerate(v["refused"]):
        case = f"seal.refused[{i}] {c['case']}"
        try:
            await unseal(c["passphrase"], expand(c["blob"]), backend=backend)
        except SealError as exc:
            out.check(case, exc.reason == c["reason"], f"expected {c['reason']}, got {exc.reason}: {exc}")
        except Exception as exc:
            out.check(case, False, f"raised {type(exc).__name__}: {exc}")
        else:
            out.check(case, False, "opened")
    for i, c in enumerate(v["codes"]):
        salt = bytes.fromhex(c["salt_hex"])
        key = await derive_code_key(c["code"], salt, backend=backend)
        out.check(f"seal.codes[{i}].key", key.hex() == c["key_hex"], key.hex())
        typed = await derive_code_key(c["typed"], salt, backend=backend)
        out.check(f"seal.codes[{i}].typed", typed == key, typed.hex())
        out.check(f"seal.codes[{i}].verifier", code_verifier(key) == c["verifier"], code_verifier(key))
        out.check(f"seal.codes[{i}].compare", constant_time_equal(code_verifier(typed), c["verifier"]))
        wrong = await derive_code_key(c["code"] + "x", salt, backend=backend)
        out.check(f"seal.codes[{i}].wrong", not constant_time_equal(code_verifier(wrong), c["verifier"]))


async def check_all(vectors: dict[str, Any], backend: CryptoBackend) -> Results:
    out = Results()
    check_b64(vectors["b64url"], out)
    check_p256(vectors["p256"], out)
    check_tokens(vectors["tokens"], out)
    await check_seal(vectors["seal"], backend, out)
    return out
