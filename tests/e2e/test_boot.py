"""widget.js in a real page: the launcher, the Pyodide boot with the engine, the controller basics.

The embedding page and widget.js come from two different origins (127.0.0.1:A and :B), as on a
real third-party site; every request must stay on loopback and nothing may 404.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page
from static_server import StaticServer, ensure_dist, serve

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "test-results"

HOST_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>host</title>
<style>/* hostile page CSS: must not hide or move the launcher */
button {{ background: red !important; }}
div, kibitz-widget, [data-kibitz-widget] {{ display: none !important; position: static !important; }}
</style></head>
<body><h1>A third-party page</h1>
<script src="{widget}" data-room="{room}" data-name="Dana"></script>
</body></html>"""

BLANK_PAGE = """<!doctype html><html><head><meta charset="utf-8"></head><body>
<script src="{widget}"></script></body></html>"""


@pytest.fixture(scope="module")
def widget_server() -> Iterator[StaticServer]:
    with serve(ensure_dist()) as server:
        yield server


@pytest.fixture(scope="module")
def page_server(
    widget_server: StaticServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StaticServer]:
    widget = f"{widget_server.url}/widget.js"
    pages = {
        "/host.html": HOST_PAGE.format(widget=widget, room="room-boot-3f9k2mq7p1"),
        "/blank.html": BLANK_PAGE.format(widget=widget),
    }
    with serve(tmp_path_factory.mktemp("origin-a"), pages) as server:
        yield server


def run_py(page: Page, code: str) -> Any:
    """Run Python in the page's Pyodide; the code's last expression must be a JSON string."""
    out = page.evaluate(
        "async (code) => { const py = await window.Kibitz._engine(); return await py.runPythonAsync(code); }",
        code,
    )
    return json.loads(out)


def launcher_box(page: Page) -> dict[str, Any]:
    return page.evaluate(
        """() => { const h = document.querySelector('[data-kibitz-widget]');
        if (!h) return null; const r = h.getBoundingClientRect();
        return {w: r.width, h: r.height, open: h.shadowRoot !== null, parent: h.parentElement.tagName,
                hit: document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) === h}; }"""
    )


def boot_timings(page: Page) -> dict[str, float]:
    page.wait_for_function("() => window.Kibitz && window.Kibitz.auto", timeout=5_000)
    page.evaluate("() => window.Kibitz.auto.ready")
    t = page.evaluate("() => window.Kibitz.timings")
    return {
        "launcher_ms": round(t["launcherShown"] - t["scriptStart"], 1),
        "ready_ms": round(t["engineReady"] - t["scriptStart"], 1),
        "boot_ms": round(t["bootMs"], 1),
    }


def record(name: str, data: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "boot-timings.json"
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing[name] = data
    path.write_text(json.dumps(existing, indent=1, sort_keys=True) + "\n")


def test_cross_origin_one_liner_boots_engine_offline(
    new_context: Callable[..., BrowserContext], widget_server: StaticServer, page_server: StaticServer
) -> None:
    ctx = new_context()
    page = ctx.new_page()
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{page_server.url}/host.html")

    # The launcher is there before the engine: in a closed shadow root on <body>, and on top.
    box = launcher_box(page)
    assert box is not None, "no launcher host element"
    assert box["w"] >= 40 and box["h"] >= 40 and box["parent"] == "BODY"
    assert box["open"] is False, "the shadow root must be closed"
    assert box["hit"] is True, "the launcher is covered or not drawn"

    cold = boot_timings(page)
    assert cold["launcher_ms"] < 100, cold
    assert cold["ready_ms"] > cold["launcher_ms"]

    info = run_py(
        page,
        """
import json, sys
import kibitz, pydantic, pydantic_core, jwt
from kibitz import room_peer_id
from pydantic import BaseModel, ValidationError

class Seat(BaseModel):
    seat: int
    name: str

ok = Seat.model_validate_json('{"seat": "3", "name": "Dana"}')
try:
    Seat.model_validate({"seat": "x", "name": 1})
    err = None
except ValidationError as exc:
    err = [e["type"] for e in exc.errors()]
import pyodide_js
json.dumps({
    "room": room_peer_id("Room Boot 3f9k2mq7p1"),
    "roundtrip": Seat.model_validate_json(ok.model_dump_json()).model_dump(),
    "errors": err,
    "pydantic": pydantic.VERSION, "core": pydantic_core.__version__, "jwt": jwt.__version__,
    "kibitz_file": kibitz.__file__,
    "platform": sys.platform,
    "loaded": sorted(pyodide_js.loadedPackages.object_keys()),
})
""",
    )
    assert info["room"] == "kbz-v1-room-boot-3f9k2mq7p1"
    assert info["roundtrip"] == {"seat": 3, "name": "Dana"}
    assert info["errors"] == ["int_parsing", "string_type"]
    assert (info["pydantic"], info["core"], info["jwt"]) == ("2.14.3", "2.50.4", "2.15.1")
    assert info["platform"] == "emscripten"
    assert "site-packages" in info["kibitz_file"]
    expected = {"kibitz", "pydantic", "pydantic-core", "typing-extensions", "typing-inspection",
                "annotated-types", "pyjwt"}
    assert expected <= set(info["loaded"]), info["loaded"]
    # The auto-mounted controller reflects the script tag and has state defaults.
    state = page.evaluate("() => window.Kibitz.auto.getState()")
    assert state["inCall"] is False and state["micOn"] is False and state["lobbyStatus"] == "none"

    # Warm: same context (HTTP cache), reload.
    page.reload()
    warm = boot_timings(page)
    # This static server has no /api/* (the real server's e2e tests cover discovery); nothing else 404s.
    errors = [e for e in widget_server.errors() if not e[0].startswith("/api/")]
    assert errors == [], errors
    assert not [e for e in console_errors if "Kibitz" in e], console_errors
    record("cross_origin", {"cold": cold, "warm": warm, "cpus": os.cpu_count()})
    print(f"\nboot timings: cold {cold}  warm {warm}")


def test_mount_errors_headless_and_queued_calls(
    new_context: Callable[..., BrowserContext], page_server: StaticServer
) -> None:
    page = new_context().new_page()
    page.goto(f"{page_server.url}/blank.html")
    page.wait_for_function("() => !!window.Kibitz")
    errors = page.evaluate(
        """() => [() => Kibitz.mount({}), () => Kibitz.mount(), () => Kibitz.mount({room: '  '}),
                  () => Kibitz.mount({room: '!!!'})]
               .map((f) => { try { f(); return null; } catch (e) { return e.message; } })"""
    )
    assert all(e and "room" in e for e in errors), errors
    assert "required" in errors[0]
    assert page.evaluate("() => window.Kibitz.auto") is None

    # Headless draws nothing; calls made before ready are queued and settle after it.
    result = page.evaluate(
        """async () => {
          const call = Kibitz.mount({ room: 'room-headless-7q2w', headless: true, name: 'Bot' });
          const early = call.getState();
          call.broadcast({ early: true });           // a no-op before the data link is up
          const pending = call.setName('Robo').then(() => 'ok', (e) => 'rejected: ' + e.message);
          const before = document.querySelectorAll('[data-kibitz-widget]').length;
          await call.ready;
          const after = document.querySelectorAll('[data-kibitz-widget]').length;
          const setName = await pending;
          const unsub = call.on('state', () => {});
          unsub();
          let badEvent = null;
          try { call.on('nope', () => {}); } catch (e) { badEvent = e.message; }
          call.unmount();
          const afterUnmount = await call.join().then(() => 'ok', (e) => e.message);
          return { early, before, after, setName, badEvent, afterUnmount, dropped: call.droppedBeforeReady };
        }"""
    )
    assert result["before"] == 0 and result["after"] == 0
    assert result["early"]["self"] is None and result["early"]["isHost"] is False
    assert result["setName"] == "ok"  # queued before ready, run by the engine once it booted
    assert "unknown event" in result["badEvent"]
    assert "unmount" in result["afterUnmount"]
    assert result["dropped"] == 1

    # A visible mount then unmount removes the host element.
    n = page.evaluate(
        """() => { const c = Kibitz.mount({ room: 'room-visible-9x8c' });
                   const a = document.querySelectorAll('[data-kibitz-widget]').length; c.unmount();
                   return [a, document.querySelectorAll('[data-kibitz-widget]').length]; }"""
    )
    assert n == [1, 0]


def test_missing_package_fails_loudly(
    new_context: Callable[..., BrowserContext], page_server: StaticServer
) -> None:
    """A wheel that does not arrive must reject `ready` with the missing names, not hang or pass.

    Wheels are loaded on the plain boot (the snapshot holds them already imported), so force it."""
    ctx = new_context()
    ctx.add_init_script('window.__KIBITZ_BOOT__ = "plain";')
    ctx.route("**/wheels/pyjwt-*.whl", lambda route: route.fulfill(status=404, body="gone"))
    page = ctx.new_page()
    page.goto(f"{page_server.url}/blank.html")
    page.wait_for_function("() => !!window.Kibitz")
    message = page.evaluate(
        """() => Kibitz.mount({ room: 'room-broken-4k4k', headless: true }).ready.then(
             () => 'resolved', (e) => e.message)"""
    )
    assert "pyjwt" in message and "failed to load" in message, message


def test_firefox_boots_the_cross_origin_one_liner_offline(
    firefox_context: Callable[..., BrowserContext], widget_server: StaticServer, page_server: StaticServer
) -> None:
    """The same third-party page in Firefox (Debian's firefox-esr): the launcher at once, the engine
    from the snapshot in its Worker, data channels transferred there (no relay needed)."""
    page = firefox_context().new_page()
    page.goto(f"{page_server.url}/host.html")
    box = launcher_box(page)
    assert box is not None and box["w"] >= 40 and box["hit"] is True, box
    timings = boot_timings(page)
    assert timings["launcher_ms"] < 100, timings
    boot = page.evaluate("() => { const t = Kibitz.timings; return [t.bootPath, t.engineIn]; }")
    assert boot == ["snapshot", "worker"], boot
    probe = "import json, sys, pydantic_core\njson.dumps([sys.platform, pydantic_core.__version__])"
    info = run_py(page, probe)
    assert info == ["emscripten", "2.50.4"]
    errors = [e for e in widget_server.errors() if not e[0].startswith("/api/")]
    assert errors == [], errors
