// The table's authority (the dealer): the twin of whist/dealer.py, line for line (read its
// docstring for the design). tests/vectors/whist.json holds both to the same messages.
import {
  Deal, IllegalMove, botPlay, commitment, deckSeed, honoursHeld, newScore, scoreDeal, shuffle, uidOf,
} from "./rules.mjs";
import { uidInRoster, watchRequest } from "./port.mjs";
import { msg } from "./wire.mjs";

export const SIT_ORDER = [2, 0, 1, 3];
const MAX_PENDING = 8;

class Seat {
  constructor(uid = null, name = "", away = false, leaving = false, next = null) {
    Object.assign(this, { uid, name, away, leaving, next });
  }
  toJSON() { return { uid: this.uid, name: this.name, away: this.away || this.leaving, next: this.next }; }
}

const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
const sortedEntries = (map) => [...map.entries()].sort((x, y) => cmp(x[0], y[0]));
const sortedObject = (map) => Object.fromEntries(sortedEntries(map));

export class Dealer {
  constructor(port, out, uid, options, schedule, adopt = null) {
    this.port = port;
    this.out = out;
    this.uid = uid;
    this.opts = options;
    this.schedule = schedule;
    this.me = port.selfId();
    this.table = "t" + port.randomHex(4);
    this.v = 0;
    this.seats = [0, 1, 2, 3].map(() => new Seat());
    this.score = newScore();
    this.dealNo = 0;
    this.dealerSeat = 3;
    this.members = new Map([[this.me, uid]]);
    this.names = new Map();
    this.present = new Map();
    this.pending = new Map();
    this.phase = "idle";
    this.attempt = 0;
    this.dealId = "";
    this.contributors = [];
    this.commits = new Map();
    this.seeds = new Map();
    this.excluded = new Set();
    this.game = null;
    this.result = null;
    this.allowed = new Map();
    this.handsSent = new Set();
    this.timer = null;
    this.turnTimer = null;
    this.turnKey = "";
    this.changed = true;
    this.refused = 0;
    if (adopt !== null) this.adopt(adopt);
  }

  // ---------------------------------------------------------------- state

  adopt(pub) {
    this.v = pub.v;
    pub.seats.forEach((s, i) => { this.seats[i] = new Seat(s.uid ?? null, s.name, false, false, s.next ?? null); });
    const sc = pub.score;
    this.score = { points: [...sc.points], games: [...sc.games], total: [...sc.total], game: sc.game, rubber: sc.rubber };
    const deal = pub.deal;
    if (deal) {
      this.dealNo = deal.no;
      this.dealerSeat = deal.dealer;
      if (deal.phase !== "done") {
        this.dealNo -= 1;
        this.dealerSeat = (this.dealerSeat + 3) % 4;
      }
    }
  }

  /** The dealer before us handed the table over: carry on with its seats and scores, unless we have dealt. */
  takeOver(pub) {
    const sc = this.score;
    const fresh = sc.points.concat(sc.games, sc.total).every((x) => x === 0) && sc.game === 1 && sc.rubber === 1;
    if (this.dealNo !== 0 || this.phase !== "idle" || !fresh) return;
    const sat = [];
    for (const s of this.seats) {
      if (!s.uid) continue;
      for (const [mid, u] of sortedEntries(this.members)) if (u === s.uid) sat.push([s.uid, mid]);
    }
    this.adopt(pub);
    const here = new Set(this.members.values());
    for (const s of this.seats) s.away = s.uid !== null && !here.has(s.uid);
    for (const [uid, mid] of sat) if (this.seatOf(uid) === null) this.sit(mid, uid, -1); // who sat with us keeps a seat
    this.changed = true;
    this.maybeStart();
  }

  pub() {
    const g = this.game;
    let deal = null;
    if (this.phase !== "idle") {
      deal = {
        id: this.dealId,
        no: this.dealNo,
        dealer: this.dealerSeat,
        phase: this.phase,
        contributors: [...this.contributors],
        commits: sortedObject(this.commits),
        turnup: g ? g.turnup : null,
        leader: g ? g.leader : -1,
        turn: g ? g.turn : -1,
        trick: g ? [...g.trick] : [],
        tricks: g ? g.tricks.map((t) => ({ ...t, cards: [...t.cards] })) : [],
        taken: g ? [...g.taken] : [0, 0],
        result: this.result ? { ...this.result } : null,
        reveal: this.phase === "done" ? sortedObject(this.seeds) : null,
      };
    }
    return {
      table: this.table,
      v: this.v,
      auth: this.uid,
      seats: this.seats.map((s) => s.toJSON()),
      here: [...new Set(this.members.values())].sort(),
      score: { ...this.score, points: [...this.score.points], games: [...this.score.games], total: [...this.score.total] },
      deal,
      watchers: sortedEntries(this.allowed).map(([id, seat]) => ({ id, seat })),
    };
  }

  flush() {
    if (this.changed) {
      this.changed = false;
      this.v += 1;
      this.out.broadcast(msg("state", { pub: this.pub() }));
    }
  }

  stop() {
    for (const t of [this.timer, this.turnTimer]) if (t) t.cancel();
    this.timer = this.turnTimer = null;
  }

  // ---------------------------------------------------------------- the room

  onRoster(people) {
    const before = new Set(this.present.keys());
    this.present = new Map(people.map((p) => [String(p.id), p]));
    if ([...this.present.keys()].some((id) => !before.has(id))) this.changed = true;
    for (const mid of [...this.members.keys()]) if (!this.present.has(mid)) this.members.delete(mid);
    for (const mid of [...this.pending.keys()]) if (!this.present.has(mid)) this.pending.delete(mid);
    for (const w of [...this.allowed.keys()]) {
      const p = this.present.get(w);
      if (!p || watchRequest(p) !== this.allowed.get(w)) { this.allowed.delete(w); this.changed = true; }
    }
    const here = new Set(this.members.values());
    for (const s of this.seats) {
      const away = s.uid !== null && !here.has(s.uid);
      if (away !== s.away) { s.away = away; this.changed = true; }
    }
    if ((this.phase === "commit" || this.phase === "seed") && this.contributors.some((u) => !here.has(u))) this.attemptDeal();
    for (const mid of [...this.pending.keys()]) {
      if (uidInRoster(this.present.get(mid)) !== null) {
        const queue = this.pending.get(mid);
        this.pending.delete(mid);
        for (const m of queue) this.handle(mid, m);
      }
    }
    this.sendWatchers();
    this.scheduleTurn();
    this.maybeStart();
  }

  onMessage(frm, m) {
    this.handle(frm, m);
    this.maybeStart();
  }

  maybeStart() {
    if (this.phase === "idle" && this.timer === null && this.seats.some((s) => s.uid !== null && !s.away)) {
      this.arm(this.opts.startDelay, () => this.nextDeal());
    }
  }

  handle(frm, m) {
    const t = m.t;
    if (!this.present.has(frm) || (t === "hello" && uidInRoster(this.present.get(frm)) === null)) {
      if (!this.pending.has(frm)) this.pending.set(frm, []);
      const queue = this.pending.get(frm);
      if (queue.length < MAX_PENDING) queue.push(m);
      return;
    }
    if (t === "hello") { this.hello(frm, m); return; }
    const uid = this.members.get(frm);
    if (uid === undefined) { this.refuse(frm, "hello", "say hello first"); return; }
    if (t === "sit") this.sit(frm, uid, m.seat);
    else if (t === "stand") this.stand(uid);
    else if (t === "commit") this.commit(uid, m);
    else if (t === "seed") this.seed(frm, uid, m);
    else if (t === "play") this.play(frm, uid, m);
    else if (t === "newgame") {
      if (this.seatOf(uid) === null && !this.isHost(frm)) {
        this.refuse(frm, "newgame", "only a player or the host can start a new game");
        return;
      }
      this.score = newScore();
      this.dealNo = 0;
      this.dealerSeat = 3;
      this.nextDeal();
    } else if (t === "next") {
      if (this.phase === "done" && (this.seatOf(uid) !== null || this.isHost(frm))) this.nextDeal();
    } else if (t === "allow") this.allow(frm, uid, String(m.watcher), m.seat);
    else if (t === "revoke") {
      const w = String(m.watcher);
      if (this.allowed.has(w) && this.mayAllow(frm, uid, this.allowed.get(w))) {
        this.allowed.delete(w);
        this.changed = true;
      }
    }
  }

  // ---------------------------------------------------------------- requests

  hello(frm, m) {
    const uid = String(m.uid);
    if (uidInRoster(this.present.get(frm)) !== uid || uidOf(String(m.key)) !== uid) {
      this.refuse(frm, "hello", "that seat key does not match your uid");
      return;
    }
    for (const [mid, u] of [...this.members.entries()]) if (u === uid && mid !== frm) this.members.delete(mid);
    this.members.set(frm, uid);
    this.names.set(uid, String(this.present.get(frm).name || "").slice(0, 64));
    this.changed = true;
    const seat = this.seatOf(uid);
    if (seat !== null) {
      this.seats[seat].away = false;
      this.seats[seat].name = this.names.get(uid);
      if (this.phase === "play") this.sendHand(frm, seat);
      this.scheduleTurn();
    }
  }

  sit(frm, uid, seat) {
    const current = this.seatOf(uid);
    if (seat === -1) {
      if (current !== null || this.seats.some((s) => s.next === uid)) return;
      const free = SIT_ORDER.filter((i) => this.seats[i].uid === null && this.seats[i].next === null);
      if (!free.length) { this.refuse(frm, "sit", "every seat is taken"); return; }
      seat = free[0];
    }
    if (current === seat) return;
    const target = this.seats[seat];
    if ((target.uid !== null && !target.leaving) || (target.next !== null && target.next !== uid)) {
      this.refuse(frm, "sit", "that seat is taken");
      return;
    }
    for (const s of this.seats) if (s.next === uid) s.next = null;
    this.changed = true;
    if ((this.phase === "idle" || this.phase === "done") && target.uid === null) {
      if (current !== null) this.free(current);
      target.uid = uid; target.name = this.names.get(uid) ?? ""; target.away = false;
    } else {
      target.next = uid;
    }
  }

  stand(uid) {
    for (const s of this.seats) if (s.next === uid) { s.next = null; this.changed = true; }
    const seat = this.seatOf(uid);
    if (seat === null) return;
    this.changed = true;
    if (this.phase === "idle" || this.phase === "done") this.free(seat);
    else { this.seats[seat].leaving = true; this.scheduleTurn(); }
  }

  commit(uid, m) {
    if (this.phase !== "commit" || m.deal !== this.dealId || m.uid !== uid
        || !this.contributors.includes(uid) || this.commits.has(uid)) return;
    this.commits.set(uid, String(m.c));
    this.changed = true;
    this.advance();
  }

  seed(frm, uid, m) {
    if (this.phase !== "seed" || m.deal !== this.dealId || !this.contributors.includes(uid) || this.seeds.has(uid)) return;
    if (commitment(this.dealId, uid, String(m.seed)) !== this.commits.get(uid)) {
      this.refuse(frm, "seed", "that seed does not match your commitment");
      return;
    }
    this.seeds.set(uid, String(m.seed));
    this.advance();
  }

  play(frm, uid, m) {
    const g = this.game;
    if (this.phase !== "play" || g === null || m.deal !== this.dealId) { this.refuse(frm, "play", "no deal in play"); return; }
    const seat = this.seatOf(uid);
    if (seat === null || seat !== g.turn || this.seats[seat].leaving) { this.refuse(frm, "play", "it is not your turn"); return; }
    try {
      g.play(seat, String(m.card));
    } catch (exc) {
      if (!(exc instanceof IllegalMove)) throw exc;
      this.refuse(frm, "play", exc.message);
      return;
    }
    this.afterPlay();
  }

  allow(frm, uid, watcher, seat) {
    const p = this.present.get(watcher);
    if (!p || watchRequest(p) !== seat) { this.refuse(frm, "allow", "no watcher asks for that seat"); return; }
    if (!this.mayAllow(frm, uid, seat)) {
      this.refuse(frm, "allow", "only that seat's player (or the host) can let it watch");
      return;
    }
    if (this.allowed.get(watcher) !== seat) { this.allowed.set(watcher, seat); this.changed = true; }
    this.sendWatchers();
  }

  mayAllow(frm, uid, seat) {
    const holder = this.seats[seat].uid;
    if (holder !== null) return holder === uid || this.isHost(frm);
    const hosted = [...this.present.values()].some((p) => p.role === "host");
    return this.isHost(frm) || (!hosted && frm === this.me);
  }

  // ---------------------------------------------------------------- the deal

  nextDeal() {
    this.disarm();
    this.seats.forEach((s, i) => {
      if (s.leaving) this.free(i);
      s = this.seats[i];
      if (s.next !== null && s.uid === null) {
        s.uid = s.next; s.name = this.names.get(s.next) ?? ""; s.next = null;
        s.away = ![...this.members.values()].includes(s.uid);
      }
    });
    this.changed = true;
    if (!this.seats.some((s) => s.uid !== null && !s.away)) {
      this.phase = "idle"; this.game = null; this.result = null;
      return;
    }
    this.dealNo += 1;
    this.dealerSeat = (this.dealerSeat + 1) % 4;
    this.excluded = new Set();
    this.attemptDeal();
  }

  attemptDeal() {
    this.disarm();
    this.attempt += 1;
    this.dealId = `${this.table}.${this.attempt}`;
    const here = new Set(this.members.values());
    const people = new Set(this.seats.map((s) => s.uid).filter((u) => u !== null && here.has(u) && !this.excluded.has(u)));
    people.add(this.uid);
    this.contributors = [...people].sort();
    const seed = this.port.randomHex(32);
    this.seeds = new Map([[this.uid, seed]]);
    this.commits = new Map([[this.uid, commitment(this.dealId, this.uid, seed)]]);
    this.phase = "commit"; this.game = null; this.result = null;
    this.handsSent = new Set();
    this.changed = true;
    this.arm(this.opts.phaseTimeout, () => this.phaseTimeout());
    this.advance();
  }

  phaseTimeout() {
    if (this.phase !== "commit" && this.phase !== "seed") return;
    const got = this.phase === "commit" ? this.commits : this.seeds;
    for (const u of this.contributors) if (!got.has(u)) this.excluded.add(u);
    this.attemptDeal();
  }

  advance() {
    if (this.phase === "commit" && this.contributors.every((u) => this.commits.has(u))) {
      this.phase = "seed";
      this.changed = true;
    }
    if (this.phase === "seed" && this.contributors.every((u) => this.seeds.has(u))) this.beginPlay();
  }

  /** The deal from the shuffled deck (a tampered dealer overrides this in the tests). */
  makeDeal(deck) { return Deal.fromDeck(deck, this.dealerSeat); }

  beginPlay() {
    this.disarm();
    this.game = this.makeDeal(shuffle(deckSeed(this.dealId, Object.fromEntries(this.seeds))));
    this.phase = "play";
    this.changed = true;
    this.seats.forEach((s, seat) => {
      if (s.uid === null) return;
      for (const [mid, u] of sortedEntries(this.members)) if (u === s.uid) this.sendHand(mid, seat);
    });
    this.sendWatchers();
    this.scheduleTurn();
  }

  sendHand(member, seat) {
    const g = this.game;
    const key = `${member}|${this.dealId}|${seat}`;
    if (g === null || this.handsSent.has(key)) return;
    const hand = msg("hand", { table: this.table, deal: this.dealId, seat, cards: [...g.hands[seat]] });
    if (this.out.send(member, hand)) this.handsSent.add(key);
  }

  sendWatchers() {
    if (this.phase === "play") for (const [w, seat] of sortedEntries(this.allowed)) this.sendHand(w, seat);
  }

  afterPlay() {
    this.changed = true;
    if (this.game.over) this.finish();
    else { this.sendWatchers(); this.scheduleTurn(); }
  }

  finish() {
    const g = this.game;
    this.cancelTurn();
    const honours = honoursHeld(g.hands, g.trump);
    [this.result, this.score] = scoreDeal(this.score, g.taken, honours);
    this.phase = "done";
    this.changed = true;
    if (this.opts.autoNext) this.arm(this.opts.nextDelay, () => this.nextDeal());
  }

  // ---------------------------------------------------------------- bots and turns

  scheduleTurn() {
    const g = this.game;
    if (this.phase !== "play" || g === null || g.over) { this.cancelTurn(); return; }
    const s = this.seats[g.turn];
    let delay;
    if (s.uid === null || s.leaving) delay = this.opts.botDelay;
    else if (s.away) delay = this.opts.awayGrace;
    else { this.cancelTurn(); return; }
    const key = `${this.dealId}|${g.played.reduce((n, p) => n + p.length, 0)}|${delay}`;
    if (key === this.turnKey && this.turnTimer !== null) return;
    this.cancelTurn();
    this.turnKey = key;
    this.turnTimer = this.schedule(delay, () => this.botTurn());
  }

  botTurn() {
    this.turnTimer = null;
    this.turnKey = "";
    const g = this.game;
    if (this.phase !== "play" || g === null || g.over) return;
    const s = this.seats[g.turn];
    if (s.uid === null || s.away || s.leaving) {
      g.play(g.turn, botPlay(g.hand(g.turn), g.trick, g.trump));
      this.afterPlay();
    }
  }

  cancelTurn() {
    if (this.turnTimer !== null) this.turnTimer.cancel();
    this.turnTimer = null;
    this.turnKey = "";
  }

  // ---------------------------------------------------------------- plumbing

  arm(delay, fn) {
    this.disarm();
    this.timer = this.schedule(delay, () => { this.timer = null; fn(); });
  }

  disarm() {
    if (this.timer !== null) this.timer.cancel();
    this.timer = null;
  }

  free(seat) {
    const queued = this.seats[seat].next;
    this.seats[seat] = new Seat(null, "", false, false, queued);
    for (const [w, s] of [...this.allowed.entries()]) if (s === seat) this.allowed.delete(w);
  }

  seatOf(uid) {
    const i = this.seats.findIndex((s) => s.uid === uid);
    return i < 0 ? null : i;
  }

  isHost(member) {
    const p = this.present.get(member);
    return !!p && p.role === "host" && uidInRoster(p) !== null;
  }

  refuse(frm, code, text) {
    this.refused += 1;
    this.out.send(frm, msg("error", { code, text }));
  }
}
