"""The page's whist JavaScript (apps/whist/*.mjs) against the same golden vectors, under Node:
``node --test tests/js/`` (rules, transcripts of the table protocol, a stacked deck caught)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_node_runs_the_page_rules_and_table_against_the_vectors() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing: scripts/setup.sh installs it")
    proc = subprocess.run([node, "--test", "tests/js/"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "# fail 0" in proc.stdout and "# pass " in proc.stdout
