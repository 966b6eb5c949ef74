// The table's messages and the checks every receiver runs first: the twin of whist/wire.py (its
// docstring lists the messages). check() returns the message, null when it is another app's data,
// or throws Malformed with the reason the message is counted under.
import { CARD_RE, DEAL_ID_RE, HEX64_RE, UID_RE, isCard } from "./rules.mjs";

export const NS = "whist";
export const TO_DEALER = new Set(["hello", "sit", "stand", "seed", "play", "next", "newgame", "allow", "revoke"]);
export const FROM_DEALER = new Set(["state", "hand", "error"]);
const PHASES = new Set(["commit", "seed", "play", "done"]);
const MAX_NAME = 64;
const MAX_TEXT = 200;
const PEER_MAX = 64;

export class Malformed extends Error {}

export const msg = (t, fields = {}) => ({ ns: NS, t, ...fields });

const isObj = (x) => x !== null && typeof x === "object" && !Array.isArray(x);

function int(x, lo, hi, what) {
  if (!Number.isInteger(x) || x < lo || x > hi) throw new Malformed(`${what} out of range`);
  return x;
}
function str(x, what, limit = MAX_NAME) {
  if (typeof x !== "string" || x.length > limit) throw new Malformed(`${what} not a string`);
  return x;
}
function re(x, pattern, what) {
  if (typeof x !== "string" || !pattern.test(x)) throw new Malformed(`bad ${what}`);
  return x;
}
function cards(x, what, lo, hi) {
  if (!Array.isArray(x) || x.length < lo || x.length > hi || !x.every(isCard)) throw new Malformed(`bad ${what}`);
  if (new Set(x).size !== x.length) throw new Malformed(`repeated card in ${what}`);
  return x;
}
function peer(x, what) {
  if (typeof x !== "string" || x.length === 0 || x.length > PEER_MAX) throw new Malformed(`bad ${what}`);
  return x;
}

export function check(data) {
  if (!isObj(data) || data.ns !== NS) return null;
  const m = { ...data };
  switch (m.t) {
    case "state": case "handover": checkPub(m.pub); break;
    case "hand":
      re(m.table, DEAL_ID_RE, "table"); re(m.deal, DEAL_ID_RE, "deal id"); int(m.seat, 0, 3, "seat");
      cards(m.cards, "hand", 13, 13); break;
    case "error": str(m.code, "code"); str(m.text, "text", MAX_TEXT); break;
    case "commit": re(m.deal, DEAL_ID_RE, "deal id"); re(m.uid, UID_RE, "uid"); re(m.c, HEX64_RE, "commitment"); break;
    case "hello": re(m.uid, UID_RE, "uid"); re(m.key, HEX64_RE, "seat key"); break;
    case "sit": int(m.seat, -1, 3, "seat"); break;
    case "stand": case "next": case "newgame": break;
    case "seed": re(m.deal, DEAL_ID_RE, "deal id"); re(m.seed, HEX64_RE, "seed"); break;
    case "play": re(m.deal, DEAL_ID_RE, "deal id"); re(m.card, CARD_RE, "card"); break;
    case "allow": peer(m.watcher, "watcher"); int(m.seat, 0, 3, "seat"); break;
    case "revoke": peer(m.watcher, "watcher"); break;
    default: throw new Malformed("unknown type");
  }
  return m;
}

function pair(x, what) {
  if (!Array.isArray(x) || x.length !== 2) throw new Malformed(`bad ${what}`);
  return x.map((v) => int(v, 0, 1_000_000, what));
}

export function checkPub(p) {
  if (!isObj(p)) throw new Malformed("state without pub");
  re(p.table, DEAL_ID_RE, "table");
  int(p.v, 0, 2 ** 50, "version");
  re(p.auth, UID_RE, "auth uid");
  if (!Array.isArray(p.seats) || p.seats.length !== 4) throw new Malformed("bad seats");
  for (const s of p.seats) {
    if (!isObj(s)) throw new Malformed("bad seat");
    if (s.uid !== null && s.uid !== undefined) re(s.uid, UID_RE, "seat uid");
    if (s.next !== null && s.next !== undefined) re(s.next, UID_RE, "queued uid");
    str(s.name, "seat name");
    if (typeof s.away !== "boolean") throw new Malformed("bad seat");
  }
  if (!Array.isArray(p.here) || p.here.length > 64) throw new Malformed("bad here");
  for (const uid of p.here) re(uid, UID_RE, "uid here");
  const score = p.score;
  if (!isObj(score)) throw new Malformed("bad score");
  for (const key of ["points", "games", "total"]) pair(score[key], "score");
  int(score.game, 1, 1_000_000, "game");
  int(score.rubber, 1, 1_000_000, "rubber");
  if (!Array.isArray(p.watchers) || p.watchers.length > 16) throw new Malformed("bad watchers");
  for (const w of p.watchers) {
    if (!isObj(w)) throw new Malformed("bad watcher");
    peer(w.id, "watcher");
    int(w.seat, 0, 3, "watcher seat");
  }
  if (p.deal !== null && p.deal !== undefined) checkDeal(p.deal);
  return p;
}

function checkDeal(d) {
  if (!isObj(d)) throw new Malformed("bad deal");
  re(d.id, DEAL_ID_RE, "deal id");
  int(d.no, 1, 1_000_000, "deal number");
  int(d.dealer, 0, 3, "dealer");
  if (!PHASES.has(d.phase)) throw new Malformed("bad phase");
  if (!Array.isArray(d.contributors) || d.contributors.length < 1 || d.contributors.length > 5) {
    throw new Malformed("bad contributors");
  }
  for (const uid of d.contributors) re(uid, UID_RE, "contributor");
  for (const key of ["commits", "reveal"]) {
    const table = d[key];
    if ((table === null || table === undefined) && key === "reveal") continue;
    if (!isObj(table) || Object.keys(table).length > 5) throw new Malformed(`bad ${key}`);
    for (const [uid, h] of Object.entries(table)) { re(uid, UID_RE, key); re(h, HEX64_RE, key); }
  }
  if (d.turnup !== null && d.turnup !== undefined) re(d.turnup, CARD_RE, "turn-up");
  int(d.leader, -1, 3, "leader");
  int(d.turn, -1, 3, "turn");
  cards(d.trick, "trick", 0, 3);
  if (!Array.isArray(d.tricks) || d.tricks.length > 13) throw new Malformed("bad tricks");
  for (const t of d.tricks) {
    if (!isObj(t)) throw new Malformed("bad trick");
    int(t.leader, 0, 3, "trick leader");
    int(t.winner, 0, 3, "trick winner");
    cards(t.cards, "trick", 4, 4);
  }
  pair(d.taken, "taken");
  if (d.result !== null && d.result !== undefined) {
    if (!isObj(d.result)) throw new Malformed("bad result");
    for (const key of ["tricks", "honours", "points"]) pair(d.result[key], "result");
  }
}
