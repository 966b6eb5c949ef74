"""Golden vectors for room links, settings commitments, host tokens and admission (CPython side),
cross-checked independently, and fuzzing of every parser a stranger can feed."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from kibitz.authority import HostAuthority, HostCommand, Refused
from kibitz.crypto import PublicKey, b64url_decode
from kibitz.gate import GateError, JoinGate, parse_link

VECTORS_DIR = Path(__file__).resolve().parents[1] / "vectors"
sys.path.insert(0, str(VECTORS_DIR))

from moderation_check import check_all  # noqa: E402

VECTORS: dict[str, Any] = json.loads((VECTORS_DIR / "moderation.json").read_text(encoding="utf-8"))


async def test_every_vector_passes_in_cpython() -> None:
    results = await check_all(VECTORS)
    assert results.failed == []
    assert len(results.passed) >= 70


def test_commitments_match_an_independent_derivation() -> None:
    for c in VECTORS["rooms"]:
        digest = hashlib.sha256(f"kbz-room.v1|{c['random']}|{c['canonical']}".encode()).digest()
        assert base64.b32encode(digest).decode().lower()[:13] == c["commit"]
        assert len("kz" + c["random"] + c["commit"]) == 40


def test_host_tokens_verify_with_cryptography() -> None:
    pub = PublicKey.from_text(VECTORS["host"]["gate"]["host"]["key"])
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub.to_bytes())
    for s in VECTORS["host"]["signed"]:
        body, sig_text = s["token"].split(".")
        sig = b64url_decode(sig_text)
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        key.verify(der, body.encode(), ec.ECDSA(hashes.SHA256()))  # raises if it does not verify


# ------------------------------------------------------------------------------------ fuzzing

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
KEYS = st.sampled_from(["g", "gn", "gv", "gk", "gh", "ghn", "gho", "gl", "ghk", "gt", "gx", "grant", "d"])
VALUES = st.sampled_from(["open", "names", "code", "invite", "email", "1", "", "a,b", "x.y", "%00", "é"])
VALUES = VALUES | st.text(max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_as_a_link_parses_or_is_refused_with_a_reason(text: str) -> None:
    try:
        parse_link(text)
    except GateError as exc:
        assert exc.reason and str(exc)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20), st.lists(st.tuples(KEYS, VALUES), max_size=6))
def test_any_link_parameters_parse_or_are_refused(room: str, params: list[tuple[str, str]]) -> None:
    from urllib.parse import quote

    link = "#" + quote(room, safe="") + "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in params)
    try:
        got = parse_link(link)
    except GateError as exc:
        assert exc.reason
        return
    if got.gate is not None:
        assert JoinGate.from_json(got.gate.to_json()) == got.gate  # round trip
        assert JoinGate.from_params(got.gate.to_params()) == got.gate


@settings(max_examples=300, deadline=None)
@given(JSONISH)
def test_any_json_as_a_join_gate_is_a_gate_or_refused(value: Any) -> None:
    try:
        JoinGate.from_json(value)
    except GateError as exc:
        assert exc.reason


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), JSONISH), st.text(max_size=30))
def test_any_token_is_refused_with_a_reason_by_every_check(token: Any, sender: str) -> None:
    auth = HostAuthority(JoinGate.from_json(VECTORS["host"]["gate"]), VECTORS["host"]["room"])
    for got in (
        auth.check_command(token, sender=sender, coordinator="kbz-m-c", now=1_800_000_000),
        auth.check_claim(token, by=sender, now=None),
        auth.check_record(token),
    ):
        assert isinstance(got, Refused | HostCommand) or got.__class__.__name__ == "BanRecord"
        if isinstance(got, Refused):
            assert got.reason
    assert auth.check_caps(token, version=1, digest="x") is False
