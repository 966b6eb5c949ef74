"""Widget UI benchmark: script tag → visible launcher, tap → panel ready (cold and warm), and bytes.

A third-party page (its own origin) carries the one-liner pointing at ``kibitz serve`` on
127.0.0.1; Debian Chromium (Playwright, headless) loads it. Times come from the page's own clock
(``performance`` marks the widget sets: ``kibitz:launcher``, ``kibitz:panel-open``,
``kibitz:panel-ready``) and the Resource Timing entry of widget.js:

- tag → launcher: widget.js request start → the launcher attached (download + parse + draw);
- script → launcher: widget.js starts running → launcher attached;
- tap → panel ready, tapped at first sight: the user taps as soon as the launcher shows; the panel
  opens at once (loading state) and is *ready* when the engine is up and the Join button live;
- tap → panel ready, engine already up: the UI's own cost of building and drawing the panel.

Cold = a fresh browser context (empty HTTP cache); warm = a reload in the same context.
Bytes: the UI's own JS and CSS (widget/ui.js, widget/ui.css.js) raw and gzip, all of dist/widget.js,
and the Pyodide runtime + wheels the engine downloads, counted separately.

Run: ``.venv/bin/python bench/widget_bench.py`` (``--runs N``, ``--no-write``). Prints a markdown
section and writes it into ``## Widget UI`` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

from bench_docs import machine, replace_section  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402
from server_fixture import running_kibitz_server  # noqa: E402
from static_server import ensure_dist, serve  # noqa: E402

SECTION = "## Widget UI"
CHROMIUM = os.environ.get("KIBITZ_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>bench</title></head><body>
<h1>A third-party page</h1>
<script src="{widget}" data-room="{room}" data-name="Dana"></script></body></html>"""

MEASURE_LOAD = """() => {
  const mark = (n) => { const e = performance.getEntriesByName(n); return e.length ? e[0].startTime : null; };
  const res = performance.getEntriesByType('resource').find((e) => /\\/widget\\.js(\\?|$)/.test(e.name));
  const t = window.Kibitz.timings;
  return { tagStart: res ? res.startTime : null, scriptStart: t.scriptStart,
           launcher: mark('kibitz:launcher'), transfer: res ? res.transferSize : null };
}"""


def gz(data: bytes) -> int:
    return len(gzip.compress(data, 9))


def where() -> str:
    """The shared machine line plus what only this bench depends on: the Chromium build."""
    chromium = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
    return f"{machine()}; {chromium or 'chromium'}; {time.strftime('%Y-%m-%d')}"


VIEWPORT = {"width": 1000, "height": 800}


def tap_launcher(page: Page) -> None:
    """Tap the launcher where it always is (16 px from the corner, 56 px wide), without asking the
    page first: a query would wait for a main thread that may be busy booting the engine."""
    page.mouse.click(VIEWPORT["width"] - 16 - 28, VIEWPORT["height"] - 16 - 28)


# The bench page's own listener: when the browser delivered the tap (the event's timestamp is taken
# when the input arrives, even if the main thread is busy booting Pyodide and handles it later).
TAP_LISTENER = "document.addEventListener('pointerdown', (e) => { window.__tap = e.timeStamp; }, true);"


def panel_times(page: Page) -> tuple[float, float, float]:
    """(tap, panel opened, panel ready) on the page's clock."""
    page.wait_for_function(
        "() => performance.getEntriesByName('kibitz:panel-ready').length > 0", timeout=60_000
    )
    tap, opened, ready = page.evaluate(
        "() => [window.__tap, ...['kibitz:panel-open', 'kibitz:panel-ready']"
        ".map((n) => performance.getEntriesByName(n)[0].startTime)]"
    )
    return float(tap), float(opened), float(ready)


def one_visit(page: Page, url: str, reload: bool) -> dict[str, float]:
    # The one-liner runs before the load event, so the launcher is there when these return.
    if reload:
        page.reload(wait_until="load")
    else:
        page.goto(url, wait_until="load")
    tap_launcher(page)  # at first sight
    tap, opened, ready = panel_times(page)
    load = page.evaluate(MEASURE_LOAD)
    out = {
        "tag_to_launcher": load["launcher"] - load["tagStart"],
        "script_to_launcher": load["launcher"] - load["scriptStart"],
        "tap_to_open_first_sight": opened - tap,
        "tap_to_ready_first_sight": ready - tap,
    }
    # Close, then tap again with the engine up: the panel's own cost.
    tap_launcher(page)
    page.evaluate(
        "() => { performance.clearMarks('kibitz:panel-open'); performance.clearMarks('kibitz:panel-ready'); }"
    )
    tap_launcher(page)
    tap, opened, ready = panel_times(page)
    out["tap_to_ready_engine_up"] = ready - tap
    return out


def run(runs: int) -> dict[str, Any]:
    head = where()
    dist = ensure_dist()
    results: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
    with running_kibitz_server() as srv, serve(dist) as origin, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            for i in range(runs):
                path = f"/bench-{i}.html"
                origin.pages[path] = PAGE.format(
                    widget=f"{srv.http}/widget.js", room=f"room-bench-ui-{i:04d}"
                )
                ctx = browser.new_context(viewport=VIEWPORT)
                ctx.add_init_script(TAP_LISTENER)
                page = ctx.new_page()
                results["cold"].append(one_visit(page, origin.url + path, reload=False))
                results["warm"].append(one_visit(page, origin.url + path, reload=True))
                ctx.close()
        finally:
            browser.close()
    files = json.loads((dist / "manifest.json").read_text())["files"]
    runtime = {
        k: v["bytes"]
        for k, v in files.items()
        if re.match(r"pyodide-[^/]+/(pyodide\.asm\.(wasm|mjs)|python_stdlib\.zip|pyodide\.mjs)$", k)
    }
    # What the page loads for the engine: the snapshot and its assets (the wheels only on a plain boot).
    engine = {k: v["bytes"] for k, v in files.items() if k.startswith("assets/")}
    ui_js = (ROOT / "widget" / "ui.js").read_bytes()
    ui_css = (ROOT / "widget" / "ui.css.js").read_bytes()
    css_text = re.search(rb"`(.*)`", ui_css, re.S)
    widget = (dist / "widget.js").read_bytes()
    sizes = {
        "ui_js": (len(ui_js), gz(ui_js)),
        "ui_css": (
            len(css_text.group(1)) if css_text else len(ui_css),
            gz(css_text.group(1) if css_text else ui_css),
        ),
        "widget_js": (len(widget), gz(widget)),
        "runtime": (sum(runtime.values()), None),
        "engine": (sum(engine.values()), None),
    }
    return {"times": results, "sizes": sizes, "runs": runs, "machine": head}


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.0f} ms"


def spread(xs: list[float]) -> str:
    return f"{min(xs):.0f}–{max(xs):.0f}"


def render(data: dict[str, Any]) -> str:
    t = data["times"]
    rows = [
        ("widget.js request start → launcher visible", "tag_to_launcher"),
        ("widget.js runs → launcher visible", "script_to_launcher"),
        ("tap at first sight → panel open (loading state shown)", "tap_to_open_first_sight"),
        ("tap at first sight → panel ready (engine booted, Join live)", "tap_to_ready_first_sight"),
        ("tap with the engine up → panel ready (the UI's own cost)", "tap_to_ready_engine_up"),
    ]
    lines = [
        SECTION,
        "",
        f"{data['machine']}.",
        "",
        f"`bench/widget_bench.py`: {data['runs']} runs. A third-party page (its own 127.0.0.1 origin) "
        "carries "
        "the `data-room` one-liner pointing at `kibitz serve`; headless Debian Chromium via Playwright. "
        "Times are the page's own clock: the widget.js Resource Timing entry, the tap's event timestamp "
        "and the widget's performance marks (`kibitz:launcher`, `kibitz:panel-open` when the click is "
        "handled, `kibitz:panel-ready` once the panel is open and the engine is up, so Join is live). "
        '"At first sight" taps the moment the launcher is visible. '
        "Cold = fresh browser context (empty HTTP cache); warm = "
        "reload in the same context. Median, with the min–max range.",
        "",
        "| | cold | warm |",
        "|---|---:|---:|",
    ]
    for label, key in rows:
        cold = [r[key] for r in t["cold"]]
        warm = [r[key] for r in t["warm"]]
        lines.append(f"| {label} | {med(cold)} ({spread(cold)}) | {med(warm)} ({spread(warm)}) |")
    s = data["sizes"]
    kib = lambda n: f"{n / 1024:.1f} KiB"  # noqa: E731
    mib = lambda n: f"{n / 1048576:.2f} MiB"  # noqa: E731
    lines += [
        "",
        "| bytes | raw | gzip -9 |",
        "|---|---:|---:|",
        f"| the UI's own JS (`widget/ui.js`) | {kib(s['ui_js'][0])} | {kib(s['ui_js'][1])} |",
        f"| the UI's own CSS (`widget/ui.css.js`, the stylesheet text) | {kib(s['ui_css'][0])} "
        f"| {kib(s['ui_css'][1])} |",
        f"| all of `dist/widget.js` (UI + loader + shim) | {kib(s['widget_js'][0])} "
        f"| {kib(s['widget_js'][1])} |",
        "| Pyodide runtime (wasm, asm.mjs, stdlib zip, pyodide.mjs), counted separately "
        f"| {mib(s['runtime'][0])} | — |",
        "| the engine: snapshot (gzip inside), pydantic-core's compiled module and the wheels' files, "
        f"counted separately | {mib(s['engine'][0])} | — |",
        "",
        "The launcher needs only widget.js: it is drawn synchronously at mount, before any of the runtime "
        "is fetched. Tapping at first sight opens the panel at once in its loading state (with a progress "
        'bar sized from the server\'s manifest); "ready" there is dominated by the Pyodide boot.',
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 runs (scripts/bench.sh passes it to every bench)")
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = ap.parse_args(argv)
    body = render(run(2 if args.quick else args.runs))
    print(body)
    if not args.no_write:
        replace_section(SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
