"""``kibitz room new`` and ``kibitz room invite``: rooms with settings from the command line.

Secrets never come from flags (other users can read a process's arguments): a code, a host password
or an invite key come from a file (``--…-file``) or the environment (``KIBITZ_ROOM_CODE``,
``KIBITZ_HOST_PASSWORD``, ``KIBITZ_INVITE_KEY``). The output names each value on a line of its own
(``KIBITZ_ROOM=…``), or one JSON object with ``--json``; keep the host and invite keys to yourself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from kibitz.gate import GateError, parse_link
from kibitz.rooms import NewRoom, create_room


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    room = sub.add_parser("room", help="make a room with settings (a gate, a host), mint invites")
    room_sub = room.add_subparsers(dest="room_command", required=True)
    new = room_sub.add_parser("new", help="a fresh room id, its settings and its link")
    new.add_argument("--gate", default="open", choices=["open", "names", "code", "invite", "email", "google"],
                     help="who may enter (default open)")
    new.add_argument("--allow", default=None,
                     help="email/google gates: comma-separated addresses and @domains let in (default: any)")
    new.add_argument("--issuer", default=None,
                     help="email gate: the Kibitz server's URL (it mails the codes); google: another issuer")
    new.add_argument("--client-id", default=None, help="google gate: the app's OAuth client id")
    new.add_argument("--host-email", default=None, help="host tier email: the address the host signs in with")
    new.add_argument("--agent-key", action="append", default=None,
                     help="agents must prove this public key (repeatable): only known agents enter")
    new.add_argument("--names", default=None, help="names gate: comma-separated names")
    new.add_argument("--code-file", default=None,
                     help="code gate: file holding the code (or $KIBITZ_ROOM_CODE; default: a new one)")
    new.add_argument("--host", default="key", choices=["key", "name", "email", "none"],
                     help="host tier (default key)")
    new.add_argument("--host-name", default=None, help="host tier name: the host's display name")
    new.add_argument("--host-password-file", default=None,
                     help="seal the host key into the link with this password (or $KIBITZ_HOST_PASSWORD)")
    new.add_argument("--lobby", action="store_true", help="waiting room on from the start")
    new.add_argument("--base-url", default="http://127.0.0.1:8787/", help="page the link opens")
    new.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    inv = room_sub.add_parser("invite", help="an invite link for one guest (invite gate)")
    inv.add_argument("--link", required=True, help="the room's link")
    inv.add_argument("--name", required=True, help="the guest's name (shown on the roster)")
    inv.add_argument("--ttl", type=float, default=7 * 86400, help="seconds it is valid (default 7 days)")
    inv.add_argument("--invite-key-file", default=None, help="file with the invite key ($KIBITZ_INVITE_KEY)")


def _secret(path: str | None, env: str) -> str | None:
    value = Path(path).read_text(encoding="utf-8") if path else os.environ.get(env)
    return value.strip() or None if value else None


def room_main(args: argparse.Namespace) -> int:
    try:
        if args.room_command == "new":
            made = asyncio.run(
                create_room(
                    gate=args.gate,
                    names=args.names.split(",") if args.names else None,
                    code=_secret(args.code_file, "KIBITZ_ROOM_CODE") if args.gate == "code" else None,
                    host=args.host,
                    host_name=args.host_name,
                    host_password=_secret(args.host_password_file, "KIBITZ_HOST_PASSWORD"),
                    lobby=args.lobby,
                    base_url=args.base_url,
                    allowed=args.allow.split(",") if args.allow else None,
                    issuer=args.issuer,
                    client_id=args.client_id,
                    host_email=args.host_email,
                    agent_keys=args.agent_key,
                )
            )
            _print(made, as_json=args.json)
            return 0
        key = _secret(args.invite_key_file, "KIBITZ_INVITE_KEY")
        if not key:
            print("kibitz room invite: the invite key comes from --invite-key-file or $KIBITZ_INVITE_KEY",
                  file=sys.stderr)
            return 2
        link = parse_link(args.link)
        if link.room is None or link.gate is None or link.gate.mode != "invite":
            print("kibitz room invite: --link must be an invite-gated room's link", file=sys.stderr)
            return 2
        room = NewRoom(room=link.room, gate=link.gate, link=args.link, invite_key=key)
        _token, url = room.mint_invite(args.name, args.ttl, now=time.time())
        print(f"KIBITZ_INVITE_LINK={url}")
        return 0
    except (GateError, ValueError, OSError) as exc:
        print(f"kibitz room: {exc}", file=sys.stderr)
        return 2


def _print(made: NewRoom, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(made.to_json(), indent=2))
        return
    print(f"KIBITZ_ROOM={made.room}")
    print(f"KIBITZ_LINK={made.link}")
    if made.code is not None:
        print(f"KIBITZ_ROOM_CODE={made.code}")
    if made.host_key is not None:
        print(f"KIBITZ_HOST_KEY={made.host_key}")
    if made.invite_key is not None:
        print(f"KIBITZ_INVITE_KEY={made.invite_key}")
    print("# share the link (and the code, by another channel); keep the keys to yourself", file=sys.stderr)
