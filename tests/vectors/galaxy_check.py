"""Checks galaxy parsing and the hub's locally built answer against galaxy.json.

The same function runs in CPython (tests/unit/test_hub.py) and in the page under Pyodide
(tests/e2e/test_hub_lan.py sends this file's text into the page and runs it there): a galaxy link
pins the hub's certificate, so page and agent must read it identically. Standard library + kibitz.
"""

from __future__ import annotations

from typing import Any

from kibitz.galaxy import GalaxyError, format_galaxy, hub_answer, parse_galaxy


class Results:
    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[str] = []

    def check(self, case: str, ok: bool, detail: str = "") -> None:
        (self.passed if ok else self.failed).append(case if ok else f"{case}: {detail}")


def check_all(v: dict[str, Any]) -> Results:
    out = Results()
    for i, c in enumerate(v["parsed"]):
        try:
            g = parse_galaxy(c["value"])
        except GalaxyError as exc:
            out.check(f"parsed[{i}]", False, f"refused {exc.reason}: {exc}")
            continue
        got = {"ufrag": g.ufrag, "pwd": g.pwd, "fingerprint": g.fingerprint_sdp,
               "addresses": [[h, p] for h, p in g.addresses], "value": format_galaxy(g)}
        out.check(f"parsed[{i}]", got == c["galaxy"], repr(got))
    for i, c in enumerate(v["refused"]):
        try:
            parse_galaxy(c["value"])
        except GalaxyError as exc:
            out.check(f"refused[{i}] {c['reason']}", exc.reason == c["reason"], exc.reason)
        else:
            out.check(f"refused[{i}] {c['reason']}", False, "accepted")
    for c in v["answers"]:
        got_answer = hub_answer(c["offer"], parse_galaxy(c["galaxy"]))
        out.check(f"answers.{c['name']}", got_answer == c["answer"], got_answer)
    for c in v["bad_offers"]:
        try:
            hub_answer(c["offer"], parse_galaxy(v["answers"][0]["galaxy"]))
        except GalaxyError as exc:
            out.check(f"bad_offers.{c['name']}", exc.reason == c["reason"], exc.reason)
        else:
            out.check(f"bad_offers.{c['name']}", False, "answered")
    return out
