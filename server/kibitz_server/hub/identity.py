"""The hub's identity, kept across restarts so a galaxy link printed once keeps working.

One JSON file (``<state dir>/hub.json``, mode 0600): the DTLS certificate and its private key (PEM),
the ICE ufrag and password, and the UDP and HTTP ports. The certificate's SHA-256 is pinned in the
link, so a new certificate means a new link; ``kibitz hub --new-identity`` makes one on purpose.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kibitz.backends.aio_cert import self_signed_p256

FILE_NAME = "hub.json"
_ALNUM = string.ascii_letters + string.digits


def _random(n: int) -> str:
    # Letters and digits only: '+' and '/' are ice-chars too, but a '+' becomes a space in a query.
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


@dataclass(frozen=True)
class HubIdentity:
    key_pem: bytes
    cert_pem: bytes
    ufrag: str
    pwd: str
    udp_port: int
    http_port: int

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the hub's key must be an EC key")
        return key

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the certificate's DER: what the galaxy link pins."""
        return hashlib.sha256(self.cert.public_bytes(serialization.Encoding.DER)).digest()

    def to_json(self) -> dict[str, Any]:
        return {
            "v": 1,
            "key_pem": self.key_pem.decode("ascii"),
            "cert_pem": self.cert_pem.decode("ascii"),
            "ufrag": self.ufrag,
            "pwd": self.pwd,
            "udp_port": self.udp_port,
            "http_port": self.http_port,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> HubIdentity:
        if obj.get("v") != 1:
            raise ValueError("unknown hub identity version")
        ident = cls(
            key_pem=str(obj["key_pem"]).encode("ascii"),
            cert_pem=str(obj["cert_pem"]).encode("ascii"),
            ufrag=str(obj["ufrag"]),
            pwd=str(obj["pwd"]),
            udp_port=int(obj["udp_port"]),
            http_port=int(obj["http_port"]),
        )
        ident.key  # noqa: B018 - parse now: a damaged file fails at start, not at the first peer
        ident.cert  # noqa: B018
        return ident


def new_identity(udp_port: int = 0, http_port: int = 0) -> HubIdentity:
    """A fresh P-256 key and a self-signed certificate valid for 20 years (WebRTC checks only the
    pinned digest, but some stacks refuse an expired certificate)."""
    key, cert = self_signed_p256("kibitz-hub-" + _random(8), 20 * 365)
    return HubIdentity(
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        ufrag=_random(8),
        pwd=_random(24),
        udp_port=udp_port,
        http_port=http_port,
    )


def load_or_create(state_dir: Path, *, udp_port: int | None, http_port: int | None,
                   fresh: bool = False) -> tuple[HubIdentity, bool]:
    """The identity in ``state_dir`` (made and saved on first use). Ports given here replace the
    saved ones (and are saved). Returns ``(identity, created)``."""
    path = state_dir / FILE_NAME
    if path.exists() and not fresh:
        ident = HubIdentity.from_json(json.loads(path.read_text("utf-8")))
        created = False
    else:
        ident = new_identity()
        created = True
    if udp_port is not None or http_port is not None:
        ident = HubIdentity(
            ident.key_pem, ident.cert_pem, ident.ufrag, ident.pwd,
            ident.udp_port if udp_port is None else udp_port,
            ident.http_port if http_port is None else http_port,
        )
    save(state_dir, ident)
    return ident, created


def save(state_dir: Path, ident: HubIdentity) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / FILE_NAME
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(ident.to_json(), fh, indent=1)
    os.replace(tmp, path)
