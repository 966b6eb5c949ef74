// Make the engine's memory snapshot (run by build/build.py with Node; argv[2] is a JSON config:
// runtime dir, output paths, stdlib and engine imports, the directory of the wheels' files).
//
// Boot the npm runtime with _makeSnapshot, write the installed wheels' files into its file system
// (from JS: extracting them in Python would import zipfile and leave the archives' bytes behind in
// the heap), import the engine, then describe every compiled side module those imports loaded. A
// snapshot is only the wasm heap: a side module's code and its function-table entries are not in
// it, so the page binds each module again at the same memory and table bases before Python calls
// into it (widget/snapshot.js). The record says where: bases, sizes, the table slots the load
// appended beyond the module's own segment, and the GOT entries it changed. It also lists the file
// of every module the snapshot holds imported, so the build can leave those files out of what the
// page downloads.
//
// Before the heap is written out, everything in it that no one will read again is zeroed, because
// the page downloads the heap and all-zero pages cost nothing: the copy of each side module's file
// that the dynamic loader keeps in the heap (for other threads; this runtime has none, and the page
// compiles the module from its own .wasm), the stack below its live top, and every free block of
// the allocator.
import { readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));
const TABLE_RESERVE = 64;
const { loadPyodide } = await import(pathToFileURL(cfg.runtime + "/pyodide.mjs").href);
const py = await loadPyodide({ indexURL: cfg.runtime + "/", _makeSnapshot: true });
const M = py._module;
if (cfg.stdlib.length) py.runPython("import " + cfg.stdlib.join(", "));

const sitePackages = py.runPython('import sysconfig; "/" + sysconfig.get_paths()["purelib"].strip("/")');
(function copyTree(from, to) {
  for (const name of readdirSync(from).sort()) {
    const src = join(from, name);
    if (statSync(src).isDirectory()) {
      py.FS.mkdirTree(to + "/" + name);
      copyTree(src, to + "/" + name);
    } else {
      py.FS.writeFile(to + "/" + name, readFileSync(src));
    }
  }
})(cfg.site, sitePackages);

const gotBefore = new Map(Object.entries(M.GOT).map(([k, g]) => [k, g.value]));
const tableBefore = M.wasmTable.length;
// Leave room: a browser's runtime puts a few more functions in the table than Node's does before
// the page binds the modules, and those slots must not collide with the modules' own.
M.wasmTable.grow(TABLE_RESERVE);
const handlesBefore = new Set(Object.keys(M.LDSO.loadedLibsByHandle));
py.runPython("import " + cfg.engine.join(", "));

// Emscripten keeps each dlopen'd module's bases in its handle: memoryBase at +12, memorySize at
// +16, tableBase at +20, tableSize at +24; +28/+32 are the heap copy of its file and that size.
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

// The file behind every module the snapshot holds (the build leaves these out of the page's
// downloads). Then forget the zip archive's table of contents: the page mounts a smaller standard
// library zip at the same path and must read its own. Everything made so far lives as long as the
// page: keep the collector off it, which also keeps it from walking extension objects before the
// page has bound their module again.
const modules = JSON.parse(py.runPython(`
import gc, importlib, json, sys, zipimport
_files = sorted({f for m in list(sys.modules.values()) if isinstance(f := getattr(m, "__file__", None), str)})
importlib.invalidate_caches()
zipimport._zip_directory_cache.clear()
gc.collect()
gc.freeze()
json.dumps(_files)
`));

// Zero what no one reads again (see the top of this file).
const word = (addr) => M.HEAPU32[addr >>> 2];
let heapCopies = 0;
for (const h of Object.keys(M.LDSO.loadedLibsByHandle)) {
  const p = Number(h);
  if (!p || !word(p + 28) || !word(p + 32)) continue;
  heapCopies += word(p + 32);
  M._free(word(p + 28));
  M.HEAPU32[(p + 28) >>> 2] = 0;
  M.HEAPU32[(p + 32) >>> 2] = 0;
}
// Every free block, by taking it: allocate ever smaller blocks until the allocator would have to
// grow the heap (never past the memory there is: growing it would add to what the page must
// allocate), zero them, give them back. Freeing writes only each block's few header bytes.
// The loop below never lets malloc reach past the memory there is, so it needs room above the
// heap's top to try anything at all: when the heap ends right under the memory's end (it did once
// the engine grew), nothing was zeroed and 6 MB of stale free blocks shipped. Grow the memory by a
// little (sbrk up and back: the allocator's state is untouched; the new pages are zero, which the
// packed snapshot sends as fills), then take the free blocks piece by piece below that room.
const ROOM = (2 << 20) + 65536;
if (M.HEAPU8.length - M._sbrk(0) < ROOM) {
  if (M._sbrk(ROOM) === -1) throw new Error("could not grow the wasm memory for the free-block scrub");
  M._sbrk(-ROOM);
}
// A block that reaches past the heap's starting top came from the top chunk, not a free list: it is
// zeroed (the top chunk holds what was freed next to it) and given back at once, and the size moves
// on. Keeping it would eat the room above the top level by level, leaving none for the small sizes
// that take the last free blocks (how much was left depended on where the heap happened to end,
// which shifts with as little as the length of the build's directory: 12.1 or 13.8 MB zeroed).
const memory = M.HEAPU8.length;
const top = M._sbrk(0);
const taken = [];
let zeroed = 0;
for (let size = 1 << 24; size >= 16; size >>= 1) {
  while (M._sbrk(0) + size + 65536 <= memory) {
    const p = M._malloc(size);
    if (!p) break;
    if (M.HEAPU8.length !== memory) throw new Error("the wasm memory grew while zeroing free blocks");
    M.HEAPU8.fill(0, p, p + size);
    zeroed += size;
    if (p + size > top) {
      M._free(p);
      break;
    }
    taken.push(p);
  }
}
for (const p of taken) M._free(p);
// Last, as every call into the module above used the stack.
const stackTop = M._emscripten_stack_get_current() - 1024;
M.HEAPU8.fill(0, M._emscripten_stack_get_end(), stackTop);

writeFileSync(cfg.out, py.makeMemorySnapshot());
writeFileSync(cfg.record, JSON.stringify({
  sitePackages, tableBefore, tableAfter, slots, got, libs: libs.map(({ exports, ...lib }) => lib), modules,
  scrubbed: { heapCopies, freeBlocks: zeroed, stack: stackTop - M._emscripten_stack_get_end() },
}));
