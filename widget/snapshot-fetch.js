// Fetching what a snapshot boot needs: the packed engine snapshot, the compiled side modules it
// binds again, and the tar of the wheels' files. Runs where the engine boots (its Worker, or the
// page when no Worker can start); kept apart from the boot itself so how the bytes travel
// (compression, splitting, caching) can change here alone. The snapshot is stored unpacked with
// compressed copies beside it: the server picks the one the browser accepts (brotli on https and
// loopback) and the browser decodes it as it arrives, off the page's thread.

/** A side module, compiled while it downloads (and kept compiled in the browser's code cache); a
 * host that serves it without `application/wasm` gets the slower buffered compile. */
async function compileSideModule(url, signal) {
  try {
    return await WebAssembly.compileStreaming(fetch(url, { signal }));
  } catch (_) {
    const r = await fetch(url, { signal });
    if (!r.ok) throw new Error(`HTTP ${r.status} for ${url}`);
    return WebAssembly.compile(await r.arrayBuffer());
  }
}

async function fetchBytes(url, signal) {
  const r = await fetch(url, { signal });
  if (!r.ok) throw new Error(`HTTP ${r.status} for ${url}`);
  return new Uint8Array(await r.arrayBuffer());
}

/** Start every download the snapshot boot needs, all at once; `abort()` stops them (the runtime
 * turned out unable to take the snapshot: no point downloading it). */
function fetchSnapshotAssets(server, info, timings) {
  const ctl = typeof AbortController === "function" ? new AbortController() : null;
  const signal = ctl ? ctl.signal : undefined;
  const parts = {
    bytes: fetchBytes(server + info.url, signal).then((b) => {
      timings.snapshotAt = performance.timeOrigin + performance.now(); // epoch ms, like the other boot marks
      return b;
    }),
    modules: Promise.all(info.libs.map((lib) => compileSideModule(server + lib.url, signal))),
    pack: fetchBytes(server + info.pack, signal),
    abort: () => { if (ctl) ctl.abort(); },
  };
  for (const p of [parts.bytes, parts.modules, parts.pack]) p.catch(() => {}); // awaited (and reported) in bootFromSnapshot
  return parts;
}
