"""A cold first load, counted on the wire: everything the page and its workers fetch from `kibitz serve`.

A counting TCP proxy sits in front of the real server (tests/wire_proxy.py) and a third-party page
on another origin mounts the engine through it. Issue 13's target is 9 MB on the wire for a cold
boot; the build reports what it expects each file to cost (``firstLoad`` in dist/manifest.json) and
this checks the browser really receives that: the snapshot and its assets go out as the build's
brotli copies and the browser decodes them (the engine boots from them).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext
from server_fixture import KibitzServer
from static_server import ensure_dist, serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wire_proxy import CountingProxy

BUDGET = 9_000_000  # bytes on the wire for a cold boot (issue 13)


@pytest.fixture
def proxy(kibitz_server: KibitzServer) -> Iterator[CountingProxy]:
    port = int(kibitz_server.http.rsplit(":", 1)[1])
    p = CountingProxy("127.0.0.1", port).start()
    yield p
    p.stop()


def test_a_cold_boot_downloads_at_most_the_budget(
    new_context: Callable[..., BrowserContext], proxy: CountingProxy
) -> None:
    manifest = json.loads((ensure_dist() / "manifest.json").read_text())
    if manifest["build"]["snapshot"] is None:
        pytest.skip("built without node: no snapshot")
    page_html = f"""<!doctype html><meta charset="utf-8"><script src="{proxy.url}/widget.js"></script>"""
    with serve(ensure_dist(), {"/host.html": page_html}) as host:
        page = new_context().new_page()
        page.goto(f"{host.url}/host.html")
        page.evaluate("() => Kibitz.mount({ room: 'room-first-load-9k2x', headless: true }).ready")
        assert page.evaluate("() => Kibitz.timings.bootPath") == "snapshot"
        total, responses = proxy.snapshot()

    by_path = {r.path.split("?")[0].lstrip("/"): r for r in responses}
    assert all(r.status == 200 for r in responses), [(r.path, r.status) for r in responses]
    biggest = sorted(responses, key=lambda r: -r.wire)
    table = "\n".join(f"{r.wire:>10,} {r.encoding or '-':5} {r.path}" for r in biggest)
    assert total <= BUDGET, f"a cold boot moved {total:,} bytes:\n{table}"
    # Each file arrived as the build's brotli copy, byte for byte the size the build reported.
    for rel, sizes in manifest["firstLoad"]["files"].items():
        got = by_path.get(rel)
        assert got is not None, f"{rel} was not fetched:\n{table}"
        assert got.body_bytes == sizes["br"], (rel, got, sizes)
    snap = by_path[manifest["build"]["snapshot"]["url"]]
    assert snap.encoding == "br", snap
    # What the build reports is what the wire carries, less HTTP headers and the two small /api calls.
    assert manifest["firstLoad"]["br"] <= total <= manifest["firstLoad"]["br"] + 30_000, table
