"""Writes tests/vectors/crypto.json, the golden vectors of kibitz.crypto (run once; keep the file).

    .venv/bin/python tests/vectors/make_crypto_vectors.py

A value ``{"repeat": text, "times": n}`` stands for ``text * n`` (long oversize inputs). The outputs
come from kibitz.crypto itself, so the file alone proves only that nothing changed;
tests/unit/test_crypto_vectors.py checks every entry against independent sources as well (the
RFC 6979 appendix, ``cryptography``, ``hashlib``), and the WebCrypto tokens below were signed by
Chromium 156's ``crypto.subtle`` (non-deterministic ECDSA: they cannot be remade, only kept).
Regenerating must leave the file unchanged; a change of format means a new version, not new vectors.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

from kibitz.crypto import PrivateKey, b64url_encode, code_verifier, derive_code_key, seal
from kibitz.crypto.backends import CPythonCrypto
from kibitz.crypto.p256 import GX, GY, N, P, PublicKey, rfc6979_nonce

OUT = Path(__file__).resolve().parent / "crypto.json"

RFC6979_D = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
# RFC 6979 appendix A.2.5, P-256 with SHA-256 (copied from the RFC text, not computed).
RFC6979 = [
    {
        "message": "sample",
        "k": "A6E3C57DD01ABE90086538398355DD4C3B17AA873382B0F24D6129493D8AAD60",
        "r": "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716",
        "s": "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8",
    },
    {
        "message": "test",
        "k": "D16B6AE827F17175E040871A1C7EC3500192C4C92677336EC2537ACAEE0008E0",
        "r": "F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367",
        "s": "019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083",
    },
]
RFC6979_QX = "60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6"
RFC6979_QY = "7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299"

# Signed in Chromium 156 by crypto.subtle.sign({name: 'ECDSA', hash: 'SHA-256'}) over the ASCII of
# b64url(JSON.stringify(payload)), with a key from crypto.subtle.generateKey (exported as JWK).
WEBCRYPTO_TOKENS = [
    {
        "jwk": {
            "kty": "EC",
            "crv": "P-256",
            "x": "TW3TaOV7udeBubSxh-vft54Dmxe02c9d9k_1VpRvH3k",
            "y": "fu5Y5b_Z0I0OfNhBwW04_EhbM_Q_RpmridhjKgAM4Zg",
        },
        "payload": {"name": "Zoë", "room": "room-webcrypto", "exp": 4102444800},
        "token": "eyJuYW1lIjoiWm_DqyIsInJvb20iOiJyb29tLXdlYmNyeXB0byIsImV4cCI6NDEwMjQ0NDgwMH0."
        "XohfGkZZjbHR3CeUeRCnscpZ5qC81RBBoG6nWMMfA06F-s9r8kfvAJd7HeDvtVf18U7ImSPAK34cdTY91X331g",
    },
    {
        "jwk": {
            "kty": "EC",
            "crv": "P-256",
            "x": "dPt9YtQiTye0bDVcXxL8-iX3eIF6m5u93rP5doquYAI",
            "y": "-TTRZLBSPE2GR1I46mZcu2D08EEZJUvZKOsBdHAuxtg",
        },
        "payload": {
            "k": "kbz-host-cmd.v1",
            "room": "room-webcrypto",
            "fp": "AB:CD",
            "op": "kick",
            "target": "kbz-m-x",
            "iat": 1767225600,
        },
        "token": "eyJrIjoia2J6LWhvc3QtY21kLnYxIiwicm9vbSI6InJvb20td2ViY3J5cHRvIiwiZnAiOiJBQjpDRCIs"
        "Im9wIjoia2ljayIsInRhcmdldCI6Imtiei1tLXgiLCJpYXQiOjE3NjcyMjU2MDB9."
        "jtgMp2FI_Qsn8qHvrEr902Kcxs4STfdLdh5Bv3iFEZuv3B5Vmal-4sm9v-MVZMktXmjV7Pv54cJ5oxqZCOFR_g",
    },
]


def seeded_key(label: str) -> PrivateKey:
    return PrivateKey(int.from_bytes(hashlib.sha256(label.encode()).digest(), "big") % (N - 1) + 1)


def sig_hex(r: int, s: int) -> str:
    return (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex()


def b64_section() -> dict[str, Any]:
    valid = [
        b"",
        b"\x00",
        b"\xff",
        b"\xfb\xff",
        b"\x00\x00\x00",
        b"hello",
        bytes(range(256)),
        b"\xfb\xef\xbe",
    ]
    invalid = [
        ("abc=", "padding"),
        ("YQ==", "padding"),
        ("ab c", "whitespace"),
        ("abcd\n", "whitespace"),
        ("\tabc", "whitespace"),
        ("ab+c", "standard base64"),
        ("ab/c", "standard base64"),
        ("abcde", "impossible length"),
        ("a", "impossible length"),
        ("AB", "non-canonical"),
        ("AAB", "non-canonical"),
        ("YR", "non-canonical"),
        ("ab€d", "not in the alphabet"),
        ("ab.c", "not in the alphabet"),
        ("ab\x00c", "not in the alphabet"),
    ]
    return {
        "valid": [{"hex": v.hex(), "text": b64url_encode(v)} for v in valid],
        "invalid": [{"text": t, "error": e} for t, e in invalid],
    }


def p256_section() -> dict[str, Any]:
    rfc = [{**v, "d": f"{RFC6979_D:064X}", "qx": RFC6979_QX, "qy": RFC6979_QY} for v in RFC6979]
    for v in rfc:
        assert f"{rfc6979_nonce(RFC6979_D, v['message'].encode()):064X}" == v["k"]
    keys = []
    for key in (PrivateKey(1), PrivateKey(N - 1), PrivateKey(RFC6979_D), seeded_key("kibitz golden key 1")):
        pub = key.public_key
        keys.append(
            {
                "scalar": key.to_bytes().hex(),
                "private_text": key.to_text(),
                "public_text": pub.to_text(),
                "jwk": pub.to_jwk(),
                "thumbprint": pub.thumbprint(),
            }
        )
    rfc_key = PrivateKey(RFC6979_D)
    pub_text = rfc_key.public_key.to_text()
    msg = b"sample"
    good = rfc_key.sign(msg)
    r, s = int.from_bytes(good[:32], "big"), int.from_bytes(good[32:], "big")
    flip_r = bytearray(good)
    flip_r[5] ^= 0x10
    flip_s = bytearray(good)
    flip_s[63] ^= 0x01
    # With Q = G (d = 1) and r = -e mod n, u1·G + u2·Q = (e + r)/s · G is the point at infinity.
    e_one = int.from_bytes(hashlib.sha256(b"infinity").digest(), "big")
    g_text = PrivateKey(1).public_key.to_text()
    signatures = [
        (pub_text, msg, good.hex(), True, "RFC 6979 signature"),
        (
            pub_text,
            msg,
            sig_hex(r, N - s),
            True,
            "the same with s -> n-s: accepted, WebCrypto does not normalise s",
        ),
        (pub_text, b"samplf", good.hex(), False, "another message"),
        (pub_text, msg, bytes(flip_r).hex(), False, "one bit of r flipped"),
        (pub_text, msg, bytes(flip_s).hex(), False, "one bit of s flipped"),
        (pub_text, msg, sig_hex(0, s), False, "r = 0"),
        (pub_text, msg, sig_hex(r, 0), False, "s = 0"),
        (pub_text, msg, sig_hex(N, s), False, "r = n"),
        (pub_text, msg, sig_hex(r, N), False, "s = n"),
        (pub_text, msg, sig_hex(r + N, s) if r + N < 2**256 else sig_hex(2**256 - 1, s), False, "r >= n"),
        (pub_text, msg, sig_hex(r, 2**256 - 1), False, "s = 2^256 - 1"),
        (pub_text, msg, good[:63].hex(), False, "63 bytes"),
        (pub_text, msg, (good + b"\x00").hex(), False, "65 bytes"),
        (pub_text, msg, "", False, "empty"),
        (
            pub_text,
            msg,
            ("3045022100" + good[:32].hex() + "0220" + good[32:].hex()),
            False,
            "DER, not raw r||s",
        ),
        (g_text, b"infinity", sig_hex((-e_one) % N, 1), False, "u1*G + u2*Q is the point at infinity"),
    ]
    bad_private = [
        ("", "not a Kibitz private key"),
        ("hello", "not a Kibitz private key"),
        ("kbzk2." + keys[3]["private_text"][6:], "unsupported format"),
        (keys[3]["public_text"], "looks like a public key"),
        (keys[3]["private_text"][:-4], "cut off"),
        (keys[3]["private_text"][:-1], "damaged"),
        (keys[3]["private_text"] + "=", "damaged"),
        (
            keys[3]["private_text"][:20]
            + ("A" if keys[3]["private_text"][20] != "A" else "B")
            + keys[3]["private_text"][21:],
            "checksum mismatch",
        ),
        (_text_for_scalar(0), "out of range"),
        (_text_for_scalar(N), "out of range"),
    ]
    off_curve = b"\x04" + GX.to_bytes(32, "big") + (GY + 1).to_bytes(32, "big")
    x_too_big = b"\x04" + P.to_bytes(32, "big") + GY.to_bytes(32, "big")
    g_raw = PrivateKey(1).public_key.to_bytes()
    bad_public = [
        (b64url_encode(off_curve), "not on the P-256 curve"),
        (b64url_encode(x_too_big), "not on the P-256 curve"),
        (b64url_encode(b"\x02" + g_raw[1:33]), "compressed points are not accepted"),
        (b64url_encode(g_raw[1:]), "expected 65 bytes"),
        (b64url_encode(b"\x05" + g_raw[1:]), "expected 65 bytes"),
        (b64url_encode(b"\x00"), "expected 65 bytes"),
        (keys[3]["public_text"] + "=", "padding"),
        (keys[3]["private_text"], "this is a private key"),
    ]
    bad_jwk = [
        ({**keys[3]["jwk"], "crv": "P-384"}, "not a P-256 EC key"),
        ({**keys[3]["jwk"], "kty": "RSA"}, "not a P-256 EC key"),
        ({**keys[3]["jwk"], "d": b64url_encode(bytes(32))}, "holds a private key"),
        ({**keys[3]["jwk"], "x": b64url_encode(b"\x01" * 31)}, "32 bytes"),
        ({**keys[3]["jwk"], "x": keys[3]["jwk"]["x"] + "AA"}, "impossible length"),
        ({k: v for k, v in keys[3]["jwk"].items() if k != "y"}, "must be a base64url string"),
        ({**keys[3]["jwk"], "y": keys[2]["jwk"]["y"]}, "not on the P-256 curve"),
    ]
    return {
        "rfc6979": rfc,
        "keys": keys,
        "signatures": [
            {"public_text": p, "message_hex": m.hex(), "signature_hex": sg, "valid": ok, "case": why}
            for p, m, sg, ok, why in signatures
        ],
        "bad_private_texts": [{"text": t, "error": e} for t, e in bad_private],
        "bad_public_texts": [{"text": t, "error": e} for t, e in bad_public],
        "bad_jwks": [{"jwk": j, "error": e} for j, e in bad_jwk],
    }


def _text_for_scalar(value: int) -> str:
    """A well-formed key text (right prefix and checksum) around an out-of-range scalar."""
    raw = value.to_bytes(32, "big")
    check = hashlib.sha256(b"kbzk1." + raw).digest()[:4]
    return "kbzk1." + b64url_encode(raw + check)


def _signed_body(key: PrivateKey, body_bytes: bytes) -> str:
    body = b64url_encode(body_bytes)
    return body + "." + b64url_encode(key.sign(body.encode("ascii")))


def token_section() -> dict[str, Any]:
    from kibitz.crypto import sign_token

    key = seeded_key("kibitz golden token key")
    other = seeded_key("kibitz golden other key")
    payloads: list[dict[str, Any]] = [
        {"name": "Dana", "room": "room-3f9k2mq7p1", "exp": 1893456000},
        {
            "k": "kbz-host-cmd.v1",
            "room": "room-3f9k2mq7p1",
            "fp": "AB:CD:EF:01",
            "op": "kick",
            "target": "kbz-m-0123456789abcdef",
            "iat": 1767225600,
        },
        {"name": "Zoë 🦊", "note": 'ünïcödé "quoted" \\ / \u2028'},
        {"members": ["a", "b"], "policy": {"lobby": True, "max": 8}, "n": None, "f": 1.5, "neg": -3},
        {},
    ]
    signed = [{"payload": p, "token": sign_token(key, p)} for p in payloads]
    t0 = signed[0]["token"]
    body0, sig0 = t0.split(".")
    deep = "[" * 17 + "]" * 17
    refused: list[dict[str, Any]] = [
        {"token": {"repeat": "a", "times": 8193}, "reason": "oversize", "case": "over the default cap"},
        {"token": t0, "reason": "oversize", "max_chars": len(t0) - 1, "case": "over a caller's cap"},
        {"token": "", "reason": "malformed", "case": "empty"},
        {"token": None, "reason": "malformed", "case": "not text"},
        {"token": 12, "reason": "malformed", "case": "a number"},
        {"token": body0, "reason": "malformed", "case": "no dot"},
        {"token": t0 + ".e30", "reason": "malformed", "case": "two dots"},
        {"token": ".", "reason": "malformed", "case": "a dot alone"},
        {"token": t0 + "=", "reason": "malformed", "case": "padding on the signature"},
        {"token": body0 + "=." + sig0, "reason": "malformed", "case": "padding on the body"},
        {"token": t0 + "\n", "reason": "malformed", "case": "a trailing newline"},
        {"token": " " + t0, "reason": "malformed", "case": "a leading space"},
        {
            "token": t0.replace("-", "+").replace("_", "/") if ("-" in t0 or "_" in t0) else "a+b.c",
            "reason": "malformed",
            "case": "standard base64 alphabet",
        },
        {"token": t0[:-1], "reason": "malformed", "case": "signature cut by one character"},
        {"token": t0[:-2], "reason": "malformed", "case": "signature of 63 bytes"},
        {
            "token": body0
            + "."
            + b64url_encode(bytes.fromhex("3045022100" + "11" * 32 + "0220" + "22" * 32)),
            "reason": "malformed",
            "case": "DER signature",
        },
        {"token": body0 + "é." + sig0, "reason": "malformed", "case": "non-ASCII character"},
        {"token": sign_token(other, payloads[0]), "reason": "bad-signature", "case": "signed by another key"},
        {
            "token": signed[1]["token"].split(".")[0] + "." + sig0,
            "reason": "bad-signature",
            "case": "another token's body under this signature",
        },
        {
            "token": body0[:-4] + ("AAAA" if body0[-4:] != "AAAA" else "BBBB") + "." + sig0,
            "reason": "bad-signature",
            "case": "body altered",
        },
        # The signature is checked before the payload is looked at: garbage under a wrong signature
        # is a bad signature, not bad JSON.
        {"token": _signed_body(other, b"[1,2]"), "reason": "bad-signature", "case": "an array, wrong key"},
        {"token": _signed_body(other, b'{"a":NaN'), "reason": "bad-signature", "case": "bad JSON, wrong key"},
        {"token": _signed_body(key, b"[1,2]"), "reason": "not-object", "case": "a JSON array"},
        {"token": _signed_body(key, b'"text"'), "reason": "not-object", "case": "a JSON string"},
        {"token": _signed_body(key, b"42"), "reason": "not-object", "case": "a JSON number"},
        {"token": _signed_body(key, b"null"), "reason": "not-object", "case": "JSON null"},
        {"token": _signed_body(key, b'{"a":NaN}'), "reason": "bad-json", "case": "NaN"},
        {"token": _signed_body(key, b'{"a":Infinity}'), "reason": "bad-json", "case": "Infinity"},
        {"token": _signed_body(key, b'{"a":1,"a":2}'), "reason": "bad-json", "case": "a duplicate key"},
        {
            "token": _signed_body(key, ('{"a":' + deep + "}").encode()),
            "reason": "bad-json",
            "case": "nested 18 deep",
        },
        {"token": _signed_body(key, b'{"a":"\\ud800"}'), "reason": "bad-json", "case": "a lone surrogate"},
        {"token": _signed_body(key, b'{"a":"\xff"}'), "reason": "bad-json", "case": "not UTF-8"},
        {"token": _signed_body(key, b'{"a":1} x'), "reason": "bad-json", "case": "trailing garbage"},
        {"token": _signed_body(key, b""), "reason": "bad-json", "case": "an empty body"},
        {"token": _signed_body(key, b"\xef\xbb\xbf{}"), "reason": "bad-json", "case": "a byte-order mark"},
    ]
    nested_ok: dict[str, Any] = {}
    for _ in range(14):
        nested_ok = [nested_ok]  # type: ignore[assignment]
    nested_ok = {"a": nested_ok}  # 16 deep (object, 14 arrays, object): the limit itself is fine
    signed.append({"payload": nested_ok, "token": sign_token(key, nested_ok)})
    return {
        "private_text": key.to_text(),
        "public_text": key.public_key.to_text(),
        "signed": signed,
        "refused": refused,
        "webcrypto": WEBCRYPTO_TOKENS,
    }


async def seal_section() -> dict[str, Any]:
    backend = CPythonCrypto()
    key_text = seeded_key("kibitz golden token key").to_text()
    cases = [
        ("correct horse battery staple", key_text.encode(), bytes(range(16)), bytes(range(12))),
        ("Ｐａｓｓ　ｗｏｒｄ①", b"", bytes(range(16, 32)), bytes(range(12, 24))),
        ("cafe\u0301", "secret ünïcödé".encode(), b"\xaa" * 16, b"\x55" * 12),
    ]
    sealed = []
    for passphrase, plaintext, salt, iv in cases:
        blob = await seal(passphrase, plaintext, backend=backend, salt=salt, iv=iv)
        sealed.append(
            {
                "passphrase": passphrase,
                "plaintext_hex": plaintext.hex(),
                "salt_hex": salt.hex(),
                "iv_hex": iv.hex(),
                "blob": blob,
            }
        )
    b0 = sealed[0]["blob"]
    raw0 = bytearray(b0.encode())
    same = [
        {
            "passphrase": "Pass word1",
            "blob": sealed[1]["blob"],
            "plaintext_hex": "",
            "case": "NFKC of fullwidth",
        },
        {
            "passphrase": "caf\u00e9",
            "blob": sealed[2]["blob"],
            "plaintext_hex": sealed[2]["plaintext_hex"],
            "case": "composed é opens what decomposed é sealed",
        },
    ]
    from kibitz.crypto import b64url_decode

    def edit(blob: str, index: int, xor: int) -> str:
        raw = bytearray(b64url_decode(blob))
        raw[index] ^= xor
        return b64url_encode(bytes(raw))

    del raw0
    refused = [
        {
            "passphrase": "correct horse battery stapler",
            "blob": b0,
            "reason": "wrong-passphrase",
            "case": "wrong passphrase",
        },
        {
            "passphrase": "Correct horse battery staple",
            "blob": b0,
            "reason": "wrong-passphrase",
            "case": "case matters",
        },
        {
            "passphrase": "correct horse battery staple",
            "blob": edit(b0, 40, 1),
            "reason": "wrong-passphrase",
            "case": "a ciphertext bit flipped",
        },
        {
            "passphrase": "correct horse battery staple",
            "blob": edit(b0, -1, 0x80),
            "reason": "wrong-passphrase",
            "case": "a tag bit flipped",
        },
        {
            "passphrase": "correct horse battery staple",
            "blob": edit(b0, 3, 1),
            "reason": "wrong-passphrase",
            "case": "a salt bit flipped",
        },
        {
            "passphrase": "correct horse battery staple",
            "blob": edit(b0, 20, 1),
            "reason": "wrong-passphrase",
            "case": "an IV bit flipped",
        },
        {
            "passphrase": "correct horse battery staple",
            "blob": edit(b0, 0, 3),
            "reason": "version",
            "case": "version 2",
        },
        {
            "passphrase": "correct horse battery staple",
            "blob": b0[:56],
            "reason": "malformed",
            "case": "cut off",
        },
        {
            "passphrase": "correct horse battery staple",
            "blob": b0 + "=",
            "reason": "malformed",
            "case": "padding",
        },
        {
            "passphrase": "correct horse battery staple",
            "blob": b0[:10] + " " + b0[10:],
            "reason": "malformed",
            "case": "a space inside",
        },
        {"passphrase": "correct horse battery staple", "blob": "", "reason": "malformed", "case": "empty"},
        {
            "passphrase": "correct horse battery staple",
            "blob": {"repeat": "A", "times": 65540},
            "reason": "oversize",
            "case": "over the size cap",
        },
        {"passphrase": "", "blob": b0, "reason": "empty-passphrase", "case": "empty passphrase"},
    ]
    code_salt = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    codes = []
    for code, typed in (("4711", " 4711\n"), ("ｃｏｄｅ-42", "code-42")):
        key = await derive_code_key(code, code_salt, backend=backend)
        codes.append(
            {
                "code": code,
                "typed": typed,
                "salt_hex": code_salt.hex(),
                "key_hex": key.hex(),
                "verifier": code_verifier(key),
            }
        )
    return {"sealed": sealed, "same": same, "refused": refused, "codes": codes}


def main() -> None:
    vectors = {
        "about": "Golden vectors for kibitz.crypto; checked in CPython (tests/unit/test_crypto_vectors.py) "
        "and in the page under Pyodide (tests/e2e/test_crypto_page.py) by tests/vectors/crypto_check.py.",
        "b64url": b64_section(),
        "p256": p256_section(),
        "tokens": token_section(),
        "seal": asyncio.run(seal_section()),
    }
    assert PublicKey.from_text(vectors["p256"]["keys"][0]["public_text"]).x == GX
    text = json.dumps(vectors, ensure_ascii=False, indent=1) + "\n"
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({len(text)} characters)")


if __name__ == "__main__":
    main()
