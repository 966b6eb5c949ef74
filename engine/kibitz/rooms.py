"""Making rooms with settings: ``Kibitz.createRoom`` in the page and ``kibitz room new`` share this.

:func:`create_room` makes a fresh room id that commits to its settings (:func:`kibitz.gate.new_room`),
the keys the settings name (a host key, an invite key), and the shareable link. No server is
involved: whoever coordinates enforces what the room id commits to.

What comes back, and who should hold it:

* ``room`` and ``link`` — share with everyone you invite (the link carries the gate; never a secret).
* ``host_key`` — only the host. Passed to ``Kibitz.mount({hostKey})`` (or ``Agent(host_key=…)``); it
  signs every moderation act. With a ``host_password`` the key also rides the link, sealed
  (PBKDF2-SHA256 210 000 + AES-256-GCM): the host can then open the link anywhere and type the
  password instead of keeping the key.
* ``invite_key`` — whoever hands out invites (invite gate): :meth:`NewRoom.mint_invite`.
* ``code`` — the code of a code gate (made up for you if you gave none): tell it to your guests by
  another channel than the link; the link holds only a slow hash of it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from typing import Any, Literal

from kibitz.admission import mint_invite
from kibitz.crypto import (
    CryptoBackend,
    PrivateKey,
    b64url_encode,
    code_verifier,
    derive_code_key,
    new_code_salt,
    seal,
    unseal,
)
from kibitz.crypto.seal import SealError
from kibitz.gate import GateMode, HostSpec, JoinGate, make_link, new_room

HostChoice = Literal["key", "name", "email", "none"]
CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud without mistakes
MIN_CODE_CHARS = 4
MAX_CODE_CHARS = 128


@dataclass(frozen=True)
class NewRoom:
    room: str
    gate: JoinGate
    link: str
    host_key: str | None = None
    invite_key: str | None = None
    code: str | None = None

    def mint_invite(self, name: str, ttl: float, *, now: float) -> tuple[str, str]:
        """An invite for ``name`` valid ``ttl`` seconds: ``(token, link)``; the link carries it."""
        if self.invite_key is None:
            raise ValueError("this room has no invite gate, so there are no invites to mint")
        token = mint_invite(self.invite_key, name=name, room=self.room, ttl=ttl, now=now)
        return token, make_link(self.link, self.room, self.gate, invite=token)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"room": self.room, "joinGate": self.gate.to_json(), "link": self.link}
        for key, value in (("hostKey", self.host_key), ("inviteKey", self.invite_key), ("code", self.code)):
            if value is not None:
                out[key] = value
        return out


def new_code(length: int = 8) -> str:
    """A random code that reads well aloud: ``xxxx-xxxx`` from 31 unambiguous characters (~40 bits)."""
    chars = "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))
    return chars[: length // 2] + "-" + chars[length // 2 :]


async def create_room(
    *,
    gate: GateMode = "open",
    names: list[str] | tuple[str, ...] | None = None,
    code: str | None = None,
    host: HostChoice = "key",
    host_name: str | None = None,
    host_password: str | None = None,
    lobby: bool = False,
    base_url: str = "",
    backend: CryptoBackend | None = None,
    allowed: list[str] | tuple[str, ...] | None = None,
    issuer: str | None = None,
    client_id: str | None = None,
    host_email: str | None = None,
    agent_keys: list[str] | tuple[str, ...] | None = None,
) -> NewRoom:
    """A fresh room with these settings (see the module docstring). ``ValueError``/``GateError`` for
    settings that do not hang together, with what to change.

    Email and google gates take ``allowed`` (addresses and ``@domains``), ``issuer`` (email: the
    Kibitz server's URL; google: Google unless another OIDC issuer) and ``client_id`` (google).
    ``host="email"`` makes the member signed in as ``host_email`` the host. ``agent_keys``: public
    keys one of which an agent must prove to enter."""
    spec = HostSpec()
    host_key: PrivateKey | None = None
    if host == "key":
        host_key = PrivateKey.generate()
        spec = HostSpec(key=host_key.public_key.to_text())
    elif host == "name":
        if not host_name or not host_name.strip():
            raise ValueError("a host by name needs hostName: the display name the host will use")
        spec = HostSpec(name=host_name.strip())
    elif host == "email":
        if not host_email or "@" not in host_email:
            raise ValueError("a host by email needs hostEmail: the address the host signs in with")
        spec = HostSpec(email=host_email.strip())
    elif host != "none":
        raise ValueError(f"host must be 'key', 'name', 'email' or 'none', not {host!r}")
    if host_password is not None and host != "key":
        raise ValueError("a host password seals the host key: it needs host 'key'")
    settings = JoinGate(mode=gate, host=spec, lobby=bool(lobby), allowed=tuple(allowed or ()),
                        issuer=issuer or None, client_id=client_id or None,
                        agent_keys=tuple(agent_keys or ()))
    invite_key: PrivateKey | None = None
    if gate == "names":
        settings = replace(settings, names=tuple(n.strip() for n in (names or ()) if n and n.strip()))
    elif gate == "code":
        code = new_code() if code is None else code
        if not MIN_CODE_CHARS <= len(code.strip()) <= MAX_CODE_CHARS:
            raise ValueError(f"a room code is {MIN_CODE_CHARS} to {MAX_CODE_CHARS} characters")
        salt = new_code_salt()
        key = await derive_code_key(code, salt, backend=backend)
        settings = replace(settings, code_check=f"{b64url_encode(salt)}.{code_verifier(key)}")
    elif gate == "invite":
        invite_key = PrivateKey.generate()
        settings = replace(settings, invite_key=invite_key.public_key.to_text())
    elif names or code:
        raise ValueError(f"names and code belong to the names and code gates, not {gate!r}")
    settings.validate()
    room = new_room(settings)
    if host_password is not None:
        assert host_key is not None
        if len(host_password) < 8:
            raise ValueError("a host password has at least 8 characters (it guards the host key in the link)")
        sealed = await seal(host_password, host_key.to_bytes(), backend=backend)
        settings = replace(settings, sealed_host_key=sealed)  # not committed: the room id stays valid
    return NewRoom(
        room=room,
        gate=settings,
        link=make_link(base_url, room, settings),
        host_key=host_key.to_text() if host_key is not None else None,
        invite_key=invite_key.to_text() if invite_key is not None else None,
        code=code if gate == "code" else None,
    )


async def unseal_host_key(gate: JoinGate, password: str, *, backend: CryptoBackend | None = None) -> str:
    """The host key sealed in the link (``ghk``), opened with the host password. ``ValueError`` with
    a reason for a wrong password, a damaged blob, or a key that is not this room's host key."""
    if not gate.sealed_host_key:
        raise ValueError("this link carries no sealed host key; mount with hostKey instead")
    try:
        raw = await unseal(password, gate.sealed_host_key, backend=backend)
    except SealError as exc:
        raise ValueError(f"cannot open the host key: {exc}") from None
    key = PrivateKey.from_bytes(raw)
    if key.public_key.to_text() != gate.host.key:
        raise ValueError("the sealed key is not this room's host key (a mixed-up link)")
    return key.to_text()


__all__ = ["NewRoom", "create_room", "new_code", "unseal_host_key"]
