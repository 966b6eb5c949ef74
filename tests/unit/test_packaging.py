"""What is shipped: one version everywhere, the npm package's layout and types (build/ship.py).

The version is written once (engine/kibitz/__init__.py); the pip metadata, ``kibitz --version``,
widget.js (``Kibitz.version``), the page's engine wheel and dist/npm/package.json must all say it.
``tsc --strict --noEmit`` checks examples/npm-app (every documented member) against dist/npm
installed as node_modules/kibitz. tests/e2e/test_installed.py installs the pip wheel;
tests/e2e/test_npm_package.py runs the npm module in Chromium.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

import kibitz
from kibitz.cli import main as kibitz_main

# The dist fixture rebuilds dist/ when the engine changed (minutes on a busy machine; a no-op after
# scripts/setup.sh), and tsc takes its time: more than the suite's default 120 s per test.
pytestmark = pytest.mark.timeout(900)
ROOT = Path(__file__).resolve().parents[2]
TSC = ROOT / "node_modules" / ".bin" / "tsc"
EXAMPLE = ROOT / "examples" / "npm-app"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


build = _load("kibitz_build", ROOT / "build" / "build.py")
ship = sys.modules["kibitz_ship"]


@pytest.fixture(scope="module")
def dist() -> Path:
    assert build.main(["--quiet"]) == 0
    return ROOT / "dist"


def test_the_version_is_semver_and_written_once() -> None:
    assert ship.version() == kibitz.__version__
    assert ship.SEMVER.match(kibitz.__version__)
    for bad in ("1.0", "01.2.3", "1.2.3+local", "v1.2.3", "1.2.3-"):
        assert not ship.SEMVER.match(bad), bad
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "kibitz.__version__"}


def test_version_refuses_a_version_that_is_not_semver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "__init__.py"
    bad.write_text('__version__ = "1.2"\n')
    monkeypatch.setattr(ship, "VERSION_FILE", bad)
    with pytest.raises(ship.ShipError, match="not semver"):
        ship.version()


def test_kibitz_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        kibitz_main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"kibitz {kibitz.__version__}"


def test_widget_engine_wheel_and_npm_package_carry_the_version(dist: Path) -> None:
    v = kibitz.__version__
    manifest = json.loads((dist / "manifest.json").read_text())
    assert manifest["build"]["version"] == v
    widget = (dist / "widget.js").read_text()
    stamped = re.findall(r'"version": "([^"]+)"', widget)
    assert stamped == [v], stamped  # the BUILD record: Kibitz.version reads it
    assert "version: BUILD.version" in widget
    (engine,) = (dist / "wheels").glob("kibitz-*.whl")
    assert engine.name.startswith(f"kibitz-{v}+")
    with zipfile.ZipFile(engine) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        version_line = next(x for x in zf.read(meta).decode().splitlines() if x.startswith("Version: "))
    assert version_line.split(": ", 1)[1].split("+")[0] == v
    package = json.loads((dist / "npm" / "package.json").read_text())
    assert package["name"] == "kibitz" and package["version"] == v
    assert f"export const version = {json.dumps(v)};" in (dist / "npm" / "index.js").read_text()


def test_npm_package_layout(dist: Path) -> None:
    npm = dist / "npm"
    package = json.loads((npm / "package.json").read_text())
    assert package["type"] == "module"
    assert package["exports"]["."]["types"] == "./index.d.ts"
    assert package["exports"]["."]["import"] == "./index.js"
    assert sorted(package["files"]) == sorted(p.name for p in npm.iterdir() if p.name != "package.json")
    dts = (npm / "index.d.ts").read_text()
    # index.d.ts is the build's kibitz.d.ts (the controller's one member list) plus the module's own.
    assert (dist / "kibitz.d.ts").read_text().rstrip() in dts
    for fn in ("load", "mount", "createRoom"):
        assert f"export declare function {fn}(" in dts
        assert f"export {'async ' if fn != 'load' else ''}function {fn}(" in (npm / "index.js").read_text()
    # The served bundle does not carry the npm package, and the manifest (what the service worker
    # keeps) does not name it.
    assert not any(f.startswith("npm/") for f in json.loads((dist / "manifest.json").read_text())["files"])


def _members(dts: str, interface: str) -> set[str]:
    body = re.search(rf"export interface {interface}(?:<[^>]*>)? {{\n(.*?)\n}}", dts, re.S)
    assert body, interface
    text = re.sub(r"/\*.*?\*/", "", body.group(1), flags=re.S)
    return set(re.findall(r"^  (?:readonly )?([A-Za-z_]\w*)\??\s*[(<:]", text, re.M))


def test_the_example_app_uses_every_documented_member(dist: Path) -> None:
    dts = (dist / "npm" / "index.d.ts").read_text()
    source = (EXAMPLE / "app.ts").read_text()
    for interface in ("MountedWidget", "KibitzGlobal", "NewRoom", "WidgetEvents"):
        members = _members(dts, interface)
        assert members, interface
        unused = {m for m in members if not re.search(rf"\.{m}\b|\"{m}\"", source)}
        assert unused == set(), f"examples/npm-app/app.ts does not use {interface}.{sorted(unused)}"
    exports = set(re.findall(r"^export declare (?:function|const) (\w+)", dts, re.M))
    assert exports == {"version", "load", "mount", "createRoom"}
    imported = re.search(r"import \{(.*?)\} from \"kibitz\"", source, re.S)
    assert imported and exports <= set(re.findall(r"\b(\w+)\b", imported.group(1)))


def _tsc(app_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TSC), "-p", str(app_dir / "tsconfig.json"), "--strict", "--noEmit"],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def app(dist: Path, tmp_path: Path) -> Path:
    """examples/npm-app with dist/npm installed as node_modules/kibitz, as an app would have it."""
    if not TSC.exists():
        pytest.fail("node_modules/.bin/tsc is missing: scripts/setup.sh installs typescript (package.json)")
    shutil.copytree(EXAMPLE, tmp_path / "app")
    shutil.copytree(dist / "npm", tmp_path / "app" / "node_modules" / "kibitz")
    return tmp_path / "app"


def test_tsc_strict_accepts_the_example_app(app: Path) -> None:
    res = _tsc(app)
    assert res.returncode == 0, res.stdout + res.stderr


def test_tsc_strict_catches_a_member_that_drifted(app: Path) -> None:
    """The check has teeth: a method renamed in the declarations (as a runtime change would rename
    it in kibitz.controller) and a changed return type both fail the example."""
    dts = app / "node_modules" / "kibitz" / "index.d.ts"
    original = dts.read_text()
    renamed = original.replace("toggleMic(): Promise<boolean>;", "toggleMicrophone(): Promise<boolean>;")
    assert renamed != original
    dts.write_text(renamed)
    res = _tsc(app)
    assert res.returncode != 0 and "toggleMic" in res.stdout, res.stdout
    dts.write_text(original.replace("identityNonce(salt?: string): Promise<string>;",
                                    "identityNonce(salt?: string): Promise<number>;"))
    res = _tsc(app)
    assert res.returncode != 0 and "app.ts" in res.stdout, res.stdout
