"""build/build.py's engine snapshot: cached by its own inputs, optional, packed, content-hashed in dist/."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import brotli  # type: ignore[import-untyped,unused-ignore]
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


def unpack(packed: bytes, base: bytes = b"") -> bytes:
    """What widget/snapshot.js does, in Python: Pyodide's header, then the heap page by page. Pages
    the snapshot keeps come from ``base`` (the runtime's memory before the restore), after the hash
    check the page makes."""
    assert packed[:4] == build.SNAPSHOT_MAGIC
    header_len, heap_len, page, count, kept_hash, kept_count = (
        int.from_bytes(packed[i:i + 4], "little") for i in range(4, 28, 4))
    map_len = -(-count // 32) * 4
    at = 28
    written, kept = packed[at:at + map_len], packed[at + map_len:at + 2 * map_len]
    at += 2 * map_len
    kept_pages = [n for n in range(count) if kept[n >> 3] & (1 << (n & 7))]
    assert len(kept_pages) == kept_count
    assert build.page_hash(base[n * page:(n + 1) * page] for n in kept_pages) == kept_hash
    header = packed[at:at + header_len]
    at += header_len
    heap = bytearray()
    for n in range(count):
        size = min(page, heap_len - n * page)
        if written[n >> 3] & (1 << (n & 7)):
            heap += packed[at:at + size]
            at += size
        elif n in kept_pages:
            heap += base[n * page:n * page + size]
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


def test_pages_the_runtime_already_holds_are_kept_not_shipped() -> None:
    """A page equal to what the runtime's data segments put there is left out and checked instead."""
    page = build.SNAPSHOT_PAGE
    image = b"\x07" * page + b"\x08" * page + b"\x09" * 100  # the data segments' bytes from address 0
    heap = b"\x07" * page + b"\x05" * page + b"\x09" * 100 + bytes(page - 100) + b"\x09" * page
    raw = fake_pyodide_snapshot(heap)
    packed = build.pack_snapshot(raw, image)
    base = image + bytes(page - 100) + bytes(page)  # the runtime's memory before the restore
    assert unpack(packed, base) == raw
    kept_count = int.from_bytes(packed[24:28], "little")
    assert kept_count == 2  # pages 0 and 2; page 1 differs, page 3 lies beyond the image
    assert len(packed) < len(build.pack_snapshot(raw)) - 2 * page + 64
    with pytest.raises(AssertionError):  # a runtime whose memory differs fails the check
        unpack(packed, b"\x06" + base[1:])


def test_page_hash_is_fnv1a_over_little_endian_words() -> None:
    """Golden values (FNV-1a, 32-bit words), and widget/snapshot.js's checkKeptPages agrees."""
    assert build.page_hash([]) == 0x811C9DC5
    assert build.page_hash([bytes(8)]) == 0x117697CD
    assert build.page_hash([(1).to_bytes(4, "little") + (0xFFFFFFFF).to_bytes(4, "little")]) == 0x138BE109
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node: the page's side is checked by the boot e2e tests")
    pages = [bytes(range(256)) * 16, b"\xff" * 4096, bytes(4096)]
    want = build.page_hash(pages)
    js = (ROOT / "widget" / "snapshot.js").read_text() + """
const pages = [Uint8Array.from({ length: 4096 }, (_, i) => i & 255), new Uint8Array(4096).fill(255),
  new Uint8Array(4096)];
const memory = new Uint8Array(4 * 4096);
pages.forEach((p, n) => memory.set(p, (n + 1) * 4096));  // pages 1..3; page 0 is not kept
const kept = Uint8Array.of(0b1110);
const words = new Uint32Array(memory.buffer);
try { checkKeptPages(words, kept, 4, 4096, WANT, 3); console.log("ok"); }
catch (e) { console.log(e.message); }
try { checkKeptPages(words, kept, 4, 4096, (WANT + 1) >>> 0, 3); console.log("accepted"); }
catch (e) { console.log("refused"); }
""".replace("WANT", str(want))
    out = subprocess.run([node, "-e", js], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["ok", "refused"], out


def leb(n: int) -> bytes:
    """``n`` as an unsigned LEB128 (WebAssembly's integers)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_wasm_data_image_reads_active_segments() -> None:
    segs = [b"\x00\x41" + leb(8) + b"\x0b" + leb(3) + b"abc",  # active at 8
            b"\x01" + leb(2) + b"zz",  # passive: not written at instantiation
            b"\x00\x41" + leb(200) + b"\x0b" + leb(2) + b"de"]  # active at 200 (two-byte LEB)
    body = leb(len(segs)) + b"".join(segs)
    wasm = b"\0asm\x01\0\0\0" + b"\x01\x01\x00" + b"\x0b" + leb(len(body)) + body
    image = build.wasm_data_image(wasm)
    assert image[8:11] == b"abc" and image[200:202] == b"de" and len(image) == 202
    assert image.count(0) == 202 - 5
    relocatable = b"\0asm\x01\0\0\0\x0b\x08\x01\x00\x23\x00\x0b\x01x\x00"  # offset from a global
    assert build.wasm_data_image(relocatable) == b""


def test_side_module_data_travels_as_its_xor_with_what_instantiation_writes(tmp_path: Path) -> None:
    """pydantic-core's live data differs from its initial data in a few words: the snapshot carries
    the XOR of the two, and the page XORs it with what instantiating the module wrote."""
    initial = bytes(range(200)) * 2
    seg = b"\x00\x23\x00\x41" + leb(16) + b"\x6a\x0b" + leb(len(initial)) + initial  # __memory_base + 16
    body = leb(1) + seg
    wasm = b"\0asm\x01\0\0\0" + b"\x0b" + leb(len(body)) + body
    assert build.side_module_segments(wasm) == [(16, initial)]
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.so").write_bytes(wasm)
    live = bytearray(initial)
    live[5:9] = b"\xde\xad\xbe\xef"  # a pointer relocated, a static changed
    heap = bytearray(8192)
    heap[1000 + 16:1000 + 16 + len(live)] = live
    raw = fake_pyodide_snapshot(bytes(heap))
    record = {"sitePackages": "/site", "libs": [{"path": "/site/pkg/mod.so", "memoryBase": 1000,
                                                 "memorySize": 600}]}
    mixed = build.xor_side_module_data(raw, record, tmp_path)
    assert record["libs"][0]["xor"] == [[16, len(initial)]]
    region = mixed[32 + 1016:32 + 1016 + len(initial)]
    assert region.count(0) == len(initial) - 4  # only the changed bytes remain
    # The page: instantiation writes the initial data, then XOR gives the live data back.
    assert bytes(a ^ b for a, b in zip(region, initial, strict=True)) == bytes(live)
    end = 32 + 1016 + len(initial)
    assert mixed[:32 + 1016] == raw[:32 + 1016] and mixed[end:] == raw[end:]


def test_comment_stripping_keeps_code_and_line_numbers() -> None:
    src = (b"# -*- coding: utf-8 -*-\n#!/usr/bin/env python\n# licence\nx = 1  # one\n"
           b"s = '# not a comment'\n\ndef f():\n    # inside\n    return x\n")
    out = build.strip_comments(src)
    assert out == (b"# -*- coding: utf-8 -*-\n\n\nx = 1\ns = '# not a comment'\n\ndef f():\n\n"
                   b"    return x\n")
    assert out.count(b"\n") == src.count(b"\n")
    assert build.strip_comments(b"match x:\n    case 1: pass  # new syntax is fine\n").startswith(b"match")
    broken = b"def f(:\n  # comment\n"
    assert build.strip_comments(broken) == broken  # what this Python cannot parse comes back as it was


def test_stdlib_for_the_snapshot_boot_leaves_out_what_it_holds_and_tools() -> None:
    held = {"/lib/python314.zip/json/__init__.py", "/lib/python314.zip/asyncio/tasks.py",
            "/lib/python3.14/site-packages/pydantic/main.py"}
    with zipfile.ZipFile(io.BytesIO(build.snapshot_stdlib(held))) as zf:
        names = set(zf.namelist())
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        email = zf.read("email/parser.py")
    assert "json/__init__.py" not in names and "asyncio/tasks.py" not in names
    assert "json/decoder.py" in names and "asyncio/queues.py" in names and "email/parser.py" in names
    assert "unittest/__init__.py" not in names and "pdb.py" not in names and "xml/dom/minidom.py" not in names
    assert b"#" not in email.split(b'"""')[0]  # comments stripped (its docstring kept)
    compile(email, "email/parser.py", "exec")


def test_dist_snapshot_is_a_packed_pyodide_snapshot_with_its_side_module_and_files() -> None:
    assert build.main(["--quiet"]) == 0
    dist = ROOT / "dist"
    manifest = json.loads((dist / "manifest.json").read_text())
    info = manifest["build"]["snapshot"]
    if info is None:
        pytest.skip("built without node: no snapshot")
    path = dist / info["url"]
    assert info["url"] == f"assets/pyodide-snapshot-{build.sha256_file(path)[:16]}.bin"
    packed = path.read_bytes()
    image = build.wasm_data_image((build.NODE_PYODIDE / "pyodide.asm.wasm").read_bytes())
    raw = unpack(packed, image.ljust(len(image) + build.SNAPSHOT_PAGE, b"\0"))
    assert len(raw) > 16 << 20  # a wasm memory image, not a stub
    assert int.from_bytes(packed[24:28], "little") > 500  # most of the runtime's data is not shipped
    [lib] = info["libs"]
    assert lib["path"].startswith(info["sitePackages"]) and "_pydantic_core" in lib["path"]
    assert lib["xor"] and all(off >= 0 and off + n <= lib["memorySize"] for off, n in lib["xor"])
    assert lib["tableBase"] >= info["tableBefore"] and lib["memoryBase"] + lib["memorySize"] <= len(raw)
    assert (dist / lib["url"]).read_bytes()[:4] == b"\0asm"
    with tarfile.open(dist / info["pack"]) as tar:
        names = tar.getnames()
    # Lazily imported modules come from the files; what the snapshot holds imported does not.
    assert "pydantic/dataclasses.py" in names and "jwt/__init__.py" in names
    assert "pydantic/main.py" not in names and "kibitz/session.py" not in names
    assert "pydantic-2.14.3.dist-info/METADATA" in names  # importlib.metadata reads these
    assert not [n for n in names if n.endswith(".so") or n.startswith("pydantic/v1/")]
    assert info["url"] in (dist / "widget.js").read_text()
    # Each downloaded file has its compressed copies beside it, as the server sends them.
    for rel in (info["url"], info["pack"], info["stdlib"], lib["url"]):
        assert brotli.decompress((dist / f"{rel}.br").read_bytes()) == (dist / rel).read_bytes(), rel
        assert gzip.decompress((dist / f"{rel}.gz").read_bytes()) == (dist / rel).read_bytes(), rel


# What a cold boot may download (issue 13: "cold bytes on the wire <= 9 MB"), as the browser
# receives it from `kibitz serve` with brotli; tests/e2e/test_first_load.py counts the real thing.
FIRST_LOAD_BUDGET = 9_000_000


def test_first_load_stays_within_its_budget() -> None:
    assert build.main(["--quiet"]) == 0
    manifest = json.loads((ROOT / "dist" / "manifest.json").read_text())
    if manifest["build"]["snapshot"] is None:
        pytest.skip("built without node: no snapshot")
    first = manifest["firstLoad"]
    biggest = sorted(first["files"].items(), key=lambda item: -item[1]["br"])
    table = "\n".join(f"{rel}: {f['br']:,} B" for rel, f in biggest)
    assert first["br"] <= FIRST_LOAD_BUDGET, f"a cold load now downloads {first['br']:,} B:\n{table}"
    assert set(first["files"]) >= {"widget.js", manifest["build"]["snapshot"]["url"]}
    assert first["br"] == sum(f["br"] for f in first["files"].values())
