"""``/api/email/start|verify|jwks``: sign-in by a code sent by email, as an OpenID Connect issuer of our own.

* ``POST /api/email/start {email, room, nonce}`` → ``{ok: true, ticket}``: a 6-digit code is mailed;
  the store keeps only ``sha256hex(salt + ":" + code)`` for 10 minutes. 429 (with ``Retry-After``)
  past 5 codes per address and room, or 20 per client address, in 10 minutes; 502 when the mail
  cannot be handed to the SMTP server (the code is forgotten then).
* ``POST /api/email/verify {ticket, code}`` → ``{ok: true, jwt}``, or ``{ok: false, reason}`` with
  ``expired``, ``locked`` (5 wrong tries), ``mismatch`` or ``bad ticket``. The token is RS256 with a
  ``kid``: ``iss`` this server's public URL, ``aud`` ``kibitz-email``, ``sub`` and ``email`` the
  address, ``email_verified`` true, the ``nonce`` given at start (which binds it to the caller's
  DTLS certificate and room, :mod:`kibitz.identity.binding`), 10 minutes of life.
* ``GET /api/email/jwks`` → ``{keys: [...]}``: the signing keys (:mod:`.email_keys`).

The server never sees a call's content and learns only that someone at this address asked to sign
in to this room. The code travels by email, never in a link or a log.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .email_keys import TOKEN_TTL_S, EmailKeys
from .mailer import Mailer
from .otp import OtpRecord, OtpStore

log = logging.getLogger("kibitz.server.email")

CODE_TTL_S = 600.0
MAX_TRIES = 5
PER_EMAIL_ROOM = 5
PER_CLIENT = 20
WINDOW_S = 600.0
AUDIENCE = "kibitz-email"
EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f<>,;:\"()\[\]\\]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+$")
NONCE = re.compile(r"^[A-Za-z0-9_-]{43}$")
TICKET = re.compile(r"^[0-9a-f]{36}$")
ROOM = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")


class EmailError(Exception):
    """A request ``/api/email/start`` refuses: HTTP ``status`` and a reason for the caller."""

    def __init__(self, status: int, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


def code_hash(salt: str, code: str) -> str:
    return hashlib.sha256(f"{salt}:{code}".encode()).hexdigest()


@dataclass
class EmailSignIn:
    store: OtpStore
    keys: EmailKeys
    mailer: Mailer
    public_url: str | None = None
    """``iss`` of the tokens; None: the origin the request came to (scheme://host)."""
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.counts: Counter[str] = Counter()

    async def start(self, body: Any, client: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise EmailError(400, "the body must be {email, room, nonce}")
        email, room, nonce = body.get("email"), body.get("room"), body.get("nonce")
        if not isinstance(email, str) or len(email) > 254 or not EMAIL.match(email.strip()):
            raise EmailError(400, "email must be an email address")
        if not isinstance(room, str) or not ROOM.match(room):
            raise EmailError(400, "room must be 1 to 200 characters")
        if not isinstance(nonce, str) or not NONCE.match(nonce):
            raise EmailError(400, "nonce must be the 43-character b64url sign-in nonce")
        email = email.strip().lower()
        now = self.clock()
        pair = hashlib.sha256(f"{email}|{room}".encode()).hexdigest()[:32]
        for key, limit in ((f"er:{pair}", PER_EMAIL_ROOM), (f"ip:{client}", PER_CLIENT)):
            wait = await self.store.hit(key, now, WINDOW_S, limit)
            if wait is not None:
                self.counts["start:rate-limited"] += 1
                raise EmailError(429, "too many codes asked for: try again later", retry_after=wait)
        code = f"{secrets.randbelow(10**6):06d}"
        salt = secrets.token_hex(16)
        ticket = secrets.token_hex(18)
        record = OtpRecord(code_hash(salt, code), salt, email, room, nonce, now + CODE_TTL_S)
        await self.store.put(ticket, record)
        body_text = (f"Your sign-in code is {code}\n\nType it where you asked for it, within 10 minutes. "
                     f"It signs you in to the room \"{room[:80]}\".\n\n"
                     "If you did not ask for a code, ignore this message.\n")
        try:
            await self.mailer.send(email, f"Your Kibitz sign-in code: {code}", body_text)
        except Exception as exc:
            await self.store.delete(ticket)
            self.counts["start:mail-failed"] += 1
            log.warning("sign-in code not sent: %s", type(exc).__name__)
            raise EmailError(502, "the code could not be sent (the mail server refused it)") from None
        self.counts["start:sent"] += 1
        return {"ok": True, "ticket": ticket}

    async def verify(self, body: Any, origin: str) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("ticket"), str) or not isinstance(
                body.get("code"), str):
            raise EmailError(400, "the body must be {ticket, code}")
        ticket, code = body["ticket"], body["code"].strip()
        if not TICKET.match(ticket):
            return self._no("bad ticket")
        record = await self.store.attempt(ticket, self.clock(), MAX_TRIES)
        if record is None:
            return self._no("bad ticket")  # unknown, used, or expired (deleted)
        if record.exp <= self.clock():
            await self.store.delete(ticket)
            return self._no("expired")
        if record.attempts > MAX_TRIES:
            return self._no("locked")  # five wrong tries: this code is dead, ask for a new one
        if not _same(record, code):
            return self._no("mismatch")
        await self.store.delete(ticket)
        now = int(self.clock())
        claims = {"iss": self.public_url or origin, "aud": AUDIENCE, "sub": record.email,
                  "email": record.email, "email_verified": True, "nonce": record.nonce, "iat": now,
                  "exp": now + TOKEN_TTL_S}
        self.counts["verify:ok"] += 1
        return {"ok": True, "jwt": self.keys.mint(claims)}

    def _no(self, reason: str) -> dict[str, Any]:
        self.counts[f"verify:{reason.replace(' ', '-')}"] += 1
        return {"ok": False, "reason": reason}

    def jwks(self) -> dict[str, Any]:
        return self.keys.jwks()


def _same(record: OtpRecord, code: str) -> bool:
    return hmac.compare_digest(code_hash(record.salt, code), record.code_hash)


__all__ = ["AUDIENCE", "CODE_TTL_S", "MAX_TRIES", "EmailError", "EmailSignIn", "code_hash"]
