"""Shared mechanics for the benchmark scripts: rewrite one ``## Section`` of docs/benchmarks.md and
describe the machine a run happened on.

Each bench owns one section and rewrites only that one, so several benches (run at different times)
can share the file without clobbering each other's numbers.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n"


def replace_section(section: str, body: str, doc: Path = DOC) -> None:
    """Replace ``section`` (its heading up to the next ``## `` heading or the end) with ``body``.

    ``body`` must start with the heading line itself, so the next run finds the section again.
    A missing section is appended; a missing file is created with a ``# Benchmarks`` header.
    Sections are kept one blank line apart and the file ends with exactly one newline.
    """
    if not body.startswith(section + "\n"):
        raise ValueError(f"body must start with its heading line {section!r}")
    body = body.rstrip("\n") + "\n"
    text = doc.read_text() if doc.exists() else HEADER
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        # A function replacement: the body is literal text, never a template with backslash escapes.
        text = pattern.sub(lambda _m: body + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + body
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text.rstrip("\n") + "\n")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _cores() -> int | str:
    """CPUs this process may run on (what ``nproc`` prints), falling back to the machine's count."""
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or "?"


def machine() -> str:
    """One line naming CPU, cores, Python and OS, plus the load average now (call it at start:
    the box is shared, and the load explains much of the run-to-run noise)."""
    try:
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    python = f"Python {platform.python_version()} ({sys.implementation.name})"
    return (
        f"Machine: {_cpu_model()}, {_cores()} CPUs, {python}, {platform.system()} {platform.machine()}; "
        f"load average at start {load}"
    )
