// One client at the whist table: elects the dealer, routes messages, runs the dealer when it is us.
// The twin of whist/table.py (same queue, same order of deliveries).
import { Client } from "./client.mjs";
import { Dealer } from "./dealer.mjs";
import { DEFAULT_OPTIONS, elect, uidInRoster } from "./port.mjs";
import { uidOf } from "./rules.mjs";
import { FROM_DEALER, Malformed, TO_DEALER, check, msg } from "./wire.mjs";

export class Table {
  constructor(port, { key = null, sit = true, watch = null, options = DEFAULT_OPTIONS, DealerClass = Dealer,
    onChange = null } = {}) {
    this.port = port;
    this.key = key;
    this.uid = key ? uidOf(key) : null;
    this.wantSeat = sit && this.uid !== null;
    this.opts = options;
    this.DealerClass = DealerClass;
    this.onChange = onChange;
    this.me = port.selfId();
    this.people = [];
    this.auth = null;
    this.dealer = null;
    this.client = new Client(this.uid, watch, (n) => port.randomHex(n), (m) => this.toDealer(m), (m) => this.clientBroadcast(m));
    this.queue = [];
    this.dropped = new Map();
    this.draining = false;
    this.helloMark = ["*", 0];
    this.helloSent = true;
    // the dealer's outbox
    this.outbox = { send: (member, data) => this.send(member, data), broadcast: (data) => this.broadcast(data) };
  }

  count(reason) { this.dropped.set(reason, (this.dropped.get(reason) || 0) + 1); }

  // ---------------------------------------------------------------- events in

  onParticipants(people) {
    this.people = [...people];
    const auth = elect(this.people);
    if (auth !== this.auth) {
      this.auth = auth;
      if (this.dealer !== null && auth !== this.me) {
        this.dealer.stop();
        if (auth !== null) this.sendOrCount(auth, msg("handover", { pub: this.dealer.pub() }));
        this.dealer = null;
      }
      if (auth === this.me && this.dealer === null && this.uid !== null) {
        this.dealer = new this.DealerClass(this.port, this.outbox, this.uid, this.opts,
          (delay, fn) => this.schedule(delay, fn), this.client.pub);
      }
      if (auth !== null) {
        this.hello();
        this.helloMark = ["*", 0];
      }
    } else if (auth !== null && !this.helloSent) {
      this.hello(); // the last one was refused (our own roster entry was not in yet): again
    }
    if (this.dealer !== null) this.dealer.onRoster(this.people);
    this.drain();
  }

  onMessage(data, frm) {
    let m;
    try {
      m = check(data);
    } catch (exc) {
      if (exc instanceof Malformed) { this.count(exc.message); return; }
      throw exc;
    }
    if (m === null) return;
    this.queue.push(["in", frm, m]);
    this.drain();
  }

  // ---------------------------------------------------------------- actions

  play(card) {
    const deal = this.client.pub ? this.client.pub.deal : null;
    if (!deal || deal.phase !== "play") throw new Error("no deal in play");
    if (this.client.seat() === null || deal.turn !== this.client.seat()) throw new Error("it is not your turn");
    if (!this.client.legal().includes(card)) throw new Error(`${card} is not a legal play now`);
    this.act(msg("play", { deal: deal.id, card }));
  }
  sit(seat = -1) { this.wantSeat = true; this.act(msg("sit", { seat })); }
  stand() { this.wantSeat = false; this.act(msg("stand")); }
  newGame() { this.act(msg("newgame")); }
  nextDeal() { this.act(msg("next")); }
  allow(watcher, seat) { this.act(msg("allow", { watcher, seat })); }
  revoke(watcher) { this.act(msg("revoke", { watcher })); }

  act(m) {
    if (this.uid === null) throw new Error("a watcher cannot act at the table");
    this.toDealer(m);
    this.drain();
  }

  // ---------------------------------------------------------------- what this seat knows

  view() {
    const c = this.client;
    return {
      uid: this.uid,
      seat: c.seat(),
      watch: c.watch,
      dealer: this.auth,
      isDealer: this.dealer !== null,
      pub: c.pub,
      hand: c.hand(),
      legal: c.legal(),
      check: c.lastCheck,
      error: c.error,
    };
  }

  // ---------------------------------------------------------------- routing

  toDealer(m) {
    if (this.auth === null) return false;
    if (this.auth === this.me) { this.queue.push(["dealer", this.me, m]); return true; }
    return this.sendOrCount(this.auth, m);
  }

  sendOrCount(peer, m) {
    try {
      this.port.sendTo(peer, m);
    } catch (exc) {
      this.count(`send: ${exc && exc.name ? exc.name : "Error"}`);
      return false;
    }
    return true;
  }

  clientBroadcast(m) {
    this.port.broadcast(m);
    if (this.dealer !== null) this.queue.push(["dealer", this.me, m]);
  }

  send(member, data) {
    if (member === this.me) { this.queue.push(["client", this.me, data]); return true; }
    try {
      this.port.sendTo(member, data);
    } catch (exc) {
      this.count(`send: ${exc && exc.name ? exc.name : "Error"}`);
      return false;
    }
    return true;
  }

  broadcast(data) {
    this.port.broadcast(data);
    this.queue.push(["client", this.me, data]);
  }

  schedule(delay, fn) {
    return this.port.callLater(delay, () => { fn(); this.drain(); });
  }

  drain() {
    if (this.draining) return;
    this.draining = true;
    let changed = false;
    try {
      for (;;) {
        if (this.dealer !== null) this.dealer.flush();
        if (!this.queue.length) break;
        const [where, frm, m] = this.queue.shift();
        changed = this.deliver(where, frm, m) || changed;
      }
    } finally {
      this.draining = false;
    }
    if (changed && this.onChange) this.onChange();
  }

  deliver(where, frm, m) {
    const t = m.t;
    if (where === "dealer") {
      if (this.dealer !== null) this.dealer.onMessage(frm, m);
      return false;
    }
    if (where === "client" || FROM_DEALER.has(t)) {
      if (frm !== this.auth) { this.count("not from the dealer"); return false; }
      if (t === "state") {
        const fresh = this.client.onState(m.pub);
        if (fresh) this.helloAgain(m.pub);
        return fresh;
      }
      if (t === "hand") return this.client.onHand(m);
      this.client.onError(m);
      return true;
    }
    if (t === "handover") {
      if (this.dealer !== null && this.uidOfMember(frm) === m.pub.auth) this.dealer.takeOver(m.pub);
      else this.count("handover not for us");
      return false;
    }
    if (t === "commit") {
      this.client.onCommit(this.uidOfMember(frm), m);
      if (this.dealer !== null) this.dealer.onMessage(frm, m);
      return false;
    }
    if (TO_DEALER.has(t)) {
      if (this.dealer === null) this.count("not the dealer");
      else this.dealer.onMessage(frm, m);
    }
    return false;
  }

  hello() {
    if (this.uid === null || this.key === null) return;
    this.helloSent = this.toDealer(msg("hello", { uid: this.uid, key: this.key }));
    if (this.wantSeat && this.helloSent) this.toDealer(msg("sit", { seat: -1 }));
  }

  helloAgain(pub) {
    if (this.uid === null || pub.here.includes(this.uid)) return;
    const [table, v] = this.helloMark;
    if (table === "*") this.helloMark = [pub.table, pub.v];
    else if (table !== pub.table || pub.v >= v + 5) { this.helloMark = [pub.table, pub.v]; this.hello(); }
  }

  uidOfMember(member) {
    const p = this.people.find((x) => x.id === member);
    return p ? uidInRoster(p) : null;
  }
}
