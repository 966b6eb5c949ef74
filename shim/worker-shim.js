// The thin JS under the Python engine in its Worker, registered as the Python module `kibitz_shim`
// (widget/engine-host.js). It exists only for what Python cannot do cleanly through Pyodide's FFI:
// keeping a callback alive exactly as long as its listener, handing text over cheaply, posting to
// the page, and the two WebCrypto calls kibitz.crypto needs. Everything else a Worker has (WebSocket, transferred RTCDataChannels, timers)
// Python drives directly through `js`; what only the page has, through the page bridge (`post`).

function createWorkerShim(port) {
  // A Python callable passed to JS is a *borrowed* proxy, destroyed when the call returns.
  // listen() copies it, so the copy lives exactly as long as the listener, and off() frees it.
  let live = 0;

  function own(fn) {
    if (fn && typeof fn.copy === "function") {
      live += 1;
      const copy = fn.copy();
      return { fn: copy, free() { live -= 1; copy.destroy(); } };
    }
    return { fn, free() {} };
  }

  /** addEventListener with an owned callback; returns off() (idempotent). */
  function listen(target, type, fn, options) {
    const held = own(fn);
    const handler = (ev) => held.fn(ev);
    target.addEventListener(type, handler, options);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      target.removeEventListener(type, handler, options);
      held.free();
    };
  }

  // Pyodide copies a JS string into Python one character at a time (~90 µs for 16 kB); its UTF-8
  // bytes cross in one copy (~25 µs with the encode and the decode), so long text goes as bytes.
  const LONG_TEXT = 2048;
  const utf8 = new TextEncoder();

  /** A string for Python: itself when short, its UTF-8 bytes (a Uint8Array) when long. Python
   * turns either back into `str` (kibitz.backends.page_session.text_from_page). Lossless for what
   * the engine passes: JSON.stringify output and data channel text hold no lone surrogates. */
  function pyText(text) {
    return text.length > LONG_TEXT ? utf8.encode(text) : text;
  }

  /** listen() for message events that hands fn only `ev.data`: a string crosses into Python as a
   * str at once, with no proxy of the event to build and no second FFI hop to read `.data`
   * (the data channel's hot path); long text arrives as `fn(bytes, true)` (see pyText). */
  function listenData(target, type, fn) {
    const held = own(fn);
    const handler = (ev) => {
      const data = ev.data;
      const text = typeof data === "string" ? pyText(data) : data;
      if (text === data) held.fn(data);
      else held.fn(text, true);
    };
    target.addEventListener(type, handler);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      target.removeEventListener(type, handler);
      held.free();
    };
  }

  /** setTimeout / setInterval with an owned callback; returns cancel() (idempotent). */
  function timer(ms, fn, repeat) {
    const held = own(fn);
    let done = false;
    const cancel = () => {
      if (done) return;
      done = true;
      (repeat ? clearInterval : clearTimeout)(id);
      held.free();
    };
    const id = (repeat ? setInterval : setTimeout)(() => {
      if (!repeat) { done = true; try { held.fn(); } finally { held.free(); } } else held.fn();
    }, ms);
    return cancel;
  }

  // WebCrypto for kibitz.crypto.backends.WebCrypto: bytes (Uint8Array) in, Uint8Array out. The
  // formats (sealed blobs, code keys) are Python's; these only reach what Pyodide lacks.
  function subtle() {
    const s = globalThis.crypto && globalThis.crypto.subtle;
    if (!s) throw new Error("WebCrypto is unavailable (the page is not a secure context)");
    return s;
  }

  /** 32 bytes of PBKDF2-HMAC-SHA256. */
  async function pbkdf2Sha256(password, salt, iterations) {
    const base = await subtle().importKey("raw", password, "PBKDF2", false, ["deriveBits"]);
    const params = { name: "PBKDF2", hash: "SHA-256", salt, iterations };
    return new Uint8Array(await subtle().deriveBits(params, base, 256));
  }

  /** AES-GCM, 128-bit tag, no associated data: encrypt gives ciphertext‖tag, decrypt rejects on a
   * bad tag. */
  async function aesGcm(encrypt, key, iv, data) {
    const k = await subtle().importKey("raw", key, "AES-GCM", false, [encrypt ? "encrypt" : "decrypt"]);
    const alg = { name: "AES-GCM", iv, tagLength: 128 };
    return new Uint8Array(await (encrypt ? subtle().encrypt(alg, k, data) : subtle().decrypt(alg, k, data)));
  }

  return {
    listen, listenData, pyText, timer, pbkdf2Sha256, aesGcm,
    /** One JSON text message to the page (the page bridge, controller replies, events). */
    post: (text) => port.postMessage(text),
    /** An app message for mount `mount`'s onMessage listeners: JSON text and its sender. */
    postAppMessage: (mount, text, sender) => port.postMessage(["m", mount, text, sender]),
    /** A send on a data channel the page relays (text, or bytes as a fresh Uint8Array). */
    relaySend: (h, data) => {
      if (typeof data === "string") port.postMessage(["r", h, data]);
      else {
        const buf = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? data.buffer : data.slice().buffer;
        port.postMessage(["r", h, buf], [buf]);
      }
    },
    /** Callback copies still held by listeners/timers (leak checks in tests). */
    liveProxies: () => live,
  };
}
