"""The released wheel, installed: ``pip install 'kibitz[server]'`` into a fresh venv outside the
checkout, from the wheel ``build/build.py --wheel`` makes (the bundle inside), then ``kibitz serve``
from an empty directory, started as the Dockerfile and the systemd unit in docs/server.md start it
(docker itself is not run here); and a second fresh venv with only ``kibitz[agent]`` runs ``kibitz
agent run`` from an empty directory into a room on that server.

The venv gets its dependencies from the package index pip is configured with (CI has one); the
kibitz wheel itself is the one just built. Nothing of the checkout is importable in that venv: the
server must find widget.js, the Pyodide runtime, the wheels and the snapshot inside the installed
package, and a real Chromium page boots the engine from them with no request leaving 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page
from server_fixture import stop_group

# Building the wheel (and dist/, if stale) and installing it with its dependencies is slow on a busy
# machine: the first test's set-up pays for it.
pytestmark = pytest.mark.timeout(900)
ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"KIBITZ_READY (http://\S+) broker=(ws://\S+)")


def _version() -> str:
    from kibitz import __version__

    return __version__


@dataclass(frozen=True)
class Installed:
    venv: Path
    wheel: Path
    work: Path
    """An empty directory outside the checkout: every command runs there."""
    env: dict[str, str]

    def exe(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.exe(args[0]), *args[1:]], cwd=self.work, env=self.env, text=True,
                              capture_output=True, timeout=timeout)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "KIBITZ_DIST",
                                                            "KIBITZ_STATE_DIR", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("installed")
    assert ROOT not in tmp.parents
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, str(ROOT / "build" / "build.py"), "--quiet", "--wheel", str(wheels)],
                   check=True, cwd=ROOT, timeout=900)
    (wheel,) = wheels.glob("kibitz-*.whl")
    venv = tmp / "venv"
    env = _clean_env()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[server]"]
    res = subprocess.run(pip, cwd=tmp, env=env, text=True, capture_output=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    work = tmp / "anywhere"
    work.mkdir()
    return Installed(venv, wheel, work, env)


@pytest.fixture(scope="module")
def installed_agent(installed: Installed, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Another fresh venv with only ``kibitz[agent]`` from the same wheel (what an agent author has)."""
    tmp = tmp_path_factory.mktemp("agent-only")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=installed.env, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{installed.wheel}[agent]"]
    res = subprocess.run(pip, cwd=tmp, env=installed.env, text=True, capture_output=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    work = tmp / "anywhere"
    work.mkdir()
    return Installed(venv, installed.wheel, work, installed.env)


@dataclass(frozen=True)
class Recipe:
    """How a deployment starts the server: argv after the kibitz executable, and its environment."""

    argv: list[str]
    env: dict[str, str]


def dockerfile_recipe() -> Recipe:
    text = (ROOT / "Dockerfile").read_text()
    copy = re.search(r"^COPY (\S+) ", text, re.M)
    assert copy and copy.group(1) == "dist/pip/" and "build/build.py --wheel dist/pip" in text
    assert re.search(r'pip install [^\n]*kibitz-\*\.whl\)\[server\]"', text)
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    assert entry
    argv = json.loads(entry.group(1))
    assert argv[0] == "/opt/kibitz/bin/kibitz"
    return Recipe(argv[1:], dict(re.findall(r"^ENV (\w+)=(\S+)$", text, re.M)))


def systemd_recipe() -> Recipe:
    unit = re.search(r"```ini\n(\[Unit\].*?)```", (ROOT / "docs" / "server.md").read_text(), re.S)
    assert unit, "docs/server.md has no systemd unit"
    start = re.search(r"^ExecStart=(\S+) (.*)$", unit.group(1), re.M)
    assert start and start.group(1) == "/opt/kibitz/bin/kibitz"
    return Recipe(start.group(2).split(), dict(re.findall(r"^Environment=(\w+)=(\S+)$", unit.group(1), re.M)))


@dataclass
class Served:
    http: str
    broker: str
    lines: list[str] = field(default_factory=list)


@contextlib.contextmanager
def kibitz_serve(
    inst: Installed, *args: str, recipe: Recipe | None = None, root: Path | None = None
) -> Iterator[Served]:
    """``kibitz serve`` from the installed venv in its empty directory, until its banner is out.

    With a ``recipe``, its argv and environment (absolute paths moved under ``root``), and loopback
    with free ports after them (the last flag wins)."""
    argv, env = ["serve"], dict(inst.env)
    if recipe is not None:
        assert root is not None and recipe.argv[0] == "serve"
        argv = recipe.argv
        env.update({k: str(root / v.lstrip("/")) if v.startswith("/") else v for k, v in recipe.env.items()})
    cmd = [inst.exe("kibitz"), *argv, "--host", "127.0.0.1", "--port", "0", "--broker-port", "0", *args]
    proc = subprocess.Popen(cmd, cwd=inst.work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Signaling broker:"):
                done.set()
        done.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        done.wait(60)
        ready = next((READY.search(x) for x in lines if READY.search(x)), None)
        assert ready is not None, f"kibitz serve did not start: {lines[-20:]}"
        yield Served(ready.group(1), ready.group(2), lines)
    finally:
        stop_group(proc, grace=10)


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Installed) -> None:
    out = installed.run("kibitz", "--version")
    assert out.returncode == 0 and out.stdout.strip() == f"kibitz {_version()}", out
    probe = installed.run("python", "-c", "import json, kibitz, kibitz.server.config as c; "
                          "print(json.dumps([kibitz.__file__, kibitz.__version__, str(c._default_dist())]))")
    assert probe.returncode == 0, probe.stderr
    where, version, dist = json.loads(probe.stdout)
    assert Path(where).is_relative_to(installed.venv), where
    assert version == _version()
    assert Path(dist).is_relative_to(installed.venv) and dist.endswith("kibitz/server/bundle"), dist
    assert installed.wheel.name == f"kibitz-{_version()}-py3-none-any.whl"


def _get(url: str) -> tuple[int, bytes, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.status, resp.read(), dict(resp.headers)


def test_serve_from_anywhere_serves_the_bundle_it_carries(installed: Installed, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with kibitz_serve(installed, "--state-dir", str(state)) as srv:
        text = "\n".join(srv.lines)
        assert f"Kibitz {_version()} demo: {srv.http}/" in text and "no bundle" not in text, text
        bundle = re.search(r"Serving the bundle .* from (\S+)", text)
        assert bundle and Path(bundle.group(1)).is_relative_to(installed.venv), text
        assert f"State (licences, keys) lives in {state}" in text, text
        status, body, _ = _get(f"{srv.http}/")
        assert status == 200 and b"<html" in body.lower()
        status, body, _ = _get(f"{srv.http}/manifest.json")
        manifest = json.loads(body)
        assert manifest["build"]["version"] == _version()
        # Every file the build made (runtime, wheels, snapshot, demo, widget.js) comes back whole.
        files = manifest["files"]
        assert any(f.startswith("assets/pyodide-snapshot-") for f in files), sorted(files)
        assert any(f.startswith("pyodide-") and f.endswith(".wasm") for f in files)
        for rel, meta in files.items():
            status, body, _ = _get(f"{srv.http}/{rel}")
            assert status == 200 and hashlib.sha256(body).hexdigest() == meta["sha256"], rel


def test_serve_refuses_a_taken_port_and_an_unwritable_state_dir(installed: Installed, tmp_path: Path) -> None:
    with kibitz_serve(installed, "--state-dir", str(tmp_path / "state")) as srv:
        port = srv.http.rsplit(":", 1)[1]
        out = installed.run("kibitz", "serve", "--host", "127.0.0.1", "--port", port, "--broker-port", "0",
                            "--state-dir", str(tmp_path / "state2"))
        assert out.returncode == 1, out
        assert "port is taken" in out.stderr and f"127.0.0.1:{port}" in out.stderr and "--port" in out.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = installed.run("kibitz", "serve", "--port", "0", "--state-dir", str(blocker / "state"))
    assert out.returncode == 2, out
    assert f"cannot keep state in {blocker / 'state'}" in out.stderr, out.stderr
    assert "--state-dir" in out.stderr


AGENT_FILE = """\
import asyncio

NAME = "Installed"


async def main(agent):
    await asyncio.Event().wait()
"""


def test_started_as_the_systemd_unit_says(installed: Installed, tmp_path: Path) -> None:
    recipe = systemd_recipe()
    assert recipe.env == {"KIBITZ_STATE_DIR": "/var/lib/kibitz"}
    with kibitz_serve(installed, recipe=recipe, root=tmp_path) as srv:
        assert f"State (licences, keys) lives in {tmp_path / 'var/lib/kibitz'}" in srv.lines, srv.lines
        status, body, _ = _get(f"{srv.http}/healthz")
        assert status == 200, body
    # Its licences live in the same state directory the unit names.
    env = {**installed.env, "KIBITZ_STATE_DIR": str(tmp_path / "var/lib/kibitz")}
    out = subprocess.run([installed.exe("kibitz"), "licence", "add", "--label", "unit"], cwd=installed.work,
                         env=env, text=True, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "var/lib/kibitz" / "licences.sqlite3").exists()


def _boot(page: Page, http: str, room: str) -> None:
    page.goto(f"{http}/demo/follow.html?room={room}&name=ann&open=0#/home")
    page.wait_for_function("() => window.call", timeout=30_000)
    page.evaluate("() => window.call.ready")
    info = page.evaluate("() => ({ version: Kibitz.version, path: Kibitz.timings.bootPath })")
    assert info == {"version": _version(), "path": "snapshot"}, info
    page.wait_for_function("() => window.call.getState().connected === true", timeout=30_000)


def test_a_page_boots_from_the_server_started_as_the_dockerfile_says(
    installed: Installed, tmp_path: Path, new_context: Callable[..., BrowserContext]
) -> None:
    recipe = dockerfile_recipe()
    assert recipe.env == {"KIBITZ_STATE_DIR": "/var/lib/kibitz"}
    with kibitz_serve(installed, recipe=recipe, root=tmp_path) as srv:
        assert f"State (licences, keys) lives in {tmp_path / 'var/lib/kibitz'}" in srv.lines, srv.lines
        page = new_context().new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        room = f"room-docker-{int(time.time() * 1000) % 36**6:x}"
        _boot(page, srv.http, room)
        # Two tabs meet through the installed server's broker.
        other = new_context().new_page()
        _boot(other, srv.http, room)
        for p in (page, other):
            p.evaluate("() => window.call.join()")
        for p in (page, other):
            p.wait_for_function("""() => { const ps = window.call.getParticipants();
                                   return ps.length === 2 && ps.every((x) => x.linkUp); }""", timeout=60_000)
        assert errors == [], errors


def test_an_agent_installed_with_the_agent_extra_joins_from_any_directory(
    installed: Installed, installed_agent: Installed, tmp_path: Path,
    new_context: Callable[..., BrowserContext],
) -> None:
    probe = installed_agent.run("python", "-c", "import importlib.util as u; "
                                "print(u.find_spec('aiortc') is not None, u.find_spec('picows') is not None)")
    assert probe.stdout.split() == ["True", "False"], probe  # the agent extra, not the server's
    room = f"room-installed-{int(time.time() * 1000) % 36**6:x}"
    with kibitz_serve(installed, "--state-dir", str(tmp_path / "state")) as srv:
        page = new_context().new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        _boot(page, srv.http, room)
        page.evaluate("() => window.call.join()")

        (installed_agent.work / "agent.py").write_text(AGENT_FILE)
        agent = subprocess.Popen(
            [installed_agent.exe("kibitz"), "agent", "run", "agent.py", "--room", room, "--server", srv.http],
            cwd=installed_agent.work, env=installed_agent.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        try:
            page.wait_for_function(
                """() => window.call.getParticipants()
                     .some((p) => p.kind === 'agent' && p.name === 'Installed')""",
                timeout=60_000,
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(agent.pid, signal.SIGTERM)
            try:
                out, _ = agent.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(agent.pid, signal.SIGKILL)
                out, _ = agent.communicate(timeout=5)
        assert "KIBITZ_AGENT_READY" in out, out[-2000:]
        assert errors == [], errors
