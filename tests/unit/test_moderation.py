"""Moderation you can trust, on the in-memory bus: host tiers, gates, signed commands, bans.

Every scenario runs real Sessions (room + mesh + content) on the bus with a fake clock. The host is
a role separate from the coordinator: these tests put the two in different seats on purpose.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from kibitz.admission import mint_invite, prepare_credential
from kibitz.authority import CMD_KIND, HostKeyring
from kibitz.clock import FakeClock
from kibitz.crypto import PrivateKey, b64url_encode, code_verifier, derive_code_key, sign_token
from kibitz.gate import GateError, HostSpec, JoinGate, new_room
from kibitz.protocol.presence import Mod
from kibitz.session import Session
from kibitz.testing import Bus

ROOM = "room-mod-7hq2x9c4v1"
HOST_KEY = PrivateKey.from_bytes(bytes(range(1, 33)))
OTHER_KEY = PrivateKey.from_bytes(bytes(range(2, 34)))
KEY_GATE = JoinGate(host=HostSpec(key=HOST_KEY.public_key.to_text()))


class Room:
    """A bus, its clock, and helpers to add members (Sessions) to one room."""

    def __init__(self, room: str = ROOM, gate: JoinGate | None = KEY_GATE) -> None:
        self.bus = Bus(FakeClock())
        self.room = room
        self.gate = gate
        self.n = 0

    def add(self, name: str, *, join: bool = True, settle: float = 3.0, **kw: Any) -> Session:
        self.n += 1
        kw.setdefault("gate", self.gate)
        s = Session(
            self.room,
            transport=self.bus.transport(f"{name}-{self.n}"),
            scheduler=self.bus.scheduler(f"{name}-{self.n}"),
            rng=random.Random(f"{name}-{self.n}"),
            name=name,
            wall_clock=self.bus.clock.wall,
            **kw,
        )
        s.start()
        self.settle(0.5)
        if join:
            s.join()
        self.settle(settle)
        return s

    def settle(self, seconds: float = 3.0) -> None:
        self.bus.clock.advance(seconds)

    def kill(self, s: Session) -> None:
        name = next(n for n, p in self.bus._procs.items() if p.alive and s.self_id in p.ids)
        self.bus.kill(name)


def ids(s: Session) -> set[str]:
    return {p["id"] for p in s.get_participants()}


def coordinator_of(*sessions: Session) -> Session:
    return next(s for s in sessions if s.get_state()["isCoordinator"])


def send_mod(s: Session, token: str) -> None:
    """A tampered client: hand the coordinator any token over our presence link."""
    assert s.room is not None and s.room.presence_link is not None
    s.room.send(s.room.presence_link, Mod(token=token))


def mod_drops(s: Session) -> dict[str, int]:
    assert s.room is not None
    return {k[4:]: v for k, v in s.room.drops.by_reason.items() if k.startswith("mod:")}


# ------------------------------------------------------------------------------------ host tiers


def test_tier_none_nobody_moderates_not_even_the_coordinator() -> None:
    r = Room(gate=None)
    a, b = r.add("Ann"), r.add("Bob")
    assert a.get_state()["isCoordinator"] and a.get_state()["hostTier"] == "none"
    for s in (a, b):
        assert not s.set_lobby(True) and not s.set_locked(True) and not s.remove((b if s is a else a).self_id)
    r.settle()
    assert not a.get_state()["lobbyOn"] and not b.get_state()["locked"]
    assert ids(a) == ids(b) == {a.self_id, b.self_id}
    assert all(p["role"] == "guest" for p in a.get_participants())


def test_tier_name_the_member_with_the_host_name_moderates_from_any_seat() -> None:
    r = Room(gate=JoinGate(host=HostSpec(name="Dana")))
    guest = r.add("Gus")  # coordinates
    dana = r.add("dana ")  # names compare folded and trimmed
    assert dana.get_state()["isHost"] and not guest.get_state()["isHost"]
    assert [p["role"] for p in guest.get_participants() if p["id"] == dana.self_id] == ["host"]
    assert not guest.set_lobby(True)
    assert dana.set_lobby(True)
    r.settle(0.5)
    assert guest.get_state()["lobbyOn"]
    late = r.add("Lee")
    assert late.get_state()["lobbyStatus"] == "waiting"
    assert dana.admit(late.self_id)
    r.settle(0.5)
    assert late.self_id in ids(guest)


def test_tier_key_the_key_holder_moderates_the_coordinator_cannot() -> None:
    r = Room()
    guest = r.add("Gus")
    host = r.add("Hana", host_key=HOST_KEY.to_text())
    assert guest.get_state()["isCoordinator"] and host.get_state()["isHost"]
    roles = {p["id"]: p["role"] for p in guest.get_participants()}
    assert roles == {guest.self_id: "guest", host.self_id: "host"}
    assert not guest.set_locked(True)
    assert host.set_locked(True)
    r.settle(0.5)
    assert guest.get_state()["locked"]
    stranger = r.add("Sam")
    assert stranger.get_state()["lobbyStatus"] == "locked" and stranger.self_id not in ids(guest)
    assert host.set_locked(False)
    r.settle(0.5)
    assert not guest.get_state()["locked"]


def test_a_wrong_host_key_is_refused_at_once() -> None:
    r = Room()
    with pytest.raises(ValueError, match="not the host key"):
        r.add("Eve", host_key=OTHER_KEY.to_text())
    with pytest.raises(ValueError, match="no host key"):
        Room(gate=None).add("Eve", host_key=HOST_KEY.to_text())


def test_a_coordinator_cannot_make_anyone_host() -> None:
    r = Room()
    guest, bob = r.add("Gus"), r.add("Bob")
    assert guest.room is not None
    coord = guest.room._coordinator
    assert coord is not None
    # Tampered coordinator: names itself host, with no claim (or someone else's) to show.
    coord._host, coord._host_proof = guest.self_id, None
    coord.broadcast()
    r.settle(0.5)
    assert not bob.get_state()["isHost"]
    assert all(p["role"] == "guest" for p in bob.get_participants())
    assert bob.room is not None and bob.room.drops.by_reason["roster:bad-host-claim"] >= 1


# --------------------------------------------------------------------------- signed commands


def test_forged_replayed_stale_and_retargeted_commands_are_rejected_and_counted() -> None:
    r = Room()
    coord = r.add("Gus")
    host = r.add("Hana", host_key=HOST_KEY.to_text())
    eve = r.add("Eve")
    now = r.bus.clock.wall()
    ring, forger = HostKeyring(HOST_KEY, ROOM), HostKeyring(OTHER_KEY, ROOM)
    c = coord.self_id

    send_mod(eve, forger.command("lock", by=eve.self_id, coordinator=c, now=now))  # forged key
    send_mod(eve, ring.command("lock", by=host.self_id, coordinator=c, now=now))  # stolen: not eve's link
    send_mod(host, ring.command("lock", by=host.self_id, coordinator=eve.self_id, now=now))  # re-targeted
    send_mod(host, ring.command("lock", by=host.self_id, coordinator=c, now=now - 600))  # stale
    send_mod(host, ring.command("lock", by=host.self_id, coordinator=c, now=now + 600))  # from the future
    send_mod(host, HostKeyring(HOST_KEY, "room-elsewhere").command("lock", by=host.self_id, coordinator=c,
                                                                   now=now))  # another room
    send_mod(host, "garbage.token")
    r.settle(0.5)
    assert not coord.get_state()["locked"]
    assert mod_drops(coord) == {
        "bad-signature": 1, "wrong-sender": 1, "wrong-coordinator": 1, "stale": 1, "future": 1,
        "wrong-room": 1, "malformed": 1,
    }
    good = ring.command("lock", by=host.self_id, coordinator=c, now=now)
    send_mod(host, good)
    r.settle(0.5)
    assert coord.get_state()["locked"]
    assert host.set_locked(False)
    r.settle(0.5)
    send_mod(host, good)  # replayed: the room stays unlocked
    r.settle(0.5)
    assert not coord.get_state()["locked"] and mod_drops(coord)["replayed"] == 1


def test_a_tampered_guest_cannot_forge_a_ban() -> None:
    r = Room()
    coord, host, eve = r.add("Gus"), r.add("Hana", host_key=HOST_KEY.to_text()), r.add("Eve")
    now = r.bus.clock.wall()
    forged = HostKeyring(OTHER_KEY, ROOM).record(ban=True, target=host.self_id, keys=[], now=now)
    send_mod(eve, forged)
    r.settle(0.5)
    assert host.self_id in ids(coord) and mod_drops(coord) == {"bad-signature": 1}


# ---------------------------------------------------------------------------------- bans


def test_a_ban_survives_three_migrations_including_the_banned_member_having_coordinated() -> None:
    r = Room()
    token = "tab-token-of-alice"
    alice = r.add("Alice", identity=token)  # first: the coordinator
    host = r.add("Hana", host_key=HOST_KEY.to_text())
    others = [r.add(n) for n in ("Bob", "Cyd", "Dee")]
    assert alice.get_state()["isCoordinator"]
    assert host.remove(alice.self_id)  # the host removes the coordinator itself
    r.settle()
    assert alice.get_state()["lobbyStatus"] == "removed" and alice._left
    everyone = [host, *others]
    for s in everyone:
        assert alice.self_id not in ids(s)
    for _round in range(3):
        coord = coordinator_of(*everyone)
        back = r.add("Alice", identity=token)  # a reload: new member id, same tab token
        assert back.get_state()["lobbyStatus"] == "removed" and back.self_id not in ids(coord)
        assert all(back.self_id not in ids(s) for s in everyone)
        if coord is host:
            break
        r.kill(coord)
        everyone.remove(coord)
        r.settle(5.0)
        assert any(s.get_state()["isCoordinator"] for s in everyone)
    # A stranger with another token still gets in: the ban is Alice's, not the room's.
    assert r.add("Zoe").self_id in ids(host)


def test_unban_lets_back_in_and_the_old_ban_cannot_be_replayed_over_it() -> None:
    r = Room()
    coord, host = r.add("Gus"), r.add("Hana", host_key=HOST_KEY.to_text())
    bob = r.add("Bob", identity="bobs-tab")
    ban_seen: list[str] = []
    assert host.room is not None
    assert host.remove(bob.self_id)
    r.settle(0.5)
    assert coord.room is not None
    ban_seen.extend(coord.room.roster.records)
    assert len(ban_seen) == 1
    assert host.unban(bob.self_id)
    r.settle(0.5)
    back = r.add("Bob", identity="bobs-tab")
    # The unban names the old id; the reload has a new one but the same token: the newest record
    # for the old id is an unban, and no remaining ban lists the token.
    assert back.self_id in ids(coord)
    send_mod(back, ban_seen[0])  # anyone replays the old ban record: older than the unban, no effect
    r.settle(0.5)
    assert back.self_id in ids(coord)


def test_the_host_reproves_itself_after_a_migration() -> None:
    r = Room()
    first, second = r.add("Gus"), r.add("Bob")
    host = r.add("Hana", host_key=HOST_KEY.to_text())
    assert host.room is not None
    host.room.reclaim_bias = 5.0  # the host loses the race for the freed slot: it must re-prove itself
    r.kill(first)
    r.settle(8.0)
    assert second.get_state()["isCoordinator"]
    assert [p["role"] for p in second.get_participants() if p["id"] == host.self_id] == ["host"]
    assert host.set_lobby(True)
    r.settle(0.5)
    assert second.get_state()["lobbyOn"]


# -------------------------------------------------------------------------------- gates


def test_names_gate_lets_in_listed_names_only() -> None:
    r = Room(gate=JoinGate(mode="names", names=("Ann", "Bob")))
    ann = r.add("ann")
    eve = r.add("Eve")
    assert eve.get_state()["lobbyStatus"] == "not-listed" and eve.self_id not in ids(ann)
    bob = r.add("Bob")
    assert bob.self_id in ids(ann)


async def test_code_gate_needs_the_right_code() -> None:
    salt = bytes(range(16))
    key = await derive_code_key("tulip-42", salt)
    gate = JoinGate(mode="code", code_check=f"{b64url_encode(salt)}.{code_verifier(key)}")
    r = Room(gate=gate)
    first = r.add("Ann", credential=await prepare_credential(gate, "tulip-42"))
    nobody = r.add("Nic")
    wrong = r.add("Wes", credential=await prepare_credential(gate, "tulip-43"))
    assert nobody.get_state()["lobbyStatus"] == "needs-credential"
    assert wrong.get_state()["lobbyStatus"] == "bad-credential"
    assert ids(first) == {first.self_id}
    wrong.set_credential(await prepare_credential(gate, "  tulip-42\n"))  # retyped: let in
    r.settle(1.0)
    assert wrong.get_state()["lobbyStatus"] == "admitted" and wrong.self_id in ids(first)


def test_invite_gate_checks_signature_room_and_expiry_and_fixes_the_name() -> None:
    invite_key = PrivateKey.from_bytes(bytes(range(3, 35)))
    gate = JoinGate(mode="invite", invite_key=invite_key.public_key.to_text(), host=KEY_GATE.host)
    r = Room(gate=gate)
    host = r.add("Hana", host_key=HOST_KEY.to_text())  # the host needs no invite
    now = r.bus.clock.wall()
    good = mint_invite(invite_key.to_text(), name="Bob B.", room=ROOM, ttl=3600, now=now)
    bob = r.add("bobby", credential=good)
    assert {p["name"] for p in host.get_participants() if p["id"] == bob.self_id} == {"Bob B."}
    expired = mint_invite(invite_key.to_text(), name="Old", room=ROOM, ttl=60, now=now - 3600)
    elsewhere = mint_invite(invite_key.to_text(), name="Lost", room="room-other", ttl=3600, now=now)
    forged = sign_token(OTHER_KEY, {"name": "Eve", "room": ROOM, "exp": now + 3600})
    verdicts = {
        "expired": r.add("a", credential=expired),
        "elsewhere": r.add("b", credential=elsewhere),
        "forged": r.add("c", credential=forged),
        "none": r.add("d"),
    }
    assert {k: s.get_state()["lobbyStatus"] for k, s in verdicts.items()} == {
        "expired": "expired-credential", "elsewhere": "bad-credential", "forged": "bad-credential",
        "none": "needs-credential",
    }
    assert ids(host) == {host.self_id, bob.self_id}


def test_unknown_or_malformed_gates_fail_closed() -> None:
    with pytest.raises(GateError) as err:
        JoinGate.from_json({"mode": "secret-handshake"})
    assert err.value.reason == "unknown-mode"
    with pytest.raises(GateError) as err:
        JoinGate.from_json({"mode": "code"})
    assert err.value.reason == "missing-param"
    with pytest.raises(GateError) as err:  # an email gate without the server that mails the codes
        Room(gate=None).add("Ann", gate={"mode": "email"})
    assert err.value.reason == "missing-param"
    committed = new_room(KEY_GATE)
    with pytest.raises(GateError) as err:
        Room(room=committed, gate=None).add("Ann")
    assert err.value.reason == "no-gate"
    with pytest.raises(GateError) as err:
        Room(room=committed, gate=JoinGate()).add("Ann")  # the settings stripped to open: refused
    assert err.value.reason == "gate-mismatch"
    Room(room=committed).add("Ann")  # the right settings: fine


def test_a_full_room_says_full() -> None:
    from kibitz.room import coordinator as coordinator_module

    r = Room(gate=None)
    a = r.add("Ann")
    b = r.add("Bob")
    old = coordinator_module.MAX_MEMBERS
    coordinator_module.MAX_MEMBERS = 2
    try:
        c = r.add("Cyd")
    finally:
        coordinator_module.MAX_MEMBERS = old
    assert c.get_state()["lobbyStatus"] == "full" and c.self_id not in ids(a) | ids(b)


# ------------------------------------------------------------------------ the mesh's door


def test_a_member_not_on_the_roster_gets_nothing_by_dialling_directly() -> None:
    r = Room()
    coord = r.add("Gus")
    host = r.add("Hana", host_key=HOST_KEY.to_text())
    assert host.set_locked(True)
    r.settle(0.5)
    got: list[Any] = []
    coord.on_message(lambda data, frm: got.append((data, frm)))
    outsider = r.add("Oz")  # locked out: never on the roster
    assert outsider.self_id not in ids(coord)
    # Tampered: it tells its own mesh that the coordinator is a member and dials it directly.
    outsider.mesh.set_members({outsider.self_id: None, coord.self_id: None})
    r.settle(1.0)
    outsider.mesh.send(coord.self_id, {"k": "app", "data": "let me in"})
    r.settle(10.0)
    assert got == [] and not coord.mesh.link_up(outsider.self_id)
    assert coord.mesh.drops.by_reason["held-expired"] >= 1


def test_host_command_tokens_are_bound_to_the_sender_and_room() -> None:
    # Golden shape: what a command says, checked field by field.
    ring = HostKeyring(HOST_KEY, "Room Mod 7!")
    token = ring.command("admit", by="kbz-m-a", coordinator="kbz-m-c", now=1_800_000_000, target="kbz-m-x")
    body, _, sig = token.partition(".")
    import base64
    import json

    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert {k: v for k, v in payload.items() if k != "n"} == {
        "k": CMD_KIND, "op": "admit", "room": "room-mod-7", "by": "kbz-m-a", "c": "kbz-m-c",
        "iat": 1_800_000_000, "target": "kbz-m-x",
    }
    assert len(sig) == 86  # 64 raw bytes


# ------------------------------------------------------ grants enforced by the receiving side


def test_audio_from_a_peer_without_speak_is_not_played_until_granted() -> None:
    from kibitz.transport import TrackArrived

    r = Room(gate=None)
    ann = r.add("Ann")
    bot = r.add("Bot", meta={"role": "agent"})
    heard: list[tuple[str, str, object]] = []
    ann.on("tracks", lambda peer, lane, track: heard.append((peer, lane, track)))
    link = ann.mesh.link_of(bot.self_id)
    assert link is not None
    voice, video = object(), object()
    # A tampered agent sends audio it may not: the transport hands the track over, nobody plays it.
    ann._on_transport(TrackArrived(link, "audio", voice))
    ann._on_transport(TrackArrived(link, "video", video))
    assert heard == [(bot.self_id, "video", video)]
    assert ann.remote_tracks(bot.self_id) == {"video": video}
    ann.set_capability_grant(bot.self_id, {"perceive": ["read-chat"], "act": ["speak"]})
    r.settle(0.5)
    assert heard[-1] == (bot.self_id, "audio", voice) and ann.remote_tracks(bot.self_id)["audio"] is voice
    ann.set_capability_grant(bot.self_id, {"perceive": ["read-chat"], "act": []})
    r.settle(0.5)
    assert heard[-1] == (bot.self_id, "audio", None) and "audio" not in ann.remote_tracks(bot.self_id)


def test_a_peer_without_read_roster_gets_ids_but_not_who_is_here() -> None:
    r = Room(gate=None)
    ann = r.add("Ann", meta={"seat": 1})
    bob = r.add("Bob")
    bot = r.add("Bot", meta={"role": "agent"})
    assert {p["name"] for p in bot.get_participants()} == {"Ann", "Bob", "Bot"}
    ann.set_capability_grant(bot.self_id, {"perceive": ["read-chat", "receive-directed"], "act": []})
    r.settle(1.0)
    seen = {p["id"]: p for p in bot.get_participants()}
    assert set(seen) == {ann.self_id, bob.self_id, bot.self_id}  # ids: it still needs its links
    assert seen[ann.self_id]["name"] == "" and seen[ann.self_id]["meta"] == {}
    assert seen[bot.self_id]["name"] == "Bot"
    assert {p["name"] for p in bob.get_participants()} == {"Ann", "Bob", "Bot"}  # others see everything
    ann.set_capability_grant(bot.self_id, None)  # back to the agent default, which reads the roster
    r.settle(1.0)
    assert {p["name"] for p in bot.get_participants()} == {"Ann", "Bob", "Bot"}


def test_one_invite_admits_one_live_member_and_a_dishonest_admission_is_undone() -> None:
    invite_key = PrivateKey.from_bytes(bytes(range(3, 35)))
    gate = JoinGate(mode="invite", invite_key=invite_key.public_key.to_text())
    r = Room(gate=gate)
    now = r.bus.clock.wall()
    ann = r.add("Ann", credential=mint_invite(invite_key.to_text(), name="Ann", room=ROOM, ttl=3600, now=now))
    shared = mint_invite(invite_key.to_text(), name="Bob", room=ROOM, ttl=3600, now=now)
    bob = r.add("Bob", credential=shared)
    assert bob.self_id in ids(ann)
    friend = r.add("Friend", credential=shared)  # Bob forwarded his invite link
    r.settle(20.0)  # several announce rounds: the seat must not flap between the two holders
    assert bob.self_id in ids(ann) and friend.self_id not in ids(ann)
    assert friend.get_state()["lobbyStatus"] == "credential-in-use"
    assert bob.get_state()["lobbyStatus"] != "credential-in-use"
    bob.close()  # the seat frees when its holder leaves; the second holder gets in by itself
    r.settle(10.0)
    assert friend.self_id in ids(ann) and friend.get_state()["lobbyStatus"] == "admitted"
    # A dishonest coordinator lets a stranger in without an invite...
    assert ann.get_state()["isCoordinator"] and ann.room is not None
    coord = ann.room._coordinator
    assert coord is not None
    stranger = r.add("Sly")
    assert stranger.get_state()["lobbyStatus"] == "needs-credential"
    from kibitz.admission import CredentialCheck

    original = coord._credential
    coord._credential = lambda msg: CredentialCheck("ok")  # type: ignore[method-assign]
    stranger.set_credential("anything")
    r.settle(1.0)
    assert stranger.self_id in ids(friend)
    # ...then it goes; an honest coordinator checks everyone again and the stranger is out.
    coord._credential = original  # type: ignore[method-assign]
    r.kill(ann)
    r.settle(10.0)
    assert stranger.self_id not in ids(friend)
    assert stranger.get_state()["lobbyStatus"] == "bad-credential"


async def test_the_host_opens_the_sealed_key_from_the_link_mid_call() -> None:
    from kibitz.rooms import create_room

    made = await create_room(host_password="correct horse", base_url="https://app.example/")
    r = Room(room=made.room, gate=made.gate)
    guest = r.add("Gus")
    hana = r.add("Hana")
    state = hana.get_state()
    assert not state["isHost"] and state["hostKeySealed"] and not state["canGrant"]
    with pytest.raises(ValueError, match="wrong passphrase"):
        await hana.claim_host("wrong horse")
    await hana.claim_host("correct horse")
    r.settle(1.0)
    assert hana.get_state()["isHost"] and hana.get_state()["canGrant"]
    assert [p["role"] for p in guest.get_participants() if p["id"] == hana.self_id] == ["host"]
    assert hana.set_locked(True)
    r.settle(0.5)
    assert guest.get_state()["locked"]
    invite = hana.invite_link("https://app.example/call")
    assert "ghk=" not in invite and invite.startswith("https://app.example/call#" + made.room + "?g=open&gh=")


def test_a_coordinator_remembers_a_bounded_number_of_admitted_members() -> None:
    from kibitz.room.base import RecentSet

    recent = RecentSet(3)
    for key in ["a", "b", "c", "a", "d"]:  # "a" again: it becomes the most recent
        recent.add(key)
    assert len(recent) == 3 and "a" in recent and "d" in recent and "b" not in recent
