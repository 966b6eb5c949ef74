// The widget's DOM: a host element on document.body holding a *closed* shadow root, so the page's
// styles and scripts cannot reach in and ours cannot leak out. The corner launcher is drawn
// synchronously at mount, before Python boots; the call panel (tiles, controls, chat) is built on
// first open and driven ONLY through the public controller (getState, getParticipants, on(...),
// join, toggleMic...), so everything it does a headless embedder can do too.
//
// Contract with loader.js: `createLauncher({ startOpen, preview, onShown, controller })` →
// { host, setState(state, label), remove(), bind(controller, options) }. The mount options come
// from `controller.options` (else from opts); loader.js calls setState("ready" | "error", label) as
// the engine boots. `bind` is idempotent (one controller per launcher).
// The CSS lives in widget/ui.css.js (UI_CSS), bundled before this file.
//
// Test-only: `<script src=".../widget.js" data-kibitz-test>` attaches the shadow root *open*, so
// Playwright's role/label locators can reach in. Nothing else changes.

const UI_SCRIPT = document.currentScript;
const UI_TEST_OPEN = !!(UI_SCRIPT && UI_SCRIPT.hasAttribute && UI_SCRIPT.hasAttribute("data-kibitz-test"));
const UI_SERVER = UI_SCRIPT && UI_SCRIPT.src ? new URL(".", UI_SCRIPT.src).href : location.origin + "/";
const CHAT_MAX = 500;
const CHAT_KEEP = 50;

const ICONS = {
  mic: '<rect x="9" y="3" width="6" height="11" rx="3"/><path d="M5 11a7 7 0 0 0 14 0"/><path d="M12 18v3"/>',
  micOff: '<path d="M3 3l18 18"/><path d="M9 9v2a3 3 0 0 0 5 2.2M15 10V6a3 3 0 0 0-5.8-1"/>' +
    '<path d="M5 11a7 7 0 0 0 11.5 5.4M19 11a7 7 0 0 1-.6 2.8"/><path d="M12 18v3"/>',
  cam: '<rect x="3" y="6" width="13" height="12" rx="2"/><path d="M16 10l5-3v10l-5-3z"/>',
  camOff: '<path d="M3 3l18 18"/><path d="M16 16v0a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2V8a2 2 0 0 1 2-2h1"/>' +
    '<path d="M10 6h4a2 2 0 0 1 2 2v2l5-3v10"/>',
  screen: '<rect x="3" y="4" width="18" height="12" rx="2"/><path d="M8 20h8M12 16v4"/>',
  leave: '<path d="M10 14a9 9 0 0 1-6-2l-1 3 3 2c2-1 4-1 4-3zM14 14a9 9 0 0 0 6-2l1 3-3 2c-2-1-4-1-4-3z"/>' +
    '<path d="M4 12c5-4 11-4 16 0"/>',
  link: '<path d="M10 14a4 4 0 0 0 5.7 0l3-3a4 4 0 0 0-5.7-5.7l-1 1"/><path d="M14 10a4 4 0 0 0-5.7 0l-3 3a4 4 0 0 0 5.7 5.7l1-1"/>',
  close: '<path d="M6 6l12 12M18 6L6 18"/>',
  send: '<path d="M4 12l16-8-6 16-2-7z"/>',
};

function icon(name, size) {
  const s = size || 20;
  return `<svg viewBox="0 0 24 24" width="${s}" height="${s}" aria-hidden="true" fill="none" ` +
    `stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">${ICONS[name]}</svg>`;
}

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "html") el.innerHTML = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) el.append(c);
  return el;
}

function initials(name) {
  const words = String(name || "").trim().split(/\s+/).filter(Boolean);
  if (!words.length) return "?";
  const first = [...words[0]][0] || "";
  const last = words.length > 1 ? [...words[words.length - 1]][0] || "" : "";
  return (first + last).toUpperCase();
}

function hue(id) {
  let x = 0;
  for (const ch of String(id)) x = (x * 31 + ch.charCodeAt(0)) >>> 0;
  return x % 360;
}

/**
 * Bind a MediaStream to a media element: a *callback*, run every time an element is (re)created
 * and on every roster change, never an effect keyed on the stream. Camera toggles change a stream's
 * tracks in place, so its identity never changes; a freshly mounted <video> must still get it.
 */
function bindStream(el, stream) {
  const want = stream || null;
  if (el.srcObject !== want) el.srcObject = want;
  if (want && el.paused) {
    const p = el.play();
    if (p && p.catch) p.catch(() => { /* autoplay refused: the next user gesture retries */ });
  }
}

/** What went wrong, in words, with what to do next. `what` is the action that failed. */
function explain(err, what) {
  const name = (err && err.name) || "";
  const msg = errorText(err);
  if (/Hide my IP is on/.test(msg)) return relayAdvice(msg);
  const device = what === "cam" ? "camera" : what === "mic" ? "microphone" : what === "screen" ? "screen" : "";
  if (/NotAllowed|Permission|denied/i.test(name + " " + msg)) {
    if (what === "screen") return "Screen sharing was cancelled or blocked. Press Share screen to try again.";
    if (device) {
      return `${device === "camera" ? "Camera" : "Microphone"} access is blocked. Allow the ${device} in your ` +
        `browser's site settings (the icon left of the address), then press the ${device} button again.`;
    }
  }
  if (/NotFound|no (camera|microphone|device)/i.test(name + " " + msg) && device) {
    return `No ${device} was found. Connect one, then press the ${device} button again.`;
  }
  if (/NotReadable|in use|busy/i.test(name + " " + msg) && device) {
    return `Your ${device} is in use by another app. Close that app, then press the ${device} button again.`;
  }
  if (/\bfull\b/i.test(msg)) return "This room is full. Try again later, or start a new room and share its link.";
  if (/\blocked\b/i.test(msg)) return "This room is locked. Ask the host to unlock it, then press Join again.";
  if (/broker|signal|websocket|unreachable|ECONNREFUSED|network|failed to fetch/i.test(msg)) {
    return "Can't reach the call server. Check your internet connection; the call retries on its own.";
  }
  if (/not available in this build/i.test(msg)) return `${msg}. Update the page's widget.js to use this.`;
  const label = { cam: "Camera", mic: "Microphone", screen: "Screen share", join: "Joining", leave: "Leaving",
    name: "Renaming", chat: "Sending", code: "Sending the code", host: "That host action",
    grant: "Changing the agent's permissions" }[what] || "That";
  return `${label} failed: ${msg || "unknown error"}. Try again; if it keeps failing, reload the page.`;
}

/** Relay only and no relay: say why, and the two ways forward. */
function relayAdvice(msg) {
  return `${msg.replace(/\.$/, "")}. Nothing was sent to anyone. Turn off Hide my IP to connect directly ` +
    "(people in the call can then see your IP address), or use a relay licence.";
}

// "Hide my IP", per browser (this origin's localStorage): read by the loader at mount, so the
// first connection already goes through the relay.
const HIDE_IP_KEY = "kibitz:hideIp";
function hideIpStored() {
  try { return localStorage.getItem(HIDE_IP_KEY) === "1"; } catch (_) { return false; }
}
function storeHideIp(on) {
  try { localStorage.setItem(HIDE_IP_KEY, on ? "1" : "0"); } catch (_) { /* storage blocked: this page only */ }
}

/** An error's own words: a Python traceback (PythonError) shrinks to its last line, minus the class. */
function errorText(err) {
  let msg = String((err && err.message) || err || "").trim();
  if (/Traceback \(most recent call last\)/.test(msg)) {
    const lines = msg.split("\n").map((l) => l.trim()).filter(Boolean);
    msg = lines[lines.length - 1] || msg;
  }
  return msg.replace(/^[A-Za-z_.]*(Error|Exception):\s*/, "").replace(/^Kibitz:\s*/, "").replace(/\.$/, "");
}

function formatMB(bytes) {
  return (bytes / 1048576).toFixed(bytes < 10485760 ? 1 : 0) + " MB";
}

/**
 * Watch the engine's downloads (Pyodide runtime + the snapshot and its assets, or the wheels on a
 * plain boot) through Resource Timing, weighted by the sizes in the server's manifest.json: the
 * loader offers no progress hook, and cross-origin resource entries carry no byte counts, so the
 * manifest gives each finished file its weight.
 */
function watchProgress(onProgress) {
  const sizes = new Map();
  const seen = new Set();
  let total = 0;
  const fromSnapshot = !!snapshotInfo();
  // The snapshot boot mounts its own standard library (under assets/); .br/.gz are the server's
  // compressed copies of the files beside them, not files of their own.
  const isEngine = (path) => !/\.(br|gz)$/.test(path) &&
    (/^pyodide-[^/]+\/(pyodide\.asm\.(wasm|mjs)|pyodide\.mjs)$/.test(path) ||
     (fromSnapshot ? /^assets\//.test(path) : /^pyodide-[^/]+\/python_stdlib\.zip$|^wheels\/.+\.whl$/.test(path)));
  const report = () => {
    let done = 0;
    for (const p of seen) done += sizes.get(p) || 0;
    onProgress({ loaded: done, total, files: seen.size });
  };
  const take = (entries) => {
    let changed = false;
    for (const e of entries) {
      if (!e.name.startsWith(UI_SERVER)) continue;
      const path = e.name.slice(UI_SERVER.length).split("?")[0];
      if (isEngine(path) && !seen.has(path)) { seen.add(path); changed = true; }
    }
    if (changed) report();
  };
  let obs = null;
  try {
    obs = new PerformanceObserver((list) => take(list.getEntries()));
    obs.observe({ type: "resource", buffered: true });
  } catch (_) { /* no Resource Timing: progress stays indeterminate */ }
  // The engine's own downloads happen in its Worker, which reports them (loader.js).
  const stopEngine = engineFetches((names) => take(names.map((name) => ({ name }))));
  fetch(UI_SERVER + "manifest.json").then((r) => (r.ok ? r.json() : null)).then((m) => {
    if (!m || !m.files) return;
    for (const [path, info] of Object.entries(m.files)) {
      if (isEngine(path) && !/micropip/.test(path)) { sizes.set(path, info.bytes); total += info.bytes; }
    }
    report();
  }).catch(() => { /* the size estimate is optional */ });
  return () => { if (obs) obs.disconnect(); stopEngine(); };
}

function createLauncher(opts) {
  opts = opts || {};
  // A custom tag (no page selector like `div` matches it) and !important :host rules, which beat
  // even the page's !important ones on the host element.
  const host = document.createElement("kibitz-widget");
  host.setAttribute("data-kibitz-widget", "");
  const root = host.attachShadow({ mode: UI_TEST_OPEN ? "open" : "closed" });
  const style = document.createElement("style");
  style.textContent = UI_CSS;

  // ---- state the view is drawn from (all of it read from the controller or the user)
  let ctl = null;
  let options = { name: opts.name || "", preview: !!opts.preview, room: opts.room || "" };
  let engine = "loading"; // loading | ready | error (failed to start) | stopped (crashed or hung)
  let engineError = "";
  let progress = { loaded: 0, total: 0, files: 0 };
  let open = false;
  let built = false;
  let state = {};
  let people = [];
  let shownName = "";
  let chat = [];
  let chatAvailable = true;
  let everConnected = false;
  let notice = null; // { text, kind } from the last failed action
  let busy = new Set();
  const speaking = new Map();
  const offs = [];
  let stopProgress = null;
  let mod = null; // the moderation views (widget/moderation.js), built with the panel

  // ---- launcher
  const launcher = h("button", {
    type: "button", class: "launcher", "aria-expanded": "false", "aria-controls": "kz-panel",
    "data-state": "loading", html: icon("mic", 26) + '<span class="dot"></span><span class="badge" hidden></span>',
  });
  const panel = h("section", { class: "panel", id: "kz-panel", role: "dialog", "aria-label": "Kibitz call", hidden: true });
  const wrap = h("div", { class: "kz" }, panel, launcher);
  root.append(style, wrap);

  const launcherLabel = () => {
    const what = open ? "Close the call panel" : "Open the call panel";
    const status = engine === "error" ? " (the call failed to start)" : engine === "stopped" ? " (the call engine stopped)" :
      engine === "loading" ? " (loading)" :
      state.inCall ? ` (in call, ${people.length} here)` : "";
    launcher.setAttribute("aria-label", `Kibitz call: ${what}${status}`);
  };
  launcherLabel();
  launcher.addEventListener("click", () => setOpen(!open));

  // ---- panel pieces (built on first open: the closed launcher stays cheap)
  let els = null;
  function build() {
    if (built) return;
    built = true;
    const btn = (cls, label, iconName, onclick) => h("button", {
      type: "button", class: `ctl ${cls}`, "aria-label": label, title: label, html: icon(iconName), onclick,
    });
    els = {};
    els.count = h("span", { class: "count", "aria-live": "polite" });
    els.copy = h("button", { type: "button", class: "ghost copy", "aria-label": "Copy invite link",
      title: "Copy invite link", html: icon("link", 18) + "<span>Invite</span>", onclick: copyInvite });
    els.close = h("button", { type: "button", class: "ghost icon-only", "aria-label": "Close the call panel",
      title: "Close", html: icon("close", 18), onclick: () => setOpen(false, true) });
    const header = h("header", {}, h("strong", { class: "title", text: "Call" }), els.count,
      h("span", { class: "spacer" }), els.copy, els.close);
    els.statusText = h("span", { class: "status-text" });
    els.bar = h("span", { class: "bar", hidden: true }, h("span", { class: "fill" }));
    els.statusAction = h("button", { type: "button", class: "linkish", hidden: true });
    els.status = h("div", { class: "status", role: "status", "aria-live": "polite" },
      els.statusText, els.bar, els.statusAction);
    els.tiles = h("div", { class: "tiles", role: "list", "aria-label": "Participants" });
    els.name = h("input", { type: "text", class: "name-input", maxlength: "64", autocomplete: "nickname",
      "aria-label": "Your display name", placeholder: "Your name" });
    els.name.value = options.name;
    els.name.addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); commitName(); } });
    els.name.addEventListener("change", commitName);
    const nameRow = h("label", { class: "name-row" }, h("span", { text: "Name" }), els.name);
    els.hideIp = h("input", { type: "checkbox", class: "hide-ip", onchange: doHideIp });
    const hideIpRow = h("label", { class: "name-row hide-ip-row",
      title: "Send this call through a relay so the people in it never see your IP address. " +
        "Remembered in this browser." }, els.hideIp, h("span", { text: "Hide my IP" }));
    els.join = h("button", { type: "button", class: "primary join", "aria-label": "Join call",
      text: "Join call", onclick: doJoin });
    els.mic = btn("mic", "Turn microphone on", "micOff", () => doToggle("mic"));
    els.cam = btn("cam", "Turn camera on", "camOff", () => doToggle("cam"));
    els.share = btn("share", "Share screen", "screen", doShare);
    els.leave = btn("leave danger", "Leave call", "leave", doLeave);
    els.controls = h("div", { class: "controls", role: "toolbar", "aria-label": "Call controls" },
      els.mic, els.cam, els.share, els.leave, els.join);
    els.log = h("ol", { class: "log", "aria-label": "Chat messages", "aria-live": "polite" });
    els.input = h("textarea", { class: "chat-input", rows: "1", "aria-label": "Chat message",
      placeholder: "Message everyone" });
    els.input.addEventListener("input", updateChatHint);
    els.input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); doSend(); }
    });
    els.send = h("button", { type: "submit", class: "ctl send", "aria-label": "Send message", title: "Send",
      html: icon("send", 18) });
    els.hint = h("p", { class: "hint", "aria-live": "polite" });
    const form = h("form", { class: "chat-form", onsubmit: (ev) => { ev.preventDefault(); doSend(); } },
      els.input, els.send);
    els.chat = h("div", { class: "chat", role: "region", "aria-label": "Chat" }, els.log, form, els.hint);
    mod = createModeration({ h, icon, act, render, getCtl: () => ctl, getState: () => state,
      getPeople: () => people, getKnocks: () => (ctl && ctl.getKnocks ? ctl.getKnocks() || [] : []) });
    // Verified identity: the email sign-in, drawn by the controller's own signInIdentity.
    els.signin = h("div", { class: "signin", role: "region", "aria-label": "Sign in", hidden: true });
    panel.append(header, els.status, mod.door, els.signin, els.tiles, nameRow, hideIpRow, els.controls, mod.hostTools,
      mod.consent, els.chat);
    panel.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") { ev.stopPropagation(); setOpen(false, true); }
    });
  }

  function setOpen(value, returnFocus) {
    if (value === open) return;
    open = value;
    if (open) {
      try { performance.mark("kibitz:panel-open"); } catch (_) { /* old browsers */ }
      build();
      panel.hidden = false;
      render();
      wrap.dataset.open = "true";
      if (engine === "ready") markPanelReady();
    } else {
      panel.hidden = true;
      panel.dataset.ready = "false";
      wrap.dataset.open = "false";
      if (returnFocus) launcher.focus();
    }
    launcher.setAttribute("aria-expanded", String(open));
    launcher.dataset.open = String(open);
    launcherLabel();
    if (opts.onToggle) opts.onToggle(open);
  }

  function markPanelReady() {
    if (!open || panel.dataset.ready === "true") return;
    panel.dataset.ready = "true";
    try { performance.mark("kibitz:panel-ready"); } catch (_) { /* old browsers */ }
  }

  // ---- actions (each one a public controller call; failures become a notice saying what to do)

  async function act(key, what, fn) {
    if (busy.has(key)) return undefined;
    busy.add(key);
    notice = null;
    render();
    try {
      return await fn();
    } catch (err) {
      console.warn(`Kibitz: ${what} failed`, err);
      notice = { text: explain(err, what), kind: "error" };
      return undefined;
    } finally {
      busy.delete(key);
      render();
    }
  }

  function doJoin() {
    if (!ctl || options.preview) return;
    // Join muted and with the camera off, always: people forgive a quiet entrance.
    act("join", "join", async () => {
      const name = els.name.value.trim();
      if (name && name !== options.name) { options.name = name; await ctl.setName(name); }
      await ctl.join({ mic: false, cam: false });
      refresh();
    });
  }

  function restartEngine() {
    if (!ctl || typeof ctl.restartEngine !== "function") { location.reload(); return; }
    act("restart", "restart", async () => { await ctl.restartEngine(); refresh(); });
  }

  function doLeave() {
    if (!ctl) return;
    act("leave", "leave", async () => { await ctl.leave(); refresh(); });
  }

  function doToggle(kind) {
    if (!ctl) return;
    act(kind, kind, async () => {
      await (kind === "mic" ? ctl.toggleMic() : ctl.toggleCam());
      refresh();
    });
  }

  function doShare() {
    if (!ctl || options.preview) return;
    act("share", "screen", async () => {
      await (state.sharing ? ctl.stopShare() : ctl.shareScreen());
      refresh();
    });
  }

  function commitName() {
    const name = els.name.value.trim().slice(0, 64);
    shownName = name; // committed: later renames (e.g. setName from page JS) may show again
    if (name === options.name) return;
    options.name = name;
    if (options.preview) { render(); return; }
    if (!ctl) return;
    act("name", "name", async () => { await ctl.setName(name); refresh(); });
  }

  function doSend() {
    const text = els.input.value;
    if (!text.trim() || !ctl) return;
    if ([...text].length > CHAT_MAX) { updateChatHint(); return; }
    act("chat", "chat", async () => {
      const line = await ctl.sendChat(text);
      els.input.value = "";
      updateChatHint();
      if (line && typeof line === "object" && !chat.some((l) => l.id === line.id)) addChat(line);
    });
  }

  function doHideIp() {
    if (!ctl || options.preview) return;
    const on = els.hideIp.checked;
    storeHideIp(on);
    act("relay", "relay", async () => { await ctl.setRelayOnly(on); refresh(); });
  }

  async function copyInvite() {
    // A licensed opener's link carries a fresh room grant (opener pays); everyone else's is the page.
    let url = location.href;
    let withoutGrant = "";
    if (ctl && typeof ctl.createInviteLink === "function") {
      try { url = await ctl.createInviteLink(); } catch (err) { withoutGrant = errorText(err); }
    }
    let ok = false;
    try { await navigator.clipboard.writeText(url); ok = true; } catch (_) { /* insecure context or denied */ }
    if (!ok) {
      const ta = h("textarea", { class: "offscreen" });
      ta.value = url;
      root.append(ta);
      ta.select();
      try { ok = document.execCommand("copy"); } catch (_) { ok = false; }
      ta.remove();
    }
    notice = ok ? { text: "Invite link copied. Anyone with this link can join this call.", kind: "info" }
      : { text: `Copy this link to invite someone: ${url}`, kind: "info" };
    if (withoutGrant) notice = { text: `${notice.text} It carries no relay grant: ${withoutGrant}.`, kind: "error" };
    els.copy.querySelector("span").textContent = ok ? "Copied" : "Invite";
    setTimeout(() => { if (els) els.copy.querySelector("span").textContent = "Invite"; }, 2000);
    render();
  }

  // ---- reading the controller

  function refresh() {
    if (!ctl) return;
    state = ctl.getState() || {};
    people = ctl.getParticipants() || [];
    if (typeof ctl.getChat === "function") {
      try { const got = ctl.getChat(); if (Array.isArray(got)) chat = got.slice(-CHAT_KEEP); } catch (_) { /* older controller */ }
    }
  }

  function addChat(line) {
    if (line === null) { chat = []; render(); return; } // the room's chat was reset
    if (!line || chat.some((l) => l.id !== undefined && l.id === line.id)) return;
    chat = [...chat, line].slice(-CHAT_KEEP);
    render();
  }

  function bind(controller, mountOptions) {
    if (mountOptions) {
      options = { ...options, name: options.name || mountOptions.name || "",
        preview: options.preview || !!mountOptions.preview, room: options.room || mountOptions.room || "" };
      if (els && !els.name.value) els.name.value = options.name;
    }
    if (ctl || !controller) return;
    ctl = controller;
    const sub = (event, cb) => {
      try { offs.push(ctl.on(event, cb)); return true; } catch (_) { return false; }
    };
    sub("state", (s) => { state = { ...state, ...s }; if (state.connected) everConnected = true; render(); });
    sub("participants", (list) => { people = list || []; render(); });
    sub("speaking", (id, on) => { speaking.set(id, !!on); renderSpeaking(); });
    sub("lobby", () => { refresh(); render(); });
    sub("knocks", () => render());
    sub("caps", () => { for (const p of people) if (p.kind === "agent" && mod) mod.refreshAgent(p.id); });
    chatAvailable = sub("chat", addChat) && typeof ctl.sendChat === "function";
    refresh();
    ctl.ready.then(() => {
      engine = "ready";
      refresh();
      // A preview "joins" only its local self-view (the engine never dials): muted, camera off.
      if (options.preview && !state.inCall) act("join", "join", () => ctl.join({ mic: false, cam: false }));
      render();
      if (open) markPanelReady();
    },
      (err) => { engine = "error"; engineError = errorText(err); render(); });
    render();
  }

  // ---- drawing

  function selfEntry() {
    // Preview, or not in the call yet: a self tile drawn from our own state and name.
    return { id: state.self || "self", name: options.name, isSelf: true, camOn: !!state.camOn,
      micOn: !!state.micOn, stream: null, speaking: false };
  }

  function tileList() {
    if (people.length) return people;
    return [selfEntry()];
  }

  function statusOf() {
    if (options.preview) return { text: "Preview: only you can see this. Nothing is sent and no call is made.", kind: "info" };
    if (engine === "error") {
      return { text: `The call engine failed to start (${engineError}). Check your connection, then reload the page.`,
        kind: "error", action: ["Reload page", () => location.reload()] };
    }
    if (engine === "stopped") {
      return { text: `The call engine stopped (${engineError}). The page is fine: restart the engine to get back into the call.`,
        kind: "error", action: ["Restart call engine", restartEngine] };
    }
    if (engine === "loading") {
      const pct = progress.total ? Math.min(99, Math.floor((progress.loaded / progress.total) * 100)) : null;
      const size = progress.total ? ` ${formatMB(progress.loaded)} of ${formatMB(progress.total)}` : "";
      return { text: `Loading the call engine…${size}`, kind: "busy", pct };
    }
    if (notice) return { ...notice, action: ["Dismiss", () => { notice = null; render(); }] };
    const door = doorStatus(state);
    if (door) return door;
    if (state.rosterCompromised) {
      return { text: "Someone's connection changed under their verified identity: nothing is shared until they leave. " +
        "Compare safety codes before you trust this call.", kind: "error" };
    }
    if (state.brokerError) return { text: explain(new Error(String(state.brokerError))), kind: "error" };
    if (state.relayError) return { text: relayAdvice(String(state.relayError)), kind: "error" };
    if (state.connected === false) {
      return everConnected ? { text: "Reconnecting… your call resumes by itself.", kind: "busy" }
        : { text: "Connecting to the room…", kind: "busy" };
    }
    if (busy.has("join")) return { text: "Joining…", kind: "busy" };
    if (!state.inCall) {
      const here = people.filter((p) => !p.isSelf).length;
      return { text: here ? `${here} ${here === 1 ? "person is" : "people are"} in this call. Join muted, camera off.`
        : "No one is in this call yet. Join muted, camera off.", kind: "info" };
    }
    if (people.filter((p) => !p.isSelf).length === 0) {
      return { text: "You're alone in the room. Copy the invite link and send it to someone.", kind: "info",
        action: ["Copy invite link", copyInvite] };
    }
    return null;
  }

  function renderSpeaking() {
    if (!els) return;
    for (const tile of els.tiles.children) {
      const id = tile.dataset.id;
      const p = people.find((x) => x.id === id);
      const on = speaking.has(id) ? speaking.get(id) : !!(p && p.speaking);
      tile.dataset.speaking = String(on);
    }
  }

  function renderTile(tile, p) {
    const name = (p.isSelf && options.preview ? options.name : p.name) || (p.isSelf ? "You" : "Guest");
    const label = p.isSelf ? `${name} (you)` : name;
    tile.setAttribute("aria-label", `${label}${p.camOn ? ", camera on" : ", camera off"}${p.micOn === false ? ", muted" : ""}`);
    tile.dataset.self = String(!!p.isSelf);
    tile.style.setProperty("--hue", String(hue(name)));
    tile.querySelector(".avatar").textContent = initials(name);
    tile.querySelector(".tname").textContent = label;
    tile.querySelector(".muted-icon").hidden = p.micOn !== false;
    // Video vs avatar is gated on the roster's cam flag, never on track presence: the video lane
    // always exists, only its frames change. The <video> is (re)created when the flag turns on and
    // bound by callback, so a camera toggled while this tile was hidden still shows.
    let video = tile.querySelector("video");
    if (p.camOn && !video) {
      video = h("video", { autoplay: true, playsinline: true, muted: true, "aria-hidden": "true" });
      video.muted = true;
      tile.prepend(video);
    } else if (!p.camOn && video) {
      video.srcObject = null;
      video.remove();
      video = null;
    }
    if (video) bindStream(video, p.stream);
    tile.dataset.cam = String(!!p.camOn);
    // Remote audio plays through a hidden <audio>, independent of the camera.
    let audio = tile.querySelector("audio");
    if (!p.isSelf && p.stream && !options.preview) {
      if (!audio) { audio = h("audio", { autoplay: true }); tile.append(audio); }
      bindStream(audio, p.stream);
    } else if (audio) { audio.srcObject = null; audio.remove(); }
    decorateIdentity(tile, p);
  }

  // null: not drawn yet; "drawing": the form is up; "unavailable": this room has no sign-in to draw.
  let signIn = null;
  function renderSignIn() {
    const want = engine === "ready" && !!ctl && !options.preview && !!state.identityEnabled && !state.selfEmail;
    els.signin.hidden = !want || signIn === "unavailable";
    if (!want || signIn !== null) return;
    signIn = "drawing";
    ctl.signInIdentity(els.signin).then(() => { signIn = null; render(); }, (err) => {
      signIn = /no (email )?sign-in|verifies no identity|trusts no/.test(String(err && err.message)) ? "unavailable" : null;
      if (signIn === null) { notice = { text: `Sign-in failed: ${errorText(err)}`, kind: "error" }; }
      render();
    });
  }

  function renderTiles() {
    const list = tileList();
    const keep = new Set(list.map((p) => p.id));
    const existing = new Map([...els.tiles.children].map((t) => [t.dataset.id, t]));
    for (const [id, t] of existing) {
      if (!keep.has(id)) {
        for (const m of t.querySelectorAll("video,audio")) m.srcObject = null;
        t.remove();
      }
    }
    let prev = null;
    for (const entry of list) {
      // Our own mic/cam flags are ours first: the roster echoes them back a moment later.
      const p = entry.isSelf && state.self !== undefined
        ? { ...entry, camOn: !!state.camOn, micOn: !!state.micOn } : entry;
      let tile = existing.get(p.id);
      if (!tile || !tile.isConnected) {
        tile = h("div", { class: "tile", role: "listitem", "data-id": p.id },
          h("span", { class: "avatar", "aria-hidden": "true" }),
          h("span", { class: "tname" }),
          h("span", { class: "muted-icon", "aria-hidden": "true", html: icon("micOff", 14) }));
      }
      const want = prev ? prev.nextSibling : els.tiles.firstChild;
      if (want !== tile) els.tiles.insertBefore(tile, want);
      renderTile(tile, p);
      if (mod) mod.decorateTile(tile, p);
      prev = tile;
    }
    els.tiles.dataset.n = String(Math.min(list.length, 4));
    renderSpeaking();
  }

  function renderChat() {
    const lines = chat.slice(-CHAT_KEEP);
    const ids = lines.map((l, i) => String(l.id !== undefined ? l.id : i));
    const children = [...els.log.children];
    if (children.length !== lines.length || children.some((c, i) => c.dataset.id !== ids[i])) {
      const atBottom = els.log.scrollHeight - els.log.scrollTop - els.log.clientHeight < 24;
      els.log.replaceChildren(...lines.map((l, i) => {
        const mine = l.from === state.self;
        const who = mine ? "You" : (l.name || "Guest");
        const when = l.ts ? new Date(l.ts > 1e12 ? l.ts : l.ts * 1000)
          .toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "";
        return h("li", { class: mine ? "mine" : "", "data-id": ids[i] },
          h("span", { class: "who", text: who + (l.direct ? " (private)" : "") }),
          h("span", { class: "when", text: when }),
          h("p", { class: "text", text: String(l.text || "") }));
      }));
      if (atBottom || lines.length && lines[lines.length - 1].from === state.self) els.log.scrollTop = els.log.scrollHeight;
    }
    els.log.hidden = !lines.length;
  }

  function updateChatHint() {
    if (!els) return;
    const n = [...els.input.value].length;
    const over = n > CHAT_MAX;
    const canChat = chatAvailable && !!state.inCall && !options.preview;
    els.input.disabled = !canChat;
    els.input.placeholder = options.preview ? "Chat is off in preview" : !chatAvailable ? "Chat is not available"
      : canChat ? "Message everyone" : "Join the call to chat";
    els.send.disabled = !canChat || over || !els.input.value.trim() || busy.has("chat");
    els.input.setAttribute("aria-invalid", String(over));
    els.hint.dataset.kind = over ? "error" : "";
    els.hint.textContent = over
      ? `Too long: ${n} characters. Messages can be at most ${CHAT_MAX}; shorten it by ${n - CHAT_MAX} to send.`
      : n > CHAT_MAX - 100 ? `${CHAT_MAX - n} characters left` : "";
  }

  function setPressed(button, on, onLabel, offLabel, onIcon, offIcon) {
    button.setAttribute("aria-pressed", String(!!on));
    const label = on ? onLabel : offLabel;
    if (button.getAttribute("aria-label") !== label) {
      button.setAttribute("aria-label", label);
      button.title = label;
      button.innerHTML = icon(on ? onIcon : offIcon);
    }
  }

  function render() {
    launcherLabel();
    launcher.dataset.state = engine === "error" || engine === "stopped" ? "error"
      : engine === "ready" ? (state.inCall ? "call" : "ready") : "loading";
    const badge = launcher.querySelector(".badge");
    badge.hidden = !state.inCall || options.preview;
    badge.textContent = String(people.length);
    if (!els || !open) return;
    panel.dataset.engine = engine;
    panel.dataset.inCall = String(!!state.inCall);
    panel.dataset.preview = String(!!options.preview);
    const n = options.preview ? 1 : people.length;
    els.count.textContent = options.preview ? "Preview" : `${n} in call`;
    els.count.dataset.n = String(n);
    const st = statusOf();
    els.status.hidden = !st;
    if (st) {
      els.status.dataset.kind = st.kind;
      els.statusText.textContent = st.text;
      els.bar.hidden = st.kind !== "busy" || st.pct === undefined;
      if (st.pct !== undefined) {
        els.bar.dataset.indeterminate = String(st.pct === null);
        els.bar.firstChild.style.width = st.pct === null ? "" : `${st.pct}%`;
        els.bar.setAttribute("role", "progressbar");
        els.bar.setAttribute("aria-label", "Loading the call engine");
        if (st.pct !== null) els.bar.setAttribute("aria-valuenow", String(st.pct));
      }
      els.statusAction.hidden = !st.action;
      if (st.action) { els.statusAction.textContent = st.action[0]; els.statusAction.onclick = st.action[1]; }
    }
    renderSignIn();
    renderTiles();
    const inCall = !!state.inCall;
    const live = engine === "ready" && !!ctl;
    setPressed(els.mic, !!state.micOn, "Turn microphone off", "Turn microphone on", "mic", "micOff");
    setPressed(els.cam, !!state.camOn, "Turn camera off", "Turn camera on", "cam", "camOff");
    setPressed(els.share, !!state.sharing, "Stop sharing screen", "Share screen", "screen", "screen");
    const inUse = live && (inCall || options.preview);
    els.mic.hidden = els.cam.hidden = !inUse;
    els.share.hidden = els.leave.hidden = !(live && inCall) || options.preview;
    els.join.hidden = options.preview || inCall;
    els.join.disabled = !live || busy.has("join");
    els.mic.disabled = busy.has("mic");
    els.cam.disabled = busy.has("cam");
    els.copy.hidden = !!options.preview;
    // While a switch is being applied (the engine reopens the session) the box keeps the user's click.
    if (!busy.has("relay")) els.hideIp.checked = state.relayOnly === undefined ? hideIpStored() : !!state.relayOnly;
    els.hideIp.disabled = !live || !!options.preview || busy.has("relay");
    // The field shows the name the room knows us by (a setName() from page JS included), but never
    // overwrites an edit the user has not committed yet.
    const me = people.find((p) => p.isSelf);
    const myName = (me && me.name) || options.name || "";
    const editing = root.activeElement === els.name && els.name.value.trim() !== shownName;
    if (myName && myName !== shownName && !editing) { els.name.value = myName; shownName = myName; }
    if (mod) mod.update(st);
    renderChat();
    updateChatHint();
  }

  // ---- attach to the page

  let attached = false;
  const attach = () => {
    if (attached) return;
    attached = true;
    document.body.appendChild(host);
    if (opts.onShown) opts.onShown();
    if (opts.startOpen) setOpen(true);
  };
  if (document.body) attach();
  else document.addEventListener("DOMContentLoaded", attach, { once: true });
  stopProgress = watchProgress((p) => { progress = p; if (engine === "loading") render(); });

  if (opts.controller) bind(opts.controller, opts.controller.options || opts);
  return {
    host,
    bind,
    setState(s, label) {
      if (s === "ready" && engine !== "ready") { engine = "ready"; refresh(); if (open) markPanelReady(); }
      if (s === "error") { engine = "error"; engineError = String(label || "").replace(/^Kibitz call failed to start: /, ""); }
      if (s === "stopped") { engine = "stopped"; engineError = errorText(label); refresh(); }
      if (s === "loading") { engine = "loading"; progress = { loaded: 0, total: 0, files: 0 }; }
      if (engine !== "loading" && stopProgress) { stopProgress(); stopProgress = null; }
      render();
    },
    remove() {
      document.removeEventListener("DOMContentLoaded", attach);
      attached = true;
      if (stopProgress) stopProgress();
      for (const off of offs.splice(0)) { try { off(); } catch (_) { /* already gone */ } }
      for (const m of root.querySelectorAll("video,audio")) m.srcObject = null;
      host.remove();
    },
  };
}
