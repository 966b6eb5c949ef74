"""kibitz.crypto in the page: the golden vectors under Pyodide in real Chromium, and WebCrypto interop.

The page is a third-party origin whose only script is widget.js from the real ``kibitz serve``
(so the engine wheel, the shim and the Pyodide runtime are the shipped bundle's). The test hook
``Kibitz._engine()`` hands over the page's own interpreter, which runs tests/vectors/crypto_check.py
over tests/vectors/crypto.json, the same code and file the CPython unit test runs; sealing goes
through ``crypto.subtle`` there. Then tokens cross between WebCrypto ECDSA and our P-256 both ways,
checked in the page and in CPython.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from browser_guard import guarded_context
from page_vectors import VECTORS_DIR, check_in_page, run_py, vectors
from playwright.sync_api import Browser, Page
from server_fixture import KibitzServer
from static_server import ensure_dist, serve

from kibitz.crypto import PublicKey, Refusal, verify_token
from kibitz.crypto.backends import CPythonCrypto

sys.path.insert(0, str(VECTORS_DIR))

from crypto_check import check_all

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>crypto</title></head><body>
<script src="{widget}"></script></body></html>"""

CHECK_VECTORS = """
import json, sys, types
mod = types.ModuleType("crypto_check")
sys.modules["crypto_check"] = mod
exec(compile(CHECK_SOURCE, "crypto_check.py", "exec"), mod.__dict__)
from kibitz.crypto import default_backend
backend = default_backend()
results = await mod.check_all(json.loads(VECTORS), backend)
json.dumps({"platform": sys.platform, "backend": type(backend).__name__,
            "passed": results.passed, "failed": results.failed})
"""

# base64url both ways, and the ECDSA parameters, for the page scripts below.
JS_HELPERS = """
  const enc = new TextEncoder();
  const b64 = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
    .replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
  const unb64 = (s) => Uint8Array.from(atob(s.replaceAll('-', '+').replaceAll('_', '/')),
    (c) => c.charCodeAt(0));
  const curve = { name: 'ECDSA', namedCurve: 'P-256' };
  const alg = { name: 'ECDSA', hash: 'SHA-256' };
"""

WEBCRYPTO_SIGNS = """async (payload) => {""" + JS_HELPERS + """
  const kp = await crypto.subtle.generateKey(curve, true, ['sign', 'verify']);
  const { kty, crv, x, y } = await crypto.subtle.exportKey('jwk', kp.publicKey);
  const body = b64(enc.encode(JSON.stringify(payload)));
  const sig = await crypto.subtle.sign(alg, kp.privateKey, enc.encode(body));
  return { jwk: { kty, crv, x, y }, token: body + '.' + b64(sig) };
}"""

VERIFY_IN_PAGE = """
import json
from kibitz.crypto import PublicKey, Refusal, verify_token
got = verify_token(PublicKey.from_jwk(json.loads(JWK)), TOKEN)
json.dumps(got if not isinstance(got, Refusal) else {"refused": got.reason})
"""

PYTHON_SIGNS = """
import json
from kibitz.crypto import PrivateKey, sign_token
key = PrivateKey.generate()
json.dumps({"token": sign_token(key, json.loads(PAYLOAD)), "public": key.public_key.to_jwk(),
            "private": key.to_jwk(), "text": key.public_key.to_text()})
"""

WEBCRYPTO_VERIFIES = """async ({ token, pub, priv }) => {""" + JS_HELPERS + """
  const key = await crypto.subtle.importKey('jwk', pub, curve, false, ['verify']);
  const [body, sig] = token.split('.');
  const ok = await crypto.subtle.verify(alg, key, unb64(sig), enc.encode(body));
  const tampered = await crypto.subtle.verify(alg, key, unb64(sig), enc.encode(body + 'x'));
  // Our private JWK imported into WebCrypto signs what our Python verifies.
  const sk = await crypto.subtle.importKey('jwk', priv, curve, false, ['sign']);
  const body2 = b64(enc.encode(JSON.stringify({ from: 'webcrypto with our key' })));
  const sig2 = await crypto.subtle.sign(alg, sk, enc.encode(body2));
  return { ok, tampered, token2: body2 + '.' + b64(sig2) };
}"""


@pytest.fixture(scope="module")
def page(
    browser: Browser, kibitz_server: KibitzServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Page]:
    ensure_dist()
    outside: list[str] = []
    pages = {"/crypto.html": PAGE.format(widget=f"{kibitz_server.http}/widget.js")}
    with serve(tmp_path_factory.mktemp("crypto-origin"), pages) as origin:
        ctx = guarded_context(browser, outside)
        pg = ctx.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto(f"{origin.url}/crypto.html")
        pg.wait_for_function("() => window.Kibitz && window.Kibitz._engine", timeout=10_000)
        yield pg
        ctx.close()
        assert errors == [], f"uncaught page errors: {errors}"
        assert outside == [], f"requests left 127.0.0.1: {outside}"
        assert origin.errors() == []


def test_the_golden_vectors_pass_in_the_page_as_in_cpython(page: Page) -> None:
    cases = vectors("crypto")
    source = (VECTORS_DIR / "crypto_check.py").read_text(encoding="utf-8")
    got = run_py(page, CHECK_VECTORS, CHECK_SOURCE=source, VECTORS=cases)
    assert got["platform"] == "emscripten" and got["backend"] == "WebCrypto"
    assert got["failed"] == []
    # Sync Playwright owns this thread's event loop: the CPython run gets a thread of its own.
    with ThreadPoolExecutor(1) as pool:
        here = pool.submit(asyncio.run, check_all(json.loads(cases), CPythonCrypto())).result()
    assert here.failed == []
    assert got["passed"] == here.passed  # the very same cases, in the same order


def test_a_webcrypto_token_verifies_with_our_python_in_the_page_and_in_cpython(page: Page) -> None:
    payload = {"name": "Zoë 🦊", "room": "room-interop", "exp": 4102444800, "tags": ["a", "b"]}
    made = page.evaluate(WEBCRYPTO_SIGNS, payload)
    in_page = run_py(page, VERIFY_IN_PAGE, JWK=json.dumps(made["jwk"]), TOKEN=made["token"])
    assert in_page == payload
    assert verify_token(PublicKey.from_jwk(made["jwk"]), made["token"]) == payload
    body, sig = made["token"].split(".")
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    refused = run_py(page, VERIFY_IN_PAGE, JWK=json.dumps(made["jwk"]), TOKEN=f"{body}.{flipped}")
    assert refused == {"refused": "bad-signature"}
    assert isinstance(verify_token(PublicKey.from_jwk(made["jwk"]), f"{body}.{flipped}"), Refusal)


def test_our_tokens_and_keys_work_in_webcrypto(page: Page) -> None:
    payload = {"k": "kbz-host-cmd.v1", "room": "room-interop", "op": "lock", "iat": 1767225600}
    ours = run_py(page, PYTHON_SIGNS, PAYLOAD=json.dumps(payload))
    result = page.evaluate(
        WEBCRYPTO_VERIFIES, {"token": ours["token"], "pub": ours["public"], "priv": ours["private"]}
    )
    assert result["ok"] is True and result["tampered"] is False
    pub = PublicKey.from_text(ours["text"])
    assert verify_token(pub, ours["token"]) == payload
    assert verify_token(pub, result["token2"]) == {"from": "webcrypto with our key"}
    in_page = run_py(page, VERIFY_IN_PAGE, JWK=json.dumps(ours["public"]), TOKEN=result["token2"])
    assert in_page == {"from": "webcrypto with our key"}


def test_the_identity_vectors_pass_in_the_page_as_in_cpython(page: Page) -> None:
    """Cert binding (the original's nonce vector), safety codes, pure-Python RS256 and every token
    refusal give the same answers under Pyodide as in CPython (tests/vectors/identity.json)."""
    sys.path.insert(0, str(VECTORS_DIR))
    from identity_check import check_all as check_identity

    got = check_in_page(page, "identity")
    assert got["platform"] == "emscripten"
    assert got["failed"] == []
    here = check_identity(json.loads(vectors("identity")))
    assert here.failed == []
    assert got["passed"] == here.passed and len(here.passed) >= 60
