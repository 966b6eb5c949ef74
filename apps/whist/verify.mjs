// The end-of-deal check every client runs on the revealed seeds: the twin of whist/verify.py (its
// docstring says what a dealer cannot get past it).
import { Deal, IllegalMove, commitment, deckSeed, honoursHeld, shuffle } from "./rules.mjs";

const sameList = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const sorted = (xs) => [...xs].sort();

export function verifyDeal(deal, { uid = null, seed = null, hand = null, seenCommits = null } = {}) {
  const did = String(deal.id);
  const bad = (reason) => ({ deal: did, ok: false, reason });
  const reveal = deal.reveal;
  const commits = deal.commits;
  const contributors = sorted(deal.contributors);
  if (!reveal || typeof reveal !== "object" || !sameList(sorted(Object.keys(reveal)), contributors)
      || !sameList(sorted(Object.keys(commits)), contributors)) {
    return bad("the revealed seeds are not the contributors' seeds");
  }
  for (const u of contributors) {
    if (commitment(did, u, String(reveal[u])) !== commits[u]) return bad(`the seed revealed for ${u} does not match its commitment`);
  }
  for (const u of sorted(Object.keys(seenCommits || {}))) {
    if (commits[u] !== seenCommits[u]) return bad(`the dealer published another commitment for ${u} than ${u} sent`);
  }
  if (uid !== null && seed !== null && reveal[uid] !== seed) return bad("our own seed was replaced");
  const seeds = {};
  for (const u of contributors) seeds[u] = String(reveal[u]);
  const game = Deal.fromDeck(shuffle(deckSeed(did, seeds)), deal.dealer);
  if (deal.turnup !== game.turnup) return bad("the turn-up is not the last card of the deck the seeds make");
  if (hand !== null && !sameList(sorted(hand[1]), sorted(game.hands[hand[0]]))) {
    return bad("the hand we were dealt is not the one the seeds deal us");
  }
  let n = 0;
  for (const trick of deal.tricks) {
    n += 1;
    if (trick.leader !== game.leader) return bad(`trick ${n} was led by the wrong seat`);
    try {
      trick.cards.forEach((card, i) => game.play((game.leader + i) % 4, String(card)));
    } catch (exc) {
      if (exc instanceof IllegalMove) return bad(`trick ${n}: ${exc.message}`);
      throw exc;
    }
    if (game.tricks[game.tricks.length - 1].winner !== trick.winner) return bad(`trick ${n} was given to the wrong seat`);
  }
  if (!game.over) return bad("the deal was revealed before its last trick");
  const result = deal.result;
  if (!result || !sameList(result.tricks, game.taken) || !sameList(result.honours, honoursHeld(game.hands, game.trump))) {
    return bad("the result is not what the deal's tricks and honours make");
  }
  return { deal: did, ok: true, reason: "" };
}
