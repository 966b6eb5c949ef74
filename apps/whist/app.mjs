// The whist page: draws the table from the headless Kibitz controller and wires it to the table
// protocol (table.mjs). Nothing here touches the engine beyond the public controller:
// Kibitz.mount({headless: true}) → broadcast/sendTo/onMessage/getParticipants/on(...)/sendChat/
// setCapabilityGrant/toggleCam. URL: #room-… (the room), ?name=, ?watch=1 (do not sit), ?fast=1
// (quick bots, for tests).
import { DEFAULT_OPTIONS, FAST_OPTIONS, isAgent, randomHex, uidInRoster, watchRequest } from "./port.mjs";
import { SEAT_NAMES, suit, uidOf } from "./rules.mjs";
import { Table } from "./table.mjs";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

// ------------------------------------------------------------------ room, identity, name

function freshRoom() { return "room-" + randomHex(10); } // 80 random bits, also on plain-http LAN hosts
const fromHash = location.hash.slice(1);
const room = /^room-[a-z0-9-]{6,40}$/i.test(fromHash) ? fromHash.toLowerCase() : freshRoom();
if (fromHash !== room) history.replaceState(null, "", location.pathname + location.search + "#" + room);
$("room").textContent = room;

const store = {
  get(k) { try { return localStorage.getItem(k) || ""; } catch { return ""; } },
  set(k, v) { try { localStorage.setItem(k, v); } catch { /* private mode: this tab only */ } },
};
// The seat key is a secret that never leaves this browser except to the table's dealer, which
// checks it against the public uid (its hash) before it seats us or sends us a hand.
let key = store.get("whist.key");
if (!/^[0-9a-f]{64}$/.test(key)) { key = randomHex(32); store.set("whist.key", key); }
const uid = uidOf(key);
let myName = (params.get("name") || store.get("whist.name") || `Guest ${uid.slice(0, 4)}`).slice(0, 40);
$("name").value = myName;

const options = params.get("fast") === "1" ? FAST_OPTIONS : DEFAULT_OPTIONS;
const wantSeat = params.get("watch") !== "1";

// ------------------------------------------------------------------ the controller

let call = null;
let table = null;
const early = [];

function makeTable() {
  const self = call.getState().self;
  const port = {
    selfId: () => self,
    participants: () => call.getParticipants(),
    broadcast: (data) => call.broadcast(data),
    sendTo: (id, data) => call.sendTo(id, data),
    callLater: (seconds, fn) => { const h = setTimeout(fn, seconds * 1000); return { cancel() { clearTimeout(h); } }; },
    randomHex,
  };
  return new Table(port, { key, sit: wantSeat, options, onChange: schedule });
}

function until(check, ms = 60000) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const poll = () => {
      if (check()) resolve();
      else if (performance.now() - t0 > ms) reject(new Error("timed out"));
      else setTimeout(poll, 25);
    };
    poll();
  });
}

async function boot() {
  await until(() => window.Kibitz);
  call = window.Kibitz.mount({
    room, headless: true, startOpen: true, name: myName, identity: `whist-${uid}`, meta: { whist: { uid } },
  });
  window.call = call;
  call.onMessage((data, from) => { if (table) table.onMessage(data, from); else early.push([data, from]); });
  call.on("participants", (people) => { if (table) table.onParticipants(people); schedule(); });
  call.on("chat", schedule);
  call.on("state", schedule);
  call.on("caps", schedule);
  call.on("resume", () => { // back from the bfcache with a fresh session (a new member id)
    if (table && table.dealer) table.dealer.stop();
    table = makeTable();
    table.onParticipants(call.getParticipants());
  });
  try {
    await call.ready;
    await until(() => call.getState().self && call.getState().connected);
    await call.join({ mic: false, cam: false });
    table = makeTable();
    for (const [data, from] of early.splice(0)) table.onMessage(data, from);
    table.onParticipants(call.getParticipants());
    $("boot").textContent = "";
    $("cam").disabled = false;
  } catch (err) {
    $("boot").textContent = `The engine failed to start: ${err.message}`;
    throw err;
  }
}

// ------------------------------------------------------------------ scripting surface

const copy = (x) => (x === undefined ? x : JSON.parse(JSON.stringify(x)));
window.whist = {
  /** What this seat knows: the public table, our own hand, our legal moves, the last deal check. */
  state: () => copy(table ? table.view() : null),
  legalMoves: () => (table ? table.view().legal : []),
  play(card) { if (!table) throw new Error("not at the table yet"); table.play(String(card)); return true; },
  newGame() { table.newGame(); },
  next() { table.nextDeal(); },
  sit(seat = -1) { table.sit(seat); },
  stand() { table.stand(); },
  allow: (watcher) => allowWatcher(watcher),
  revoke: (watcher) => revokeWatcher(watcher),
};

// ------------------------------------------------------------------ drawing

const SUIT_SIGN = { C: "♣", D: "♦", H: "♥", S: "♠" };
const SUIT_NAME = { C: "clubs", D: "diamonds", H: "hearts", S: "spades" };
const RANK_NAME = { T: "ten", J: "jack", Q: "queen", K: "king", A: "ace" };
const DISPLAY_SUITS = "SHCD";
const label = (c) => (c[0] === "T" ? "10" : c[0]) + SUIT_SIGN[c[1]];
const spoken = (c) => `${RANK_NAME[c[0]] || c[0]} of ${SUIT_NAME[c[1]]}`;
const displayOrder = (cards) => [...cards].sort((a, b) => DISPLAY_SUITS.indexOf(a[1]) - DISPLAY_SUITS.indexOf(b[1])
  || "AKQJT98765432".indexOf(a[0]) - "AKQJT98765432".indexOf(b[0]));
const sideName = (side) => (side === 0 ? "North–South" : "East–West");

function cardEl(c, tag = "span") {
  const el = document.createElement(tag);
  el.className = "card" + ("HD".includes(c[1]) ? " red" : "");
  el.textContent = label(c);
  el.dataset.card = c;
  el.setAttribute("aria-label", spoken(c));
  return el;
}

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "onclick") e.onclick = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  e.append(...kids);
  return e;
}

let drawQueued = false;
function schedule() {
  if (drawQueued) return;
  drawQueued = true;
  setTimeout(() => { drawQueued = false; draw(); }, 16);
}

const videos = new Map();
function tile(person, fallback) {
  const t = el("div", { class: "tile" });
  const initials = (person ? person.name : fallback).split(/\s+/).map((w) => w[0] || "").join("").slice(0, 2).toUpperCase();
  t.append(initials || "?");
  if (person && person.camOn && person.stream) {
    let v = videos.get(person.id);
    if (!v) { v = el("video"); v.muted = true; v.autoplay = true; v.playsInline = true; videos.set(person.id, v); }
    if (v.srcObject !== person.stream) v.srcObject = person.stream;
    t.append(v);
  }
  return t;
}

let lastError = null;
function draw() {
  if (!table) return;
  const v = table.view();
  if (table.client.error !== lastError) { // the dealer refused something we asked: say why, briefly
    lastError = table.client.error;
    if (lastError && lastError.code !== "hello") note(lastError.text);
  }
  const pub = v.pub;
  const people = call.getParticipants();
  const byUid = new Map(people.filter((p) => uidInRoster(p)).map((p) => [uidInRoster(p), p]));
  for (const id of [...videos.keys()]) if (!people.some((p) => p.id === id)) videos.delete(id);
  const base = v.seat ?? 2;
  const pos = (seat) => (seat - base + 4) % 4;
  const deal = pub && pub.deal;
  const me = v.seat;

  // seats
  for (let seat = 0; seat < 4; seat++) {
    const box = document.querySelector(`.seat[data-pos="${pos(seat)}"]`);
    const s = pub ? pub.seats[seat] : { uid: null, name: "", away: false, next: null };
    const person = s.uid ? byUid.get(s.uid) : null;
    const who = s.uid ? (s.name || "Player") + (s.uid === uid ? " (you)" : "") : "Bot";
    const notes = [SEAT_NAMES[seat]];
    if (deal && deal.dealer === seat) notes.push("dealer");
    if (s.uid && s.away) notes.push("away: a bot plays");
    if (s.next) notes.push(`${byUid.get(s.next)?.name || "someone"} sits next deal`);
    if (deal && deal.phase !== "commit" && deal.phase !== "seed") {
      const taken = deal.tricks.filter((t) => t.winner === seat).length;
      notes.push(`${taken} trick${taken === 1 ? "" : "s"}`);
    }
    box.className = "seat" + (deal && deal.phase === "play" && deal.turn === seat ? " turn" : "");
    box.dataset.seat = String(seat);
    const kids = [tile(person, s.uid ? who : "Bot"), el("div", { class: "who" }, el("b", { text: who }), el("small", { text: notes.join(" · ") }))];
    if (!s.uid && !s.next && me === null && pub) {
      kids.push(el("button", { type: "button", text: "Sit here", onclick: () => table.sit(seat) }));
    }
    box.replaceChildren(...kids);
  }

  // the trick
  const slots = [...document.querySelectorAll("#center .slot")];
  for (const slot of slots) slot.replaceChildren();
  if (deal && deal.turnup) {
    const showing = deal.trick.length ? { leader: deal.leader, cards: deal.trick, old: false }
      : deal.tricks.length ? { ...deal.tricks[deal.tricks.length - 1], old: true } : null;
    if (showing) {
      showing.cards.forEach((c, i) => {
        const slot = slots.find((x) => x.dataset.pos === String(pos((showing.leader + i) % 4)));
        const card = cardEl(c);
        if (showing.old) card.classList.add("old");
        slot.append(card);
      });
    }
  }
  $("trump").replaceChildren(...(deal && deal.turnup
    ? [el("span", { class: "HD".includes(suit(deal.turnup)) ? "red" : "", text: SUIT_SIGN[suit(deal.turnup)] }),
      el("small", { text: `trumps · ${label(deal.turnup)} up` })] : []));
  $("status").replaceChildren(...statusLines(v));

  // the hand
  const hand = $("hand");
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.card : null;
  const legal = new Set(v.legal);
  hand.replaceChildren(...displayOrder(v.hand).map((c) => {
    const b = cardEl(c, "button");
    b.type = "button";
    b.disabled = !legal.has(c);
    if (legal.has(c)) b.classList.add("legal");
    b.onclick = () => { try { table.play(c); } catch (err) { note(err.message); } };
    return b;
  }));
  if (focused) {
    const again = hand.querySelector(`[data-card="${focused}"]:not(:disabled)`) || hand.querySelector("button:not(:disabled)");
    if (again) again.focus();
  }

  drawScore(pub);
  drawControls(v);
  drawWatchers(v, people);
  drawChat(people);
}

let lastNote = "";
function note(text) { lastNote = text; schedule(); setTimeout(() => { if (lastNote === text) { lastNote = ""; schedule(); } }, 4000); }

function statusLines(v) {
  const pub = v.pub;
  const deal = pub && pub.deal;
  const out = [];
  const line = (text, cls = "") => out.push(el("div", { class: cls, text }));
  if (!pub) line("Looking for the table…");
  else if (!deal) line(v.seat === null ? "Waiting for players…" : "Dealing soon…");
  else if (deal.phase === "commit" || deal.phase === "seed") {
    line(`Shuffling: ${Object.keys(deal.commits).length} of ${deal.contributors.length} seeds committed`);
  } else {
    if (deal.phase === "play") {
      if (deal.turn === v.seat) line("Your turn", "ok");
      else line(`${SEAT_NAMES[deal.turn]} to play`);
    } else if (deal.result) {
      const r = deal.result;
      const win = r.tricks[0] > r.tricks[1] ? 0 : 1;
      const odd = r.tricks[win] - 6;
      line(`${sideName(win)} took ${r.tricks[win]} tricks: ${odd} point${odd === 1 ? "" : "s"}.`);
      for (const side of [0, 1]) {
        if (r.honours[side] < 3) continue;
        const pts = r.points[side] - (side === win ? odd : 0);
        line(`${sideName(side)} held ${r.honours[side]} trump honours: ${pts ? `${pts} points` : "not counted"}.`);
      }
      const value = { 1: "a single", 2: "a double", 3: "a treble" }[r.value] || "";
      if (r.game !== null) line(`${sideName(r.game)} win the game, ${value} (${r.value})${r.rubber !== null ? ", and the rubber (+2)!" : "."}`, "ok");
    }
  }
  if (lastNote) line(lastNote, "bad");
  return out;
}

function drawScore(pub) {
  const sc = pub ? pub.score : { points: [0, 0], games: [0, 0], total: [0, 0], game: 1, rubber: 1 };
  const row = (side) => el("tr", {}, el("td", { text: sideName(side) }), el("td", { text: String(sc.points[side]) }),
    el("td", { text: String(sc.games[side]) }), el("td", { text: String(sc.total[side]) }));
  $("score").replaceChildren(
    el("h2", { text: `Score · game ${sc.game}, rubber ${sc.rubber}` }),
    el("table", {}, el("tr", {}, el("th", { text: "" }), el("th", { text: "points" }), el("th", { text: "games" }),
      el("th", { text: "total" })), row(0), row(1)),
    el("p", { class: "muted", text: "5 points win a game, two games the rubber." }));
}

function drawControls(v) {
  const pub = v.pub;
  const deal = pub && pub.deal;
  const kids = [];
  if (v.seat !== null) {
    kids.push(el("button", { type: "button", text: "New game", onclick: () => table.newGame() }));
    if (deal && deal.phase === "done") kids.push(el("button", { type: "button", text: "Next deal", onclick: () => table.nextDeal() }));
    kids.push(el("button", { type: "button", text: "Stand up", onclick: () => table.stand() }));
  } else if (pub) {
    kids.push(el("button", { type: "button", text: "Take a seat", onclick: () => table.sit(-1) }));
  }
  $("controls").replaceChildren(...kids);
  const check = v.check;
  if (!check) $("check").replaceChildren(el("span", { class: "muted", text: "Each deal is checked here when it ends (commit–reveal)." }));
  else if (check.ok) $("check").replaceChildren(el("span", { class: "ok", text: "✓ Last deal verified: the seeds everyone committed to made exactly these hands." }));
  else $("check").replaceChildren(el("span", { class: "bad", text: `⚠ Last deal failed its check: ${check.reason}` }));
}

// ------------------------------------------------------------------ the kibitzer's consent

const GRANT = { perceive: ["read-chat", "read-roster", "receive-directed"], act: ["send-chat"] };

function mayAllow(v, seat) {
  const holder = v.pub ? v.pub.seats[seat].uid : null;
  const hosted = call.getParticipants().some((p) => p.role === "host");
  if (call.getState().isHost) return true;
  return holder ? holder === uid : !hosted && v.isDealer;
}

async function allowWatcher(watcher) {
  const p = call.getParticipants().find((x) => x.id === watcher);
  const seat = p ? watchRequest(p) : null;
  if (seat === null) throw new Error("no watcher with that id asks to watch a seat");
  try {
    await call.setCapabilityGrant(watcher, GRANT); // it may receive our hand and say things
  } catch (err) {
    note(`It will watch silently: ${err.message}`);
  }
  table.allow(watcher, seat);
}

async function revokeWatcher(watcher) {
  table.revoke(watcher);
  try { await call.setCapabilityGrant(watcher, null); } catch { /* not ours to change */ }
}

function drawWatchers(v, people) {
  const asks = people.filter((p) => isAgent(p) && watchRequest(p) !== null);
  const box = $("watchers");
  box.hidden = asks.length === 0;
  const kids = [el("h2", { text: "Kibitzers" })];
  for (const p of asks) {
    const seat = watchRequest(p);
    const allowed = v.pub && v.pub.watchers.some((w) => w.id === p.id);
    const meta = p.meta || {};
    const about = `${meta.backend ? `brain: ${meta.backend}` : "brain not disclosed"}; ${meta.egress ? "what it sees leaves this machine" : "what it sees stays on its machine"}`;
    const line = el("p", {}, el("b", { text: p.name || "An agent" }),
      allowed ? ` watches ${SEAT_NAMES[seat]}'s hand. ` : ` asks to watch ${SEAT_NAMES[seat]}'s hand. `,
      el("span", { class: "muted", text: about }), " ");
    if (mayAllow(v, seat)) {
      if (allowed) line.append(el("button", { type: "button", text: "Stop", onclick: () => revokeWatcher(p.id) }));
      else line.append(el("button", { type: "button", text: "Let it watch", onclick: () => allowWatcher(p.id) }));
    } else if (!allowed) line.append(el("span", { class: "muted", text: `(${SEAT_NAMES[seat]}'s player decides)` }));
    kids.push(line);
  }
  box.replaceChildren(...kids);
}

// ------------------------------------------------------------------ chat, name, camera, keys

function drawChat(people) {
  const agents = new Set(people.filter(isAgent).map((p) => p.id));
  const lines = call.getChat().slice(-60);
  const list = $("lines");
  const atEnd = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.replaceChildren(...lines.map((l) => el("li", { class: agents.has(l.from) ? "agent" : "" }, el("b", { text: `${l.name}: ` }), l.text)));
  if (atEnd) list.scrollTop = list.scrollHeight;
  const seated = new Set(table.view().pub ? table.view().pub.seats.map((s) => s.uid) : []);
  const others = people.filter((p) => !seated.has(uidInRoster(p)) && !p.isSelf).map((p) => p.name || "someone");
  $("others").textContent = others.length ? `Also here: ${others.join(", ")}` : "";
}

$("chatform").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("say").value.trim();
  if (!text) return;
  $("say").value = "";
  try { await call.sendChat(text); } catch (err) { note(err.message); }
  schedule();
boot();
});
$("name").addEventListener("change", () => {
  myName = $("name").value.trim().slice(0, 40) || myName;
  store.set("whist.name", myName);
  call.setName(myName);
});
$("cam").addEventListener("click", async () => {
  try { const on = await call.toggleCam(); $("cam").textContent = on ? "Camera off" : "Camera on"; } catch (err) { note(err.message); }
});
$("copy").addEventListener("click", async () => {
  const link = location.origin + location.pathname + "#" + room;
  try { await navigator.clipboard.writeText(link); note("Invite link copied"); } catch { prompt("Invite link:", link); }
});
$("hand").addEventListener("keydown", (ev) => {
  if (ev.key !== "ArrowLeft" && ev.key !== "ArrowRight" && ev.key !== "Home" && ev.key !== "End") return;
  const cards = [...$("hand").querySelectorAll("button:not(:disabled)")];
  if (!cards.length) return;
  const at = cards.indexOf(document.activeElement);
  const next = ev.key === "Home" ? 0 : ev.key === "End" ? cards.length - 1
    : (at + (ev.key === "ArrowRight" ? 1 : -1) + cards.length) % cards.length;
  cards[next].focus();
  ev.preventDefault();
});
schedule();
boot();
