"""Build the servable bundle in ``dist/`` from pinned, offline inputs.

Layout (the server serves ``dist/`` at ``/``; keep it stable)::

    dist/widget.js                 the loader: shim + launcher + Kibitz.mount, one classic script
    dist/kibitz.d.ts               TypeScript declarations for MountOptions / MountedWidget
    dist/kibitz-sw.js              the offline service worker an embedding site copies and registers
    dist/pyodide-<ver>/            the Pyodide runtime files from node_modules/pyodide (npm pin)
    dist/wheels/*.whl              pinned PyPI wheels (sha256-checked) + the engine's own wheel
    dist/wheels/pyodide-lock.json  a lock holding only those wheels, with their real sha256
    dist/assets/pyodide-snapshot-<hash>.bin  gzip'd engine memory snapshot (engine + wheels imported)
    dist/assets/<side module>-<hash>.wasm    each compiled extension the snapshot holds (pydantic-core)
    dist/assets/site-packages-<hash>.tar     the snapshot's installed wheels, as files (lazy imports)
    dist/demo/index.html           two tabs with the same URL share a room (room id in the hash)
    dist/demo/embed.html           the one-liner as a third-party page uses it
    dist/demo/follow.html          follow-me: hash routing synced with broadcast/onMessage (headless)
    dist/whist/                    the reference game on the headless controller (apps/whist)
    dist/manifest.json             bytes and sha256 of every file (for benchmarks and caching)

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
import tomllib
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
DIST = ROOT / "dist"
CACHE = BUILD / ".cache" / "wheels"
PINS = BUILD / "pins.json"
ENGINE = ROOT / "engine" / "kibitz"
NODE_PYODIDE = ROOT / "node_modules" / "pyodide"
STAMP_NAME = ".build-stamp"
# JS sources concatenated into dist/widget.js, in this order, inside one IIFE.
WIDGET_SOURCES = ["shim/shim.js", "widget/ui.css.js", "widget/moderation.js", "widget/ui.js",
                  "widget/snapshot.js", "widget/loader.js"]
STATIC_SOURCES = {"widget/kibitz.d.ts": "kibitz.d.ts", "widget/kibitz-sw.js": "kibitz-sw.js",
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
# engine imports below pull it in anyway.
SNAPSHOT_IMPORTS = [
    "asyncio", "collections", "dataclasses", "datetime", "decimal", "email", "encodings.cp437", "enum",
    "fractions", "heapq", "hmac", "importlib.metadata", "inspect", "ipaddress", "itertools", "json",
    "logging", "math", "numbers", "random", "re", "secrets", "struct", "sysconfig", "tarfile", "time",
    "typing", "uuid", "zipfile", "zoneinfo",
]
# What the snapshot holds imported: the page's engine (it imports everything a session needs at
# module level: an import after the restore compiles source on V8's baseline tier, and
# tests/e2e/test_boot_snapshot.py checks that opening a session imports nothing new) and pyjwt,
# which the bundle preloads as the plain boot's loadPackage does (nothing in the engine imports it
# yet; identity tokens will).
ENGINE_IMPORTS = ["kibitz.backends.browser", "jwt"]
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
    sources: list[Path] = [Path(__file__), SNAPSHOT_SCRIPT, PINS, ROOT / "pyproject.toml"]
    sources += [ROOT / s for s in WIDGET_SOURCES] + [ROOT / s for s in STATIC_SOURCES]
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
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return str(meta["version"]), list(meta.get("dependencies", [])), str(meta.get("requires-python", ""))


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
    what it imports, the script that makes it and the Node that runs it."""
    h = hashlib.sha256()
    for name in sorted(pins["runtime_files"]):
        h.update(f"{name}:{sha256_file(NODE_PYODIDE / name)}\n".encode())
    for w in sorted(wheels, key=lambda p: p.name):
        h.update(f"{w.name}:{sha256_file(w)}\n".encode())
    inputs = [SNAPSHOT_IMPORTS, ENGINE_IMPORTS, SNAPSHOT_SCRIPT.read_text(), node_version,
              SNAPSHOT_MAGIC.decode()]
    h.update(json.dumps(inputs).encode())
    return h.hexdigest()[:32]


def make_snapshot(
    pins: dict[str, Any], wheels: list[Path], node: str | None = None
) -> tuple[Path, Path] | None:
    """The gzip'd engine snapshot and its side-module record (both cached by :func:`snapshot_key`),
    or None when they cannot be made.

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
        raw, rec = Path(tmp) / "snapshot.raw", Path(tmp) / "record.json"
        config = {"runtime": str(NODE_PYODIDE.resolve()), "out": str(raw), "record": str(rec),
                  "stdlib": SNAPSHOT_IMPORTS, "engine": ENGINE_IMPORTS,
                  "wheels": [str(w.resolve()) for w in wheels]}
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
        # Fixed mtime and no name: the same raw snapshot always gives the same file.
        with ((Path(tmp) / "snapshot.gz").open("wb") as dst,
              gzip.GzipFile(filename="", mode="wb", fileobj=dst, compresslevel=9, mtime=0) as gz):
            gz.write(pack_snapshot(raw.read_bytes()))
        os.replace(rec, record)
        os.replace(Path(tmp) / "snapshot.gz", cached)
    return cached, record


SNAPSHOT_PAGE = 4096
SNAPSHOT_MAGIC = b"KZS1"


def pack_snapshot(raw: bytes) -> bytes:
    """Pyodide's snapshot without the heap's all-zero pages (~40 % of it), so the page inflates and
    copies less. Layout (little-endian u32s): magic ``KZS1``, Pyodide's header length, heap length,
    page size, page count; a bitmap of non-zero pages padded to 4 bytes; Pyodide's header (magic,
    build id, JS state); the non-zero pages in order. widget/snapshot.js writes them into the heap."""
    header_len = int.from_bytes(raw[4:8], "little")
    if header_len % 16 or header_len >= len(raw):
        raise BuildError(f"unexpected Pyodide snapshot header length {header_len}")
    heap = memoryview(raw)[header_len:]
    count = -(-len(heap) // SNAPSHOT_PAGE)
    bitmap = bytearray(-(-count // 32) * 4)
    pages = []
    zero = bytes(SNAPSHOT_PAGE)
    for n in range(count):
        page = heap[n * SNAPSHOT_PAGE:(n + 1) * SNAPSHOT_PAGE]
        if page != zero[:len(page)]:
            bitmap[n >> 3] |= 1 << (n & 7)
            pages.append(page)
    head = b"".join(v.to_bytes(4, "little") for v in (header_len, len(heap), SNAPSHOT_PAGE, count))
    return b"".join([SNAPSHOT_MAGIC, head, bytes(bitmap), raw[:header_len], *pages])


def snapshot_assets(record: dict[str, Any], wheels: list[Path], stage: Path) -> dict[str, Any]:
    """Write what the page needs beside the snapshot into ``stage/assets`` and return the build info
    for it: every side module the record names (as a content-hashed ``.wasm``, so the browser can
    compile it while streaming and cache the compiled code) and a tar of the installed wheels (the
    snapshot holds imported modules, not files; the page writes them back for later lazy imports)."""
    site = record["sitePackages"].rstrip("/") + "/"
    files: dict[str, bytes] = {}  # every installed file, by its path under site-packages
    for whl in wheels:
        with zipfile.ZipFile(whl) as zf:
            files.update((name, zf.read(name)) for name in zf.namelist() if not name.endswith("/"))
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
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(files[name]), 0, 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    pack = buf.getvalue()
    pack_rel = f"assets/site-packages-{hashlib.sha256(pack).hexdigest()[:16]}.tar"
    (stage / pack_rel).write_bytes(pack)
    return {"sitePackages": site, "pack": pack_rel, "libs": libs, "tableBefore": record["tableBefore"],
            "tableAfter": record["tableAfter"], "slots": record["slots"], "got": record["got"]}


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


def bundle_widget(build_info: dict[str, Any]) -> str:
    parts = []
    for rel in WIDGET_SOURCES:
        src = (ROOT / rel).read_text()
        parts.append(f"// ---- {rel}\n{src.rstrip()}\n")
    body = "\n".join(parts)
    if BUILD_MARKER not in body:
        raise BuildError(f"{BUILD_MARKER} placeholder missing from the widget sources")
    body = body.replace(BUILD_MARKER, json.dumps(build_info, sort_keys=True))
    header = ("/*! Kibitz widget.js — account-free P2P calls; the engine is Python (Pyodide).\n"
              " * Built by build/build.py; sources in shim/ and widget/. */\n")
    return header + "(() => {\n\"use strict\";\n" + body + "})();\n"


def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


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
        # Content-hashed names under assets/ (served immutable); gzip inside, so any static host works.
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
    }
    (stage / "widget.js").write_text(bundle_widget(build_info))
    for rel, out in STATIC_SOURCES.items():
        dst = stage / out
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, dst)

    manifest = {"build": build_info, "files": {}}
    for p in sorted(stage.rglob("*")):
        if p.is_file():
            manifest["files"][p.relative_to(stage).as_posix()] = {"bytes": p.stat().st_size,
                                                                  "sha256": sha256_file(p)}
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if inputs are unchanged")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
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
    except BuildError as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
