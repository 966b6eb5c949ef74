"""Golden vectors in the page: run a ``tests/vectors/<name>_check.py`` checker (self-contained, so it
runs as it is under Pyodide) on ``tests/vectors/<name>.json`` in a page's engine interpreter, so a
test can compare its answer with the same checker's in CPython."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from playwright.sync_api import Page

VECTORS_DIR = Path(__file__).resolve().parents[1] / "vectors"

RUN = """async ([code, names]) => {
  const py = await window.Kibitz._engine();
  for (const [k, v] of Object.entries(names)) py.globals.set(k, v);
  return await py.runPythonAsync(code);
}"""

# The checker loaded as a module of its own from its source text; check_all may be async.
CHECK = """
import inspect, json, sys, types
mod = types.ModuleType(NAME)
sys.modules[NAME] = mod
exec(compile(CHECK_SOURCE, NAME + ".py", "exec"), mod.__dict__)
results = mod.check_all(json.loads(VECTORS))
if inspect.isawaitable(results):
    results = await results
json.dumps({"platform": sys.platform, "passed": results.passed, "failed": results.failed})
"""


def run_py(page: Page, code: str, **names: str) -> Any:
    """Run Python (async allowed) in the page's interpreter; the code ends with a JSON string."""
    return json.loads(page.evaluate(RUN, [code, names]))


def vectors(name: str) -> str:
    """The text of ``tests/vectors/<name>.json``."""
    return (VECTORS_DIR / f"{name}.json").read_text(encoding="utf-8")


def check_in_page(page: Page, name: str) -> dict[str, Any]:
    """``<name>_check.check_all`` on ``<name>.json`` in the page: its platform, passed and failed."""
    source = (VECTORS_DIR / f"{name}_check.py").read_text(encoding="utf-8")
    got: dict[str, Any] = run_py(
        page, CHECK, NAME=f"{name}_check", CHECK_SOURCE=source, VECTORS=vectors(name)
    )
    return got
