// Classic (trump) whist as pure functions: cards, the fair shuffle, legal moves, tricks, scoring, bots.
// The JavaScript twin of apps/whist/whist/rules.py (read its docstring for the rules and scoring);
// tests/vectors/whist.json holds the two together (node --test tests/js/ and pytest both check it).
// SHA-256 is written out here so the page needs no WebCrypto (absent on plain-http LAN origins).

export const SUITS = "CDHS";
export const RANKS = "23456789TJQKA";
export const SEAT_NAMES = ["North", "East", "South", "West"];
export const SEAT_LETTERS = "NESW";
export const CARD_RE = /^[2-9TJQKA][CDHS]$/;
export const HEX64_RE = /^[0-9a-f]{64}$/;
export const UID_RE = /^[0-9a-f]{24}$/;
export const DEAL_ID_RE = /^[A-Za-z0-9.-]{1,64}$/;
export const GAME_POINTS = 5;
export const TRICKS = 13;
const HONOURS = "AKQJ";

export class IllegalMove extends Error {}

// ------------------------------------------------------------------------------------- sha256

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

/** SHA-256 of bytes (Uint8Array) → 32 bytes. */
export function sha256(bytes) {
  const n = bytes.length;
  const padded = new Uint8Array(((n + 9 + 63) >> 6) << 6);
  padded.set(bytes);
  padded[n] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(n / 0x20000000));
  view.setUint32(padded.length - 4, (n << 3) >>> 0);
  const h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c,
    0x1f83d9ab, 0x5be0cd19]);
  const w = new Uint32Array(64);
  for (let off = 0; off < padded.length; off += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(off + 4 * i);
    for (let i = 16; i < 64; i++) {
      const a = w[i - 15], b = w[i - 2];
      const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
      const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, hh] = h;
    for (let i = 0; i < 64; i++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (hh + S1 + ch + K[i] + w[i]) >>> 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & b) ^ (a & c) ^ (b & c);
      const t2 = (S0 + maj) >>> 0;
      hh = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
  }
  const out = new Uint8Array(32);
  const ov = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) ov.setUint32(4 * i, h[i]);
  return out;
}

const ENC = new TextEncoder();
export const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
export function fromHex(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
export const sha256Hex = (text) => toHex(sha256(ENC.encode(text)));

// ------------------------------------------------------------------------------------- cards

export const isCard = (x) => typeof x === "string" && CARD_RE.test(x);
export const suit = (card) => card[1];
export const rank = (card) => RANKS.indexOf(card[0]);
export const cardIndex = (card) => SUITS.indexOf(card[1]) * 13 + RANKS.indexOf(card[0]);
export const fullDeck = () => [...SUITS].flatMap((s) => [...RANKS].map((r) => r + s));
export const sortCards = (cards) => [...cards].sort((a, b) => cardIndex(a) - cardIndex(b));
export const sideOf = (seat) => seat % 2;
export const partner = (seat) => (seat + 2) % 4;

// ------------------------------------------------------------------------------ fair shuffle

export const uidOf = (key) => sha256Hex("whist/uid/v1\n" + key).slice(0, 24);
export const commitment = (dealId, uid, seed) => sha256Hex(`whist/commit/v1\n${dealId}\n${uid}\n${seed}`);
export function deckSeed(dealId, seeds) {
  const lines = Object.keys(seeds).sort().map((uid) => `${uid}:${seeds[uid]}\n`).join("");
  return sha256Hex(`whist/deck/v1\n${dealId}\n${lines}`);
}

export function shuffle(seedHex) {
  if (!HEX64_RE.test(seedHex)) throw new Error("a deck seed is 64 lower-case hex digits");
  const seed = fromHex(seedHex);
  const buf = new Uint8Array(36);
  buf.set(seed);
  const bv = new DataView(buf.buffer);
  let block = 0, words = [], at = 0;
  const next = () => {
    if (at === words.length) {
      bv.setUint32(32, block++);
      const d = new DataView(sha256(buf).buffer);
      words = Array.from({ length: 8 }, (_, i) => d.getUint32(4 * i));
      at = 0;
    }
    return words[at++];
  };
  const deck = fullDeck();
  for (let i = 51; i > 0; i--) {
    const n = i + 1;
    const limit = Math.floor(0x100000000 / n) * n;
    let x = next();
    while (x >= limit) x = next();
    const j = x % n;
    [deck[i], deck[j]] = [deck[j], deck[i]];
  }
  return deck;
}

export function dealHands(deck, dealer) {
  const hands = [[], [], [], []];
  deck.forEach((card, k) => hands[(dealer + 1 + k) % 4].push(card));
  return hands.map(sortCards);
}

// ------------------------------------------------------------------------------------ tricks

export function legalMoves(hand, trick) {
  if (!trick.length) return [...hand];
  const led = suit(trick[0]);
  const follow = hand.filter((c) => suit(c) === led);
  return follow.length ? follow : [...hand];
}

export function trickWinner(trick, trump) {
  let best = 0;
  for (let i = 1; i < trick.length; i++) {
    const c = trick[i], b = trick[best];
    if (suit(c) === suit(b)) { if (rank(c) > rank(b)) best = i; }
    else if (suit(c) === trump) best = i;
  }
  return best;
}

export function honoursHeld(hands, trump) {
  const out = [0, 0];
  hands.forEach((hand, seat) => {
    out[sideOf(seat)] += hand.filter((c) => suit(c) === trump && HONOURS.includes(c[0])).length;
  });
  return out;
}

// ----------------------------------------------------------------------------------- scoring

export const newScore = () => ({ points: [0, 0], games: [0, 0], total: [0, 0], game: 1, rubber: 1 });

/** Score one finished deal; returns [result, scoreAfter] (plain JSON, as the Python to_json()). */
export function scoreDeal(before, tricks, honours) {
  if (tricks[0] + tricks[1] !== TRICKS) throw new Error("a deal has 13 tricks");
  const pts = [...before.points];
  const got = [0, 0];
  const winner = tricks[0] > tricks[1] ? 0 : 1;
  const odd = tricks[winner] - 6;
  pts[winner] += odd;
  got[winner] += odd;
  let game = pts[winner] >= GAME_POINTS ? winner : null;
  if (game === null) {
    for (const side of [0, 1]) {
      const bonus = honours[side] === 4 ? 4 : honours[side] === 3 ? 2 : 0;
      if (bonus && before.points[side] !== GAME_POINTS - 1) { pts[side] += bonus; got[side] += bonus; }
    }
    if (pts[0] >= GAME_POINTS || pts[1] >= GAME_POINTS) game = pts[0] >= GAME_POINTS ? 0 : 1;
  }
  const base = { tricks: [...tricks], honours: [...honours], points: got };
  if (game === null) {
    return [{ ...base, game: null, value: 0, rubber: null },
      { points: pts, games: [...before.games], total: [...before.total], game: before.game, rubber: before.rubber }];
  }
  const loser = pts[1 - game];
  const value = loser === 0 ? 3 : loser <= 2 ? 2 : 1;
  let games = [...before.games];
  const total = [...before.total];
  games[game] += 1;
  total[game] += value;
  let rubber = null, nextRubber = before.rubber;
  if (games[game] === 2) { rubber = game; total[game] += 2; games = [0, 0]; nextRubber += 1; }
  return [{ ...base, game, value, rubber },
    { points: [0, 0], games, total, game: before.game + 1, rubber: nextRubber }];
}

// ------------------------------------------------------------------------------------ one deal

export class Deal {
  constructor(dealer, hands, turnup) {
    this.dealer = dealer;
    this.hands = hands;
    this.turnup = turnup;
    this.played = [[], [], [], []];
    this.tricks = [];
    this.trick = [];
    this.leader = -1;
    this.taken = [0, 0];
  }
  static fromDeck(deck, dealer) {
    const d = new Deal(dealer, dealHands(deck, dealer), deck[51]);
    d.leader = (dealer + 1) % 4;
    return d;
  }
  get trump() { return suit(this.turnup); }
  get over() { return this.tricks.length === TRICKS; }
  get turn() { return this.over ? -1 : (this.leader + this.trick.length) % 4; }
  hand(seat) {
    const gone = new Set(this.played[seat]);
    return this.hands[seat].filter((c) => !gone.has(c));
  }
  legal(seat) { return seat === this.turn ? legalMoves(this.hand(seat), this.trick) : []; }
  play(seat, card) {
    if (this.over) throw new IllegalMove("the deal is over");
    if (seat !== this.turn) throw new IllegalMove(`it is ${SEAT_NAMES[this.turn]}'s turn, not ${SEAT_NAMES[seat]}'s`);
    if (!this.hand(seat).includes(card)) throw new IllegalMove(`${card} is not in ${SEAT_NAMES[seat]}'s hand`);
    if (!legalMoves(this.hand(seat), this.trick).includes(card)) {
      throw new IllegalMove(`${card} does not follow suit (${suit(this.trick[0])} led)`);
    }
    this.played[seat].push(card);
    this.trick.push(card);
    if (this.trick.length < 4) return null;
    const win = (this.leader + trickWinner(this.trick, this.trump)) % 4;
    const done = { leader: this.leader, cards: [...this.trick], winner: win };
    this.tricks.push(done);
    this.taken[sideOf(win)] += 1;
    this.trick = [];
    this.leader = win;
    return done;
  }
}

// --------------------------------------------------------------------------------------- bots

const lowKey = (c) => rank(c) * 4 + SUITS.indexOf(suit(c));
const low = (cards) => cards.reduce((m, c) => (lowKey(c) < lowKey(m) ? c : m));

/** The same plain, deterministic player as rules.bot_play. */
export function botPlay(hand, trick, trump) {
  const legal = legalMoves(hand, trick);
  if (legal.length === 1) return legal[0];
  if (!trick.length) {
    const plain = [...SUITS].filter((s) => s !== trump && hand.some((c) => suit(c) === s));
    const pool = plain.length ? plain : [trump];
    const key = (s) => {
      const cards = hand.filter((c) => suit(c) === s);
      return [cards.length, Math.max(...cards.map(rank)), SUITS.indexOf(s)];
    };
    const greater = (a, b) => a[0] !== b[0] ? a[0] > b[0] : a[1] !== b[1] ? a[1] > b[1] : a[2] > b[2];
    let leadSuit = pool[0];
    for (const s of pool.slice(1)) if (greater(key(s), key(leadSuit))) leadSuit = s;
    const cards = hand.filter((c) => suit(c) === leadSuit);
    const ranks = new Set(cards.map((c) => c[0]));
    if (ranks.has("A")) return "A" + leadSuit;
    if (ranks.has("K") && ranks.has("Q")) return "K" + leadSuit;
    return low(cards);
  }
  const led = suit(trick[0]);
  const w = trickWinner(trick, trump);
  const best = trick[w];
  const partnerWins = trick.length >= 2 && w === trick.length - 2;
  if (hand.some((c) => suit(c) === led)) {
    if (partnerWins || trick.length === 1) return low(legal);
    const beats = legal.filter((c) => suit(best) === led && rank(c) > rank(best));
    return beats.length ? low(beats) : low(legal);
  }
  const trumps = legal.filter((c) => suit(c) === trump);
  const plain = legal.filter((c) => suit(c) !== trump);
  if (partnerWins) return low(plain.length ? plain : trumps);
  const top = Math.max(-1, ...trick.filter((c) => suit(c) === trump).map(rank));
  const over = trumps.filter((c) => rank(c) > top);
  if (over.length) return low(over);
  return low(plain.length ? plain : trumps);
}

export function playOut(deck, dealer) {
  const d = Deal.fromDeck(deck, dealer);
  while (!d.over) { const seat = d.turn; d.play(seat, botPlay(d.hand(seat), d.trick, d.trump)); }
  return d;
}
