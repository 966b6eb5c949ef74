"""The npm package (dist/npm) in a real page: an app on its own origin imports the ES module, which
loads the engine from the Kibitz server it is given (the real ``kibitz serve``), and every member
index.d.ts declares exists on what the runtime hands back (controller, ``Kibitz``, a new room).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page
from server_fixture import KibitzServer
from static_server import StaticServer, ensure_dist, serve

import kibitz

APP_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>npm app</title></head><body>
<script type="module">
import * as kibitz from "/node_modules/kibitz/index.js";
window.kb = kibitz;
</script></body></html>"""


def declared(dts: str, interface: str) -> dict[str, bool]:
    """Members of ``interface`` in index.d.ts: name → whether it is a method (else a property);
    optional members (``name?``) are left out."""
    body = re.search(rf"export interface {interface}(?:<[^>]*>)? {{\n(.*?)\n}}", dts, re.S)
    assert body, interface
    text = re.sub(r"/\*.*?\*/", "", body.group(1), flags=re.S)
    return {m.group(1): m.group(2) in "(<"
            for m in re.finditer(r"^  (?:readonly )?([A-Za-z_]\w*)\s*([(<:])", text, re.M)}


@pytest.fixture(scope="module")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticServer]:
    dist = ensure_dist()
    root = tmp_path_factory.mktemp("npm-app")
    (root / "node_modules").mkdir()
    (root / "node_modules" / "kibitz").symlink_to(dist / "npm", target_is_directory=True)
    with serve(root, {"/app.html": APP_PAGE}) as server:
        yield server


@pytest.fixture
def app(new_context: Callable[..., BrowserContext], app_server: StaticServer) -> Page:
    page = new_context().new_page()
    page.goto(f"{app_server.url}/app.html")
    page.wait_for_function("() => window.kb", timeout=10_000)
    return page


def test_the_module_loads_the_engine_from_the_server_it_is_given(
    app: Page, kibitz_server: KibitzServer
) -> None:
    dts = (Path(ensure_dist()) / "npm" / "index.d.ts").read_text()
    out: dict[str, Any] = app.evaluate(
        """async ({ server, room, controller, global_, newRoom }) => {
          const call = await kb.mount({ server, room, headless: true, name: 'npm' });
          await call.ready;
          const made = await kb.createRoom({ server, gate: 'code' });
          const again = await kb.load(server + '/');
          const kinds = (obj, names) =>
            Object.fromEntries(names.map((n) => [n, n in obj ? typeof obj[n] : 'missing']));
          const out = {
            version: kb.version, global: Kibitz.version, server: Kibitz.server, same: again === window.Kibitz,
            scripts: [...document.querySelectorAll('script[src]')].map((s) => s.src),
            controller: kinds(call, controller), globalKinds: kinds(Kibitz, global_),
            newRoom: kinds(made, newRoom),
            room: made.room, code: typeof made.code,
          };
          call.unmount();
          return out;
        }""",
        {
            "server": kibitz_server.http, "room": "room-npm-e2e-4q8z",
            "controller": list(declared(dts, "MountedWidget")),
            "global_": list(declared(dts, "KibitzGlobal")),
            "newRoom": list(declared(dts, "NewRoom")),
        },
    )
    assert out["version"] == out["global"] == kibitz.__version__
    assert out["server"] == kibitz_server.http + "/" and out["same"] is True
    assert out["scripts"] == [f"{kibitz_server.http}/widget.js"], out["scripts"]  # loaded once
    assert out["room"] and out["code"] == "string", out  # createRoom ran in the engine
    for name, kinds in (("MountedWidget", out["controller"]), ("KibitzGlobal", out["globalKinds"]),
                        ("NewRoom", out["newRoom"])):
        want = declared(dts, name)
        missing = {m for m, k in kinds.items() if k == "missing"}
        assert missing == set(), f"{name} declares members the runtime lacks: {sorted(missing)}"
        not_methods = {m for m, is_method in want.items() if is_method and kinds[m] != "function"}
        assert not_methods == set(), f"{name} declares methods that are not functions: {sorted(not_methods)}"


def test_the_module_refuses_a_missing_or_second_server(app: Page, kibitz_server: KibitzServer) -> None:
    out = app.evaluate(
        """async (server) => {
          const err = (p) => p.then(() => 'resolved', (e) => `${e.name}: ${e.message}`);
          return {
            none: await err(kb.mount({ room: 'room-x-1' })),
            notObject: await err(kb.createRoom()),
            first: await err(kb.load(server)),
            other: await err(kb.load('http://127.0.0.1:9/')),
          };
        }""",
        kibitz_server.http,
    )
    assert out["none"].startswith("TypeError") and "URL of your Kibitz server" in out["none"], out
    assert out["notObject"].startswith("TypeError") and "server" in out["notObject"], out
    assert out["first"] == "resolved"
    assert "one server per page" in out["other"], out


def test_an_unreachable_server_rejects_clearly(app: Page) -> None:
    message = app.evaluate(
        """() => kb.load('http://127.0.0.1:9/').then(() => 'resolved', (e) => e.message)"""
    )
    assert "could not load http://127.0.0.1:9/widget.js" in message, message
