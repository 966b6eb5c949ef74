"""Checks kibitz.identity against the golden vectors in identity.json, case by case.

The same function runs in CPython (tests/unit/test_identity_vectors.py) and in the page under Pyodide
(tests/e2e/test_crypto_page.py sends this file's text into the page and runs it there), so it uses
only the standard library and kibitz.
"""

from __future__ import annotations

from typing import Any

from kibitz.identity import (
    Identity,
    IdentityConfig,
    RsaPublicKey,
    fingerprint_of_der,
    identity_nonce,
    nonce_binds,
    safety_code,
    safety_words,
    verify_identity,
)
from kibitz.identity.agents import AgentKey, AgentProof, check_assertion
from kibitz.identity.binding import SAS_ALPHABET, SAS_NAMES
from kibitz.identity.jwt import parse_jwks


class Results:
    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[str] = []

    def check(self, case: str, ok: bool, detail: str = "") -> None:
        (self.passed if ok else self.failed).append(case if ok else f"{case}: {detail}")


def check_binding(v: dict[str, Any], out: Results) -> None:
    for i, c in enumerate(v["nonce"]):
        got = identity_nonce(c["fp"], c["room"], c.get("salt"))
        out.check(f"nonce[{i}]", got == c["nonce"], got)
        out.check(f"nonce[{i}].binds", nonce_binds(c["nonce"], c["fp"], c["room"]))
    for i, c in enumerate(v["der"]):
        got = fingerprint_of_der(bytes.fromhex(c["hex"]))
        out.check(f"der[{i}]", got == c["fp"], got)
    for i, c in enumerate(v["sas"]):
        want = "".join(SAS_ALPHABET[k] for k in c["indexes"])
        got = safety_code(c["a"], c["b"])
        out.check(f"sas[{i}]", got == want and safety_code(c["b"], c["a"]) == got, got)
        words = tuple(SAS_NAMES[k] for k in c["indexes"])
        out.check(f"sas[{i}].words", safety_words(c["a"], c["b"]) == words)


def check_rsa(v: dict[str, Any], out: Results) -> None:
    key = RsaPublicKey.from_jwk(v["jwt"]["jwks"]["keys"][0])
    for c in v["rsa"]:
        got = key.verify(bytes.fromhex(c["sig"]), bytes.fromhex(c["msg"]))
        out.check(f"rsa[{c['name']}]", got is c["ok"], str(got))


def check_tokens(v: dict[str, Any], out: Results) -> None:
    j = v["jwt"]
    keys = parse_jwks(j["jwks"])
    out.check("jwks.rsa-only", sorted(keys) == ["k1", "k2"], str(sorted(keys)))
    one = {"k1": keys["k1"]}
    no_kid = next(c for c in j["cases"] if c["name"].startswith("no kid"))
    alone = verify_identity(no_kid["token"], config=IdentityConfig.from_json(j["config"]),
                            keys_of=lambda p: one, fp=j["fp"], room=j["room"], now=j["now"])
    out.check("jwt[no kid, one key in the set]", isinstance(alone, Identity), repr(alone))
    plain = IdentityConfig.from_json(j["config"])
    narrow = IdentityConfig.from_json({**j["config"], **j["allowed"]})
    for c in j["cases"]:
        config = narrow if c.get("allowed") else plain
        got = verify_identity(c["token"], config=config, keys_of=lambda p: keys, fp=j["fp"], room=j["room"],
                              now=j["now"], known_fps=j["known_fps"])
        case = f"jwt[{c['name']}]"
        if "expect" in c:
            ok = isinstance(got, Identity) and got.email == c["expect"]["email"] \
                and got.provider == c["expect"]["provider"]
            out.check(case, ok, repr(got))
        else:
            out.check(case, not isinstance(got, Identity) and got.reason == c["reason"], repr(got))
    pending = verify_identity(j["cases"][0]["token"], config=plain, keys_of=lambda p: None, fp=j["fp"],
                              room=j["room"], now=j["now"])
    out.check("jwt[keys not loaded]", not isinstance(pending, Identity) and pending.reason == "no-keys")


def check_agents(v: dict[str, Any], out: Results) -> None:
    a = v["agent"]
    keys = [AgentKey(k) for k in a["keys"]]
    for c in a["cases"]:
        got = check_assertion(c["token"], keys, fp=a["fp"], room=a["room"], now=a["now"])
        if c["reason"] is None:
            out.check(f"agent[{c['name']}]", isinstance(got, AgentProof), repr(got))
        else:
            out.check(f"agent[{c['name']}]", not isinstance(got, AgentProof) and got.reason == c["reason"],
                      repr(got))


def check_all(v: dict[str, Any]) -> Results:
    out = Results()
    for fn in (check_binding, check_rsa, check_tokens, check_agents):
        try:
            fn(v, out)
        except Exception as exc:
            out.check(fn.__name__, False, f"raised {type(exc).__name__}: {exc}")
    return out
