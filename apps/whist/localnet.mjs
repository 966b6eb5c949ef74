// A tiny deterministic room for tables: the twin of whist/localnet.py (read its docstring).
import { sha256Hex } from "./rules.mjs";
import { FAST_OPTIONS } from "./port.mjs";
import { Table } from "./table.mjs";

export function seededHex(seed, counter, nbytes) {
  let out = "";
  for (let block = 0; out.length < nbytes * 2; block++) out += sha256Hex(`${seed}:${counter}:${block}`);
  return out.slice(0, nbytes * 2);
}

/** JSON with sorted keys and no spaces: json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False). */
export function canonical(x) {
  if (Array.isArray(x)) return "[" + x.map(canonical).join(",") + "]";
  if (x !== null && typeof x === "object") {
    return "{" + Object.keys(x).sort().map((k) => JSON.stringify(k) + ":" + canonical(x[k])).join(",") + "}";
  }
  return JSON.stringify(x);
}

class LocalPort {
  constructor(net, member) { this.net = net; this.member = member; this.counter = 0; }
  selfId() { return this.member; }
  participants() { return this.net.roster(this.member); }
  broadcast(data) { for (const other of this.net.order) if (other !== this.member) this.net.post(this.member, other, data); }
  sendTo(peer, data) {
    if (!this.net.members.has(peer)) { const e = new Error(`${peer} is not in the room`); e.name = "KeyError"; throw e; }
    if (this.net.noDirected.has(peer)) { const e = new Error(`${peer} may not receive directed messages`); e.name = "PermissionError"; throw e; }
    this.net.post(this.member, peer, data);
  }
  callLater(delay, fn) { return this.net.timer(delay, fn); }
  randomHex(nbytes) { this.counter += 1; return seededHex(this.member, this.counter, nbytes); }
}

export class LocalNet {
  constructor() {
    this.now = 0;
    this.seq = 0;
    this.timers = [];
    this.members = new Map();
    this.order = [];
    this.tables = new Map();
    this.inbox = [];
    this.log = [];
    this.noDirected = new Set();
  }

  roster(viewer) { return this.order.map((m) => ({ ...this.members.get(m), isSelf: m === viewer })); }

  join(member, { name, key = null, watch = null, agent = false, host = false, sit = true, options = FAST_OPTIONS,
    TableClass = Table, ...tableKw }) {
    const meta = { whist: agent ? { watch } : { uid: key ? uidOfKey(key) : null } };
    if (agent) meta.role = "agent";
    this.members.set(member, { id: member, name, role: host ? "host" : "guest", kind: agent ? "agent" : "human", meta });
    this.order.push(member);
    const port = new LocalPort(this, member);
    const table = new TableClass(port, { key, sit, watch, options, ...tableKw });
    this.tables.set(member, table);
    this.rosterChanged();
    return table;
  }

  leave(member) {
    this.members.delete(member);
    this.order.splice(this.order.indexOf(member), 1);
    const table = this.tables.get(member);
    this.tables.delete(member);
    if (table.dealer !== null) table.dealer.stop();
    this.inbox = this.inbox.filter((d) => d[1] !== member);
    this.rosterChanged();
  }

  rosterChanged() {
    for (const m of [...this.order]) if (this.tables.has(m)) this.tables.get(m).onParticipants(this.roster(m));
    this.pump();
  }

  post(frm, to, data) { this.inbox.push([frm, to, JSON.stringify(data)]); }

  timer(delay, fn) {
    const t = { cancelled: false, cancel() { this.cancelled = true; } };
    this.seq += 1;
    this.timers.push([this.now + delay, this.seq, t, fn]);
    this.timers.sort((a, b) => (a[0] !== b[0] ? a[0] - b[0] : a[1] - b[1]));
    return t;
  }

  pump() {
    while (this.inbox.length) {
      const [frm, to, text] = this.inbox.shift();
      if (!this.tables.has(to)) continue;
      const data = JSON.parse(text);
      this.log.push({ at: Math.round(this.now * 1000), from: frm, to, data });
      this.tables.get(to).onMessage(data, frm);
    }
  }

  fireNext() {
    const [at, , t, fn] = this.timers.shift();
    if (t.cancelled) return;
    this.now = at;
    fn();
    this.pump();
  }

  run(until) {
    this.pump();
    while (this.timers.length && this.timers[0][0] <= until) this.fireNext();
    this.now = Math.max(this.now, until);
  }
}

import { uidOf as uidOfKey } from "./rules.mjs";
