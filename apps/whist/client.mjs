// One seat's (or one watcher's) side of the table: the twin of whist/client.py.
import { Deal, commitment, legalMoves } from "./rules.mjs";
import { verifyDeal } from "./verify.mjs";
import { msg } from "./wire.mjs";

const KEEP = 6;

function trim(map) {
  while (map.size > KEEP) map.delete(map.keys().next().value);
}

export class Client {
  constructor(uid, watch, rand, toDealer, broadcast) {
    this.uid = uid;
    this.watch = watch;
    this.rand = rand;
    this.toDealer = toDealer;
    this.broadcast = broadcast;
    this.pub = null;
    this.hands = new Map(); // deal id -> {seat, cards}
    this.seeds = new Map();
    this.revealed = new Set();
    this.seen = new Map(); // deal id -> Map(uid -> commitment it sent us)
    this.checks = new Map();
    this.lastCheck = null;
    this.error = null;
  }

  onState(pub) {
    const old = this.pub;
    if (old !== null && old.table === pub.table && pub.v <= old.v) return false;
    this.pub = pub;
    const deal = pub.deal;
    if (!deal) return true;
    const did = deal.id;
    const mine = this.uid !== null && deal.contributors.includes(this.uid) && this.uid !== pub.auth;
    if (mine && deal.phase === "commit" && !this.seeds.has(did)) {
      const seed = this.rand(32);
      this.seeds.set(did, seed);
      trim(this.seeds);
      const c = commitment(did, this.uid, seed);
      if (!this.seen.has(did)) this.seen.set(did, new Map());
      this.seen.get(did).set(this.uid, c);
      trim(this.seen);
      this.broadcast(msg("commit", { deal: did, uid: this.uid, c }));
    }
    if (mine && deal.phase === "seed" && this.seeds.has(did) && !this.revealed.has(did)) {
      this.revealed.add(did);
      const problem = this.commitProblem(deal);
      if (problem) this.record({ deal: did, ok: false, reason: problem });
      else this.toDealer(msg("seed", { deal: did, seed: this.seeds.get(did) }));
    }
    if (deal.phase === "done" && deal.reveal && !this.checks.has(did)) {
      const hand = this.hands.get(did);
      const seen = this.seen.get(did);
      this.record(verifyDeal(deal, {
        uid: this.uid,
        seed: this.seeds.has(did) ? this.seeds.get(did) : null,
        hand: hand ? [hand.seat, [...hand.cards]] : null,
        seenCommits: seen ? Object.fromEntries(seen) : null,
      }));
    }
    return true;
  }

  commitProblem(deal) {
    const seen = this.seen.get(String(deal.id)) || new Map();
    for (const u of [...seen.keys()].sort()) {
      if (deal.commits[u] !== seen.get(u)) {
        const who = u === this.uid ? "our" : `${u}'s`;
        return `the dealer published another commitment than ${who}: seed withheld`;
      }
    }
    return "";
  }

  record(check) {
    this.checks.set(String(check.deal), check);
    trim(this.checks);
    this.lastCheck = check;
  }

  onHand(m) {
    const pub = this.pub;
    const seat = m.seat;
    const ok = this.watch !== null ? seat === this.watch
      : pub !== null && this.uid !== null && pub.seats[seat].uid === this.uid;
    if (!ok) return false;
    this.hands.set(String(m.deal), { seat, cards: [...m.cards] });
    trim(this.hands);
    return true;
  }

  onCommit(senderUid, m) {
    if (senderUid === null || m.uid !== senderUid || senderUid === this.uid) return;
    const did = String(m.deal);
    if (!this.seen.has(did)) this.seen.set(did, new Map());
    const per = this.seen.get(did);
    if (per.size < 8 && !per.has(senderUid)) per.set(senderUid, String(m.c));
    trim(this.seen);
  }

  onError(m) { this.error = { code: m.code, text: m.text }; }

  seat() {
    if (this.pub === null || this.uid === null) return null;
    const i = this.pub.seats.findIndex((s) => s.uid === this.uid);
    return i < 0 ? null : i;
  }

  handRecord() {
    const deal = this.pub ? this.pub.deal : null;
    return deal ? this.hands.get(deal.id) || null : null;
  }

  hand() {
    const rec = this.handRecord();
    if (rec === null || this.pub === null) return [];
    const gone = new Set(playedBy(this.pub.deal, rec.seat));
    return rec.cards.filter((c) => !gone.has(c));
  }

  legal() {
    const deal = this.pub ? this.pub.deal : null;
    const rec = this.handRecord();
    if (!deal || rec === null || deal.phase !== "play" || deal.turn !== rec.seat) return [];
    if (this.watch === null && this.seat() !== rec.seat) return [];
    return legalMoves(this.hand(), deal.trick);
  }
}

const mod4 = (x) => ((x % 4) + 4) % 4;

export function playedBy(deal, seat) {
  const out = [];
  for (const t of deal.tricks) out.push(String(t.cards[mod4(seat - t.leader)]));
  if (deal.trick.length) {
    const i = mod4(seat - deal.leader);
    if (i < deal.trick.length) out.push(String(deal.trick[i]));
  }
  return out;
}

export function replay(deal, hands) {
  const d = new Deal(deal.dealer, hands, deal.turnup);
  d.leader = (deal.dealer + 1) % 4;
  for (const t of deal.tricks) t.cards.forEach((card, i) => d.play((d.leader + i) % 4, card));
  deal.trick.forEach((card, i) => d.play((d.leader + i) % 4, card));
  return d;
}
