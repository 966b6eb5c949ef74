"""Build the servable bundle in ``dist/`` from pinned, offline inputs.

Layout (the server serves ``dist/`` at ``/``; keep it stable)::

    dist/widget.js                 the loader: shim + launcher + Kibitz.mount, one classic script
    dist/kibitz.d.ts               TypeScript declarations for MountOptions / MountedWidget
    dist/pyodide-<ver>/            the Pyodide runtime files from node_modules/pyodide (npm pin)
    dist/wheels/*.whl              pinned PyPI wheels (sha256-checked) + the engine's own wheel
    dist/wheels/pyodide-lock.json  a lock holding only those wheels, with their real sha256
    dist/assets/pyodide-snapshot-<hash>.bin  gzip'd base-runtime memory snapshot (stdlib pre-imported)
    dist/demo/index.html           two tabs with the same URL share a room (room id in the hash)
    dist/demo/embed.html           the one-liner as a third-party page uses it
    dist/demo/follow.html          follow-me: hash routing synced with broadcast/onMessage (headless)
    dist/manifest.json             bytes and sha256 of every file (for benchmarks and caching)

Every run hashes its inputs first and returns at once when ``dist/.build-stamp`` matches, because
scripts/setup.sh calls it before every test and serve run. Downloads (``pip download``) happen only
when the cache in ``build/.cache/`` lacks a pinned wheel, and every wheel is checked against
``build/pins.json``: a mismatch fails the build loudly. The runtime snapshot is made with Node (the
one that ran ``npm ci``) and cached in ``build/.cache/snapshot/`` under a key of its own inputs, so
engine edits never remake it; without Node the bundle has no snapshot and the page boots plainly.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
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
WIDGET_SOURCES = ["shim/shim.js", "widget/ui.css.js", "widget/ui.js", "widget/loader.js"]
STATIC_SOURCES = {"widget/kibitz.d.ts": "kibitz.d.ts", "widget/demo/index.html": "demo/index.html",
                  "widget/demo/embed.html": "demo/embed.html", "widget/demo/follow.html": "demo/follow.html"}
# Fixed zip timestamps make the engine wheel byte-for-byte reproducible.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
BUILD_MARKER = "/*__KIBITZ_BUILD__*/null"
SNAPSHOT_CACHE = BUILD / ".cache" / "snapshot"
# Stdlib modules the page's engine imports (pydantic and kibitz included) beyond what Pyodide's own
# start-up imports; importing them before the snapshot is taken moves their cost to build time.
# Compiled wheels (pydantic_core's .so) must stay out: a snapshot holding a loaded .so cannot be
# restored (platform-pyodide §7), so the wheels load after the restore. Missing one here only costs
# its import time in the page.
SNAPSHOT_IMPORTS = [
    "asyncio", "collections", "dataclasses", "datetime", "decimal", "email", "encodings.cp437", "enum",
    "fractions", "heapq", "hmac", "importlib.metadata", "inspect", "ipaddress", "itertools", "json",
    "logging", "math", "numbers", "random", "re", "secrets", "struct", "sysconfig", "tarfile", "time",
    "typing", "uuid", "zoneinfo",
]
# Run by Node: boot the npm runtime with _makeSnapshot, import SNAPSHOT_IMPORTS, write the snapshot.
# A Node-made snapshot restores in Chromium (the Python side keeps no runtime-specific state; JS
# objects are re-bound by global path) and boots as fast as one made in Chromium (measured).
SNAPSHOT_SCRIPT = """
import { writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const [runtimeDir, out, imports] = process.argv.slice(2);
const { loadPyodide } = await import(pathToFileURL(runtimeDir + "/pyodide.mjs").href);
const py = await loadPyodide({ indexURL: runtimeDir + "/", _makeSnapshot: true });
py.runPython("import " + imports);
// The page reseeds after restoring (every page would otherwise share this state); seed it fixed.
py.runPython("import random; random.seed(0)");
writeFileSync(out, py.makeMemorySnapshot());
"""


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
    sources: list[Path] = [Path(__file__), PINS, ROOT / "pyproject.toml"]
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
# Base-runtime memory snapshot


def snapshot_key(pins: dict[str, Any], node_version: str) -> str:
    """Hash of everything the snapshot depends on (not the engine: it holds no kibitz code)."""
    h = hashlib.sha256()
    for name in sorted(pins["runtime_files"]):
        h.update(f"{name}:{sha256_file(NODE_PYODIDE / name)}\n".encode())
    h.update(json.dumps([SNAPSHOT_IMPORTS, SNAPSHOT_SCRIPT, node_version]).encode())
    return h.hexdigest()[:32]


def make_snapshot(pins: dict[str, Any], node: str | None = None) -> Path | None:
    """The gzip'd snapshot (cached by :func:`snapshot_key`), or None when it cannot be made.

    None is not an error: the page then boots without a snapshot, only slower. The reason is printed.
    """
    node = node or shutil.which("node")
    if node is None:
        print("build: no `node` on PATH, so no runtime snapshot (the page boots without one)",
              file=sys.stderr)
        return None
    try:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30,
                                 check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"build: `node --version` failed ({exc}); no runtime snapshot", file=sys.stderr)
        return None
    cached = SNAPSHOT_CACHE / f"{snapshot_key(pins, version)}.bin"
    if cached.exists():
        return cached
    SNAPSHOT_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=SNAPSHOT_CACHE) as tmp:
        script, raw = Path(tmp) / "snapshot.mjs", Path(tmp) / "snapshot.raw"
        script.write_text(SNAPSHOT_SCRIPT)
        cmd = [node, str(script), str(NODE_PYODIDE.resolve()), str(raw), ", ".join(SNAPSHOT_IMPORTS)]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp)
        except subprocess.TimeoutExpired:
            print("build: making the runtime snapshot timed out; none this time", file=sys.stderr)
            return None
        if res.returncode != 0 or not raw.exists():
            print(f"build: making the runtime snapshot failed; none this time:\n{res.stderr.strip()[-2000:]}",
                  file=sys.stderr)
            return None
        # Fixed mtime and no name: the same raw snapshot always gives the same file.
        with (raw.open("rb") as src, (Path(tmp) / "snapshot.gz").open("wb") as dst,
              gzip.GzipFile(filename="", mode="wb", fileobj=dst, compresslevel=9, mtime=0) as gz):
            shutil.copyfileobj(src, gz, 1 << 20)
        os.replace(Path(tmp) / "snapshot.gz", cached)
    return cached


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

    snapshot = make_snapshot(pins)
    snapshot_rel = None
    if snapshot is not None:
        # Content-hashed name under assets/ (served immutable); gzip inside, so any static host works.
        snapshot_rel = f"assets/pyodide-snapshot-{sha256_file(snapshot)[:16]}.bin"
        link_or_copy(snapshot, stage / snapshot_rel)

    preload = list(pins["preload"])
    build_info = {
        "version": project_meta()[0],
        "engine": engine_version,
        "pyodide": runtime_dir + "/",
        "lock": f"wheels/pyodide-lock.json?v={lock_hash}",
        "packages": "wheels/",
        "preload": preload,
        "expect": closure(lock, preload),
        "snapshot": snapshot_rel,
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
