"""Stock PeerJS 1.5.5 (node_modules/peerjs/dist) in Chromium, unchanged, through our broker.

Two browser contexts (two users) register with ``kibitz serve``, open a DataConnection and
exchange messages both ways; then one closes and the other hears about it from the broker (LEAVE).
The page and peerjs.min.js are served by the server under test from a temporary dist/.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import BrowserContext, Page
from server_fixture import ROOT, KibitzServer, running_kibitz_server

PAGE = """<!doctype html><meta charset="utf-8"><title>peerjs e2e</title>
<script src="/peerjs.min.js"></script>
<script>
window.events = [];
window.startPeer = (id, opts) => new Promise((resolve, reject) => {
  const peer = new Peer(id, opts);
  window.peer = peer;
  peer.on('open', (got) => resolve(got));
  peer.on('error', (e) => { window.events.push('error:' + e.type); reject(String(e.type)); });
  peer.on('connection', (conn) => {
    window.conn = conn;
    conn.on('data', (d) => { window.events.push('got:' + JSON.stringify(d)); conn.send({echo: d}); });
    conn.on('close', () => window.events.push('closed'));
  });
  peer.socket.on('message', (m) => { if (m.type === 'LEAVE') window.events.push('leave:' + m.src); });
});
window.dial = (dst) => new Promise((resolve, reject) => {
  const conn = window.peer.connect(dst, {reliable: true});
  window.conn = conn;
  const t = setTimeout(() => reject('timeout'), 15000);
  conn.on('open', () => conn.send({hello: 'from ' + window.peer.id, n: [1, 2.5, true, null]}));
  conn.on('data', (d) => { clearTimeout(t); resolve(d); });
  conn.on('error', (e) => reject(String(e)));
});
</script>
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KibitzServer]:
    dist = tmp_path_factory.mktemp("dist")
    shutil.copy(ROOT / "node_modules/peerjs/dist/peerjs.min.js", dist / "peerjs.min.js")
    (dist / "index.html").write_text(PAGE)
    with running_kibitz_server("--dist", str(dist)) as srv:
        yield srv


def open_page(new_context: Callable[..., BrowserContext], server: KibitzServer) -> Page:
    page = new_context().new_page()
    page.goto(server.http + "/")
    page.wait_for_function("typeof window.Peer === 'function'")
    return page


def test_two_stock_peerjs_clients_talk_through_our_broker(
    new_context: Callable[..., BrowserContext], server: KibitzServer
) -> None:
    opts = json.dumps(server.peerjs_options())
    a = open_page(new_context, server)
    b = open_page(new_context, server)
    assert a.evaluate(f"startPeer('e2e-alice', {opts})") == "e2e-alice"
    assert b.evaluate(f"startPeer('e2e-bob', {opts})") == "e2e-bob"

    reply = b.evaluate("dial('e2e-alice')")
    assert reply == {"echo": {"hello": "from e2e-bob", "n": [1, 2.5, True, None]}}
    a.wait_for_function("window.events.some(e => e.startsWith('got:'))")

    # the broker tells alice that bob (a signaling contact) is gone as soon as his socket closes
    b.evaluate("window.peer.destroy()")
    a.wait_for_function("window.events.includes('leave:e2e-bob')", timeout=5000)
    assert not any(e.startswith("error:") for e in a.evaluate("window.events"))


def test_peerjs_gets_id_taken_from_another_browser(
    new_context: Callable[..., BrowserContext], server: KibitzServer
) -> None:
    opts = json.dumps(server.peerjs_options())
    a = open_page(new_context, server)
    b = open_page(new_context, server)
    assert a.evaluate(f"startPeer('e2e-same', {opts})") == "e2e-same"
    with pytest.raises(Exception, match="unavailable-id"):
        b.evaluate(f"startPeer('e2e-same', {opts})")


def test_peerjs_without_id_asks_the_broker_for_one(
    new_context: Callable[..., BrowserContext], server: KibitzServer
) -> None:
    opts = json.dumps(server.peerjs_options())
    page = open_page(new_context, server)
    got = page.evaluate(f"startPeer(undefined, {opts})")
    assert isinstance(got, str) and len(got) == 36


