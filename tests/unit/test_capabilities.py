"""The capability model: defaults, sanitising, intersection, expiry, lanes, audit, grant-map versions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kibitz.authority import HostAuthority, HostKeyring
from kibitz.capabilities import (
    ACT,
    AGENT_DEFAULT,
    AUDIT_KEEP,
    HUMAN_DEFAULT,
    PERCEIVE,
    AuditLog,
    CapabilityBook,
    CapsSnapshot,
    Grant,
    default_for,
    intersect,
    sanitize,
)
from kibitz.crypto import PrivateKey
from kibitz.gate import HostSpec, JoinGate

AGENT = {"role": "agent", "backend": "local-llm"}


class Now:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def book(self_id: str = "h", **members: dict[str, str] | None) -> tuple[CapabilityBook, Now]:
    now = Now()
    b = CapabilityBook(self_id=self_id, now=now)
    b.set_members({"h": None, "p": None, "bot": AGENT, **members})
    return b, now


def test_defaults_by_kind() -> None:
    assert HUMAN_DEFAULT.perceive == PERCEIVE and HUMAN_DEFAULT.act == ACT
    assert AGENT_DEFAULT.perceive == {"read-chat", "read-roster", "receive-directed"}
    assert AGENT_DEFAULT.act == frozenset()
    assert default_for({"role": "agent"}) == AGENT_DEFAULT
    assert default_for({"role": "kibitzer"}) == HUMAN_DEFAULT
    assert default_for(None) == HUMAN_DEFAULT
    b, _ = book()
    assert b.may_act("p", "send-chat") and not b.may_act("bot", "send-chat")
    assert b.may_perceive("bot", "read-chat") and not b.may_perceive("bot", "hear-audio")


def test_sanitize_drops_unknown_and_junk() -> None:
    g = sanitize({"perceive": ["hear-audio", "read-minds", 3], "act": ["speak", "fly"], "backend": "b" * 200,
                  "egress": "yes", "expiresAt": float("inf")})
    assert g.perceive == {"hear-audio"} and g.act == {"speak"}
    assert g.backend == "b" * 80 and g.egress is False and g.expires_at is None
    assert sanitize({"act": "send-chat"}).act == frozenset(), "a bare string is not a list"
    with pytest.raises(ValueError, match="object"):
        sanitize(["read-chat"])


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(
    st.sampled_from(["perceive", "act", "backend", "egress", "expiresAt", "x"]),
    st.one_of(st.none(), st.booleans(), st.floats(), st.text(max_size=90),
              st.lists(st.one_of(st.text(max_size=20), st.sampled_from(sorted(PERCEIVE | ACT))))),
))
def test_sanitize_never_raises_on_mappings(raw: dict[str, object]) -> None:
    g = sanitize(raw)
    assert g.perceive <= PERCEIVE and g.act <= ACT
    assert Grant.model_validate(g.model_dump()) == g


def test_intersect_and_earliest_expiry() -> None:
    req = Grant(perceive={"read-chat", "hear-audio"}, act={"send-chat", "speak"}, backend="m", egress=True,
                expires_at=200)
    allowed = Grant(perceive={"read-chat"}, act={"send-chat"}, expires_at=100)
    got = intersect(req, allowed)
    assert got.perceive == {"read-chat"} and got.act == {"send-chat"}
    assert got.expires_at == 100 and got.backend == "m" and got.egress is True
    assert intersect(Grant(), HUMAN_DEFAULT).expires_at is None


def test_expired_grant_falls_back_to_the_kind_default() -> None:
    b, now = book()
    b.set_authority(host=None, coordinator="h")
    b.set_grant("bot", Grant(perceive={"read-chat", "hear-audio"}, act={"send-chat"}, expires_at=now.t + 60))
    assert b.may_act("bot", "send-chat") and b.lane_track("bot", "audio", False) == "real"
    now.t += 60
    assert b.grant_of("bot") == AGENT_DEFAULT
    assert not b.may_act("bot", "send-chat") and b.lane_track("bot", "audio", False) == "placeholder"


def test_lane_decisions() -> None:
    b, _ = book()
    for lane in ("audio", "video", "screen"):
        assert b.lane_track("p", lane, True) == "real"
        assert b.lane_track("bot", lane, True) == "placeholder"
        assert b.lane_track("bot", lane, False) == "placeholder"
    b.set_authority(host=None, coordinator="h")
    b.set_grant("bot", Grant(perceive={"hear-audio"}))
    assert b.lane_track("bot", "audio", False) == "real"
    assert b.lane_track("bot", "screen", True) == "placeholder"
    b.set_grant("p", Grant(perceive={"hear-audio"}))  # a human can be narrowed too
    assert b.lane_track("p", "video", True) == "placeholder"


def test_audit_ring_keeps_80_newest_last() -> None:
    log = AuditLog()
    for i in range(100):
        log.record(float(i), "bot" if i % 2 else "x", "blocked", "chat", str(i))
    assert len(log) == AUDIT_KEEP
    recent = log.recent("bot")
    assert [e.detail for e in recent] == ["89", "91", "93", "95", "97", "99"]
    assert [e.detail for e in log.recent(n=2)] == ["98", "99"]
    assert log.recent("bot", n=0) == []


def test_without_a_host_every_person_edits_no_agent_does_and_edits_are_audited() -> None:
    p, _ = book(self_id="p")
    p.set_authority(host=None, coordinator="h")
    snap = p.set_grant("bot", {"perceive": ["read-chat"], "act": ["send-chat"]})
    assert snap.version == 1 and snap.author == "p" and snap.sig is None
    assert p.audit.recent("bot")[-1].kind == "grant"
    p.set_grant("bot", None)
    assert p.explicit("bot") is None and p.version == 2
    bot, _ = book(self_id="bot")
    with pytest.raises(PermissionError, match="agents"):
        bot.set_grant("bot", HUMAN_DEFAULT)
    assert bot.apply("p", p.snapshot()) and not bot.apply("bot", CapsSnapshot(9, "bot", {}))


def test_host_by_name_is_the_only_author() -> None:
    b, _ = book(self_id="h")
    b.tier = "name"
    b.set_authority(host="p", coordinator="h")
    assert b.author == "p"
    with pytest.raises(PermissionError, match="host"):
        b.set_grant("bot", HUMAN_DEFAULT)
    assert not b.apply("h", CapsSnapshot(3, "h", {"bot": HUMAN_DEFAULT})), "the coordinator is not the host"
    assert b.apply("p", CapsSnapshot(3, "p", {"bot": HUMAN_DEFAULT}))


def test_host_key_maps_are_signed_and_accepted_from_anyone_only_with_the_signature() -> None:
    key = PrivateKey.from_bytes(bytes(range(7, 39)))
    gate = JoinGate(host=HostSpec(key=key.public_key.to_text()))
    ring, auth = HostKeyring(key, "room-x"), HostAuthority(gate, "room-x")
    now = Now()

    def check(sig: str | None, v: int, h: str) -> bool:
        return auth.check_caps(sig, version=v, digest=h)

    host = CapabilityBook(self_id="h", now=now, tier="key", check=check,
                          sign=lambda v, h: ring.caps(version=v, digest=h, now=now()))
    guest = CapabilityBook(self_id="p", now=now, tier="key", check=check)
    for b in (host, guest):
        b.set_members({"h": None, "p": None, "bot": AGENT})
        b.set_authority(host="h", coordinator="p")
    with pytest.raises(PermissionError, match="host key"):
        guest.set_grant("bot", HUMAN_DEFAULT)  # the coordinator holds no key: no say
    snap = host.set_grant("bot", {"perceive": ["read-chat"], "act": ["send-chat"]})
    assert snap.author == "host" and snap.sig and snap.version >= 1
    # Forwarded by the bot itself: still the host's map, so it counts.
    assert guest.apply("bot", snap) and guest.may_act("bot", "send-chat")
    # Tampered grants, a stolen signature on another version, or no signature: refused.
    widened = CapsSnapshot(snap.version + 1, "host", {"bot": HUMAN_DEFAULT}, snap.sig)
    assert not guest.apply("p", widened)
    assert not guest.apply("h", CapsSnapshot(snap.version + 5, "host", {"bot": HUMAN_DEFAULT}))
    assert not guest.apply("h", CapsSnapshot(snap.version + 5, "h", {"bot": HUMAN_DEFAULT}, snap.sig))
    assert guest.grant_of("bot").act == {"send-chat"}
    assert auth.refusals["malformed"] >= 1


def test_newer_map_wins_older_ignored() -> None:
    b, _ = book(self_id="p")
    b.set_authority(host=None, coordinator="h")
    widened = {"bot": Grant(act={"send-chat"})}
    assert b.apply("h", CapsSnapshot(2, "h", widened))
    assert b.may_act("bot", "send-chat")
    assert not b.apply("h", CapsSnapshot(1, "h", {}))
    assert b.may_act("bot", "send-chat") and b.version == 2
    assert not b.apply("h", CapsSnapshot(2, "h", {}))  # same stamp: a re-send, nothing changes
    assert b.audit.recent("bot")[-1].kind == "grant"


def test_maps_from_non_authorities_are_ignored_then_applied_if_they_become_one() -> None:
    b, _ = book(self_id="p")
    b.set_authority(host=None, coordinator="h")
    forged = CapsSnapshot(99, "bot", {"bot": HUMAN_DEFAULT})
    assert not b.apply("bot", forged)
    assert not b.may_act("bot", "send-chat")
    # With a host by name, a new host's map can beat the roster that names it:
    b.tier = "name"
    assert not b.apply("p2", CapsSnapshot(3, "p2", {"bot": Grant(act={"speak"})}))
    assert not b.set_authority(host="h", coordinator="h"), "not held: p2 was not even a member"
    b.set_members({"h": None, "p": None, "bot": AGENT, "p2": None})
    assert not b.apply("p2", CapsSnapshot(3, "p2", {"bot": Grant(act={"speak"})}))
    assert b.set_authority(host="p2", coordinator="h")
    assert b.may_act("bot", "speak")


def test_grant_map_survives_coordinator_migration() -> None:
    # h coordinates and widens the agent; every peer holds the map.
    h, _ = book(self_id="h")
    p, _ = book(self_id="p")
    for x in (h, p):
        x.set_authority(host=None, coordinator="h")
    snap = h.set_grant("bot", Grant(act={"send-chat"}, perceive={"read-chat"}))
    assert p.apply("h", snap)
    # h leaves; p becomes coordinator and keeps the map, and its next edit is newer everywhere.
    p.set_members({"p": None, "bot": AGENT, "q": None})
    p.set_authority(host=None, coordinator="p")
    assert p.may_act("bot", "send-chat")
    q, _ = book(self_id="q")
    q.set_members({"p": None, "bot": AGENT, "q": None})
    q.set_authority(host=None, coordinator="p")
    assert q.apply("p", p.snapshot()), "the map is re-sent to a joiner by the new coordinator"
    assert q.may_act("bot", "send-chat")
    snap2 = p.set_grant("bot", None)
    assert snap2.version == 2 and snap2.author == "p"
    assert q.apply("p", snap2) and not q.may_act("bot", "send-chat")
    assert not q.apply("p", snap), "the old coordinator's older map loses"


def test_equal_versions_from_two_authors_order_deterministically() -> None:
    x, _ = book(self_id="p")
    y, _ = book(self_id="p")
    x.set_authority(host=None, coordinator="h")
    y.set_authority(host=None, coordinator="h")
    s1, s2 = CapsSnapshot(5, "a", {"bot": Grant(act={"speak"})}), CapsSnapshot(5, "b", {})
    x.apply("h", s1)
    x.apply("h", s2)
    y.apply("h", s2)
    y.apply("h", s1)
    assert x.snapshot() == y.snapshot() and x.stamp == (5, "b")
