"""Admission: may this member enter the room now? A pure decision the coordinator consults.

Two steps, both pure:

* :func:`check_credential` — does what the joiner presents satisfy the room's gate? ``open``: always.
  ``names``: the announced name is on the committed list (no security: anyone can type a listed
  name). ``code``: the joiner's engine derives a key from the code it was given
  (:func:`kibitz.crypto.derive_code_key`, a slow hash) and presents it; the check compares its hash
  with the committed verifier in constant time. ``invite``: a compact ECDSA token
  ``{name, room, exp}`` signed by the room's invite key; the room must match and ``exp`` must not
  have passed. An invite also fixes the name shown on the roster.
* :func:`decide` — given the credential verdict and the room's state (bans, lock, waiting room,
  capacity, whether the member was already let in), the verdict the joiner hears.

Verdicts are stable words (:data:`VERDICTS`), the same the page sees as ``getState().lobbyStatus``:
``ok`` (rostered), ``waiting`` (in the waiting room), ``locked``, ``denied`` (a host said no),
``removed`` (banned by the host), ``full``, ``needs-credential``, ``bad-credential``,
``expired-credential``, ``not-listed`` (names gate).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Literal, get_args

from kibitz.crypto import (
    CryptoBackend,
    PrivateKey,
    PublicKey,
    Refusal,
    b64url_decode,
    b64url_encode,
    code_verifier,
    constant_time_equal,
    derive_code_key,
    sign_token,
    verify_token,
)
from kibitz.gate import JoinGate, code_salt, code_verifier_of, fold_name
from kibitz.ids import normalize_room

Verdict = Literal[
    "ok",
    "waiting",
    "locked",
    "denied",
    "removed",
    "full",
    "needs-credential",
    "bad-credential",
    "expired-credential",
    "not-listed",
    "unverified",
    "credential-in-use",
]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)
CredentialVerdict = Literal["ok", "needs-credential", "bad-credential", "expired-credential", "not-listed"]
MAX_INVITE_NAME = 80
MAX_CREDENTIAL_CHARS = 8192
INVITE_SKEW_S = 60.0


@dataclass(frozen=True, slots=True)
class CredentialCheck:
    verdict: CredentialVerdict
    detail: str = ""
    name: str | None = None
    """The name an invite fixes for its holder."""
    key: str | None = None
    """A public hash of the credential (an invite), so a host's ban can cover it."""


def credential_key(credential: str) -> str:
    """Public hash of a credential: what a ban record lists to keep its holder out."""
    return "c:" + b64url_encode(hashlib.sha256(b"kbz-cred.v1|" + credential.encode()).digest()[:16])


def token_key(token: str | None) -> str | None:
    """Public hash of a member's stable token (``tk`` on the roster): a host's ban names it, so a
    reload under a new member id stays out. The token itself never leaves the coordinator."""
    if not token:
        return None
    return "t:" + b64url_encode(hashlib.sha256(b"kbz-tk.v1|" + token.encode()).digest()[:16])


def check_credential(
    gate: JoinGate, room: str, credential: str | None, *, name: str, now: float
) -> CredentialCheck:
    """Whether ``credential`` (and, for a names gate, ``name``) lets its holder through ``gate``."""
    if gate.mode == "open" or gate.identity_mode:
        return CredentialCheck("ok")  # email/google: the identity door (kibitz.identity.door) decides
    if gate.mode == "names":
        wanted = fold_name(name)
        if wanted and any(fold_name(n) == wanted for n in gate.names):
            return CredentialCheck("ok")
        return CredentialCheck("not-listed", "this room lets in only the names on its list")
    if not credential:
        wanted = "a code" if gate.mode == "code" else "an invite"
        return CredentialCheck("needs-credential", f"this room needs {wanted}")
    if gate.mode == "code":
        try:
            key = b64url_decode(credential)
        except ValueError:
            return CredentialCheck("bad-credential", "the code proof is damaged")
        if len(key) != 32 or not constant_time_equal(code_verifier(key), code_verifier_of(gate)):
            return CredentialCheck("bad-credential", "wrong code")
        return CredentialCheck("ok")
    if gate.mode == "invite":
        return _check_invite(gate, room, credential, now)
    return CredentialCheck("bad-credential", f"gate {gate.mode!r} cannot be checked by this engine")


def _check_invite(gate: JoinGate, room: str, token: str, now: float) -> CredentialCheck:
    assert gate.invite_key is not None
    body = verify_token(PublicKey.from_text(gate.invite_key), token)
    if isinstance(body, Refusal):
        return CredentialCheck("bad-credential", f"invalid invite ({body.reason})")
    name, inv_room, exp = body.get("name"), body.get("room"), body.get("exp")
    if not isinstance(name, str) or not 0 < len(name.strip()) <= MAX_INVITE_NAME:
        return CredentialCheck("bad-credential", "the invite names nobody")
    if inv_room != normalize_room(room):
        return CredentialCheck("bad-credential", "the invite is for another room")
    if not isinstance(exp, int | float) or isinstance(exp, bool) or not math.isfinite(exp):
        return CredentialCheck("bad-credential", "the invite has no expiry")
    if exp + INVITE_SKEW_S < now:
        return CredentialCheck("expired-credential", "the invite has expired")
    return CredentialCheck("ok", name=name.strip(), key=credential_key(token))


def decide(
    credential: CredentialCheck,
    *,
    banned: bool,
    host: bool,
    known: bool,
    locked: bool,
    lobby: bool,
    full: bool,
    verified: bool = True,
    in_use: bool = False,
) -> Verdict:
    """The verdict for one joiner.

    ``banned``: a valid host record keeps it out. ``host``: it proved to be the room's host (the host
    always gets in). ``known``: it was already let in during this or the previous coordinator's tenure
    (so a lock or the waiting room does not apply again). The credential is checked on every
    announce, whatever else holds: a coordinator cannot wave through someone the gate refuses.
    ``verified``: the identity part of the door (:mod:`kibitz.identity.door`) let it through (an
    email/google gate, agent keys, agent credits); checked on every announce too. ``in_use``:
    another live member (another tab) already holds this credential (one invite, one seat: the
    first holder keeps it; the second is let in once the first has gone).
    """
    if banned:
        return "removed"
    if host:
        return "ok"
    if credential.verdict != "ok":
        return credential.verdict
    if not verified:
        return "unverified"
    if in_use:
        return "credential-in-use"
    if known:
        return "ok"
    if locked:
        return "locked"
    if full:
        return "full"
    if lobby:
        return "waiting"
    return "ok"


REFUSED: frozenset[str] = frozenset(VERDICTS) - {"ok", "waiting"}
"""Verdicts that keep a joiner out until something changes (a credential, the host's mind)."""


async def prepare_credential(
    gate: JoinGate, credential: str | None, *, backend: CryptoBackend | None = None
) -> str | None:
    """What a joiner presents for ``credential``: for a code gate the code's slow-hash key
    (b64url; the code itself never leaves this device), an invite token as it is, nothing for
    gates that take none. Raises ``ValueError`` for a credential that cannot be one."""
    if not credential:
        return None
    if not isinstance(credential, str) or len(credential) > MAX_CREDENTIAL_CHARS:
        raise ValueError(f"a join credential is text of at most {MAX_CREDENTIAL_CHARS} characters")
    if gate.mode == "code":
        key = await derive_code_key(credential, code_salt(gate), backend=backend)
        return b64url_encode(key)
    if gate.mode == "invite":
        return credential.strip()
    return None


def mint_invite(key_text: str, *, name: str, room: str, ttl: float, now: float) -> str:
    """An invite token for ``name`` to ``room`` valid for ``ttl`` seconds (signed with the invite key)."""
    if not isinstance(name, str) or not 0 < len(name.strip()) <= MAX_INVITE_NAME:
        raise ValueError(f"an invite names one guest (1 to {MAX_INVITE_NAME} characters)")
    if not isinstance(ttl, int | float) or not 60 <= ttl <= 366 * 86400:
        raise ValueError("an invite lives between 60 seconds and a year (ttl in seconds)")
    return sign_token(PrivateKey.from_text(key_text), {"name": name.strip(), "room": normalize_room(room),
                                                       "exp": int(now + ttl)})


__all__ = [
    "REFUSED",
    "VERDICTS",
    "CredentialCheck",
    "Verdict",
    "check_credential",
    "credential_key",
    "decide",
    "mint_invite",
    "prepare_credential",
    "token_key",
]
