// window.Kibitz: mount() returns a controller at once and draws the launcher synchronously; the
// Python engine (Pyodide + the kibitz wheel) boots in a dedicated Worker (widget/engine-host.js),
// from the server that served this very script, so an embedding page on another origin needs no
// configuration and its main thread never runs Python.
//
// This file only marshals. Every decision (room, mesh, media lanes, capabilities, speaking) is
// made by kibitz.backends.page_session.PageSession over kibitz.session.Session, in the Worker.
// Controller methods that run there go by name through one generic call (the list is
// kibitz.controller.ENGINE_MEMBERS, written in by build/build.py); the page keeps mirrors of what
// the engine last said (state, participants, chat, what may be sent) so the synchronous members
// answer without a round trip.

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
  "message", "caps", "resume", "engine"]);
// Controller methods that run in the engine (kibitz.controller.ENGINE_MEMBERS); each returns a
// promise that settles once it has.
const ENGINE_METHODS = /*__KIBITZ_METHODS__*/[];
const KNOWN_OPTIONS = new Set(["room", "name", "startOpen", "preview", "headless", "identity", "meta",
  "signalHost", "turnHost", "licenseKey", "grant", "joinGate", "joinCredential", "apiBase", "relayOnly",
  "hostKey", "hostPassword", "galaxy", "verifyIdentity"]);
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
    verifyIdentity: options.verifyIdentity || null,
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

// ---- the engine: one dedicated Worker per page, shared by every mount

/** Test and diagnostics flags, set before widget.js runs: `window.__KIBITZ_ENGINE__ = { relay: true }`
 * relays data channels through the page instead of transferring them; `inPage: true` runs the
 * engine on the page's thread (as where no Worker can start); `pingMs` / `hangMs` / `bootHangMs`
 * tune the watchdog; `bootRetryMs` the waits before each new try of a boot that failed (a
 * download cut short); `growTable: n` grows the runtime's wasm function table by n entries before the
 * snapshot check (a runtime whose table cannot take the snapshot, as WebKit's).
 * `window.__KIBITZ_BOOT__ = "plain"` boots without the memory snapshot. */
const FLAGS = Object.freeze({ pingMs: 1000, hangMs: 8000, bootHangMs: 60000, bootRetryMs: [1000, 3000],
  ...(globalThis.__KIBITZ_ENGINE__ || {}) });

/** Whether the page has the engine's build snapshot to offer (the UI sizes its progress from it). */
function snapshotInfo() {
  if (!BUILD.snapshot) return null;
  if (globalThis.__KIBITZ_BOOT__ === "plain") return null;
  return BUILD.snapshot;
}

const fetchWatchers = new Set();
/** Engine files the engine has fetched (its Worker's requests are not in this page's Resource
 * Timing); `cb(names)` for each batch. Returns the unsubscribe. */
function engineFetches(cb) {
  fetchWatchers.add(cb);
  return () => fetchWatchers.delete(cb);
}

const BRIDGE_OPS = new Set(["new", "call", "get", "set", "on", "off", "drop"]);

function createEngine() {
  let port = null;
  let worker = null;
  let bridge = null;
  let where = null; // "worker" | "page"
  let state = "idle"; // idle → booting → ready; failed (boot) or stopped (crash/hang) → booting again
  let booted = null;
  let settle = null;
  const mounts = new Map();
  const calls = new Map();
  let nextCall = 0;
  let pingTimer = null;
  let unanswered = null; // performance.now() of the oldest ping not answered yet
  let generation = 0;
  let bootTries = 0; // failed boots of this start() retried so far
  let retryBoot = null; // a fresh Worker, as start() makes one

  /** The engine host in a module Worker made from its own source (widget.js's origin does not
   * matter: a blob has the page's), or, with `inPage` or where no Worker can start, on this thread
   * behind a MessageChannel. */
  function spawn(inPage) {
    const workerFlags = { boot: globalThis.__KIBITZ_BOOT__ === "plain" ? "plain" : null,
      growTable: FLAGS.growTable || 0 };
    if (!inPage && typeof Worker === "function") {
      try {
        const args = `${JSON.stringify(BUILD)}, ${JSON.stringify(SERVER)}, ${JSON.stringify(workerFlags)}`;
        const source = `(${kibitzEngineHost})(self, ${args});\n`;
        const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
        const w = new Worker(url, { type: "module", name: "kibitz-engine" });
        return { kind: "worker", port: w, worker: w, url, hello: false };
      } catch (err) {
        console.warn(`Kibitz: no Worker for the engine here (${err && err.message}); running it on the page`);
      }
    }
    const channel = new MessageChannel();
    kibitzEngineHost(channel.port2, BUILD, SERVER, workerFlags);
    return { kind: "page", port: channel.port1, worker: null, url: null, hello: true };
  }

  function start() {
    if (state === "booting" || state === "ready") return booted;
    const unsupported = browserSupport(globalThis);
    if (unsupported) {
      state = "failed";
      booted = Promise.reject(new Error(unsupported));
      booted.catch(() => {});
      return booted;
    }
    state = "booting";
    bootTries = 0;
    booted = new Promise((resolve, reject) => { settle = { resolve, reject }; });
    booted.catch(() => {});
    timings.bootPath = null;
    const begin = (made) => {
      const gen = ++generation;
      where = made.kind;
      worker = made.worker;
      port = made.port;
      const send = (msg, transfer) => port.postMessage(msg, transfer || []);
      bridge = createPageBridge(send, pageShim, { relay: !!FLAGS.relay || where === "page",
        certificate: () => (pageCert ? pageCert.cert : null) });
      // Silence for the audio placeholders is written by the engine, off this thread (page-shim.js).
      pageShim.pump = (writable) => { try { port.postMessage({ k: "pump", writable }, [writable]); } catch (_) { /* none */ } };
      port.onmessage = (e) => { if (gen === generation) onEngine(e.data, made); };
      if (!worker) return;
      worker.onerror = (e) => {
        if (gen !== generation) return;
        e.preventDefault();
        if (!made.hello && state === "booting") { // the Worker never ran (a strict CSP, say): run it here
          console.warn("Kibitz: the engine's Worker could not start; running the engine on the page");
          worker.terminate();
          if (made.url) URL.revokeObjectURL(made.url);
          begin(spawn(true));
        } else {
          console.error("Kibitz: the engine's Worker reported an error:", e.message);
        }
      };
    };
    retryBoot = () => { begin(spawn(where === "page")); startWatchdog(); };
    begin(spawn(!!FLAGS.inPage));
    startWatchdog();
    return booted;
  }

  function onEngine(m, made) {
    if (typeof m === "string") {
      let msg;
      try { msg = JSON.parse(m); } catch (err) { console.warn("Kibitz: unreadable engine message", err); return; }
      if (BRIDGE_OPS.has(msg.t)) bridge.receive(msg);
      else if (msg.t === "done") {
        const c = calls.get(msg.id);
        if (!c) return;
        calls.delete(msg.id);
        if (msg.ok) c.resolve(bridge.fromWire(msg.v));
        else c.reject(engineError(msg.e));
      } else if (msg.t === "emit") {
        const rec = mounts.get(msg.mount);
        if (rec) rec.emit(msg.event, bridge.fromWire(msg.args || []));
      } else if (msg.t === "refused") {
        const rec = mounts.get(msg.mount);
        if (rec) rec.refused(msg.peer, msg.reason);
      }
      return;
    }
    if (Array.isArray(m)) {
      if (m[0] === "m") { const rec = mounts.get(m[1]); if (rec) rec.message(m[2], m[3]); }
      else if (m[0] === "r") bridge.relaySend(m[1], m[2]);
      return;
    }
    switch (m && m.k) {
      case "hello":
        made.hello = true;
        if (made.url) { URL.revokeObjectURL(made.url); made.url = null; }
        break;
      case "fetched": for (const cb of [...fetchWatchers]) { try { cb(m.names); } catch (_) { /* a watcher */ } } break;
      case "booted": {
        const t = m.timings;
        for (const key of ["restoreStart", "snapshotAt", "restoredAt"]) if (typeof t[key] === "number") t[key] -= performance.timeOrigin;
        Object.assign(timings, t, { engineIn: where });
        state = "ready";
        unanswered = null;
        settle.resolve();
        break;
      }
      case "failed": {
        stopWorker();
        // A download cut short (the network changed under the page, a proxy hiccup) fails a boot
        // that a fresh Worker, with a fresh module map, would finish: try again, a bounded number
        // of times. A fatal failure (a package missing from the build) would only fail again.
        const wait = m.fatal ? undefined : FLAGS.bootRetryMs[bootTries];
        if (wait !== undefined) {
          bootTries++;
          console.warn(`Kibitz: the call engine failed to start (${engineError(m.error).message}); ` +
            `trying again in ${wait / 1000} s`);
          setTimeout(() => { if (state === "booting") retryBoot(); }, wait);
          break;
        }
        state = "failed";
        settle.reject(engineError(m.error, m.fatal));
        break;
      }
      case "opened": {
        const rec = mounts.get(m.id);
        if (rec && rec.opening) {
          const o = rec.opening;
          rec.opening = null;
          if (m.error) o.reject(engineError(m.error)); else o.resolve(m);
        }
        break;
      }
      case "pong": unanswered = null; break;
      case "py": {
        const c = calls.get(m.id);
        if (c) { calls.delete(m.id); if (m.ok) c.resolve(m.v); else c.reject(engineError(m.e)); }
        break;
      }
      default: break;
    }
  }

  function engineError(e, fatal) {
    const [name, message] = Array.isArray(e) ? e : ["Error", String(e)];
    const err = new Error(String(message || name));
    err.name = String(name || "Error");
    if (fatal) err.kibitzFatal = true;
    return err;
  }

  // ---- crash and hang: the page keeps running, the widget says so and can restart the engine

  /** Ping the engine every `pingMs`; no answer to a ping for `hangMs` once it is up (`bootHangMs`
   * while it boots: a cold plain boot on a loaded machine takes a while) means it is gone. The
   * Worker's thread answers between its tasks, so only a real hang or a dead Worker trips this. */
  function startWatchdog() {
    clearInterval(pingTimer);
    unanswered = null;
    let n = 0;
    pingTimer = setInterval(() => {
      const now = performance.now();
      const limit = state === "ready" ? FLAGS.hangMs : FLAGS.bootHangMs;
      if (unanswered !== null && now - unanswered > limit) {
        stopped(state === "ready" ? "the call engine stopped responding" : "the call engine stopped responding while it started");
        return;
      }
      if (unanswered === null) unanswered = now;
      port.postMessage({ k: "ping", n: ++n });
    }, FLAGS.pingMs);
  }

  function stopWorker() {
    clearInterval(pingTimer);
    pingTimer = null;
    if (worker) worker.terminate();
    worker = null;
    if (port && where === "page") port.close();
    generation++;
  }

  /** The engine is gone (killed, crashed, hung): free what it held on the page, fail what waits. */
  function stopped(reason) {
    if (state !== "ready" && state !== "booting") return;
    const wasReady = state === "ready";
    state = wasReady ? "stopped" : "failed";
    stopWorker();
    if (bridge) bridge.closeAll(true);
    const err = new Error(`Kibitz: ${reason}`);
    for (const c of calls.values()) c.reject(err);
    calls.clear();
    if (!wasReady) { settle.reject(err); return; }
    for (const rec of mounts.values()) rec.stopped(reason);
  }

  function post(msg) {
    if (state !== "ready" && state !== "booting") return false;
    port.postMessage(msg);
    return true;
  }

  return {
    get state() { return state; },
    get where() { return where; },
    get bridge() { return bridge; },
    start,
    /** Open `rec`'s session (booting the engine first if need be); resolves with the open's timings.
     * The engine starts in a task of its own: the script that mounts (and draws the launcher) stays
     * short, and the launcher is up before the Worker is made. */
    open(rec) {
      mounts.set(rec.id, rec);
      const begun = state === "idle" ? new Promise((r) => setTimeout(r, 0)).then(start) : start();
      // This page's certificate (IndexedDB) is read while the engine boots; the engine learns its
      // fingerprint (identity tokens are bound to it), every peer connection presents it.
      return Promise.all([begun, kibitzCertificate()]).then(([, cert]) => new Promise((resolve, reject) => {
        pageCert = cert;
        rec.cfg.certFingerprint = cert ? cert.fp : null;
        rec.cfg.readsRemoteCertificates = KBZ_READS_REMOTE_CERTS;
        rec.opening = { resolve, reject };
        post({ k: "mount", id: rec.id, cfg: rec.cfg });
      }));
    },
    close(id) {
      mounts.delete(id);
      post({ k: "close", id });
    },
    call(id, method, args) {
      if (state !== "ready") return Promise.reject(new Error(`Kibitz: ${method}() while the call engine is ${state}`));
      return new Promise((resolve, reject) => {
        const callId = ++nextCall;
        calls.set(callId, { resolve, reject });
        post(JSON.stringify({ t: "ctl", mount: id, id: callId, m: method, args: bridge.toWire(args) }));
      });
    },
    send: post,
    /** One of the engine's page-facing functions that need no mount (worker_host.FUNCTIONS). */
    fn(name, args) {
      return start().then(() => new Promise((resolve, reject) => {
        const callId = ++nextCall;
        calls.set(callId, { resolve, reject });
        post(JSON.stringify({ t: "fn", id: callId, name, args }));
      }));
    },
    py(code, isAsync) {
      return start().then(() => new Promise((resolve, reject) => {
        const callId = ++nextCall;
        calls.set(callId, { resolve, reject });
        post({ k: "py", id: callId, code, async: !!isAsync });
      }));
    },
    hide() {
      if (state !== "ready") return;
      post({ k: "hide" });
      bridge.closeAll(false); // now, not when the engine gets to it: the bfcache decides right away
    },
    /** Test hook: stop the Worker as a crash would (the watchdog notices). */
    kill() { if (worker) worker.terminate(); else if (port) port.close(); },
    /** A fresh engine after a crash or hang; every mount it stopped opens again and rejoins. */
    async restart() {
      await start();
      await Promise.all([...mounts.values()].map((rec) => rec.resume()));
    },
  };
}

let pageCert = null; // { cert, fp } once widget/identity.js has it
const engine = createEngine();
addEventListener("pagehide", () => engine.hide());

// ---- refusing what the engine would refuse, at once (the engine checks again)

const LIMITS = BUILD.limits;
const LONE_SURROGATE = /(?<!\\)(?:\\\\)*\\u[dD][89a-fA-F][0-9a-fA-F]{2}/;
const utf8Length = (text) => {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : c >= 0xd800 && c <= 0xdbff ? (i++, 4) : 3;
  }
  return n;
};

/** Why the engine would refuse app data `text` (its JSON) from this mount, or null. `policy` is the
 * engine's last word on what this participant may send and to whom (PageSession.send_policy). */
function sendRefusal(text, data, policy, doing, peer) {
  // JSON.stringify writes a lone surrogate as an escape (\udXXX); a paired one never.
  if (text.includes("\\u") && LONE_SURROGATE.test(text)) {
    return "app data holds a lone surrogate (text that is not valid UTF-16 cannot be sent)";
  }
  if (text.length * 3 > LIMITS.maxAppBytes) {
    const size = utf8Length(text);
    if (size > LIMITS.maxAppBytes) return `app data of ${size} bytes exceeds ${LIMITS.maxAppBytes}`;
  }
  if (!policy) return null;
  if (!policy.send) return `this participant may not ${doing}: its grant lacks send-chat`;
  if (!policy.act && data !== null && typeof data === "object" && data[LIMITS.agentEnvelope] === "act") {
    return "this participant may not act: its grant lacks act";
  }
  if (peer !== undefined) {
    if (!Object.prototype.hasOwnProperty.call(policy.peers, peer)) return `'${peer}' is not in the room`;
    if (policy.peers[peer]) return policy.peers[peer];
  }
  return null;
}

// ---- the controller

const mounted = new Set();
let nextMount = 0;

function mount(options) {
  const cfg = validate(options);
  const id = ++nextMount;
  const listeners = new Map([...EVENTS].map((e) => [e, new Set()]));
  let state = { ...STATE_DEFAULTS };
  let participants = [];
  let knocks = [];
  let chat = [];
  let policy = null; // what the engine says this mount may send, and to whom
  let open = false; // a session is open in the engine
  let closed = false;
  let dropped = 0;
  let refusedLate = 0;

  const fire = (event, ...args) => {
    for (const cb of [...(listeners.get(event) || [])]) {
      try { cb(...args); } catch (err) { console.error(`Kibitz: a '${event}' listener threw`, err); }
    }
  };

  // What the engine tells this mount (see PageSession.emit). Values arrive as plain JS; page
  // objects (a participant's MediaStream) arrive as themselves.
  const rec = {
    id, cfg, opening: null,
    emit(event, [a, b]) {
      if (closed) return;
      if (event === "state") { state = { ...STATE_DEFAULTS, ...a }; fire("state", { ...state }); }
      else if (event === "participants") { participants = a || []; fire("participants", participants.slice()); }
      else if (event === "knocks") { knocks = a || []; fire("knocks", knocks.slice()); }
      else if (event === "policy") policy = a;
      else if (event === "chat") {
        if (a === null || a === undefined) chat = []; else chat.push(a);
        fire("chat", a === undefined ? null : a);
      } else fire(event, a, b);
    },
    message(text, from) {
      if (closed) return;
      let data;
      try { data = decodeData(text); } catch (err) { console.warn("Kibitz: undecodable message dropped", err); return; }
      fire("message", data, from);
    },
    refused(peer, reason) {
      refusedLate += 1;
      console.warn(`Kibitz: the engine refused ${peer === "*" ? "a broadcast" : `a sendTo(${peer})`}: ${reason}`);
    },
    /** After the engine restarted: open again (once), rejoining if this mount was in the call. */
    resume() {
      if (closed || !resumeAs) return Promise.resolve();
      const was = resumeAs;
      resumeAs = null;
      return reopen(was).then(() => fire("engine", { state: "ready" }));
    },
    stopped(reason) {
      if (closed) return;
      open = false;
      resumeAs = { inCall: !!state.inCall, mic: !!state.micOn, cam: !!state.camOn };
      state = { ...STATE_DEFAULTS };
      participants = [];
      policy = null;
      fire("state", { ...state });
      fire("participants", []);
      fire("engine", { state: "stopped", reason });
      if (ui && ui.setState) ui.setState("stopped", reason);
    },
  };

  const openSession = async () => {
    const opened = await engine.open(rec);
    if (closed) { engine.close(id); throw new Error("Kibitz: unmounted before the engine was ready"); }
    open = true;
    return opened;
  };

  const ready = (async () => {
    const opened = await openSession();
    timings.signalMs = opened.signalMs;
    timings.openMs = opened.openMs;
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
    return engine.call(id, method, args);
  };

  /** Open a fresh session in the engine (after the back/forward cache, or a restarted engine) and,
   * if this mount was in the call, join again with the same microphone and camera. */
  let resumeAs = null;
  const reopen = async (was) => {
    open = false;
    await openSession();
    if (ui && ui.setState) ui.setState("ready", "Kibitz call: open");
    fire("resume", { rejoined: was.inCall });
    if (was.inCall) await engine.call(id, "join", [{ mic: was.mic, cam: was.cam }]);
  };

  const controller = {
    ready,
    get timings() { return { ...timings }; },
    get options() { return { ...cfg }; },
    unmount() {
      if (closed) return;
      closed = true;
      if (open) engine.close(id);
      open = false;
      removeEventListener("pagehide", onHide);
      removeEventListener("pageshow", onShow);
      mounted.delete(controller);
      if (ui && ui.remove) ui.remove();
      for (const set of listeners.values()) set.clear();
    },
    broadcast(data) {
      const text = encodeData(data); // throws for values that cannot be sent, like postMessage
      if (!open || closed || !state.inCall) { dropped += 1; return; } // a no-op until in the call
      const refused = sendRefusal(text, data, policy, "broadcast");
      if (refused) throw new Error(`Kibitz: broadcast refused: ${refused}`);
      engine.send(["b", id, text]);
    },
    sendTo(to, data) {
      const text = encodeData(data);
      if (!open || closed || !state.inCall) { dropped += 1; return; }
      const refused = sendRefusal(text, data, policy, "send", String(to));
      if (refused) throw new Error(`Kibitz: sendTo(${to}) refused: ${refused}`);
      engine.send(["s", id, String(to), text]);
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
    get refusedByEngine() { return refusedLate; },
    /** After the engine stopped (the "engine" event, or the widget's button): a fresh engine, this
     * mount's session again, and the call rejoined if it was in one. The page never reloads. */
    async restartEngine() {
      if (closed) throw new Error("Kibitz: restartEngine() after unmount()");
      if (open) return;
      if (!resumeAs) resumeAs = { inCall: false, mic: false, cam: false };
      const was = resumeAs;
      if (ui && ui.setState) ui.setState("loading", "Restarting the call engine");
      try {
        await engine.restart(); // every stopped mount of this page comes back, this one included
      } catch (err) {
        resumeAs = resumeAs || was;
        if (ui && ui.setState) ui.setState("stopped", err.message);
        throw err;
      }
    },
  };
  for (const method of ENGINE_METHODS) controller[method] = (...args) => callEngine(method, args);
  // Sign-in draws on this page (an element cannot go to the engine); the engine gives the plan
  // (provider, nonce, room) and checks the token it ends with.
  controller.signInIdentity = async (el, method) => {
    if (!el || typeof el.replaceChildren !== "function") {
      throw new TypeError("Kibitz: signInIdentity(el, method) needs an element to draw the sign-in into");
    }
    const plan = await callEngine("signInIdentity", [method || "auto"]);
    return drawSignIn(el, plan, (jwt) => callEngine("provideIdentityToken", [jwt]), SERVER);
  };
  // The engine cannot see this page's address: the invite is made from the address as it is now.
  controller.createInviteLink = () => callEngine("createInviteLink", [location.href]);
  /** Hide my IP: every connection through the relay (or none). Applied by reopening the session
   * (and rejoining if this mount was in the call). */
  controller.setRelayOnly = async (on) => {
    if (cfg.relayOnly === !!on) return;
    cfg.relayOnly = !!on;
    if (state.relayOnly !== undefined) { state = { ...state, relayOnly: !!on }; fire("state", { ...state }); }
    if (cfg.preview || !open || closed) return;
    await reopen({ inCall: !!state.inCall, mic: !!state.micOn, cam: !!state.camOn });
  };

  // The back/forward cache: pagehide says goodbye and closes the session (the others drop this tab
  // at once; the engine client also closes the page's peer connections itself); when the browser
  // shows the page again from the cache, open a fresh session with the same options (ICE servers
  // fetched again: TURN credentials are short-lived) and, if this tab was in the call, join again.
  let hidden = null;
  const onHide = () => { hidden = { inCall: !!state.inCall, mic: !!state.micOn, cam: !!state.camOn }; open = false; };
  const onShow = async (ev) => {
    if (!ev.persisted || closed || !hidden) return;
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
  try {
    const made = JSON.parse(await engine.fn("create_room_json", [JSON.stringify(options || {}), location.href]));
    made.mintInvite = (name, ttl) => mintInvite(made, name, ttl);
    return made;
  } catch (err) {
    throw new Error(`Kibitz.createRoom: ${err.message}`);
  }
}

/** Kibitz.mintInvite(room, name, ttlSeconds): an invite for one guest to an invite-gated room made
 * by createRoom (`room` holds its room, joinGate, link and inviteKey): resolves to { token, link }. */
async function mintInvite(room, name, ttl) {
  const { room: id, joinGate, link, inviteKey } = room || {};
  try {
    return JSON.parse(await engine.fn("mint_invite_json",
      [JSON.stringify({ room: id, joinGate, link, inviteKey }), String(name), Number(ttl)]));
  } catch (err) {
    throw new Error(`Kibitz.mintInvite: ${err.message}`);
  }
}

// ---- window.Kibitz and the one-liner

if (!(window.Kibitz && window.Kibitz.__kibitz)) {
  window.Kibitz = {
    __kibitz: true,
    version: BUILD.version,
    mount,
    createRoom,
    mintInvite,
    server: SERVER,
    get timings() { return { ...timings }; },
    auto: null,
    /** The engine, for diagnostics and tests: resolves once it has booted. `runPython(code)` and
     * `runPythonAsync(code)` run in the engine and resolve with the result as a plain value
     * (`globals.set(name, value)` hands them a plain value first);
     * `ref(obj)` gives a page object a handle Python can take (`page_bridge().ref(h)`);
     * `terminate()` stops the engine's Worker as a crash would. */
    _engine: () => engine.start().then(() => ({
      where: engine.where,
      runPython: (code) => engine.py(code, false),
      runPythonAsync: (code) => engine.py(code, true),
      /** `globals.set(name, value)`: a plain value (structured-clone) as a Python global. */
      globals: { set: (name, value) => engine.send({ k: "pyset", name: String(name), value }) },
      ref: (obj) => engine.bridge.handleOf(obj),
      terminate: () => engine.kill(),
      get relaying() { return engine.bridge.relaying; },
      get liveHandles() { return engine.bridge.live; },
    })),
  };
}
if (SCRIPT && SCRIPT.dataset && SCRIPT.dataset.room !== undefined) {
  try {
    window.Kibitz.auto = window.Kibitz.mount({ room: SCRIPT.dataset.room, name: SCRIPT.dataset.name || "" });
  } catch (err) {
    console.error(err);
  }
}
