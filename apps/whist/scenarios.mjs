// Scripted tables on LocalNet, for the golden transcripts: the twin of whist/scenarios.py.
import { LocalNet, canonical } from "./localnet.mjs";
import { sha256Hex } from "./rules.mjs";

export const KEYS = Object.fromEntries(["ann", "bob", "cy"].map((n) => [n, sha256Hex(`whist-test-key:${n}`)]));

const phase = (t) => (t.client.pub && t.client.pub.deal ? t.client.pub.deal.phase : null);
const tricks = (t) => (t.client.pub && t.client.pub.deal ? t.client.pub.deal.tricks.length : 0);

export function drive(net, until, limit = 400) {
  while (!until() && net.now < limit) {
    for (const member of [...net.order]) {
      const table = net.tables.get(member);
      if (table && table.uid !== null) {
        const legal = table.client.legal();
        if (legal.length) table.play(legal[0]);
      }
    }
    net.run(net.now + 0.25);
  }
  if (!until()) throw new Error(`scenario stalled at t=${net.now}`);
}

function twoPeopleAndAKibitzer() {
  const net = new LocalNet();
  const ann = net.join("m-ann", { name: "Ann", key: KEYS.ann });
  net.join("m-bob", { name: "Bob", key: KEYS.bob });
  net.join("m-kib", { name: "Kibitzer", watch: 2, agent: true });
  net.run(0.1);
  ann.allow("m-kib", 2);
  drive(net, () => phase(ann) === "done");
  net.run(net.now + 1.0);
  return net;
}

function dealerLeaves() {
  const net = new LocalNet();
  const ann = net.join("m-ann", { name: "Ann", key: KEYS.ann });
  net.join("m-bob", { name: "Bob", key: KEYS.bob });
  net.join("m-cy", { name: "Cy", key: KEYS.cy });
  drive(net, () => tricks(ann) >= 4);
  const gone = net.order.find((m) => net.tables.get(m).dealer !== null);
  net.leave(gone);
  const heir = net.tables.get(net.order[0]);
  drive(net, () => phase(heir) === "done");
  return net;
}

function reloadKeepsTheSeat() {
  const net = new LocalNet();
  const ann = net.join("m-ann", { name: "Ann", key: KEYS.ann });
  net.join("m-bob", { name: "Bob", key: KEYS.bob });
  drive(net, () => tricks(ann) >= 3);
  net.leave("m-bob");
  net.run(net.now + 0.3);
  net.join("m-bob2", { name: "Bob", key: KEYS.bob });
  drive(net, () => phase(ann) === "done");
  return net;
}

function sitBetweenDeals() {
  const net = new LocalNet();
  const ann = net.join("m-ann", { name: "Ann", key: KEYS.ann });
  drive(net, () => tricks(ann) >= 2);
  net.join("m-bob", { name: "Bob", key: KEYS.bob });
  drive(net, () => phase(ann) === "done");
  net.run(net.now + 1.0);
  drive(net, () => tricks(ann) >= 1);
  return net;
}

function newcomerTakesOverTheDeal() {
  const net = new LocalNet();
  const ann = net.join("m-ann", { name: "Ann", key: KEYS.ann });
  net.join("m-bob", { name: "Bob", key: KEYS.bob });
  drive(net, () => phase(ann) === "done");
  net.join("m-cy", { name: "Cy", key: KEYS.cy, sit: false });
  drive(net, () => phase(ann) === "play" && tricks(ann) >= 2);
  return net;
}

export const SCENARIOS = {
  two_people_and_a_kibitzer: twoPeopleAndAKibitzer,
  dealer_leaves: dealerLeaves,
  reload_keeps_the_seat: reloadKeepsTheSeat,
  sit_between_deals: sitBetweenDeals,
  newcomer_takes_over_the_deal: newcomerTakesOverTheDeal,
};

export function summary(net) {
  return {
    messages: net.log.map((e) => sha256Hex(canonical(e)).slice(0, 16)),
    views: Object.fromEntries(net.order.map((m) => [m, net.tables.get(m).view()])),
    now: Math.round(net.now * 1000),
  };
}
