"""What a page's main thread did: its tasks from a Chromium trace, with wall-clock and CPU time.

Shared by tests/e2e/test_engine_worker.py and the benchmarks. A longtask observer in the page
(``LONGTASKS``) sees each task's wall-clock duration, which on a loaded machine includes the time
the OS gave other processes; the trace also has each task's thread (CPU) time, which does not.
Tests judge the CPU time (robust on a shared 2-core box); benchmarks report both, with the load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from playwright.sync_api import Browser, Page

CATEGORIES = ["toplevel", "devtools.timeline", "disabled-by-default-devtools.timeline"]

LONGTASKS = """(() => {
  window.__longtasks = [];
  new PerformanceObserver((list) => { for (const e of list.getEntries())
    window.__longtasks.push({ start: e.startTime, duration: e.duration }); })
    .observe({ type: "longtask", buffered: true });
})();"""
"""An init script: every task ≥ 50 ms of wall-clock time, from before any script of the page ran."""


@dataclass(frozen=True)
class Task:
    wall_ms: float
    cpu_ms: float


@dataclass(frozen=True)
class MainThread:
    tasks: list[Task]
    pids: frozenset[int]
    """The renderer process(es) traced: pass them to the next :func:`stop` of the same page."""

    def long(self, ms: float = 50.0, *, cpu: bool = True) -> list[Task]:
        return [t for t in self.tasks if (t.cpu_ms if cpu else t.wall_ms) >= ms]

    def tbt(self, *, cpu: bool = False) -> float:
        """Total blocking time: Σ (duration − 50 ms) over tasks of 50 ms or more."""
        return sum(max(0.0, (t.cpu_ms if cpu else t.wall_ms) - 50.0) for t in self.tasks)

    def longest(self, *, cpu: bool = False) -> float:
        return max((t.cpu_ms if cpu else t.wall_ms for t in self.tasks), default=0.0)


def start(browser: Browser, page: Page) -> None:
    browser.start_tracing(page=page, categories=CATEGORIES)


def stop(browser: Browser, script: str = "", pids: frozenset[int] | None = None) -> MainThread:
    """Stop tracing; the tasks of the main thread of the renderer that loaded or evaluated ``script``
    (a URL fragment such as ``"/widget.js"`` or the page's own path, which names the page under
    test), or of the renderer ``pids`` an earlier trace of the same page found."""
    events: list[dict[str, Any]] = json.loads(browser.stop_tracing())["traceEvents"]
    if pids is None:
        pids = frozenset(e["pid"] for e in events if e.get("name") in ("EvaluateScript", "CommitLoad")
                         and script in str(e.get("args", {}).get("data", {}).get("url", "")))
    mains = {(e["pid"], e["tid"]) for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name" and e["pid"] in pids
             and e.get("args", {}).get("name") == "CrRendererMain"}
    tasks = [Task(e["dur"] / 1000, e.get("tdur", e["dur"]) / 1000) for e in events
             if e.get("name") == "RunTask" and e.get("ph") == "X" and (e["pid"], e["tid"]) in mains]
    if not tasks:
        raise RuntimeError(f"no main-thread tasks traced for a page that ran {script or pids}")
    return MainThread(tasks, pids)
