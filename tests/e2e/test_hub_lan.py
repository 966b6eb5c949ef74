"""Offline rooms end to end: a LAN hub and two devices on a virtual LAN with no internet.

The test builds the network itself (tests/e2e/lan.py): network namespaces on one bridge,
addresses in 198.18.96.0/20, no default route anywhere, so nothing can leave. In it:

* ``hub`` (198.18.96.2) runs ``kibitz hub``;
* ``site`` (198.18.96.3) is the embedding site: an https server (a self-signed certificate the
  browsers trust through ``--ignore-certificate-errors-spki-list``) with a page that embeds the
  widget and registers our service worker in one line, and the bundle under ``/kibitz/``;
* ``d1`` and ``d2`` are two devices, each a Chromium of its own in its namespace;
* ``bot`` runs a CPython agent.

The page is opened with ``?galaxy=``; both devices join one room with the camera on and decode each
other's frames. Then: the hub's memory and output never hold the content that crossed the call; a
reload without ``?galaxy=`` still uses the hub; an agent joins; the hub restarted keeps its link
and the call heals; the site gone, the page opens from the service worker and calls; ``?galaxy=off``
stops using the hub. Every request a page makes must stay on the LAN.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import ipaddress
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from chromium_flags import CHROMIUM
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from lan import Host, Lan, available
from page_vectors import VECTORS_DIR, check_in_page, vectors
from playwright.sync_api import Browser, BrowserContext, Page, Playwright
from static_server import ensure_dist

ROOT = Path(__file__).resolve().parents[2]
KIBITZ = str(ROOT / ".venv" / "bin" / "kibitz")
PYTHON = str(ROOT / ".venv" / "bin" / "python")
LAN_NET = ipaddress.ip_network("198.18.96.0/20")
BOOT_MS = 90_000
ROOM = f"room-lan-{os.getpid()}"

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>A site</title></head>
<body><h1>A site that embeds a call</h1>
<script>navigator.serviceWorker?.register('/kibitz-sw.js')</script>
<script src="/kibitz/widget.js"></script>
<script>
  window.call = Kibitz.mount({ room: location.hash.slice(1), name: window.NAME, headless: true })
</script></body></html>"""


def _tls(tmp: Path, ip: str) -> str:
    """A self-signed certificate for ``ip``; returns its SPKI pin for Chromium's flag."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "site.lan")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp / "site.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "site.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


class Lines:
    """A process's output, read in the background and kept."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, prefix: str, timeout: float = 30.0, start: int = 0) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    if line.startswith(prefix):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {prefix!r} line in {self.lines[-20:]}")
                self._cond.wait(left)


@dataclass
class Device:
    name: str
    host: Host
    browser: Browser
    ctx: BrowserContext
    page: Page | None = None
    off_lan: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    site_log: Callable[[], list[str]] = list

    def open(self, url: str) -> Page:
        if self.page is None:
            self.page = self.ctx.new_page()
            self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
            self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        else:  # a real load: the same URL with a fragment would only scroll the page
            self.page.goto("about:blank")
        self.page.goto(url)
        try:
            self.page.wait_for_function("() => window.call", timeout=BOOT_MS)
            self.page.evaluate("() => window.call.ready")
        except Exception as exc:
            raise AssertionError(f"{self.name} did not boot from {url}: {exc}\n{self.diagnosis()}") from exc
        return self.page

    def diagnosis(self) -> str:
        """What this device saw, for a failure's message: failed requests, console, site log."""
        sw = "?"
        with contextlib.suppress(Exception):
            assert self.page is not None
            sw = str(self.page.evaluate("() => !!navigator.serviceWorker?.controller"))
        site = self.site_log()[-40:]
        return (f"controlled by the service worker: {sw}\nfailed requests: {self.failed[-20:]}\n"
                f"console: {self.console[-30:]}\nsite: {site}")

    def js(self, expr: str, arg: Any = None) -> Any:
        assert self.page is not None
        return self.page.evaluate(expr, arg)

    def wait(self, expr: str, arg: Any = None, timeout: float = BOOT_MS) -> None:
        assert self.page is not None
        self.page.wait_for_function(expr, arg=arg, timeout=timeout)


@dataclass
class World:
    lan: Lan
    tmp: Path
    hub: Host
    site: Host
    bot: Host
    devices: list[Device]
    hub_proc: subprocess.Popen[str] | None = None
    hub_out: Lines | None = None
    galaxy: str = ""
    site_proc: subprocess.Popen[str] | None = None
    site_out: Lines | None = None

    def start_hub(self) -> str:
        proc = self.hub.popen(
            [KIBITZ, "hub", "--address", self.hub.addr, "--state-dir", str(self.tmp / "hub-state"),
             "--site", f"https://{self.site.addr}/call.html"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        )
        self.hub_proc, self.hub_out = proc, Lines(proc)
        self.hub_out.wait_for("KIBITZ_HUB_READY")
        return self.hub_out.wait_for("KIBITZ_GALAXY=").split("=", 1)[1]

    def stop_hub(self) -> None:
        assert self.hub_proc is not None
        self.hub.stop(self.hub_proc)

    def start_site(self) -> None:
        proc = self.site.popen(
            [PYTHON, str(ROOT / "tests" / "e2e" / "https_site.py"), "--cert", str(self.tmp / "site.pem"),
             "--key", str(self.tmp / "site.key"), "--pages", str(self.tmp / "pages"),
             "--bundle", str(ROOT / "dist")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.site_proc, self.site_out = proc, Lines(proc)
        self.site_out.wait_for("SITE_READY")

    def url(self, query: str = "") -> str:
        return f"https://{self.site.addr}/call.html{query}#{ROOM}"


def _device(pw: Playwright, lan: Lan, name: str, octet: int, spki: str, tmp: Path) -> Device:
    host = lan.host(name, octet)
    browser = pw.chromium.launch(
        executable_path=host.wrapper(CHROMIUM, tmp), headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
              f"--ignore-certificate-errors-spki-list={spki}",
              # A page without camera permission (the hub's plain-http demo) gathers host candidates
              # only on the default route's interface, and this LAN has no default route by design;
              # a real LAN has one (the access point), which this stands for.
              "--force-webrtc-ip-handling-policy=default"],
    )
    ctx = browser.new_context()
    ctx.add_init_script(f"window.NAME = {name.upper()!r}")
    dev = Device(name, host, browser, ctx)

    def seen(request: Any) -> None:
        url = request.url
        dev.requests.append(url)
        hostname = urlsplit(url).hostname or ""
        if url.startswith(("data:", "blob:")):
            return
        try:
            on_lan = ipaddress.ip_address(hostname) in LAN_NET
        except ValueError:
            on_lan = False
        if not on_lan:
            dev.off_lan.append(url)

    ctx.on("request", seen)
    ctx.on("requestfailed", lambda r: dev.failed.append(f"{r.url} {r.failure}"))
    return dev


@pytest.fixture(scope="module")
def world(playwright_session: Playwright, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    why = available()
    if why and os.geteuid() != 0:  # not root: nothing here can build a LAN; say so, do not hide it
        pytest.skip(f"SKIPPED the offline-LAN e2e (run the suite as root to include it): {why}")
    if why:  # root, yet no namespaces: a broken machine, not a reason to skip
        pytest.fail(f"the offline-LAN tests need network namespaces: {why}")
    ensure_dist()
    tmp = tmp_path_factory.mktemp("lan")
    os.chmod(tmp, 0o755)
    spki = _tls(tmp, "198.18.96.3")
    pages = tmp / "pages"
    pages.mkdir()
    (pages / "call.html").write_text(PAGE)
    shutil.copy(ROOT / "dist" / "kibitz-sw.js", pages / "kibitz-sw.js")
    net = Lan(f"{os.getpid() % 100000:05d}"[-5:])
    devices: list[Device] = []
    try:
        w = World(net, tmp, net.host("hub", 2), net.host("site", 3), net.host("bot", 20), devices)
        w.start_site()
        w.galaxy = w.start_hub()
        devices += [_device(playwright_session, net, "d1", 11, spki, tmp),
                    _device(playwright_session, net, "d2", 12, spki, tmp)]
        for dev in devices:
            dev.site_log = lambda: w.site_out.lines if w.site_out else []
        yield w
        for dev in devices:
            assert dev.off_lan == [], f"{dev.name} asked for something off the LAN: {dev.off_lan}"
    finally:
        for dev in devices:
            with contextlib.suppress(Exception):
                dev.browser.close()
        net.close()


def _in_call(dev: Device, n: int) -> None:
    dev.wait("(n) => window.call.getState().inCall && window.call.getParticipants().length === n", n)


SHOW = """() => { for (const p of window.call.getParticipants()) {
  if (p.isSelf || !p.stream) continue
  let v = document.querySelector(`video[data-id='${p.id}']`)
  if (!v) { v = document.createElement('video'); v.dataset.id = p.id; v.muted = true; v.autoplay = true;
            v.playsInline = true; document.body.append(v) }
  if (v.srcObject !== p.stream) v.srcObject = p.stream
} }"""
FRAMES = """() => [...document.querySelectorAll('video[data-id]')]
  .map((v) => [v.videoWidth, v.getVideoPlaybackQuality().totalVideoFrames])"""


def _frames(dev: Device) -> list[list[int]]:
    dev.js(SHOW)
    return list(dev.js(FRAMES))


def _sees_camera(dev: Device) -> None:
    """The other device's camera frames decode here: a real size (not the 2x2 placeholder), growing."""
    deadline = time.monotonic() + BOOT_MS / 1000
    first: list[list[int]] | None = None
    while time.monotonic() < deadline:
        frames = _frames(dev)
        big = [f for f in frames if f[0] > 2]
        if big and first is not None and any(b[1] > f[1] for b, f in zip(big, first, strict=False)):
            return
        if big:
            first = big
        time.sleep(0.5)
    raise AssertionError(f"{dev.name} never decoded the other camera: {_frames(dev)}")


# ------------------------------------------------------------------------------------- tests


def test_two_devices_call_through_the_hub_with_camera(world: World) -> None:
    d1, d2 = world.devices
    for dev in (d1, d2):
        dev.open(world.url(f"?galaxy={world.galaxy}"))
        assert dev.js("() => localStorage.getItem('kbz.galaxy')") == world.galaxy
        dev.js("() => window.call.join({ cam: true })")
    for dev in (d1, d2):
        _in_call(dev, 2)
        assert dev.js("() => window.call.getState().signaling") == "hub"
    _sees_camera(d1)
    _sees_camera(d2)
    assert world.site_out is not None
    asked = [ln for ln in world.site_out.lines if "/api/" in ln]
    assert not asked, f"asked the site for signaling: {asked}"


def _memory(pid: int) -> bytes:
    """Every readable private mapping of a process (its heap, the Python objects)."""
    out = bytearray()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            parts = line.split()
            if "r" not in parts[1] or (len(parts) > 5 and parts[5].startswith(("/usr", "[v"))):
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            with contextlib.suppress(OSError, ValueError):
                mem.seek(start)
                out += mem.read(end - start)
    return bytes(out)


def test_the_hub_never_sees_content(world: World) -> None:
    d1, d2 = world.devices
    chat = "chat-" + base64.b32encode(os.urandom(10)).decode()
    app = "app-" + base64.b32encode(os.urandom(10)).decode()
    d2.js("() => { window.got = []; window.call.onMessage((d) => window.got.push(d)) }")
    d1.js("(t) => window.call.sendChat(t)", chat)
    d1.js("(t) => window.call.broadcast({ t })", app)
    d2.wait("(t) => window.got.some((d) => d && d.t === t)", app)
    d2.wait("(t) => window.call.getChat().some((c) => c.text === t)", chat)
    assert world.hub_proc is not None and world.hub_out is not None
    pid = world.hub_proc.pid
    assert "kibitz" in Path(f"/proc/{pid}/cmdline").read_text()
    memory = _memory(pid)
    assert ROOM.encode() in memory  # the control: signaling (room ids) is there, so a leak would be seen
    for marker in (chat, app):
        assert marker.encode() not in memory, f"{marker} in the hub's memory"
        assert not any(marker in ln for ln in world.hub_out.lines), f"{marker} in the hub's output"


def test_a_reload_without_galaxy_still_uses_the_hub(world: World) -> None:
    d1, d2 = world.devices
    assert world.site_out is not None
    seen = len(world.site_out.lines)
    d1.open(world.url())
    assert d1.js("() => window.call.getState().signaling") == "hub"
    d1.js("() => window.call.join({ cam: true })")
    _in_call(d1, 2)
    _in_call(d2, 2)
    _sees_camera(d2)
    asked = [ln for ln in world.site_out.lines[seen:] if "/api/" in ln]
    assert not asked, f"asked the site for signaling after a reload: {asked}"


AGENT = """NAME = "Scribe"

async def main(agent):
    import asyncio
    while not agent.can("send-chat"):  # agents start read-only: wait for a device's grant
        await asyncio.sleep(0.2)
    await agent.say("granted through the hub")
    await asyncio.Event().wait()
"""
SCRIBE = "() => window.call.getParticipants().find((p) => p.name === 'Scribe')?.id"


def test_a_cpython_agent_joins_the_hub_room(world: World) -> None:
    """The agent joins; capabilities work as online: it starts read-only at both devices, the
    coordinating device grants it send-chat, and its line reaches both."""
    d1, d2 = world.devices
    agent_file = world.tmp / "lan_agent.py"
    agent_file.write_text(AGENT)
    proc = world.bot.popen(
        [KIBITZ, "agent", "run", str(agent_file), "--room", ROOM, "--galaxy", world.galaxy],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
    )
    out = Lines(proc)
    try:
        out.wait_for("KIBITZ_AGENT_READY", timeout=60)
        for dev in (d1, d2):
            dev.wait("() => window.call.getParticipants().some((p) => p.name === 'Scribe')")
        bot = d1.js(SCRIBE)
        assert bot and d2.js(SCRIBE) == bot
        for dev in (d1, d2):
            grant = dev.js("(id) => window.call.getCapabilityGrant(id)", bot)
            assert grant and grant["act"] == [] and "read-chat" in grant["perceive"], grant
        coord = next(dev for dev in (d1, d2) if dev.js("() => window.call.getState().isCoordinator"))
        grant = coord.js("(id) => window.call.getCapabilityGrant(id)", bot)
        coord.js("([id, g]) => window.call.setCapabilityGrant(id, g)",
                 [bot, {"perceive": grant["perceive"], "act": ["send-chat"]}])
        for dev in (d1, d2):
            dev.wait("(id) => window.call.getChat().some((c) => c.from === id"
                     " && c.text === 'granted through the hub')", bot)
    finally:
        world.bot.stop(proc)
    for dev in (d1, d2):
        dev.wait("() => !window.call.getParticipants().some((p) => p.name === 'Scribe')")


def test_the_hub_restarted_keeps_its_link_and_the_call_heals(world: World) -> None:
    d1, d2 = world.devices
    before = world.galaxy
    world.stop_hub()
    assert world.start_hub() == before  # same certificate, credentials, address and port
    for dev in (d1, d2):
        _in_call(dev, 2)
    # A device that opens the old link now gets in too.
    d2.open(world.url(f"?galaxy={before}"))
    d2.js("() => window.call.join({ cam: true })")
    _in_call(d2, 2)
    _in_call(d1, 2)
    _sees_camera(d1)


def test_the_site_gone_the_page_opens_from_the_service_worker_and_calls(world: World) -> None:
    d1, d2 = world.devices
    assert world.site_proc is not None
    world.site.stop(world.site_proc)
    d2.open(world.url())
    assert d2.js("() => !!navigator.serviceWorker.controller")
    assert d2.js("() => window.call.getState().signaling") == "hub"
    d2.js("() => window.call.join({ cam: true })")
    _in_call(d2, 2)
    _in_call(d1, 2)
    _sees_camera(d2)
    world.start_site()


def test_the_hub_serves_its_page_and_the_bundle(world: World) -> None:
    """No site at all: the hub's own page links to the demo it serves. That page is plain http on
    the LAN (no camera there, and its host candidates are mDNS names), yet it boots from the hub,
    signals through it, and a device on the https site joins its room."""
    d1, d2 = world.devices
    page = d1.ctx.new_page()
    try:
        page.goto(f"http://{world.hub.addr}:4780/")
        assert (page.locator("a#link").get_attribute("href") or "").startswith(world.url().split("#")[0])
        link = page.locator("a#own").get_attribute("href") or ""
        assert link.startswith(f"http://{world.hub.addr}:4780/demo/?galaxy=g1|"), link
        assert page.locator("svg").count() == 1 and world.galaxy in page.content()
        page.goto(link)
        page.wait_for_function("() => window.call && location.hash.length > 1", timeout=BOOT_MS)
        page.evaluate("() => window.call.ready")
        assert page.evaluate("() => window.isSecureContext") is False
        room = page.evaluate("() => location.hash.slice(1)")
        page.evaluate("() => window.call.join()")
        d2.js("(room) => { window.call2 = Kibitz.mount({ room, name: 'D2b', headless: true }) }", room)
        d2.js("() => window.call2.ready")
        d2.js("() => window.call2.join()")
        page.wait_for_function("() => window.call.getParticipants().length === 2", timeout=BOOT_MS)
        d2.wait("() => window.call2.getParticipants().length === 2")
        assert page.evaluate("() => window.call.getState().signaling") == "hub"
        d2.js("() => window.call2.unmount()")
    finally:
        page.close()


def test_galaxy_off_stops_using_the_hub(world: World) -> None:
    d1, d2 = world.devices
    assert world.site_out is not None
    seen = len(world.site_out.lines)
    d1.open(world.url("?galaxy=off"))
    assert d1.js("() => localStorage.getItem('kbz.galaxy')") is None
    assert d1.js("() => window.call.getState().signaling") == "broker"
    d1.js("() => window.call.join()")
    d2.wait("() => window.call.getParticipants().length === 1")  # d1 is no longer in the hub's room
    deadline = time.monotonic() + 30
    while not any(re.match(r"REQ (/kibitz)?/api/signal", ln) for ln in world.site_out.lines[seen:]):
        assert time.monotonic() < deadline, "the page never turned to its server for signaling"
        time.sleep(0.2)


def test_the_galaxy_vectors_pass_in_the_page_as_in_cpython(world: World) -> None:
    """The page reads a galaxy link (the hub's pinned certificate) exactly as agents do."""
    import json
    import sys

    page = world.devices[0].page
    assert page is not None
    got = check_in_page(page, "galaxy")
    sys.path.insert(0, str(VECTORS_DIR))
    from galaxy_check import check_all

    here = check_all(json.loads(vectors("galaxy")))
    assert got["platform"] == "emscripten" and got["failed"] == []
    assert here.failed == [] and got["passed"] == here.passed
