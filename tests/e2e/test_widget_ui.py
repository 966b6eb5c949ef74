"""The floating widget UI in real Chromium: launcher, panel, states, isolation, snapshots, click-through.

Pages come from a third-party origin (a StaticServer) and load widget.js from the real
``kibitz_server``. Their script tag carries ``data-kibitz-test``, which attaches the widget's
shadow root *open* so Playwright's role/label locators reach in; nothing else changes.

Snapshots live in docs/ui/*.png; ``KIBITZ_UPDATE_SNAPSHOTS=1`` rewrites them. Comparison is a
per-pixel diff with a tolerance; video areas and clock times are masked.
"""

from __future__ import annotations

import io
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops
from playwright.sync_api import BrowserContext, Locator, Page, expect
from static_server import StaticServer, ensure_dist, serve

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOTS = ROOT / "docs" / "ui"
RESULTS = ROOT / "test-results"
UPDATE = os.environ.get("KIBITZ_UPDATE_SNAPSHOTS") == "1"
BOOT_MS = 30_000  # Pyodide boot on a loaded 2-core box, with margin

HOSTILE_CSS = """
* { all: unset !important; }
html, body, * { font-size: 72px !important; line-height: 3 !important; }
div { display: none !important; }
kibitz-widget, [data-kibitz-widget] { width: 0 !important; height: 0 !important; position: static !important;
  display: none !important; transform: scale(3) !important; opacity: 0 !important; }
button { background: red !important; width: 500px !important; }
video, section, header, input { display: none !important; }
"""

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>host page</title>
<style>{css}</style></head><body>
<main id="content"><h1 id="title">A third-party page</h1>
<p id="probe">Some of the page's own text, laid out by the page's own rules.</p>
<button id="pagebtn" class="ctl primary launcher">Page button</button>
<div class="panel tile"><span class="tname">page div</span></div></main>
<script{widget}></script>
{mount}
</body></html>"""


# ---------------------------------------------------------------------------------------------
# pages and helpers


@pytest.fixture(scope="module")
def page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticServer]:
    ensure_dist()
    with serve(tmp_path_factory.mktemp("ui-origin")) as server:
        yield server


def new_room() -> str:
    return "room-ui-" + uuid.uuid4().hex[:10]


def add_page(
    server: StaticServer,
    widget_url: str,
    *,
    room: str,
    mount: dict[str, Any] | None = None,
    hostile: bool = False,
    with_widget: bool = True,
    name: str = "",
) -> str:
    """A page that embeds widget.js; ``mount`` → Kibitz.mount(mount), else the data-room one-liner."""
    path = f"/p-{uuid.uuid4().hex[:8]}.html"
    if not with_widget:
        widget = ""
        script = ""
    elif mount is not None:
        widget = f' src="{widget_url}" data-kibitz-test'
        script = f"<script>window.call = Kibitz.mount({json.dumps({'room': room, **mount})});</script>"
    else:
        widget = f' src="{widget_url}" data-kibitz-test data-room="{room}" data-name="{name}"'
        script = ""
    server.pages[path] = PAGE.format(css=HOSTILE_CSS if hostile else "", widget=widget, mount=script)
    return f"{server.url}{path}"


def widget_url(kibitz_server: Any) -> str:
    return f"{kibitz_server.http}/widget.js"


def wait_ready(page: Page) -> None:
    page.wait_for_function("() => window.Kibitz && (window.call || window.Kibitz.auto)", timeout=5_000)
    page.evaluate("() => (window.call || window.Kibitz.auto).ready", None)


def launcher(page: Page) -> Locator:
    return page.get_by_role("button", name=re.compile(r"^Kibitz call: (Open|Close) the call panel"))


def panel(page: Page) -> Locator:
    return page.get_by_role("dialog", name="Kibitz call")


def host_box(page: Page) -> dict[str, float]:
    return page.evaluate(
        """() => { const r = document.querySelector('kibitz-widget').getBoundingClientRect();
                   return {x: r.x, y: r.y, w: r.width, h: r.height,
                           right: innerWidth - r.right, bottom: innerHeight - r.bottom}; }"""
    )


def box_of(page: Page, selector: str) -> dict[str, float]:
    return page.evaluate(
        "(s) => { const r = document.querySelector(s).getBoundingClientRect();"
        " return {x: r.x, y: r.y, w: r.width, h: r.height}; }",
        selector,
    )


def compare_snapshot(name: str, png: bytes, tolerance: float = 0.01) -> None:
    """Pixel-diff ``png`` against docs/ui/<name>.png: at most ``tolerance`` of pixels may differ."""
    path = SNAPSHOTS / f"{name}.png"
    if UPDATE:
        SNAPSHOTS.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        return
    if not path.exists():
        pytest.fail(f"{path} is missing: run the suite with KIBITZ_UPDATE_SNAPSHOTS=1 to create it")
    want = Image.open(path).convert("RGB")
    got = Image.open(io.BytesIO(png)).convert("RGB")
    RESULTS.mkdir(exist_ok=True)
    if want.size != got.size:
        got.save(RESULTS / f"{name}.actual.png")
        pytest.fail(f"snapshot {name}: size {got.size} != {want.size} (actual in test-results/)")
    diff = ImageChops.difference(want, got).convert("L").point(lambda v: 255 if v > 48 else 0)
    changed = diff.histogram()[255]
    fraction = changed / (want.size[0] * want.size[1])
    if fraction > tolerance:
        got.save(RESULTS / f"{name}.actual.png")
        diff.save(RESULTS / f"{name}.diff.png")
        pytest.fail(
            f"snapshot {name}: {fraction:.2%} of pixels differ (> {tolerance:.0%}); "
            f"see test-results/{name}.actual.png and .diff.png, or KIBITZ_UPDATE_SNAPSHOTS=1"
        )


def controller_wired(page: Page) -> bool:
    """Whether the page's controller has the chat members the UI drives (the engine wiring)."""
    return bool(
        page.evaluate(
            "() => { const c = window.call || window.Kibitz.auto;"
            " return typeof c.sendChat === 'function' && typeof c.getChat === 'function'; }"
        )
    )


# ---------------------------------------------------------------------------------------------
# the launcher, isolation, states (no call needed)


def test_launcher_snapshot_and_keyboard(
    new_context: Callable[..., BrowserContext], kibitz_server: Any, page_server: StaticServer
) -> None:
    ctx = new_context(viewport={"width": 800, "height": 600}, color_scheme="light", reduced_motion="reduce")
    page = ctx.new_page()
    page.goto(add_page(page_server, widget_url(kibitz_server), room=new_room(), name="Dana"))
    button = launcher(page)
    expect(button).to_be_visible()
    expect(button).to_have_attribute("aria-expanded", "false")
    wait_ready(page)
    expect(button).to_have_attribute("data-state", "ready")
    box = host_box(page)
    assert (box["w"], box["h"]) == (56, 56) and box["right"] == 16 and box["bottom"] == 16, box
    compare_snapshot("launcher", page.locator("kibitz-widget").screenshot())

    # Keyboard: Tab reaches the launcher, Enter opens, Escape closes and gives focus back.
    page.locator("#pagebtn").focus()
    page.keyboard.press("Tab")
    expect(button).to_be_focused()
    page.keyboard.press("Enter")
    expect(panel(page)).to_be_visible()
    expect(button).to_have_attribute("aria-expanded", "true")
    expect(panel(page).get_by_role("textbox", name="Your display name")).to_have_value("Dana")
    page.get_by_role("textbox", name="Your display name").focus()
    page.keyboard.press("Escape")
    expect(panel(page)).to_be_hidden()
    expect(launcher(page)).to_be_focused()
    # Every button in the widget has an accessible name.
    unnamed = page.evaluate(
        """() => [...document.querySelector('kibitz-widget').shadowRoot.querySelectorAll('button')]
              .filter((b) => !b.closest('[hidden]'))
              .filter((b) => !(b.getAttribute('aria-label') || b.textContent.trim()))
              .map((b) => b.outerHTML)"""
    )
    assert unnamed == []


def test_hostile_page_css_cannot_touch_the_widget_nor_the_widget_the_page(
    new_context: Callable[..., BrowserContext], kibitz_server: Any, page_server: StaticServer
) -> None:
    ctx = new_context(viewport={"width": 900, "height": 700}, reduced_motion="reduce")
    url = widget_url(kibitz_server)
    room = new_room()
    measured: dict[str, Any] = {}
    for hostile in (False, True):
        for with_widget in (False, True):
            page = ctx.new_page()
            page.goto(add_page(page_server, url, room=room, hostile=hostile, with_widget=with_widget))
            key = ("hostile" if hostile else "clean") + ("+widget" if with_widget else "")
            probe = {s: box_of(page, s) for s in ("#probe", "#pagebtn", "#title")}
            style = page.evaluate(
                """() => { const cs = (s) => { const c = getComputedStyle(document.querySelector(s));
                             return [c.backgroundColor, c.color, c.fontSize, c.display, c.borderRadius,
                                     c.width]; };
                           return {btn: cs('#pagebtn'), div: cs('.panel'), body: cs('body')}; }"""
            )
            measured[key] = {"probe": probe, "style": style}
            if with_widget:
                expect(launcher(page)).to_be_visible()
                measured[key]["host"] = host_box(page)
                hit = page.evaluate(
                    """() => { const h = document.querySelector('kibitz-widget');
                      const r = h.getBoundingClientRect();
                      return document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) === h; }"""
                )
                assert hit, f"{key}: the launcher is covered"
                launcher(page).click()
                expect(panel(page)).to_be_visible()
                # Compare like with like: the panel's height follows its state (loading bar,
                # connecting…), so measure both pages once the engine is up and Join is live.
                expect(panel(page).get_by_role("button", name="Join call")).to_be_enabled(timeout=BOOT_MS)
                bb = panel(page).bounding_box()
                assert bb is not None
                measured[key]["panel"] = bb
                font = page.evaluate(
                    """() => getComputedStyle(document.querySelector('kibitz-widget').shadowRoot
                              .querySelector('.title')).fontSize"""
                )
                measured[key]["font"] = font
            page.close()
    clean, hostile = measured["clean+widget"], measured["hostile+widget"]
    # The widget is intact on the hostile page: same launcher box, same panel box, same fonts.
    assert hostile["host"] == clean["host"] == measured["clean+widget"]["host"]
    assert hostile["panel"] == clean["panel"], (hostile["panel"], clean["panel"])
    assert hostile["font"] == clean["font"] == "15px"
    # The page is unchanged by the widget: its own elements keep their boxes and styles.
    for kind in ("clean", "hostile"):
        assert measured[kind]["probe"] == measured[kind + "+widget"]["probe"], kind
        assert measured[kind]["style"] == measured[kind + "+widget"]["style"], kind


def test_preview_is_a_local_self_view_that_never_joins(
    new_context: Callable[..., BrowserContext], kibitz_server: Any, page_server: StaticServer
) -> None:
    ctx = new_context(viewport={"width": 800, "height": 800}, reduced_motion="reduce")
    page = ctx.new_page()
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(
        add_page(
            page_server,
            widget_url(kibitz_server),
            room=new_room(),
            mount={"name": "Dana", "preview": True, "startOpen": True},
        )
    )
    dialog = panel(page)
    expect(dialog).to_be_visible()  # startOpen: no tap needed
    expect(dialog.get_by_role("status")).to_contain_text("Preview: only you can see this")
    expect(dialog.get_by_role("button", name="Join call")).to_be_hidden()
    tile = dialog.get_by_role("listitem", name=re.compile(r"^Dana \(you\), camera off"))
    expect(tile).to_be_visible()
    expect(tile.locator(".avatar")).to_have_text("D")

    dialog.get_by_role("button", name="Turn camera on").click()
    expect(dialog.get_by_role("button", name="Turn camera off")).to_have_attribute("aria-pressed", "true")
    tile = dialog.get_by_role("listitem", name=re.compile(r"^Dana \(you\), camera on"))
    video = tile.locator("video")
    expect(video).to_be_visible()
    info = video.evaluate(
        """(v) => ({ tracks: v.srcObject ? v.srcObject.getVideoTracks().map((t) => t.readyState) : [],
                   mirrored: getComputedStyle(v).transform, muted: v.muted })"""
    )
    assert info["tracks"] == ["live"] and info["muted"] is True
    assert info["mirrored"].startswith("matrix(-1"), info  # your own tile is mirrored
    page.wait_for_function(
        """() => { const v = document.querySelector('kibitz-widget').shadowRoot.querySelector('video');
                   return v && v.videoWidth > 0; }""",
        timeout=10_000,
    )

    # Rename updates the tile; the camera goes back to the avatar.
    name = dialog.get_by_role("textbox", name="Your display name")
    name.fill("Dana Q")
    name.press("Enter")
    expect(dialog.get_by_role("listitem", name=re.compile(r"^Dana Q \(you\)"))).to_be_visible()
    expect(dialog.locator(".avatar")).to_have_text("DQ")
    dialog.get_by_role("button", name="Turn camera off").click()
    expect(dialog.locator("video")).to_have_count(0)
    wait_ready(page)
    assert page.evaluate("() => window.call.getState().preview") is True
    assert sockets == [], f"a preview must never dial: {sockets}"


def test_narrow_viewport_dark_scheme_and_loading_progress(
    new_context: Callable[..., BrowserContext], kibitz_server: Any, page_server: StaticServer
) -> None:
    ctx = new_context(viewport={"width": 360, "height": 640}, color_scheme="dark", reduced_motion="reduce")
    # Hold the runtime's big download so the engine stays in its loading state.
    ctx.route("**/pyodide.asm.wasm", lambda route: None)
    page = ctx.new_page()
    page.goto(add_page(page_server, widget_url(kibitz_server), room=new_room(), mount={"startOpen": True}))
    dialog = panel(page)
    expect(dialog).to_be_visible()
    status = dialog.get_by_role("status")
    expect(status).to_contain_text("Loading the call engine")
    expect(status).to_contain_text(re.compile(r"of \d+ MB"))  # sized from the server's manifest
    expect(dialog.get_by_role("progressbar", name="Loading the call engine")).to_be_visible()
    expect(dialog.get_by_role("button", name="Join call")).to_be_disabled()
    bb = dialog.bounding_box()
    assert bb is not None and bb["x"] >= 0 and bb["x"] + bb["width"] <= 360 and bb["y"] >= 0, bb
    overflow = dialog.evaluate("(p) => p.scrollWidth - p.clientWidth")
    assert overflow <= 0
    bg = dialog.evaluate("(p) => getComputedStyle(p).backgroundColor")
    rgb = [int(v) for v in re.findall(r"\d+", bg)[:3]]
    assert sum(rgb) / 3 < 60, f"dark scheme expected, got {bg}"
    launcher(page).click()
    expect(dialog).to_be_hidden()


def test_engine_failure_says_what_to_do(
    new_context: Callable[..., BrowserContext], kibitz_server: Any, page_server: StaticServer
) -> None:
    ctx = new_context(viewport={"width": 800, "height": 700})
    # No snapshot (the boot falls back to the wheels) and a wheel missing: the engine cannot start.
    ctx.route("**/assets/pyodide-snapshot-*", lambda route: route.fulfill(status=404, body="gone"))
    ctx.route("**/wheels/pyjwt-*.whl", lambda route: route.fulfill(status=404, body="gone"))
    page = ctx.new_page()
    page.goto(add_page(page_server, widget_url(kibitz_server), room=new_room(), mount={"startOpen": True}))
    dialog = panel(page)
    status = dialog.get_by_role("status")
    expect(status).to_contain_text("failed to start", timeout=BOOT_MS)
    expect(status).to_contain_text("reload the page")
    expect(status.get_by_role("button", name="Reload page")).to_be_visible()
    expect(launcher(page)).to_have_attribute("data-state", "error")
    expect(launcher(page)).to_have_attribute("aria-label", re.compile("failed to start"))


# ---------------------------------------------------------------------------------------------
# calls across contexts (need the controller wired to the Python Session)


WIRING = "needs the controller wired to the Python Session (join/chat/participants with stream): issue 4"


def open_member(
    new_context: Callable[..., BrowserContext],
    kibitz_server: Any,
    page_server: StaticServer,
    room: str,
    name: str,
    **ctx_args: Any,
) -> Page:
    ctx = new_context(
        viewport={"width": 800, "height": 900}, color_scheme="light", reduced_motion="reduce", **ctx_args
    )
    page = ctx.new_page()
    page.goto(add_page(page_server, widget_url(kibitz_server), room=room, mount={"name": name}))
    launcher(page).click()
    wait_ready(page)
    assert controller_wired(page), WIRING
    join = panel(page).get_by_role("button", name="Join call")
    expect(join).to_be_enabled(timeout=BOOT_MS)
    join.click()
    expect(panel(page).get_by_role("button", name="Leave call")).to_be_visible(timeout=BOOT_MS)
    return page


def tile(page: Page, name: str) -> Locator:
    return panel(page).get_by_role("listitem", name=re.compile(rf"^{re.escape(name)}(,| \(you\))"))


@pytest.mark.parametrize("ana_in", ["chromium", "firefox"])
def test_click_through_two_people(
    ana_in: str, new_context: Callable[..., BrowserContext], firefox_context: Callable[..., BrowserContext],
    kibitz_server: Any, page_server: StaticServer,
) -> None:
    """Two people click through a call; with ``firefox`` Ana's tab is Firefox and Ben's Chromium."""
    room = new_room()
    ana = open_member(firefox_context if ana_in == "firefox" else new_context, kibitz_server, page_server,
                      room, "Ana")
    expect(panel(ana).get_by_role("status")).to_contain_text("alone in the room", timeout=BOOT_MS)
    ben = open_member(new_context, kibitz_server, page_server, room, "Ben")
    for page in (ana, ben):
        expect(panel(page).locator(".count")).to_have_text("2 in call", timeout=BOOT_MS)
    # Joined muted and camera off.
    expect(panel(ana).get_by_role("button", name="Turn microphone on")).to_have_attribute(
        "aria-pressed", "false"
    )

    panel(ana).get_by_role("button", name="Turn microphone on").click()
    expect(panel(ana).get_by_role("button", name="Turn microphone off")).to_have_attribute(
        "aria-pressed", "true"
    )
    panel(ana).get_by_role("button", name="Turn camera on").click()
    expect(panel(ana).get_by_role("button", name="Turn camera off")).to_be_visible(timeout=10_000)
    ana_on_ben = tile(ben, "Ana")
    expect(ana_on_ben).to_have_attribute("data-cam", "true", timeout=BOOT_MS)
    ben.wait_for_function(
        """() => [...document.querySelector('kibitz-widget').shadowRoot
                      .querySelectorAll('.tile[data-cam=true] video')]
                  .some((v) => v.videoWidth > 2)""",
        timeout=BOOT_MS,
    )

    # Chat both ways, and the 500-character cap says so.
    panel(ana).get_by_role("textbox", name="Chat message").fill("hello from Ana")
    panel(ana).get_by_role("button", name="Send message").click()
    expect(
        panel(ben).get_by_role("log", name="Chat messages").or_(panel(ben).locator(".log"))
    ).to_contain_text("hello from Ana", timeout=10_000)
    panel(ben).get_by_role("textbox", name="Chat message").fill("hi Ana")
    panel(ben).get_by_role("textbox", name="Chat message").press("Enter")
    expect(panel(ana).locator(".log")).to_contain_text("hi Ana", timeout=10_000)
    panel(ben).get_by_role("textbox", name="Chat message").fill("x" * 501)
    expect(panel(ben).locator(".hint")).to_contain_text("at most 500")
    expect(panel(ben).get_by_role("button", name="Send message")).to_be_disabled()

    # Rename: the other side sees it.
    name = panel(ben).get_by_role("textbox", name="Your display name")
    name.fill("Benjamin")
    name.press("Enter")
    expect(tile(ana, "Benjamin")).to_be_visible(timeout=10_000)
    # A rename from page JS (the public controller) shows in the field and on the other side too.
    ben.evaluate("() => (window.call || window.Kibitz.auto).setName('Ben B')")
    expect(name).to_have_value("Ben B", timeout=10_000)
    expect(tile(ana, "Ben B")).to_be_visible(timeout=10_000)

    # Leave: Ana is alone again, Ben is out of the call.
    panel(ben).get_by_role("button", name="Leave call").click()
    expect(panel(ben).get_by_role("button", name="Join call")).to_be_visible(timeout=10_000)
    expect(panel(ana).locator(".count")).to_have_text("1 in call", timeout=BOOT_MS)
    expect(panel(ana).get_by_role("status")).to_contain_text("alone in the room")


def test_panel_and_chat_snapshots_three_people_one_camera(
    new_context: Callable[..., BrowserContext], kibitz_server: Any, page_server: StaticServer
) -> None:
    room = new_room()
    ana = open_member(new_context, kibitz_server, page_server, room, "Ana")
    ben = open_member(new_context, kibitz_server, page_server, room, "Ben")
    cy = open_member(new_context, kibitz_server, page_server, room, "Cy")
    for page in (ana, ben, cy):
        expect(panel(page).locator(".count")).to_have_text("3 in call", timeout=BOOT_MS)
    panel(ben).get_by_role("button", name="Turn camera on").click()
    expect(tile(ana, "Ben")).to_have_attribute("data-cam", "true", timeout=BOOT_MS)
    masks = [panel(ana).locator("video"), panel(ana).locator(".when")]
    compare_snapshot(
        "panel-three-people", panel(ana).screenshot(mask=masks, mask_color="#2d333b", animations="disabled")
    )

    panel(ben).get_by_role("textbox", name="Chat message").fill("Can everyone see my screen?")
    panel(ben).get_by_role("button", name="Send message").click()
    expect(panel(ana).locator(".log")).to_contain_text("see my screen", timeout=10_000)
    panel(ana).get_by_role("textbox", name="Chat message").fill("Yes, loud and clear.")
    panel(ana).get_by_role("textbox", name="Chat message").press("Enter")
    expect(panel(ana).locator(".log li")).to_have_count(2, timeout=10_000)
    compare_snapshot(
        "chat",
        panel(ana).locator(".chat").screenshot(mask=masks, mask_color="#2d333b", animations="disabled"),
    )
