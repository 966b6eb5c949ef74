"""The email issuer's signing keys: RSA 2048, made on first start, rotated by ``kibitz email rotate-key``.

They live in ``<state-dir>/email-signing-keys.json`` (mode 0600): a list of ``{kid, created, retired,
pem}``. The newest unretired key signs; a retired key stays in the JWKS until every token it signed
has expired (the token lifetime plus the verifiers' 60 s leeway), then it is dropped, so a rotation
never breaks a sign-in that is already in flight. A running server re-reads the file when it changes,
so a rotation needs no restart; writes replace the file atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

TOKEN_TTL_S = 600
LEEWAY_S = 60
KEEP_AFTER_RETIRED_S = TOKEN_TTL_S + LEEWAY_S + 60


@dataclass(frozen=True)
class SigningKey:
    kid: str
    created: float
    retired: float | None
    key: rsa.RSAPrivateKey

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}


def _new_key(now: float) -> SigningKey:
    return SigningKey(f"kbz-{time.strftime('%Y%m%d', time.gmtime(now))}-{secrets.token_hex(4)}", now, None,
                      rsa.generate_private_key(public_exponent=65537, key_size=2048))


class EmailKeys:
    """The key file of one state directory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._keys: list[SigningKey] = []
        self._stamp: tuple[int, int] | None = None

    # --- reading ----------------------------------------------------------------------------------

    def _load(self) -> list[SigningKey]:
        doc = json.loads(self.path.read_text(encoding="utf-8"))
        out = []
        for item in doc.get("keys", []):
            key = serialization.load_pem_private_key(item["pem"].encode(), password=None)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ValueError(f"{self.path}: key {item.get('kid')} is not RSA")
            out.append(SigningKey(str(item["kid"]), float(item["created"]),
                                  None if item.get("retired") is None else float(item["retired"]), key))
        return out

    def keys(self, now: float | None = None) -> list[SigningKey]:
        """Current keys (made on first use); re-read when the file changed."""
        now = time.time() if now is None else now
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._save([_new_key(now)], exclusive=True)
            st = self.path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._keys, self._stamp = self._load(), stamp
        return [k for k in self._keys if k.retired is None or now - k.retired < KEEP_AFTER_RETIRED_S]

    def current(self, now: float | None = None) -> SigningKey:
        live = [k for k in self.keys(now) if k.retired is None]
        if not live:
            raise ValueError(f"{self.path} holds no key that may sign (every key is retired)")
        return max(live, key=lambda k: k.created)

    def jwks(self, now: float | None = None) -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in self.keys(now)]}

    def mint(self, claims: dict[str, Any], now: float | None = None) -> str:
        key = self.current(now)
        return pyjwt.encode(claims, key.key, algorithm="RS256", headers={"kid": key.kid, "typ": "JWT"})

    # --- writing ----------------------------------------------------------------------------------

    def rotate(self, now: float | None = None) -> SigningKey:
        """A new signing key; the old ones retire now and leave the JWKS once their tokens expired."""
        now = time.time() if now is None else now
        kept = [k if k.retired is not None else SigningKey(k.kid, k.created, now, k.key)
                for k in self.keys(now)]
        fresh = _new_key(now)
        self._save([*kept, fresh])
        return fresh

    def _save(self, keys: list[SigningKey], *, exclusive: bool = False) -> None:
        def pem(k: SigningKey) -> str:
            return k.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()).decode()

        doc = {"keys": [{"kid": k.kid, "created": k.created, "retired": k.retired, "pem": pem(k)}
                        for k in keys]}
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        try:
            if exclusive:  # first start: if another process made the file meanwhile, keep theirs
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, self.path)
            else:
                os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

__all__ = ["KEEP_AFTER_RETIRED_S", "TOKEN_TTL_S", "EmailKeys", "SigningKey"]
