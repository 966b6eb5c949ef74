"""A room's settings: its join gate, its host commitment, lobby-on-start — and the link that carries them.

A room made with :func:`new_room` commits to its settings in its own id, so that whoever coordinates can
enforce them with no server and nobody can quietly open a gated room: the id is ``kz`` + 25 random
base32 characters (125 bits) + 13 characters of ``SHA-256("kbz-room.v1|" + random + "|" + canonical
settings)``. A member that mounts such a room with settings that do not match refuses to join
(:func:`check_room`). Rooms whose names were chosen by hand carry no commitment; there every member
must be given the same gate.

Settings travel as link parameters in the URL fragment (``#<room>?g=code&gv=…``), named as the
original engine names them where it has a name:

======  ====================================================  =========
param   meaning                                               committed
======  ====================================================  =========
``g``   gate mode: open, names, code, invite, email, google   yes
``gn``  names mode: the listed names, comma-separated          yes
``gv``  code mode: ``salt.verifier`` of the code (slow hash)   yes
``gk``  invite mode: public key that signs invites            yes
``gh``  host tier "key": the host's public key                yes
``ghn`` host tier "name": the host's display name (soft)      yes
``gho`` host tier "email": the host's verified address        yes
``gd``  email/google modes: allowed addresses and domains      yes
``gi``  email/google modes: the issuer (email: the server URL) yes
``gc``  google/oidc: the app's OAuth client id                yes
``gak`` agent keys: agents must prove one (comma-separated)    yes
``gl``  ``1``: the waiting room is on from the start          yes
``ghk`` the host's private key sealed with a host password    no
``gt``  this guest's invite token (a credential)              no
======  ====================================================  =========

Fail closed: an unknown ``g*`` parameter, an unknown mode, a mode without what it needs, or a value
that does not parse is a :class:`GateError` with a stable ``reason`` — never a silent fall back to an
open room (the original falls back to open; we do not). ``email`` and ``google`` rooms admit only
members whose identity token, bound to their own certificate, the coordinator verifies
(:mod:`kibitz.identity`); ``gd`` narrows them to listed addresses or domains.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args
from urllib.parse import parse_qsl, quote, urlsplit

from kibitz.crypto import PublicKey, b64url_decode
from kibitz.ids import MAX_ROOM_CHARS, normalize_room

GateMode = Literal["open", "names", "code", "invite", "email", "google"]
HostTier = Literal["none", "name", "key", "email"]
MODES: frozenset[str] = frozenset(get_args(GateMode))
SUPPORTED_MODES: frozenset[str] = MODES
"""Modes this engine can enforce (all of them since the identity layer)."""
IDENTITY_MODES: frozenset[str] = frozenset({"email", "google"})

GateReason = Literal[
    "unknown-mode",
    "unknown-param",
    "missing-param",
    "bad-param",
    "unsupported-mode",
    "gate-mismatch",
    "no-gate",
    "bad-room",
]

MAX_NAMES = 64
MAX_NAME_CHARS = 80
MAX_PARAM_CHARS = 4096
MAX_LINK_CHARS = 16384
ROOM_PREFIX = "kz"
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
RANDOM_CHARS = 25
COMMIT_CHARS = MAX_ROOM_CHARS - len(ROOM_PREFIX) - RANDOM_CHARS
COMMITTED_ROOM = re.compile(rf"^{ROOM_PREFIX}[a-z2-7]{{{RANDOM_CHARS + COMMIT_CHARS}}}$")
_COMMITTED = ("g", "gn", "gv", "gk", "gh", "ghn", "gho", "gd", "gi", "gc", "gak", "gl")
MAX_ALLOWED = 256
MAX_AGENT_KEYS = 16
_KNOWN = frozenset(_COMMITTED) | {"ghk", "gt"}


class GateError(ValueError):
    """A gate or link that cannot be trusted; ``reason`` is stable (count it, switch on it)."""

    def __init__(self, reason: GateReason, detail: str) -> None:
        super().__init__(detail)
        self.reason: GateReason = reason
        self.detail = detail


def fold_name(name: str) -> str:
    """How names compare (names gate, host by name): NFKC, trimmed, case-folded."""
    return unicodedata.normalize("NFKC", name).strip().casefold()


@dataclass(frozen=True)
class HostSpec:
    """Who the room's host is, as committed in its settings (at most one tier applies)."""

    key: str | None = None
    """Public key (b64url P-256 point) whose holder signs host commands: tier ``key``."""
    name: str | None = None
    """Display name of the host: tier ``name`` (soft: anyone can type a name)."""
    email: str | None = None
    """Verified email of the host: tier ``email`` (identity layer)."""

    @property
    def tier(self) -> HostTier:
        # A committed key disables the weaker tiers, as in the original.
        if self.key:
            return "key"
        if self.email:
            return "email"
        if self.name:
            return "name"
        return "none"

    def public_key(self) -> PublicKey | None:
        return PublicKey.from_text(self.key) if self.key else None


@dataclass(frozen=True)
class JoinGate:
    """Who may enter a room and who its host is. Immutable; build with :meth:`from_json` or
    :meth:`from_params`, which validate everything and raise :class:`GateError`."""

    mode: GateMode = "open"
    names: tuple[str, ...] = ()
    code_check: str | None = None
    invite_key: str | None = None
    host: HostSpec = field(default_factory=HostSpec)
    lobby: bool = False
    sealed_host_key: str | None = None
    allowed: tuple[str, ...] = ()
    """Email/google modes: addresses (``a@x.example``) and domains (``@x.example``) let in; empty: any
    verified address."""
    issuer: str | None = None
    """Email/google modes: who vouches (email: the Kibitz server's URL; google: default Google)."""
    client_id: str | None = None
    """Google/OIDC: the app's OAuth client id (the tokens' audience)."""
    agent_keys: tuple[str, ...] = ()
    """Public keys (P-256, b64url) one of which an agent must prove to enter (agent key admission)."""

    @property
    def identity_mode(self) -> bool:
        return self.mode in IDENTITY_MODES

    # --- parsing --------------------------------------------------------------------------------

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> JoinGate:
        """From link parameters (``g``, ``gn``, …); other parameters (``gt``, ``grant``, ``galaxy``…)
        are ignored here, an unknown ``g*`` one is refused."""
        for key, value in params.items():
            if key.startswith("g") and key not in _KNOWN:
                raise GateError("unknown-param", f"unknown gate parameter in the link: {key}")
            if not isinstance(value, str) or len(value) > MAX_PARAM_CHARS:
                raise GateError("bad-param", f"gate parameter {key!r} is not a short text")
            if not value and key != "gt":
                raise GateError("bad-param", f"gate parameter {key!r} is empty")
        mode = params.get("g", "open")
        lobby_flag = params.get("gl")
        if lobby_flag not in (None, "1", "0"):
            raise GateError("bad-param", f"gl must be 1 or 0, not {lobby_flag!r}")
        names = tuple(n for n in (params["gn"].split(",") if "gn" in params else ()) if n.strip())
        allowed = tuple(a.strip() for a in params.get("gd", "").split(",") if a.strip())
        agent_keys = tuple(k.strip() for k in params.get("gak", "").split(",") if k.strip())
        gate = cls(
            mode=_mode(mode),
            names=names,
            code_check=params.get("gv"),
            invite_key=params.get("gk"),
            host=HostSpec(key=params.get("gh"), name=params.get("ghn"), email=params.get("gho")),
            lobby=lobby_flag == "1",
            sealed_host_key=params.get("ghk"),
            allowed=allowed,
            issuer=params.get("gi"),
            client_id=params.get("gc"),
            agent_keys=agent_keys,
        )
        gate.validate()
        return gate

    @classmethod
    def from_json(cls, obj: Any) -> JoinGate:
        """From the ``joinGate`` mount option (camelCase JSON); unknown fields are refused."""
        if isinstance(obj, JoinGate):
            return obj
        if not isinstance(obj, Mapping):
            raise GateError("bad-param", f"joinGate must be an object, not {type(obj).__name__}")
        known = {"mode", "names", "codeCheck", "inviteKey", "host", "lobby", "sealedHostKey", "allowed",
                 "issuer", "clientId", "agentKeys"}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise GateError("unknown-param", f"joinGate has fields this engine does not know: {unknown}")
        host = obj.get("host") or {}
        if not isinstance(host, Mapping) or set(host) - {"key", "name", "email"}:
            raise GateError("bad-param", "joinGate.host must be an object with key, name or email")
        names = obj.get("names") or ()
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
            raise GateError("bad-param", "joinGate.names must be a list of names")
        lobby = obj.get("lobby", False)
        if not isinstance(lobby, bool):
            raise GateError("bad-param", "joinGate.lobby must be true or false")
        allowed = _text_list(obj.get("allowed"), "allowed")
        agent_keys = tuple(
            k.get("key") if isinstance(k, Mapping) else k for k in (obj.get("agentKeys") or ())
        ) if isinstance(obj.get("agentKeys") or (), list | tuple) else None
        if agent_keys is None:
            raise GateError("bad-param", "joinGate.agentKeys must be a list of public keys")
        gate = cls(
            mode=_mode(obj.get("mode", "open")),
            names=tuple(names),
            code_check=_opt_text(obj.get("codeCheck"), "codeCheck"),
            invite_key=_opt_text(obj.get("inviteKey"), "inviteKey"),
            host=HostSpec(
                key=_opt_text(host.get("key"), "host.key"),
                name=_opt_text(host.get("name"), "host.name"),
                email=_opt_text(host.get("email"), "host.email"),
            ),
            lobby=lobby,
            sealed_host_key=_opt_text(obj.get("sealedHostKey"), "sealedHostKey"),
            allowed=allowed,
            issuer=_opt_text(obj.get("issuer"), "issuer"),
            client_id=_opt_text(obj.get("clientId"), "clientId"),
            agent_keys=_text_list(list(agent_keys), "agentKeys"),
        )
        gate.validate()
        return gate

    def validate(self) -> None:
        """Everything a mode needs is there and parses (``GateError`` otherwise)."""
        if self.mode == "names":
            if not self.names:
                raise GateError("missing-param", "a names gate needs at least one name (gn)")
            if len(self.names) > MAX_NAMES or any(len(n) > MAX_NAME_CHARS or "," in n for n in self.names):
                raise GateError("bad-param", f"a names gate holds at most {MAX_NAMES} names without commas")
        elif self.names:
            raise GateError("bad-param", f"names (gn) only belong to a names gate, not {self.mode!r}")
        if self.mode == "code":
            if not self.code_check:
                raise GateError("missing-param", "a code gate needs the code's check (gv)")
            code_salt(self)  # parses
        elif self.code_check:
            raise GateError("bad-param", f"a code check (gv) only belongs to a code gate, not {self.mode!r}")
        if self.mode == "invite":
            if not self.invite_key:
                raise GateError("missing-param", "an invite gate needs the key that signs invites (gk)")
            _public_key(self.invite_key, "gk")
        elif self.invite_key:
            raise GateError("bad-param", f"an invite key (gk) belongs to an invite gate, not {self.mode!r}")
        if self.host.key:
            _public_key(self.host.key, "gh")
        if self.host.name is not None and not 0 < len(self.host.name.strip()) <= MAX_NAME_CHARS:
            raise GateError("bad-param", "the host name (ghn) must be 1 to 80 characters")
        if self.sealed_host_key and not self.host.key:
            raise GateError("bad-param", "a sealed host key (ghk) needs the host's public key (gh)")
        if self.sealed_host_key:
            try:
                b64url_decode(self.sealed_host_key)
            except ValueError as exc:
                raise GateError("bad-param", f"the sealed host key (ghk) is damaged: {exc}") from None
        if not self.identity_mode and (self.allowed or self.issuer or self.client_id):
            raise GateError("bad-param", f"gd, gi and gc belong to email and google gates, not {self.mode}")
        if len(self.allowed) > MAX_ALLOWED or any("," in a or len(a) > 254 for a in self.allowed):
            raise GateError("bad-param", f"gd lists at most {MAX_ALLOWED} addresses or @domains")
        web = ("https://", "http://")
        if self.issuer is not None and (not self.issuer.startswith(web) or len(self.issuer) > 512):
            raise GateError("bad-param", "gi must be the issuer's http(s) URL")
        if self.mode == "google" and not self.client_id:
            raise GateError("missing-param", "a google gate needs the app's OAuth client id (gc)")
        if self.host.email is not None and ("@" not in self.host.email or len(self.host.email) > 254):
            raise GateError("bad-param", "the host email (gho) must be an email address")
        if len(self.agent_keys) > MAX_AGENT_KEYS:
            raise GateError("bad-param", f"at most {MAX_AGENT_KEYS} agent keys (gak)")
        for key in self.agent_keys:
            _public_key(key, "gak")

    def require_supported(self) -> None:
        if self.mode not in SUPPORTED_MODES:
            raise GateError(
                "unsupported-mode",
                f"this room's gate is {self.mode!r}, which needs verified identity; this engine cannot "
                "check it yet, so it will not join (a gated room never falls back to open)",
            )

    # --- writing --------------------------------------------------------------------------------

    def to_params(self) -> dict[str, str]:
        """Link parameters, committed ones first in a fixed order, then ``ghk``."""
        out: dict[str, str] = {"g": self.mode}
        if self.names:
            out["gn"] = ",".join(self.names)
        if self.code_check:
            out["gv"] = self.code_check
        if self.invite_key:
            out["gk"] = self.invite_key
        if self.host.key:
            out["gh"] = self.host.key
        if self.host.name:
            out["ghn"] = self.host.name
        if self.host.email:
            out["gho"] = self.host.email
        if self.allowed:
            out["gd"] = ",".join(self.allowed)
        if self.issuer:
            out["gi"] = self.issuer
        if self.client_id:
            out["gc"] = self.client_id
        if self.agent_keys:
            out["gak"] = ",".join(self.agent_keys)
        if self.lobby:
            out["gl"] = "1"
        if self.sealed_host_key:
            out["ghk"] = self.sealed_host_key
        return out

    def to_json(self) -> dict[str, Any]:
        """The ``joinGate`` mount option (camelCase JSON), without empty fields."""
        out: dict[str, Any] = {"mode": self.mode}
        if self.names:
            out["names"] = list(self.names)
        if self.code_check:
            out["codeCheck"] = self.code_check
        if self.invite_key:
            out["inviteKey"] = self.invite_key
        spec = self.host
        host = {k: v for k, v in (("key", spec.key), ("name", spec.name), ("email", spec.email)) if v}
        if host:
            out["host"] = host
        if self.lobby:
            out["lobby"] = True
        if self.sealed_host_key:
            out["sealedHostKey"] = self.sealed_host_key
        if self.allowed:
            out["allowed"] = list(self.allowed)
        if self.issuer:
            out["issuer"] = self.issuer
        if self.client_id:
            out["clientId"] = self.client_id
        if self.agent_keys:
            out["agentKeys"] = list(self.agent_keys)
        return out

    def canonical(self) -> str:
        """The committed settings as one string: sorted ``k=v`` pairs, values percent-encoded."""
        params = self.to_params()
        return "&".join(f"{k}={quote(params[k], safe='')}" for k in sorted(params) if k in _COMMITTED)

    def without_secrets(self) -> JoinGate:
        return replace(self, sealed_host_key=None)


def _mode(value: Any) -> GateMode:
    if not isinstance(value, str) or value not in MODES:
        raise GateError("unknown-mode", f"unknown gate mode {value!r}; modes are {sorted(MODES)}")
    return value  # type: ignore[return-value]


def _opt_text(value: Any, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_PARAM_CHARS:
        raise GateError("bad-param", f"joinGate {what} must be a short text")
    return value


def _text_list(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise GateError("bad-param", f"joinGate.{what} must be a list of texts")
    return tuple(v.strip() for v in value if v.strip())


def _public_key(text: str, what: str) -> PublicKey:
    try:
        return PublicKey.from_text(text)
    except ValueError as exc:
        raise GateError("bad-param", f"the public key in {what} is not a P-256 key: {exc}") from None


def code_salt(gate: JoinGate) -> bytes:
    """The salt half of a code gate's ``salt.verifier``."""
    check = gate.code_check or ""
    salt_text, dot, verifier = check.partition(".")
    try:
        salt = b64url_decode(salt_text)
        digest = b64url_decode(verifier)
    except ValueError as exc:
        raise GateError("bad-param", f"the code check (gv) is damaged: {exc}") from None
    if not dot or not 16 <= len(salt) <= 64 or len(digest) != 32:
        raise GateError("bad-param", "the code check (gv) must be salt.verifier (16-64 byte salt, 32 bytes)")
    return salt


def code_verifier_of(gate: JoinGate) -> str:
    return (gate.code_check or "").partition(".")[2]


# --- rooms that commit to their settings ---------------------------------------------------------


def is_committed_room(room: str) -> bool:
    return bool(COMMITTED_ROOM.match(normalize_room(room)))


def _commit(random_part: str, gate: JoinGate) -> str:
    digest = hashlib.sha256(f"kbz-room.v1|{random_part}|{gate.canonical()}".encode()).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:COMMIT_CHARS]


def new_room(gate: JoinGate) -> str:
    """A fresh room id (125 random bits) that commits to ``gate``'s settings."""
    random_part = "".join(secrets.choice(_B32) for _ in range(RANDOM_CHARS))
    return ROOM_PREFIX + random_part + _commit(random_part, gate)


def check_room(room: str, gate: JoinGate | None) -> JoinGate:
    """The gate this member may enforce for ``room``, or :class:`GateError`.

    A committed room needs the exact settings it was made with; another room takes the gate it is
    given (open when none). Modes this engine cannot enforce are refused here too.
    """
    norm = normalize_room(room)
    if not norm:
        raise GateError("bad-room", f"room {room!r} has no letters or digits")
    if COMMITTED_ROOM.match(norm):
        if gate is None:
            raise GateError(
                "no-gate",
                "this room was made with settings (a gate or a host) and must be opened with its full "
                "link; the link you have lost them",
            )
        random_part = norm[len(ROOM_PREFIX) : len(ROOM_PREFIX) + RANDOM_CHARS]
        if norm[len(ROOM_PREFIX) + RANDOM_CHARS :] != _commit(random_part, gate):
            raise GateError(
                "gate-mismatch",
                "this link's settings are not the ones the room was made with (altered or mixed "
                "links); ask for the room's link again",
            )
    gate = gate or JoinGate()
    gate.require_supported()
    return gate


# --- links ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """What a room link holds."""

    room: str | None
    gate: JoinGate | None
    invite: str | None = None
    """``gt``: this guest's own invite token."""


def parse_link(url: str) -> Link:
    """Read ``room`` and settings from a link or a bare fragment (``#room?g=…``); the legacy query
    form (``?g=…#room``) is read too. No room → ``room`` is None; no ``g*`` param → ``gate`` is None."""
    if not isinstance(url, str) or len(url) > MAX_LINK_CHARS:
        raise GateError("bad-param", "a link must be text of at most 16 KiB")
    parts = urlsplit(url if "#" in url or "?" in url or "://" in url else "#" + url)
    room, _, frag_query = parts.fragment.partition("?")
    params: dict[str, str] = {}
    for source in (parts.query, frag_query):
        for key, value in parse_qsl(source, keep_blank_values=True):
            if key in params and params[key] != value:
                raise GateError("bad-param", f"the link names {key!r} twice with different values")
            params[key] = value
    # ``grant`` (a relay grant) and ``galaxy`` (a LAN hub, kibitz.galaxy) start with g but are not
    # room settings.
    gate_params = {k: v for k, v in params.items() if k.startswith("g") and k not in ("grant", "galaxy")}
    invite = gate_params.pop("gt", None)
    gate = JoinGate.from_params(gate_params) if gate_params else None
    return Link(room=room or None, gate=gate, invite=invite)


def make_link(base: str, room: str, gate: JoinGate | None, *, invite: str | None = None) -> str:
    """``base`` (any URL; its fragment is replaced) + ``#room?settings`` (+ ``gt`` for one guest)."""
    params = gate.to_params() if gate is not None else {}
    if invite:
        params["gt"] = invite
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    head = base.split("#", 1)[0]
    return f"{head}#{room}" + (f"?{query}" if query else "")


__all__ = [
    "IDENTITY_MODES",
    "MODES",
    "SUPPORTED_MODES",
    "GateError",
    "GateMode",
    "HostSpec",
    "HostTier",
    "JoinGate",
    "Link",
    "check_room",
    "code_salt",
    "code_verifier_of",
    "fold_name",
    "is_committed_room",
    "make_link",
    "new_room",
    "parse_link",
]
