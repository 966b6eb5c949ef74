// The page's end of the engine bridge (the engine's end: engine/kibitz/backends/page_bridge.py).
//
// The engine runs in a dedicated Worker; RTCPeerConnection, capture, MediaStream and Web Audio
// exist only on the page's thread. The engine drives them here by handle: it sends small JSON
// messages (new / call / get / set / on / off / drop) and gets replies and events back. This file
// knows no WebRTC logic: it runs what it is told, in order, and describes the few kinds of object
// the engine reads synchronously (a peer connection's state, a transceiver's mid, a track's kind).
//
// RTCDataChannels never stay here when they can move: one created by `createDataChannel` or
// announced by a `datachannel` event is transferred to the Worker in that same task, so app
// messages run no code on the page's thread. If a transfer is impossible (a browser without it,
// the engine running on this thread, or `relay: true` in the test flags), the channel stays and
// its events and sends are relayed instead.

function createPageBridge(send, root, opts) {
  const handles = new Map([[0, root]]); // handle → object; 0 is the page shim
  const ids = new WeakMap(); // object → its handle
  const sentCount = new Map(); // handle → times sent to the engine (a drop must match it)
  const listeners = new Map(); // listener id → off()
  const relayed = new Map(); // handle → { dc, sent, reportDue }
  let next = 0; // the page allocates negative handles, the engine positive ones
  let transfer = !opts.relay; // transfer data channels (else relay them)
  let closed = false;
  const G = globalThis;
  const is = (obj, name) => typeof G[name] === "function" && obj instanceof G[name];
  const CTORS = new Set(["RTCPeerConnection", "MediaStream"]);

  const errorOf = (err) => [String((err && err.name) || "Error"), String((err && err.message) || err)];

  function store(h, obj) {
    handles.set(h, obj);
    if (obj !== null && (typeof obj === "object" || typeof obj === "function")) ids.set(obj, h);
  }

  function handleOf(obj) {
    let h = ids.get(obj);
    if (h === undefined || handles.get(h) !== obj) { h = --next; store(h, obj); }
    sentCount.set(h, (sentCount.get(h) || 0) + 1);
    return h;
  }

  function kindOf(obj) {
    if (is(obj, "MediaStreamTrack")) return "track";
    if (is(obj, "RTCRtpTransceiver")) return "transceiver";
    if (is(obj, "RTCPeerConnection")) return "pc";
    if (is(obj, "RTCDataChannel")) return "dc";
    return "object";
  }

  /** What the engine may read of an object without asking: refreshed with every reply and event. */
  function describe(obj, out) {
    switch (kindOf(obj)) {
      case "pc": return { connectionState: obj.connectionState, iceConnectionState: obj.iceConnectionState,
        signalingState: obj.signalingState, transceivers: obj.getTransceivers().map((t) => ref(t, out)),
        remoteFingerprint: remoteFingerprintOf(obj) };
      case "transceiver": return { mid: obj.mid, direction: obj.direction, currentDirection: obj.currentDirection,
        kind: obj.receiver.track.kind, track: ref(obj.receiver.track, out) };
      case "track": return { kind: obj.kind, id: obj.id, readyState: obj.readyState, enabled: obj.enabled };
      case "dc": return describeChannel(obj);
      default: return undefined;
    }
  }

  function describeChannel(dc) {
    const r = relayed.get(ids.get(dc));
    return { label: dc.label, readyState: dc.readyState, bufferedAmount: dc.bufferedAmount,
      bufferedAmountLowThreshold: dc.bufferedAmountLowThreshold, sent: r ? r.sent : 0 };
  }

  function ref(obj, out) {
    const h = handleOf(obj);
    const d = describe(obj, out);
    return d === undefined ? { $ref: h, $t: kindOf(obj) } : { $ref: h, $t: kindOf(obj), $d: d };
  }

  /** A value for the engine: plain data as is, copyable-by-JSON objects as JSON, the rest by handle. */
  function toWire(v, out) {
    if (v === null || v === undefined) return null;
    const t = typeof v;
    if (t === "string" || t === "number" || t === "boolean") return v;
    if (t !== "object") return null;
    if (Array.isArray(v)) return v.map((x) => toWire(x, out));
    if (is(v, "RTCDataChannel")) return channel(v, out);
    if (is(v, "RTCStatsReport")) return [...v.values()];
    const proto = Object.getPrototypeOf(v);
    if (proto === Object.prototype || proto === null) {
      const o = {};
      for (const [k, x] of Object.entries(v)) o[k] = toWire(x, out);
      return o;
    }
    if (typeof v.toJSON === "function" && kindOf(v) === "object") return v.toJSON();
    return ref(v, out);
  }

  /** The engine's value for a call: handles back to objects, callbacks to functions. */
  function fromWire(v) {
    if (v === null || typeof v !== "object") return v;
    if (Array.isArray(v)) return v.map(fromWire);
    if (typeof v.$ref === "number") {
      if (!handles.has(v.$ref)) throw new Error(`Kibitz bridge: no handle ${v.$ref}`);
      return handles.get(v.$ref);
    }
    if (typeof v.$cb === "number") {
      const id = v.$cb;
      return (...args) => post({ t: "cb", id, args: args.map((a) => toWire(a, null)) });
    }
    const o = {};
    for (const [k, x] of Object.entries(v)) o[k] = fromWire(x);
    return o;
  }

  // ---- data channels: transferred, or relayed

  function channel(dc, out) {
    dc.binaryType = "arraybuffer";
    if (transfer && out) {
      const ph = { $dc: out.channels.length };
      out.channels.push(dc);
      out.placeholders.push(ph);
      return ph;
    }
    return relay(dc);
  }

  function relay(dc) {
    const h = handleOf(dc);
    if (!relayed.has(h)) {
      const r = { dc, sent: 0, reportDue: false, offs: [] };
      relayed.set(h, r);
      const on = (type, fn) => { dc.addEventListener(type, fn); r.offs.push(() => dc.removeEventListener(type, fn)); };
      const state = (type, v) => post({ t: "dc", h, type, d: describeChannel(dc), v });
      on("open", () => state("open"));
      on("bufferedamountlow", () => state("bufferedamountlow"));
      on("error", (ev) => state("error", ev && ev.error ? String(ev.error.message || ev.error) : "data channel error"));
      on("close", () => { state("close"); for (const off of r.offs) off(); relayed.delete(h); });
      on("message", (ev) => send(["d", h, ev.data]));
    }
    return { $ref: h, $t: "dc", $d: describeChannel(dc) };
  }

  /** The engine sends on a relayed channel; the page reports the buffer once per burst. */
  function relaySend(h, data) {
    const r = relayed.get(h);
    if (!r) return;
    try { r.dc.send(data); } catch (_) { return; } // closed under us: the close event follows
    r.sent += typeof data === "string" ? data.length : data.byteLength;
    if (!r.reportDue) {
      r.reportDue = true;
      setTimeout(() => { r.reportDue = false; post({ t: "dc", h, type: "state", d: describeChannel(r.dc) }); }, 0);
    }
  }

  // ---- posting to the engine

  function post(body, out) {
    if (closed) return;
    if (!out || !out.channels.length) { send(JSON.stringify(body)); return; }
    if (transfer) {
      try {
        send({ text: JSON.stringify(body), extras: out.channels }, out.channels);
        return;
      } catch (err) {
        transfer = false; // cannot transfer here: relay from now on
        console.warn(`Kibitz: data channels stay on the page's thread (${err && err.name}); relaying them`);
      }
    }
    out.placeholders.forEach((ph, i) => { delete ph.$dc; Object.assign(ph, relay(out.channels[i])); });
    send(JSON.stringify(body));
  }

  const newOut = () => ({ channels: [], placeholders: [] });

  function reply(msg, target, ok, value) {
    const out = newOut();
    const body = { t: "reply", id: msg.id, ok };
    if (ok) body.v = toWire(value, out); else body.e = errorOf(value);
    const d = target === undefined ? undefined : describe(target, out);
    if (d !== undefined) body.d = d;
    post(body, out);
  }

  // ---- running the engine's messages

  function target(h) {
    if (!handles.has(h)) throw new Error(`Kibitz bridge: no handle ${h}`);
    return handles.get(h);
  }

  function call(msg) {
    let obj;
    let result;
    try {
      obj = target(msg.h);
      const fn = obj[msg.m];
      if (typeof fn !== "function") throw new TypeError(`${msg.m} is not a method here`);
      result = fn.apply(obj, fromWire(msg.args || []));
    } catch (err) {
      if (msg.id !== undefined) reply(msg, obj, false, err);
      else console.warn(`Kibitz bridge: ${msg.m} failed`, err);
      return;
    }
    if (msg.ret !== undefined) { store(msg.ret, result); return; }
    const thenable = result !== null && typeof result === "object" && typeof result.then === "function";
    if (msg.id === undefined) {
      if (thenable) result.then(null, (err) => console.warn(`Kibitz bridge: ${msg.m} failed`, err));
      return;
    }
    // A synchronous result is answered in this task (a new data channel must be transferred now).
    if (thenable) result.then((v) => reply(msg, obj, true, v), (err) => reply(msg, obj, false, err));
    else reply(msg, obj, true, result);
  }

  function listen(msg) {
    const obj = target(msg.h);
    const pick = msg.pick || [];
    const handler = (ev) => {
      const out = newOut();
      const v = {};
      for (const field of pick) v[field] = toWire(ev[field], out);
      const body = { t: "event", id: msg.id, v };
      const d = describe(obj, out);
      if (d !== undefined) body.d = d;
      post(body, out);
    };
    obj.addEventListener(msg.type, handler);
    listeners.set(msg.id, () => obj.removeEventListener(msg.type, handler));
  }

  function run(msg) {
    switch (msg.t) {
      case "new": {
        if (!CTORS.has(msg.ctor) || typeof G[msg.ctor] !== "function") throw new Error(`no ${msg.ctor} here`);
        const args = fromWire(msg.args || []);
        const cert = msg.ctor === "RTCPeerConnection" && opts.certificate ? opts.certificate() : null;
        // Every peer connection presents this page's one certificate (widget/identity.js).
        if (cert) args[0] = { ...(args[0] || {}), certificates: [cert] };
        const made = new G[msg.ctor](...args);
        if (msg.ctor === "RTCPeerConnection") watchRemoteCertificate(made);
        store(msg.h, made);
        break;
      }
      case "call": call(msg); break;
      case "get": store(msg.ret, target(msg.h)[msg.p]); break;
      case "set": target(msg.h)[msg.p] = fromWire(msg.v); break;
      case "on": listen(msg); break;
      case "off": { const off = listeners.get(msg.id); listeners.delete(msg.id); if (off) off(); break; }
      case "drop": {
        if ((sentCount.get(msg.h) || 0) !== msg.n) break; // a newer reference is on its way
        const obj = handles.get(msg.h);
        handles.delete(msg.h);
        sentCount.delete(msg.h);
        if (obj !== null && typeof obj === "object" && ids.get(obj) === msg.h) ids.delete(obj);
        break;
      }
      default: throw new Error(`unknown bridge message ${msg.t}`);
    }
  }

  return {
    /** One message from the engine (parsed JSON). Never throws. */
    receive(msg) {
      try { run(msg); } catch (err) { console.warn("Kibitz bridge:", err && err.message, msg); }
    },
    relaySend,
    toWire: (v) => toWire(v, null),
    fromWire,
    /** A handle for `obj` (test hooks hand page objects to Python this way). */
    handleOf,
    get live() { return handles.size - 1; },
    get relaying() { return !transfer; },
    /** The engine is gone or the page is hiding: close every peer connection at once and stop
     * this page's own tracks (no waiting for the engine). `forget` also empties the tables. */
    closeAll(forget) {
      for (const obj of handles.values()) {
        if (is(obj, "RTCPeerConnection") && obj.signalingState !== "closed") { try { obj.close(); } catch (_) { /* gone */ } }
      }
      for (const r of relayed.values()) { try { r.dc.close(); } catch (_) { /* gone */ } }
      root.stopLocal();
      if (forget) {
        closed = true;
        for (const off of listeners.values()) off();
        listeners.clear();
        relayed.clear();
        handles.clear();
        handles.set(0, root);
      }
    },
  };
}
