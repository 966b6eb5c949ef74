"""build/build.py's runtime snapshot: cached by its own inputs, optional, content-hashed in dist/."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))

from test_build import build  # noqa: E402  (loads build/build.py once)


def test_no_node_means_no_snapshot_not_a_failure(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    assert build.make_snapshot(build.load_pins()) is None
    assert "no runtime snapshot" in capsys.readouterr().err


def test_a_failing_node_means_no_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "node"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo v0.0.0-fake && exit 0\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(build, "SNAPSHOT_CACHE", tmp_path / "cache")
    assert build.make_snapshot(build.load_pins(), node=str(fake)) is None
    assert not list((tmp_path / "cache").glob("*.bin"))


def test_snapshot_key_follows_its_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    pins = build.load_pins()
    key = build.snapshot_key(pins, "v20")
    assert key == build.snapshot_key(pins, "v20")
    assert key != build.snapshot_key(pins, "v22")
    monkeypatch.setattr(build, "SNAPSHOT_IMPORTS", [*build.SNAPSHOT_IMPORTS, "csv"])
    assert key != build.snapshot_key(pins, "v20")


def test_dist_snapshot_is_content_hashed_gzip_of_a_pyodide_snapshot() -> None:
    assert build.main(["--quiet"]) == 0
    dist = ROOT / "dist"
    rel = json.loads((dist / "manifest.json").read_text())["build"]["snapshot"]
    if rel is None:
        pytest.skip("built without node: no snapshot")
    path = dist / rel
    assert rel == f"assets/pyodide-snapshot-{build.sha256_file(path)[:16]}.bin"
    raw = gzip.decompress(path.read_bytes())
    assert len(raw) % 4 == 0 and len(raw) > 16 << 20  # a wasm memory image, not a stub
    widget = (dist / "widget.js").read_text()
    assert f'"snapshot": "{rel}"' in widget
