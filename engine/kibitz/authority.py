"""Host authority: what the room's host signs, and whether a command, claim or record is valid.

The host is a role separate from the coordinator. In a room whose settings commit a host key (tier
``key``), every moderation act is a compact ECDSA token (:mod:`kibitz.crypto.tokens`) signed by the
holder of the host's private key, so its validity does not depend on who coordinates:

* **claim** — ``{k:"kbz-host-cmd.v1", op:"claim", room, by, iat, n}``: "member ``by`` is the host".
  Presented fresh to each coordinator; it then rides the roster (``hp``) so every peer can check the
  host for itself, without trusting the coordinator.
* **commands** — ``{k:"kbz-host-cmd.v1", op, room, by, c, target?, iat, n}`` for lobbyon/lobbyoff,
  admit/deny, lock/unlock and reset. Bound to the sender's link (``by`` must be the member
  the command arrived from), to the room, and to the coordinator it is for (``c``, so it cannot be
  re-targeted at another one); fresh (``iat`` within 120 s past / 60 s future) and never accepted
  twice (``n``, kept until it goes stale).
* **records** — ``{k:"kbz-host-rec.v1", ban, target, keys, room, iat}``: a removal (ban) or its
  lifting (unban) that outlives any coordinator. Records ride the roster; every new coordinator
  checks and enforces them; the newest record per target wins, so an old ban cannot be replayed
  over an unban.
* **grant maps** — ``{k:"kbz-caps.v1", room, v, h, iat}`` over a digest of the whole map, so a map
  can be forwarded by anyone and checked by everyone.

Tier ``name`` (the host is whoever carries the committed display name) is soft by design: tokens are
unsigned (``body.`` with an empty signature) and the coordinator accepts them from the member whose
name matches; anyone who types that name is the host. Tier ``email`` takes unsigned tokens too, from
the member whose identity token for the committed address the coordinator verified on that member's
own link (:mod:`kibitz.identity`); every peer checks the host's token itself before it treats the
roster's host as one. Tier ``none``: nobody moderates.

Every refusal has a stable reason (:data:`REFUSAL_REASONS`) and is counted in
:attr:`HostAuthority.refusals`. Nothing here does I/O or reads a clock: ``now`` is wall-clock seconds
passed in.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from kibitz.crypto import (
    PrivateKey,
    PublicKey,
    Refusal,
    b64url_decode,
    b64url_encode,
    sign_token,
    verify_token,
)
from kibitz.gate import HostTier, JoinGate
from kibitz.ids import normalize_room

CMD_KIND = "kbz-host-cmd.v1"
REC_KIND = "kbz-host-rec.v1"
CAPS_KIND = "kbz-caps.v1"
FRESH_S = 120.0
SKEW_S = 60.0
MAX_SEEN = 4096
MAX_RECORDS = 64
MAX_KEYS = 4
MAX_ID_CHARS = 64

Op = Literal["claim", "lobbyon", "lobbyoff", "admit", "deny", "lock", "unlock", "reset"]
OPS: frozenset[str] = frozenset(get_args(Op))
TARGETED: frozenset[str] = frozenset({"admit", "deny"})

RefusalReason = Literal[
    "oversize",
    "malformed",
    "bad-signature",
    "bad-json",
    "not-object",
    "no-host",
    "not-host",
    "wrong-kind",
    "wrong-room",
    "wrong-sender",
    "wrong-coordinator",
    "unknown-op",
    "bad-target",
    "stale",
    "future",
    "replayed",
]
REFUSAL_REASONS: tuple[RefusalReason, ...] = get_args(RefusalReason)


@dataclass(frozen=True, slots=True)
class Refused:
    reason: RefusalReason
    detail: str


@dataclass(frozen=True, slots=True)
class HostCommand:
    """A valid claim or command."""

    op: Op
    by: str
    target: str | None
    iat: float
    token: str


@dataclass(frozen=True, slots=True)
class BanRecord:
    """A valid ban (``ban`` True) or unban of ``target``; ``keys`` are the member's public token
    hashes (and credential hashes) that the ban also covers, so a reload under a new id stays out."""

    ban: bool
    target: str
    keys: tuple[str, ...]
    iat: float
    token: str


def _unsigned(payload: Mapping[str, object]) -> str:
    """A name-tier token: the body with an empty signature (anyone could have written it)."""
    body = json.dumps(dict(payload), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return b64url_encode(body.encode()) + "."


def _read_unsigned(token: str) -> dict[str, Any] | Refused:
    if not isinstance(token, str) or len(token) > 8192 or token.count(".") != 1 or not token.endswith("."):
        return Refused("malformed", "a name-tier command is body + '.'")
    try:
        obj = json.loads(b64url_decode(token[:-1]))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return Refused("bad-json", "the command body is not JSON")
    if not isinstance(obj, dict):
        return Refused("not-object", "the command body is not an object")
    return obj


class HostKeyring:
    """The host's side: signs claims, commands, records and grant maps for one room.

    ``key`` is the host's private key (or its text form, ``kbzk1.…``); ``None`` makes unsigned
    name-tier tokens.
    """

    def __init__(self, key: PrivateKey | str | None, room: str) -> None:
        self._key = PrivateKey.from_text(key) if isinstance(key, str) else key
        self.room = normalize_room(room)

    @property
    def public_text(self) -> str | None:
        return self._key.public_key.to_text() if self._key is not None else None

    def _token(self, payload: dict[str, object]) -> str:
        return sign_token(self._key, payload) if self._key is not None else _unsigned(payload)

    def claim(self, *, by: str, now: float, nonce: str | None = None) -> str:
        return self._token({"k": CMD_KIND, "op": "claim", "room": self.room, "by": by, "iat": int(now),
                            "n": nonce or secrets.token_hex(8)})

    def command(
        self,
        op: Op,
        *,
        by: str,
        coordinator: str,
        now: float,
        target: str | None = None,
        nonce: str | None = None,
    ) -> str:
        """A command for the coordinator ``coordinator``; ``nonce`` is random unless given (golden
        vectors only: a repeated nonce is refused as a replay)."""
        if op not in OPS or op == "claim":
            raise ValueError(f"unknown host command {op!r}")
        if (op in TARGETED) != (target is not None):
            raise ValueError(f"{op} {'needs' if op in TARGETED else 'takes no'} target")
        payload: dict[str, object] = {"k": CMD_KIND, "op": op, "room": self.room, "by": by, "c": coordinator,
                                      "iat": int(now), "n": nonce or secrets.token_hex(8)}
        if target is not None:
            payload["target"] = target
        return self._token(payload)

    def record(self, *, ban: bool, target: str, keys: Iterable[str], now: float) -> str:
        # Millisecond issue times: a ban and an unban in the same second must still order.
        return self._token({"k": REC_KIND, "ban": ban, "target": target, "keys": list(keys)[:MAX_KEYS],
                            "room": self.room, "iat": round(now, 3)})

    def caps(self, *, version: int, digest: str, now: float) -> str:
        return self._token({"k": CAPS_KIND, "room": self.room, "v": version, "h": digest, "iat": int(now)})


class HostAuthority:
    """The verifier's side, as every member runs it for its room (the coordinator consults it)."""

    def __init__(self, gate: JoinGate, room: str) -> None:
        self.gate = gate
        self.room = normalize_room(room)
        self.tier: HostTier = gate.host.tier
        self._pub: PublicKey | None = gate.host.public_key()
        self._seen: OrderedDict[str, float] = OrderedDict()
        self.refusals: Counter[str] = Counter()

    # --- reading tokens -------------------------------------------------------------------------

    def _read(self, token: object) -> dict[str, Any] | Refused:
        if self.tier == "none":
            return Refused("no-host", "this room has no host that this engine can check")
        if not isinstance(token, str):
            return Refused("malformed", "a host token is text")
        if self.tier in ("name", "email"):
            return _read_unsigned(token)
        assert self._pub is not None
        out = verify_token(self._pub, token)
        if isinstance(out, Refusal):
            return Refused(out.reason, out.detail)
        return out

    def _refuse(self, refused: Refused) -> Refused:
        self.refusals[refused.reason] += 1
        return refused

    def _common(self, body: dict[str, Any], kind: str) -> Refused | None:
        if body.get("k") != kind:
            return Refused("wrong-kind", f"not a {kind} token")
        if body.get("room") != self.room:
            return Refused("wrong-room", "the token is for another room")
        iat = body.get("iat")
        if not isinstance(iat, int | float) or isinstance(iat, bool) or iat != iat:
            return Refused("malformed", "the token has no issue time")
        return None

    def _fresh(self, body: dict[str, Any], now: float) -> Refused | None:
        iat = float(body["iat"])
        if iat < now - FRESH_S:
            return Refused("stale", f"issued {now - iat:.0f} s ago; commands live {FRESH_S:.0f} s")
        if iat > now + SKEW_S:
            return Refused("future", f"issued {iat - now:.0f} s in the future")
        return None

    # --- claims and commands ----------------------------------------------------------------------

    def check_claim(self, token: object, *, by: str, now: float | None) -> HostCommand | Refused:
        """A claim that member ``by`` is the host. ``now`` None: the claim rides a roster and only its
        signature, room and subject are checked (it was fresh when a coordinator took it)."""
        body = self._read(token)
        if isinstance(body, Refused):
            return self._refuse(body)
        bad = self._common(body, CMD_KIND)
        if bad is None and body.get("op") != "claim":
            bad = Refused("unknown-op", "not a claim")
        if bad is None and body.get("by") != by:
            bad = Refused("wrong-sender", "the claim names another member")
        if bad is None and now is not None:
            bad = self._fresh(body, now)
        if bad is not None:
            return self._refuse(bad)
        assert isinstance(token, str)
        return HostCommand("claim", by, None, float(body["iat"]), token)

    def check_command(
        self, token: object, *, sender: str, coordinator: str, now: float, sender_is_host: bool = False
    ) -> HostCommand | Refused:
        """A moderation command from ``sender`` to ``coordinator``. In the name tier the caller says
        whether ``sender`` carries the host's name (``sender_is_host``)."""
        body = self._read(token)
        if isinstance(body, Refused):
            return self._refuse(body)
        bad = self._common(body, CMD_KIND)
        op, target, nonce = body.get("op"), body.get("target"), body.get("n")
        if bad is None and (op not in OPS or op == "claim"):
            bad = Refused("unknown-op", f"unknown command {op!r}")
        if bad is None and body.get("by") != sender:
            bad = Refused("wrong-sender", "the command was signed for another member's link")
        if bad is None and self.tier in ("name", "email") and not sender_is_host:
            bad = Refused("not-host", "the sender is not the room's host")
        if bad is None and body.get("c") != coordinator:
            bad = Refused("wrong-coordinator", "the command is for another coordinator")
        if bad is None and (op in TARGETED) != (isinstance(target, str) and 0 < len(target) <= MAX_ID_CHARS):
            bad = Refused("bad-target", f"{op} needs exactly one member id as target")
        if bad is None and not (isinstance(nonce, str) and 0 < len(nonce) <= 64):
            bad = Refused("malformed", "the command has no nonce")
        if bad is None:
            bad = self._fresh(body, now)
        if bad is None:
            self._prune(now)
            if nonce in self._seen:
                bad = Refused("replayed", "this command was already carried out")
        if bad is not None:
            return self._refuse(bad)
        self._seen[str(nonce)] = float(body["iat"]) + FRESH_S
        assert isinstance(token, str)
        checked: Op = op  # type: ignore[assignment]  # one of OPS, checked above
        aimed = target if isinstance(target, str) else None
        return HostCommand(checked, sender, aimed, float(body["iat"]), token)

    def _prune(self, now: float) -> None:
        for nonce, until in list(self._seen.items()):
            if until < now or len(self._seen) > MAX_SEEN:
                del self._seen[nonce]

    # --- records ----------------------------------------------------------------------------------

    def check_record(self, token: object) -> BanRecord | Refused:
        body = self._read(token)
        if isinstance(body, Refused):
            return self._refuse(body)
        bad = self._common(body, REC_KIND)
        target, keys, ban = body.get("target"), body.get("keys", []), body.get("ban")
        if bad is None and not (isinstance(target, str) and 0 < len(target) <= MAX_ID_CHARS):
            bad = Refused("bad-target", "a record names one member id")
        short = isinstance(keys, list) and len(keys) <= MAX_KEYS
        if bad is None and not (short and all(isinstance(k, str) and len(k) <= 64 for k in keys)):
            bad = Refused("malformed", "a record's keys are a short list of short texts")
        if bad is None and not isinstance(ban, bool):
            bad = Refused("malformed", "a record says ban true or false")
        if bad is not None:
            return self._refuse(bad)
        assert isinstance(token, str) and isinstance(target, str) and isinstance(ban, bool)
        return BanRecord(ban, target, tuple(keys), float(body["iat"]), token)

    # --- grant maps -------------------------------------------------------------------------------

    def check_caps(self, token: object, *, version: int, digest: str) -> bool:
        """Whether ``token`` is the host's signature over a grant map at ``version`` with ``digest``
        (key tier only; other tiers have no signed maps)."""
        if self.tier != "key":
            return False
        body = self._read(token)
        if isinstance(body, Refused):
            self._refuse(body)
            return False
        bad = self._common(body, CAPS_KIND)
        if bad is None and (body.get("v") != version or body.get("h") != digest):
            bad = Refused("malformed", "the signature is over another map")
        if bad is not None:
            self._refuse(bad)
            return False
        return True


class Ledger:
    """The room's moderation records: newest per target wins, at most :data:`MAX_RECORDS` kept
    (unbans are dropped first, then the oldest bans)."""

    def __init__(self) -> None:
        self._by_target: dict[str, BanRecord] = {}

    def add(self, record: BanRecord) -> bool:
        """Keep ``record`` if it is newer than what we hold for its target; True if it changed."""
        held = self._by_target.get(record.target)
        if held is not None and (held.iat, held.ban) >= (record.iat, record.ban):
            return False
        self._by_target[record.target] = record
        while len(self._by_target) > MAX_RECORDS:
            victims = sorted(self._by_target.values(), key=lambda r: (r.ban, r.iat))
            del self._by_target[victims[0].target]
        return True

    def banned(self, member_id: str, keys: Iterable[str | None] = ()) -> BanRecord | None:
        """The ban that keeps ``member_id`` (or any of its ``keys``) out, if any."""
        record = self._by_target.get(member_id)
        if record is not None and record.ban:
            return record
        wanted = {k for k in keys if k}
        if wanted:
            for rec in self._by_target.values():
                if rec.ban and wanted.intersection(rec.keys):
                    return rec
        return None

    def tokens(self) -> tuple[str, ...]:
        return tuple(r.token for r in sorted(self._by_target.values(), key=lambda r: r.iat))

    def __len__(self) -> int:
        return len(self._by_target)


__all__ = [
    "CAPS_KIND",
    "CMD_KIND",
    "FRESH_S",
    "OPS",
    "REC_KIND",
    "REFUSAL_REASONS",
    "SKEW_S",
    "TARGETED",
    "BanRecord",
    "HostAuthority",
    "HostCommand",
    "HostKeyring",
    "Ledger",
    "Op",
    "Refused",
]
