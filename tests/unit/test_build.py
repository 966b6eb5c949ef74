"""build/build.py: pinned wheels, a reproducible engine wheel, a lock Pyodide can use, a fast no-op."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kibitz_build", ROOT / "build" / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["kibitz_build"] = module
    spec.loader.exec_module(module)
    return module


build = _load_build()


@pytest.fixture(scope="module")
def dist() -> Path:
    assert build.main(["--quiet"]) == 0
    return ROOT / "dist"


def test_engine_wheel_is_reproducible_and_core_only(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    wa, va = build.build_engine_wheel(tmp_path / "a")
    wb, vb = build.build_engine_wheel(tmp_path / "b")
    assert va == vb and wa.name == wb.name
    assert wa.read_bytes() == wb.read_bytes()
    assert wa.name == f"kibitz-{va}-py3-none-any.whl" and "+" in va
    with zipfile.ZipFile(wa) as zf:
        names = zf.namelist()
        assert "kibitz/__init__.py" in names and "kibitz/backends/browser.py" in names
        assert "kibitz/protocol/base.py" in names
        assert not [n for n in names if "agent" in n.split("/")[1:2] or "server" in n.split("/")[1:2]]
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        dist_info = f"kibitz-{va}.dist-info"
        meta = zf.read(f"{dist_info}/METADATA").decode()
        assert "Requires-Dist: pydantic" in meta
        # RECORD lists every other file with its real hash.
        record = zf.read(f"{dist_info}/RECORD").decode().splitlines()
        listed = {line.split(",")[0]: line.split(",")[1] for line in record}
        for name in names:
            if name.endswith("RECORD"):
                continue
            digest = base64.urlsafe_b64encode(hashlib.sha256(zf.read(name)).digest()).rstrip(b"=").decode()
            assert listed[name] == f"sha256={digest}"


def test_lock_matches_the_served_wheels(dist: Path) -> None:
    lock = json.loads((dist / "wheels" / "pyodide-lock.json").read_text())
    runtime = json.loads((ROOT / "node_modules" / "pyodide" / "pyodide-lock.json").read_text())
    assert lock["info"] == runtime["info"]
    pins = build.load_pins()
    assert set(lock["packages"]) == {build.canonical(w["name"]) for w in pins["wheels"]} | {"kibitz"}
    for key, entry in lock["packages"].items():
        path = dist / "wheels" / entry["file_name"]
        assert path.exists(), key
        assert build.sha256_file(path) == entry["sha256"], key
        assert all(dep in lock["packages"] for dep in entry["depends"]), key
    for w in pins["wheels"]:
        assert lock["packages"][build.canonical(w["name"])]["sha256"] == w["sha256"]
    assert lock["packages"]["pydantic-core"]["file_name"].endswith("pyemscripten_2026_0_wasm32.whl")
    assert build.closure(lock, ["kibitz"]) == sorted(
        ["kibitz", "pydantic", "pydantic-core", "typing-extensions", "annotated-types", "typing-inspection"]
    )


def test_dist_layout_and_widget_bundle(dist: Path) -> None:
    for name in ["pyodide.mjs", "pyodide.js", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip"]:
        assert (dist / "pyodide-314.0.7" / name).is_file(), name
    for name in ["widget.js", "kibitz.d.ts", "demo/index.html", "demo/embed.html", "manifest.json"]:
        assert (dist / name).is_file(), name
    widget = (dist / "widget.js").read_text()
    assert build.BUILD_MARKER not in widget
    assert "cdn." not in widget and "https://" not in widget.replace("https://${", "")
    manifest = json.loads((dist / "manifest.json").read_text())
    assert manifest["build"]["lock"].startswith("wheels/pyodide-lock.json?v=")
    assert "pyjwt" in manifest["build"]["expect"]
    if shutil.which("node"):
        subprocess.run(["node", "--check", str(dist / "widget.js")], check=True)
    for text in ["MountOptions", "MountedWidget", "broadcast(data: unknown)", "headless?: boolean"]:
        assert text in (dist / "kibitz.d.ts").read_text()


def test_widget_and_types_follow_the_controller_member_list(dist: Path) -> None:
    """widget.js's engine method list and kibitz.d.ts's declarations come from one Python list
    (kibitz.controller.ENGINE_MEMBERS): adding an engine method is one line there."""
    controller = build.controller_members()
    widget = (dist / "widget.js").read_text()
    listed = re.search(r"const ENGINE_METHODS = (\[.*?\]);", widget)
    assert listed is not None and json.loads(listed.group(1)) == list(controller.ENGINE_METHODS)
    assert build.METHODS_MARKER not in widget
    dts = (dist / "kibitz.d.ts").read_text()
    assert controller.typescript() in dts and "@engine-members" not in dts
    for m in controller.ENGINE_MEMBERS:
        assert f"  {m.name}{m.ts};" in dts
    # The engine host is one function the page starts as a Worker from its own source.
    assert "function kibitzEngineHost(port, BUILD, SERVER, flags) {" in widget
    limits = json.loads((dist / "manifest.json").read_text())["build"]["limits"]
    assert limits == {"maxAppBytes": 16 * 1024 * 1024, "agentEnvelope": "__kib_agent"}


def test_noop_rebuild_is_fast(dist: Path) -> None:
    """Unchanged inputs: nothing is rebuilt (dist/ untouched). A full build takes minutes; the bound
    is loose on purpose (a loaded CI box spends seconds just starting Python)."""
    before = {p: p.stat().st_mtime_ns for p in (dist / "widget.js", dist / "manifest.json")}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "build" / "build.py")], check=True)
    assert time.perf_counter() - t0 < 20.0
    assert {p: p.stat().st_mtime_ns for p in before} == before
    stamp = (dist / ".build-stamp").read_text().strip()
    assert stamp == build.input_digest(build.load_pins())


def test_a_wheel_with_the_wrong_hash_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = {"name": "pyjwt", "version": "2.15.1", "file": "pyjwt-2.15.1-py3-none-any.whl",
             "sha256": "0" * 64, "imports": ["jwt"], "depends": []}
    pins: dict[str, Any] = {"wheels": [wheel]}
    monkeypatch.setattr(build, "CACHE", tmp_path)
    (tmp_path / "pyjwt-2.15.1-py3-none-any.whl").write_bytes(b"not the pinned wheel")
    calls: list[str] = []
    monkeypatch.setattr(build, "download", lambda w: calls.append(w["name"]))
    with pytest.raises(build.BuildError, match="sha256 mismatch for pyjwt"):
        build.fetch_wheels(pins)
    assert calls == ["pyjwt"]  # it tried to re-download before giving up
