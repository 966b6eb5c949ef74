"""widget/support.js: a browser that cannot make calls (WebKitGTK as Debian ships it has no
RTCPeerConnection) gets a clear error from `ready` before anything is downloaded. The check is pure
JS over a global object, run here under Node with stand-in globals."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CASES = """
const full = { RTCPeerConnection: function () {}, WebAssembly: {}, Worker: function () {},
               MessageChannel: function () {}, WebSocket: function () {} };
const without = (...names) => { const g = { ...full }; for (const n of names) delete g[n]; return g; };
console.log(JSON.stringify([
  browserSupport(full),
  browserSupport(without("RTCPeerConnection")),
  browserSupport(without("Worker")),
  browserSupport(without("Worker", "MessageChannel", "WebAssembly")),
]));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node (scripts/setup.sh installs it)")
def test_a_browser_without_webrtc_is_refused_in_words() -> None:
    source = (ROOT / "widget" / "support.js").read_text() + CASES
    out = subprocess.run(["node", "-e", source], capture_output=True, text=True, check=True).stdout
    ok, no_rtc, no_worker, bare = json.loads(out)
    assert ok is None
    assert no_rtc.startswith("Kibitz: this browser cannot make calls: it has no RTCPeerConnection (WebRTC).")
    assert "Chrome" in no_rtc and "Firefox" in no_rtc
    assert no_worker is None  # a MessageChannel is enough: the engine then runs on the page's thread
    assert "no WebAssembly, no Worker" in bare
