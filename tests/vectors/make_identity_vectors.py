# ruff: noqa: E501  (tables of vector cases read better one per line)
"""Writes tests/vectors/identity.json: golden vectors of the identity layer (run once; keep the file).

    .venv/bin/python tests/vectors/make_identity_vectors.py

Tokens are signed here with ``cryptography`` (RSA 2048, PKCS#1 v1.5, deterministic), not by
kibitz, and the expected verdicts are written by hand per case; the nonce case is the original
engine's golden vector. tests/vectors/identity_check.py runs them through kibitz.identity in CPython
(tests/unit/test_identity_vectors.py) and in the page under Pyodide (tests/e2e/test_crypto_page.py).
A new run makes a new RSA key and so new tokens; the verdicts must stay the same.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from kibitz.crypto import PrivateKey, sign_token

OUT = Path(__file__).resolve().parent / "identity.json"
NOW = 1_800_000_000
ROOM = "Room Salt"  # normalises to room-salt
FP_A = ":".join(["AB", "CD", "EF", "01", "23", "45", "67", "89"] * 4)
FP_B = ":".join(f"{i:02x}" for i in range(32))
FP_C = ":".join(f"{255 - i:02X}" for i in range(32))
EMAIL_ISS = "https://kibitz.example"
OIDC_ISS = "https://issuer.example"
CLIENT = "client-1"
AGENT = PrivateKey.from_bytes(bytes(range(61, 93)))
STRANGER = PrivateKey.from_bytes(bytes(range(7, 39)))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def nonce(fp: str, room: str, salt: str | None = None) -> str:
    norm = "-".join(p for p in "".join(c if c.isalnum() else " " for c in room.lower()).split())[:40]
    if salt is None:
        return b64(hashlib.sha256(f"{fp.strip().lower()}|{norm}".encode()).digest())
    return salt + "." + b64(hashlib.sha256(f"{fp.strip().lower()}|{norm}|{salt}".encode()).digest())


SALT = "q7Zp-3_kXvN2mB8sW4tY"


def jwk_of(key: rsa.RSAPrivateKey, kid: str) -> dict[str, str]:
    pub = key.public_key().public_numbers()
    n = pub.n.to_bytes((pub.n.bit_length() + 7) // 8, "big")
    e = pub.e.to_bytes((pub.e.bit_length() + 7) // 8, "big")
    return {"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": b64(n), "e": b64(e)}


def encode(obj: dict[str, Any]) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def sign(key: rsa.RSAPrivateKey, header: dict[str, Any], claims: dict[str, Any], algo: Any = None) -> str:
    head = encode(header) + "." + encode(claims)
    sig = key.sign(head.encode(), padding.PKCS1v15(), algo or hashes.SHA256())
    return head + "." + b64(sig)


def main() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    hdr = {"alg": "RS256", "kid": "k1", "typ": "JWT"}
    good_nonce = nonce(FP_B, ROOM)
    email_claims = {"iss": EMAIL_ISS, "aud": "kibitz-email", "sub": "ann@allowed.example",
                    "email": "Ann@Allowed.Example", "nonce": good_nonce, "iat": NOW - 10, "exp": NOW + 590}
    oidc_claims = {"iss": OIDC_ISS, "aud": CLIENT, "sub": "u-123", "email": "bob@other.example",
                   "email_verified": True, "nonce": good_nonce, "iat": NOW - 10, "exp": NOW + 3590}

    def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
        out = {**base, **changes}
        return {k: v for k, v in out.items() if v is not None}

    good = sign(key, hdr, email_claims)
    body_tampered = good.split(".")
    body_tampered[1] = encode(with_(email_claims, email="eve@allowed.example"))
    cases: list[dict[str, Any]] = [
        {"name": "email ok", "token": good, "expect": {"email": "ann@allowed.example", "provider": "email"}},
        {"name": "oidc ok", "token": sign(key, hdr, oidc_claims), "expect": {"email": "bob@other.example",
                                                                            "provider": "oidc"}},
        {"name": "oidc aud list with azp", "token": sign(key, hdr, with_(oidc_claims, aud=[CLIENT, "x"],
                                                                         azp=CLIENT)),
         "expect": {"email": "bob@other.example", "provider": "oidc"}},
        {"name": "another certificate of this room", "token": sign(key, hdr, with_(email_claims,
                                                                                    nonce=nonce(FP_A, ROOM))),
         "reason": "other-cert"},
        {"name": "another room", "token": sign(key, hdr, with_(email_claims, nonce=nonce(FP_B, "elsewhere"))),
         "reason": "wrong-nonce"},
        {"name": "salted nonce", "token": sign(key, hdr, with_(email_claims, nonce=nonce(FP_B, ROOM, SALT))),
         "expect": {"email": "ann@allowed.example", "provider": "email"}},
        {"name": "salted nonce of another certificate", "token": sign(key, hdr, with_(
            email_claims, nonce=nonce(FP_A, ROOM, SALT))), "reason": "other-cert"},
        {"name": "salted nonce, salt swapped", "token": sign(key, hdr, with_(
            email_claims, nonce="x" * 20 + "." + nonce(FP_B, ROOM, SALT).split(".")[1])), "reason": "wrong-nonce"},
        {"name": "salted nonce, salt too short", "token": sign(key, hdr, with_(
            email_claims, nonce=nonce(FP_B, ROOM, "short"))), "reason": "wrong-nonce"},
        {"name": "no nonce", "token": sign(key, hdr, with_(email_claims, nonce=None)), "reason": "wrong-nonce"},
        {"name": "another audience", "token": sign(key, hdr, with_(oidc_claims, aud="client-2")),
         "reason": "wrong-audience"},
        {"name": "azp of another client", "token": sign(key, hdr, with_(oidc_claims, azp="client-2")),
         "reason": "wrong-audience"},
        {"name": "expired beyond leeway", "token": sign(key, hdr, with_(email_claims, exp=NOW - 61)),
         "reason": "expired"},
        {"name": "expired within leeway", "token": sign(key, hdr, with_(email_claims, exp=NOW - 59)),
         "expect": {"email": "ann@allowed.example", "provider": "email"}},
        {"name": "no expiry", "token": sign(key, hdr, with_(email_claims, exp=None)), "reason": "expired"},
        {"name": "not before, in the future", "token": sign(key, hdr, with_(email_claims, nbf=NOW + 120)),
         "reason": "not-yet-valid"},
        {"name": "issued in the future", "token": sign(key, hdr, with_(email_claims, iat=NOW + 120)),
         "reason": "not-yet-valid"},
        {"name": "email_verified false", "token": sign(key, hdr, with_(oidc_claims, email_verified=False)),
         "reason": "email-unverified"},
        {"name": "email_verified as a string", "token": sign(key, hdr, with_(oidc_claims, email_verified="true")),
         "reason": "email-unverified"},
        {"name": "no email", "token": sign(key, hdr, with_(oidc_claims, email=None)), "reason": "no-email"},
        {"name": "no subject", "token": sign(key, hdr, with_(email_claims, sub=None)), "reason": "no-subject"},
        {"name": "unknown kid", "token": sign(key, {**hdr, "kid": "k9"}, email_claims), "reason": "unknown-kid"},
        {"name": "no kid, two keys in the set", "token": sign(key, {"alg": "RS256"}, email_claims),
         "reason": "unknown-kid"},
        {"name": "signed by another key under k1", "token": sign(other, hdr, email_claims),
         "reason": "bad-signature"},
        {"name": "claims changed after signing", "token": ".".join(body_tampered), "reason": "bad-signature"},
        {"name": "alg none", "token": encode({"alg": "none", "kid": "k1"}) + "." + encode(email_claims) + ".",
         "reason": "alg"},
        {"name": "alg HS256 keyed with the public key",
         "token": _hs256({"alg": "HS256", "kid": "k1"}, email_claims, json.dumps(jwk_of(key, "k1"))),
         "reason": "alg"},
        {"name": "alg RS512", "token": sign(key, {**hdr, "alg": "RS512"}, email_claims, hashes.SHA512()),
         "reason": "alg"},
        {"name": "alg ES256", "token": _es256(email_claims), "reason": "alg"},
        {"name": "RS256 header over a SHA-512 signature", "token": sign(key, hdr, email_claims, hashes.SHA512()),
         "reason": "bad-signature"},
        {"name": "critical extension", "token": sign(key, {**hdr, "crit": ["exp"]}, email_claims),
         "reason": "crit"},
        {"name": "untrusted issuer", "token": sign(key, hdr, with_(email_claims, iss="https://evil.example")),
         "reason": "wrong-issuer"},
        {"name": "address not allowed", "token": sign(key, hdr, with_(email_claims, email="eve@else.example")),
         "reason": "not-allowed", "allowed": True},
        {"name": "allowed domain", "token": good, "allowed": True,
         "expect": {"email": "ann@allowed.example", "provider": "email"}},
        {"name": "hosted domain claim", "allowed": True,
         "token": sign(key, hdr, with_(oidc_claims, email="carl@gmail.example", hd="allowed.example")),
         "expect": {"email": "carl@gmail.example", "provider": "oidc"}},
        {"name": "two parts", "token": good.rsplit(".", 1)[0], "reason": "malformed"},
        {"name": "padded base64", "token": good + "=", "reason": "malformed"},
        {"name": "claims not JSON", "token": encode(hdr) + "." + b64(b"{nope") + "." + good.split(".")[2],
         "reason": "bad-json"},
        {"name": "duplicate claim", "token": encode(hdr) + "." + b64(b'{"iss":"a","iss":"b"}') + ".AAAA",
         "reason": "bad-json"},
        {"name": "oversize", "token": "a" * 8193, "reason": "oversize"},
    ]
    rsa_cases = _rsa_cases(key)
    sas = []
    for a, b in ((FP_A, FP_B), (FP_B, FP_A), (FP_B, FP_C), (FP_A.lower(), FP_C)):
        na, nb = sorted((a.strip().lower(), b.strip().lower()))
        digest = hashlib.sha256(f"{na}|{nb}".encode()).digest()
        sas.append({"a": a, "b": b, "digest": digest.hex(), "indexes": [digest[i] & 31 for i in range(4)]})
    fp_pub = FP_B
    agent_key = AGENT.public_key.to_text()
    assertion_cases = []
    for name, payload, signer, reason in (
        ("ok", {"k": "kbz-agent-key.v1", "room": "room-salt", "fp": fp_pub, "iat": NOW - 30}, AGENT, None),
        ("stale", {"k": "kbz-agent-key.v1", "room": "room-salt", "fp": fp_pub, "iat": NOW - 301}, AGENT, "stale"),
        ("future", {"k": "kbz-agent-key.v1", "room": "room-salt", "fp": fp_pub, "iat": NOW + 61}, AGENT, "future"),
        ("other cert", {"k": "kbz-agent-key.v1", "room": "room-salt", "fp": FP_C.lower(), "iat": NOW},
         AGENT, "other-cert"),
        ("other room", {"k": "kbz-agent-key.v1", "room": "room-elsewhere", "fp": fp_pub, "iat": NOW},
         AGENT, "wrong-room"),
        ("other kind", {"k": "kbz-host-cmd.v1", "room": "room-salt", "fp": fp_pub, "iat": NOW}, AGENT,
         "wrong-kind"),
        ("unknown key", {"k": "kbz-agent-key.v1", "room": "room-salt", "fp": fp_pub, "iat": NOW}, STRANGER,
         "unknown-key"),
    ):
        assertion_cases.append({"name": name, "token": sign_token(signer, payload), "reason": reason})
    doc = {
        "about": "Golden vectors of kibitz.identity; see tests/vectors/make_identity_vectors.py.",
        "nonce": [
            {"fp": FP_A, "room": "room-salt", "nonce": "jr1LLr5BsB5Y2nbZiWzrzU2SCJjNQu4GuhlOyN361zo",
             "source": "the original engine's golden vector"},
            {"fp": "  " + FP_A.lower() + " ", "room": "Room Salt", "nonce": nonce(FP_A, "Room Salt")},
            {"fp": FP_B, "room": ROOM, "nonce": good_nonce},
            {"fp": FP_B, "room": ROOM, "salt": SALT, "nonce": nonce(FP_B, ROOM, SALT)},
        ],
        "der": [{"hex": (b"\x30\x03\x02\x01\x01").hex(),
                 "fp": ":".join(f"{x:02x}" for x in hashlib.sha256(b"\x30\x03\x02\x01\x01").digest())}],
        "sas": sas,
        "rsa": rsa_cases,
        "jwt": {"now": NOW, "room": ROOM, "fp": FP_B, "known_fps": [FP_A.lower(), FP_B],
                "jwks": {"keys": [jwk_of(key, "k1"), jwk_of(other, "k2"),
                                  {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"}]},
                "config": {"providers": [{"type": "email", "apiBase": EMAIL_ISS},
                                         {"type": "oidc", "issuer": OIDC_ISS, "clientId": CLIENT}]},
                "allowed": {"allowedDomains": ["@allowed.example"]},
                "cases": cases},
        "agent": {"now": NOW, "room": ROOM, "fp": fp_pub, "keys": [agent_key], "cases": assertion_cases},
    }
    OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(cases)} token cases)")


def _hs256(header: dict[str, Any], claims: dict[str, Any], secret: str) -> str:
    import hmac

    head = encode(header) + "." + encode(claims)
    return head + "." + b64(hmac.new(secret.encode(), head.encode(), hashlib.sha256).digest())


def _es256(claims: dict[str, Any]) -> str:
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    key = ec.generate_private_key(ec.SECP256R1())
    head = encode({"alg": "ES256", "kid": "k1"}) + "." + encode(claims)
    r, s = decode_dss_signature(key.sign(head.encode(), ec.ECDSA(hashes.SHA256())))
    return head + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def _rsa_cases(key: rsa.RSAPrivateKey) -> list[dict[str, Any]]:
    msg = b"kibitz rsa vector"
    sig = key.sign(msg, padding.PKCS1v15(), hashes.SHA256())
    pub = key.public_key().public_numbers()
    n_bytes = pub.n.to_bytes(256, "big")
    sha1 = key.sign(msg, padding.PKCS1v15(), hashes.SHA1())
    return [
        {"name": "valid", "msg": msg.hex(), "sig": sig.hex(), "ok": True},
        {"name": "other message", "msg": (msg + b"!").hex(), "sig": sig.hex(), "ok": False},
        {"name": "one bit flipped", "msg": msg.hex(), "sig": (sig[:-1] + bytes([sig[-1] ^ 1])).hex(), "ok": False},
        {"name": "short", "msg": msg.hex(), "sig": sig[1:].hex(), "ok": False},
        {"name": "equal to n", "msg": msg.hex(), "sig": n_bytes.hex(), "ok": False},
        {"name": "SHA-1 DigestInfo", "msg": msg.hex(), "sig": sha1.hex(), "ok": False},
        {"name": "zero", "msg": msg.hex(), "sig": ("00" * 256), "ok": False},
    ]


if __name__ == "__main__":
    main()
