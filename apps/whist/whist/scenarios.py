"""Scripted tables on :class:`~whist.localnet.LocalNet`, for the golden transcripts.

``apps/whist/scenarios.mjs`` runs the same scripts on the JavaScript tables; the vectors hold a hash
per delivered message, so the two must deliver the same messages in the same order. People here
play the first legal card whenever it is their turn (checked every quarter second).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from .localnet import LocalNet
from .table import Table

KEYS = {name: hashlib.sha256(f"whist-test-key:{name}".encode()).hexdigest() for name in ("ann", "bob", "cy")}


def canonical(x: Any) -> str:
    return json.dumps(x, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def phase(t: Table) -> str | None:
    pub = t.client.pub
    return pub["deal"]["phase"] if pub and pub["deal"] else None


def tricks(t: Table) -> int:
    pub = t.client.pub
    return len(pub["deal"]["tricks"]) if pub and pub["deal"] else 0


def drive(net: LocalNet, until: Callable[[], bool], limit: float = 400.0) -> None:
    while not until() and net.now < limit:
        for member in list(net.order):
            table = net.tables.get(member)
            if table is not None and table.uid is not None:
                legal = table.client.legal()
                if legal:
                    table.play(legal[0])
        net.run(net.now + 0.25)
    if not until():
        raise AssertionError(f"scenario stalled at t={net.now}")


def two_people_and_a_kibitzer() -> LocalNet:
    net = LocalNet()
    ann = net.join("m-ann", name="Ann", key=KEYS["ann"])
    net.join("m-bob", name="Bob", key=KEYS["bob"])
    net.join("m-kib", name="Kibitzer", watch=2, agent=True)
    net.run(0.1)
    ann.allow("m-kib", 2)
    drive(net, lambda: phase(ann) == "done")
    net.run(net.now + 1.0)
    return net


def dealer_leaves() -> LocalNet:
    net = LocalNet()
    ann = net.join("m-ann", name="Ann", key=KEYS["ann"])
    net.join("m-bob", name="Bob", key=KEYS["bob"])
    net.join("m-cy", name="Cy", key=KEYS["cy"])
    drive(net, lambda: tricks(ann) >= 4)
    gone = next(m for m in net.order if net.tables[m].dealer is not None)
    net.leave(gone)
    heir = net.tables[net.order[0]]
    drive(net, lambda: phase(heir) == "done")
    return net


def reload_keeps_the_seat() -> LocalNet:
    net = LocalNet()
    ann = net.join("m-ann", name="Ann", key=KEYS["ann"])
    net.join("m-bob", name="Bob", key=KEYS["bob"])
    drive(net, lambda: tricks(ann) >= 3)
    net.leave("m-bob")
    net.run(net.now + 0.3)
    net.join("m-bob2", name="Bob", key=KEYS["bob"])
    drive(net, lambda: phase(ann) == "done")
    return net


def sit_between_deals() -> LocalNet:
    net = LocalNet()
    ann = net.join("m-ann", name="Ann", key=KEYS["ann"])
    drive(net, lambda: tricks(ann) >= 2)
    net.join("m-bob", name="Bob", key=KEYS["bob"])
    drive(net, lambda: phase(ann) == "done")
    net.run(net.now + 1.0)
    drive(net, lambda: tricks(ann) >= 1)
    return net


def newcomer_takes_over_the_deal() -> LocalNet:
    """Cy arrives with the lowest uid and becomes the dealer: the scores carry on (handover)."""
    net = LocalNet()
    ann = net.join("m-ann", name="Ann", key=KEYS["ann"])
    net.join("m-bob", name="Bob", key=KEYS["bob"])
    drive(net, lambda: phase(ann) == "done")
    net.join("m-cy", name="Cy", key=KEYS["cy"], sit=False)
    drive(net, lambda: phase(ann) == "play" and tricks(ann) >= 2)
    return net


SCENARIOS: dict[str, Callable[[], LocalNet]] = {
    "two_people_and_a_kibitzer": two_people_and_a_kibitzer,
    "dealer_leaves": dealer_leaves,
    "reload_keeps_the_seat": reload_keeps_the_seat,
    "sit_between_deals": sit_between_deals,
    "newcomer_takes_over_the_deal": newcomer_takes_over_the_deal,
}


def summary(net: LocalNet) -> dict[str, Any]:
    """What the vectors keep: a hash per delivered message, and every table's final view."""
    return {
        "messages": [hashlib.sha256(canonical(e).encode()).hexdigest()[:16] for e in net.log],
        "views": {m: net.tables[m].view() for m in net.order},
        "now": round(net.now * 1000),
    }


__all__ = ["KEYS", "SCENARIOS", "canonical", "drive", "summary"]
