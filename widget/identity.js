// Verified identity on the page's side (the engine's side: kibitz.identity, kibitz.backends.page_identity).
//
// * One persistent DTLS certificate for this page (`kibitzCertificate()`): an ECDSA P-256
//   RTCCertificate kept in IndexedDB and handed to every RTCPeerConnection the bridge makes, so
//   every peer sees one fingerprint for this browser profile on this origin, and an identity token
//   bound to it (nonce = b64url(SHA-256(fingerprint | room))) still holds after a reload. Renewed a
//   month before it expires (a new fingerprint: tokens bound to the old one must be minted again).
//   Where IndexedDB is blocked the certificate lives as long as the page (said once in the console).
// * The far end's fingerprint, read from the live connection (`watchRemoteCertificate(pc)`):
//   `pc.sctp.transport.getRemoteCertificates()` once the connection is up, SHA-256 in lower-case
//   colon-hex, never from SDP (which the signaling path could rewrite). The bridge describes it to
//   the engine, which opens a link only once it knows it (kibitz.backends.rtc).
// * The sign-in element (`drawSignIn(el, plan, provide)`): the email code flow against the plan's
//   apiBase (/api/email/start → a code by mail → /api/email/verify → a token); the token goes to the
//   engine (`provideIdentityToken`), which checks it as peers will. The plan (provider, nonce, room)
//   comes from the engine: the page decides nothing. Google/any OpenID Connect issuer: a popup
//   (authorization code with PKCE; Google: the ID token in the fragment) that returns to
//   widget.js's own kibitz-signin.html, with identityNonce() as the nonce.
// * The tile pieces: a verified badge and the safety code (`decorateIdentity(tile, p)`).

const KBZ_CERT_DB = "kibitz";
const KBZ_CERT_STORE = "certificates";
const KBZ_CERT_KEY = "dtls";
const KBZ_CERT_VALID_MS = 365 * 86400e3;
const KBZ_CERT_RENEW_MS = 30 * 86400e3;

let kbzCertificate = null;
/** Whether this browser reads the far end's certificate off a live connection (Chromium 156 and
 * Firefox 153 do); where not, links open at once and tokens on them are refused (no-fingerprint). */
const KBZ_READS_REMOTE_CERTS = typeof RTCDtlsTransport === "function" &&
  typeof RTCDtlsTransport.prototype.getRemoteCertificates === "function";

/** This page's certificate: resolves to `{ cert, fp }` (fp: lower-case colon-hex SHA-256), or null
 * where this browser cannot make one (the engine then binds nothing). Made once per page. */
function kibitzCertificate() {
  if (!kbzCertificate) {
    kbzCertificate = loadCertificate().catch((err) => {
      console.warn("Kibitz: no DTLS certificate of our own (identity tokens cannot be bound):", err);
      return null;
    });
  }
  return kbzCertificate;
}

function idbRequest(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function openCertStore() {
  if (typeof indexedDB === "undefined") throw new Error("no IndexedDB here");
  const open = indexedDB.open(KBZ_CERT_DB, 1);
  open.onupgradeneeded = () => { open.result.createObjectStore(KBZ_CERT_STORE); };
  return idbRequest(open);
}

function certStore(db, mode) {
  return db.transaction(KBZ_CERT_STORE, mode).objectStore(KBZ_CERT_STORE);
}

function certEntry(cert) {
  const sha = (cert.getFingerprints() || []).find((f) => String(f.algorithm).toLowerCase() === "sha-256");
  if (!sha) throw new Error("the certificate has no SHA-256 fingerprint");
  return { cert, fp: String(sha.value).toLowerCase() };
}

async function loadCertificate() {
  const PC = globalThis.RTCPeerConnection;
  if (typeof PC !== "function" || typeof PC.generateCertificate !== "function") return null;
  let db = null;
  try {
    db = await openCertStore();
    const found = await idbRequest(certStore(db, "readonly").get(KBZ_CERT_KEY));
    if (found && typeof found.getFingerprints === "function" && found.expires - Date.now() > KBZ_CERT_RENEW_MS) {
      return certEntry(found);
    }
  } catch (err) {
    console.warn("Kibitz: this page's certificate cannot be kept (IndexedDB: " + (err && err.message) +
      "); a reload changes it, and identity tokens must be minted again");
    db = null;
  }
  const cert = await PC.generateCertificate({ name: "ECDSA", namedCurve: "P-256", expires: KBZ_CERT_VALID_MS });
  if (db) {
    try {
      await idbRequest(certStore(db, "readwrite").put(cert, KBZ_CERT_KEY));
    } catch (err) {
      console.warn("Kibitz: could not keep this page's certificate:", err);
    }
  }
  return certEntry(cert);
}

const kbzRemoteFps = new WeakMap();

function colonHex(buffer) {
  return [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join(":");
}

/** Read the far end's certificate off `pc` once its connection is up; fires `kbzremotecert` on the
 * peer connection when known (the bridge relays it and describes `remoteFingerprint`). */
function watchRemoteCertificate(pc) {
  let retries = 0;
  const read = () => {
    if (kbzRemoteFps.has(pc) || pc.connectionState !== "connected") return;
    const transport = pc.sctp && pc.sctp.transport;
    const certs = transport && typeof transport.getRemoteCertificates === "function"
      ? transport.getRemoteCertificates() : [];
    if (!certs || !certs.length) {
      // "connected" can come a moment before the transport shows the certificate: look again.
      if (++retries <= 100) setTimeout(read, 100);
      return;
    }
    kbzRemoteFps.set(pc, null); // reading
    crypto.subtle.digest("SHA-256", certs[0]).then((digest) => {
      kbzRemoteFps.set(pc, colonHex(digest));
      pc.dispatchEvent(new Event("kbzremotecert"));
    }, (err) => {
      kbzRemoteFps.delete(pc);
      console.warn("Kibitz: could not read the far end's certificate", err);
    });
  };
  pc.addEventListener("connectionstatechange", read);
}

/** The far end's fingerprint once read, else null. */
function remoteFingerprintOf(pc) {
  return kbzRemoteFps.get(pc) || null;
}

// ---- the sign-in element (drawn with ui.js's `h`: both run in widget.js's one scope)

async function postJson(url, body) {
  let r;
  try {
    r = await fetch(url, { method: "POST", cache: "no-store", credentials: "omit",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  } catch (err) {
    throw new Error("the sign-in server cannot be reached");
  }
  let answer = {};
  try { answer = await r.json(); } catch (_) { /* not JSON */ }
  return { status: r.status, answer, retryAfter: Number(r.headers.get("Retry-After")) || 0 };
}

const VERIFY_REASONS = {
  mismatch: "That code is not right. Check the mail and try again.",
  locked: "Too many wrong codes: ask for a new one.",
  expired: "That code has expired: ask for a new one.",
  "bad ticket": "That code is no longer valid: ask for a new one.",
};

/** Draw the sign-in for `plan` (from the engine) into `el`; resolves with `provide(jwt)`'s answer
 * once this tab is verified. The element keeps a line saying who is signed in. `server` is
 * widget.js's own base URL: OpenID Connect popups return to its `kibitz-signin.html`. */
function drawSignIn(el, plan, provide, server) {
  if (!el || typeof el.replaceChildren !== "function") throw new TypeError("Kibitz.signInIdentity(el, method): el must be an element");
  return new Promise((resolve) => {
    const hint = h("p", { class: "kbz-signin-hint", role: "status", "aria-live": "polite" });
    const say = (text, kind) => { hint.textContent = text || ""; if (kind) hint.dataset.kind = kind; else delete hint.dataset.kind; };
    const done = async (jwt) => {
      const got = await provide(jwt);
      el.replaceChildren(h("p", { class: "kbz-signin-done", role: "status",
        text: got.status === "verified" ? `Signed in as ${got.email}` : "Signed in; checking the token…" }));
      resolve(got);
    };
    const fail = (err) => say((err && err.message) || String(err), "error");
    const options = plan.method === "auto" ? plan.options : [plan];
    const mail = options.find((o) => o.method === "email");
    const buttons = options.filter((o) => o.method !== "email").map((o) => providerButton(o, server, say, done));
    if (!mail) {
      el.replaceChildren(h("div", { class: "kbz-signin-box" },
        h("label", { class: "kbz-signin-label", text: "Verify who you are to the room" }), ...buttons, hint));
      return;
    }
    const api = mail.apiBase;

    const askAddress = (message) => {
      const input = h("input", { type: "email", class: "kbz-signin-email", autocomplete: "email",
        required: true, "aria-label": "Your email address", placeholder: "you@example.com" });
      const button = h("button", { type: "submit", class: "primary", text: "Send code" });
      const form = h("form", { class: "kbz-signin code-form", "aria-label": "Sign in by email" }, input, button);
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const email = input.value.trim();
        if (!email) return;
        button.disabled = true;
        say("Sending a code…");
        try {
          const { status, answer, retryAfter } = await postJson(`${api}api/email/start`,
            { email, room: mail.room, nonce: mail.nonce });
          if (status === 200 && answer.ok) { askCode(email, answer.ticket); return; }
          if (status === 429) throw new Error(`Too many codes asked for: try again in ${Math.max(1, Math.ceil(retryAfter / 60))} min.`);
          throw new Error(answer.error || `the sign-in server said ${status}`);
        } catch (err) {
          fail(err);
          button.disabled = false;
        }
      });
      el.replaceChildren(h("div", { class: "kbz-signin-box" },
        h("label", { class: "kbz-signin-label", text: "Verify your email to the room" }), form, ...buttons, hint));
      say(message || "", message ? "error" : null);
      input.focus();
    };

    const askCode = (email, ticket) => {
      const input = h("input", { type: "text", class: "kbz-signin-code", inputmode: "numeric",
        autocomplete: "one-time-code", pattern: "[0-9]{6}", maxlength: "6", required: true,
        "aria-label": "The 6-digit code" });
      const button = h("button", { type: "submit", class: "primary", text: "Verify" });
      const form = h("form", { class: "kbz-signin code-form", "aria-label": "Type the code" }, input, button);
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        button.disabled = true;
        say("Checking…");
        try {
          const { status, answer } = await postJson(`${api}api/email/verify`, { ticket, code: input.value.trim() });
          if (status === 200 && answer.ok) { await done(answer.jwt); return; }
          const reason = answer.reason || answer.error || `the sign-in server said ${status}`;
          if (reason === "mismatch") { fail(new Error(VERIFY_REASONS.mismatch)); button.disabled = false; input.select(); return; }
          askAddress(VERIFY_REASONS[reason] || reason);
        } catch (err) {
          fail(err);
          button.disabled = false;
        }
      });
      const again = h("button", { type: "button", class: "linkish", text: "Use another address",
        onclick: () => askAddress() });
      el.replaceChildren(h("div", { class: "kbz-signin-box" },
        h("label", { class: "kbz-signin-label", text: `We sent a 6-digit code to ${email}.` }), form, again, hint));
      say("");
      input.focus();
    };

    askAddress();
  });
}

// ---- OpenID Connect in a popup (Google or any issuer the room trusts)
//
// The provider's page opens in a popup at the click (a popup needs the user's gesture); it returns to
// widget.js's own `kibitz-signin.html`, which posts what it got (code or ID token, and the state) to
// this page only (the state carries this page's origin) and closes. The state is checked here, the
// authorization code is redeemed with its PKCE verifier (no client secret exists in a page), and
// the ID token, whose nonce binds it to this tab's certificate in this room, goes to the engine.

function b64url(bytes) {
  let text = "";
  for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomText(n) {
  return b64url(crypto.getRandomValues(new Uint8Array(n)));
}

function providerName(plan) {
  if (plan.method === "google") return "Google";
  try { return new URL(plan.issuer).host; } catch (_) { return String(plan.issuer); }
}

/** An endpoint from a discovery document: https, or http on this machine (a local issuer). */
function safeEndpoint(url) {
  const u = new URL(url);
  if (u.protocol === "https:" || (u.protocol === "http:" && ["localhost", "127.0.0.1", "[::1]"].includes(u.hostname))) return u.href;
  throw new Error(`the sign-in provider names an endpoint that is not https: ${u.origin}`);
}

/** The authorization request for one sign-in: discovery, a fresh state and PKCE verifier. */
async function oidcRequest(plan, redirectUri) {
  const issuer = String(plan.issuer).replace(/\/+$/, "");
  let doc;
  try {
    const r = await fetch(`${issuer}/.well-known/openid-configuration`, { credentials: "omit" });
    if (!r.ok) throw new Error(`it answered ${r.status}`);
    doc = await r.json();
  } catch (err) {
    throw new Error(`${providerName(plan)} cannot be reached to sign in (${err.message})`);
  }
  if (String(doc.issuer || "").replace(/\/+$/, "") !== issuer || !doc.authorization_endpoint) {
    throw new Error(`the discovery document at ${issuer} is not that issuer's`);
  }
  const types = Array.isArray(doc.response_types_supported) ? doc.response_types_supported : ["code"];
  // Google redeems codes only with a client secret, which a page cannot keep: its ID token comes in
  // the fragment instead. Any other issuer: the authorization code with PKCE.
  const useCode = !!doc.token_endpoint && types.includes("code") && !(plan.method === "google" && types.includes("id_token"));
  const verifier = randomText(48);
  const state = `${randomText(18)}.${b64url(new TextEncoder().encode(location.origin))}`;
  const query = new URLSearchParams({ client_id: plan.clientId, redirect_uri: redirectUri, scope: "openid email",
    nonce: plan.nonce, state, response_type: useCode ? "code" : "id_token" });
  if (useCode) {
    const challenge = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
    query.set("code_challenge", b64url(challenge));
    query.set("code_challenge_method", "S256");
  } else {
    query.set("response_mode", "fragment");
  }
  return { url: `${safeEndpoint(doc.authorization_endpoint)}?${query}`, state, verifier, useCode,
    tokenEndpoint: useCode ? safeEndpoint(doc.token_endpoint) : null };
}

/** What the popup's return page posts (for `state`, from widget.js's origin), or why there is none. */
function popupAnswer(popup, state, origin) {
  return new Promise((resolve, reject) => {
    let closedTicks = 0;
    const finish = (settle, value) => {
      window.removeEventListener("message", onMessage);
      clearInterval(timer);
      settle(value);
    };
    const onMessage = (ev) => {
      const answer = ev.data && ev.data.kibitzSignIn;
      if (ev.origin !== origin || ev.source !== popup || !answer || answer.state !== state) return;
      if (answer.error) finish(reject, new Error(`The sign-in was refused: ${answer.error_description || answer.error}`));
      else finish(resolve, answer);
    };
    // Closed twice in a row: the return page's message, sent just before it closes, is not coming.
    const timer = setInterval(() => {
      closedTicks = popup.closed ? closedTicks + 1 : 0;
      if (closedTicks >= 2) finish(reject, new Error("The sign-in window was closed before it finished."));
    }, 400);
    window.addEventListener("message", onMessage);
  });
}

/** The ID token from the popup's answer: as sent (Google), or by redeeming the code with PKCE. */
async function oidcToken(req, answer, redirectUri, plan) {
  if (!req.useCode) {
    if (typeof answer.id_token !== "string") throw new Error(`${providerName(plan)} sent no ID token`);
    return answer.id_token;
  }
  if (typeof answer.code !== "string") throw new Error(`${providerName(plan)} sent no authorization code`);
  const body = new URLSearchParams({ grant_type: "authorization_code", code: answer.code, redirect_uri: redirectUri,
    client_id: plan.clientId, code_verifier: req.verifier });
  let r;
  try {
    r = await fetch(req.tokenEndpoint, { method: "POST", credentials: "omit", cache: "no-store", body });
  } catch (err) {
    throw new Error(`${providerName(plan)}'s token endpoint cannot be reached from this page (${err.message})`);
  }
  const got = await r.json().catch(() => ({}));
  if (!r.ok || typeof got.id_token !== "string") {
    throw new Error(`${providerName(plan)} gave no ID token (${got.error_description || got.error || r.status})`);
  }
  return got.id_token;
}

/** A "Sign in with …" button for one OpenID Connect provider of the plan. */
function providerButton(plan, server, say, done) {
  const redirectUri = new URL("kibitz-signin.html", server).href;
  const origin = new URL(server).origin;
  let pending = null;
  let ready = null;
  const prepare = () => {
    ready = null;
    pending = oidcRequest(plan, redirectUri);
    pending.then((req) => { ready = req; }, () => {});
  };
  prepare();
  const name = providerName(plan);
  const button = h("button", { type: "button", class: "kbz-signin-provider", text: `Sign in with ${name}` });
  button.addEventListener("click", async () => {
    // Opened within the click (or the browser blocks it): on the provider's page when it is known.
    const early = ready;
    const popup = window.open(early ? early.url : "about:blank", "kibitz-signin", "popup,width=480,height=640");
    if (!popup) {
      say("The browser blocked the sign-in window: allow pop-ups for this page and try again.", "error");
      return;
    }
    button.disabled = true;
    say(`Signing in with ${name} in the new window…`);
    try {
      const req = early || await pending;
      prepare(); // the next sign-in gets its own state and verifier
      if (!early) popup.location.href = req.url;
      const answer = await popupAnswer(popup, req.state, origin);
      await done(await oidcToken(req, answer, redirectUri, plan));
    } catch (err) {
      if (!popup.closed) popup.close();
      if (!ready) prepare();
      say((err && err.message) || String(err), "error");
      button.disabled = false;
    }
  });
  return button;
}

// ---- the tile pieces: a verified badge and the safety code

function decorateIdentity(tile, p) {
  let badge = tile.querySelector(".verified");
  if (p.verifiedEmail) {
    if (!badge) { badge = h("span", { class: "verified" }); tile.append(badge); }
    if (badge.dataset.email !== p.verifiedEmail) {
      badge.dataset.email = p.verifiedEmail;
      badge.textContent = `✓ ${p.verifiedEmail}`;
      badge.title = `Verified: ${p.verifiedEmail}`;
      badge.setAttribute("aria-label", `Verified as ${p.verifiedEmail}`);
    }
  } else if (badge) badge.remove();
  let code = tile.querySelector(".safety");
  if (p.safetyCode && !p.isSelf) {
    if (!code) { code = h("span", { class: "safety" }); tile.append(code); }
    if (code.dataset.code !== p.safetyCode) {
      code.dataset.code = p.safetyCode;
      code.textContent = p.safetyCode;
      const words = (p.safetyWords || []).join(" ");
      code.title = `Safety code: ${words}. The same on both ends means no one is in between.`;
      code.setAttribute("aria-label", `Safety code ${words}`);
    }
  } else if (code) code.remove();
}
