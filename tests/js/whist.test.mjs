// The page's whist (apps/whist/*.mjs) against the golden vectors the Python side wrote
// (tests/vectors/whist.json): run with `node --test tests/js/` (tests/unit/test_whist_js.py does).
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { test } from "node:test";

import * as R from "../../apps/whist/rules.mjs";
import { Dealer } from "../../apps/whist/dealer.mjs";
import { LocalNet, canonical } from "../../apps/whist/localnet.mjs";
import { KEYS, SCENARIOS, drive, summary } from "../../apps/whist/scenarios.mjs";
import { Malformed, check } from "../../apps/whist/wire.mjs";

const V = JSON.parse(readFileSync(new URL("../vectors/whist.json", import.meta.url), "utf8"));

test("sha256, seat uids, commitments and deck seeds", () => {
  for (const v of V.sha256) assert.equal(R.sha256Hex(v.text), v.hex, v.text);
  for (const v of V.uids) assert.equal(R.uidOf(v.key), v.uid);
  for (const v of V.commitments) assert.equal(R.commitment(v.deal, v.uid, v.seed), v.c);
  for (const v of V.deck_seeds) assert.equal(R.deckSeed(v.deal, v.seeds), v.hex);
});

test("shuffles and deals", () => {
  for (const v of V.shuffles) {
    const deck = R.shuffle(v.seed);
    assert.deepEqual(deck, v.deck);
    assert.deepEqual(R.dealHands(deck, v.dealer), v.hands);
    assert.equal(deck[51], v.turnup);
  }
  assert.throws(() => R.shuffle("XYZ"), /64 lower-case hex/);
});

test("legal moves, trick winners and bot choices", () => {
  for (const v of V.legal) assert.deepEqual(R.legalMoves(v.hand, v.trick), v.legal);
  for (const v of V.winners) assert.equal(R.trickWinner(v.trick, v.trump), v.winner);
  for (const v of V.bots) assert.equal(R.botPlay(v.hand, v.trick, v.trump), v.card);
});

test("scoring", () => {
  for (const v of V.scoring) {
    const [result, after] = R.scoreDeal(v.before, v.tricks, v.honours);
    assert.deepEqual(result, v.result);
    assert.deepEqual(after, v.after);
  }
});

test("whole deals played by bots", () => {
  for (const v of V.deals) {
    const d = R.playOut(R.shuffle(v.seed), v.dealer);
    assert.deepEqual(d.tricks, v.tricks);
    assert.deepEqual(d.taken, v.taken);
    assert.deepEqual(R.honoursHeld(d.hands, d.trump), v.honours);
  }
});

test("illegal plays are refused with a reason", () => {
  const d = R.Deal.fromDeck(R.shuffle(V.shuffles[0].seed), 0);
  const led = d.hand(1)[0];
  d.play(1, led);
  const other = d.hand(2).find((c) => R.suit(c) !== R.suit(led));
  if (d.hand(2).some((c) => R.suit(c) === R.suit(led)) && other) {
    assert.throws(() => d.play(2, other), /does not follow suit/);
  }
  assert.throws(() => d.play(0, d.hand(0)[0]), /turn/);
  assert.throws(() => d.play(2, d.hand(0)[0]), /not in South's hand/);
});

for (const [name, run] of Object.entries(SCENARIOS)) {
  test(`transcript: ${name} delivers the same messages as the Python table`, () => {
    const net = run();
    const got = summary(net);
    const want = V.scenarios[name];
    const at = got.messages.findIndex((h, i) => h !== want.messages[i]);
    if (at >= 0 || got.messages.length !== want.messages.length) {
      writeFileSync(`/tmp/whist-${name}.js.json`, JSON.stringify(net.log, null, 1));
      assert.fail(`${name}: first different message at #${at} of ${got.messages.length} (want ${want.messages.length});`
        + ` the JS log is in /tmp/whist-${name}.js.json`);
    }
    assert.deepEqual(JSON.parse(canonical(got.views)), JSON.parse(canonical(want.views)));
    assert.equal(got.now, want.now);
  });
}

test("malformed messages are refused with a reason, others' data is ignored", () => {
  assert.equal(check({ kind: "route" }), null);
  assert.equal(check("text"), null);
  for (const bad of [
    { ns: "whist", t: "nope" },
    { ns: "whist", t: "play", deal: "d.1", card: "1S" },
    { ns: "whist", t: "hand", table: "t", deal: "d", seat: 0, cards: ["AS", "AS"] },
    { ns: "whist", t: "state", pub: { table: "t" } },
    { ns: "whist", t: "sit", seat: 7 },
    { ns: "whist", t: "hello", uid: "x", key: "y" },
  ]) assert.throws(() => check(bad), Malformed);
});

class StackedDealer extends Dealer {
  // Deals itself every spade and the ace of trumps... whatever the seeds say.
  makeDeal(deck) {
    const mine = this.seats.findIndex((s) => s.uid === this.uid);
    const spades = deck.filter((c) => R.suit(c) === "S");
    const rest = deck.filter((c) => R.suit(c) !== "S");
    const stacked = [];
    for (let k = 0, s = 0, r = 0; k < 52; k++) {
      stacked.push((this.dealerSeat + 1 + k) % 4 === mine ? spades[s++] : rest[r++]);
    }
    return R.Deal.fromDeck(stacked, this.dealerSeat);
  }
}

test("a dealer that stacks the deck is caught by every other client's check", () => {
  const net = new LocalNet();
  const ann = net.join("m-ann", { name: "Ann", key: KEYS.ann, DealerClass: StackedDealer });
  const bob = net.join("m-bob", { name: "Bob", key: KEYS.bob, DealerClass: StackedDealer });
  const cy = net.join("m-cy", { name: "Cy", key: KEYS.cy, DealerClass: StackedDealer });
  const tables = [ann, bob, cy];
  drive(net, () => tables.every((t) => t.view().check !== null));
  const dealer = tables.find((t) => t.dealer !== null);
  for (const t of tables) {
    if (t === dealer) continue;
    assert.equal(t.view().check.ok, false);
    assert.match(t.view().check.reason, /hand we were dealt|trick/);
  }
});
