// Restoring the engine snapshot that build/make_snapshot.mjs made (in the engine's Worker, see
// widget/engine-host.js): the interpreter with the engine,
// pydantic and pydantic-core already imported. Pyodide restores the wasm heap; a compiled side
// module (pydantic-core's) lives partly outside it (its code, its function-table entries, the
// loader's bookkeeping), so it is bound again here, at the memory and table bases the build
// recorded, before Python calls into it. Any mismatch throws, and the loader boots plainly instead.

/** loadPyodide's `createPyodideModule`, restoring build/build.py's packed snapshot (`KZS2`: Pyodide's
 * header and only the heap pages the page must write) from `snapshot`, a promise: the runtime
 * compiles and instantiates while the snapshot still downloads (Pyodide itself would wait for the
 * bytes first, and loadPyodide is given a stand-in). `check(M)` runs on the fresh runtime first and
 * may refuse it (a function table too long for the snapshot's slots). The runtime's data segments
 * already hold what many pages of the heap hold (the build left those pages out): they are checked
 * against the hash the build recorded before anything is written, and a mismatch throws (the loader
 * then boots plainly). The wasm memory is grown to the heap (the runtime starts smaller than a heap
 * that holds the engine), Pyodide restores its JS state from the header, and the pages are written
 * straight into the heap, all-zero pages as fills. */
function snapshotModuleFactory(createModule, snapshot, check) {
  return async (settings) => {
    const M = await createModule(settings);
    if (check) check(M); // may throw (and stop the downloads) before the bytes are awaited
    const bytes = await snapshot;
    const restore = M.API.restoreSnapshot;
    M.API.restoreSnapshot = () => {
      if (bytes.byteLength < 28 || String.fromCharCode(...bytes.subarray(0, 4)) !== "KZS2") {
        throw new Error("not a packed Kibitz snapshot");
      }
      const [, headerLen, heapLen, pageSize, count, keptHash, keptCount] = new Uint32Array(bytes.buffer, bytes.byteOffset, 7);
      const mapLen = Math.ceil(count / 32) * 4;
      let at = 28;
      const written = bytes.subarray(at, at + mapLen);
      const kept = bytes.subarray(at + mapLen, at + 2 * mapLen);
      at += 2 * mapLen;
      checkKeptPages(M.HEAPU32, kept, count, pageSize, keptHash, keptCount);
      if (M.HEAP8.length < heapLen && !M.growMemory(heapLen)) throw new Error(`cannot grow wasm memory to ${heapLen} bytes`);
      const state = restore(bytes.subarray(at, at + headerLen)); // header only: Pyodide copies no heap
      at += headerLen;
      const heap = M.HEAPU8;
      for (let n = 0; n < count; n++) {
        const start = n * pageSize;
        const end = Math.min(start + pageSize, heapLen);
        const bit = 1 << (n & 7);
        if (written[n >> 3] & bit) {
          heap.set(bytes.subarray(at, at + end - start), start);
          at += end - start;
        } else if (!(kept[n >> 3] & bit)) {
          heap.fill(0, start, end);
        }
      }
      if (at !== bytes.byteLength) throw new Error(`packed snapshot has ${bytes.byteLength - at} stray bytes`);
      M.API.restoreSnapshot = restore; // and this closure, holding the bytes, can go
      return state;
    };
    return M;
  };
}

/** The pages the snapshot keeps must hold, before the restore writes anything, what they held when
 * the build packed it: FNV-1a over their 32-bit words, as build/build.py's `page_hash`. */
function checkKeptPages(words, kept, count, pageSize, want, wantCount) {
  let h = 0x811c9dc5;
  let pages = 0;
  for (let n = 0; n < count; n++) {
    if (!(kept[n >> 3] & (1 << (n & 7)))) continue;
    const from = (n * pageSize) >>> 2;
    const to = from + (pageSize >>> 2);
    if (to > words.length) throw new Error(`snapshot keeps page ${n}, beyond this runtime's memory`);
    for (let i = from; i < to; i++) h = Math.imul(h ^ words[i], 0x01000193) >>> 0;
    pages++;
  }
  if (pages !== wantCount || h !== want) {
    throw new Error("this runtime's memory differs from the one the snapshot was made for (kept pages)");
  }
}

/** Bind each recorded side module again: same table slots, same memory, same symbols. `modules`
 * are the compiled `.wasm` files, in `info.libs` order. */
async function rebindSideModules(M, info, modules) {
  const table = M.wasmTable;
  for (const [name, value] of Object.entries(info.got)) {
    (M.GOT[name] ||= new WebAssembly.Global({ value: "i32", mutable: true })).value = value;
  }
  const bound = [];
  for (const [n, lib] of info.libs.entries()) {
    if (table.length > lib.tableBase) throw new Error(`table slot ${lib.tableBase} for ${lib.path} is taken`);
    table.grow(lib.tableBase - table.length + lib.tableSize);
    let exports = null;
    const env = new Proxy({}, {
      get(_, name) {
        if (name === "__memory_base") return lib.memoryBase;
        if (name === "__table_base") return lib.tableBase;
        const sym = M.resolveGlobalSymbol(name).sym;
        if (sym) return sym;
        return (...args) => { // a symbol of the module itself, resolved once it exists
          const own = exports && exports[name];
          if (!own) throw new Error(`Dynamic linking error: cannot resolve symbol ${String(name)}`);
          return own(...args);
        };
      },
    });
    const got = new Proxy(M.getDylinkMetadata(modules[n]).weakImports, M.GOTHandler);
    // Instantiating writes the module's initial data over the state the snapshot kept: put it back.
    // The snapshot carries that state XOR the initial data in the ranges the build lists (mostly
    // zeros, so it downloads small): XOR it with what instantiation wrote to get the state.
    const live = M.HEAPU8.slice(lib.memoryBase, lib.memoryBase + lib.memorySize);
    const instance = await WebAssembly.instantiate(modules[n], { env, wasi_snapshot_preview1: env, "GOT.mem": got, "GOT.func": got });
    for (const [offset, length] of lib.xor || []) {
      const initial = M.HEAPU8.subarray(lib.memoryBase + offset, lib.memoryBase + offset + length);
      for (let i = 0; i < length; i++) live[offset + i] ^= initial[i];
    }
    M.HEAPU8.set(live, lib.memoryBase);
    exports = M.relocateExports(instance.exports, lib.memoryBase);
    bound.push(exports);
  }
  if (table.length < info.tableAfter) table.grow(info.tableAfter - table.length);
  for (const [slot, who, name] of info.slots) {
    const fn = who < 0 ? M.resolveGlobalSymbol(name).sym : bound[who][name];
    if (typeof fn !== "function") throw new Error(`snapshot table slot ${slot}: nothing exports ${name}`);
    M.setWasmTableEntry(slot, fn);
  }
  M.updateTableMap(info.tableBefore, table.length - info.tableBefore);
  info.libs.forEach((lib, n) => {
    const dso = { refcount: Infinity, name: lib.path, exports: bound[n], global: true };
    M.LDSO.loadedLibsByName[lib.path] = dso;
    M.LDSO.loadedLibsByHandle[lib.handle] = dso;
    M.mergeLibSymbols(bound[n], lib.path);
  });
}

/** Write a ustar archive's regular files under `root` (the snapshot holds imported modules, not
 * files: this puts the installed wheels back for anything imported later). Returns the file count. */
function unpackTar(FS, bytes, root) {
  const text = new TextDecoder();
  const field = (at, len) => {
    let end = at;
    while (end < at + len && bytes[end]) end++;
    return text.decode(bytes.subarray(at, end));
  };
  const dirs = new Set();
  let at = 0;
  let files = 0;
  while (at + 512 <= bytes.length && bytes[at] !== 0) {
    const prefix = field(at + 345, 155);
    const path = root + (prefix ? prefix + "/" : "") + field(at, 100);
    const size = parseInt(field(at + 124, 12).trim() || "0", 8);
    const type = bytes[at + 156];
    at += 512;
    if (type === 0x30 || type === 0) {
      const dir = path.slice(0, path.lastIndexOf("/"));
      if (!dirs.has(dir)) { FS.mkdirTree(dir); dirs.add(dir); }
      FS.writeFile(path, bytes.subarray(at, at + size));
      files++;
    }
    at += Math.ceil(size / 512) * 512;
  }
  return files;
}
