// What the table needs from the room, and who deals: the twin of whist/port.py.
// A port is { selfId(), participants(), broadcast(data), sendTo(id, data) (throws when refused),
// callLater(seconds, fn) → {cancel()}, randomHex(nbytes) }.
import { UID_RE } from "./rules.mjs";

export const DEFAULT_OPTIONS = Object.freeze({
  botDelay: 0.7, awayGrace: 10.0, startDelay: 2.0, nextDelay: 8.0, phaseTimeout: 15.0, autoNext: true,
});
export const FAST_OPTIONS = Object.freeze({
  botDelay: 0.05, awayGrace: 1.0, startDelay: 0.2, nextDelay: 0.5, phaseTimeout: 3.0, autoNext: true,
});

export function whistMeta(p) {
  const w = p && p.meta && typeof p.meta === "object" ? p.meta.whist : null;
  return w && typeof w === "object" && !Array.isArray(w) ? w : {};
}

export const isAgent = (p) => p.kind === "agent" || !!(p.meta && p.meta.role === "agent");

export function uidInRoster(p) {
  const uid = whistMeta(p).uid;
  return !isAgent(p) && typeof uid === "string" && UID_RE.test(uid) ? uid : null;
}

export function watchRequest(p) {
  const seat = whistMeta(p).watch;
  return isAgent(p) && Number.isInteger(seat) && seat >= 0 && seat <= 3 ? seat : null;
}

const pairLess = (a, b) => (a[0] !== b[0] ? a[0] < b[0] : a[1] < b[1]);

/** The table's authority: the room's host if it plays whist, else the lowest seat uid. */
export function elect(participants) {
  const people = [], hosts = [];
  for (const p of participants) {
    const uid = uidInRoster(p);
    if (uid !== null) {
      people.push([uid, String(p.id)]);
      if (p.role === "host") hosts.push([uid, String(p.id)]);
    }
  }
  const pool = hosts.length ? hosts : people;
  if (!pool.length) return null;
  return pool.reduce((m, x) => (pairLess(x, m) ? x : m))[1];
}

export function randomHex(nbytes) {
  const bytes = crypto.getRandomValues(new Uint8Array(nbytes));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
