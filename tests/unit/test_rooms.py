"""Making rooms with settings (createRoom / `kibitz room new`), invites, and the sealed host key."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from kibitz.admission import check_credential, prepare_credential
from kibitz.authority import HostKeyring
from kibitz.gate import GateError, check_room, is_committed_room, parse_link
from kibitz.rooms import create_room, new_code, unseal_host_key

ROOT = Path(__file__).resolve().parents[2]
KIBITZ = str(ROOT / ".venv" / "bin" / "kibitz")


async def test_an_open_room_with_a_key_host_commits_to_its_settings() -> None:
    made = await create_room(base_url="https://app.example/call")
    assert is_committed_room(made.room) and len(made.room) == 40
    assert made.host_key and made.invite_key is None and made.code is None
    assert made.gate.host.key == HostKeyring(made.host_key, made.room).public_text
    link = parse_link(made.link)
    assert link.room == made.room and link.gate == made.gate
    assert made.link.startswith("https://app.example/call#" + made.room + "?g=open&gh=")
    check_room(made.room, link.gate)  # the link opens its own room
    assert made.host_key not in made.link and "hostKey" in made.to_json()


async def test_a_code_room_keeps_only_a_slow_hash_of_the_code() -> None:
    made = await create_room(gate="code", lobby=True)
    assert made.code is not None and made.code not in made.link
    assert made.gate.lobby and "gl=1" in made.link
    proof = await prepare_credential(made.gate, made.code)
    now = time.time()
    assert check_credential(made.gate, made.room, proof, name="x", now=now).verdict == "ok"
    wrong = await prepare_credential(made.gate, made.code + "x")
    assert check_credential(made.gate, made.room, wrong, name="x", now=now).verdict == "bad-credential"
    chosen = await create_room(gate="code", code="open sesame", host="none")
    assert chosen.code == "open sesame" and chosen.host_key is None


async def test_invites_are_per_guest_and_ride_their_link() -> None:
    made = await create_room(gate="invite")
    token, link = made.mint_invite("Dana", 3600, now=time.time())
    parsed = parse_link(link)
    assert parsed.invite == token and parsed.gate == made.gate and parsed.room == made.room
    check = check_credential(made.gate, made.room, token, name="ignored", now=time.time())
    assert (check.verdict, check.name) == ("ok", "Dana")
    with pytest.raises(ValueError, match="between 60 seconds"):
        made.mint_invite("Dana", 5, now=time.time())
    with pytest.raises(ValueError, match="no invite gate"):
        (await create_room()).mint_invite("x", 3600, now=time.time())


async def test_a_host_password_seals_the_key_into_the_link() -> None:
    made = await create_room(host_password="correct horse")
    assert made.gate.sealed_host_key and "ghk=" in made.link
    opened = parse_link(made.link).gate
    assert opened is not None
    assert await unseal_host_key(opened, "correct horse") == made.host_key
    with pytest.raises(ValueError, match="wrong passphrase"):
        await unseal_host_key(opened, "wrong horse")
    with pytest.raises(ValueError, match="at least 8"):
        await create_room(host_password="short")


async def test_settings_that_do_not_hang_together_are_refused() -> None:
    with pytest.raises(ValueError, match="hostName"):
        await create_room(host="name")
    with pytest.raises(ValueError, match="needs host 'key'"):
        await create_room(host="none", host_password="correct horse")
    with pytest.raises(GateError):
        await create_room(gate="names")
    with pytest.raises(GateError, match="client id"):
        await create_room(gate="google")  # a google gate names the app's OAuth client
    with pytest.raises(GateError, match="gd, gi and gc"):
        await create_room(gate="open", allowed=["@x.example"])
    with pytest.raises(ValueError):
        await create_room(gate="open", code="x")
    named = await create_room(gate="names", names=["Ann", " Bob "], host="name", host_name="Ann")
    assert named.gate.names == ("Ann", "Bob") and named.gate.host.name == "Ann" and named.host_key is None


def test_codes_read_aloud_well() -> None:
    codes = {new_code() for _ in range(50)}
    assert len(codes) == 50
    assert all(len(c) == 9 and c[4] == "-" and not set(c) & set("01ilo") for c in codes)


def test_the_cli_makes_rooms_and_invites_without_secrets_on_the_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "KIBITZ_HOST_PASSWORD": "correct horse"}
    out = subprocess.run([KIBITZ, "room", "new", "--gate", "invite", "--lobby", "--json", "--base-url",
                          "https://app.example/"], capture_output=True, text=True, env=env, check=True)
    made = json.loads(out.stdout)
    assert made["joinGate"]["mode"] == "invite" and made["joinGate"]["lobby"] is True
    assert made["joinGate"]["sealedHostKey"] and made["hostKey"].startswith("kbzk1.")
    key_file = tmp_path / "invite.key"
    key_file.write_text(made["inviteKey"] + "\n")
    invite = [KIBITZ, "room", "invite", "--link", made["link"], "--name", "Dana"]
    invite += ["--invite-key-file", str(key_file)]
    out = subprocess.run(invite, capture_output=True, text=True, check=True)
    line = out.stdout.strip()
    assert line.startswith("KIBITZ_INVITE_LINK=https://app.example/#" + made["room"])
    assert parse_link(line.split("=", 1)[1]).invite
    lines = subprocess.run([KIBITZ, "room", "new", "--gate", "code"], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert [ln.split("=", 1)[0] for ln in lines] == ["KIBITZ_ROOM", "KIBITZ_LINK", "KIBITZ_ROOM_CODE",
                                                     "KIBITZ_HOST_KEY"]
    bad = subprocess.run([KIBITZ, "room", "invite", "--link", "#r?g=open", "--name", "x", "--invite-key-file",
                          str(key_file)], capture_output=True, text=True)
    assert bad.returncode == 2 and "invite-gated" in bad.stderr
