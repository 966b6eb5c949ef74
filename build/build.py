"""Build the servable bundle in ``dist/`` from pinned, offline inputs.

Layout (the server serves ``dist/`` at ``/``; keep it stable)::

    dist/widget.js                 one classic script: the page's part (launcher, Kibitz.mount, page
                                   bridge, media shim) and the engine host its Worker runs
    dist/kibitz.d.ts               TypeScript declarations for MountOptions / MountedWidget
    dist/kibitz-sw.js              the offline service worker an embedding site copies and registers
    dist/kibitz-signin.html        where an OpenID Connect sign-in popup returns (its redirect URI)
    dist/pyodide-<ver>/            the Pyodide runtime files from node_modules/pyodide (npm pin)
    dist/wheels/*.whl              pinned PyPI wheels (sha256-checked) + the engine's own wheel
    dist/wheels/pyodide-lock.json  a lock holding only those wheels, with their real sha256
    dist/assets/pyodide-snapshot-<hash>.bin  the engine's memory snapshot, packed (only the pages the page
                                   must write), plus .br and .gz beside it (see "Compressed files")
    dist/assets/<side module>-<hash>.wasm    each compiled extension the snapshot holds (pydantic-core)
    dist/assets/site-packages-<hash>.tar     the wheels' files of modules the snapshot does not hold
                                   imported (for later lazy imports)
    dist/assets/python-stdlib-<hash>.zip     the standard library the snapshot boot mounts: what the
                                   snapshot does not hold imported, less what cannot run in a page
    dist/demo/index.html           two tabs with the same URL share a room (room id in the hash)
    dist/demo/embed.html           the one-liner as a third-party page uses it
    dist/demo/follow.html          follow-me: hash routing synced with broadcast/onMessage (headless)
    dist/whist/                    the reference game on the headless controller (apps/whist)
    dist/manifest.json             bytes and sha256 of every file (for benchmarks and caching), and
                                   ``firstLoad``: what a cold snapshot boot downloads, file by file

Compressed files: every big file a boot downloads gets ``<file>.br`` (brotli, quality 11) and
``<file>.gz`` (gzip -9) beside it, made once per content (cached in ``build/.cache/compressed/``).
``kibitz serve`` (and nginx's ``brotli_static``/``gzip_static``) send them with ``Content-Encoding``
to browsers that accept it, which decode them natively: Chromium and Firefox send ``br`` on https and
on http://127.0.0.1 / localhost, and only ``gzip, deflate`` on plain http to any other host.

Every run hashes its inputs first and returns at once when ``dist/.build-stamp`` matches, because
scripts/setup.sh calls it before every test and serve run. Downloads (``pip download``) happen only
when the cache in ``build/.cache/`` lacks a pinned wheel, and every wheel is checked against
``build/pins.json``: a mismatch fails the build loudly. The engine snapshot is made with Node (the
one that ran ``npm ci``) and cached in ``build/.cache/snapshot/`` under a key of its own inputs (the
runtime, every wheel, the engine wheel included); without Node the bundle has no snapshot and the
page boots plainly, loading the wheels through the lock.
"""

from __future__ import annotations

import argparse
import ast
import base64
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tokenize
import tomllib
import zipfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def _load_ship() -> Any:
    """build/ship.py (the version, the npm package, the pip wheel), without putting build/ on sys.path
    (build/build.py would shadow the `build` package there)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("kibitz_ship", Path(__file__).resolve().parent / "ship.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kibitz_ship"] = module
    spec.loader.exec_module(module)
    return module


ship = _load_ship()

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
DIST = ROOT / "dist"
CACHE = BUILD / ".cache" / "wheels"
PINS = BUILD / "pins.json"
ENGINE = ROOT / "engine" / "kibitz"
NODE_PYODIDE = ROOT / "node_modules" / "pyodide"
STAMP_NAME = ".build-stamp"
# JS sources concatenated into dist/widget.js, in this order, inside one IIFE: first what runs on the
# page's thread, then the engine host, wrapped in one function (ENGINE_HOST_HEAD) whose source the
# page starts as a module Worker (or calls itself where no Worker can start).
WIDGET_SOURCES = ["shim/page-shim.js", "widget/support.js", "widget/ui.css.js", "widget/moderation.js",
                  "widget/ui.js", "widget/identity.js", "widget/bridge.js", "widget/loader.js"]
ENGINE_HOST_SOURCES = ["shim/worker-shim.js", "widget/snapshot-fetch.js", "widget/snapshot.js",
                       "widget/engine-host.js"]
ENGINE_HOST_HEAD = "function kibitzEngineHost(port, BUILD, SERVER, flags) {\n\"use strict\";\n"
METHODS_MARKER = "/*__KIBITZ_METHODS__*/[]"
DTS_MARKER = "  /* @engine-members: build/build.py writes kibitz.controller.ENGINE_MEMBERS here */"
STATIC_SOURCES = {"widget/kibitz-sw.js": "kibitz-sw.js", "widget/signin.html": "kibitz-signin.html",
                  "widget/demo/index.html": "demo/index.html", "widget/demo/embed.html": "demo/embed.html",
                  "widget/demo/follow.html": "demo/follow.html"}
# The reference game (apps/whist, served at /whist/): the page and the modules it imports; the
# Python twin, its test harness and the kibitzer stay out of the bundle.
WHIST_FILES = ["index.html", "app.mjs", "table.mjs", "dealer.mjs", "client.mjs", "verify.mjs", "wire.mjs",
               "port.mjs", "rules.mjs"]
STATIC_SOURCES.update({f"apps/whist/{f}": f"whist/{f}" for f in WHIST_FILES})
# Fixed zip timestamps make the engine wheel byte-for-byte reproducible.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
BUILD_MARKER = "/*__KIBITZ_BUILD__*/null"
SNAPSHOT_CACHE = BUILD / ".cache" / "snapshot"
# Stdlib modules the engine uses beyond what Pyodide's start-up imports, imported first so the
# snapshot holds them whatever the engine's import order. Missing one here costs nothing: the
# engine imports below pull it in anyway. Every module held costs download bytes (the snapshot
# holds its code): list only what a session uses.
SNAPSHOT_IMPORTS = [
    "asyncio", "collections", "dataclasses", "datetime", "decimal", "email", "enum", "fractions", "heapq",
    "hmac", "importlib.metadata", "inspect", "ipaddress", "itertools", "json", "logging", "math", "numbers",
    "random", "re", "secrets", "struct", "sysconfig", "time", "typing", "uuid", "zipfile", "zoneinfo",
]
# What the snapshot holds imported: the page's engine (it imports everything a session needs at
# module level: an import after the restore compiles source on V8's baseline tier, and
# tests/e2e/test_boot_snapshot.py checks that opening a session imports nothing new). pyjwt is
# installed (its files are in the page) but not held: nothing in the engine imports it, and holding
# it (with the urllib, http and ssl modules it imports) cost 0.6 MB of download.
ENGINE_IMPORTS = ["kibitz.backends.browser", "kibitz.backends.worker_host"]
# Run by Node with a JSON config: boot the npm runtime with _makeSnapshot, install the wheels by
# hand, import the engine, describe every compiled side module it loaded (pydantic-core's), freeze
# the objects made so far out of the garbage collector, and write the snapshot and that record.
# A snapshot only holds the wasm heap: a side module's code and table entries are not in it, so the
# page must bind each module again at the same memory and table bases before Python calls into it
# (widget/snapshot.js); the record says where. A Node-made snapshot restores in Chromium (Python
# keeps no runtime-specific state; JS objects are re-bound by global path).
SNAPSHOT_SCRIPT = Path(__file__).resolve().parent / "make_snapshot.mjs"


class BuildError(RuntimeError):
    """Raised for anything that must stop the build with a clear message."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_pins() -> dict[str, Any]:
    pins: dict[str, Any] = json.loads(PINS.read_text())
    return pins


def canonical(name: str) -> str:
    """PEP 503 name, as Pyodide's loader canonicalises lock keys and depends."""
    return re.sub(r"[-_.]+", "-", name).lower()


def engine_files() -> list[Path]:
    """Everything in engine/kibitz that belongs in the wheel (sorted, caches excluded)."""
    out = []
    for p in sorted(ENGINE.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in {".py", ".typed"}:
            out.append(p)
    return out


def input_digest(pins: dict[str, Any]) -> str:
    """Hash of everything the output depends on: content for sources, size+mtime for big inputs."""
    h = hashlib.sha256()
    sources: list[Path] = [Path(__file__), BUILD / "ship.py", SNAPSHOT_SCRIPT, PINS, ROOT / "pyproject.toml"]
    sources += [ROOT / s for s in WIDGET_SOURCES + ENGINE_HOST_SOURCES] + [ROOT / s for s in STATIC_SOURCES]
    sources.append(ROOT / "widget" / "kibitz.d.ts")
    sources += engine_files()
    for p in sources:
        h.update(str(p.relative_to(ROOT)).encode() + b"\0")
        h.update(p.read_bytes() if p.exists() else b"<missing>")
    for name in [*pins["runtime_files"], "package.json"]:
        p = NODE_PYODIDE / name
        st = p.stat() if p.exists() else None
        h.update(f"{name}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}".encode())
    h.update(f"node:{shutil.which('node') is not None}".encode())  # a snapshot becomes possible
    for w in pins["wheels"]:
        p = CACHE / w["file"]
        st = p.stat() if p.exists() else None
        h.update(f"{w['file']}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Pinned wheels


def fetch_wheels(pins: dict[str, Any]) -> dict[str, Path]:
    """Make sure every pinned wheel is in the cache with its pinned sha256; download what is missing."""
    CACHE.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for w in pins["wheels"]:
        path = CACHE / w["file"]
        if not path.exists() or sha256_file(path) != w["sha256"]:
            download(w)
        got = sha256_file(path) if path.exists() else "<not downloaded>"
        if got != w["sha256"]:
            raise BuildError(
                f"sha256 mismatch for {w['file']}: pinned {w['sha256']}, got {got}. "
                "Refusing to build with an unpinned wheel (fix build/pins.json only on purpose)."
            )
        out[canonical(w["name"])] = path
    return out


def download(w: dict[str, Any]) -> None:
    """``pip download`` one pinned wheel into the cache (the registry is reached only here)."""
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.14", "-d", tmp, f"{w['name']}=={w['version']}"]
        if w.get("platform"):
            cmd[5:5] = ["--platform", w["platform"], "--implementation", "cp"]
        print(f"build: downloading {w['name']}=={w['version']}", file=sys.stderr)
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise BuildError(f"pip download {w['name']}=={w['version']} failed:\n{res.stderr.strip()}")
        got = Path(tmp) / w["file"]
        if not got.exists():
            names = sorted(os.listdir(tmp))
            raise BuildError(f"pip download gave {names}, expected {w['file']}")
        os.replace(got, CACHE / w["file"])


# ---------------------------------------------------------------------------------------------
# The engine's own wheel


def project_meta() -> tuple[str, list[str], str]:
    """(version, dependencies, requires-python); the version from its one place (build/ship.py)."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return ship.version(), list(meta.get("dependencies", [])), str(meta.get("requires-python", ""))


def build_engine_wheel(dest_dir: Path) -> tuple[Path, str]:
    """Write ``kibitz-<ver>+<hash>-py3-none-any.whl`` with only engine/kibitz; return (path, version).

    The local version label carries a content hash so a browser cache can never hand back a stale
    engine under the same URL (Pyodide would reject it on the lock's sha256 anyway).
    """
    version, deps, requires_python = project_meta()
    files = engine_files()
    content = hashlib.sha256()
    for p in files:
        content.update(str(p.relative_to(ENGINE)).encode() + b"\0" + p.read_bytes())
    full_version = f"{version}+{content.hexdigest()[:10]}"
    dist_info = f"kibitz-{full_version}.dist-info"
    entries: list[tuple[str, bytes]] = [
        ("kibitz/" + p.relative_to(ENGINE).as_posix(), p.read_bytes()) for p in files
    ]
    metadata = [
        "Metadata-Version: 2.1", "Name: kibitz", f"Version: {full_version}",
        "Summary: Kibitz engine core (the page's wheel: kibitz, kibitz.protocol, kibitz.backends)",
        "License: Apache-2.0",
    ]
    if requires_python:
        metadata.append(f"Requires-Python: {requires_python}")
    metadata += [f"Requires-Dist: {d}" for d in deps]
    wheel_txt = "Wheel-Version: 1.0\nGenerator: kibitz-build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    entries += [
        (f"{dist_info}/METADATA", ("\n".join(metadata) + "\n").encode()),
        (f"{dist_info}/WHEEL", wheel_txt.encode()),
        (f"{dist_info}/top_level.txt", b"kibitz\n"),
    ]
    record = []
    for name, data in entries:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    path = dest_dir / f"kibitz-{full_version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data, compresslevel=9)
    return path, full_version


# ---------------------------------------------------------------------------------------------
# Engine memory snapshot


def snapshot_key(pins: dict[str, Any], wheels: list[Path], node_version: str) -> str:
    """Hash of everything the snapshot holds: the runtime, every wheel it installs (engine included),
    what it imports, the script that makes it, the Node that runs it and how it is packed."""
    h = hashlib.sha256()
    for name in sorted(pins["runtime_files"]):
        h.update(f"{name}:{sha256_file(NODE_PYODIDE / name)}\n".encode())
    for w in sorted(wheels, key=lambda p: p.name):
        h.update(f"{w.name}:{sha256_file(w)}\n".encode())
    inputs = [SNAPSHOT_IMPORTS, ENGINE_IMPORTS, SNAPSHOT_SCRIPT.read_text(), node_version,
              SNAPSHOT_MAGIC.decode(), SNAPSHOT_PAGE, SNAPSHOT_PACKING]
    h.update(json.dumps(inputs).encode())
    return h.hexdigest()[:32]


def wheel_files(wheels: Iterable[Path]) -> dict[str, bytes]:
    """Every file the wheels install, by its path under site-packages (directories left out)."""
    files: dict[str, bytes] = {}
    for whl in wheels:
        with zipfile.ZipFile(whl) as zf:
            files.update((name, zf.read(name)) for name in zf.namelist() if not name.endswith("/"))
    return files


def make_snapshot(
    pins: dict[str, Any], wheels: list[Path], node: str | None = None
) -> tuple[Path, Path] | None:
    """The packed engine snapshot (see :func:`pack_snapshot`) and its record (both cached by
    :func:`snapshot_key`), or None when they cannot be made.

    None is not an error: the page then boots without a snapshot, only slower. The reason is printed.
    """
    node = node or shutil.which("node")
    if node is None:
        print("build: no `node` on PATH, so no engine snapshot (the page boots without one)",
              file=sys.stderr)
        return None
    try:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30,
                                 check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"build: `node --version` failed ({exc}); no engine snapshot", file=sys.stderr)
        return None
    key = snapshot_key(pins, wheels, version)
    cached, record = SNAPSHOT_CACHE / f"{key}.bin", SNAPSHOT_CACHE / f"{key}.json"
    if cached.exists() and record.exists():
        return cached, record
    SNAPSHOT_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=SNAPSHOT_CACHE) as tmp:
        raw, rec, site = Path(tmp) / "snapshot.raw", Path(tmp) / "record.json", Path(tmp) / "site"
        for name, data in wheel_files(wheels).items():
            (site / name).parent.mkdir(parents=True, exist_ok=True)
            (site / name).write_bytes(data)
        config = {"runtime": str(NODE_PYODIDE.resolve()), "out": str(raw), "record": str(rec),
                  "stdlib": SNAPSHOT_IMPORTS, "engine": ENGINE_IMPORTS, "site": str(site)}
        (Path(tmp) / "config.json").write_text(json.dumps(config))
        try:
            res = subprocess.run([node, str(SNAPSHOT_SCRIPT), str(Path(tmp) / "config.json")],
                                 capture_output=True, text=True, timeout=300, cwd=tmp)
        except subprocess.TimeoutExpired:
            print("build: making the engine snapshot timed out; none this time", file=sys.stderr)
            return None
        if res.returncode != 0 or not raw.exists() or not rec.exists():
            print(f"build: making the engine snapshot failed; none this time:\n{res.stderr.strip()[-2000:]}",
                  file=sys.stderr)
            return None
        image = wasm_data_image((NODE_PYODIDE / "pyodide.asm.wasm").read_bytes())
        info = json.loads(rec.read_text())
        heap = xor_side_module_data(raw.read_bytes(), info, site)
        (Path(tmp) / "snapshot.bin").write_bytes(pack_snapshot(heap, image))
        rec.write_text(json.dumps(info))
        os.replace(rec, record)
        os.replace(Path(tmp) / "snapshot.bin", cached)
    return cached, record


SNAPSHOT_PAGE = 4096
SNAPSHOT_MAGIC = b"KZS2"
SNAPSHOT_PACKING = 4  # bump when pack_snapshot changes what it writes (the cache key follows it)


def _leb(data: bytes, at: int, signed: bool = False) -> tuple[int, int]:
    """A LEB128 number at ``at`` (unsigned, or signed) and the offset just past it."""
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (value - (1 << shift) if signed and byte & 0x40 else value), at


def wasm_data_image(wasm: bytes) -> bytes:
    """The memory the runtime's active data segments fill when it is instantiated (the bytes from
    address 0 to the end of the last segment), or b"" when a segment's place is not a constant."""
    if wasm[:4] != b"\0asm":
        raise BuildError("pyodide.asm.wasm is not a wasm module")
    at = 8
    image = bytearray()
    while at < len(wasm):
        section = wasm[at]
        size, at = _leb(wasm, at + 1)
        end = at + size
        if section == 11:  # data
            count, at = _leb(wasm, at)
            for _ in range(count):
                mode, at = _leb(wasm, at)
                if mode == 1:  # passive: written later by memory.init, not by instantiation
                    length, at = _leb(wasm, at)
                    at += length
                    continue
                if mode == 2:
                    _, at = _leb(wasm, at)  # memory index
                if mode not in (0, 2) or wasm[at] != 0x41:  # i32.const
                    return b""
                offset, at = _leb(wasm, at + 1, signed=True)
                if wasm[at] != 0x0B:
                    return b""
                length, at = _leb(wasm, at + 1)
                if len(image) < offset + length:
                    image.extend(bytes(offset + length - len(image)))
                image[offset:offset + length] = wasm[at:at + length]
                at += length
        at = end
    return bytes(image)


def side_module_segments(wasm: bytes) -> list[tuple[int, bytes]]:
    """The data a side module's instantiation writes, as (offset from its memory base, bytes): its
    active segments placed at ``global.get $__memory_base`` (plus a constant). [] for any other
    form, which then gets no special treatment."""
    if wasm[:4] != b"\0asm":
        raise BuildError("not a wasm module")
    at = 8
    out: list[tuple[int, bytes]] = []
    while at < len(wasm):
        section = wasm[at]
        size, at = _leb(wasm, at + 1)
        end = at + size
        if section == 11:
            count, at = _leb(wasm, at)
            for _ in range(count):
                mode, at = _leb(wasm, at)
                if mode == 1:
                    length, at = _leb(wasm, at)
                    at += length
                    continue
                if mode == 2:
                    _, at = _leb(wasm, at)
                if mode not in (0, 2) or wasm[at] != 0x23:  # global.get
                    return []
                _, at = _leb(wasm, at + 1)
                offset = 0
                if wasm[at] == 0x41:  # i32.const c; i32.add
                    offset, at = _leb(wasm, at + 1, signed=True)
                    if wasm[at] != 0x6A:
                        return []
                    at += 1
                if wasm[at] != 0x0B:
                    return []
                length, at = _leb(wasm, at + 1)
                out.append((offset, wasm[at:at + length]))
                at += length
        at = end
    return out


def xor_side_module_data(raw: bytes, record: dict[str, Any], site: Path) -> bytes:
    """Pyodide's snapshot with each side module's live data XORed with what instantiating the module
    writes there, mostly zeros then (146 kB of pydantic-core's data compress to 8 kB). The page
    instantiates the module over those bytes and XORs them back (widget/snapshot.js,
    rebindSideModules); ``record`` gets the ranges (``xor``: offset from the memory base, length)."""
    header_len = int.from_bytes(raw[4:8], "little")
    heap = bytearray(raw)
    prefix = record["sitePackages"].rstrip("/") + "/"
    for lib in record["libs"]:
        path = site / lib["path"][len(prefix):] if lib["path"].startswith(prefix) else None
        segments = side_module_segments(path.read_bytes()) if path and path.is_file() else []
        lib["xor"] = []
        for offset, data in segments:
            if offset < 0 or offset + len(data) > lib["memorySize"]:
                raise BuildError(f"{lib['path']}: a data segment lies outside the module's memory")
            at = header_len + lib["memoryBase"] + offset
            mixed = int.from_bytes(heap[at:at + len(data)], "little") ^ int.from_bytes(data, "little")
            heap[at:at + len(data)] = mixed.to_bytes(len(data), "little")
            lib["xor"].append([offset, len(data)])
    return bytes(heap)


def page_hash(pages: Iterable[bytes]) -> int:
    """FNV-1a over the pages' little-endian 32-bit words: widget/snapshot.js computes the same over
    the runtime's memory to check the pages it keeps (not a security check: a mismatch only means
    this runtime was not set up as the build's was, and the page boots without the snapshot)."""
    h = 0x811C9DC5
    for page in pages:
        for word in memoryview(page).cast("I"):
            h = ((h ^ word) * 0x01000193) & 0xFFFFFFFF
    return h


def pack_snapshot(raw: bytes, image: bytes = b"") -> bytes:
    """Pyodide's snapshot as the page needs it: only the heap pages it must write.

    Each page is one of: all zero (filled), the same as the runtime's data segments put there at
    instantiation (``image``; kept as they are, after a check), or written from the file. Layout
    (little-endian u32s): magic ``KZS2``, Pyodide's header length, heap length, page size, page count,
    the kept pages' :func:`page_hash` and count; a bitmap of written pages and one of kept pages,
    each padded to 4 bytes; Pyodide's header (magic, build id, JS state); the written pages in order.
    widget/snapshot.js unpacks it into the heap."""
    header_len = int.from_bytes(raw[4:8], "little")
    if header_len % 16 or header_len >= len(raw):
        raise BuildError(f"unexpected Pyodide snapshot header length {header_len}")
    heap = memoryview(raw)[header_len:]
    count = -(-len(heap) // SNAPSHOT_PAGE)
    written, kept = bytearray(-(-count // 32) * 4), bytearray(-(-count // 32) * 4)
    pages: list[memoryview] = []
    same: list[bytes] = []
    zero = bytes(SNAPSHOT_PAGE)
    for n in range(count):
        start = n * SNAPSHOT_PAGE
        page = heap[start:start + SNAPSHOT_PAGE]
        if page == zero[:len(page)]:
            continue
        if start < len(image) and len(page) == SNAPSHOT_PAGE:
            base = image[start:start + SNAPSHOT_PAGE].ljust(SNAPSHOT_PAGE, b"\0")
            if page == base:
                kept[n >> 3] |= 1 << (n & 7)
                same.append(base)
                continue
        written[n >> 3] |= 1 << (n & 7)
        pages.append(page)
    head = b"".join(v.to_bytes(4, "little")
                    for v in (header_len, len(heap), SNAPSHOT_PAGE, count, page_hash(same), len(same)))
    return b"".join([SNAPSHOT_MAGIC, head, bytes(written), bytes(kept), raw[:header_len], *pages])


# Standard library files a page never needs, left out of the snapshot boot's stdlib: tools (tests,
# debuggers, profilers, docs, REPLs, packaging, command-line parsing and the modules' own command
# lines), what needs processes, sockets, terminals, a GUI, a database or another OS (Windows,
# macOS: ctypes, plistlib), file formats and config a page does not read, and pure-Python
# fallbacks of built-in C modules. Nothing the page can import names them in an import statement
# except the command-line entry points of held modules (ast, dis, inspect, random, uuid, zipfile:
# `main()`), platform's macOS/Windows branches and datetime's fallback for a missing C module; the
# engine imports none of them (tests/e2e/test_boot_snapshot.py checks every stdlib module the
# page's engine sources name). The plain boot keeps Pyodide's whole standard library.
STDLIB_LEFT_OUT = (
    "test/", "unittest/", "idlelib/", "tkinter/", "turtledemo/", "_pyrepl/", "pydoc_data/", "ensurepip/",
    "venv/", "lib2to3/", "curses/", "dbm/", "sqlite3/", "xmlrpc/", "wsgiref/", "multiprocessing/",
    "xml/", "html/", "ctypes/", "tomllib/", "__phello__/", "concurrent/interpreters/",
    "concurrent/futures/process.py", "concurrent/futures/interpreter.py", "asyncio/windows_events.py",
    "asyncio/windows_utils.py", "asyncio/proactor_events.py", "asyncio/__main__.py", "json/tool.py",
    "json/__main__.py", "zipfile/__main__.py", "sysconfig/__main__.py", "logging/config.py",
    "logging/handlers.py", "urllib/robotparser.py", "http/server.py", "http/cookies.py",
    "socketserver.py", "pydoc.py", "pdb.py", "bdb.py", "doctest.py", "turtle.py", "tabnanny.py",
    "pickletools.py", "profile.py", "cProfile.py", "pstats.py", "timeit.py", "trace.py",
    "tracemalloc.py", "code.py", "codeop.py", "cmd.py", "rlcompleter.py", "webbrowser.py",
    "antigravity.py", "this.py", "__hello__.py", "getpass.py", "pty.py", "tty.py", "imaplib.py",
    "poplib.py", "smtplib.py", "ftplib.py", "mailbox.py", "compileall.py", "py_compile.py", "zipapp.py",
    "pyclbr.py", "modulefinder.py", "runpy.py", "symtable.py", "argparse.py", "optparse.py",
    "difflib.py", "configparser.py", "fileinput.py", "filecmp.py", "statistics.py", "wave.py",
    "plistlib.py", "_pydatetime.py", "_pyio.py", "_osx_support.py", "_aix_support.py",
    "_android_support.py", "_ios_support.py", "site-packages/",
)
# Files of the installed wheels a page never needs: pydantic's copy of pydantic v1 and its mypy
# plugin (it imports mypy), the engine's CPython-only modules (aiortc backend, command lines, the
# in-memory test bus), test data, type stubs (.pyi: never imported), RECORD files (hashes for
# installers) and software bills of materials. Each METADATA keeps its headers (what
# importlib.metadata reads for versions, names, requirements), not the long description after them.
SITE_LEFT_OUT = ("pydantic/v1/", "pydantic/mypy.py", "kibitz/backends/aio.py", "kibitz/backends/aio_media.py",
                 "kibitz/backends/aio_cert.py", "kibitz/cli.py", "kibitz/room_cli.py", "kibitz/testing.py",
                 "annotated_types/test_cases.py")
CODING_LINE = re.compile(r"^[ \t\f]*#.*?coding[:=]")


def strip_comments(source: bytes) -> bytes:
    """Python source without its comments, every line where it was (tracebacks keep their line
    numbers). The result must parse to exactly the same tree, positions included, as the source, or
    the source comes back as it was (also when this Python cannot parse it: newer syntax)."""
    try:
        text = source.decode("utf-8")
        before = ast.dump(ast.parse(text), include_attributes=True)
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (SyntaxError, ValueError, UnicodeDecodeError, tokenize.TokenError):
        return source
    lines = text.splitlines(keepends=True)
    for tok in tokens:
        if tok.type != tokenize.COMMENT:
            continue
        row, col = tok.start
        line = lines[row - 1]
        if row <= 2 and CODING_LINE.match(line):
            continue
        lines[row - 1] = line[:col].rstrip() + ("\n" if line.endswith("\n") else "")
    out = "".join(lines)
    try:
        if ast.dump(ast.parse(out), include_attributes=True) != before:
            return source
    except SyntaxError:
        return source
    return out.encode("utf-8")


def _slim(name: str, data: bytes) -> bytes:
    if name.endswith(".py"):
        return strip_comments(data)
    if name.endswith(".dist-info/METADATA") and b"\n\n" in data:
        return data[:data.index(b"\n\n") + 1]
    return data


def snapshot_assets(record: dict[str, Any], wheels: list[Path], stage: Path) -> dict[str, Any]:
    """Write what the page needs beside the snapshot into ``stage/assets`` and return the build info
    for it: every side module the record names (as a content-hashed ``.wasm``, so the browser can
    compile it while streaming and cache the compiled code), a tar of the wheels' files and the
    standard library zip the snapshot boot mounts. The snapshot holds imported modules, not files:
    later lazy imports need files, but only of modules it does not hold, so the files of every module
    the record lists are left out of both."""
    site = record["sitePackages"].rstrip("/") + "/"
    held = set(record["modules"])
    files = wheel_files(wheels)
    libs = []
    for lib in record["libs"]:
        name = lib["path"][len(site):] if lib["path"].startswith(site) else ""
        data = files.pop(name, None)
        if data is None:
            raise BuildError(f"snapshot side module {lib['path']} is in none of the wheels")
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(name).name.split(".")[0])
        rel = f"assets/{stem}-{hashlib.sha256(data).hexdigest()[:16]}.wasm"
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_bytes(data)
        libs.append({**lib, "url": rel})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            if (site + name in held or name.startswith(SITE_LEFT_OUT) or ".dist-info/sboms/" in name
                    or name.endswith((".pyi", ".dist-info/RECORD"))):
                continue
            data = _slim(name, files[name])
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    pack = buf.getvalue()
    pack_rel = f"assets/site-packages-{hashlib.sha256(pack).hexdigest()[:16]}.tar"
    (stage / pack_rel).write_bytes(pack)
    stdlib = snapshot_stdlib(held)
    stdlib_rel = f"assets/python-stdlib-{hashlib.sha256(stdlib).hexdigest()[:16]}.zip"
    (stage / stdlib_rel).write_bytes(stdlib)
    return {"sitePackages": site, "pack": pack_rel, "stdlib": stdlib_rel, "libs": libs,
            "tableBefore": record["tableBefore"], "tableAfter": record["tableAfter"],
            "slots": record["slots"], "got": record["got"]}


def snapshot_stdlib(held: set[str]) -> bytes:
    """Pyodide's python_stdlib.zip without the modules the snapshot holds and without
    :data:`STDLIB_LEFT_OUT`, comments stripped, stored rather than deflated (brotli compresses the
    whole archive far better than deflate does file by file, and nothing inflates on import)."""
    buf = io.BytesIO()
    with (zipfile.ZipFile(NODE_PYODIDE / "python_stdlib.zip") as src,
          zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as out):
        prefix = next((f[:f.index(".zip/") + 5] for f in held if ".zip/" in f), None)
        for info in src.infolist():
            name = info.filename
            if name.endswith("/") or name.startswith(STDLIB_LEFT_OUT) or (prefix and prefix + name in held):
                continue
            entry = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            entry.external_attr = 0o644 << 16
            out.writestr(entry, _slim(name, src.read(info)))
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Compressed copies


COMPRESSED_CACHE = BUILD / ".cache" / "compressed"
BROTLI_QUALITY = 11
# Besides what a boot downloads, any file at least this big whose type the server compresses.
PRECOMPRESS_MIN_BYTES = 64 << 10
PRECOMPRESS_SUFFIXES = frozenset((".wasm", ".js", ".mjs", ".json", ".zip", ".tar", ".bin", ".html", ".ts"))
# The server sends a compressed copy only when it saves at least this much (server/kibitz_server/static.py).
PRECOMPRESS_MIN_SAVING = 0.05


def compress(data: bytes, encoding: str) -> bytes:
    """brotli (quality 11, 16 MiB window: the most a browser's decoder accepts) or gzip -9 of
    ``data``, cached by content (quality 11 takes about a minute for the runtime's wasm)."""
    key = hashlib.sha256(data).hexdigest()
    cached = COMPRESSED_CACHE / f"{key}.{encoding}{BROTLI_QUALITY if encoding == 'br' else 9}"
    if cached.exists():
        return cached.read_bytes()
    if encoding == "br":
        import brotli  # type: ignore[import-untyped,unused-ignore]  # the server's extra; setup installs it

        body: bytes = brotli.compress(data, quality=BROTLI_QUALITY, lgwin=24)
    else:
        body = gzip.compress(data, compresslevel=9, mtime=0)
    COMPRESSED_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(cached.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(body)
    os.replace(tmp, cached)
    return body


def precompress(stage: Path, rels: Iterable[str]) -> dict[str, dict[str, int]]:
    """Write ``<file>.br`` and ``<file>.gz`` beside each file under ``stage`` when it is worth it;
    return, per file, its raw size and what the server sends for each encoding (the compressed copy,
    or the file itself when compressing saves too little)."""
    todo = sorted(set(rels))
    jobs = [(rel, enc) for rel in todo for enc in ("br", "gz")]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # brotli lets go of the GIL
        bodies = list(pool.map(lambda job: compress((stage / job[0]).read_bytes(),
                                                    "br" if job[1] == "br" else "gzip"), jobs))
    sizes: dict[str, dict[str, int]] = {rel: {"raw": (stage / rel).stat().st_size} for rel in todo}
    for (rel, enc), body in zip(jobs, bodies, strict=True):
        raw = sizes[rel]["raw"]
        if len(body) < (1 - PRECOMPRESS_MIN_SAVING) * raw:
            (stage / f"{rel}.{enc}").write_bytes(body)
            sizes[rel]["br" if enc == "br" else "gzip"] = len(body)
        else:
            sizes[rel]["br" if enc == "br" else "gzip"] = raw
    return sizes


def first_load(
    build_info: dict[str, Any], sizes: dict[str, dict[str, int]], wheel_rels: list[str]
) -> dict[str, Any]:
    """What a cold boot downloads, file by file, raw and as sent with brotli (https, or http to
    127.0.0.1/localhost) and with gzip (plain http to another host): the snapshot boot's files, or
    the plain boot's (its runtime's stdlib and ``wheel_rels``) when the bundle has no snapshot."""
    snap = build_info["snapshot"]
    runtime = build_info["pyodide"]
    rels = ["widget.js", build_info["lock"].split("?")[0], *(runtime + n for n in RUNTIME_FETCHED)]
    if snap:
        rels += [snap["url"], snap["pack"], snap["stdlib"], *(lib["url"] for lib in snap["libs"])]
    else:
        rels += [runtime + "python_stdlib.zip", *wheel_rels]
    files = {rel: sizes[rel] for rel in rels}
    return {"files": files, **{k: sum(f[k] for f in files.values()) for k in ("raw", "br", "gzip")}}


# What the page fetches from the runtime's directory on either boot path (pyodide.js and the
# runtime's own lock are shipped but not fetched: the page imports pyodide.mjs and passes our lock).
RUNTIME_FETCHED = ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm")


# ---------------------------------------------------------------------------------------------
# Lock, widget, static files


def make_lock(
    pins: dict[str, Any], wheels_dir: Path, engine_whl: Path, engine_version: str
) -> dict[str, Any]:
    """A Pyodide lock with the runtime's ``info`` and entries for exactly our wheels."""
    runtime_lock = json.loads((NODE_PYODIDE / "pyodide-lock.json").read_text())
    packages: dict[str, Any] = {}
    for w in pins["wheels"]:
        key = canonical(w["name"])
        packages[key] = {
            "name": key, "version": w["version"], "file_name": w["file"], "install_dir": "site",
            "sha256": sha256_file(wheels_dir / w["file"]), "package_type": "package",
            "imports": list(w["imports"]), "depends": [canonical(d) for d in w["depends"]],
            "unvendored_tests": False, "tool": {},
        }
    packages["kibitz"] = {
        "name": "kibitz", "version": engine_version, "file_name": engine_whl.name, "install_dir": "site",
        "sha256": sha256_file(engine_whl), "package_type": "package", "imports": ["kibitz"],
        "depends": ["pydantic"], "unvendored_tests": False, "tool": {},
    }
    for key, entry in packages.items():
        missing = [d for d in entry["depends"] if d not in packages]
        if missing:
            raise BuildError(f"lock entry {key} depends on {missing}, which no pinned wheel provides")
    return {"info": runtime_lock["info"], "packages": dict(sorted(packages.items()))}


def closure(lock: dict[str, Any], roots: Iterable[str]) -> list[str]:
    """Every package name a preload of ``roots`` must end up loading (for the in-page check)."""
    seen: list[str] = []
    todo = [canonical(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.append(name)
        todo += lock["packages"][name]["depends"]
    return sorted(seen)


def controller_members() -> Any:
    """kibitz.controller, from the engine's sources (the one list of the controller's engine members)."""
    engine_dir = str(ROOT / "engine")
    if engine_dir not in sys.path:
        sys.path.insert(0, engine_dir)
    import kibitz.controller as controller

    controller.check_members()
    return controller


def engine_limits() -> dict[str, Any]:
    """What the page checks before handing app data to the engine, as the engine checks it."""
    controller_members()  # puts the engine's sources on the path
    from kibitz.content import AGENT_ENVELOPE
    from kibitz.protocol.content import MAX_APP_BYTES

    return {"maxAppBytes": MAX_APP_BYTES, "agentEnvelope": AGENT_ENVELOPE}


def _sources(rels: list[str]) -> str:
    return "\n".join(f"// ---- {rel}\n{(ROOT / rel).read_text().rstrip()}\n" for rel in rels)


def bundle_widget(build_info: dict[str, Any]) -> str:
    host = ENGINE_HOST_HEAD + _sources(ENGINE_HOST_SOURCES) + "}\n"
    body = _sources(WIDGET_SOURCES) + "\n// ---- the engine host (runs in the engine's Worker)\n" + host
    if BUILD_MARKER not in body:
        raise BuildError(f"{BUILD_MARKER} placeholder missing from the widget sources")
    if METHODS_MARKER not in body:
        raise BuildError(f"{METHODS_MARKER} placeholder missing from the widget sources")
    body = body.replace(BUILD_MARKER, json.dumps(build_info, sort_keys=True))
    body = body.replace(METHODS_MARKER, json.dumps(list(controller_members().ENGINE_METHODS)))
    header = ("/*! Kibitz widget.js — account-free P2P calls; the engine is Python (Pyodide).\n"
              " * Built by build/build.py; sources in shim/ and widget/. */\n")
    return header + "(() => {\n\"use strict\";\n" + body + "})();\n"


def typescript_declarations() -> str:
    """widget/kibitz.d.ts with the controller's engine members written in (kibitz.controller)."""
    text = (ROOT / "widget" / "kibitz.d.ts").read_text()
    if DTS_MARKER not in text:
        raise BuildError(f"widget/kibitz.d.ts lacks the line {DTS_MARKER.strip()!r}")
    return text.replace(DTS_MARKER, controller_members().typescript())


def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _raw_sizes(stage: Path) -> dict[str, dict[str, int]]:
    return {p.relative_to(stage).as_posix(): {"raw": p.stat().st_size, "br": 0, "gzip": 0}
            for p in stage.rglob("*") if p.is_file()}


def build(stage: Path, pins: dict[str, Any]) -> dict[str, Any]:
    """Write the whole bundle into ``stage`` (a fresh directory)."""
    version = pins["pyodide"]
    npm_version = json.loads((NODE_PYODIDE / "package.json").read_text())["version"]
    if npm_version != version:
        raise BuildError(f"node_modules/pyodide is {npm_version}, pinned {version}: run scripts/setup.sh")
    runtime_dir = f"pyodide-{version}"
    for name in pins["runtime_files"]:
        src = NODE_PYODIDE / name
        if not src.exists():
            raise BuildError(f"{src} is missing: run scripts/setup.sh (npm ci)")
        link_or_copy(src, stage / runtime_dir / name)

    cached = fetch_wheels(pins)
    wheels = stage / "wheels"
    wheels.mkdir(parents=True)
    for path in cached.values():
        link_or_copy(path, wheels / path.name)
    engine_whl, engine_version = build_engine_wheel(wheels)
    lock = make_lock(pins, wheels, engine_whl, engine_version)
    lock_text = json.dumps(lock, indent=1, sort_keys=True) + "\n"
    (wheels / "pyodide-lock.json").write_text(lock_text)
    lock_hash = hashlib.sha256(lock_text.encode()).hexdigest()[:16]

    preload = list(pins["preload"])
    expect = closure(lock, preload)
    snapshot_wheels = [wheels / lock["packages"][name]["file_name"] for name in expect]
    made = make_snapshot(pins, snapshot_wheels)
    snapshot_info = None
    if made is not None:
        snapshot, record = made
        # Content-hashed names under assets/ (served immutable), compressed copies beside them.
        snapshot_info = {"url": f"assets/pyodide-snapshot-{sha256_file(snapshot)[:16]}.bin",
                         **snapshot_assets(json.loads(record.read_text()), snapshot_wheels, stage)}
        link_or_copy(snapshot, stage / snapshot_info["url"])

    build_info = {
        "version": project_meta()[0],
        "engine": engine_version,
        "pyodide": runtime_dir + "/",
        "lock": f"wheels/pyodide-lock.json?v={lock_hash}",
        "packages": "wheels/",
        "preload": preload,
        "expect": expect,
        "snapshot": snapshot_info,
        "limits": engine_limits(),
    }
    (stage / "widget.js").write_text(bundle_widget(build_info))
    (stage / "kibitz.d.ts").write_text(typescript_declarations())
    for rel, out in STATIC_SOURCES.items():
        dst = stage / out
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, dst)

    big = [p.relative_to(stage).as_posix() for p in stage.rglob("*")
           if p.is_file() and p.suffix in PRECOMPRESS_SUFFIXES and p.stat().st_size >= PRECOMPRESS_MIN_BYTES]
    plain = [f"wheels/{lock['packages'][name]['file_name']}" for name in expect]
    sizes = precompress(stage, [*big, *first_load(build_info, _raw_sizes(stage), plain)["files"]])
    manifest: dict[str, Any] = {"build": build_info, "files": {},
                                "firstLoad": first_load(build_info, sizes, plain)}
    for p in sorted(stage.rglob("*")):
        if p.is_file():
            manifest["files"][p.relative_to(stage).as_posix()] = {"bytes": p.stat().st_size,
                                                                  "sha256": sha256_file(p)}
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    ship.write_npm(stage)  # dist/npm/: after the manifest (a page never fetches it from the server)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if inputs are unchanged")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--wheel", metavar="OUTDIR", default=None,
                        help="then also write the pip wheel, the bundle inside (kibitz[server]), to OUTDIR")
    args = parser.parse_args(argv)
    code = build_dist(args)
    if code == 0 and args.wheel:
        ship.build_wheel(DIST, Path(args.wheel).resolve(), quiet=args.quiet)
    return code


def build_dist(args: argparse.Namespace) -> int:
    """dist/ (a no-op when its inputs are unchanged)."""
    t0 = time.perf_counter()
    pins = load_pins()
    digest = input_digest(pins)
    stamp = DIST / STAMP_NAME
    if not args.force and stamp.exists() and stamp.read_text().strip() == digest:
        return 0
    (BUILD / ".cache").mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix="dist.", dir=BUILD / ".cache"))
    try:
        build(stage, pins)
        # Inputs may have changed during the build (the wheel cache did if we downloaded).
        (stage / STAMP_NAME).write_text(input_digest(pins) + "\n")
        os.chmod(stage, 0o755)
        old = None
        if DIST.exists():
            old = BUILD / ".cache" / f"dist-old-{os.getpid()}"
            os.replace(DIST, old)
        os.replace(stage, DIST)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if not args.quiet:
        print(f"build: dist/ rebuilt in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except (BuildError, ship.ShipError) as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
