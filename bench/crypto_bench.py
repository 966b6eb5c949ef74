"""Crypto primitives benchmark: kibitz.crypto in CPython and in the page (Pyodide, real Chromium).

The same Python snippet runs in both places: it times key generation, ECDSA P-256 sign and verify
(pure Python), the compact token (sign/verify of an invite), a public key parse (the on-curve check),
the one-off base-point table, and the PBKDF2-bound operations (seal, unseal, a code key) through
the platform's backend (``hashlib`` + ``cryptography`` in CPython, WebCrypto in the page). For
scale, the page also times WebCrypto's own native ECDSA sign and verify.

Each figure is the median over batches of the per-call time; the page's clock is coarsened by the
browser (0.1 ms), so fast operations are timed in batches long enough for it.

Run: ``.venv/bin/python bench/crypto_bench.py`` (``--quick`` for a smoke run, ``--no-write``).
Prints a markdown section and writes it into ``## Crypto primitives`` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

from bench_docs import machine, replace_section  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from server_fixture import running_kibitz_server  # noqa: E402
from static_server import ensure_dist, serve  # noqa: E402

SECTION = "## Crypto primitives"
CHROMIUM = os.environ.get("KIBITZ_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>bench</title></head><body>
<script src="{widget}"></script></body></html>"""

# Runs unchanged in CPython and under Pyodide; ``SCALE`` (1.0 full, smaller for --quick) sets the
# batch counts. The last expression is the JSON result.
BENCH_PY = """
import json, statistics, time
from kibitz.crypto import (PrivateKey, PublicKey, default_backend, derive_code_key, seal, sign_token,
                           unseal, verify_token)
from kibitz.crypto import p256

def batch_size(fn, min_batch_s=0.02):
    calls = 1
    while True:  # grow the batch until it is long enough for a coarse clock
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        if time.perf_counter() - t0 >= min_batch_s or calls >= 4096:
            return calls
        calls *= 2

def per_call_ms(ops, rounds):
    # {name: median ms per call}; the ops are timed in turn each round, so a burst of load on the
    # shared machine hits all of them alike instead of whichever ran at that moment.
    sizes = {name: batch_size(fn) for name, fn in ops.items()}
    times = {name: [] for name in ops}
    for _ in range(max(3, rounds)):
        for name, fn in ops.items():
            calls = sizes[name]
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - t0) / calls * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}

def build_table():
    p256._g_table = None
    p256._base_table()

async def per_call_async_ms(fn, runs):
    times = []
    for _ in range(max(2, runs)):
        t0 = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)

async def bench(scale):
    n = max(3, int(30 * scale))
    out = {}
    key = PrivateKey.generate()
    pub = key.public_key
    message = bytes(range(100))
    sig = key.sign(message)
    invite = {"name": "Dana", "room": "room-3f9k2mq7p1", "exp": 1893456000}
    token = sign_token(key, invite)
    text = pub.to_text()
    assert pub.verify(sig, message) and verify_token(pub, token) == invite
    # Warm up: the page's wasm interpreter runs on V8's baseline tier until its hot code is
    # recompiled, which takes a few hundred milliseconds of work.
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 1.0 * min(1.0, scale * 4):
        key.sign(message)
        pub.verify(sig, message)
    out.update(per_call_ms({
        "generate_ms": PrivateKey.generate,
        "sign_ms": lambda: key.sign(message),
        "verify_ms": lambda: pub.verify(sig, message),
        "sign_token_ms": lambda: sign_token(key, invite),
        "verify_token_ms": lambda: verify_token(pub, token),
        "parse_public_ms": lambda: PublicKey.from_text(text),
        "table_ms": build_table,
    }, n))
    backend = default_backend()
    slow = max(2, int(5 * scale))
    blob = await seal("correct horse battery staple", key.to_text().encode(), backend=backend)
    out["seal_ms"] = await per_call_async_ms(
        lambda: seal("correct horse battery staple", key.to_text().encode(), backend=backend), slow)
    out["unseal_ms"] = await per_call_async_ms(
        lambda: unseal("correct horse battery staple", blob, backend=backend), slow)
    out["code_key_ms"] = await per_call_async_ms(
        lambda: derive_code_key("4711", bytes(16), backend=backend), slow)
    out["backend"] = type(backend).__name__
    return out

json.dumps(await bench(SCALE))
"""

RUN_IN_PAGE = """async ([code, scale]) => {
  const py = await window.Kibitz._engine();
  py.globals.set('SCALE', scale);
  return await py.runPythonAsync(code);
}"""

# Native WebCrypto ECDSA for scale: the browser's own C++ implementation, awaited call by call.
WEBCRYPTO_ECDSA = """async (runs) => {
  const alg = { name: 'ECDSA', hash: 'SHA-256' };
  const curve = { name: 'ECDSA', namedCurve: 'P-256' };
  const kp = await crypto.subtle.generateKey(curve, false, ['sign', 'verify']);
  const msg = new Uint8Array(100).map((_, i) => i);
  const sig = await crypto.subtle.sign(alg, kp.privateKey, msg);
  const median = (xs) => xs.sort((a, b) => a - b)[xs.length >> 1];
  const time = async (fn) => { const out = [];
    for (let i = 0; i < runs; i++) { const t0 = performance.now();
      for (let j = 0; j < 20; j++) await fn();
      out.push((performance.now() - t0) / 20); }
    return median(out); };
  return { sign_ms: await time(() => crypto.subtle.sign(alg, kp.privateKey, msg)),
           verify_ms: await time(() => crypto.subtle.verify(alg, kp.publicKey, sig, msg)) };
}"""


def run_cpython(scale: float) -> dict[str, Any]:
    async def main() -> str:
        scope: dict[str, Any] = {"SCALE": scale}
        body = BENCH_PY.strip().rsplit("\n", 1)[0]  # all but the last line (top-level await)
        exec(compile(body, "crypto_bench_py", "exec"), scope)
        return json.dumps(await scope["bench"](scale))

    return dict(json.loads(asyncio.run(main())))


def run_page(scale: float) -> tuple[dict[str, Any], dict[str, float], str]:
    dist = ensure_dist()
    with running_kibitz_server() as srv, serve(dist) as origin, sync_playwright() as p:
        origin.pages["/crypto-bench.html"] = PAGE.format(widget=f"{srv.http}/widget.js")
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(origin.url + "/crypto-bench.html")
            page.wait_for_function("() => window.Kibitz && window.Kibitz._engine", timeout=10_000)
            page_py = json.loads(page.evaluate(RUN_IN_PAGE, [BENCH_PY, scale]))
            native = page.evaluate(WEBCRYPTO_ECDSA, max(3, int(15 * scale)))
            version = browser.version
        finally:
            browser.close()
    return page_py, native, version


ROWS = [
    ("verify_ms", "ECDSA verify (100-byte message)"),
    ("sign_ms", "ECDSA sign, RFC 6979 nonce"),
    ("verify_token_ms", "`verify_token` (an invite, 150 characters)"),
    ("sign_token_ms", "`sign_token` (the same invite)"),
    ("generate_ms", "`PrivateKey.generate` (a scalar multiplication)"),
    ("parse_public_ms", "`PublicKey.from_text` (decode + on-curve check)"),
    ("table_ms", "base-point table (64 points), built once on first use"),
    ("seal_ms", "`seal` (PBKDF2 210 000 + AES-GCM)"),
    ("unseal_ms", "`unseal`"),
    ("code_key_ms", "`derive_code_key` (PBKDF2 210 000)"),
]


def fmt(ms: float) -> str:
    return f"{ms:.3f} ms" if ms < 1 else f"{ms:.2f} ms" if ms < 10 else f"{ms:.0f} ms"


def render(
    cpy: dict[str, Any], page: dict[str, Any], native: dict[str, float], head: str, browser: str
) -> str:
    lines = [
        SECTION,
        "",
        head,
        "",
        f"Pure-Python P-256 (`kibitz.crypto`) in CPython and in the page (Pyodide in Chromium {browser}, "
        "headless); sealing and code keys go through the platform's backend "
        f"(CPython: `{cpy['backend']}` = hashlib + cryptography; page: `{page['backend']}` = crypto.subtle). "
        "Medians of per-call times (`bench/crypto_bench.py`).",
        "",
        "| operation | CPython | page (Pyodide) | page / CPython |",
        "|---|---:|---:|---:|",
    ]
    for key, label in ROWS:
        lines.append(f"| {label} | {fmt(cpy[key])} | {fmt(page[key])} | {page[key] / cpy[key]:.1f}× |")
    lines += [
        "",
        f"For scale, the browser's native WebCrypto ECDSA in the same page: sign {fmt(native['sign_ms'])}, "
        f"verify {fmt(native['verify_ms'])} (awaited one by one). Our verify is slower but synchronous, "
        "deterministic and the same code in every environment; a coordinator checking one host command "
        "or invite per join spends a few milliseconds on it.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="few batches (a smoke run)")
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = ap.parse_args(argv)
    scale = 0.1 if args.quick else 1.0
    head = machine()
    cpy = run_cpython(scale)
    page, native, browser = run_page(scale)
    body = render(cpy, page, native, head, browser)
    print(body)
    if not args.no_write:
        replace_section(SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
