"""One persistent DTLS certificate for an agent, kept on disk (the page keeps its own in IndexedDB).

aiortc makes a fresh certificate for every peer connection, so a peer could not bind an identity
token to "this agent": each link would show another fingerprint. The agent's factory therefore hands
every connection the same :class:`aiortc.RTCCertificate`, and this module keeps it in a PEM file
(private key + certificate, mode 0600) so a restarted agent keeps its binding too. ECDSA P-256, as
browsers make them; valid for a year and renewed when it has under a week left (a renewal changes
the fingerprint: tokens bound to the old one must be minted again).
"""

from __future__ import annotations

import datetime
import os
import secrets
from pathlib import Path

from aiortc.rtcdtlstransport import RTCCertificate
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kibitz.identity.binding import fingerprint_of_der

VALID_DAYS = 365
RENEW_BEFORE = datetime.timedelta(days=7)


def self_signed_p256(common_name: str, days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A fresh P-256 key and a self-signed certificate for it (valid from yesterday, for ``days``):
    what a WebRTC endpoint shows in DTLS, where only the certificate's digest is ever checked."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(tz=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def new_certificate(days: int = VALID_DAYS) -> RTCCertificate:
    key, cert = self_signed_p256(secrets.token_hex(16), days)
    return RTCCertificate(key=key, cert=cert)


def certificate_fingerprint(cert: RTCCertificate) -> str:
    """Lower-case colon-hex SHA-256 of the certificate's DER, as peers read it off the connection."""
    return fingerprint_of_der(cert._cert.public_bytes(serialization.Encoding.DER))


def load_or_create_certificate(path: str | Path) -> RTCCertificate:
    """The certificate kept in ``path`` (made, or renewed when it nears its end, and saved)."""
    path = Path(path)
    if path.exists():
        data = path.read_bytes()
        key = serialization.load_pem_private_key(data, password=None)
        cert = x509.load_pem_x509_certificate(data)
        fresh = cert.not_valid_after_utc - datetime.datetime.now(tz=datetime.UTC) > RENEW_BEFORE
        if isinstance(key, ec.EllipticCurvePrivateKey) and fresh:
            return RTCCertificate(key=key, cert=cert)
    made = new_certificate()
    pem = made._key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ) + made._cert.public_bytes(serialization.Encoding.PEM)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.replace(tmp, path)
    return made


__all__ = ["certificate_fingerprint", "load_or_create_certificate", "new_certificate"]
