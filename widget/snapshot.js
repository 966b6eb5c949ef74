// Restoring the engine snapshot that build/make_snapshot.mjs made: the interpreter with the engine,
// pydantic and pydantic-core already imported. Pyodide restores the wasm heap; a compiled side
// module (pydantic-core's) lives partly outside it (its code, its function-table entries, the
// loader's bookkeeping), so it is bound again here, at the memory and table bases the build
// recorded, before Python calls into it. Any mismatch throws, and the loader boots plainly instead.

/** loadPyodide's `createPyodideModule`, restoring build/build.py's packed snapshot (`KZS1`: Pyodide's
 * header, then only the heap's non-zero pages) from `snapshot`, a promise: the runtime compiles and
 * instantiates while the snapshot still downloads and inflates (Pyodide itself would wait for the
 * bytes first, and loadPyodide is given a stand-in). The wasm memory is grown to the heap (the
 * runtime starts smaller than a heap that holds the engine), Pyodide restores its JS state from the
 * header, and the pages are written straight into the heap, zero pages as fills. */
function snapshotModuleFactory(createModule, snapshot) {
  return async (settings) => {
    const M = await createModule(settings);
    const bytes = await snapshot;
    const restore = M.API.restoreSnapshot;
    M.API.restoreSnapshot = () => {
      const word = new Uint32Array(bytes.buffer, bytes.byteOffset, 5);
      if (String.fromCharCode(...bytes.subarray(0, 4)) !== "KZS1") throw new Error("not a packed Kibitz snapshot");
      const [, headerLen, heapLen, pageSize, count] = word;
      let at = 20;
      const bitmap = bytes.subarray(at, at + Math.ceil(count / 32) * 4);
      at += bitmap.length;
      if (M.HEAP8.length < heapLen && !M.growMemory(heapLen)) throw new Error(`cannot grow wasm memory to ${heapLen} bytes`);
      const state = restore(bytes.subarray(at, at + headerLen)); // header only: Pyodide copies no heap
      at += headerLen;
      const heap = M.HEAPU8;
      for (let n = 0; n < count; n++) {
        const start = n * pageSize;
        const end = Math.min(start + pageSize, heapLen);
        if (bitmap[n >> 3] & (1 << (n & 7))) {
          heap.set(bytes.subarray(at, at + end - start), start);
          at += end - start;
        } else {
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
    const live = M.HEAPU8.slice(lib.memoryBase, lib.memoryBase + lib.memorySize);
    const instance = await WebAssembly.instantiate(modules[n], { env, wasi_snapshot_preview1: env, "GOT.mem": got, "GOT.func": got });
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
