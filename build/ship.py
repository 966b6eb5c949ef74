"""What is shipped from a built ``dist/``: the version, the npm package and the pip wheel.

* :func:`version` — the one place the version is written is ``engine/kibitz/__init__.py``
  (``__version__``, semver). pyproject.toml reads it (setuptools' dynamic version), build/build.py
  stamps it into widget.js (``Kibitz.version``) and the page's engine wheel, and :func:`write_npm`
  into ``dist/npm/package.json``.
* :func:`write_npm` — ``dist/npm/``: the ``kibitz`` npm package (publishing is out of scope). An ES
  module (``import { mount, createRoom } from "kibitz"``) that loads widget.js from the Kibitz
  server it is given; the engine, the Pyodide runtime and the wheels stay on that server.
  ``index.d.ts`` is ``dist/kibitz.d.ts`` (built from the one list of controller members) plus the
  module's own functions.
* :func:`build_wheel` — the ``kibitz`` wheel (setuptools, from pyproject.toml) with the whole bundle
  inside as ``kibitz/server/bundle/``, where ``kibitz serve`` finds it; ``pip install
  'kibitz[server]'`` then serves the demo, widget.js, the runtime, the wheels and the snapshot with
  nothing downloaded at run time. ``python build/build.py --wheel OUTDIR`` runs it.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSION_FILE = ROOT / "engine" / "kibitz" / "__init__.py"
# semver 2.0.0 (https://semver.org), without build metadata: the page's engine wheel adds its own
# content hash as a local label.
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?$"
)
NPM_DIR = "npm"
# What of dist/ stays out of the wheel's bundle: the npm package, the build's stamp, and wheels
# this step put into dist/ itself.
BUNDLE_EXCLUDE = {NPM_DIR, ".build-stamp", "pip"}
# The wheel must stay installable in reasonable time; the build refuses to pass this (bytes).
WHEEL_BUDGET = 80 * 1024 * 1024


class ShipError(RuntimeError):
    """Anything that must stop a release step with a clear message."""


def version() -> str:
    """``__version__`` from engine/kibitz/__init__.py, read without importing the engine."""
    tree = ast.parse(VERSION_FILE.read_text(), str(VERSION_FILE))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                if not SEMVER.match(value.value):
                    raise ShipError(f"__version__ {value.value!r} in {VERSION_FILE} is not semver "
                                    "(X.Y.Z[-pre])")
                return value.value
    raise ShipError(f"no __version__ = '...' string in {VERSION_FILE}")


# ---------------------------------------------------------------------------------------------
# npm

NPM_INDEX_JS = """\
// kibitz __VERSION__: the page side of Kibitz as an ES module.
//
//   import { mount, createRoom } from "kibitz";
//   const call = await mount({ server: "https://kibitz.example.org", room, headless: true });
//
// The engine is Python running in Pyodide and is not in this package: load(server) adds that
// server's widget.js to the page, and widget.js fetches the runtime, the wheels and the snapshot from
// the same server (nothing from a CDN). A page talks to one Kibitz server.
// Types: index.d.ts (the controller's members come from the engine's one list, kibitz.controller).

/** This package's version; the server's widget.js says its own in `Kibitz.version`. */
export const version = __VERSION_JSON__;

let loading = null; // { base, promise } of the one widget.js this page loads

function serverBase(server) {
  if (typeof server !== "string" || server.trim() === "") {
    throw new TypeError("kibitz: give the URL of your Kibitz server (the one `kibitz serve` runs), "
      + "e.g. { server: \\"https://kibitz.example.org\\" }");
  }
  const url = new URL(server.trim(), document.baseURI);
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new TypeError(`kibitz: the server must be an http(s) URL, got ${url.protocol}`);
  }
  url.search = "";
  url.hash = "";
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  return url.href;
}

function oneServer(base, have) {
  if (have !== base) {
    throw new Error(`kibitz: this page already loads Kibitz from ${have}; one server per page `
      + `(asked for ${base})`);
  }
}

/** Load widget.js from `server` once (later calls with the same server share it); resolves with
 * the global `Kibitz` (mount, createRoom, mintInvite, version, server). */
export function load(server) {
  let base;
  try {
    base = serverBase(server);
    if (loading) {
      oneServer(base, loading.base);
      return loading.promise;
    }
    const present = window.Kibitz && window.Kibitz.__kibitz ? window.Kibitz : null;
    if (present) {
      oneServer(base, present.server);
      loading = { base, promise: Promise.resolve(present) };
      return loading.promise;
    }
  } catch (err) {
    return Promise.reject(err);
  }
  const promise = new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = base + "widget.js";
    script.async = true;
    script.onload = () => {
      const K = window.Kibitz;
      if (K && K.__kibitz) {
        if (K.version !== version) {
          console.warn(`kibitz: the npm package is ${version}, the server's widget.js ${K.version}`);
        }
        resolve(K);
      } else {
        reject(new Error(`kibitz: ${script.src} loaded but defined no Kibitz`));
      }
    };
    script.onerror = () => {
      script.remove();
      loading = null; // let a later call try again
      reject(new Error(`kibitz: could not load ${script.src}: is a Kibitz server running there?`));
    };
    document.head.appendChild(script);
  });
  loading = { base, promise };
  return promise;
}

function split(options, what) {
  if (!options || typeof options !== "object") {
    throw new TypeError(`kibitz.${what}: expected an options object with \\`server\\``);
  }
  const { server, ...rest } = options;
  return [server, rest];
}

/** `Kibitz.mount(options)` on the engine from `options.server`; resolves with the controller
 * (its own `ready` settles once the engine has booted). */
export async function mount(options) {
  const [server, rest] = split(options, "mount");
  return (await load(server)).mount(rest);
}

/** `Kibitz.createRoom(options)` on the engine from `options.server`. */
export async function createRoom(options) {
  const [server, rest] = split(options, "createRoom");
  return (await load(server)).createRoom(rest);
}
"""

NPM_DTS_TAIL = """
// ---- the ES module (index.js): the functions above run on the engine a Kibitz server serves

/** Where the engine comes from: the URL of the Kibitz server (`kibitz serve`) that serves widget.js,
 * the Pyodide runtime, the wheels and the broker. One server per page. */
export interface ServerOption {
  server: string;
}

/** This package's version (semver); the server's widget.js says its own in `Kibitz.version`. */
export declare const version: string;
/** Load widget.js from `server` once; resolves with the global `Kibitz`. */
export declare function load(server: string): Promise<KibitzGlobal>;
/** `Kibitz.mount(options)` on the engine from `options.server`; resolves with the controller. */
export declare function mount(options: MountOptions & ServerOption): Promise<MountedWidget>;
/** `Kibitz.createRoom(options)` on the engine from `options.server`. */
export declare function createRoom(options: CreateRoomOptions & ServerOption): Promise<NewRoom>;
"""

NPM_README = """\
# kibitz __VERSION__

Account-free, peer-to-peer calls on any page; the engine is Python (Pyodide) and comes from your
own Kibitz server (`pip install 'kibitz[server]'`, then `kibitz serve`), never from a CDN.

```ts
import { mount, createRoom } from "kibitz";

const server = "https://kibitz.example.org";   // where `kibitz serve` runs
const r = await createRoom({ server, gate: "code" });
const call = await mount({ server, room: r.room, joinGate: r.joinGate, hostKey: r.hostKey, headless: true });
await call.ready;
call.onMessage((data, from) => console.log(from, data));
```

Types are in `index.d.ts`. This package and the server's widget.js carry the same version.
"""


def write_npm(dist: Path) -> Path:
    """Write ``dist/npm/`` from a built ``dist`` (its kibitz.d.ts); return the package directory."""
    v = version()
    dts = dist / "kibitz.d.ts"
    if not dts.exists():
        raise ShipError(f"{dts} is missing: the npm package's types come from it")
    out = dist / NPM_DIR
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    package = {
        "name": "kibitz",
        "version": v,
        "description": "Account-free peer-to-peer calls: the page side of Kibitz (the engine comes "
                       "from your Kibitz server).",
        "license": "Apache-2.0",
        "type": "module",
        "main": "./index.js",
        "module": "./index.js",
        "types": "./index.d.ts",
        "exports": {".": {"types": "./index.d.ts", "import": "./index.js", "default": "./index.js"}},
        "files": ["index.js", "index.d.ts", "README.md"],
        "sideEffects": False,
    }
    (out / "package.json").write_text(json.dumps(package, indent=2) + "\n")
    (out / "index.js").write_text(
        NPM_INDEX_JS.replace("__VERSION_JSON__", json.dumps(v)).replace("__VERSION__", v)
    )
    head = f"// kibitz {v}: types of the ES module and of what it loads (widget.js's `Kibitz`).\n"
    (out / "index.d.ts").write_text(head + dts.read_text().rstrip() + "\n" + NPM_DTS_TAIL)
    (out / "README.md").write_text(NPM_README.replace("__VERSION__", v))
    return out


# ---------------------------------------------------------------------------------------------
# The pip wheel with the bundle inside

WHEEL_SOURCES = ["pyproject.toml", "README.md", "LICENSE", "engine", "agent", "server"]
BUNDLE_IN_PACKAGE = Path("server") / "kibitz_server" / "bundle"


def _ignore(_dir: str, names: list[str]) -> set[str]:
    return {n for n in names if n in ("__pycache__", ".mypy_cache") or n.endswith((".pyc", ".egg-info"))}


def build_wheel(dist: Path, out_dir: Path, quiet: bool = False) -> Path:
    """The ``kibitz`` wheel with ``dist`` inside as ``kibitz/server/bundle/``, written to
    ``out_dir``; returns its path. Built by setuptools (pyproject.toml) from a staged copy of the
    sources, without build isolation (nothing downloaded: setuptools comes from the dev extra)."""
    v = version()
    if not (dist / "widget.js").exists():
        raise ShipError(f"{dist} holds no built bundle (widget.js): run build/build.py first")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kibitz-wheel-") as tmp:
        stage = Path(tmp) / "src"
        stage.mkdir()
        for rel in WHEEL_SOURCES:
            src = ROOT / rel
            if src.is_dir():
                shutil.copytree(src, stage / rel, ignore=_ignore)
            else:
                shutil.copy2(src, stage / rel)
        bundle = stage / BUNDLE_IN_PACKAGE
        if bundle.exists():
            raise ShipError(f"{ROOT / BUNDLE_IN_PACKAGE} exists in the checkout: remove it")
        shutil.copytree(dist, bundle, ignore=lambda d, names: {
            n for n in names if Path(d) == dist and n in BUNDLE_EXCLUDE})
        built = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(built), str(stage)]
        env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            raise ShipError(f"building the wheel failed ({' '.join(cmd[1:4])}):\n"
                            f"{(res.stdout + res.stderr).strip()[-3000:]}")
        wheels = sorted(built.glob("kibitz-*.whl"))
        if len(wheels) != 1 or not wheels[0].name.startswith(f"kibitz-{v}-"):
            raise ShipError(f"expected one kibitz-{v}-*.whl, got {[w.name for w in wheels]}")
        target = out_dir / wheels[0].name
        shutil.move(wheels[0], target)
    size = target.stat().st_size
    bundle_bytes = sum(p.stat().st_size for p in _bundle_files(dist))
    if not quiet:
        print(f"build: {target.name}: {size / 1e6:.1f} MB (the bundle inside: {bundle_bytes / 1e6:.1f} MB "
              f"in {len(_bundle_files(dist))} files, before zip)", file=sys.stderr)
    if size > WHEEL_BUDGET:
        raise ShipError(f"{target.name} is {size / 1e6:.1f} MB, over the {WHEEL_BUDGET / 1e6:.0f} MB budget")
    return target


def _bundle_files(dist: Path) -> list[Path]:
    return [p for p in dist.rglob("*") if p.is_file() and p.relative_to(dist).parts[0] not in BUNDLE_EXCLUDE
            and not p.name.startswith(".")]
