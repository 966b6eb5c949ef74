"""Rooms with settings, as the page meets them: the mount options and the page's own link.

``Kibitz.mount({room, joinGate, joinCredential, hostKey, hostPassword})`` — and, when ``joinGate``
is absent, the gate the page's URL fragment carries for that room (``#room?g=…``, as the original
reads it) — become what :class:`~kibitz.session.Session` takes. ``Kibitz.createRoom(options)`` runs
:func:`kibitz.rooms.create_room` here. Everything that can go wrong is a ``ValueError`` (a
:class:`~kibitz.gate.GateError` for a gate) with words the page shows as they are: a gated room never
falls back to open.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kibitz.admission import prepare_credential
from kibitz.crypto import CryptoBackend
from kibitz.gate import JoinGate, check_room, parse_link
from kibitz.ids import normalize_room
from kibitz.rooms import NewRoom, create_room, unseal_host_key


@dataclass(frozen=True)
class MountRoom:
    """A mount's room settings, checked against the room id."""

    gate: JoinGate
    credential: str | None
    """As the user gave it: a code (prepared before the session starts) or an invite token."""
    host_key: str | None
    host_password: str | None


def _text(config: Mapping[str, Any], key: str) -> str | None:
    value = config.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"Kibitz.mount: {key} must be a string")
    return value


def mount_room(config: Mapping[str, Any]) -> MountRoom:
    """The settings of ``config['room']``: the ``joinGate`` option, else the gate in the page URL's
    fragment (``pageUrl``) if that fragment names the same room; the invite there (``gt``) when no
    ``joinCredential`` is given. ``GateError``/``ValueError`` for anything that cannot be trusted."""
    room = str(config.get("room") or "")
    gate_option = config.get("joinGate")
    credential = _text(config, "joinCredential")
    gate: JoinGate | None = JoinGate.from_json(gate_option) if gate_option is not None else None
    page_url = _text(config, "pageUrl")
    if gate is None and page_url and "#" in page_url:
        link = parse_link(page_url)
        if link.room is not None and normalize_room(link.room) == normalize_room(room):
            gate = link.gate
            credential = credential or link.invite
    return MountRoom(
        gate=check_room(room, gate),
        credential=credential,
        host_key=_text(config, "hostKey"),
        host_password=_text(config, "hostPassword"),
    )


async def prepared_credential(settings: MountRoom, backend: CryptoBackend | None = None) -> str | None:
    """What the session presents at the door (a code's slow-hash key, an invite as it is)."""
    return await prepare_credential(settings.gate, settings.credential, backend=backend)


async def host_key_of(settings: MountRoom, backend: CryptoBackend | None = None) -> str | None:
    """The host key from ``hostKey``, or unsealed from the link with ``hostPassword``."""
    if settings.host_key:
        return settings.host_key
    if settings.host_password:
        return await unseal_host_key(settings.gate, settings.host_password, backend=backend)
    return None


def _new_room_json(made: NewRoom) -> str:
    return json.dumps(made.to_json())


async def create_room_json(options_json: str, base_url: str) -> str:
    """``Kibitz.createRoom(options)``: the options as JSON (camelCase), the page's address as the
    default base of the link; the new room as JSON (``room``, ``joinGate``, ``link``, ``hostKey``,
    ``inviteKey``, ``code``)."""
    opts = json.loads(options_json)
    if not isinstance(opts, dict):
        raise ValueError("Kibitz.createRoom(options): options must be an object")
    known = {"gate", "names", "code", "host", "hostName", "hostPassword", "lobby", "baseUrl"}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ValueError(f"Kibitz.createRoom: unknown options {unknown}; known: {sorted(known)}")
    made = await create_room(
        gate=opts.get("gate", "open"),
        names=opts.get("names"),
        code=opts.get("code"),
        host=opts.get("host", "key"),
        host_name=opts.get("hostName"),
        host_password=opts.get("hostPassword"),
        lobby=bool(opts.get("lobby", False)),
        base_url=str(opts.get("baseUrl") or base_url.split("#", 1)[0]),
    )
    return _new_room_json(made)


def mint_invite_json(room_json: str, name: str, ttl: float) -> str:
    """``mintInvite(name, ttlSeconds)`` on what ``createRoom`` returned: ``{token, link}``."""
    made = json.loads(room_json)
    room = NewRoom(room=made["room"], gate=JoinGate.from_json(made["joinGate"]), link=made["link"],
                   invite_key=made.get("inviteKey"))
    token, link = room.mint_invite(str(name), float(ttl), now=time.time())
    return json.dumps({"token": token, "link": link})


__all__ = [
    "MountRoom", "create_room_json", "host_key_of", "mint_invite_json", "mount_room", "prepared_credential",
]
