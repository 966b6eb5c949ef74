// The thin JS layer under the Python engine. It exists only for what Python cannot do cleanly
// through Pyodide's FFI: keeping a callback alive exactly as long as its listener, producing
// placeholder media tracks, wrapping media prompts, and the two WebCrypto calls kibitz.crypto
// needs. Everything else (RTCPeerConnection, RTCDataChannel, WebSocket) Python drives directly
// through `js`. Python imports this object as the module `kibitz_shim` (registered by the loader).

const shim = (() => {
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
   * turns either back into `str` (kibitz.backends.browser.text_from_page). Lossless for what the
   * engine passes: JSON.stringify output and data channel text hold no lone surrogates. */
  function pyText(text) {
    return text.length > LONG_TEXT ? utf8.encode(text) : text;
  }

  /** listen() for message events that hands fn only `ev.data`: a string crosses into Python as a
   * str at once, with no proxy of the event to build and no second FFI hop to read `.data`
   * (the data channel's hot path); long text arrives as `fn(bytes, true)` (see pyText). Returns
   * off(). */
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

  function mediaError(err) {
    const e = new Error(`${err && err.name || "Error"}: ${err && err.message || err}`);
    e.name = (err && err.name) || "Error";
    return e;
  }

  /** getUserMedia with plain-object constraints; rejects with a named Error (NotAllowedError, …). */
  async function getUserMedia(constraints) {
    const md = navigator.mediaDevices;
    if (!md || !md.getUserMedia) throw mediaError({ name: "NotSupportedError", message: "no mediaDevices (insecure origin?)" });
    try { return await md.getUserMedia(constraints); } catch (err) { throw mediaError(err); }
  }

  async function getDisplayMedia(constraints) {
    const md = navigator.mediaDevices;
    if (!md || !md.getDisplayMedia) throw mediaError({ name: "NotSupportedError", message: "no getDisplayMedia" });
    try { return await md.getDisplayMedia(constraints || { video: true, audio: false }); } catch (err) { throw mediaError(err); }
  }

  /** A flowing 2×2 black video track: sent while the camera is off, so the lane never stalls.
   * Repainted on a timer (not rAF, which stops in background tabs) so frames keep flowing. */
  function blackVideoTrack(fps) {
    const rate = fps || 5;
    const canvas = document.createElement("canvas");
    canvas.width = 2; canvas.height = 2;
    const g = canvas.getContext("2d");
    const paint = () => { g.fillStyle = "#000"; g.fillRect(0, 0, 2, 2); };
    paint();
    const track = canvas.captureStream(rate).getVideoTracks()[0];
    const id = setInterval(() => { if (track.readyState === "ended") clearInterval(id); else paint(); }, 1000 / rate);
    track.addEventListener("ended", () => clearInterval(id));
    const stop = track.stop.bind(track);
    track.stop = () => { clearInterval(id); stop(); };
    return track;
  }

  let audioCtx = null;
  /** A silent audio track (zero-gain oscillator into a MediaStream destination). */
  function silentAudioTrack() {
    audioCtx = audioCtx || new (window.AudioContext || window.webkitAudioContext)();
    const osc = audioCtx.createOscillator();
    const gain = audioCtx.createGain();
    gain.gain.value = 0;
    const dest = audioCtx.createMediaStreamDestination();
    osc.connect(gain).connect(dest);
    osc.start();
    const track = dest.stream.getAudioTracks()[0];
    const stop = track.stop.bind(track);
    track.stop = () => { try { osc.stop(); } catch (_) { /* already stopped */ } osc.disconnect(); stop(); };
    return track;
  }

  /** Make `track` the stream's only track of `kind` (null: none), in place, so a <video> bound to
   * the stream keeps playing across swaps and re-dials. */
  function setStreamTrack(stream, kind, track) {
    for (const t of stream.getTracks()) if (t.kind === kind && t !== track) stream.removeTrack(t);
    if (track && !stream.getTrackById(track.id)) stream.addTrack(track);
  }

  /** Audio levels for speaking detection: one shared AudioContext, one AnalyserNode per track,
   * one timer for all of them (~10 Hz), and one call to `onLevels({key: rms})` per tick — only
   * while at least one track is watched. The decision (threshold, hold) is Python's.
   * Each level is the RMS of every sample since the previous tick: the analyser's window spans two
   * intervals, so a short sound between ticks (a clipped word, a 20 ms beep) is never missed, as
   * it was when only the newest 512 samples were read. */
  function levelMeter(onLevels, intervalMs) {
    const held = own(onLevels);
    const nodes = new Map();
    let ctx = null;
    let timer = null;
    let resumeOff = null;
    const context = () => {
      if (!ctx) {
        ctx = new (window.AudioContext || window.webkitAudioContext)();
        if (ctx.state === "suspended") {
          // Autoplay policy: an AudioContext may only start after a user gesture.
          const resume = () => { ctx.resume().catch(() => {}); };
          resume();
          window.addEventListener("pointerdown", resume, true);
          window.addEventListener("keydown", resume, true);
          resumeOff = () => {
            window.removeEventListener("pointerdown", resume, true);
            window.removeEventListener("keydown", resume, true);
          };
        }
      }
      return ctx;
    };
    const every = intervalMs || 100;
    let last = 0;
    const tick = () => {
      const now = performance.now();
      const out = {};
      for (const [key, n] of nodes) {
        n.an.getFloatTimeDomainData(n.buf);
        const since = Math.round(((now - Math.max(last, n.since)) / 1000) * ctx.sampleRate);
        const count = Math.min(n.buf.length, Math.max(1, since));
        let sum = 0;
        for (let i = n.buf.length - count; i < n.buf.length; i++) sum += n.buf[i] * n.buf[i];
        out[key] = Math.sqrt(sum / count);
      }
      last = now;
      try { held.fn(out); } catch (err) { console.error("Kibitz: level callback failed", err); }
    };
    function remove(key) {
      const n = nodes.get(key);
      if (!n) return;
      nodes.delete(key);
      try { n.src.disconnect(); } catch (_) { /* already gone */ }
      if (n.sink) n.sink.srcObject = null;
      if (!nodes.size && timer !== null) { clearInterval(timer); timer = null; }
    }
    function add(key, track) {
      remove(key);
      const stream = new MediaStream([track]);
      const src = context().createMediaStreamSource(stream);
      const an = ctx.createAnalyser();
      // Smallest power of two holding two intervals of samples (fftSize tops out at 32768).
      const span = Math.ceil((2 * every / 1000) * ctx.sampleRate);
      an.fftSize = Math.min(32768, 2 ** Math.ceil(Math.log2(span)));
      src.connect(an);
      // Chromium feeds a *remote* WebRTC track into Web Audio only while a media element plays it.
      let sink = null;
      if (track.remote !== false) {
        sink = new Audio();
        sink.muted = true;
        sink.srcObject = stream;
        sink.play().catch(() => {});
      }
      nodes.set(key, { src, an, sink, buf: new Float32Array(an.fftSize), since: performance.now() });
      if (timer === null) { last = performance.now(); timer = setInterval(tick, every); }
    }
    function stop() {
      for (const key of [...nodes.keys()]) remove(key);
      if (resumeOff) resumeOff();
      if (ctx) ctx.close().catch(() => {});
      ctx = null;
      held.free();
    }
    return { add, remove, stop, get watching() { return nodes.size; }, get state() { return ctx ? ctx.state : "none"; } };
  }

  /** Run fn when the page is going away (tab closed, navigated, bfcache). Returns off(). */
  function onPageHide(fn) {
    return listen(window, "pagehide", fn);
  }

  /** Bytes for RTCDataChannel.send: a fresh ArrayBuffer copy of a Python bytes-like's Uint8Array. */
  function toArrayBuffer(u8) {
    return u8.buffer.slice(u8.byteOffset, u8.byteOffset + u8.byteLength);
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
    listen, listenData, pyText, timer, getUserMedia, getDisplayMedia, blackVideoTrack, silentAudioTrack,
    onPageHide, toArrayBuffer, setStreamTrack, levelMeter, pbkdf2Sha256, aesGcm,
    /** Callback copies still held by listeners/timers (leak checks in tests). */
    liveProxies: () => live,
  };
})();
