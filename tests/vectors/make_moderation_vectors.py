"""Writes tests/vectors/moderation.json: golden vectors of room links, settings commitments, host
tokens, admission verdicts and grant-map digests (run once; keep the file).

    .venv/bin/python tests/vectors/make_moderation_vectors.py

The outputs come from kibitz itself, so the file alone proves only that nothing changed (and, run
in the page, that Pyodide agrees with CPython); tests/unit/test_moderation_vectors.py also re-derives
the commitments and signatures independently (hashlib, ``cryptography``). Regenerating must leave
the file unchanged; a change of format means a new version, not new vectors.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from kibitz.admission import check_credential, credential_key, mint_invite, prepare_credential, token_key
from kibitz.authority import HostKeyring
from kibitz.capabilities import grants_digest, sanitize
from kibitz.crypto import PrivateKey, b64url_encode, code_verifier, derive_code_key, sign_token
from kibitz.gate import GateError, JoinGate, _commit, make_link, parse_link

OUT = Path(__file__).resolve().parent / "moderation.json"
HOST = PrivateKey.from_bytes(bytes(range(101, 133)))
INVITE = PrivateKey.from_bytes(bytes(range(141, 173)))
OTHER = PrivateKey.from_bytes(bytes(range(181, 213)))
ROOM = "room-golden-3f9k2mq7p1"
NOW = 1_800_000_000
SALT = bytes(range(16))


def links() -> dict[str, Any]:
    hp = HOST.public_key.to_text()
    ip = INVITE.public_key.to_text()
    cases = [
        "#room-3f9k2mq7p1",
        f"https://example.test/page?x=1#room-3f9k2mq7p1?g=open&gh={hp}",
        "https://example.test/#r1?g=names&gn=Ann,Bob%20B.&ghn=Ann&gl=1",
        f"#r1?g=invite&gk={ip}&gt=tok.en",
        f"https://example.test/?g=code&gv={b64url_encode(SALT)}.{'A' * 43}#legacy-room",
        "#r1?g=open&grant=xyz&k=abc",  # TURN parameters are not the gate's
        "#r1?g=secret-handshake",
        "#r1?g=code",
        "#r1?g=invite&gk=not-a-key",
        "#r1?g=open&gz=1",
        "#r1?g=open&gl=yes",
        "#r1?g=open&g=names",
        f"#r1?g=open&ghk={b64url_encode(b'x' * 20)}",
        "#r1?g=names",
    ]
    parsed = []
    for link in cases:
        try:
            got = parse_link(link)
            parsed.append({"link": link, "room": got.room, "gate": got.gate.to_json() if got.gate else None,
                           **({"invite": got.invite} if got.invite else {})})
        except GateError as exc:
            parsed.append({"link": link, "error": exc.reason})
    made = []
    for gate, invite in (
        (JoinGate(), None),
        (JoinGate(mode="names", names=("Ann", "Bob B."), lobby=True), None),
        (JoinGate(mode="invite", invite_key=ip, host=JoinGate.from_json({"host": {"key": hp}}).host), "a.b"),
    ):
        made.append({"base": "https://example.test/call?x=1#old", "room": "kz-made", "gate": gate.to_json(),
                     "invite": invite, "link": make_link("https://example.test/call?x=1#old", "kz-made", gate,
                                                         invite=invite)})
    return {"parsed": parsed, "made": made}


def rooms() -> list[dict[str, Any]]:
    out = []
    for gate, tampered in (
        (JoinGate(), {"mode": "open", "lobby": True}),
        (JoinGate.from_json({"mode": "names", "names": ["Ann", "Bob"], "host": {"name": "Ann"}}),
         {"mode": "names", "names": ["Ann", "Bob", "Eve"], "host": {"name": "Ann"}}),
        (JoinGate.from_json({"mode": "invite", "inviteKey": INVITE.public_key.to_text(),
                             "host": {"key": HOST.public_key.to_text()}, "lobby": True}),
         {"mode": "open", "host": {"key": HOST.public_key.to_text()}, "lobby": True}),
        (JoinGate.from_json({"mode": "email"}), None),
    ):
        rnd = "abcdefghijklmnopqrstuvwxy"
        out.append({"gate": gate.to_json(), "canonical": gate.canonical(), "random": rnd,
                    "commit": _commit(rnd, gate), "tampered": tampered})
    return out


def host() -> dict[str, Any]:
    ring = HostKeyring(HOST, ROOM)
    gate = JoinGate.from_json({"host": {"key": HOST.public_key.to_text()}})
    a, c = "kbz-m-hostaaaaaaaaaaaa", "kbz-m-coordcccccccccccc"
    signed = [
        {"kind": "claim", "by": a, "now": NOW, "nonce": "00000001"},
        {"kind": "command", "op": "lock", "by": a, "coordinator": c, "now": NOW, "nonce": "00000002"},
        {"kind": "command", "op": "admit", "by": a, "coordinator": c, "now": NOW, "target": "kbz-m-x",
         "nonce": "00000003"},
        {"kind": "record", "ban": True, "target": "kbz-m-x", "keys": ["t:abc"], "now": NOW + 0.25},
        {"kind": "caps", "version": 1_800_000_000_000, "digest": "00" * 32, "now": NOW},
    ]
    for s in signed:
        if s["kind"] == "claim":
            s["token"] = ring.claim(by=s["by"], now=s["now"], nonce=s["nonce"])
        elif s["kind"] == "command":
            s["token"] = ring.command(s["op"], by=s["by"], coordinator=s["coordinator"], now=s["now"],
                                      target=s.get("target"), nonce=s["nonce"])
        elif s["kind"] == "record":
            s["token"] = ring.record(ban=s["ban"], target=s["target"], keys=s["keys"], now=s["now"])
        else:
            s["token"] = ring.caps(version=s["version"], digest=s["digest"], now=s["now"])
    lock = signed[1]["token"]
    forged = HostKeyring(OTHER, ROOM).command("lock", by=a, coordinator=c, now=NOW, nonce="00000002")
    unsigned = HostKeyring(None, ROOM).command("lock", by=a, coordinator=c, now=NOW, nonce="00000002")
    base = {"check": "command", "sender": a, "coordinator": c, "now": NOW + 5}
    checked = [
        {**base, "case": "good", "token": lock, "expect": "ok"},
        {**base, "case": "replayed", "token": lock, "seen": [lock], "expect": "replayed"},
        {**base, "case": "forged key", "token": forged, "expect": "bad-signature"},
        {**base, "case": "unsigned", "token": unsigned, "expect": "malformed"},
        {**base, "case": "other sender", "token": lock, "sender": "kbz-m-eve", "expect": "wrong-sender"},
        {**base, "case": "other coordinator", "token": lock, "coordinator": "kbz-m-else",
         "expect": "wrong-coordinator"},
        {**base, "case": "stale", "token": lock, "now": NOW + 121, "expect": "stale"},
        {**base, "case": "future", "token": lock, "now": NOW - 61, "expect": "future"},
        {**base, "case": "other room", "token": lock, "room": "room-elsewhere", "expect": "wrong-room"},
        {**base, "case": "a claim is no command", "token": signed[0]["token"], "expect": "unknown-op"},
        {**base, "case": "garbage", "token": "a.b.c", "expect": "malformed"},
        {"check": "claim", "case": "claim on a roster", "token": signed[0]["token"], "sender": a,
         "coordinator": c, "expect": "ok"},
        {"check": "claim", "case": "claim for someone else", "token": signed[0]["token"],
         "sender": "kbz-m-eve", "coordinator": c, "expect": "wrong-sender"},
        {"check": "claim", "case": "stale claim presented", "token": signed[0]["token"], "sender": a,
         "coordinator": c, "now": NOW + 500, "expect": "stale"},
        {"check": "record", "case": "ban record", "token": signed[3]["token"], "sender": a, "coordinator": c,
         "expect": "ok"},
        {"check": "record", "case": "a command is no record", "token": lock, "sender": a, "coordinator": c,
         "expect": "wrong-kind"},
    ]
    return {"private_text": HOST.to_text(), "room": ROOM, "gate": gate.to_json(), "signed": signed,
            "checked": checked}


async def admission() -> dict[str, Any]:
    key = await derive_code_key("tulip-42", SALT)
    code_gate = JoinGate(mode="code", code_check=f"{b64url_encode(SALT)}.{code_verifier(key)}")
    invite_gate = JoinGate(mode="invite", invite_key=INVITE.public_key.to_text())
    names_gate = JoinGate(mode="names", names=("Ann", "Bob B."))
    good = mint_invite(INVITE.to_text(), name=" Bob B. ", room=ROOM, ttl=3600, now=NOW)
    expired = mint_invite(INVITE.to_text(), name="Old", room=ROOM, ttl=60, now=NOW - 7200)
    other = mint_invite(INVITE.to_text(), name="Lost", room="room-other", ttl=3600, now=NOW)
    forged = sign_token(OTHER, {"name": "Eve", "room": ROOM, "exp": NOW + 3600})
    cases: list[dict[str, Any]] = [
        {"case": "open", "gate": JoinGate().to_json(), "credential": None},
        {"case": "names listed", "gate": names_gate.to_json(), "name": "bob b."},
        {"case": "names not listed", "gate": names_gate.to_json(), "name": "Eve"},
        {"case": "code right", "gate": code_gate.to_json(), "code": "tulip-42"},
        {"case": "code with spaces", "gate": code_gate.to_json(), "code": " tulip-42\n"},
        {"case": "code wrong", "gate": code_gate.to_json(), "code": "tulip-43"},
        {"case": "code missing", "gate": code_gate.to_json(), "credential": None},
        {"case": "code damaged proof", "gate": code_gate.to_json(), "credential": "!!"},
        {"case": "invite good", "gate": invite_gate.to_json(), "credential": good},
        {"case": "invite expired", "gate": invite_gate.to_json(), "credential": expired},
        {"case": "invite other room", "gate": invite_gate.to_json(), "credential": other},
        {"case": "invite forged", "gate": invite_gate.to_json(), "credential": forged},
        {"case": "invite missing", "gate": invite_gate.to_json(), "credential": None},
    ]
    for c in cases:
        c["room"], c["now"] = ROOM, NOW
        gate = JoinGate.from_json(c["gate"])
        cred = c.get("credential")
        if "code" in c:
            cred = c["proof"] = await prepare_credential(gate, c["code"])
        got = check_credential(gate, ROOM, cred, name=c.get("name", ""), now=NOW)
        c["verdict"] = got.verdict
        if got.name is not None:
            c["fixed_name"] = got.name
    keys = [{"token": t, "tk": token_key(t), "ck": credential_key(t)} for t in ("tok-1", good)]
    return {"credentials": cases, "keys": keys}


def grants() -> list[dict[str, Any]]:
    out = []
    for raw in (
        {},
        {"kbz-m-bot": {"perceive": ["read-chat", "receive-directed"], "act": ["send-chat"], "backend": "m",
                       "egress": True}},
        {"kbz-m-b": {"perceive": ["hear-audio"], "act": [], "expiresAt": 1900000000},
         "kbz-m-a": {"perceive": ["read-chat"], "act": ["act", "send-chat"]}},
    ):
        out.append({"grants": raw, "digest": grants_digest({k: sanitize(v) for k, v in raw.items()})})
    return out


def main() -> None:
    vectors = {
        "links": links(),
        "rooms": rooms(),
        "host": host(),
        "admission": asyncio.run(admission()),
        "grants": grants(),
    }
    OUT.write_text(json.dumps(vectors, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
