// The page's thin media helpers: what the engine (in its Worker) cannot touch itself. The page
// bridge (widget/bridge.js) exposes this object as handle 0, so the engine calls, for example,
// `captureTrack("mic")` and gets a handle to the track. Decisions stay in Python: which lane sends
// what, who is speaking; this only captures, clones, plays and measures.

const pageShim = (() => {
  /** Tracks this page made (captures, placeholders): stopped at once when the page hides or the
   * engine stops, without waiting for the engine (the back/forward cache decides right after
   * pagehide, and live capture keeps a page out of it). Remote tracks are not ours to stop. */
  const local = new Set();
  const keep = (track) => {
    local.add(track);
    track.addEventListener("ended", () => local.delete(track));
    const stop = track.stop.bind(track);
    track.stop = () => { local.delete(track); stop(); };
    return track;
  };

  function mediaError(err) {
    const e = new Error(`${err && err.name || "Error"}: ${err && err.message || err}`);
    e.name = (err && err.name) || "Error";
    return e;
  }

  /** One capture: "mic" (audio), "cam" (video) or "screen" (getDisplayMedia's video); rejects with
   * a named Error (NotAllowedError, NotFoundError, …). */
  async function captureTrack(source) {
    const md = navigator.mediaDevices;
    const screen = source === "screen";
    if (!md || !(screen ? md.getDisplayMedia : md.getUserMedia)) {
      throw mediaError({ name: "NotSupportedError", message: screen ? "no getDisplayMedia" : "no mediaDevices (insecure origin?)" });
    }
    let stream;
    try {
      stream = screen ? await md.getDisplayMedia({ video: true, audio: false })
        : await md.getUserMedia(source === "mic" ? { audio: true, video: false } : { audio: false, video: true });
    } catch (err) {
      throw mediaError(err);
    }
    const track = (source === "mic" ? stream.getAudioTracks() : stream.getVideoTracks())[0];
    for (const other of stream.getTracks()) if (other !== track) other.stop();
    if (!track) throw mediaError({ name: "NotFoundError", message: `no ${source} track` });
    return keep(track);
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

  // One AudioContext for the page (silence and the level meter): making one costs the page's thread
  // a device setup (tens of ms; hundreds on a loaded machine), so it is made once, when first needed.
  let audioCtx = null;
  let resumeOff = null;
  function audioContext() {
    if (audioCtx && audioCtx.state !== "closed") return audioCtx;
    audioCtx = new (window.AudioContext || window.webkitAudioContext)();
    if (audioCtx.state === "suspended") {
      // Autoplay policy: an AudioContext may only start after a user gesture.
      const ctx = audioCtx;
      const resume = () => { ctx.resume().catch(() => {}); };
      resume();
      window.addEventListener("pointerdown", resume, true);
      window.addEventListener("keydown", resume, true);
      resumeOff = () => {
        window.removeEventListener("pointerdown", resume, true);
        window.removeEventListener("keydown", resume, true);
      };
    }
    return audioCtx;
  }
  function closeAudio() {
    if (resumeOff) resumeOff();
    resumeOff = null;
    if (audioCtx) audioCtx.close().catch(() => {});
    audioCtx = null;
  }

  /** Set by the loader: hands a WritableStream of AudioData to the engine, which keeps it fed. */
  let pump = null;

  /** A silent audio track. Where the browser has MediaStreamTrackGenerator (Chromium), a generator
   * whose frames the engine writes from its Worker (making it costs ~1 ms; an AudioContext's first
   * device set-up blocks this thread 50 ms or more); elsewhere a zero-gain oscillator. */
  function silentAudioTrack() {
    if (pump && typeof MediaStreamTrackGenerator === "function") {
      const gen = new MediaStreamTrackGenerator({ kind: "audio" });
      pump(gen.writable);
      return gen;
    }
    const audioCtx = audioContext();
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

  const sources = {};
  /** A fresh placeholder for one link's lane: a clone of one shared source per kind, so N links
   * cost one canvas and one oscillator. The link stops its clone; the source lives on. */
  function placeholderTrack(kind) {
    let src = sources[kind];
    if (!src || src.readyState === "ended") src = sources[kind] = kind === "audio" ? silentAudioTrack() : blackVideoTrack(5);
    return keep(src.clone());
  }

  /** Stop the shared sources (the next link makes new ones). */
  function stopPlaceholders() {
    for (const kind of Object.keys(sources)) { sources[kind].stop(); delete sources[kind]; }
  }

  /** Make `track` the stream's only track of `kind` (null: none), in place, so a <video> bound to
   * the stream keeps playing across swaps and re-dials. */
  function setStreamTrack(stream, kind, track) {
    for (const t of stream.getTracks()) if (t.kind === kind && t !== track) stream.removeTrack(t);
    if (track && !stream.getTrackById(track.id)) stream.addTrack(track);
  }

  /** Audio levels for speaking detection: one shared AudioContext, one AnalyserNode per track,
   * one timer for all of them (~10 Hz), and one call to `onLevels({key: rms})` per tick — only
   * while at least one track is watched. The decision (threshold, hold) is the engine's.
   * Each level is the RMS of every sample since the previous tick: the analyser's window spans two
   * intervals, so a short sound between ticks (a clipped word, a 20 ms beep) is never missed. */
  function levelMeter(onLevels, intervalMs) {
    const nodes = new Map();
    let ctx = null;
    let timer = null;
    const context = () => { ctx = audioContext(); return ctx; };
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
      try { onLevels(out); } catch (err) { console.error("Kibitz: level callback failed", err); }
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
      if (!local.has(track)) {
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
      ctx = null;
    }
    return { add, remove, stop, get watching() { return nodes.size; }, get state() { return ctx ? ctx.state : "none" } };
  }

  /** Stop every track this page made (pagehide, or the engine stopped). */
  function stopLocal() {
    stopPlaceholders();
    for (const track of [...local]) track.stop();
    closeAudio();
  }

  return { captureTrack, placeholderTrack, stopPlaceholders, setStreamTrack, levelMeter, stopLocal,
    set pump(fn) { pump = fn; },
    get localTracks() { return local.size; } };
})();
