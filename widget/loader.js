// window.Kibitz: mount() returns a controller at once and draws the launcher synchronously; the
// Python engine (Pyodide + the kibitz wheel) boots in the background, from the server that served
// this very script, so an embedding page on another origin needs no configuration.
//
// This file only marshals. Every decision (room, mesh, media lanes, capabilities, speaking) is
// made by kibitz.backends.browser.PageSession over kibitz.session.Session, in Python.

const BUILD = /*__KIBITZ_BUILD__*/null;
const T_SCRIPT = performance.now();
const SCRIPT = document.currentScript; // only readable now, while this script first runs
const timings = { scriptStart: T_SCRIPT, launcherShown: null, engineReady: null, bootMs: null, signalMs: null,
  bootPath: null, runtimeMs: null, packagesMs: null, importMs: null };
const mark = (name) => { try { performance.mark(name); } catch (_) { /* old browsers */ } };
mark("kibitz:script");

const SERVER = (() => {
  if (SCRIPT && SCRIPT.src) return new URL(".", SCRIPT.src).href;
  console.warn("Kibitz: cannot see widget.js's own URL (document.currentScript); using this page's origin");
  return location.origin + "/";
})();

const STATE_DEFAULTS = Object.freeze({
  inCall: false, micOn: false, camOn: false, sharing: false, self: null,
  isHost: false, lobbyOn: false, locked: false, lobbyStatus: "none",
});
const EVENTS = new Set(["participants", "join", "leave", "speaking", "state", "chat", "knocks", "lobby",
  "message", "caps", "resume"]);
const KNOWN_OPTIONS = new Set(["room", "name", "startOpen", "preview", "headless", "identity", "meta",
  "signalHost", "turnHost", "licenseKey", "grant", "joinGate", "joinCredential", "apiBase", "relayOnly",
  "hostKey", "hostPassword", "galaxy"]);
// Controller methods that run in the engine; each returns a promise that settles once it has.
const ENGINE_METHODS = ["join", "leave", "toggleMic", "toggleCam", "shareScreen", "shareTrack", "stopShare",
  "setName", "setAvatar", "setMeta", "sendChat", "setLobby", "admit", "deny", "remove", "setLocked",
  "resetRoom", "knock", "getCapabilityGrant", "setCapabilityGrant", "getAgentAudit", "signInIdentity",
  "identityNonce", "provideIdentityToken", "unban", "setJoinCredential", "claimHost"];

// An "opener pays" invite carries a room grant as ?grant= (or ?k=), in the query or in a query
// inside the fragment. It is adopted now, before anything connects, and taken out of the address
// bar so it is not bookmarked or shared on; the engine sends it to /api/turn (kibitz/relay.py).
// Only a value shaped like a grant (<base64url>.<base64url>) is taken: a host page's own ?k= stays.
const GRANT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const ADOPTED_GRANT = (() => {
  try {
    const url = new URL(location.href);
    const q = url.hash.indexOf("?");
    const head = q < 0 ? url.hash : url.hash.slice(0, q);
    const frag = q < 0 ? null : new URLSearchParams(url.hash.slice(q + 1));
    let found = null;
    for (const params of [url.searchParams, frag]) {
      for (const p of ["grant", "k"]) {
        const v = params && params.get(p);
        if (v && GRANT_SHAPE.test(v)) { found = found || v; params.delete(p); }
      }
    }
    if (!found) return null;
    url.hash = frag === null ? head : (frag.toString() ? `${head}?${frag}` : head);
    history.replaceState(history.state, "", url.href);
    return found;
  } catch (err) {
    console.warn("Kibitz: could not read a grant from the address", err);
    return null;
  }
})();

// Offline rooms (docs/offline.md): a ?galaxy=<value> link selects a LAN hub (`kibitz hub`) and is
// kept in localStorage ("kbz.galaxy"), so a page opened once on the hub's network keeps using it,
// links without the parameter included; ?galaxy=off forgets it. While one is set the page never
// asks /api/* or a broker: it signals through the hub, over WebRTC (the engine checks the value).
const GALAXY_KEY = "kbz.galaxy";
const GALAXY_SHAPE = /^g1\|[^\s]{40,600}$/;
const STORED_GALAXY = (() => {
  let value = null;
  try {
    value = new URL(location.href).searchParams.get("galaxy");
  } catch (_) { /* no address to read */ }
  try {
    if (value === "off") {
      localStorage.removeItem(GALAXY_KEY);
      return null;
    }
    if (value && GALAXY_SHAPE.test(value)) {
      localStorage.setItem(GALAXY_KEY, value);
      return value;
    }
    if (value) console.warn("Kibitz: ?galaxy= is not a hub link (it starts with g1|); ignored");
    return localStorage.getItem(GALAXY_KEY);
  } catch (_) {
    return value && GALAXY_SHAPE.test(value) ? value : null; // storage blocked: this page only
  }
})();

function normalizeRoom(room) {
  return room.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 40);
}

/** A host name or URL → absolute base URL ending in "/" (http for loopback, https otherwise). */
function baseUrl(value, fallback) {
  if (value === undefined || value === null || value === "") return fallback;
  if (typeof value !== "string") throw new TypeError(`Kibitz.mount: expected a host or URL string, got ${typeof value}`);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) {
    const u = new URL(value);
    return u.href.endsWith("/") ? u.href : u.href + "/";
  }
  const local = /^(localhost|127\.|\[::1\])/.test(value);
  return `${local ? "http" : "https"}://${value.replace(/\/+$/, "")}/`;
}

/** A random token this tab keeps across reloads (sessionStorage): the room knows a reload as the
 * same participant, and a host's removal holds after one. Not an identity: a new tab is new. */
function tabToken() {
  try {
    let token = sessionStorage.getItem("kbz.tab");
    if (!token) {
      token = "tab-" + [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, "0")).join("");
      sessionStorage.setItem("kbz.tab", token);
    }
    return token;
  } catch (_) {
    return null; // storage blocked: the engine makes a token per session
  }
}

function validate(options) {
  if (!options || typeof options !== "object") {
    throw new TypeError("Kibitz.mount(options): options must be an object, e.g. { room: 'room-3f9k2mq7p1' }");
  }
  const { room } = options;
  if (typeof room !== "string" || !room.trim()) {
    throw new Error("Kibitz.mount: `room` is required — pass an unguessable id, e.g. " +
      "{ room: 'room-' + crypto.randomUUID().replaceAll('-', '') }");
  }
  if (!normalizeRoom(room)) throw new Error(`Kibitz.mount: room ${JSON.stringify(room)} has no letters or digits`);
  if (options.name !== undefined && typeof options.name !== "string") throw new TypeError("Kibitz.mount: `name` must be a string");
  if (options.meta !== undefined && (options.meta === null || typeof options.meta !== "object")) {
    throw new TypeError("Kibitz.mount: `meta` must be an object");
  }
  for (const key of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(key)) console.warn(`Kibitz.mount: unknown option ${JSON.stringify(key)} ignored`);
  }
  return {
    room, name: options.name || "", startOpen: !!options.startOpen, preview: !!options.preview,
    headless: !!options.headless, identity: options.identity || null, meta: options.meta || {},
    licenseKey: options.licenseKey || null, grant: options.grant || ADOPTED_GRANT || null,
    joinGate: options.joinGate || null, relayOnly: !!options.relayOnly || (!options.headless && hideIpStored()),
    joinCredential: options.joinCredential || null, signalHost: options.signalHost || null,
    // The room's settings: joinGate, else the page link's fragment (read by the engine); the host's
    // key, or the password that opens the key the link carries sealed. Never sent anywhere.
    hostKey: options.hostKey || null, hostPassword: options.hostPassword || null, pageUrl: location.href,
    tabToken: tabToken(),
    turnHost: options.turnHost || null,
    // A LAN hub: the mount option (from code; "off" = none), else the adopted/stored link.
    galaxy: options.galaxy === "off" ? null : (options.galaxy || STORED_GALAXY || null),
    server: SERVER,
    signalBase: /^wss?:\/\//i.test(options.signalHost || "") ? SERVER : baseUrl(options.signalHost, SERVER),
    turnBase: baseUrl(options.turnHost, SERVER),
    apiBase: baseUrl(options.apiBase, SERVER),
  };
}

// ---- structured-clone-able values ↔ JSON (the engine carries JSON; these tags carry the rest)

const TAG = "$kbz";

function b64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
function unb64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function replacer(key, value) {
  const raw = this[key];
  if (raw === null || (typeof raw !== "object" && typeof raw !== "function" && typeof raw !== "bigint" &&
      typeof raw !== "number" && typeof raw !== "undefined")) return value;
  if (typeof raw === "number") return Number.isFinite(raw) ? value : { [TAG]: "Number", v: String(raw) };
  if (typeof raw === "undefined") return Array.isArray(this) ? { [TAG]: "undefined", v: 0 } : value;
  if (typeof raw === "bigint") return { [TAG]: "BigInt", v: raw.toString() };
  if (typeof raw === "function") throw new DOMException(`Kibitz: a function cannot be sent (${key})`, "DataCloneError");
  if (raw instanceof Date) return { [TAG]: "Date", v: raw.getTime() };
  if (raw instanceof Map) return { [TAG]: "Map", v: [...raw] };
  if (raw instanceof Set) return { [TAG]: "Set", v: [...raw] };
  if (raw instanceof ArrayBuffer) return { [TAG]: "ArrayBuffer", v: b64(new Uint8Array(raw)) };
  if (ArrayBuffer.isView(raw)) {
    const bytes = new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength);
    return { [TAG]: raw.constructor.name, v: b64(bytes) };
  }
  if (raw instanceof RegExp) return { [TAG]: "RegExp", v: [raw.source, raw.flags] };
  if (raw instanceof Error) return { [TAG]: "Error", v: [raw.name, raw.message] };
  if (Object.prototype.hasOwnProperty.call(raw, TAG)) return { [TAG]: "Object", v: Object.entries(raw) };
  return value;
}

const VIEWS = { Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array,
  Float32Array, Float64Array, BigInt64Array, BigUint64Array, DataView };

function reviver(_key, value) {
  if (value === null || typeof value !== "object" || typeof value[TAG] !== "string") return value;
  const v = value.v;
  switch (value[TAG]) {
    case "Number": return Number(v);
    case "undefined": return undefined;
    case "BigInt": return BigInt(v);
    case "Date": return new Date(v);
    case "Map": return new Map(v);
    case "Set": return new Set(v);
    case "ArrayBuffer": return unb64(v).buffer;
    case "RegExp": return new RegExp(v[0], v[1]);
    case "Error": { const e = new Error(v[1]); e.name = v[0]; return e; }
    case "Object": return Object.fromEntries(v);
    default: {
      const View = VIEWS[value[TAG]];
      if (!View) return value;
      const buf = unb64(v).buffer;
      return View === DataView ? new DataView(buf) : new View(buf, 0, buf.byteLength / View.BYTES_PER_ELEMENT);
    }
  }
}

const encodeData = (data) => {
  const text = JSON.stringify(data === undefined ? { [TAG]: "undefined", v: 0 } : data, replacer);
  if (text === undefined) throw new TypeError("Kibitz: this value cannot be sent");
  return text;
};
// The reviver runs for every value; a text with no tag in it (the usual case) needs none.
const TAG_KEY = JSON.stringify(TAG);
const decodeData = (text) => (text.includes(TAG_KEY) ? JSON.parse(text, reviver) : JSON.parse(text));

// ---- the engine (one Pyodide per page, shared by every mount)

let enginePromise = null;

/** The snapshot to restore, or null: none built, or turned off for diagnostics and benchmarks
 * (`window.__KIBITZ_BOOT__ = "plain"` before widget.js runs). */
function snapshotInfo() {
  if (!BUILD.snapshot) return null;
  if (globalThis.__KIBITZ_BOOT__ === "plain") return null;
  return BUILD.snapshot;
}

/** A side module, compiled while it downloads (and kept compiled in the browser's code cache); a
 * host that serves it without `application/wasm` gets the slower buffered compile. */
async function compileSideModule(url) {
  try {
    return await WebAssembly.compileStreaming(fetch(url));
  } catch (_) {
    const r = await fetch(url);
    if (!r.ok) throw new Error(`HTTP ${r.status} for ${url}`);
    return WebAssembly.compile(await r.arrayBuffer());
  }
}

async function fetchBytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`HTTP ${r.status} for ${url}`);
  return new Uint8Array(await r.arrayBuffer());
}

/** Start every download the snapshot boot needs, all at once. */
function fetchSnapshotAssets(info) {
  const parts = {
    // The snapshot is stored unpacked with compressed copies beside it: the server picks the one the
    // browser accepts (brotli on https and loopback) and the browser decodes it off this thread.
    bytes: fetchBytes(SERVER + info.url).then((b) => { timings.snapshotAt = performance.now(); return b; }),
    modules: Promise.all(info.libs.map((lib) => compileSideModule(SERVER + lib.url))),
    pack: fetchBytes(SERVER + info.pack),
  };
  for (const p of Object.values(parts)) p.catch(() => {}); // awaited (and reported) in bootFromSnapshot
  return parts;
}

function checkPackages(pyodide) {
  // loadPackage never rejects on a failed download: check what really arrived.
  const missing = BUILD.expect.filter((n) => !(n in pyodide.loadedPackages));
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
  timings.restoreStart = t0;
  const { default: createModule } = await import(options.indexURL + "pyodide.asm.mjs");
  const pyodide = await loadPyodide({
    ...options,
    stdLibURL: SERVER + info.stdlib, // only what the snapshot does not hold imported
    _loadSnapshot: new Uint8Array(16), // a stand-in: the factory restores the real one once it is here
    createPyodideModule: snapshotModuleFactory(createModule, assets.bytes),
  });
  timings.restoredAt = performance.now();
  // Pyodide keeps its config, whose factory still holds the snapshot's ~28 MB: let them go.
  try {
    pyodide._api.config._loadSnapshot = undefined;
    pyodide._api.config.createPyodideModule = undefined;
  } catch (_) { /* internals moved: only memory */ }
  const t1 = performance.now();
  timings.runtimeMs = t1 - t0;
  await rebindSideModules(pyodide._module, info, await assets.modules);
  unpackTar(pyodide.FS, await assets.pack, info.sitePackages);
  // The snapshot froze `random`'s state: without a reseed every page would draw the same numbers.
  pyodide.runPython("import random; random.seed()");
  // The rebound extension must really work before the engine leans on it (else: plain boot).
  pyodide.runPython("import pydantic_core\n" +
    "assert pydantic_core.SchemaValidator({'type': 'int'}).validate_python('7') == 7");
  // What the snapshot holds counts as loaded: a later loadPackage of it must be a no-op.
  for (const name of BUILD.expect) pyodide.loadedPackages[name] = "snapshot";
  timings.packagesMs = performance.now() - t1;
  return pyodide;
}

function bootEngine() {
  if (enginePromise) return enginePromise;
  enginePromise = (async () => {
    const t0 = performance.now();
    timings.bootPath = null;
    const runtime = SERVER + BUILD.pyodide;
    const snapInfo = snapshotInfo();
    // Started first, so they download while pyodide.mjs, the wasm and the stdlib do.
    const assets = snapInfo ? fetchSnapshotAssets(snapInfo) : null;
    const { loadPyodide } = await import(runtime + "pyodide.mjs");
    const options = {
      indexURL: runtime,
      lockFileURL: SERVER + BUILD.lock,
      packageBaseUrl: SERVER + BUILD.packages,
      stdout: (s) => console.debug("[kibitz]", s),
      stderr: (s) => console.warn("[kibitz]", s),
    };
    let pyodide = null;
    let browser = null;
    if (assets) {
      try {
        pyodide = await bootFromSnapshot(loadPyodide, options, snapInfo, assets);
        const t1 = performance.now();
        pyodide.registerJsModule("kibitz_shim", shim);
        browser = pyodide.pyimport("kibitz.backends.browser");
        timings.importMs = performance.now() - t1;
        timings.bootPath = "snapshot";
      } catch (err) {
        if (err && err.kibitzFatal) throw err;
        console.warn(`Kibitz: the runtime snapshot did not work (${err && err.message}); booting without it`);
        pyodide = browser = null;
        timings.bootPath = "fallback";
      }
    }
    if (!browser) {
      const t1 = performance.now();
      pyodide = await loadPyodide({ ...options, packages: BUILD.preload });
      timings.runtimeMs = performance.now() - t1; // runtime and packages: Pyodide loads both here
      timings.packagesMs = 0;
      checkPackages(pyodide);
      const t2 = performance.now();
      pyodide.registerJsModule("kibitz_shim", shim);
      browser = pyodide.pyimport("kibitz.backends.browser");
      timings.importMs = performance.now() - t2;
      if (!timings.bootPath) timings.bootPath = "plain";
    }
    timings.bootMs = performance.now() - t0;
    return { pyodide, browser };
  })();
  enginePromise.catch(() => { enginePromise = null; }); // a later mount may retry
  return enginePromise;
}

/** Which broker this room uses: `<server>/api/signal` (or the signalHost's), fetched while Pyodide
 * boots. A ws(s):// signalHost names the broker directly. */
async function discoverSignal(cfg) {
  const t0 = performance.now();
  if (cfg.galaxy) return { galaxy: cfg.galaxy }; // a LAN hub: nothing to ask, nothing leaves the LAN
  try {
    if (cfg.signalHost && /^wss?:\/\//i.test(cfg.signalHost)) {
      const url = cfg.signalHost.endsWith("/") ? cfg.signalHost : cfg.signalHost + "/";
      return { url, key: "peerjs" };
    }
    const base = cfg.signalBase;
    // The engine asks this again (adding &failed=<broker>) when its broker goes away: a service
    // of several nodes then names the room's next node.
    const signal = `${base}api/signal?room=${encodeURIComponent(cfg.room)}`;
    try {
      const r = await fetch(signal, { cache: "no-store" });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const info = await r.json();
      const key = typeof info.key === "string" ? info.key : "peerjs";
      if (typeof info.url === "string" && info.url) return { url: info.url, key, signal };
      if (info.host) {
        const host = info.host.includes(":") && !info.host.startsWith("[") ? `[${info.host}]` : info.host;
        return { url: `${info.secure ? "wss" : "ws"}://${host}:${info.port}${info.path || "/"}`, key, signal };
      }
      console.warn(`Kibitz: ${base}api/signal names no broker; trying the default layout`);
    } catch (err) {
      console.warn(`Kibitz: ${base}api/signal failed (${err.message}); trying the default layout`);
    }
    // kibitz serve's default: the broker on the HTTP port + 1.
    const u = new URL(base);
    const port = Number(u.port || (u.protocol === "https:" ? 443 : 80)) + 1;
    return { url: `${u.protocol === "https:" ? "wss" : "ws"}://${u.host.replace(/:\d+$/, "")}:${port}/`, key: "peerjs" };
  } finally {
    timings.signalMs = performance.now() - t0;
  }
}

function fromPy(value) {
  if (value && typeof value.toJs === "function") {
    const out = value.toJs({ dict_converter: Object.fromEntries, create_pyproxies: false });
    value.destroy();
    return out;
  }
  return value;
}

// ---- the controller

const mounted = new Set();

function mount(options) {
  const cfg = validate(options);
  const listeners = new Map([...EVENTS].map((e) => [e, new Set()]));
  let state = { ...STATE_DEFAULTS };
  let participants = [];
  let knocks = [];
  let chat = [];
  let session = null; // PyProxy of kibitz.backends.browser.PageSession
  let py = null; // its bound methods, looked up once
  let closed = false;
  let dropped = 0;

  const fire = (event, ...args) => {
    for (const cb of [...(listeners.get(event) || [])]) {
      try { cb(...args); } catch (err) { console.error(`Kibitz: a '${event}' listener threw`, err); }
    }
  };

  // What Python calls to reach the page (see PageSession.emit). Values arrive as plain JS.
  const emit = (event, a, b) => {
    if (closed) return;
    if (event === "state") { state = { ...STATE_DEFAULTS, ...a }; fire("state", { ...state }); }
    else if (event === "participants") { participants = a || []; fire("participants", participants.slice()); }
    else if (event === "knocks") { knocks = a || []; fire("knocks", knocks.slice()); }
    else if (event === "message") {
      let data;
      try { data = decodeData(a); } catch (err) { console.warn("Kibitz: undecodable message dropped", err); return; }
      fire("message", data, b);
    } else if (event === "chat") {
      if (a === null || a === undefined) chat = []; else chat.push(a);
      fire("chat", a === undefined ? null : a);
    } else fire(event, a, b);
  };

  // The relay (/api/turn: licence, grant, relayOnly, fresh credentials) is asked by the engine.
  const openSession = (browser, broker) => {
    session = browser.open_session(JSON.stringify({ ...cfg, broker }), emit);
    py = { call: session.call, broadcast: session.broadcast_json, sendTo: session.send_json, close: session.close };
  };
  const dropSession = () => {
    if (!session) return;
    try { py.close(); } catch (err) { console.error("Kibitz: close failed", err); }
    for (const fn of Object.values(py)) fn.destroy();
    session.destroy();
    session = py = null;
  };

  let engine = null; // what `ready` found: { browser, broker }, kept for a resume from the bfcache
  const ready = (async () => {
    const [{ browser }, broker] = await Promise.all([bootEngine(), cfg.preview ? null : discoverSignal(cfg)]);
    if (closed) throw new Error("Kibitz: unmounted before the engine was ready");
    const tOpen = performance.now();
    openSession(browser, broker);
    timings.openMs = performance.now() - tOpen;
    engine = { browser, broker };
    if (timings.engineReady === null) { timings.engineReady = performance.now(); mark("kibitz:ready"); }
    if (ui && ui.setState) ui.setState("ready", "Kibitz call: open");
  })();
  ready.catch((err) => {
    if (closed) return;
    console.error(err);
    if (ui && ui.setState) ui.setState("error", `Kibitz call failed to start: ${err.message}`);
  });

  const callEngine = async (method, args) => {
    await ready;
    if (closed) throw new Error(`Kibitz: ${method}() after unmount()`);
    return fromPy(await py.call(method, args));
  };

  const controller = {
    ready,
    get timings() { return { ...timings }; },
    get options() { return { ...cfg }; },
    unmount() {
      if (closed) return;
      dropSession();
      closed = true;
      removeEventListener("pagehide", onHide);
      removeEventListener("pageshow", onShow);
      mounted.delete(controller);
      if (ui && ui.remove) ui.remove();
      for (const set of listeners.values()) set.clear();
    },
    broadcast(data) {
      const text = encodeData(data); // throws for values that cannot be sent, like postMessage
      if (!session || closed) { dropped += 1; return; } // no-op until the data link is up
      py.broadcast(shim.pyText(text));
    },
    sendTo(id, data) {
      const text = encodeData(data);
      if (!session || closed) { dropped += 1; return; }
      const refused = py.sendTo(String(id), shim.pyText(text));
      if (refused) throw new Error(`Kibitz: sendTo(${id}) refused: ${refused}`);
    },
    onMessage(cb) { return controller.on("message", cb); },
    on(event, cb) {
      if (!EVENTS.has(event)) throw new Error(`Kibitz: unknown event ${JSON.stringify(event)}; one of ${[...EVENTS].join(", ")}`);
      if (typeof cb !== "function") throw new TypeError("Kibitz: on(event, cb) needs a function");
      listeners.get(event).add(cb);
      return () => { listeners.get(event).delete(cb); };
    },
    getState() { return { ...state }; },
    getParticipants() { return participants.slice(); },
    getKnocks() { return knocks.slice(); },
    getChat() { return chat.slice(); },
    get droppedBeforeReady() { return dropped; },
    /** This page's address as an invite; a licensed opener's carries a fresh ?grant= (opener pays). */
    createInviteLink() { return callEngine("createInviteLink", [location.href]); },
    /** Hide my IP: every connection through the relay (or none). Applied by reopening the session. */
    async setRelayOnly(on) {
      if (cfg.relayOnly === !!on) return;
      cfg.relayOnly = !!on;
      if (cfg.preview || !engine || closed) return;
      await reopen();
    },
  };
  for (const method of ENGINE_METHODS) controller[method] = (...args) => callEngine(method, args);

  // The back/forward cache: pagehide says goodbye and closes the session (the others drop this tab
  // at once); when the browser shows the page again from the cache, open a fresh session with the
  // same options (the engine asks /api/turn again: TURN credentials are short-lived) and, if this tab
  // was in the call, join again with the same microphone and camera. Registered before the
  // session's own pagehide hook, so the state read here is the state before the goodbye.
  let hidden = null;
  const onHide = () => { hidden = { inCall: !!state.inCall, mic: !!state.micOn, cam: !!state.camOn }; };
  const reopen = async (was = { inCall: !!state.inCall, mic: !!state.micOn, cam: !!state.camOn }) => {
    dropSession();
    openSession(engine.browser, engine.broker);
    fire("resume", { rejoined: was.inCall });
    if (was.inCall) await callEngine("join", [{ mic: was.mic, cam: was.cam }]);
  };
  const onShow = async (ev) => {
    if (!ev.persisted || closed || !engine || !hidden) return;
    const was = hidden;
    hidden = null;
    try {
      await reopen(was);
    } catch (err) {
      console.error("Kibitz: could not resume after the back/forward cache", err);
    }
  };
  addEventListener("pagehide", onHide);
  addEventListener("pageshow", onShow);

  // The UI (widget/ui.js) draws synchronously, before Python boots, and drives only this controller.
  const onShown = () => {
    if (timings.launcherShown === null) { timings.launcherShown = performance.now(); mark("kibitz:launcher"); }
  };
  const ui = cfg.headless ? null : createLauncher({ startOpen: cfg.startOpen, preview: cfg.preview, onShown, controller });
  mounted.add(controller);
  return controller;
}

/**
 * Kibitz.createRoom(options): a fresh room whose id commits to its settings, made in the engine
 * (kibitz.rooms) with no server: resolves to { room, joinGate, link, hostKey?, inviteKey?, code?,
 * mintInvite(name, ttlSeconds) -> Promise<{token, link}> }. Options: gate ('open' | 'names' |
 * 'code' | 'invite'), names, code, host ('key' | 'name' | 'none'), hostName, hostPassword, lobby,
 * baseUrl (default: this page without its fragment).
 */
async function createRoom(options) {
  const { pyodide } = await bootEngine();
  const rooms = pyodide.pyimport("kibitz.backends.page_rooms");
  try {
    const made = JSON.parse(await rooms.create_room_json(JSON.stringify(options || {}), location.href));
    made.mintInvite = (name, ttl) => mintInvite(made, name, ttl);
    return made;
  } catch (err) {
    throw new Error(`Kibitz.createRoom: ${errorLine(err)}`);
  }
}

/** Kibitz.mintInvite(room, name, ttlSeconds): an invite for one guest to an invite-gated room made
 * by createRoom (`room` holds its room, joinGate, link and inviteKey): resolves to { token, link }. */
async function mintInvite(room, name, ttl) {
  const { pyodide } = await bootEngine();
  const rooms = pyodide.pyimport("kibitz.backends.page_rooms");
  const { room: id, joinGate, link, inviteKey } = room || {};
  try {
    return JSON.parse(rooms.mint_invite_json(JSON.stringify({ room: id, joinGate, link, inviteKey }),
      String(name), Number(ttl)));
  } catch (err) {
    throw new Error(`Kibitz.mintInvite: ${errorLine(err)}`);
  }
}

/** The last line of a Python traceback, without the exception's class: what to show a person. */
function errorLine(err) {
  const lines = String((err && err.message) || err).trim().split("\n").filter(Boolean);
  return (lines[lines.length - 1] || "").replace(/^[A-Za-z_.]*(Error|Exception):\s*/, "");
}

// ---- window.Kibitz and the one-liner

if (!(window.Kibitz && window.Kibitz.__kibitz)) {
  window.Kibitz = {
    __kibitz: true,
    version: BUILD.version,
    mount,
    server: SERVER,
    get timings() { return { ...timings }; },
    auto: null,
    /** The page's Pyodide (for diagnostics and tests): resolves once the engine has booted. */
    _engine: () => bootEngine().then((e) => e.pyodide),
    createRoom,
    mintInvite,
  };
}
if (SCRIPT && SCRIPT.dataset && SCRIPT.dataset.room !== undefined) {
  try {
    window.Kibitz.auto = window.Kibitz.mount({ room: SCRIPT.dataset.room, name: SCRIPT.dataset.name || "" });
  } catch (err) {
    console.error(err);
  }
}
