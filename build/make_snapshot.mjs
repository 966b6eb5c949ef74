// Make the engine's memory snapshot (run by build/build.py with Node; argv[2] is a JSON config:
// runtime dir, output paths, stdlib and engine imports, wheel files).
//
// Boot the npm runtime with _makeSnapshot, install the wheels by hand (loadPackage would leave JS
// objects referenced from Python, which a snapshot cannot hold), import the engine, then describe
// every compiled side module those imports loaded. A snapshot is only the wasm heap: a side
// module's code and its function-table entries are not in it, so the page binds each module again
// at the same memory and table bases before Python calls into it (widget/snapshot.js). The record
// says where: bases, sizes, the table slots the load appended beyond the module's own segment, and
// the GOT entries it changed.
import { readFileSync, writeFileSync } from "node:fs";
import { basename } from "node:path";
import { pathToFileURL } from "node:url";

const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));
const TABLE_RESERVE = 64;
const { loadPyodide } = await import(pathToFileURL(cfg.runtime + "/pyodide.mjs").href);
const py = await loadPyodide({ indexURL: cfg.runtime + "/", _makeSnapshot: true });
const M = py._module;
py.runPython("import " + cfg.stdlib.join(", "));
py.FS.mkdirTree("/tmp/wheels");
for (const w of cfg.wheels) py.FS.writeFile("/tmp/wheels/" + basename(w), readFileSync(w));
const sitePackages = py.runPython(`
import os, sysconfig, zipfile
site = sysconfig.get_paths()["purelib"]
for name in sorted(os.listdir("/tmp/wheels")):
    with zipfile.ZipFile("/tmp/wheels/" + name) as zf:
        zf.extractall(site)
    os.unlink("/tmp/wheels/" + name)
"/" + site.strip("/")
`);

const gotBefore = new Map(Object.entries(M.GOT).map(([k, g]) => [k, g.value]));
const tableBefore = M.wasmTable.length;
// Leave room: a browser's runtime puts a few more functions in the table than Node's does before
// the page binds the modules, and those slots must not collide with the modules' own.
M.wasmTable.grow(TABLE_RESERVE);
const handlesBefore = new Set(Object.keys(M.LDSO.loadedLibsByHandle));
py.runPython("import " + cfg.engine.join(", "));

// Emscripten keeps each dlopen'd module's bases in its handle: memoryBase at +12, memorySize at
// +16, tableBase at +20, tableSize at +24.
const libs = [];
for (const [h, dso] of Object.entries(M.LDSO.loadedLibsByHandle)) {
  if (handlesBefore.has(h)) continue;
  const p = Number(h);
  libs.push({ path: dso.name, handle: p, memoryBase: M.HEAPU32[(p + 12) >>> 2], memorySize: M.HEAP32[(p + 16) >>> 2],
              tableBase: M.HEAPU32[(p + 20) >>> 2], tableSize: M.HEAP32[(p + 24) >>> 2], exports: dso.exports });
}
libs.sort((a, b) => a.tableBase - b.tableBase);
// Who exports each function the load put in the table: -1 is the main module, n is libs[n].
const owner = new Map();
for (const [k, f] of Object.entries(M.LDSO.loadedLibsByName.__main__.exports)) {
  if (typeof f === "function" && !owner.has(f)) owner.set(f, [-1, k]);
}
libs.forEach((lib, n) => {
  for (const [k, f] of Object.entries(lib.exports)) if (typeof f === "function") owner.set(f, [n, k]);
});
const tableAfter = M.wasmTable.length;
const slots = [];
for (let i = tableBefore; i < tableAfter; i++) {
  if (libs.some((l) => i >= l.tableBase && i < l.tableBase + l.tableSize)) continue; // the module's own segment
  const f = M.wasmTable.get(i);
  if (f === null) continue;
  const who = owner.get(f);
  if (!who) throw new Error(`table slot ${i} holds a function no module exports; the page could not rebuild it`);
  slots.push([i, ...who]);
}
const got = {};
for (const [k, g] of Object.entries(M.GOT)) if (gotBefore.get(k) !== g.value) got[k] = g.value;

// Everything made so far lives as long as the page: keep the collector off it, which also keeps it
// from walking extension objects before the page has bound their module again.
py.runPython("import gc; gc.collect(); gc.freeze()");
writeFileSync(cfg.out, py.makeMemorySnapshot());
writeFileSync(cfg.record, JSON.stringify({
  sitePackages, tableBefore, tableAfter, slots, got, libs: libs.map(({ exports, ...lib }) => lib),
}));
