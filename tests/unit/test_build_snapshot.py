"""build/build.py's engine snapshot: cached by its own inputs, optional, packed, content-hashed in dist/."""

from __future__ import annotations

import gzip
import json
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))

from test_build import build  # noqa: E402  (loads build/build.py once)


def test_no_node_means_no_snapshot_not_a_failure(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    assert build.make_snapshot(build.load_pins(), []) is None
    assert "no engine snapshot" in capsys.readouterr().err


def test_a_failing_node_means_no_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "node"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo v0.0.0-fake && exit 0\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(build, "SNAPSHOT_CACHE", tmp_path / "cache")
    assert build.make_snapshot(build.load_pins(), [], node=str(fake)) is None
    assert not list((tmp_path / "cache").glob("*.bin"))


def test_snapshot_key_follows_its_inputs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pins = build.load_pins()
    engine = tmp_path / "kibitz-0-py3-none-any.whl"
    engine.write_bytes(b"one")
    key = build.snapshot_key(pins, [engine], "v20")
    assert key == build.snapshot_key(pins, [engine], "v20")
    assert key != build.snapshot_key(pins, [engine], "v22")
    engine.write_bytes(b"two")  # an engine edit remakes the snapshot: it holds the engine
    assert key != build.snapshot_key(pins, [engine], "v20")
    engine.write_bytes(b"one")
    monkeypatch.setattr(build, "ENGINE_IMPORTS", [*build.ENGINE_IMPORTS, "csv"])
    assert key != build.snapshot_key(pins, [engine], "v20")


def fake_pyodide_snapshot(heap: bytes) -> bytes:
    header = bytearray(32)
    header[0:4] = (0x12345678).to_bytes(4, "little")
    header[4:8] = (32).to_bytes(4, "little")
    return bytes(header) + heap


def unpack(packed: bytes) -> bytes:
    """What widget/snapshot.js does, in Python: Pyodide's header, then the heap page by page."""
    assert packed[:4] == build.SNAPSHOT_MAGIC
    header_len, heap_len, page, count = (int.from_bytes(packed[i:i + 4], "little") for i in range(4, 20, 4))
    at = 20
    bitmap = packed[at:at + -(-count // 32) * 4]
    at += len(bitmap)
    header = packed[at:at + header_len]
    at += header_len
    heap = bytearray()
    for n in range(count):
        size = min(page, heap_len - n * page)
        if bitmap[n >> 3] & (1 << (n & 7)):
            heap += packed[at:at + size]
            at += size
        else:
            heap += bytes(size)
    assert at == len(packed)
    return header + bytes(heap)


def test_packing_drops_zero_pages_and_keeps_every_byte() -> None:
    page = build.SNAPSHOT_PAGE
    heap = bytes(page) + b"\x01" + bytes(page - 1) + bytes(3 * page) + b"tail"  # last page is short
    raw = fake_pyodide_snapshot(heap)
    packed = build.pack_snapshot(raw)
    assert unpack(packed) == raw
    assert len(packed) < len(raw) - 3 * page  # four zero pages left out
    assert build.pack_snapshot(raw) == packed  # deterministic
    with pytest.raises(build.BuildError):
        build.pack_snapshot(b"\0" * 4 + (33).to_bytes(4, "little") + bytes(64))  # not a Pyodide header


def test_dist_snapshot_is_a_packed_pyodide_snapshot_with_its_side_module_and_files() -> None:
    assert build.main(["--quiet"]) == 0
    dist = ROOT / "dist"
    info = json.loads((dist / "manifest.json").read_text())["build"]["snapshot"]
    if info is None:
        pytest.skip("built without node: no snapshot")
    path = dist / info["url"]
    assert info["url"] == f"assets/pyodide-snapshot-{build.sha256_file(path)[:16]}.bin"
    raw = unpack(gzip.decompress(path.read_bytes()))
    assert len(raw) > 16 << 20  # a wasm memory image, not a stub
    [lib] = info["libs"]
    assert lib["path"].startswith(info["sitePackages"]) and "_pydantic_core" in lib["path"]
    assert lib["tableBase"] >= info["tableBefore"] and lib["memoryBase"] + lib["memorySize"] <= len(raw)
    assert (dist / lib["url"]).read_bytes()[:4] == b"\0asm"
    with tarfile.open(dist / info["pack"]) as tar:
        names = tar.getnames()
    assert "pydantic/main.py" in names and "kibitz/session.py" in names
    assert not [n for n in names if n.endswith(".so")]  # bound from the .wasm asset, not the files
    assert info["url"] in (dist / "widget.js").read_text()
