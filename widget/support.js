// What a browser must have for a call, checked before anything is downloaded. Pure (it reads only
// the global object it is given), so tests/unit/test_widget_support.py runs it under Node.

/** Null when `g` (a window) can run the engine and make calls; otherwise why not, in words. */
function browserSupport(g) {
  const missing = [];
  if (typeof g.RTCPeerConnection !== "function") missing.push("RTCPeerConnection (WebRTC)");
  if (typeof g.WebAssembly !== "object" || g.WebAssembly === null) missing.push("WebAssembly");
  if (typeof g.Worker !== "function" && typeof g.MessageChannel !== "function") missing.push("Worker");
  if (typeof g.WebSocket !== "function") missing.push("WebSocket");
  if (!missing.length) return null;
  return `Kibitz: this browser cannot make calls: it has no ${missing.join(", no ")}. ` +
    "Open this page in a current Chrome, Edge or Firefox.";
}
