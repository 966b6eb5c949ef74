"""kibitz.crypto in CPython: our P-256 against ``cryptography`` both ways, strict base64url, tokens
and sealing at their edges. The fixed cases live in tests/vectors/crypto.json (test_crypto_vectors.py);
this file adds properties over random keys, messages and inputs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kibitz.crypto import (
    REFUSAL_REASONS,
    PrivateKey,
    PublicKey,
    Refusal,
    SealError,
    b64url_decode,
    b64url_encode,
    code_verifier,
    constant_time_equal,
    default_backend,
    derive_code_key,
    new_code_salt,
    seal,
    sign_token,
    unseal,
    verify_token,
)
from kibitz.crypto.backends import CPythonCrypto, WebCrypto
from kibitz.crypto.p256 import GX, GY, N, P
from kibitz.crypto.tokens import MAX_DEPTH

scalars = st.integers(min_value=1, max_value=N - 1)
messages = st.binary(max_size=300)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ours_to_der(sig: bytes) -> bytes:
    return encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))


def der_to_raw(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


# --- b64url ------------------------------------------------------------------------------------


@given(st.binary(max_size=200))
def test_b64url_round_trips_without_padding(data: bytes) -> None:
    text = b64url_encode(data)
    assert "=" not in text and b64url_decode(text) == data


@given(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ \n.", max_size=40)
)
def test_b64url_decode_accepts_only_the_canonical_spelling(text: str) -> None:
    try:
        data = b64url_decode(text)
    except ValueError as exc:
        assert str(exc).startswith("b64url: ")
    else:
        assert b64url_encode(data) == text  # one text per byte string


def test_b64url_decode_rejects_non_text() -> None:
    with pytest.raises(TypeError):
        b64url_decode(b"AAAA")  # type: ignore[arg-type]


# --- P-256 against cryptography ------------------------------------------------------------------


@FAST
@given(scalars, messages)
def test_our_signatures_verify_with_cryptography_and_match_its_rfc6979(d: int, message: bytes) -> None:
    ours = PrivateKey(d)
    theirs = ec.derive_private_key(d, ec.SECP256R1())
    nums = theirs.public_key().public_numbers()
    assert (ours.public_key.x, ours.public_key.y) == (nums.x, nums.y)
    sig = ours.sign(message)
    theirs.public_key().verify(ours_to_der(sig), message, ec.ECDSA(hashes.SHA256()))
    # cryptography implements RFC 6979 too: the same nonce, so the very same signature.
    deterministic = theirs.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    assert der_to_raw(deterministic) == sig


@FAST
@given(scalars, messages)
def test_cryptography_signatures_verify_with_ours(d: int, message: bytes) -> None:
    theirs = ec.derive_private_key(d, ec.SECP256R1())
    sig = der_to_raw(theirs.sign(message, ec.ECDSA(hashes.SHA256())))  # random nonce, any s
    pub = PrivateKey(d).public_key
    assert pub.verify(sig, message)
    assert not pub.verify(sig, message + b"\x00")
    assert not PrivateKey(d % (N - 1) + 1).public_key.verify(sig, message)


@FAST
@given(scalars, messages, st.integers(min_value=0, max_value=64 * 8 - 1), st.data())
def test_any_flipped_bit_is_rejected(d: int, message: bytes, bit: int, data: st.DataObject) -> None:
    key = PrivateKey(d)
    sig = bytearray(key.sign(message))
    sig[bit // 8] ^= 1 << (bit % 8)
    assert not key.public_key.verify(bytes(sig), message)
    if message:
        m_bit = data.draw(st.integers(min_value=0, max_value=len(message) * 8 - 1))
        altered = bytearray(message)
        altered[m_bit // 8] ^= 1 << (m_bit % 8)
        assert not key.public_key.verify(key.sign(message), bytes(altered))


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.binary(max_size=80), st.none(), st.text(max_size=64), st.integers()), st.binary(max_size=20)
)
def test_verify_never_raises_on_garbage(signature: Any, message: bytes) -> None:
    pub = PrivateKey(7).public_key
    assert pub.verify(signature, message) is False
    assert pub.verify(PrivateKey(7).sign(message), None) is False  # type: ignore[arg-type]


def test_verify_checks_r_and_s_ranges_with_cryptography_agreeing() -> None:
    key = PrivateKey(12345)
    sig = key.sign(b"m")
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    # (r, n - s) is the same signature's other valid form: accepted by both (no low-S rule).
    high = r.to_bytes(32, "big") + (N - s).to_bytes(32, "big")
    assert key.public_key.verify(high, b"m")
    theirs = ec.derive_private_key(12345, ec.SECP256R1()).public_key()
    theirs.verify(ours_to_der(high), b"m", ec.ECDSA(hashes.SHA256()))
    for bad_r, bad_s in ((0, s), (r, 0), (N, s), (r, N), (r + N if r + N < 2**256 else 2**256 - 1, s)):
        raw = bad_r.to_bytes(32, "big") + bad_s.to_bytes(32, "big")
        assert not key.public_key.verify(raw, b"m")
        with pytest.raises((InvalidSignature, ValueError)):
            theirs.verify(encode_dss_signature(bad_r, bad_s), b"m", ec.ECDSA(hashes.SHA256()))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=65, max_size=65))
def test_public_keys_off_the_curve_are_refused(raw: bytes) -> None:
    raw = b"\x04" + raw[1:]
    try:
        key = PublicKey.from_bytes(raw)
    except ValueError:
        x, y = int.from_bytes(raw[1:33], "big"), int.from_bytes(raw[33:], "big")
        with pytest.raises(ValueError):
            ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    else:  # pragma: no cover - a random point is on the curve with probability ~2^-256
        assert key.to_bytes() == raw


def test_the_point_at_infinity_and_out_of_field_coordinates_are_refused() -> None:
    for x, y in ((0, 0), (GX, GY + P), (GX + P, GY), (GX, P - GY + P)):
        with pytest.raises(ValueError):
            PublicKey(x, y)
    with pytest.raises(ValueError, match="expected 65 bytes"):
        PublicKey.from_bytes(b"\x00")


def test_private_keys_generate_fresh_and_never_show_the_secret() -> None:
    keys = {PrivateKey.generate().to_text() for _ in range(8)}
    assert len(keys) == 8
    key = PrivateKey.generate()
    assert key.to_text() not in repr(key) and key.to_text() not in str(key)
    assert key.to_bytes().hex() not in repr(key) and str(key.to_bytes()) not in repr(key)
    assert PrivateKey.from_text(key.to_text()) == key
    assert PrivateKey.from_jwk(key.to_jwk()) == key
    with pytest.raises(AttributeError):
        key._d = 1  # type: ignore[misc]
    for bad in (0, N, -1, N + 5):
        with pytest.raises(ValueError):
            PrivateKey(bad)


def test_private_jwk_with_a_foreign_public_part_is_refused() -> None:
    jwk = {**PrivateKey(5).to_jwk(), "x": PrivateKey(6).to_jwk()["x"], "y": PrivateKey(6).to_jwk()["y"]}
    with pytest.raises(ValueError, match="do not belong"):
        PrivateKey.from_jwk(jwk)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=0, max_value=53),
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
)
def test_a_one_character_typo_in_a_private_key_is_caught(index: int, char: str) -> None:
    text = PrivateKey(987654321).to_text()
    assume(text[index] != char)
    typo = text[:index] + char + text[index + 1 :]
    with pytest.raises(ValueError, match="private key: "):
        PrivateKey.from_text(typo)


# --- tokens ---------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
payloads = st.dictionaries(st.text(max_size=10), json_values, max_size=6)
TOKEN_KEY = PrivateKey(0xC0FFEE)


@FAST
@given(payloads)
def test_tokens_round_trip_and_the_signature_covers_the_body(payload: dict[str, Any]) -> None:
    assume(all(c < "\ud800" or c > "\udfff" for c in json.dumps(payload, ensure_ascii=False)))
    token = sign_token(TOKEN_KEY, payload)
    assert verify_token(TOKEN_KEY.public_key, token) == payload
    body, sig = token.split(".")
    theirs = ec.derive_private_key(0xC0FFEE, ec.SECP256R1()).public_key()
    theirs.verify(ours_to_der(b64url_decode(sig)), body.encode(), ec.ECDSA(hashes.SHA256()))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.characters(codec="utf-8"))
def test_any_one_character_change_to_a_token_is_refused(index: int, char: str) -> None:
    token = sign_token(TOKEN_KEY, {"name": "Dana", "room": "room-x", "exp": 1893456000})
    index %= len(token)
    assume(token[index] != char)
    got = verify_token(TOKEN_KEY.public_key, token[:index] + char + token[index + 1 :])
    assert isinstance(got, Refusal) and got.reason in ("malformed", "bad-signature")


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.text(max_size=300), st.binary(max_size=50), st.none(), st.integers(), st.lists(st.text()))
)
def test_verify_token_never_raises_on_garbage(token: Any) -> None:
    got = verify_token(TOKEN_KEY.public_key, token)
    assert isinstance(got, Refusal) and got.reason in REFUSAL_REASONS and got.detail


def test_the_length_cap_comes_before_any_work() -> None:
    huge = "A" * 10_000_000 + "." + "A" * 86
    got = verify_token(TOKEN_KEY.public_key, huge)
    assert isinstance(got, Refusal) and got.reason == "oversize"
    token = sign_token(TOKEN_KEY, {"a": "x" * 100})
    assert verify_token(TOKEN_KEY.public_key, token, max_chars=len(token)) == {"a": "x" * 100}
    assert verify_token(TOKEN_KEY.public_key, token, max_chars=len(token) - 1) == Refusal(
        "oversize", f"{len(token)} characters, over the cap of {len(token) - 1}"
    )


def _signed(body: bytes) -> str:
    text = b64url_encode(body)
    return text + "." + b64url_encode(TOKEN_KEY.sign(text.encode()))


def test_deep_nesting_is_refused_before_json_recurses() -> None:
    got = verify_token(TOKEN_KEY.public_key, _signed(b"[" * 2900 + b"]" * 2900))
    assert isinstance(got, Refusal) and got.reason == "bad-json" and "deeper" in got.detail
    ok: Any = {}
    for _ in range(MAX_DEPTH - 1):
        ok = [ok]
    assert verify_token(TOKEN_KEY.public_key, sign_token(TOKEN_KEY, {"a": ok[0]})) == {"a": ok[0]}
    with pytest.raises(ValueError, match="deeper"):
        sign_token(TOKEN_KEY, {"a": ok})


def test_sign_token_refuses_what_verify_would_refuse() -> None:
    with pytest.raises(ValueError):
        sign_token(TOKEN_KEY, {"a": math.nan})
    with pytest.raises(ValueError):
        sign_token(TOKEN_KEY, {"a": "\ud800"})
    with pytest.raises(TypeError):
        sign_token(TOKEN_KEY, {1: "a"})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        sign_token(TOKEN_KEY, ["a"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sign_token(TOKEN_KEY, {"a": object()})
    with pytest.raises(ValueError, match="over the cap"):
        sign_token(TOKEN_KEY, {"a": "x" * 9000})
    with pytest.raises(TypeError):
        sign_token(TOKEN_KEY.public_key, {})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        verify_token(TOKEN_KEY.to_text(), "a.b")  # type: ignore[arg-type]


# --- sealing --------------------------------------------------------------------------------------


async def test_seal_round_trips_with_fresh_salt_and_iv() -> None:
    a = await seal("pass phrase", b"secret")
    b = await seal("pass phrase", b"secret")
    assert a != b  # fresh salt and IV each time
    assert await unseal("pass phrase", a) == await unseal("pass phrase", b) == b"secret"


async def test_every_altered_byte_of_a_blob_is_refused() -> None:
    blob = await seal("pw", b"k" * 8, salt=bytes(16), iv=bytes(12))
    raw = b64url_decode(blob)
    for i in range(len(raw)):
        altered = bytearray(raw)
        altered[i] ^= 0x01
        with pytest.raises(SealError) as err:
            await unseal("pw", b64url_encode(bytes(altered)))
        assert err.value.reason == ("version" if i == 0 else "wrong-passphrase")


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=120), st.none(), st.binary(max_size=10)))
async def test_unseal_refuses_garbage_with_a_reason(blob: Any) -> None:
    with pytest.raises(SealError) as err:
        await unseal("pw", blob)
    assert err.value.reason in ("malformed", "version", "oversize", "wrong-passphrase")


class _BrokenBackend(CPythonCrypto):
    async def aes_gcm_decrypt(self, key: bytes, iv: bytes, sealed: bytes) -> bytes:
        raise RuntimeError("backend blew up")


async def test_a_backend_failure_on_decrypt_is_a_seal_error() -> None:
    blob = await seal("pw", b"x")
    with pytest.raises(SealError, match="wrong passphrase"):
        await unseal("pw", blob, backend=_BrokenBackend())


async def test_seal_checks_its_arguments() -> None:
    with pytest.raises(SealError) as err:
        await seal("", b"x")
    assert err.value.reason == "empty-passphrase"
    with pytest.raises(TypeError):
        await seal("pw", "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="salt must be 16"):
        await seal("pw", b"x", salt=b"short")
    with pytest.raises(ValueError, match="iv 12"):
        await seal("pw", b"x", iv=bytes(16))
    with pytest.raises(SealError) as err:
        await seal("\ud800", b"x")
    assert err.value.reason == "malformed"


async def test_code_keys_need_a_real_salt_and_compare_in_constant_time() -> None:
    salt = new_code_salt()
    assert len(salt) == 16 and salt != new_code_salt()
    key = await derive_code_key("0042", salt)
    assert len(key) == 32 and key != await derive_code_key("0042", new_code_salt())
    assert constant_time_equal(code_verifier(await derive_code_key(" 0042 ", salt)), code_verifier(key))
    assert not constant_time_equal(code_verifier(await derive_code_key("0043", salt)), code_verifier(key))
    with pytest.raises(ValueError, match="salt"):
        await derive_code_key("0042", b"room-1")
    with pytest.raises(SealError):
        await derive_code_key("   ", salt)
    with pytest.raises(ValueError):
        code_verifier(b"short")


def test_constant_time_equal_handles_mixed_and_odd_input() -> None:
    assert constant_time_equal("abc", "abc") and constant_time_equal(b"abc", bytearray(b"abc"))
    assert constant_time_equal("zoë", "zoë") and not constant_time_equal("zoë", "zoe")
    assert not constant_time_equal("abc", b"abc") and not constant_time_equal("abc", "abcd")
    assert not constant_time_equal("\ud800", "\ud800")
    assert not constant_time_equal(None, None)  # type: ignore[arg-type]


def test_default_backend_is_webcrypto_only_in_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(default_backend(), CPythonCrypto)
    monkeypatch.setattr(sys, "platform", "emscripten")
    assert isinstance(default_backend(), WebCrypto)


def test_importing_the_package_pulls_in_nothing_the_page_lacks() -> None:
    code = (
        "import sys, kibitz.crypto, kibitz.crypto.backends\n"
        "bad = [m for m in ('cryptography', 'js', 'pyodide') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
