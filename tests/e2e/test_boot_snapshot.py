"""The page boots from the build's engine snapshot, and boots without it when the snapshot fails.

A restored snapshot carries the interpreter's memory, `random`'s state included, so two pages must
still draw different random numbers. It holds the engine already imported, pydantic-core's compiled
module included, which the page binds again (widget/snapshot.js): models made after the restore must
validate, and modules nobody imported before the snapshot must still import from the files the page
writes back. A missing or unusable part must cost a warning, not the call.
"""

from __future__ import annotations

import ast
import gzip
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page
from static_server import StaticServer, ensure_dist, serve

ROOT = Path(__file__).resolve().parents[2]

PAGE = """<!doctype html><html><head><meta charset="utf-8"></head><body>
<script src="/widget.js"></script></body></html>"""

# A page whose CSP forbids workers.
STRICT_PAGE = PAGE.replace(
    "<head>", """<head><meta http-equiv="Content-Security-Policy" content="worker-src 'none'">""")

PROBE = """
import asyncio, importlib.metadata, json, os, random, secrets, sys, uuid
from pydantic import BaseModel, ValidationError
import kibitz.backends.browser

class Seat(BaseModel):
    seat: int

lazy_before = "pydantic.dataclasses" in sys.modules
from pydantic.dataclasses import dataclass  # not imported by the engine: comes from the files

@dataclass
class Row:
    row: int

try:
    Seat.model_validate({"seat": "four"})
    refused = False
except ValidationError as exc:
    refused = exc.errors()[0]["type"] == "int_parsing"

await asyncio.sleep(0.01)  # the WebLoop runs after a restore
json.dumps({"urandom": os.urandom(16).hex(), "random": random.random(), "uuid": str(uuid.uuid4()),
            "token": secrets.token_hex(8), "seat": Seat.model_validate_json('{"seat": "4"}').seat,
            "row": Row(row="5").row, "refused": refused, "lazy_before": lazy_before,
            "pydantic": importlib.metadata.version("pydantic")})
"""


@pytest.fixture(scope="module")
def site() -> Iterator[StaticServer]:
    with serve(ensure_dist(), {"/snap.html": PAGE, "/strict.html": STRICT_PAGE}) as server:
        yield server


def snapshot_info() -> dict[str, Any]:
    manifest = json.loads((ensure_dist() / "manifest.json").read_text())
    info: dict[str, Any] = manifest["build"]["snapshot"]
    return info


def works(probe: dict[str, Any]) -> bool:
    """The engine's Python works: models validate and refuse, lazy imports and metadata resolve."""
    return (probe["seat"] == 4 and probe["row"] == 5 and probe["refused"] is True
            and probe["lazy_before"] is False and probe["pydantic"] == "2.14.3")


def boot(page: Page, site: StaticServer, path: str = "/snap.html") -> tuple[dict[str, Any], dict[str, Any]]:
    """Mount headless, wait for the engine, run PROBE; return (timings, probe result)."""
    page.goto(f"{site.url}{path}")
    page.evaluate("() => Kibitz.mount({ room: 'room-snap-7q2w9x', headless: true }).ready")
    timings = page.evaluate("() => window.Kibitz.timings")
    out = page.evaluate(
        "async (code) => { const py = await window.Kibitz._engine(); return await py.runPythonAsync(code); }",
        PROBE,
    )
    return timings, json.loads(out)


def test_build_ships_a_snapshot_and_the_page_restores_it(
    new_context: Callable[..., BrowserContext], site: StaticServer
) -> None:
    info = snapshot_info()
    rel = info["url"]
    assert rel.startswith("assets/pyodide-snapshot-") and rel.endswith(".bin"), rel
    assert (ensure_dist() / rel).read_bytes()[:4] == b"KZS2"  # packed, compressed copies beside it
    [lib] = info["libs"]  # pydantic-core's compiled module, shipped beside the snapshot
    assert lib["path"].endswith(".so") and (ensure_dist() / lib["url"]).read_bytes()[:4] == b"\0asm"
    results = []
    for _ in range(2):  # two users: separate contexts, same snapshot file
        page = new_context().new_page()
        timings, probe = boot(page, site)
        assert timings["bootPath"] == "snapshot", timings
        assert timings["runtimeMs"] > 0 and timings["packagesMs"] > 0
        assert works(probe), probe
        results.append(probe)
    a, b = results
    for key in ("urandom", "random", "uuid", "token"):
        assert a[key] != b[key], f"{key} repeats across pages restored from one snapshot"
    assert (rel, 200) in [(p.lstrip("/").split("?")[0], c) for p, c in site.log]


def test_a_page_that_forbids_workers_still_boots_from_the_snapshot(
    new_context: Callable[..., BrowserContext], site: StaticServer
) -> None:
    page = new_context().new_page()
    timings, probe = boot(page, site, "/strict.html")
    assert timings["bootPath"] == "snapshot", timings
    assert works(probe), probe


MODULES = "async () => (await window.Kibitz._engine()).runPython('import sys; sorted(sys.modules)')"


def stdlib_named_by_the_engine() -> list[str]:
    """Every standard-library module an import statement anywhere in the page's engine names (all
    of engine/kibitz but the CPython-only modules the page never gets: build.SITE_LEFT_OUT)."""
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from test_build import build

    names: set[str] = set()
    for path in (ROOT / "engine" / "kibitz").rglob("*.py"):
        if path.relative_to(ROOT / "engine").as_posix().startswith(build.SITE_LEFT_OUT):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
    return sorted(n for n in names if n.split(".")[0] in sys.stdlib_module_names)


def test_what_the_snapshot_boot_left_out_is_nothing_the_engine_imports(
    new_context: Callable[..., BrowserContext], site: StaticServer
) -> None:
    """The snapshot boot mounts a trimmed standard library and only the wheels' files of modules it
    does not hold: every stdlib module the engine names, and pyjwt (installed, not held), import."""
    page = new_context().new_page()
    timings, _ = boot(page, site)
    assert timings["bootPath"] == "snapshot", timings
    names = stdlib_named_by_the_engine()
    assert "json" in names and "asyncio" in names
    missing = page.evaluate(
        """async (names) => (await window.Kibitz._engine()).runPython(`
import importlib, json
missing = []
for name in json.loads(${JSON.stringify(JSON.stringify(names))}):
    try:
        importlib.import_module(name)
    except ImportError as exc:
        missing.append(f"{name}: {exc}")
import jwt
token = jwt.encode({"a": 1}, "k" * 32, algorithm="HS256")
assert jwt.decode(token, "k" * 32, algorithms=["HS256"]) == {"a": 1}
json.dumps(missing)`)""",
        names,
    )
    assert json.loads(missing) == []


def test_the_snapshot_holds_every_module_a_session_imports(
    new_context: Callable[..., BrowserContext], site: StaticServer
) -> None:
    """An import after the restore compiles source on the browser's slowest tier: none may be left."""
    page = new_context().new_page()
    page.goto(f"{site.url}/snap.html")
    before = set(page.evaluate(MODULES))
    page.evaluate("() => Kibitz.mount({ room: 'room-snap-7q2w9x', headless: true }).ready")
    after = set(page.evaluate(MODULES))
    assert sorted(after - before - {"js", "kibitz_shim"}) == []


@pytest.mark.parametrize(
    "broken",
    [
        {"url": "**/assets/pyodide-snapshot-*", "status": 404, "body": b"not found"},
        {"url": "**/assets/pyodide-snapshot-*", "status": 200,
         "body": gzip.compress(b"\x00not a snapshot\x00" * 4096)},
        {"url": "**/assets/_pydantic_core-*", "status": 404, "body": b"not found"},
        # a valid wasm module, but not a side module: nothing to bind
        {"url": "**/assets/_pydantic_core-*", "status": 200, "body": b"\x00asm\x01\x00\x00\x00",
         "type": "application/wasm"},
        {"url": "**/assets/site-packages-*", "status": 404, "body": b"not found"},
    ],
    ids=["missing", "not-a-snapshot", "module-missing", "not-a-side-module", "files-missing"],
)
def test_a_broken_snapshot_falls_back_to_the_plain_boot(
    new_context: Callable[..., BrowserContext], site: StaticServer, broken: dict[str, Any]
) -> None:
    page = new_context().new_page()
    warnings: list[str] = []
    page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)
    page.route(broken["url"], lambda route: route.fulfill(
        status=broken["status"], body=broken["body"],
        content_type=broken.get("type", "application/octet-stream")))
    timings, probe = boot(page, site)
    assert timings["bootPath"] == "fallback", timings
    assert works(probe), probe
    assert [w for w in warnings if "snapshot did not work" in w], warnings


def test_plain_boot_can_be_forced(new_context: Callable[..., BrowserContext], site: StaticServer) -> None:
    ctx = new_context()
    ctx.add_init_script('window.__KIBITZ_BOOT__ = "plain";')
    page = ctx.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    timings, probe = boot(page, site)
    assert timings["bootPath"] == "plain" and works(probe), probe
    assert not [u for u in requested if "pyodide-snapshot-" in u]


def test_a_runtime_that_cannot_take_the_snapshot_does_not_download_it(
    new_context: Callable[..., BrowserContext], site: StaticServer
) -> None:
    """WebKit's wasm function table is longer after start-up than Chromium's and Firefox's, and its
    first slots already hold what the snapshot's side module needs. Such a runtime (simulated with the
    test flag that grows the table) stops the snapshot download as soon as it knows and boots
    plainly, without waiting for it: here the snapshot's response never comes at all."""
    ctx = new_context()
    ctx.add_init_script("window.__KIBITZ_ENGINE__ = { growTable: 4000 };")
    held: list[str] = []
    ctx.route("**/assets/pyodide-snapshot-*", lambda route: held.append(route.request.url))  # never answered
    page = ctx.new_page()
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url) if "pyodide-snapshot-" in r.url else None)
    timings, probe = boot(page, site)
    assert timings["bootPath"] == "fallback" and works(probe), timings
    assert held, "the snapshot was never asked for"
    page.wait_for_timeout(500)
    assert failed == held, f"the snapshot download was not stopped: {failed} vs {held}"
