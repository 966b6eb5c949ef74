// The engine host: the body of `kibitzEngineHost(port, BUILD, SERVER, flags)`, which runs in the
// dedicated Worker widget.js starts (or, where no Worker can start, on the page's thread behind a
// MessageChannel; `port` is then one end of it). It boots Pyodide with the Python engine (from the
// memory snapshot when it can), finds each mount's broker and ICE servers while it boots, and from
// then on only routes: JSON text from the page to kibitz.backends.worker_host.Host, app data and
// relayed channel data to Host's fast methods, and whatever Python posts back to the page.
//
// Messages from the page: JSON text (for Python), `{ text, extras }` (JSON with transferred data
// channels), arrays (hot paths: ["b", mount, text] broadcast, ["s", mount, peer, text] sendTo,
// ["d", h, data] a relayed channel's message) and `{ k: ... }` objects for this file (mount, ping,
// py). To the page: JSON text (Python), ["m", mount, text, sender] (an app message), ["r", h, data]
// (a send on a relayed channel) and `{ k: ... }` objects (booted, failed, opened, pong, fetched).

const timings = { bootPath: null, runtimeMs: null, packagesMs: null, importMs: null, bootMs: null };
const at = (t) => performance.timeOrigin + t; // epoch ms: the page converts to its own clock
const reply = (msg) => port.postMessage(msg);
const shim = createWorkerShim(port);
const early = []; // page messages for Python that arrived before it was up
let host = null; // kibitz.backends.worker_host.Host
let fast = null; // its hot-path methods, looked up once
let pyodide = null;

function errorOf(err) {
  let message = String((err && err.message) || err || "unknown error").trim();
  let name = (err && err.name) || "Error";
  if (/Traceback \(most recent call last\)/.test(message)) { // a PythonError: its last line says it
    const lines = message.split("\n").map((l) => l.trim()).filter(Boolean);
    message = lines[lines.length - 1] || message;
    const m = /^([A-Za-z_.]*(?:Error|Exception)):\s*(.*)$/.exec(message);
    if (m) { name = m[1].split(".").pop(); message = m[2]; }
  }
  return [name, message];
}

// ---- progress: which engine files this thread has fetched (the page's Resource Timing cannot see them)

try {
  const seen = new PerformanceObserver((list) => {
    const names = list.getEntries().map((e) => e.name).filter((n) => n.startsWith(SERVER));
    if (names.length) reply({ k: "fetched", names });
  });
  seen.observe({ type: "resource", buffered: true });
} catch (_) { /* no Resource Timing here: the page's progress bar stays indeterminate */ }

// ---- booting Pyodide and the engine

function checkPackages(py) {
  // loadPackage never rejects on a failed download: check what really arrived.
  const missing = BUILD.expect.filter((n) => !(n in py.loadedPackages));
  if (missing.length) {
    const err = new Error(`Kibitz: engine packages failed to load: ${missing.join(", ")} ` +
      `(from ${SERVER + BUILD.packages}; the console shows the failed requests)`);
    err.kibitzFatal = true; // the snapshot is not to blame: do not boot again without it
    throw err;
  }
}

/** Restore the engine snapshot (engine and wheels already imported), bind pydantic-core's compiled
 * module again, and put the wheels' files back for later lazy imports (widget/snapshot.js). */
async function bootFromSnapshot(loadPyodide, options, info, assets) {
  const t0 = performance.now();
  timings.restoreStart = at(t0);
  const { default: createModule } = await import(options.indexURL + "pyodide.asm.mjs");
  const lowest = Math.min(...info.libs.map((lib) => lib.tableBase));
  const check = (M) => {
    if (flags.growTable) M.wasmTable.grow(flags.growTable); // test flag: a runtime like WebKit's
    if (M.wasmTable.length > lowest) { // this runtime's table already uses the snapshot's slots
      assets.abort();
      throw new Error(`this browser's wasm table (${M.wasmTable.length} entries) cannot take the snapshot's ` +
        `side module at slot ${lowest}`);
    }
  };
  const py = await loadPyodide({
    ...options,
    stdLibURL: SERVER + info.stdlib, // only what the snapshot does not hold imported
    _loadSnapshot: new Uint8Array(16), // a stand-in: the factory restores the real one once it is here
    createPyodideModule: snapshotModuleFactory(createModule, assets.bytes, check),
  });
  timings.restoredAt = at(performance.now());
  // Pyodide keeps its config, whose factory still holds the snapshot's ~28 MB: let them go.
  try {
    py._api.config._loadSnapshot = undefined;
    py._api.config.createPyodideModule = undefined;
  } catch (_) { /* internals moved: only memory */ }
  const t1 = performance.now();
  timings.runtimeMs = t1 - t0;
  await rebindSideModules(py._module, info, await assets.modules);
  unpackTar(py.FS, await assets.pack, info.sitePackages);
  // The snapshot froze `random`'s state: without a reseed every page would draw the same numbers.
  py.runPython("import random; random.seed()");
  // The rebound extension must really work before the engine leans on it (else: plain boot).
  py.runPython("import pydantic_core\n" +
    "assert pydantic_core.SchemaValidator({'type': 'int'}).validate_python('7') == 7");
  // What the snapshot holds counts as loaded: a later loadPackage of it must be a no-op.
  for (const name of BUILD.expect) py.loadedPackages[name] = "snapshot";
  timings.packagesMs = performance.now() - t1;
  return py;
}

function startHost(py) {
  const t = performance.now();
  py.registerJsModule("kibitz_shim", shim);
  const made = py.pyimport("kibitz.backends.worker_host").make_host(shim.post, shim.postAppMessage);
  timings.importMs = performance.now() - t;
  return made;
}

async function boot() {
  const t0 = performance.now();
  const runtime = SERVER + BUILD.pyodide;
  const snapInfo = BUILD.snapshot && flags.boot !== "plain" ? BUILD.snapshot : null;
  // Started first, so they download while pyodide.mjs, the wasm and the stdlib do.
  const assets = snapInfo ? fetchSnapshotAssets(SERVER, snapInfo, timings) : null;
  const { loadPyodide } = await import(runtime + "pyodide.mjs");
  const options = {
    indexURL: runtime,
    lockFileURL: SERVER + BUILD.lock,
    packageBaseUrl: SERVER + BUILD.packages,
    stdout: (s) => console.debug("[kibitz]", s),
    stderr: (s) => console.warn("[kibitz]", s),
  };
  let made = null;
  if (assets) {
    try {
      pyodide = await bootFromSnapshot(loadPyodide, options, snapInfo, assets);
      made = startHost(pyodide);
      timings.bootPath = "snapshot";
    } catch (err) {
      if (err && err.kibitzFatal) throw err;
      assets.abort();
      console.warn(`Kibitz: the runtime snapshot did not work (${err && err.message}); booting without it`);
      pyodide = made = null;
      timings.bootPath = "fallback";
    }
  }
  if (!made) {
    const t1 = performance.now();
    pyodide = await loadPyodide({ ...options, packages: BUILD.preload });
    timings.runtimeMs = performance.now() - t1; // runtime and packages: Pyodide loads both here
    timings.packagesMs = 0;
    checkPackages(pyodide);
    made = startHost(pyodide);
    if (!timings.bootPath) timings.bootPath = "plain";
  }
  timings.bootMs = performance.now() - t0;
  return made;
}

// ---- discovery: each mount's broker, found while the engine boots

/** Which broker this room uses: `<server>/api/signal` (or the signalHost's). A ws(s):// signalHost
 * names the broker directly. */
async function discoverSignal(cfg) {
  if (cfg.galaxy) return { galaxy: cfg.galaxy }; // a LAN hub: nothing to ask, nothing leaves the LAN
  if (cfg.signalHost && /^wss?:\/\//i.test(cfg.signalHost)) {
    const url = cfg.signalHost.endsWith("/") ? cfg.signalHost : cfg.signalHost + "/";
    return { url, key: "peerjs" };
  }
  const base = cfg.signalBase;
  // The engine asks this again (adding &failed=<broker>) when its broker goes away: a service of
  // several nodes then names the room's next node.
  const signal = `${base}api/signal?room=${encodeURIComponent(cfg.room)}`;
  try {
    const r = await fetch(signal, { cache: "no-store" });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const info = await r.json();
    const key = typeof info.key === "string" ? info.key : "peerjs";
    if (typeof info.url === "string" && info.url) return { url: info.url, key, signal };
    if (info.host) {
      const h = info.host.includes(":") && !info.host.startsWith("[") ? `[${info.host}]` : info.host;
      return { url: `${info.secure ? "wss" : "ws"}://${h}:${info.port}${info.path || "/"}`, key, signal };
    }
    console.warn(`Kibitz: ${base}api/signal names no broker; trying the default layout`);
  } catch (err) {
    console.warn(`Kibitz: ${base}api/signal failed (${err.message}); trying the default layout`);
  }
  // kibitz serve's default: the broker on the HTTP port + 1.
  const u = new URL(base);
  const port = Number(u.port || (u.protocol === "https:" ? 443 : 80)) + 1;
  return { url: `${u.protocol === "https:" ? "wss" : "ws"}://${u.host.replace(/:\d+$/, "")}:${port}/`, key: "peerjs" };
}

// ---- mounts

const mounts = new Map(); // id → { closed }

function toPython(text, extras) {
  if (host) host.receive(text, extras); else early.push({ text, extras });
}

async function openMount(id, cfg) {
  const old = mounts.get(id);
  if (old) old.closed = true;
  const m = { closed: false };
  mounts.set(id, m);
  const t0 = performance.now();
  try {
    // The relay (/api/turn: licence, grant, relayOnly, fresh credentials) is asked by the engine.
    const [, broker] = await Promise.all([ready, cfg.preview ? null : discoverSignal(cfg)]);
    const signalMs = performance.now() - t0;
    if (m.closed) return;
    const t1 = performance.now();
    host.open(id, JSON.stringify({ ...cfg, broker }));
    reply({ k: "opened", id, signalMs, openMs: performance.now() - t1 });
  } catch (err) {
    if (!m.closed) reply({ k: "opened", id, error: errorOf(err) });
  }
}

function closeMount(id) {
  const m = mounts.get(id);
  if (m) { m.closed = true; mounts.delete(id); }
  toPython(JSON.stringify({ t: "close", mount: id }));
}

/** Feed a MediaStreamTrackGenerator's writable (the page's silent audio placeholder) with 20 ms of
 * silence every 20 ms, until its track is stopped (the write then fails). */
function pumpSilence(writable) {
  const writer = writable.getWriter();
  const zeros = new Float32Array(960);
  let timestamp = 0;
  const timer = setInterval(() => {
    let frame;
    try {
      frame = new AudioData({ format: "f32-planar", sampleRate: 48000, numberOfFrames: 960, numberOfChannels: 1,
        timestamp, data: zeros });
    } catch (_) { clearInterval(timer); return; }
    timestamp += 20000;
    writer.write(frame).catch(() => clearInterval(timer));
  }, 20);
}

/** Test and diagnostics hook: run Python in the engine; the result crosses as a plain value. */
async function runPy(msg) {
  try {
    await ready;
    let v = msg.async ? await pyodide.runPythonAsync(msg.code) : pyodide.runPython(msg.code);
    if (v && typeof v.toJs === "function") {
      const js = v.toJs({ dict_converter: Object.fromEntries, create_pyproxies: false });
      v.destroy();
      v = js;
    }
    reply({ k: "py", id: msg.id, ok: true, v });
  } catch (err) {
    reply({ k: "py", id: msg.id, ok: false, e: errorOf(err) });
  }
}

// ---- the page's messages

port.onmessage = (e) => {
  const m = e.data;
  try {
    if (typeof m === "string") toPython(m);
    else if (Array.isArray(m)) {
      if (!fast) { early.push({ hot: m }); return; }
      const kind = m[0];
      if (kind === "b") fast.broadcast(m[1], shim.pyText(m[2]));
      else if (kind === "s") fast.sendTo(m[1], m[2], shim.pyText(m[3]));
      else if (kind === "d") {
        const data = typeof m[2] === "string" ? shim.pyText(m[2]) : m[2];
        fast.relayData(m[1], data, data !== m[2]);
      }
    } else if (m && m.text !== undefined) toPython(m.text, m.extras);
    else if (m && m.k === "ping") reply({ k: "pong", n: m.n });
    else if (m && m.k === "mount") openMount(m.id, m.cfg);
    else if (m && m.k === "close") closeMount(m.id);
    else if (m && m.k === "hide") {
      for (const mount of mounts.values()) mount.closed = true;
      mounts.clear();
      toPython(JSON.stringify({ t: "hide" }));
    } else if (m && m.k === "py") runPy(m);
    else if (m && m.k === "pyset") ready.then(() => pyodide.globals.set(m.name, m.value));
    else if (m && m.k === "pump") pumpSilence(m.writable);
  } catch (err) {
    console.error("Kibitz engine: a page message failed", err);
  }
};

const ready = boot().then((made) => {
  host = made;
  fast = { broadcast: host.broadcast, sendTo: host.send_to, relayData: host.relay_data };
  const held = early.splice(0);
  for (const item of held) {
    if (item.hot) port.onmessage({ data: item.hot });
    else host.receive(item.text, item.extras);
  }
  const out = { ...timings };
  reply({ k: "booted", timings: out });
}, (err) => {
  console.error(err);
  reply({ k: "failed", error: errorOf(err), fatal: !!(err && err.kibitzFatal) });
  throw err;
});
ready.catch(() => {});
reply({ k: "hello" });
