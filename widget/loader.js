// window.Kibitz: mount() returns a controller at once and draws the launcher synchronously; the
// Python engine (Pyodide + the kibitz wheel) boots in the background, from the server that served
// this very script, so an embedding page on another origin needs no configuration.

const BUILD = /*__KIBITZ_BUILD__*/null;
const T_SCRIPT = performance.now();
const SCRIPT = document.currentScript; // only readable now, while this script first runs
const timings = { scriptStart: T_SCRIPT, launcherShown: null, engineReady: null, bootMs: null };
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
const EVENTS = new Set(["participants", "join", "leave", "speaking", "state", "knocks", "lobby", "message"]);
const KNOWN_OPTIONS = new Set(["room", "name", "startOpen", "preview", "headless", "identity", "meta",
  "signalHost", "turnHost", "licenseKey", "grant", "joinGate", "joinCredential", "apiBase"]);
// Controller methods that run in the engine; each returns a promise that settles once it has.
const ENGINE_METHODS = ["join", "leave", "toggleMic", "toggleCam", "shareScreen", "shareTrack", "stopShare",
  "setName", "setAvatar", "setMeta", "setLobby", "admit", "deny", "remove", "setLocked", "resetRoom", "knock",
  "getCapabilityGrant", "setCapabilityGrant", "getAgentAudit", "signInIdentity", "identityNonce",
  "provideIdentityToken"];

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

function validate(options) {
  if (!options || typeof options !== "object") {
    throw new TypeError("Kibitz.mount(options): options must be an object, e.g. { room: 'room-3f9k2mq7p1' }");
  }
  const { room } = options;
  if (typeof room !== "string" || !room.trim()) {
    throw new Error("Kibitz.mount: `room` is required — pass an unguessable id, e.g. " +
      "{ room: 'room-' + crypto.randomUUID().slice(0, 8) }");
  }
  if (!normalizeRoom(room)) throw new Error(`Kibitz.mount: room ${JSON.stringify(room)} has no letters or digits`);
  if (options.name !== undefined && typeof options.name !== "string") throw new TypeError("Kibitz.mount: `name` must be a string");
  if (options.meta !== undefined && (options.meta === null || typeof options.meta !== "object")) {
    throw new TypeError("Kibitz.mount: `meta` must be an object");
  }
  for (const key of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(key)) console.warn(`Kibitz.mount: unknown option ${JSON.stringify(key)} ignored`);
  }
  const cfg = {
    room, name: options.name || "", startOpen: !!options.startOpen, preview: !!options.preview,
    headless: !!options.headless, identity: options.identity || null, meta: options.meta || {},
    licenseKey: options.licenseKey || null, grant: options.grant || null, joinGate: options.joinGate || null,
    joinCredential: options.joinCredential || null, signalHost: options.signalHost || null,
    turnHost: options.turnHost || null,
    server: SERVER,
    signalBase: baseUrl(options.signalHost, SERVER),
    turnBase: baseUrl(options.turnHost, SERVER),
    apiBase: baseUrl(options.apiBase, SERVER),
  };
  return cfg;
}

// ---- the engine (one Pyodide per page, shared by every mount)

let enginePromise = null;

function bootEngine() {
  if (enginePromise) return enginePromise;
  enginePromise = (async () => {
    const t0 = performance.now();
    const runtime = SERVER + BUILD.pyodide;
    const { loadPyodide } = await import(runtime + "pyodide.mjs");
    const pyodide = await loadPyodide({
      indexURL: runtime,
      lockFileURL: SERVER + BUILD.lock,
      packageBaseUrl: SERVER + BUILD.packages,
      packages: BUILD.preload,
      stdout: (s) => console.debug("[kibitz]", s),
      stderr: (s) => console.warn("[kibitz]", s),
    });
    // loadPackage never rejects on a failed download: check what really arrived.
    const missing = BUILD.expect.filter((n) => !(n in pyodide.loadedPackages));
    if (missing.length) {
      throw new Error(`Kibitz: engine packages failed to load: ${missing.join(", ")} ` +
        `(from ${SERVER + BUILD.packages}; the console shows the failed requests)`);
    }
    pyodide.registerJsModule("kibitz_shim", shim);
    const browser = pyodide.pyimport("kibitz.backends.browser");
    timings.bootMs = performance.now() - t0;
    return { pyodide, browser };
  })();
  enginePromise.catch(() => { enginePromise = null; }); // a later mount may retry
  return enginePromise;
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
  let session = null; // PyProxy of kibitz.backends.browser.PageSession
  let sessionCall = null;
  let closed = false;
  let dropped = 0;

  const fire = (event, ...args) => {
    for (const cb of [...(listeners.get(event) || [])]) {
      try { cb(...args); } catch (err) { console.error(`Kibitz: a '${event}' listener threw`, err); }
    }
  };

  // What Python calls to reach the page (see PageSession.emit).
  const emit = (event, a, b) => {
    if (closed) return;
    a = fromPy(a); b = fromPy(b);
    if (event === "state") { state = { ...state, ...a }; fire("state", { ...state }); }
    else if (event === "participants") { participants = a || []; fire("participants", participants.slice()); }
    else if (event === "knocks") { knocks = a || []; fire("knocks", knocks.slice()); }
    else fire(event, a, b);
  };

  const ui = cfg.headless ? null : createLauncher({
    startOpen: cfg.startOpen,
    onShown() {
      if (timings.launcherShown === null) { timings.launcherShown = performance.now(); mark("kibitz:launcher"); }
    },
  });

  const ready = (async () => {
    const { browser } = await bootEngine();
    if (closed) throw new Error("Kibitz: unmounted before the engine was ready");
    session = browser.open_session(JSON.stringify(cfg), emit);
    sessionCall = session.call;
    if (timings.engineReady === null) { timings.engineReady = performance.now(); mark("kibitz:ready"); }
    if (ui) ui.setState("ready", "Kibitz call: open");
  })();
  ready.catch((err) => {
    if (closed) return;
    console.error(err);
    if (ui) ui.setState("error", `Kibitz call failed to start: ${err.message}`);
  });

  const callEngine = async (method, args) => {
    await ready;
    if (closed) throw new Error(`Kibitz: ${method}() after unmount()`);
    return fromPy(await sessionCall(method, args));
  };

  const controller = {
    ready,
    get timings() { return { ...timings }; },
    unmount() {
      if (closed) return;
      closed = true;
      mounted.delete(controller);
      if (ui) ui.remove();
      if (session) {
        try { session.close(); } catch (err) { console.error("Kibitz: close failed", err); }
        if (sessionCall) sessionCall.destroy();
        session.destroy();
        session = sessionCall = null;
      }
      for (const set of listeners.values()) set.clear();
    },
    broadcast(data) {
      if (!session || closed) { dropped += 1; return; } // no-op until the data link is up
      sessionCall("broadcast", [data]).then(fromPy, (err) => console.error("Kibitz: broadcast failed", err));
    },
    sendTo(id, data) {
      if (!session || closed) { dropped += 1; return; }
      sessionCall("sendTo", [id, data]).then(fromPy, (err) => console.error("Kibitz: sendTo failed", err));
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
    get droppedBeforeReady() { return dropped; },
  };
  for (const method of ENGINE_METHODS) controller[method] = (...args) => callEngine(method, args);
  mounted.add(controller);
  return controller;
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
  };
}
if (SCRIPT && SCRIPT.dataset && SCRIPT.dataset.room !== undefined) {
  try {
    window.Kibitz.auto = window.Kibitz.mount({ room: SCRIPT.dataset.room, name: SCRIPT.dataset.name || "" });
  } catch (err) {
    console.error(err);
  }
}
