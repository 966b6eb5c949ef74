"""bench/bench_docs.replace_section rewrites one section of docs/benchmarks.md and nothing else."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from bench_docs import machine, replace_section

A = "## Alpha\n\nalpha text\n\n| a | 1 |\n"
B = "## Beta\n\nbeta text with a backslash \\1 and ## not a heading\n\n### sub-heading stays inside\n"
C = "## Gamma\n\ngamma text\n"
DOC = f"# Benchmarks\n\n{A}\n{B}\n{C}"


def write(tmp_path: Path, text: str = DOC) -> Path:
    doc = tmp_path / "benchmarks.md"
    doc.write_bytes(text.encode())
    return doc


def test_replaces_a_middle_section_only(tmp_path: Path) -> None:
    doc = write(tmp_path)
    new_b = "## Beta\n\nnew beta \\g<0> numbers\n| b | 2 |\n"
    replace_section("## Beta", new_b, doc)
    assert doc.read_bytes() == f"# Benchmarks\n\n{A}\n{new_b}\n{C}".encode()


def test_replaces_the_last_section_with_one_trailing_newline(tmp_path: Path) -> None:
    doc = write(tmp_path)
    replace_section("## Gamma", "## Gamma\n\nnew gamma\n\n\n", doc)
    assert doc.read_bytes() == f"# Benchmarks\n\n{A}\n{B}\n## Gamma\n\nnew gamma\n".encode()


def test_appends_a_missing_section(tmp_path: Path) -> None:
    doc = write(tmp_path)
    replace_section("## Delta", "## Delta\n\ndelta", doc)
    assert doc.read_bytes() == f"{DOC}\n## Delta\n\ndelta\n".encode()


def test_prefix_heading_is_a_different_section(tmp_path: Path) -> None:
    doc = write(tmp_path, f"# Benchmarks\n\n## Agent media\n\nmedia\n\n{A}")
    replace_section("## Agent", "## Agent\n\nagent\n", doc)
    assert doc.read_bytes() == f"# Benchmarks\n\n## Agent media\n\nmedia\n\n{A}\n## Agent\n\nagent\n".encode()


def test_rerun_is_idempotent(tmp_path: Path) -> None:
    doc = write(tmp_path)
    replace_section("## Alpha", A, doc)
    replace_section("## Gamma", C, doc)
    assert doc.read_bytes() == DOC.encode()


def test_creates_a_missing_file_with_the_header(tmp_path: Path) -> None:
    doc = tmp_path / "docs" / "benchmarks.md"
    replace_section("## Alpha", A, doc)
    assert doc.read_bytes() == f"# Benchmarks\n\n{A}".encode()


def test_body_without_its_heading_is_refused(tmp_path: Path) -> None:
    doc = write(tmp_path)
    with pytest.raises(ValueError, match="heading"):
        replace_section("## Beta", "beta without heading\n", doc)
    assert doc.read_bytes() == DOC.encode()


def test_machine_names_cpu_cores_python_and_load() -> None:
    line = machine()
    assert line.startswith("Machine: ")
    assert " CPUs, Python " in line
    assert "load average at start" in line
