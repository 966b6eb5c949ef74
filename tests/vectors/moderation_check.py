"""Checks the room-settings, admission and host-authority formats against moderation.json.

The same function runs in CPython (tests/unit/test_moderation_vectors.py) and in the page under
Pyodide (tests/e2e/test_moderation_page.py sends this file's text into the page and runs it there),
so it uses only the standard library and kibitz. Code-gate keys go through the caller's crypto
backend (``hashlib`` in CPython, WebCrypto in the page).
"""

from __future__ import annotations

from typing import Any

from kibitz.admission import check_credential, credential_key, prepare_credential, token_key
from kibitz.authority import BanRecord, HostAuthority, HostCommand, HostKeyring, Refused
from kibitz.capabilities import grants_digest, sanitize
from kibitz.gate import GateError, JoinGate, _commit, check_room, make_link, parse_link


class Results:
    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[str] = []

    def check(self, case: str, ok: bool, detail: str = "") -> None:
        (self.passed if ok else self.failed).append(case if ok else f"{case}: {detail}")


def _verdict(got: Any) -> str:
    if isinstance(got, Refused):
        return got.reason
    if isinstance(got, HostCommand | BanRecord):
        return "ok"
    return repr(got)


def check_links(v: dict[str, Any], out: Results) -> None:
    for i, c in enumerate(v["parsed"]):
        case = f"links.parsed[{i}] {c['link'][:40]}"
        try:
            got = parse_link(c["link"])
        except GateError as exc:
            out.check(case, c.get("error") == exc.reason, f"refused {exc.reason}: {exc}")
            continue
        if "error" in c:
            out.check(case, False, f"accepted, expected {c['error']}")
            continue
        gate = got.gate.to_json() if got.gate is not None else None
        out.check(case, (got.room, gate, got.invite) == (c["room"], c["gate"], c.get("invite")),
                  repr((got.room, gate, got.invite)))
    for i, c in enumerate(v["made"]):
        gate = JoinGate.from_json(c["gate"])
        link = make_link(c["base"], c["room"], gate, invite=c.get("invite"))
        out.check(f"links.made[{i}]", link == c["link"], link)


def check_rooms(v: dict[str, Any], out: Results) -> None:
    for i, c in enumerate(v):
        gate = JoinGate.from_json(c["gate"])
        out.check(f"rooms[{i}].canonical", gate.canonical() == c["canonical"], gate.canonical())
        out.check(f"rooms[{i}].commit", _commit(c["random"], gate) == c["commit"], _commit(c["random"], gate))
        room = "kz" + c["random"] + c["commit"]
        try:
            check_room(room, gate)
            out.check(f"rooms[{i}].check", True)
        except GateError as exc:
            unsupported = c["gate"]["mode"] not in ("open", "names", "code", "invite")
            out.check(f"rooms[{i}].check", unsupported and exc.reason == "unsupported-mode", str(exc))
        if c.get("tampered"):
            try:
                check_room(room, JoinGate.from_json(c["tampered"]))
                out.check(f"rooms[{i}].tampered", False, "a different gate was accepted")
            except GateError as exc:
                out.check(f"rooms[{i}].tampered", exc.reason == "gate-mismatch", exc.reason)


def check_host(v: dict[str, Any], out: Results) -> None:
    ring = HostKeyring(v["private_text"], v["room"])
    gate = JoinGate.from_json(v["gate"])
    for i, c in enumerate(v["signed"]):
        kind = c["kind"]
        if kind == "claim":
            token = ring.claim(by=c["by"], now=c["now"], nonce=c["nonce"])
        elif kind == "command":
            token = ring.command(c["op"], by=c["by"], coordinator=c["coordinator"], now=c["now"],
                                 target=c.get("target"), nonce=c["nonce"])
        elif kind == "record":
            token = ring.record(ban=c["ban"], target=c["target"], keys=c["keys"], now=c["now"])
        else:
            token = ring.caps(version=c["version"], digest=c["digest"], now=c["now"])
        out.check(f"host.signed[{i}] {kind}", token == c["token"], token)
    for i, c in enumerate(v["checked"]):
        auth = HostAuthority(gate, c.get("room", v["room"]))
        for seen in c.get("seen", []):  # commands carried out before this one (replays)
            auth.check_command(seen, sender=c["sender"], coordinator=c["coordinator"], now=c["now"])
        if c["check"] == "command":
            got = auth.check_command(
                c["token"], sender=c["sender"], coordinator=c["coordinator"], now=c["now"]
            )
        elif c["check"] == "claim":
            got = auth.check_claim(c["token"], by=c["sender"], now=c.get("now"))
        else:
            got = auth.check_record(c["token"])
        out.check(f"host.checked[{i}] {c['case']}", _verdict(got) == c["expect"], _verdict(got))


async def check_admission(v: dict[str, Any], backend: Any, out: Results) -> None:
    for i, c in enumerate(v["credentials"]):
        gate = JoinGate.from_json(c["gate"])
        cred = c.get("credential")
        if c.get("code") is not None:
            cred = await prepare_credential(gate, c["code"], backend=backend)
            out.check(f"admission.credentials[{i}].proof", cred == c["proof"], repr(cred))
        got = check_credential(gate, c["room"], cred, name=c.get("name", ""), now=c["now"])
        want = (c["verdict"], c.get("fixed_name"))
        out.check(f"admission.credentials[{i}] {c['case']}", (got.verdict, got.name) == want, repr(got))
    for i, c in enumerate(v["keys"]):
        out.check(f"admission.keys[{i}].token", token_key(c["token"]) == c["tk"], repr(token_key(c["token"])))
        out.check(f"admission.keys[{i}].credential", credential_key(c["token"]) == c["ck"])


def check_grants(v: list[dict[str, Any]], out: Results) -> None:
    for i, c in enumerate(v):
        grants = {peer: sanitize(g) for peer, g in c["grants"].items()}
        out.check(f"grants[{i}].digest", grants_digest(grants) == c["digest"], grants_digest(grants))


async def check_all(vectors: dict[str, Any], backend: Any = None) -> Results:
    out = Results()
    check_links(vectors["links"], out)
    check_rooms(vectors["rooms"], out)
    check_host(vectors["host"], out)
    await check_admission(vectors["admission"], backend, out)
    check_grants(vectors["grants"], out)
    return out
