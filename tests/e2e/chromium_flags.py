"""The Chromium every test and bench drives (Debian's, or ``KIBITZ_CHROMIUM``) and the flags it starts
with: headless on a 2-core machine with no GPU, no background traffic of its own, the fake camera and
microphone granted without a prompt, and ICE allowed over loopback."""

from __future__ import annotations

import os

CHROMIUM = os.environ.get("KIBITZ_CHROMIUM", "/usr/bin/chromium")
LOOPBACK_ICE = "--allow-loopback-in-peer-connection"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    LOOPBACK_ICE,
]
LOOPBACK_ONLY_DNS = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"
"""Benches add this: no name but loopback resolves (their pages are not behind the tests' guard)."""

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "LOOPBACK_ICE", "LOOPBACK_ONLY_DNS"]
